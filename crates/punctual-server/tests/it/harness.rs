//! The test harness: a real node on a real socket, a real HTTP client, and a webhook receiver
//! that records what it is sent and answers as each test tells it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use punctual::Config;
use punctual_core::{Clock, NodeId, Store, SystemClock};
use punctual_postgres::{PgOptions, PgStore};
use punctual_server::auth::{Scope, issue};
use punctual_server::webhook::guard::NameResolver;
use punctual_server::webhook::sign::{Secret, verify};
use punctual_server::{Node, NodeConfig};
use punctual_sqlite::SqliteStore;
use punctual_testkit::MemoryStore;
use serde_json::{Value, json};
use tokio::sync::{Notify, OnceCell};

/// The secret every test node signs with.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Waits for `condition` up to `limit`, looking every 10 ms.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The engine settings of test nodes: short leases and quick rescues, so a lost lease comes
/// back within a second or two.
pub fn engine(node: &str) -> Config {
    Config {
        node: NodeId::new(node).expect("a valid node name"),
        concurrency: 256,
        lease: Duration::from_secs(3),
        heartbeat: Duration::from_millis(200),
        poll_max: Duration::from_millis(200),
        rescue_interval: Duration::from_millis(100),
        leader_lease: Duration::from_secs(2),
        leader_renew: Duration::from_millis(300),
        grace: Duration::from_secs(2),
        ..Config::default()
    }
}

/// A node's settings for tests: port 0 on loopback, receivers on loopback allowed.
pub fn node_config(node: &str) -> NodeConfig {
    NodeConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        engine: engine(node),
        insecure_no_auth: false,
        metrics_public: false,
        idempotency_ttl: Duration::from_secs(3600),
        webhook_secrets: vec![Secret::parse(SECRET).expect("valid")],
        allow_networks: vec!["127.0.0.0/8".parse().expect("a range")],
    }
}

/// Which store a test's node runs on. Every behaviour test runs on each (`on_every_store!`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn database_url() -> String {
    std::env::var("PUNCTUAL_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Whether PostgreSQL answers, asked once per test binary. Under `CI=true` a missing server
/// fails the run; elsewhere its tests are skipped with a loud message.
pub async fn postgres_available() -> bool {
    static AVAILABLE: OnceCell<bool> = OnceCell::const_new();
    *AVAILABLE
        .get_or_init(|| async {
            let url = database_url();
            let probe = PgStore::connect_with(&url, PgOptions { pool_size: 1, ..PgOptions::default() });
            match tokio::time::timeout(Duration::from_secs(5), probe).await {
                Ok(Ok(_)) => true,
                outcome => {
                    let reason = match outcome {
                        Ok(Err(error)) => error.to_string(),
                        _ => "no answer within 5 s".to_owned(),
                    };
                    assert!(
                        std::env::var("CI").as_deref() != Ok("true"),
                        "PostgreSQL is not reachable at {url} ({reason}), and CI=true needs it"
                    );
                    use std::io::Write as _;
                    let _ = writeln!(
                        std::io::stderr(),
                        "\n*** SKIPPED: PostgreSQL not reachable at {url} ({reason}); the server's \
                         PostgreSQL tests did not run. Set PUNCTUAL_TEST_DATABASE_URL or start it. ***\n"
                    );
                    false
                }
            }
        })
        .await
}

/// A test's store, and what must be cleaned up after it.
pub struct Place {
    pub backend: Backend,
    pub store: Arc<dyn Store>,
    /// The SQLite file's directory.
    pub dir: Option<tempfile::TempDir>,
    /// The PostgreSQL schema.
    pub schema: Option<String>,
}

impl Place {
    pub async fn new(backend: Backend) -> Place {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        match backend {
            Backend::Memory => Place {
                backend,
                store: Arc::new(MemoryStore::new()),
                dir: None,
                schema: None,
            },
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let store = SqliteStore::open(dir.path().join("punctual.db")).expect("open SQLite");
                Place {
                    backend,
                    store: Arc::new(store),
                    dir: Some(dir),
                    schema: None,
                }
            }
            Backend::Postgres => {
                let seconds = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("after 1970")
                    .as_secs();
                let counter = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let schema = format!("srv_{seconds}_{}_{counter}", std::process::id());
                let store = PgStore::connect_with(&database_url(), pg_options(&schema))
                    .await
                    .expect("connect to PostgreSQL");
                Place {
                    backend,
                    store: Arc::new(store),
                    dir: None,
                    schema: Some(schema),
                }
            }
        }
    }

    /// The same store opened again (a restarted node): a new SQLite handle on the same file, a
    /// new pool on the same schema.
    pub async fn reopen(&self) -> Arc<dyn Store> {
        match self.backend {
            Backend::Memory => self.store.clone(),
            Backend::Sqlite => {
                let path = self
                    .dir
                    .as_ref()
                    .expect("a directory")
                    .path()
                    .join("punctual.db");
                Arc::new(SqliteStore::open(path).expect("reopen SQLite"))
            }
            Backend::Postgres => {
                let schema = self.schema.as_deref().expect("a schema");
                Arc::new(
                    PgStore::connect_with(&database_url(), pg_options(schema))
                        .await
                        .expect("reconnect"),
                )
            }
        }
    }

    async fn clean_up(&self) {
        if let Some(schema) = &self.schema
            && let Ok(store) = PgStore::connect_with(&database_url(), pg_options(schema)).await
        {
            // A schema left by a failed drop is named by its time; nothing else uses it.
            let _ = store.drop_schema().await;
        }
    }
}

fn pg_options(schema: &str) -> PgOptions {
    PgOptions {
        schema: Some(schema.to_owned()),
        pool_size: 8,
        ..PgOptions::default()
    }
}

/// Runs each named `async fn(Backend)` as a test on every store: `memory::name`,
/// `sqlite::name`, `postgres::name` (skipped loudly when PostgreSQL is missing outside CI).
#[macro_export]
macro_rules! on_every_store {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::harness::Backend::Memory).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::harness::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if !$crate::harness::postgres_available().await {
                        return;
                    }
                    super::$test($crate::harness::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// A running node, with an admin token and a client.
pub struct Server {
    pub node: Node,
    pub store: Arc<dyn Store>,
    pub place: Place,
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
}

/// An answer: status, headers, and the body as JSON (`Value::Null` if it is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The problem document's `code`, or "".
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

impl Server {
    /// A node on a fresh store of `backend`, with the test settings.
    pub async fn start(backend: Backend) -> Server {
        Server::start_with(backend, node_config("node-a"), None).await
    }

    pub async fn start_with(
        backend: Backend,
        config: NodeConfig,
        resolver: Option<Arc<dyn NameResolver>>,
    ) -> Server {
        let place = Place::new(backend).await;
        let store = place.store.clone();
        Server::run(place, store, config, resolver, None).await
    }

    /// A node on `store` (a test's own, such as a store that fails on demand).
    pub async fn start_on(store: Arc<dyn Store>, config: NodeConfig) -> Server {
        let place = Place {
            backend: Backend::Memory,
            store: store.clone(),
            dir: None,
            schema: None,
        };
        Server::run(place, store, config, None, None).await
    }

    /// Starts a node; makes an admin token unless given one already stored.
    async fn run(
        place: Place,
        store: Arc<dyn Store>,
        config: NodeConfig,
        resolver: Option<Arc<dyn NameResolver>>,
        admin: Option<String>,
    ) -> Server {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let admin = match admin {
            Some(admin) => admin,
            None => {
                let (admin, record) =
                    issue("test admin", &[Scope::Admin], None, clock.now()).expect("valid");
                store.insert_token(record).await.expect("stored");
                admin
            }
        };
        let node = match resolver {
            Some(resolver) => {
                Node::start_with_resolver(store.clone(), clock, config, resolver).await
            }
            None => Node::start(store.clone(), clock, config).await,
        }
        .expect("the node starts");
        let base = format!("http://{}", node.address());
        Server {
            node,
            store,
            place,
            base,
            admin,
            client: reqwest::Client::new(),
        }
    }

    /// Stops this node and starts another on the same store, as a restart does, with the same
    /// admin token.
    pub async fn restart(self) -> Server {
        self.node.stop().await;
        let Server {
            node,
            store,
            place,
            admin,
            ..
        } = self;
        drop(node);
        drop(store);
        let store = place.reopen().await;
        Server::run(place, store, node_config("node-b"), None, Some(admin)).await
    }

    /// Stops the node and drops the test's schema.
    pub async fn stop(self) {
        self.node.stop().await;
        self.place.clean_up().await;
    }

    /// A token with `scopes`, stored directly.
    pub async fn token(&self, scopes: &[Scope]) -> String {
        let (text, record) = issue("test", scopes, None, SystemClock.now()).expect("valid");
        self.store.insert_token(record).await.expect("stored");
        text
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut request = self.client.request(
            method.parse().expect("a method"),
            format!("{}{path}", self.base),
        );
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        answer(request.send().await.expect("the server answers")).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.request("GET", path, Some(&self.admin), None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.request("POST", path, Some(&self.admin), Some(body))
            .await
    }

    /// Creates a job and returns its id, asserting 201.
    pub async fn create(&self, body: &Value) -> String {
        let answer = self.post("/v1/jobs", body).await;
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.body["id"].as_str().expect("an id").to_owned()
    }

    pub async fn job(&self, id: &str) -> Value {
        let answer = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body
    }

    /// Waits until job `id` is in `state`.
    pub async fn wait_for_state(&self, id: &str, state: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let last = self.job(id).await;
            if last["state"] == state {
                return last;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never reached {state}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many jobs the store holds, in every state.
    pub async fn job_count(&self) -> u64 {
        self.store
            .counts()
            .await
            .expect("counts")
            .iter()
            .map(|count| count.count)
            .sum()
    }
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("a body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// One request a receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
    /// Whether its signature verified with `SECRET`.
    pub signed: bool,
}

/// How a receiver answers a path: a status, optional `Retry-After`, and a delay first.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<&'static str>,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            retry_after: None,
            delay: Duration::ZERO,
        }
    }
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    /// Replies per path, used in order; the last one repeats.
    replies: Mutex<BTreeMap<String, Vec<Reply>>>,
    arrived: Notify,
}

/// A webhook receiver on loopback.
pub struct Receiver {
    pub address: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let router = axum::Router::new()
            .route("/{*path}", axum::routing::any(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("an address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver { address, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.address)
    }

    /// Answer `path` with these replies, in order (the last repeats).
    pub fn reply(&self, path: &str, replies: Vec<Reply>) {
        self.state
            .replies
            .lock()
            .expect("lock")
            .insert(format!("/{path}"), replies);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|received| received.path == format!("/{path}"))
            .collect()
    }

    /// Waits until `path` has received `count` requests.
    pub async fn wait_for(&self, path: &str, count: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let arrived = self.state.arrived.notified();
            let got = self.received_on(path);
            if got.len() >= count {
                return got;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{path} received {} of {count} requests",
                got.len()
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), arrived).await;
        }
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let path = format!("/{path}");
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap_or(0);
    let secret = Secret::parse(SECRET).expect("valid");
    let signed = verify(
        &secret,
        &header("webhook-signature"),
        &header("webhook-id"),
        timestamp,
        &body,
    );
    let recorded = Received {
        path: path.clone(),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.to_string(),
                    value.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        at: Instant::now(),
        signed,
    };
    let reply = {
        let mut replies = state.replies.lock().expect("lock");
        match replies.get_mut(&path) {
            Some(list) if list.len() > 1 => list.remove(0),
            Some(list) => list[0].clone(),
            None => Reply::status(200),
        }
    };
    state.received.lock().expect("lock").push(recorded);
    state.arrived.notify_waiters();
    tokio::time::sleep(reply.delay).await;
    let mut response = StatusCode::from_u16(reply.status)
        .expect("a status")
        .into_response();
    if let Some(after) = reply.retry_after {
        response
            .headers_mut()
            .insert("retry-after", after.parse().expect("a header"));
    }
    response
}

/// A resolver that answers every name with fixed addresses, changeable while the node runs.
pub struct FixedResolver(pub Mutex<Vec<IpAddr>>);

#[async_trait::async_trait]
impl NameResolver for FixedResolver {
    async fn resolve(&self, _host: &str) -> std::io::Result<Vec<IpAddr>> {
        Ok(self.0.lock().expect("lock").clone())
    }
}

/// A webhook job body due `delay_ms` from now.
pub fn webhook_job(url: &str, delay_ms: u64, payload: Value) -> Value {
    json!({"webhook": {"url": url}, "payload": payload, "delay_ms": delay_ms})
}
