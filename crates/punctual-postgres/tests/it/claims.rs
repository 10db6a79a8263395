//! Claims under contention (issue 3, item 2): many nodes claiming from one table never get the
//! same job, and a claim never takes more than it asked for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use punctual_core::{
    ClaimRequest, Job, JobId, JobOptions, Kind, LeaseToken, NodeId, Store, Timestamp,
};
use punctual_testkit::fixtures::{NOW, job_id, kind, new_job};
use tokio::sync::Barrier;

use crate::TestSchema;

const CLAIMERS: usize = 8;
const JOBS: u64 = 1_000;
const ROUNDS: u64 = 20;
/// Each claimer asks for a different batch size, so batches overlap in every way.
const LIMITS: [usize; CLAIMERS] = [1, 3, 7, 16, 25, 50, 100, 13];

/// 8 nodes (each its own store and pool, as separate processes would be) claim 1,000 due jobs
/// until none is left, 20 rounds; after each round every job was claimed exactly once, with
/// the round's lease token. Between rounds each node hands its jobs back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_never_share_a_job() {
    claim_rounds(None).await;
}

/// The same with a kinds filter, which claims through the index by kind: every node asks for
/// the jobs' kind, half of them with a kind no job has besides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_of_kinds_never_share_a_job() {
    claim_rounds(Some(KIND)).await;
}

const KIND: &str = "stress.job";

/// Runs the rounds; with `kinds`, each claim asks for that kind (and every other node's also
/// for one no job has, so the kinds' ranges are merged).
async fn claim_rounds(kinds: Option<&str>) {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let first = schema.connect().await;
    let jobs = (0..JOBS)
        .map(|sequence| {
            let options = JobOptions::default().id(job_id(NOW, sequence));
            new_job(KIND, NOW, options, NOW)
        })
        .collect();
    first.insert(jobs, NOW).await.expect("insert");

    let barrier = Arc::new(Barrier::new(CLAIMERS));
    let mut nodes = tokio::task::JoinSet::new();
    for node in 0..CLAIMERS {
        let store = schema.connect().await;
        let barrier = Arc::clone(&barrier);
        let kinds = kinds.map(|name| {
            let mut kinds = vec![kind(name)];
            if node % 2 == 1 {
                kinds.push(kind("stress.idle"));
            }
            kinds
        });
        nodes.spawn(claimer(node, store, barrier, kinds));
    }

    let mut claims: BTreeMap<(u64, JobId), Vec<usize>> = BTreeMap::new();
    while let Some(joined) = nodes.join_next().await {
        let (node, claimed) = joined.expect("a claimer panicked");
        for (round, job) in claimed {
            assert_eq!(
                job.lease_token,
                LeaseToken(round),
                "each round's claim takes the next token"
            );
            claims.entry((round, job.id)).or_default().push(node);
        }
    }
    let double: Vec<_> = claims.iter().filter(|(_, nodes)| nodes.len() > 1).collect();
    assert!(double.is_empty(), "jobs claimed twice: {double:?}");
    for round in 1..=ROUNDS {
        let claimed = claims.keys().filter(|(at, _)| *at == round).count() as u64;
        assert_eq!(
            claimed, JOBS,
            "round {round}: every job claimed exactly once"
        );
    }
}

/// One node: in each round, claims until a claim comes back empty, waits for the others to get
/// there too, checks that nothing is left pending, hands its jobs back, and waits again.
/// Returns (round, job) for every claim.
async fn claimer(
    node: usize,
    store: punctual_postgres::PgStore,
    barrier: Arc<Barrier>,
    kinds: Option<Vec<Kind>>,
) -> (usize, Vec<(u64, Job)>) {
    let holder = NodeId::new(&format!("node-{node}")).expect("valid node name");
    let limit = LIMITS[node];
    let mut all = Vec::new();
    for round in 1..=ROUNDS {
        let mut mine = Vec::new();
        loop {
            let request = ClaimRequest {
                holder: holder.clone(),
                queues: None,
                kinds: kinds.clone(),
                limit,
                due_by: NOW,
                lease: Duration::from_secs(60),
            };
            let claimed = store.claim(request, NOW).await.expect("claim");
            assert!(
                claimed.len() <= limit,
                "a claim took more than it asked for"
            );
            if claimed.is_empty() {
                break;
            }
            mine.extend(claimed);
        }
        // Wait until no node claims any more before handing back, or a job would be claimed
        // again in the same round. All jobs are of one priority level and one kind, so a claim
        // locks only rows it takes: an empty claim means every job was taken, by someone.
        barrier.wait().await;
        let pending = store.next_due(None, None).await.expect("next_due");
        assert_eq!(
            pending, None,
            "round {round}: every node's claim came back empty"
        );
        barrier.wait().await;
        for job in &mine {
            let token = job
                .lease
                .as_ref()
                .expect("a claimed job holds a lease")
                .token;
            store
                .release(job.id, token, NOW)
                .await
                .expect("release a job this node holds");
        }
        all.extend(mine.into_iter().map(|job| (round, job)));
        barrier.wait().await;
    }
    (node, all)
}

/// With jobs due at several priority levels, a claim still takes exactly `limit` jobs, the
/// most urgent first, and leaves the rest pending (the per-level scans lock more candidates
/// than they take, and must release them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_across_priority_levels_take_exactly_the_limit() {
    let Some((store, _schema)) = crate::fresh_store().await else {
        return;
    };
    let jobs = (0..100u64)
        .map(|sequence| {
            let priority = punctual_core::Priority::new((sequence % 10) as u8).expect("0..=9");
            let options = JobOptions::default()
                .id(job_id(NOW, sequence))
                .priority(priority);
            new_job("stress.job", NOW, options, NOW)
        })
        .collect();
    store.insert(jobs, NOW).await.expect("insert");
    let request = |limit| ClaimRequest {
        holder: NodeId::new("node-a").expect("valid"),
        queues: None,
        kinds: None,
        limit,
        due_by: NOW,
        lease: Duration::from_secs(60),
    };
    let first = store.claim(request(15), NOW).await.expect("claim");
    let priorities: Vec<u8> = first.iter().map(|job| job.priority.get()).collect();
    assert_eq!(priorities, [vec![0; 10], vec![1; 5]].concat());
    let rest = store.claim(request(1_000), NOW).await.expect("claim");
    assert_eq!(first.len() + rest.len(), 100);
    let at: Timestamp = NOW;
    assert!(
        store
            .claim(request(10), at)
            .await
            .expect("claim")
            .is_empty()
    );
}
