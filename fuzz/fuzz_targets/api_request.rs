//! Fuzzes the API's request decoding: one HTTP request through the node's own router
//! (`punctual_server::node::in_process_router`: the routes, authentication, body limits, JSON
//! and query decoding, and the handlers' validation into core types, on a `MemoryStore`).
//!
//! The input is a request much as it is written on the wire, with `\n` line ends:
//!
//! ```text
//! POST /v1/jobs?optional=query
//! header-name: value
//!
//! {"kind": "email"}
//! ```
//!
//! The first line is the method and the target; header lines follow; everything after the
//! first empty line is the body. A request without `content-type` is sent as
//! `application/json`, and one without `authorization` with an admin token, so most inputs
//! get past the door and into decoding. Every execution starts from the same fresh store: a
//! running job (`RUNNING`, lease token 1, held by `worker-1`), a dead one (`DEAD`) and a
//! scheduled one (`SCHEDULED`), on a clock that stands still; the engine is not started and
//! webhook host names resolve to a public address without any lookup. The router is built
//! once (building one takes about 10 ms, most of an execution) on a store whose contents are
//! replaced before each request (`Fresh`); only the token cache and the metrics outlive one.
//!
//! Nothing may panic, and no request gets a 5xx: a refusal is a 4xx problem document
//! (`application/problem+json`) whose `status` is the response's and whose `code` is set.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, header};
use libfuzzer_sys::fuzz_target;
use punctual_core::{
    ApiToken, ClaimRequest, ClaimedJob, Clock, Cursor, FailOutcome, IdempotencyRecord, Idempotent,
    InsertHints, Job, JobFilter, JobId, JobOptions, JobPage, JobState, Kind, LeaderTerm,
    LeaseToken, NewJob, NodeId, Payload, Queue, QueueStats, RescueOutcome, StateCount, Store,
    StoreError, Timestamp, TokenId,
};
use punctual_server::NodeConfig;
use punctual_server::auth::{Scope, issue};
use punctual_server::node::in_process_router;
use punctual_server::webhook::guard::NameResolver;
use punctual_testkit::{ManualClock, MemoryStore};
use tower::ServiceExt;

/// The fixture's jobs, by id; seeds and the dictionary name them.
const RUNNING: &str = "01937a9c-0000-7000-8000-000000000001";
const DEAD: &str = "01937a9c-0000-7000-8000-000000000002";
const SCHEDULED: &str = "01937a9c-0000-7000-8000-000000000003";
/// 2026-12-01T00:00:00Z.
const NOW_US: i64 = 1_796_083_200_000_000;
/// Most bytes of a response read back: more than any refusal, and than most answers.
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Webhook hosts resolve to a public address, with no lookup on the network.
struct PublicNames;

#[async_trait]
impl NameResolver for PublicNames {
    async fn resolve(&self, _host: &str) -> std::io::Result<Vec<IpAddr>> {
        Ok(vec![IpAddr::V4(Ipv4Addr::new(93, 184, 215, 14))])
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime")
    })
}

fn id(text: &str) -> JobId {
    text.parse().expect("a fixture id")
}

fn new_job(id_text: &str, kind: &str, attempt_max: u32, run_at: Timestamp) -> NewJob {
    let now = Timestamp::from_micros(NOW_US);
    let options = JobOptions::default()
        .id(id(id_text))
        .attempt_max(attempt_max);
    let kind = Kind::new(kind).expect("a fixture kind");
    NewJob::new(kind, Payload::null(), run_at, options, now).expect("a fixture job")
}

fn claim(kind: &str) -> ClaimRequest {
    ClaimRequest {
        holder: NodeId::new("worker-1").expect("a fixture name"),
        queues: None,
        kinds: Some(vec![Kind::new(kind).expect("a fixture kind")]),
        limit: 1,
        due_by: Timestamp::from_micros(NOW_US),
        lease: Duration::from_secs(30),
    }
}

/// The router, built once, on a store whose contents each execution replaces.
struct Harness {
    router: axum::Router,
    store: Arc<Fresh>,
    token: String,
    record: ApiToken,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let now = Timestamp::from_micros(NOW_US);
        let (token, record) = issue("fuzz", &[Scope::Admin], None, now).expect("a valid token");
        let store = Arc::new(Fresh(Mutex::new(Arc::new(MemoryStore::new()))));
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(now));
        let mut config = NodeConfig {
            listen: "127.0.0.1:0".parse().expect("an address"),
            engine: punctual::Config::default(),
            insecure_no_auth: false,
            metrics_public: false,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            webhook_secrets: Vec::new(),
            allow_networks: Vec::new(),
        };
        config.engine.node = NodeId::new("fuzz").expect("a node name");
        let router = runtime().block_on(async {
            in_process_router(store.clone(), clock, &config, Arc::new(PublicNames))
                .expect("the router is built")
        });
        Harness {
            router,
            store,
            token,
            record,
        }
    })
}

/// A store holding the fixture and the admin token's record.
async fn fixture(record: &ApiToken) -> Arc<MemoryStore> {
    let now = Timestamp::from_micros(NOW_US);
    let store = Arc::new(MemoryStore::new());
    store.insert_token(record.clone()).await.expect("stored");
    store
        .insert(vec![new_job(DEAD, "report", 1, now)], now)
        .await
        .expect("stored");
    let claimed = store.claim(claim("report"), now).await.expect("claimed");
    assert_eq!(claimed.len(), 1);
    store
        .fail(
            id(DEAD),
            claimed[0].lease_token,
            "boom",
            FailOutcome::Dead,
            now,
        )
        .await
        .expect("failed");
    store
        .insert(vec![new_job(RUNNING, "email", 3, now)], now)
        .await
        .expect("stored");
    let claimed = store.claim(claim("email"), now).await.expect("claimed");
    assert_eq!(claimed[0].lease_token.0, 1, "the seeds send lease token 1");
    let later = now.add(Duration::from_secs(3600));
    store
        .insert(vec![new_job(SCHEDULED, "email", 3, later)], now)
        .await
        .expect("stored");
    store
}

/// The request an input describes, or `None` if it is not one HTTP could carry.
fn request(data: &[u8], token: &str) -> Option<Request<Body>> {
    let split = data.windows(2).position(|pair| pair == b"\n\n");
    let (head, body) = match split {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split('\n');
    let (method, target) = lines.next()?.split_once(' ')?;
    let mut builder = Request::builder().method(method).uri(target);
    let (mut typed, mut authorised) = (false, false);
    // A head may end with its own line end (`GET /v1/queues\n`).
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        typed |= name.eq_ignore_ascii_case(header::CONTENT_TYPE.as_str());
        authorised |= name.eq_ignore_ascii_case(header::AUTHORIZATION.as_str());
        builder = builder.header(name, value.trim());
    }
    if !typed {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    if !authorised {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Body::from(body.to_vec())).ok()
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    runtime().block_on(async {
        let Some(request) = request(data, &harness.token) else {
            return;
        };
        harness.store.replace(fixture(&harness.record).await);
        let router = harness.router.clone();
        let route = format!("{} {}", request.method(), request.uri());
        let response = router
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), RESPONSE_BYTES_MAX)
            .await
            .expect("a body within the limit");
        let text = String::from_utf8_lossy(&body);
        assert!(
            !status.is_server_error(),
            "{route}: {status} {content_type} {text}"
        );
        if status.is_client_error() {
            assert_eq!(
                content_type, "application/problem+json",
                "{route}: {status} is not a problem document: {text}"
            );
            let problem: serde_json::Value =
                serde_json::from_slice(&body).expect("a problem is JSON");
            assert_eq!(problem["status"], status.as_u16(), "{route}: {text}");
            assert!(
                problem["code"]
                    .as_str()
                    .is_some_and(|code| !code.is_empty()),
                "{route}: {text}"
            );
        }
    });
});

/// A `Store` whose contents are swapped whole between executions: every call goes to the
/// `MemoryStore` it holds at that moment.
struct Fresh(Mutex<Arc<MemoryStore>>);

impl Fresh {
    fn current(&self) -> Arc<MemoryStore> {
        self.0.lock().expect("never poisoned").clone()
    }

    fn replace(&self, store: Arc<MemoryStore>) {
        *self.0.lock().expect("never poisoned") = store;
    }
}

#[async_trait]
impl Store for Fresh {
    async fn insert(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<JobId>, StoreError> {
        self.current().insert(jobs, now).await
    }
    async fn claim(
        &self,
        request: ClaimRequest,
        now: Timestamp,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        self.current().claim(request, now).await
    }
    async fn extend_lease(
        &self,
        id: JobId,
        token: LeaseToken,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.current()
            .extend_lease(id, token, expires_at, now)
            .await
    }
    async fn complete(
        &self,
        id: JobId,
        token: LeaseToken,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.current().complete(id, token, now).await
    }
    async fn fail(
        &self,
        id: JobId,
        token: LeaseToken,
        error: &str,
        outcome: FailOutcome,
        now: Timestamp,
    ) -> Result<JobState, StoreError> {
        self.current().fail(id, token, error, outcome, now).await
    }
    async fn release(
        &self,
        id: JobId,
        token: LeaseToken,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.current().release(id, token, now).await
    }
    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        self.current().cancel(id, now).await
    }
    async fn reschedule(
        &self,
        id: JobId,
        run_at: Timestamp,
        now: Timestamp,
    ) -> Result<Job, StoreError> {
        self.current().reschedule(id, run_at, now).await
    }
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.current().get(id).await
    }
    async fn list(
        &self,
        filter: JobFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<JobPage, StoreError> {
        self.current().list(filter, after, limit).await
    }
    async fn counts(&self) -> Result<Vec<StateCount>, StoreError> {
        self.current().counts().await
    }
    async fn queue_stats(&self, now: Timestamp) -> Result<Vec<QueueStats>, StoreError> {
        self.current().queue_stats(now).await
    }
    async fn next_due(
        &self,
        queues: Option<&[Queue]>,
        kinds: Option<&[Kind]>,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.current().next_due(queues, kinds).await
    }
    async fn next_lease_expiry(&self) -> Result<Option<Timestamp>, StoreError> {
        self.current().next_lease_expiry().await
    }
    async fn lead(
        &self,
        node: &NodeId,
        term: Option<LeaderTerm>,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        self.current().lead(node, term, lease, now).await
    }
    async fn resign(&self, node: &NodeId, term: LeaderTerm) -> Result<(), StoreError> {
        self.current().resign(node, term).await
    }
    async fn rescue_expired(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<RescueOutcome>, StoreError> {
        self.current().rescue_expired(term, now, limit).await
    }
    async fn purge_finished(
        &self,
        term: LeaderTerm,
        finished_before: Timestamp,
        limit: usize,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        self.current()
            .purge_finished(term, finished_before, limit, now)
            .await
    }
    async fn insert_idempotent(
        &self,
        jobs: Vec<NewJob>,
        record: IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Idempotent, StoreError> {
        self.current().insert_idempotent(jobs, record, now).await
    }
    async fn purge_idempotency(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError> {
        self.current().purge_idempotency(term, now, limit).await
    }
    async fn insert_token(&self, token: ApiToken) -> Result<(), StoreError> {
        self.current().insert_token(token).await
    }
    async fn get_token(&self, id: &TokenId) -> Result<Option<ApiToken>, StoreError> {
        self.current().get_token(id).await
    }
    async fn list_tokens(
        &self,
        after: Option<&TokenId>,
        limit: usize,
    ) -> Result<Vec<ApiToken>, StoreError> {
        self.current().list_tokens(after, limit).await
    }
    async fn revoke_token(&self, id: &TokenId, now: Timestamp) -> Result<ApiToken, StoreError> {
        self.current().revoke_token(id, now).await
    }
    punctual_core::delegate_schedule_methods!(this => this.current());
    async fn listen(&self) -> Result<Option<Box<dyn InsertHints>>, StoreError> {
        self.current().listen().await
    }
}
