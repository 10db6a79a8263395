//! Cluster mode's faults (issue 3, item 7), end to end: real `punctual serve` nodes share one
//! PostgreSQL schema and send webhooks to a receiver the test runs on loopback, while the test
//! kills them (SIGKILL), pauses them (SIGSTOP), restarts PostgreSQL under them, cuts one off
//! from the database, or skews one's clock. Also `punctual migrate` and `punctual bench` on
//! PostgreSQL.
//!
//! What the tests read (see `nodes`):
//!
//! - the receiver's receipts: job id, attempt, lease token, the attempt's `run_at`, when the
//!   webhook arrived (on the database's clock) and which node sent it (each node signs with a
//!   secret of its own). A receipt is what a run is here: a webhook's effect is its arrival;
//! - the store: each job's final state, and the lease token of the completion it accepted;
//! - each node's JSON log: its `lease lost` warnings, the writes the store refused it;
//! - a node's metrics: how many of its completions the store acknowledged.
//!
//! The assertions, and why they hold with the receiver as the observer of runs:
//!
//! - Nothing is lost: every job ends succeeded and was received. A node records a success only
//!   after a 2xx answer, and the receiver answers only after it recorded the request, so a job's
//!   successful run is always among the receipts.
//! - A job runs again only under a larger lease token, after the lease of a holder the test
//!   killed, paused or cut off (judged on consecutive receipts in token order). A node killed
//!   while sending may have made a run the receiver never saw; that run had no effect, and it
//!   hides no broken rule: the receipts that did arrive are still in token order, and the holder
//!   before an unseen run had lost its lease before every later run too. What the receiver
//!   cannot tell is whether such a node reached the send at all; the old run log could.
//! - No stale completion is accepted: a succeeded job carries the token of its last receipt, so
//!   the completion the store kept is its last run's; a paused or cut-off node's metrics count
//!   no success at all, and its log shows a refused write for each of its jobs, under a token
//!   smaller than the rerun's.
//! - A handler's start is not visible from outside, so timing is judged on arrival (database
//!   clock), which follows the send: "nothing early" is an arrival at or after `run_at`; the
//!   node's own corrected clock at the send is in `webhook-timestamp`, to the second, which is
//!   enough to see a clock a minute off.
//!
//! Each test gets its own schema `cli_t_<unix seconds>_<pid>_<counter>`, dropped at the end;
//! schemas an interrupted run left behind are dropped an hour later by the first test of a
//! later run. The server is `PUNCTUAL_TEST_DATABASE_URL`, or
//! `postgres://postgres@127.0.0.1:5432/test`. When it is unreachable, each test prints
//! `SKIPPED` and passes, unless `CI=true`, where a missing PostgreSQL fails the run.
//!
//! One test restarts the server, which would break any other PostgreSQL test running at that
//! moment, so every test here holds `turns::EXCLUSIVE` for its whole run: they take turns, and
//! the demo and crash tests, whose timing their node processes would skew, take a turn too.
//! Cargo runs test binaries one after another, so other crates' tests are not running meanwhile.
//!
//! Nothing waits a fixed time for an effect: every wait polls with a deadline (generous, for a
//! loaded 2-core machine). Only the faults themselves have durations. A node meant to be
//! rescued (killed, paused, cut off) has a 1-2 s lease, to keep the tests short; any other node
//! has `STEADY_LEASE`, because a node that stalls past its lease on a loaded machine is rightly
//! rescued, and a test that forbids that rerun would then fail although nothing is wrong.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use punctual_bench::receiver::{Receipt, Receiver};
use punctual_core::{Clock, JobId, JobState, Store, StoreError, Timestamp};
use punctual_postgres::{DatabaseClock, PgOptions, PgStore};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{MutexGuard, OnceCell, watch};
use tokio_postgres::NoTls;

use crate::nodes::{
    Api, Node, NodeSpec, PATIENCE, admin_token, after_lease, all_succeed,
    assert_completed_by_last_run, assert_fenced, eventually, receipts, spread_jobs, webhook_job,
};
use crate::turns::EXCLUSIVE;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Schemas this old or older were left by an earlier run and are dropped.
const LEFTOVER_AGE: Duration = Duration::from_secs(3_600);
/// How far two readings of the database clock in different processes may disagree. Each
/// process's offset is measured to within half its best local round trip: tens of microseconds
/// on a quiet machine, but a loaded one can delay every sample by milliseconds. The faults these
/// readings judge are far larger (a minute's clock skew, leases of seconds).
const CLOCK_TOLERANCE_US: i64 = 250_000;
/// The lease of nodes whose jobs must not be rescued: heartbeats renew it every third of it, so
/// only a stall of over 3 s (far beyond a loaded machine's) loses it.
const STEADY_LEASE: Duration = Duration::from_secs(5);
/// Most receipts a test's receiver keeps; far more than any test sends.
const RECEIPTS_MAX: usize = 100_000;

fn database_url() -> String {
    std::env::var("PUNCTUAL_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Says loudly that a test did not run, straight to the process's stderr (the harness captures
/// `eprintln!` of passing tests), or fails it under `CI=true`.
fn skip(reason: &str) {
    if ci() {
        panic!("{reason}, and CI=true: cluster-mode tests must run in CI");
    }
    let _ = writeln!(
        std::io::stderr(),
        "\nSKIPPED: {reason}; this punctual-cli cluster test passes without running.\n"
    );
}

/// A plain connection for the tests' own bookkeeping SQL (finding schemas, sweeping leftovers).
async fn raw_client() -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(&database_url(), NoTls).await?;
    tokio::spawn(async move {
        // Ends when the client is dropped; an error then means nothing to the test.
        let _ = connection.await;
    });
    Ok(client)
}

/// Whether the server answers; checked once per test binary, when it also sweeps leftovers.
async fn reachable() -> Result<(), String> {
    static REACHABLE: OnceCell<Result<(), String>> = OnceCell::const_new();
    REACHABLE
        .get_or_init(|| async {
            match tokio::time::timeout(Duration::from_secs(15), raw_client()).await {
                Ok(Ok(client)) => {
                    sweep_leftovers(&client).await;
                    Ok(())
                }
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err("no answer within 15 s".to_owned()),
            }
        })
        .await
        .clone()
}

/// Drops test schemas older than `LEFTOVER_AGE` (their name starts with their creation time).
async fn sweep_leftovers(client: &tokio_postgres::Client) {
    let Ok(rows) = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'cli\\_t\\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    let cutoff = unix_seconds().saturating_sub(LEFTOVER_AGE.as_secs());
    for row in rows {
        let name: String = row.get(0);
        let created = name.split('_').nth(2).and_then(|secs| secs.parse().ok());
        if created.is_some_and(|created: u64| created < cutoff) {
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .await;
        }
    }
}

/// Drops a migrated test schema through a store of its own (fresh connections: the fixture's
/// pool may hold some that a restart of the server broke).
async fn drop_schema(schema: &str) -> Result<(), StoreError> {
    let options = PgOptions {
        schema: Some(schema.to_owned()),
        pool_size: 1,
        apply_migrations: false,
        ..PgOptions::default()
    };
    PgStore::connect_with(&database_url(), options)
        .await?
        .drop_schema()
        .await
}

/// One test's PostgreSQL: the lock, a fresh schema with a store and the database clock on it,
/// an admin token on it, the webhook receiver, and a directory for the nodes' files. Dropping
/// it drops the schema.
struct Fixture {
    schema: String,
    store: PgStore,
    clock: Arc<DatabaseClock>,
    receiver: Receiver,
    api: Api,
    /// The next node's sender number, for the receiver.
    senders: AtomicU32,
    dir: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl Fixture {
    /// Takes this binary's exclusive turn and sets up a schema, or `None` (after a loud
    /// message) when PostgreSQL is not reachable outside CI.
    async fn start() -> Option<Fixture> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let turn = EXCLUSIVE.lock().await;
        if let Err(error) = reachable().await {
            skip(&format!(
                "PostgreSQL not reachable at {} ({error}); set PUNCTUAL_TEST_DATABASE_URL or \
                 start PostgreSQL",
                database_url()
            ));
            return None;
        }
        let schema = format!(
            "cli_t_{}_{}_{}",
            unix_seconds(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let options = PgOptions {
            schema: Some(schema.clone()),
            pool_size: 4,
            ..PgOptions::default()
        };
        let store = PgStore::connect_with(&database_url(), options)
            .await
            .expect("connect to the test schema");
        let clock = store.database_clock().await.expect("the database clock");
        let receiver = Receiver::start(clock.clone(), RECEIPTS_MAX)
            .await
            .expect("start the webhook receiver");
        let token = admin_token(&database_url(), Some(&schema));
        Some(Fixture {
            schema,
            store,
            clock,
            receiver,
            api: Api::new(token),
            senders: AtomicU32::new(0),
            dir: tempfile::tempdir().expect("a directory for the nodes' files"),
            _turn: turn,
        })
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// How a node on this schema, through `url`, holding leases of `lease`, is started.
    fn spec(&self, name: &str, url: &str, lease: Duration) -> NodeSpec {
        NodeSpec::new(name, url, Some(&self.schema), lease)
    }

    /// Starts a `punctual serve` node on this schema as `spec` says.
    fn node_with(&self, spec: &NodeSpec) -> Node {
        let sender = self.senders.fetch_add(1, Ordering::Relaxed);
        Node::start(self.dir.path(), &self.receiver, sender, spec)
    }

    /// Starts a `punctual serve` node on this schema, through `url`.
    fn node(&self, name: &str, url: &str, lease: Duration) -> Node {
        self.node_with(&self.spec(name, url, lease))
    }

    /// `count` webhook jobs to `once/<index>` for indexes `0..count`, all due at `run_at`.
    fn jobs_at(&self, count: usize, run_at: Timestamp) -> Vec<Value> {
        (0..count)
            .map(|index| {
                webhook_job(
                    &self.receiver.url(&format!("once/{index}")),
                    run_at,
                    json!(index),
                )
            })
            .collect()
    }

    /// The ids of the jobs `sender` has sent so far.
    fn sent_by(&self, sender: u32) -> HashSet<JobId> {
        self.receiver
            .receipts()
            .iter()
            .filter(|receipt| receipt.sender == Some(sender))
            .map(|receipt| receipt.id)
            .collect()
    }

    /// Whether every job in `ids` has succeeded in the store after a run `by` sent, under that
    /// run's token (store errors count as "not yet").
    async fn completed_by(&self, ids: &[JobId], by: u32) -> bool {
        let receipts = self.receiver.receipts();
        for id in ids {
            let Ok(Some(job)) = self.store.get(*id).await else {
                return false;
            };
            let by_its_run = receipts.iter().any(|receipt| {
                receipt.id == *id
                    && receipt.sender == Some(by)
                    && receipt.token == job.lease_token.0
            });
            if job.state != JobState::Succeeded || !by_its_run {
                return false;
            }
        }
        true
    }

    /// The node whose run's completion the store accepted for job `id`.
    async fn completed_by_sender(&self, id: JobId, receipts: &[Receipt]) -> Option<u32> {
        let job = self.store.get(id).await.expect("read").expect("a job");
        receipts
            .iter()
            .find(|receipt| receipt.id == id && receipt.token == job.lease_token.0)
            .and_then(|receipt| receipt.sender)
    }

    /// The receipts, checked (see `nodes::receipts`).
    fn receipts(&self) -> Vec<Receipt> {
        receipts(&self.receiver)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Dropping needs a round trip, and drop cannot await: block this worker thread while
        // another drives the runtime (the tests run on a multi-threaded runtime).
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return;
        }
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                // Best effort: the sweep catches whatever this misses.
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), drop_schema(&self.schema)).await;
            });
        });
    }
}

/// The refused writes of `node` so far, by job.
fn refused(node: &Node) -> HashMap<JobId, u64> {
    node.lease_lost().into_iter().collect()
}

/// (a) Nodes killed with SIGKILL while they send webhooks: no job is lost, and a job runs again
/// only after its killed holder's lease expired, under a larger token. The nodes that survive
/// hold `STEADY_LEASE`, so their jobs are never rescued and every rerun is a victim's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_nodes_lose_no_job_and_their_jobs_rerun_only_after_the_lease() {
    let Some(fixture) = Fixture::start().await else {
        return;
    };
    let url = database_url();
    let victim_lease = Duration::from_secs(2);
    // Webhooks take half a second to answer, so a node killed mid-stream holds jobs it started.
    fixture.receiver.set_delay(Duration::from_millis(500));
    let mut first = fixture.node("first", &url, victim_lease);
    let mut second = fixture.node("second", &url, victim_lease);
    let mut third = fixture.node("third", &url, STEADY_LEASE);
    let address = third.address().await;
    let jobs = spread_jobs(
        &fixture.receiver,
        0,
        200,
        fixture.now().add(Duration::from_secs(1)),
        Duration::from_secs(3),
    );
    let ids = fixture.api.create_all(address, &jobs).await;

    // Each victim is killed while a webhook of its is in flight, once the stream has gone so
    // far: `first` early, `second` later. Not after a count of its own runs: the nodes share
    // the jobs very unevenly (one may take nearly all of them), so a count might never be
    // reached. Should a victim get no job at all after its moment, it is killed once every job
    // has been received.
    let mut killed: HashSet<u32> = HashSet::new();
    // The jobs whose webhooks were in flight at a kill: their node never got the answers, so
    // it completed none of them; a survivor must have.
    let mut unfinished: Vec<JobId> = Vec::new();
    for (victim, share) in [(&mut first, 0.1), (&mut second, 0.3)] {
        eventually(
            "the stream to reach a victim's moment",
            PATIENCE,
            async || {
                let received: HashSet<JobId> = fixture
                    .receiver
                    .receipts()
                    .iter()
                    .map(|receipt| receipt.id)
                    .collect();
                let running = fixture.receiver.in_flight(victim.sender) > 0;
                let due = received.len() as f64 >= share * ids.len() as f64;
                ((due && running) || received.len() == ids.len()).then_some(())
            },
        )
        .await;
        unfinished.extend(fixture.receiver.hold(victim.sender));
        victim.kill();
        killed.insert(victim.sender);
    }
    let mut fourth = fixture.node("fourth", &url, STEADY_LEASE);
    all_succeed(&fixture.store, &ids, &mut [&mut third, &mut fourth]).await;

    let receipts = fixture.receipts();
    let reruns = assert_fenced(&receipts, &ids, |earlier, later| {
        earlier
            .sender
            .is_some_and(|sender| killed.contains(&sender))
            && after_lease(earlier, later, victim_lease, CLOCK_TOLERANCE_US)
    });
    assert!(
        !unfinished.is_empty() && reruns >= 1,
        "no killed node held a webhook in flight: the test did not exercise a rerun"
    );
    assert_completed_by_last_run(&fixture.store, &receipts, &ids).await;
    for id in &unfinished {
        let completed_by = fixture.completed_by_sender(*id, &receipts).await;
        assert!(
            completed_by == Some(third.sender) || completed_by == Some(fourth.sender),
            "job {id}, in flight at a kill, was not finished by a survivor"
        );
    }
}

/// (b) A node paused (SIGSTOP) past its lease while its webhooks are in flight, then resumed:
/// another node rescues and completes its jobs, and the paused node's late writes are refused.
/// The rescuer holds `STEADY_LEASE`, so nothing reruns its runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_s_late_completions_are_refused() {
    let Some(fixture) = Fixture::start().await else {
        return;
    };
    let url = database_url();
    let mut paused = fixture.node("paused", &url, Duration::from_secs(1));
    // Its webhooks are answered only when the test says (never, here): it still has them in
    // flight when it is paused, however long that takes on a loaded machine. Its heartbeats
    // are refused as soon as it resumes, so the wait costs no time.
    fixture.receiver.hold(paused.sender);
    let address = paused.address().await;
    let jobs = fixture.jobs_at(5, fixture.now().add(Duration::from_millis(500)));
    let ids = fixture.api.create_all(address, &jobs).await;
    let held: HashSet<JobId> = ids.iter().copied().collect();
    eventually("the first node to send every job", PATIENCE, async || {
        paused.assert_alive();
        (fixture.sent_by(paused.sender) == held).then_some(())
    })
    .await;
    paused.pause();
    // The pause lasts until another node has rescued, rerun and completed every job it held.
    let mut rescuer = fixture.node("rescuer", &url, STEADY_LEASE);
    eventually(
        "the other node to rerun and complete the paused node's jobs",
        PATIENCE,
        async || {
            rescuer.assert_alive();
            fixture
                .completed_by(&ids, rescuer.sender)
                .await
                .then_some(())
        },
    )
    .await;
    paused.resume();
    eventually(
        "the resumed node's late writes to be refused",
        PATIENCE,
        async || {
            paused.assert_alive();
            let refused: HashSet<JobId> = refused(&paused).into_keys().collect();
            (refused == held).then_some(())
        },
    )
    .await;

    let accepted = eventually("the paused node's metrics", PATIENCE, async || {
        fixture.api.succeeded_outcomes(address).await
    })
    .await;
    assert_eq!(accepted, 0, "the paused node's completions were accepted");
    let receipts = fixture.receipts();
    let refused = refused(&paused);
    for id in &ids {
        let rerun = receipts
            .iter()
            .find(|receipt| receipt.id == *id && receipt.sender == Some(rescuer.sender))
            .expect("a rerun");
        assert!(refused[id] < rerun.token, "{id}");
    }
    assert_fenced(&receipts, &ids, |earlier, _| {
        earlier.sender == Some(paused.sender)
    });
    assert_completed_by_last_run(&fixture.store, &receipts, &ids).await;
}

/// The PostgreSQL cluster to restart, from the Debian layout (`/etc/postgresql/<version>/main`),
/// or why it cannot be restarted from here.
fn local_cluster() -> Result<String, String> {
    let config: tokio_postgres::Config =
        database_url().parse().map_err(|error| format!("{error}"))?;
    let local = config.get_hosts().iter().all(|host| match host {
        tokio_postgres::config::Host::Tcp(name) => {
            matches!(name.as_str(), "127.0.0.1" | "localhost" | "::1")
        }
        tokio_postgres::config::Host::Unix(_) => true,
    });
    if !local {
        return Err("the test database is on another machine".to_owned());
    }
    let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .map_err(|error| format!("no /etc/postgresql ({error})"))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    match versions.as_slice() {
        [version] => Ok(version.clone()),
        _ => Err(format!(
            "expected one PostgreSQL version in /etc/postgresql, found {versions:?}"
        )),
    }
}

/// (c) PostgreSQL restarted while a node sends webhooks: the node does not exit, reconnects by
/// itself, and every job its API acknowledged (before or after the restart) is completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_no_acknowledged_job() {
    let Some(fixture) = Fixture::start().await else {
        return;
    };
    let version = match local_cluster() {
        Ok(version) => version,
        Err(reason) => {
            skip(&format!("cannot restart PostgreSQL from here: {reason}"));
            return;
        }
    };
    let url = database_url();
    let mut node = fixture.node("node", &url, Duration::from_secs(1));
    let address = node.address().await;
    let jobs = spread_jobs(
        &fixture.receiver,
        0,
        150,
        fixture.now().add(Duration::from_secs(1)),
        Duration::from_secs(4),
    );
    let mut ids = fixture.api.create_all(address, &jobs).await;
    eventually("the node to send webhooks", PATIENCE, async || {
        node.assert_alive();
        (fixture.receiver.receipts().len() >= 30).then_some(())
    })
    .await;

    let restart = tokio::task::spawn_blocking(move || {
        Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &version, "main", "restart"])
            .output()
    })
    .await
    .expect("the restart's thread");
    match restart {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "pg_ctlcluster restart failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => {
            skip(&format!("cannot run pg_ctlcluster ({error})"));
            return;
        }
    }

    // Jobs acknowledged after the restart: the creation is sent again, under one idempotency
    // key (so a request that did store them before it failed stores nothing twice), until the
    // node answers 201. Until it reconnects it answers 503.
    let more = spread_jobs(
        &fixture.receiver,
        150,
        20,
        fixture.now().add(Duration::from_millis(500)),
        Duration::from_secs(1),
    );
    let acknowledged = eventually(
        "the node to acknowledge a creation after the restart",
        PATIENCE,
        async || {
            node.assert_alive();
            fixture
                .api
                .create(address, &more, Some("after the restart"))
                .await
                .ok()
        },
    )
    .await;
    ids.extend(acknowledged);
    all_succeed(&fixture.store, &ids, &mut [&mut node]).await;
    node.assert_alive();
    let receipts = fixture.receipts();
    // A completion cut short by the restart may leave its job to be rescued and rerun.
    assert_fenced(&receipts, &ids, |_, _| true);
    assert_completed_by_last_run(&fixture.store, &receipts, &ids).await;
}

/// A TCP proxy in front of PostgreSQL that the test can cut: every connection through it is
/// dropped and new ones are refused until it is healed.
struct Proxy {
    port: u16,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: (String, u16)) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let (cut, cut_watch) = watch::channel(false);
        let task = tokio::spawn(async move {
            // The connections' tasks live in this set and are aborted with it.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                while connections.try_join_next().is_some() {}
                if *cut_watch.borrow() {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let mut cut = cut_watch.clone();
                connections.spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Proxy { port, cut, task }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn heal(&self) {
        self.cut.send_replace(false);
    }

    /// The database URL, through this proxy.
    fn url(&self) -> String {
        let config: tokio_postgres::Config = database_url().parse().expect("a valid URL");
        let user = config.get_user().unwrap_or("postgres");
        let password = config
            .get_password()
            .map(|password| format!(":{}", String::from_utf8_lossy(password)))
            .unwrap_or_default();
        let database = config.get_dbname().unwrap_or(user);
        format!(
            "postgres://{user}{password}@127.0.0.1:{}/{database}",
            self.port
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The host and port of the test database.
fn upstream() -> (String, u16) {
    let config: tokio_postgres::Config = database_url().parse().expect("a valid URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    (host, port)
}

/// (d) A node cut off from the database while its webhooks are in flight: another node rescues
/// its jobs after the lease expires; the cut-off node does not exit, and once it reconnects its
/// late writes are refused. No job is lost. The other node holds `STEADY_LEASE`, so nothing
/// reruns its runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_database_is_fenced_when_it_returns() {
    let Some(fixture) = Fixture::start().await else {
        return;
    };
    let proxy = Proxy::start(upstream()).await;
    let mut cut_off = fixture.node("cut_off", &proxy.url(), Duration::from_secs(1));
    // Its webhooks are never answered (the receiver is not behind the proxy): it still holds
    // them when it reconnects.
    fixture.receiver.hold(cut_off.sender);
    let address = cut_off.address().await;
    let jobs = fixture.jobs_at(5, fixture.now().add(Duration::from_millis(500)));
    let ids = fixture.api.create_all(address, &jobs).await;
    let held: HashSet<JobId> = ids.iter().copied().collect();
    eventually("the proxied node to send every job", PATIENCE, async || {
        cut_off.assert_alive();
        (fixture.sent_by(cut_off.sender) == held).then_some(())
    })
    .await;
    let mut direct = fixture.node("direct", &database_url(), STEADY_LEASE);
    proxy.cut();
    // The cut lasts until the other node has rescued, rerun and completed every job.
    eventually(
        "the direct node to rerun and complete the cut-off jobs",
        PATIENCE,
        async || {
            cut_off.assert_alive();
            direct.assert_alive();
            fixture
                .completed_by(&ids, direct.sender)
                .await
                .then_some(())
        },
    )
    .await;
    proxy.heal();
    // Each held job's late write is refused once the node is back; or, when the cut outlasted
    // the node's retries of that write (a loaded machine makes the rescue, hence the cut,
    // longer), the node gave the write up unrecorded. Either way none of them is accepted
    // (checked below).
    eventually(
        "the cut-off node's late writes to be refused",
        PATIENCE,
        async || {
            cut_off.assert_alive();
            let mut ended: HashSet<JobId> = refused(&cut_off).into_keys().collect();
            ended.extend(cut_off.outcomes_not_recorded());
            (ended == held).then_some(())
        },
    )
    .await;

    let accepted = eventually("the cut-off node's metrics", PATIENCE, async || {
        fixture.api.succeeded_outcomes(address).await
    })
    .await;
    assert_eq!(accepted, 0, "late completions were accepted");
    let receipts = fixture.receipts();
    assert_fenced(&receipts, &ids, |earlier, _| {
        earlier.sender == Some(cut_off.sender)
    });
    assert_completed_by_last_run(&fixture.store, &receipts, &ids).await;
}

/// (e) A node whose own clock is a minute fast (issue 3, item 3) fires no job early and runs no
/// occurrence of a recurring job twice: it judges time on the database's clock. Each webhook
/// arrives (read on the database clock) at or after its `run_at`, and the node's own stamp on
/// it, read on its corrected clock, is no earlier than `run_at` and no later than the arrival
/// (both to the second the stamp has). Both nodes hold `STEADY_LEASE`: nothing here may run
/// twice, so no stall may cost a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_skewed_clock_fires_nothing_early_and_nothing_twice() {
    let Some(fixture) = Fixture::start().await else {
        return;
    };
    let url = database_url();
    const SKEW: Duration = Duration::from_secs(60);
    const INTERVAL: Duration = Duration::from_secs(1);
    let skewed_spec = NodeSpec {
        clock_skew_ms: SKEW.as_millis() as i64,
        ..fixture.spec("skewed", &url, STEADY_LEASE)
    };
    let mut skewed = fixture.node_with(&skewed_spec);
    let address = skewed.address().await;
    let jobs = spread_jobs(
        &fixture.receiver,
        0,
        20,
        fixture.now().add(Duration::from_secs(1)),
        Duration::from_secs(2),
    );
    let one_off = fixture.api.create_all(address, &jobs).await;
    let recurring = json!({
        "webhook": {"url": fixture.receiver.url("recurring")},
        "schedule": {"interval_ms": INTERVAL.as_millis() as u64},
    });
    fixture.api.create_all(address, &[recurring]).await;

    let occurrences = |receipts: &[Receipt]| {
        receipts
            .iter()
            .filter(|receipt| receipt.path == "recurring")
            .count()
    };
    eventually(
        "the skewed node to run the one-off jobs",
        PATIENCE,
        async || {
            skewed.assert_alive();
            let receipts = fixture.receiver.receipts();
            let once = receipts.len() - occurrences(&receipts);
            (once >= one_off.len() && occurrences(&receipts) >= 2).then_some(())
        },
    )
    .await;
    // A second node with a right clock joins for the recurring job's next occurrences.
    let mut right = fixture.node("right", &url, STEADY_LEASE);
    let before = occurrences(&fixture.receiver.receipts());
    eventually("more occurrences on two nodes", PATIENCE, async || {
        skewed.assert_alive();
        right.assert_alive();
        (occurrences(&fixture.receiver.receipts()) >= before + 3).then_some(())
    })
    .await;
    skewed.kill();
    right.kill();

    let receipts = fixture.receipts();
    let skewed_runs = receipts
        .iter()
        .filter(|receipt| receipt.sender == Some(skewed.sender))
        .count();
    assert!(
        skewed_runs >= one_off.len(),
        "the skewed node ran too little to judge"
    );
    // Each job's run_at as stored, to the microsecond (the header has milliseconds).
    let mut run_at: HashMap<JobId, Timestamp> = HashMap::new();
    for receipt in &receipts {
        if let std::collections::hash_map::Entry::Vacant(entry) = run_at.entry(receipt.id) {
            let job = fixture
                .store
                .get(receipt.id)
                .await
                .expect("read")
                .expect("a job");
            entry.insert(job.run_at);
        }
    }
    for receipt in &receipts {
        let due_us = run_at[&receipt.id].as_micros();
        let arrived_us = receipt.received_at.as_micros();
        assert!(
            arrived_us >= due_us - CLOCK_TOLERANCE_US,
            "job {} arrived {} us before its run_at",
            receipt.id,
            due_us - arrived_us
        );
        assert!(
            receipt.stamped_s >= due_us.div_euclid(1_000_000),
            "job {} was stamped at {} s, before its run_at {}: its node fired early",
            receipt.id,
            receipt.stamped_s,
            run_at[&receipt.id]
        );
        assert!(
            receipt.stamped_s * 1_000_000 <= arrived_us + 1_000_000 + CLOCK_TOLERANCE_US,
            "job {} was stamped at {} s, after it arrived at {}: its node's clock is off",
            receipt.id,
            receipt.stamped_s,
            receipt.received_at
        );
    }
    // No job ran twice, occurrences included.
    assert_fenced(&receipts, &one_off, |_, _| false);
    let mut occurrence_times: Vec<i64> = receipts
        .iter()
        .filter(|receipt| receipt.path == "recurring")
        .map(|receipt| run_at[&receipt.id].as_micros())
        .collect();
    // A double fire shows as one occurrence run twice (above) or as two occurrences less than
    // an interval apart: each is due an interval after its predecessor's due time, or after the
    // moment it was claimed if that was later, so gaps are never shorter. They are longer when
    // a loaded machine claimed an occurrence late, by about that lateness; a node whose skewed
    // clock leaked into the schedule would put the next occurrence a minute out.
    occurrence_times.sort_unstable();
    let interval_us = INTERVAL.as_micros() as i64;
    for pair in occurrence_times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= interval_us - 1_000,
            "occurrences {gap} us apart, less than the {interval_us} us interval: a double fire \
             ({occurrence_times:?})"
        );
        assert!(
            gap < (SKEW / 2).as_micros() as i64,
            "occurrences {gap} us apart: the skewed clock reached the schedule \
             ({occurrence_times:?})"
        );
    }
}

/// The cluster test: two `serve` processes on one PostgreSQL schema share the work (both
/// send webhooks), and when one is killed, the other finishes every job, the killed one's
/// included, after its lease. The survivor holds `STEADY_LEASE`, so every rerun is the killed
/// node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_share_the_work_and_one_finishes_the_killed_one_s() {
    let Some(fixture) = Fixture::start().await else {
        return;
    };
    let url = database_url();
    let victim_lease = Duration::from_secs(2);
    // Each node sends at most four webhooks at once, and each takes 300 ms to answer: about 13
    // a second per node, fewer than the 27 a second that fall due, so neither node can take
    // all the work, and the one to kill always has some in flight.
    fixture.receiver.set_delay(Duration::from_millis(300));
    let mut killed = fixture.node_with(&fixture.spec("killed", &url, victim_lease).concurrency(4));
    let mut survivor =
        fixture.node_with(&fixture.spec("survivor", &url, STEADY_LEASE).concurrency(4));
    killed.address().await;
    let address = survivor.address().await;
    let jobs = spread_jobs(
        &fixture.receiver,
        0,
        40,
        fixture.now().add(Duration::from_millis(500)),
        Duration::from_millis(1_500),
    );
    let ids = fixture.api.create_all(address, &jobs).await;
    eventually(
        "both nodes to send webhooks, with some of the one to kill in flight",
        PATIENCE,
        async || {
            killed.assert_alive();
            survivor.assert_alive();
            let shared = fixture.sent_by(killed.sender).len() >= 3
                && fixture.sent_by(survivor.sender).len() >= 3;
            (shared && fixture.receiver.in_flight(killed.sender) > 0).then_some(())
        },
    )
    .await;
    // Its webhooks in flight are never answered: it dies without learning that they
    // succeeded, so it completes none of them.
    let unfinished = fixture.receiver.hold(killed.sender);
    killed.kill();
    all_succeed(&fixture.store, &ids, &mut [&mut survivor]).await;

    let receipts = fixture.receipts();
    let reruns = assert_fenced(&receipts, &ids, |earlier, later| {
        earlier.sender == Some(killed.sender)
            && later.sender == Some(survivor.sender)
            && after_lease(earlier, later, victim_lease, CLOCK_TOLERANCE_US)
    });
    assert!(
        !unfinished.is_empty() && reruns >= 1,
        "the killed node left nothing unfinished: the test did not exercise a takeover"
    );
    assert_completed_by_last_run(&fixture.store, &receipts, &ids).await;
    for id in &unfinished {
        let completed_by = fixture.completed_by_sender(*id, &receipts).await;
        assert_eq!(
            completed_by,
            Some(survivor.sender),
            "job {id}, left unfinished by the killed node, was not finished by the other"
        );
    }
}

/// Runs the binary and returns its last stdout line as JSON; panics with its output on failure.
fn bench(args: &[&str]) -> (Value, u32) {
    let child = Command::new(env!("CARGO_BIN_EXE_punctual"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the punctual binary runs");
    let pid = child.id();
    let output = child.wait_with_output().expect("the bench ends");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().expect("some output");
    (serde_json::from_str(last).expect("a JSON report"), pid)
}

/// Whether a benchmark run's schema (named after its pid) still exists.
async fn bench_schema_exists(pid: u32) -> bool {
    let client = raw_client().await.expect("connect");
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE $1",
            &[&format!("punctual\\_bench\\_%\\_{pid}")],
        )
        .await
        .expect("look for the schema");
    row.get::<_, i64>(0) > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_on_postgres_reports_the_table_and_drops_its_schema() {
    let Some(_fixture) = Fixture::start().await else {
        return;
    };
    let url = database_url();
    let (report, pid) = bench(&[
        "--workload",
        "throughput",
        "--store",
        &url,
        "--jobs",
        "2000",
    ]);
    assert_eq!(report["store"], "postgres", "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert!(report["worked_per_s"].is_number(), "{report}");
    assert!(report["dead_tuples"].is_u64(), "{report}");
    assert!(
        report["table_bytes"]
            .as_u64()
            .is_some_and(|bytes| bytes > 0),
        "{report}"
    );
    assert!(
        !bench_schema_exists(pid).await,
        "the schema was left behind"
    );

    let (report, pid) = bench(&[
        "--workload",
        "cluster",
        "--store",
        &url,
        "--nodes",
        "3",
        "--kills",
        "2",
        "--jobs",
        "600",
        "--spread-s",
        "3",
        // Room for an undisturbed node's stalls on a loaded CI machine (see bench.rs).
        "--lease-ms",
        "3000",
    ]);
    assert_eq!(report["workload"], "cluster", "{report}");
    assert_eq!(report["nodes"], 3, "{report}");
    assert_eq!(
        (report["kills"].as_u64(), report["pauses"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(
        report["duplicates"], report["duplicates_explained"],
        "{report}"
    );
    assert_eq!(report["stale_completions_accepted"], 0, "{report}");
    assert!(report["stale_completions_refused"].is_u64(), "{report}");
    assert!(
        !bench_schema_exists(pid).await,
        "the schema was left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_brings_a_schema_to_the_current_version_once() {
    let Some(fixture) = Fixture::start().await else {
        return;
    };
    let url = database_url();
    // A schema of its own, which nothing has created yet.
    let schema = format!("{}_m", fixture.schema);
    let migrate = || crate::punctual(["migrate", "--store", &url, "--schema", &schema]).ok();
    let first = migrate();
    assert!(
        first.stdout.contains("migrated to version"),
        "{}",
        first.stdout
    );
    let second = migrate();
    assert!(
        second.stdout.contains("already at version"),
        "{}",
        second.stdout
    );
    drop_schema(&schema)
        .await
        .expect("drop the migrated schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_and_jobs_work_on_a_postgres_schema() {
    let Some(fixture) = Fixture::start().await else {
        return;
    };
    let url = database_url();
    let on_schema = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--store", &url, "--schema", &fixture.schema]);
        crate::punctual(all).ok()
    };
    let scheduled = on_schema(&["schedule", "--kind", "ping", "--in", "1h", "--json"]);
    let job: Value = serde_json::from_str(scheduled.stdout.trim()).expect("a JSON job");
    let id = job["id"].as_str().expect("an id").to_owned();
    let listed = crate::json_lines(&on_schema(&["jobs", "list", "--json"]).stdout);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["state"], "scheduled");
    let cancelled = on_schema(&["jobs", "cancel", &id]);
    assert!(
        cancelled.stdout.contains("cancelled"),
        "{}",
        cancelled.stdout
    );
    let stored = fixture
        .store
        .get(id.parse().expect("a job id"))
        .await
        .expect("read")
        .expect("the job");
    assert_eq!(stored.state, JobState::Cancelled);
    // Due an hour from now on the database's clock, as `--in 1h` said: less the time the three
    // commands took (well under a minute, even on a loaded machine), give or take the two
    // clocks' disagreement.
    let due_in = stored.run_at.micros_since(fixture.now());
    assert!(
        (3_540_000_000..=3_600_000_000 + CLOCK_TOLERANCE_US).contains(&due_in),
        "{due_in}"
    );
    // A reading command does not create a schema that is not there.
    let missing = crate::punctual([
        "jobs",
        "list",
        "--store",
        &url,
        "--schema",
        &format!("{}_missing", fixture.schema),
    ]);
    assert_ne!(missing.code, Some(0));
    assert!(
        missing.stderr.contains("punctual migrate"),
        "{}",
        missing.stderr
    );
}
