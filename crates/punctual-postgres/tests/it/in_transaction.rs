//! Effects that share the job's transaction (issue 3, item 6): jobs inserted in the caller's
//! transaction exist if and only if it commits, and a handler's writes committed together with
//! its job's completion happen once even when the job runs twice.

use std::time::Duration;

use punctual_core::{
    ClaimRequest, Job, JobId, JobOptions, JobState, LeaseToken, NewJob, RetryPolicy, Store,
    StoreError, Timestamp,
};
use punctual_postgres::PgStore;
use punctual_testkit::fixtures::{NOW, new_job, node};

use crate::{TestSchema, raw_client};

const LEASE: Duration = Duration::from_secs(30);

fn job(run_at: Timestamp) -> NewJob {
    new_job("effect.job", run_at, JobOptions::default(), NOW)
}

async fn claim_one(store: &PgStore, holder: &str, now: Timestamp) -> Job {
    let request = ClaimRequest {
        holder: node(holder),
        queues: None,
        kinds: None,
        limit: 1,
        due_by: now,
        lease: LEASE,
    };
    let mut claimed = store.claim(request, now).await.expect("claim");
    assert_eq!(claimed.len(), 1, "one job due at {now}");
    claimed.remove(0)
}

fn token_of(job: &Job) -> LeaseToken {
    job.lease
        .as_ref()
        .expect("a claimed job holds a lease")
        .token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_inserted_in_a_transaction_exist_only_if_it_commits() {
    let Some((store, _schema)) = crate::fresh_store().await else {
        return;
    };
    let mut wakeups = store.listen().await.expect("listen");
    let mut client = store.client().await.expect("a pooled connection");

    let rolled_back = job(NOW.sub(Duration::from_secs(5)));
    let transaction = client.transaction().await.expect("begin");
    let ids = store
        .insert_in(&transaction, vec![rolled_back.clone()], NOW)
        .await
        .expect("insert_in");
    assert_eq!(ids, [rolled_back.id]);
    // Not visible outside the transaction before it ends.
    assert_eq!(store.get(rolled_back.id).await.expect("get"), None);
    transaction.rollback().await.expect("rollback");
    assert_eq!(store.get(rolled_back.id).await.expect("get"), None);
    assert!(store.counts().await.expect("counts").is_empty());

    let committed = job(NOW.add(Duration::from_secs(5)));
    let transaction = client.transaction().await.expect("begin");
    store
        .insert_in(&transaction, vec![committed.clone()], NOW)
        .await
        .expect("insert_in");
    assert_eq!(store.get(committed.id).await.expect("get"), None);
    transaction.commit().await.expect("commit");
    assert_eq!(
        store.get(committed.id).await.expect("get"),
        Some(committed.clone().into_job(NOW))
    );
    // Listening nodes hear of the committed insert, and never heard of the rolled-back one
    // (whose earlier run_at would have come first).
    let hint = tokio::time::timeout(Duration::from_secs(10), wakeups.recv())
        .await
        .expect("a wake-up within 10 s");
    assert_eq!(hint, committed.run_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_id_in_a_transaction_is_refused_and_the_transaction_goes_on() {
    let Some((store, _schema)) = crate::fresh_store().await else {
        return;
    };
    let stored = job(NOW);
    store
        .insert(vec![stored.clone()], NOW)
        .await
        .expect("insert");
    let mut client = store.client().await.expect("a pooled connection");
    let transaction = client.transaction().await.expect("begin");
    let fresh = job(NOW);
    let refused = store
        .insert_in(&transaction, vec![fresh.clone(), stored.clone()], NOW)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Duplicate(id)) if id == stored.id),
        "{refused:?}"
    );
    // All or none, and the caller's transaction is still usable.
    store
        .insert_in(&transaction, vec![fresh.clone()], NOW)
        .await
        .expect("insert_in after a refusal");
    transaction.commit().await.expect("commit");
    assert!(store.get(fresh.id).await.expect("get").is_some());
    assert_eq!(
        store.get(stored.id).await.expect("get"),
        Some(stored.into_job(NOW))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_of_the_callers_own_works_whatever_its_search_path() {
    let Some((store, _schema)) = crate::fresh_store().await else {
        return;
    };
    // No search_path for the test's schema: the store names its table in full.
    let mut client = raw_client(None).await;
    let transaction = client.transaction().await.expect("begin");
    let new = job(NOW);
    store
        .insert_in(&transaction, vec![new.clone()], NOW)
        .await
        .expect("insert_in");
    transaction.commit().await.expect("commit");
    let claimed = claim_one(&store, "node-a", NOW).await;
    assert_eq!(claimed.id, new.id);

    let transaction = client.transaction().await.expect("begin");
    store
        .complete_in(&transaction, new.id, token_of(&claimed), NOW)
        .await
        .expect("complete_in");
    transaction.commit().await.expect("commit");
    let done = store.get(new.id).await.expect("get").expect("exists");
    assert_eq!(done.state, JobState::Succeeded);
}

/// The user's own table, in the test's schema, where each run of the handler records itself.
async fn create_effects(schema: &TestSchema) {
    raw_client(Some(&schema.name))
        .await
        .batch_execute("CREATE TABLE effects (job_id uuid NOT NULL, lease_token bigint NOT NULL)")
        .await
        .expect("create the user's table");
}

async fn effects(schema: &TestSchema) -> Vec<(uuid::Uuid, i64)> {
    raw_client(Some(&schema.name))
        .await
        .query("SELECT job_id, lease_token FROM effects", &[])
        .await
        .expect("read the user's table")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// What a handler does: its own write and its job's completion in one transaction; commits if
/// the completion is accepted, rolls back otherwise.
async fn run_handler(store: &PgStore, id: JobId, token: LeaseToken, now: Timestamp) -> bool {
    let mut client = store.client().await.expect("a pooled connection");
    let transaction = client.transaction().await.expect("begin");
    let job_uuid = uuid::Uuid::from_bytes(*id.as_bytes());
    let token_value = i64::try_from(token.0).expect("a small token");
    transaction
        .execute(
            "INSERT INTO effects (job_id, lease_token) VALUES ($1, $2)",
            &[&job_uuid, &token_value],
        )
        .await
        .expect("the handler's own write");
    match store.complete_in(&transaction, id, token, now).await {
        Ok(()) => {
            transaction.commit().await.expect("commit");
            true
        }
        Err(StoreError::LeaseLost { .. }) => {
            transaction.rollback().await.expect("rollback");
            false
        }
        Err(other) => panic!("complete_in: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_write_happens_once_though_its_job_runs_twice() {
    let Some((store, schema)) = crate::fresh_store().await else {
        return;
    };
    create_effects(&schema).await;
    let retry = RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(1), 0).expect("valid");
    let options = JobOptions::default().retry(retry);
    let id = store
        .insert(vec![new_job("effect.job", NOW, options, NOW)], NOW)
        .await
        .expect("insert")[0];

    // node-a claims the job, then stalls past its lease; the leader rescues the job and node-b
    // claims it again.
    let first = token_of(&claim_one(&store, "node-a", NOW).await);
    let expired = NOW.add(LEASE);
    let leader = node("leader");
    let term = store
        .lead(&leader, None, LEASE, expired)
        .await
        .expect("lead")
        .expect("nobody else leads");
    let rescued = store
        .rescue_expired(term, expired, 10)
        .await
        .expect("rescue");
    assert_eq!(rescued.len(), 1);
    let retry_at = store.get(id).await.expect("get").expect("exists").run_at;
    let second = token_of(&claim_one(&store, "node-b", retry_at).await);
    assert!(second > first);

    // Both run the handler: node-a late (while node-b holds the job), then node-b.
    let later = retry_at.add(Duration::from_secs(1));
    assert!(
        !run_handler(&store, id, first, later).await,
        "node-a's lease was lost"
    );
    assert!(run_handler(&store, id, second, later).await);
    // And node-a tries once more, after node-b committed.
    assert!(!run_handler(&store, id, first, later).await);

    let job_uuid = uuid::Uuid::from_bytes(*id.as_bytes());
    let second_value = i64::try_from(second.0).expect("a small token");
    assert_eq!(effects(&schema).await, [(job_uuid, second_value)]);
    let done = store.get(id).await.expect("get").expect("exists");
    assert_eq!((done.state, done.attempt), (JobState::Succeeded, 2));

    // The engine's own completion after the handler returned: a no-op for the holder that
    // completed, refused for the other.
    store.complete(id, second, later).await.expect("idempotent");
    assert!(matches!(
        store.complete(id, first, later).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert_eq!(store.get(id).await.expect("get"), Some(done));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_completion_is_not_yet_committed_is_not_rescued() {
    let Some((store, schema)) = crate::fresh_store().await else {
        return;
    };
    create_effects(&schema).await;
    let id = store.insert(vec![job(NOW)], NOW).await.expect("insert")[0];
    let token = token_of(&claim_one(&store, "node-a", NOW).await);

    // node-a completes inside its transaction and is slow to commit; meanwhile the lease runs
    // out and the leader looks for expired leases.
    let mut client = store.client().await.expect("a pooled connection");
    let transaction = client.transaction().await.expect("begin");
    let expired = NOW.add(LEASE);
    store
        .complete_in(&transaction, id, token, expired)
        .await
        .expect("complete_in");
    let term = store
        .lead(&node("leader"), None, LEASE, expired)
        .await
        .expect("lead")
        .expect("nobody else leads");
    let rescued = store
        .rescue_expired(term, expired, 10)
        .await
        .expect("rescue");
    assert!(rescued.is_empty(), "{rescued:?}");
    transaction.commit().await.expect("commit");

    let done = store.get(id).await.expect("get").expect("exists");
    assert_eq!((done.state, done.attempt), (JobState::Succeeded, 1));
    let rescued = store
        .rescue_expired(term, expired, 10)
        .await
        .expect("rescue");
    assert!(rescued.is_empty());
}
