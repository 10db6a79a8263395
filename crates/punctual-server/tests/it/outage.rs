//! A store outage is a 503 with Retry-After, never a 500, and the node recovers by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use punctual_core::*;
use punctual_testkit::MemoryStore;
use serde_json::json;

use crate::harness::{Server, eventually, node_config};

/// A store that fails every call with `Unavailable` while `down` is set, and whose inserts
/// under an idempotency key wait while `gate` is held for writing.
pub(crate) struct Flaky {
    pub inner: MemoryStore,
    pub down: AtomicBool,
    pub gate: tokio::sync::RwLock<()>,
    /// Inserts under an idempotency key that reached the store (before the gate).
    pub idempotent_calls: std::sync::atomic::AtomicUsize,
}

impl Flaky {
    pub fn new() -> Flaky {
        Flaky {
            inner: MemoryStore::new(),
            down: AtomicBool::new(false),
            gate: tokio::sync::RwLock::new(()),
            idempotent_calls: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable(
                "the test cut the store off".to_owned(),
            ))
        } else {
            Ok(())
        }
    }
}

macro_rules! pass {
    ($self:ident, $call:expr) => {{
        $self.check()?;
        $call.await
    }};
}

#[async_trait]
impl Store for Flaky {
    async fn insert(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<JobId>, StoreError> {
        pass!(self, self.inner.insert(jobs, now))
    }
    async fn claim(
        &self,
        request: ClaimRequest,
        now: Timestamp,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        pass!(self, self.inner.claim(request, now))
    }
    async fn extend_lease(
        &self,
        id: JobId,
        token: LeaseToken,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        pass!(self, self.inner.extend_lease(id, token, expires_at, now))
    }
    async fn complete(
        &self,
        id: JobId,
        token: LeaseToken,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        pass!(self, self.inner.complete(id, token, now))
    }
    async fn fail(
        &self,
        id: JobId,
        token: LeaseToken,
        error: &str,
        outcome: FailOutcome,
        now: Timestamp,
    ) -> Result<JobState, StoreError> {
        pass!(self, self.inner.fail(id, token, error, outcome, now))
    }
    async fn release(
        &self,
        id: JobId,
        token: LeaseToken,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        pass!(self, self.inner.release(id, token, now))
    }
    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        pass!(self, self.inner.cancel(id, now))
    }
    async fn reschedule(
        &self,
        id: JobId,
        run_at: Timestamp,
        now: Timestamp,
    ) -> Result<Job, StoreError> {
        pass!(self, self.inner.reschedule(id, run_at, now))
    }
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        pass!(self, self.inner.get(id))
    }
    async fn list(
        &self,
        filter: JobFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<JobPage, StoreError> {
        pass!(self, self.inner.list(filter, after, limit))
    }
    async fn counts(&self) -> Result<Vec<StateCount>, StoreError> {
        pass!(self, self.inner.counts())
    }
    async fn queue_stats(&self, now: Timestamp) -> Result<Vec<QueueStats>, StoreError> {
        pass!(self, self.inner.queue_stats(now))
    }
    async fn next_due(
        &self,
        queues: Option<&[Queue]>,
        kinds: Option<&[Kind]>,
    ) -> Result<Option<Timestamp>, StoreError> {
        pass!(self, self.inner.next_due(queues, kinds))
    }
    async fn next_lease_expiry(&self) -> Result<Option<Timestamp>, StoreError> {
        pass!(self, self.inner.next_lease_expiry())
    }
    async fn lead(
        &self,
        node: &NodeId,
        term: Option<LeaderTerm>,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        pass!(self, self.inner.lead(node, term, lease, now))
    }
    async fn resign(&self, node: &NodeId, term: LeaderTerm) -> Result<(), StoreError> {
        pass!(self, self.inner.resign(node, term))
    }
    async fn rescue_expired(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<RescueOutcome>, StoreError> {
        pass!(self, self.inner.rescue_expired(term, now, limit))
    }
    async fn purge_finished(
        &self,
        term: LeaderTerm,
        finished_before: Timestamp,
        limit: usize,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        pass!(
            self,
            self.inner.purge_finished(term, finished_before, limit, now)
        )
    }
    async fn insert_idempotent(
        &self,
        jobs: Vec<NewJob>,
        record: IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Idempotent, StoreError> {
        self.idempotent_calls.fetch_add(1, Ordering::SeqCst);
        let _open = self.gate.read().await;
        pass!(self, self.inner.insert_idempotent(jobs, record, now))
    }
    async fn purge_idempotency(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError> {
        pass!(self, self.inner.purge_idempotency(term, now, limit))
    }
    async fn insert_token(&self, token: ApiToken) -> Result<(), StoreError> {
        pass!(self, self.inner.insert_token(token))
    }
    async fn get_token(&self, id: &TokenId) -> Result<Option<ApiToken>, StoreError> {
        pass!(self, self.inner.get_token(id))
    }
    async fn list_tokens(
        &self,
        after: Option<&TokenId>,
        limit: usize,
    ) -> Result<Vec<ApiToken>, StoreError> {
        pass!(self, self.inner.list_tokens(after, limit))
    }
    async fn revoke_token(&self, id: &TokenId, now: Timestamp) -> Result<ApiToken, StoreError> {
        pass!(self, self.inner.revoke_token(id, now))
    }

    punctual_core::delegate_schedule_methods!(this => this.inner);
}

#[tokio::test]
async fn an_outage_is_a_503_with_retry_after_and_the_node_recovers() {
    let flaky = Arc::new(Flaky::new());
    let server = Server::start_on(flaky.clone(), node_config("flaky")).await;
    let id = server
        .create(&json!({"kind": "k", "delay_ms": 60000}))
        .await;
    // Let the token cache lapse, so authentication too must ask the store.
    tokio::time::sleep(punctual_server::auth::CACHE_TTL + Duration::from_millis(100)).await;
    flaky.down.store(true, Ordering::SeqCst);
    for (method, path) in [
        ("GET", format!("/v1/jobs/{id}")),
        ("POST", "/v1/jobs".to_owned()),
        ("GET", "/v1/queues".to_owned()),
    ] {
        let body = (method == "POST").then(|| json!({"kind": "k"}));
        let answer = server
            .request(method, &path, Some(&server.admin), body.as_ref())
            .await;
        assert_eq!(
            (answer.status, answer.code()),
            (503, "unavailable"),
            "{method} {path}: {answer:?}"
        );
        assert_eq!(answer.headers["retry-after"], "1");
    }
    let ready = server.request("GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        server.request("GET", "/healthz", None, None).await.status,
        200
    );

    flaky.down.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(5), "readiness", || async {
        server.request("GET", "/readyz", None, None).await.status == 200
    })
    .await;
    assert_eq!(server.job(&id).await["state"], "scheduled");
    assert_eq!(
        server.job_count().await,
        1,
        "the refused creation stored nothing"
    );
    server.stop().await;
}

/// A SQLite writer thread that dies leaves a store that can never write again: the node says
/// so on `/readyz` and `/healthz` (a supervisor restarts it) rather than answering 503 to every
/// write forever while it looks alive; and a restart on the same file has every job.
#[tokio::test]
async fn a_dead_sqlite_writer_makes_the_node_unready_and_unhealthy() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("punctual.db");
    let store = Arc::new(punctual_sqlite::SqliteStore::open(&path).expect("open"));
    let server = Server::start_on(store.clone(), node_config("doomed")).await;
    let id = server
        .create(&json!({"kind": "k", "delay_ms": 60000}))
        .await;
    assert_eq!(
        server.request("GET", "/readyz", None, None).await.status,
        200
    );
    assert!(store.fatal_error().is_none());

    store.inject_writer_panic().await;
    let detail = store
        .fatal_error()
        .expect("the store reports its dead writer");
    assert!(detail.contains("panicked"), "{detail}");
    for path in ["/readyz", "/healthz"] {
        let answer = server.request("GET", path, None, None).await;
        assert_eq!(answer.status, 503, "{path}: {answer:?}");
        let said = answer.body["detail"].as_str().unwrap_or_default();
        assert!(said.contains("restart the node"), "{path}: {said}");
    }
    // Writes are refused with a 503, never a 500, and reads still answer.
    let refused = server
        .request(
            "POST",
            "/v1/jobs",
            Some(&server.admin),
            Some(&json!({"kind": "k"})),
        )
        .await;
    assert_eq!((refused.status, refused.code()), (503, "unavailable"));
    assert_eq!(server.job(&id).await["state"], "scheduled");
    drop(server);
    drop(store);

    let reopened = Arc::new(punctual_sqlite::SqliteStore::open(&path).expect("reopen"));
    assert!(reopened.fatal_error().is_none());
    let job = reopened
        .get(id.parse().expect("an id"))
        .await
        .expect("get")
        .expect("the acknowledged job is there");
    assert_eq!(job.state, JobState::Scheduled);
}

/// A node on SQLite whose disk fills up: new jobs are refused with a 503 that says why, the
/// jobs already stored still fire and succeed (the store's disk reserve holds their writes),
/// and once space returns the node takes new jobs again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_a_full_disk_refuses_new_jobs_and_still_fires_the_stored_ones() {
    use punctual_sqlite::{SqliteOptions, SqliteStore};
    use punctual_testkit::small_disk::SmallDisk;

    let Some(disk) = SmallDisk::mount_or_skip("16m", "the node's disk-full test") else {
        return;
    };
    let options = SqliteOptions {
        disk_reserve: 2 * 1024 * 1024,
        ..SqliteOptions::default()
    };
    let store =
        Arc::new(SqliteStore::open_with(disk.path().join("punctual.db"), options).expect("open"));
    let receiver = crate::harness::Receiver::start().await;
    let server = Server::start_on(store.clone(), node_config("full")).await;
    const STORED: usize = 20;
    let mut stored = Vec::new();
    for n in 0..STORED {
        let body = crate::harness::webhook_job(&receiver.url("hook"), 3_000, json!({ "n": n }));
        stored.push(server.create(&body).await);
    }

    // The disk fills, from outside the store and then with jobs, until the node refuses one.
    let filler = disk.fill("filler");
    let big = json!({"kind": "k", "delay_ms": 600_000, "payload": "x".repeat(60_000)});
    let mut refused = None;
    for _ in 0..1_000 {
        let answer = server.post("/v1/jobs", &big).await;
        if answer.status != 201 {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.expect("a full disk refuses a new job");
    assert_eq!(
        (refused.status, refused.code()),
        (503, "unavailable"),
        "{refused:?}"
    );
    let again = server.post("/v1/jobs", &big).await;
    assert_eq!(again.status, 503, "{again:?}");
    let detail = again.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("disk is full"),
        "the answer says why: {detail}"
    );

    // The stored jobs fire and succeed while the disk stays full.
    receiver
        .wait_for("hook", STORED, Duration::from_secs(20))
        .await;
    for id in &stored {
        server
            .wait_for_state(id, "succeeded", Duration::from_secs(10))
            .await;
    }
    assert!(store.fatal_error().is_none(), "a full disk is not fatal");

    // Space returns: new jobs are taken again without a restart.
    std::fs::remove_file(&filler).expect("free the space");
    eventually(Duration::from_secs(10), "a new job accepted", || {
        let server = &server;
        async move {
            let small = json!({"kind": "k", "delay_ms": 600_000});
            server.post("/v1/jobs", &small).await.status == 201
        }
    })
    .await;
    drop(server);
}
