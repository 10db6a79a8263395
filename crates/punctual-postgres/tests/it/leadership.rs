//! Leadership across nodes (issue 3, item 5): nodes with their own pools share one schema; one
//! leads at a time, leadership moves when the leader stops renewing, a deposed leader's duties
//! are refused, and a node paused inside a transaction on the leader row stalls no election.

use std::sync::Arc;
use std::time::Duration;

use punctual_core::{
    ClaimRequest, JobOptions, JobState, LeaderTerm, NodeId, Store, StoreError, Timestamp,
};
use punctual_postgres::{PgOptions, PgStore};
use punctual_testkit::fixtures::{NOW, new_job, node};
use tokio::sync::Barrier;

use crate::{TestSchema, database_url, raw_client};

const LEADERSHIP: Duration = Duration::from_secs(2);

async fn lead(
    store: &dyn Store,
    name: &str,
    term: Option<LeaderTerm>,
    now: Timestamp,
) -> Option<LeaderTerm> {
    store
        .lead(&node(name), term, LEADERSHIP, now)
        .await
        .expect("lead")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_when_the_leader_stops_renewing() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let (first, second) = (schema.connect().await, schema.connect().await);

    // A job whose holder died: its lease expired long before the nodes look at it.
    let id = first
        .insert(
            vec![new_job("leader.job", NOW, JobOptions::default(), NOW)],
            NOW,
        )
        .await
        .expect("insert")[0];
    let request = ClaimRequest {
        holder: node("crashed"),
        queues: None,
        kinds: None,
        limit: 1,
        due_by: NOW,
        lease: Duration::from_secs(1),
    };
    assert_eq!(first.claim(request, NOW).await.expect("claim").len(), 1);

    let at = |millis: u64| NOW.add(Duration::from_millis(millis));
    let term = lead(&first, "node-a", None, at(0)).await.expect("leads");
    assert_eq!(term, LeaderTerm(1));
    // While node-a renews, node-b is refused, even past node-a's first expiry.
    for millis in [500, 1_500, 2_500, 3_000] {
        if millis % 1_000 == 500 {
            assert_eq!(
                lead(&first, "node-a", Some(term), at(millis)).await,
                Some(term)
            );
        }
        assert_eq!(lead(&second, "node-b", None, at(millis)).await, None);
    }

    // node-a stops renewing (paused, cut off); its last renewal, at 2.5 s, lasts until 4.5 s.
    assert_eq!(lead(&second, "node-b", None, at(4_499)).await, None);
    let taken = at(4_500);
    let next = lead(&second, "node-b", None, taken)
        .await
        .expect("takes over");
    assert_eq!(next, LeaderTerm(2));
    let running = first.get(id).await.expect("get").expect("exists");
    assert_eq!(running.state, JobState::Running);

    // node-a comes back: its duties under the old term are refused and change nothing.
    let refused = first.rescue_expired(term, taken, 10).await;
    assert!(
        matches!(refused, Err(StoreError::NotLeader { term: stale }) if stale == term),
        "{refused:?}"
    );
    let refused = first.purge_finished(term, taken, 10, taken).await;
    assert!(
        matches!(refused, Err(StoreError::NotLeader { .. })),
        "{refused:?}"
    );
    assert_eq!(first.get(id).await.expect("get"), Some(running));
    assert_eq!(lead(&first, "node-a", Some(term), taken).await, None);

    // The new leader's rescue does the work.
    let rescued = second
        .rescue_expired(next, taken, 10)
        .await
        .expect("rescue");
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].id, id);
    let job = first.get(id).await.expect("get").expect("exists");
    assert_eq!(job.state, JobState::Retrying);
}

/// Eight nodes, each with its own pool, ask at the same instant for a free leadership: exactly
/// one gets it, and the rest are told who does not lead (themselves), 20 rounds over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_electing_themselves_at_once_get_one_leader() {
    const NODES: usize = 8;
    const ROUNDS: u64 = 20;
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let mut stores = Vec::with_capacity(NODES);
    for _ in 0..NODES {
        stores.push(Arc::new(schema.connect().await));
    }
    let mut last = LeaderTerm(0);
    for round in 0..ROUNDS {
        // Each round starts after the previous leadership expired.
        let now = NOW.add(LEADERSHIP.saturating_mul(u32::try_from(round).expect("few rounds")));
        let barrier = Arc::new(Barrier::new(NODES));
        let mut electing = tokio::task::JoinSet::new();
        for (index, store) in stores.iter().enumerate() {
            let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
            electing.spawn(async move {
                let name = NodeId::new(&format!("node-{index}")).expect("valid");
                barrier.wait().await;
                store
                    .lead(&name, None, LEADERSHIP, now)
                    .await
                    .expect("lead")
            });
        }
        let mut granted = Vec::new();
        while let Some(joined) = electing.join_next().await {
            if let Some(term) = joined.expect("an electing node panicked") {
                granted.push(term);
            }
        }
        assert_eq!(granted.len(), 1, "round {round}: {granted:?}");
        assert_eq!(granted[0], LeaderTerm(last.0 + 1), "round {round}");
        last = granted[0];
    }
}

/// How long a `lead` may take in the test below before it counts as hanging: well past the
/// default `lock_timeout` (5 s), so a slow machine does not fail it.
const HANGING: Duration = Duration::from_secs(20);

/// A node paused (or cut off) inside a transaction that locked the leader row, as a leader
/// duty's `FOR SHARE` does (here `FOR UPDATE`, the strongest), used to make every other node's
/// `lead` wait forever: no leader, no rescue, and `Scheduler::stop` hung on the election task.
/// Now `lead` waits at most `PgOptions::lock_timeout` and answers `Unavailable` (retried at the
/// next renewal), and the store's own connections end such a transaction after
/// `PgOptions::idle_in_transaction_timeout`, which frees the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_paused_on_the_leader_row_does_not_stall_lead() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    // The electing node, with the default settings.
    let electing = schema.connect().await;
    let lock_leader_row = "SELECT 1 FROM punctual_leader WHERE id = 1 FOR UPDATE";

    // A connection without the store's settings holds the lock and sits idle: `lead` gives up
    // after the lock timeout instead of waiting for it.
    let mut outsider = raw_client(Some(&schema.name)).await;
    let paused = outsider.transaction().await.expect("begin");
    paused.execute(lock_leader_row, &[]).await.expect("lock");
    let answer = tokio::time::timeout(
        HANGING,
        electing.lead(&node("node-b"), None, LEADERSHIP, NOW),
    )
    .await
    .expect("lead must not wait for the paused transaction");
    assert!(
        matches!(answer, Err(StoreError::Unavailable(_))),
        "{answer:?}"
    );
    paused.rollback().await.expect("rollback");

    // The same on one of a store's own connections, whose idle transactions are ended: the lock
    // is released within the idle timeout, and the election goes through.
    let options = PgOptions {
        idle_in_transaction_timeout: Some(Duration::from_secs(1)),
        ..schema.options()
    };
    let paused_node = PgStore::connect_with(&database_url(), options)
        .await
        .expect("connect");
    let mut client = paused_node.client().await.expect("client");
    let paused = client.transaction().await.expect("begin");
    paused.execute(lock_leader_row, &[]).await.expect("lock");
    let answer = tokio::time::timeout(
        HANGING,
        electing.lead(&node("node-b"), None, LEADERSHIP, NOW),
    )
    .await
    .expect("lead must not wait for the paused transaction");
    assert_eq!(answer.expect("lead"), Some(LeaderTerm(1)));
    // The paused node's transaction was rolled back and its session ended.
    assert!(paused.execute("SELECT 1", &[]).await.is_err());
}
