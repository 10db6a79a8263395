//! Cluster mode's faults (issue 3, item 7), end to end: real `punctual bench-worker` processes
//! share one PostgreSQL schema while the test kills them (SIGKILL), pauses them (SIGSTOP),
//! restarts PostgreSQL under them, cuts one off from the database, or skews one's clock; then
//! it reads their run logs and the store. Also `punctual migrate` and `punctual bench` on
//! PostgreSQL.
//!
//! Each test gets its own schema `cli_t_<unix seconds>_<pid>_<counter>`, dropped at the end;
//! schemas an interrupted run left behind are dropped an hour later by the first test of a
//! later run. The server is `PUNCTUAL_TEST_DATABASE_URL`, or
//! `postgres://postgres@127.0.0.1:5432/test`. When it is unreachable, each test prints
//! `SKIPPED` and passes, unless `CI=true`, where a missing PostgreSQL fails the run.
//!
//! One test restarts the server, which would break any other PostgreSQL test running at that
//! moment, so every test here holds `turns::EXCLUSIVE` for its whole run: they take turns, and
//! the demo test, whose timing their node processes would skew, takes a turn too. Cargo runs
//! test binaries one after another, so other crates' tests are not running meanwhile.
//!
//! Nothing waits a fixed time for an effect: every wait polls with a deadline (generous, for a
//! loaded 2-core machine). Only the faults themselves have durations. A node meant to be
//! rescued (killed, paused, cut off) has a 1-2 s lease, to keep the tests short; any other node
//! has `STEADY_LEASE`, because a node that stalls past its lease on a loaded machine is rightly
//! rescued, and a test that forbids that rerun would then fail although nothing is wrong.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use punctual_core::{
    Clock, JobId, JobOptions, JobState, Kind, NewJob, Payload, RetryPolicy, Schedule, Store,
    StoreError, Timestamp, limits,
};
use punctual_postgres::{DatabaseClock, PgOptions, PgStore};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{MutexGuard, OnceCell, watch};
use tokio_postgres::NoTls;

use crate::turns::EXCLUSIVE;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Schemas this old or older were left by an earlier run and are dropped.
const LEFTOVER_AGE: Duration = Duration::from_secs(3_600);
/// The benchmark's job kind, which every bench-worker handles.
const KIND: &str = "noop";
/// How often waits look again.
const POLL: Duration = Duration::from_millis(20);
/// How long any one effect may take to show on a loaded machine before a test gives up.
const PATIENCE: Duration = Duration::from_secs(60);
/// The engine's default claim window: a job is claimed at most this long before its `run_at`.
const CLAIM_AHEAD: Duration = Duration::from_millis(100);
/// How far two readings of the database clock on different nodes may disagree. Each node's
/// offset is measured to within half its best local round trip: tens of microseconds on a quiet
/// machine, but a loaded one can delay every sample by milliseconds. The faults these readings
/// judge are far larger (a minute's clock skew, leases of seconds).
const CLOCK_TOLERANCE_US: i64 = 250_000;
/// The lease of nodes whose jobs must not be rescued: heartbeats renew it every third of it, so
/// only a stall of over 3 s (far beyond a loaded machine's) loses it.
const STEADY_LEASE: Duration = Duration::from_secs(5);

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
/// and a directory for the nodes' logs. Dropping it drops the schema.
struct Fixture {
    schema: String,
    store: PgStore,
    clock: Arc<DatabaseClock>,
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
        Some(Fixture {
            schema,
            store,
            clock,
            dir: tempfile::tempdir().expect("a directory for the logs"),
            _turn: turn,
        })
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Starts a bench-worker on this schema, through `url`.
    fn node(&self, name: &str, url: &str, settings: NodeSettings) -> Node {
        let log = self.dir.path().join(format!("{name}.log"));
        let stderr_path = self.dir.path().join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).expect("a stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_punctual"))
            .args(["bench-worker", "--store", url, "--schema", &self.schema])
            .arg("--log")
            .arg(&log)
            .args(["--concurrency", "64"])
            .args(["--lease-ms", &settings.lease.as_millis().to_string()])
            .args(["--handler-ms", &settings.handler.as_millis().to_string()])
            .args(["--clock-skew-ms", &settings.clock_skew_ms.to_string()])
            .args(["--lifetime-s", "300"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start a bench-worker");
        Node {
            name: name.to_owned(),
            pid: child.id(),
            child: Some(child),
            log,
            stderr: stderr_path,
        }
    }

    /// A one-off job for index `index`, due at `run_at`, retried quickly after a rescue.
    fn job(&self, index: usize, run_at: Timestamp) -> NewJob {
        NewJob::new(
            Kind::new(KIND).expect("a kind"),
            Payload::from_json_text(&index.to_string()).expect("a payload"),
            run_at,
            quick_retries(),
            self.now(),
        )
        .expect("a valid job")
    }

    /// `count` jobs with indexes `first..first + count` due evenly over `spread` from `start`.
    fn spread_jobs(
        &self,
        first: usize,
        count: usize,
        start: Timestamp,
        spread: Duration,
    ) -> Vec<NewJob> {
        (0..count)
            .map(|offset| {
                let at = start.add(spread.mul_f64(offset as f64 / count as f64));
                self.job(first + offset, at)
            })
            .collect()
    }

    async fn insert(&self, jobs: Vec<NewJob>) -> Vec<JobId> {
        self.store
            .insert(jobs, self.now())
            .await
            .expect("insert jobs")
    }

    /// Waits until every job in `ids` has succeeded (store errors count as "not yet").
    async fn all_succeed(&self, ids: &[JobId], nodes: &mut [&mut Node]) {
        eventually("every job to succeed", PATIENCE, async || {
            for node in nodes.iter_mut() {
                node.assert_alive();
            }
            for id in ids {
                match self.store.get(*id).await {
                    Ok(Some(job)) if job.state == JobState::Succeeded => {}
                    Ok(Some(job)) if job.state.is_final() => {
                        panic!("job {id} ended {}, not succeeded", job.state)
                    }
                    _ => return None,
                }
            }
            Some(())
        })
        .await;
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

/// Quick retries, so a rescued job runs again soon; attempts enough that faults alone never
/// make a job dead.
fn quick_retries() -> JobOptions {
    JobOptions::default()
        .retry(
            RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(1), 0)
                .expect("a retry policy"),
        )
        .attempt_max(limits::ATTEMPT_MAX_LIMIT)
}

/// How a node runs.
#[derive(Clone, Copy)]
struct NodeSettings {
    lease: Duration,
    /// How long each handler takes after logging its run.
    handler: Duration,
    clock_skew_ms: i64,
}

impl NodeSettings {
    fn lease(lease: Duration) -> NodeSettings {
        NodeSettings {
            lease,
            handler: Duration::ZERO,
            clock_skew_ms: 0,
        }
    }

    fn handler(self, handler: Duration) -> NodeSettings {
        NodeSettings { handler, ..self }
    }
}

/// A bench-worker process; dropping it kills and reaps it.
struct Node {
    name: String,
    pid: u32,
    child: Option<Child>,
    log: PathBuf,
    stderr: PathBuf,
}

impl Node {
    /// Panics, with the node's stderr, if it exited: a node must survive every fault here.
    fn assert_alive(&mut self) {
        let child = self
            .child
            .as_mut()
            .expect("the node was killed by the test");
        if let Some(status) = child.try_wait().expect("check on a node") {
            panic!(
                "node {} exited by itself ({status}):\n{}",
                self.name,
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
        }
    }

    fn kill(&mut self) {
        let mut child = self.child.take().expect("a running node");
        child.kill().expect("SIGKILL a node");
        child.wait().expect("reap a node");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid);
    }

    fn pause(&self) {
        self.signal("STOP");
    }

    fn resume(&self) {
        self.signal("CONT");
    }

    fn log(&self) -> Log {
        Log::read(&self.log)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One handler run, as a worker logged it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RunLine {
    index: usize,
    attempt: u32,
    token: u64,
    pid: u32,
    id: JobId,
    run_at_us: i64,
    started_us: i64,
}

/// What a worker's log says so far (a line still being written is left for the next read).
#[derive(Debug, Default)]
struct Log {
    runs: Vec<RunLine>,
    /// Acknowledged completions: (job, attempt).
    done: Vec<(JobId, u32)>,
    /// Refused writes: (job, lease token).
    lease_lost: Vec<(JobId, u64)>,
}

impl Log {
    fn read(path: &Path) -> Log {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => panic!("read {}: {error}", path.display()),
        };
        let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
        let mut log = Log::default();
        for line in complete.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let parsed = match fields.as_slice() {
                ["run", index, attempt, token, pid, id, run_at, started] => {
                    log.runs.push(RunLine {
                        index: index.parse().expect("index"),
                        attempt: attempt.parse().expect("attempt"),
                        token: token.parse().expect("token"),
                        pid: pid.parse().expect("pid"),
                        id: id.parse().expect("id"),
                        run_at_us: run_at.parse().expect("run_at"),
                        started_us: started.parse().expect("started"),
                    });
                    true
                }
                ["done", id, attempt, _pid] => {
                    log.done
                        .push((id.parse().expect("id"), attempt.parse().expect("attempt")));
                    true
                }
                ["lease_lost", id, token, _pid] => {
                    log.lease_lost
                        .push((id.parse().expect("id"), token.parse().expect("token")));
                    true
                }
                _ => false,
            };
            assert!(parsed, "a malformed line in {}: {line:?}", path.display());
        }
        log
    }

    fn ran(&self) -> HashSet<JobId> {
        self.runs.iter().map(|run| run.id).collect()
    }
}

/// Every node's log together.
fn logs(nodes: &[&Node]) -> Log {
    let mut all = Log::default();
    for node in nodes {
        let log = node.log();
        all.runs.extend(log.runs);
        all.done.extend(log.done);
        all.lease_lost.extend(log.lease_lost);
    }
    all
}

/// Polls `check` until it returns `Some`, or panics after `patience` saying what it waited for.
async fn eventually<T>(
    what: &str,
    patience: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {} s waiting for {what}",
            patience.as_secs()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Checks what every fault must leave intact: each job in `ids` ran, and a job ran twice only
/// when `lost_lease(earlier run, later run)` says the earlier holder lost its lease, under a
/// larger token; no completion was accepted from a holder whose job later ran again. Returns
/// how many reruns there were.
fn assert_fenced(
    log: &Log,
    ids: &[JobId],
    lost_lease: impl Fn(&RunLine, &RunLine) -> bool,
) -> usize {
    let ran = log.ran();
    for id in ids {
        assert!(ran.contains(id), "job {id} never ran");
    }
    let mut by_job: HashMap<JobId, Vec<RunLine>> = HashMap::new();
    for run in &log.runs {
        by_job.entry(run.id).or_default().push(*run);
    }
    let mut reruns = 0;
    for runs in by_job.values_mut() {
        runs.sort_by_key(|run| run.token);
        for pair in runs.windows(2) {
            let (earlier, later) = (&pair[0], &pair[1]);
            reruns += 1;
            assert!(
                later.token > earlier.token,
                "job {} ran twice under token {}",
                earlier.id,
                earlier.token
            );
            assert!(
                lost_lease(earlier, later),
                "job {} ran again ({later:?}) while its earlier holder kept its lease ({earlier:?})",
                earlier.id
            );
        }
    }
    for (id, attempt) in &log.done {
        let runs = &by_job[id];
        let completed = runs
            .iter()
            .find(|run| run.attempt == *attempt)
            .expect("a completion of a logged run");
        assert!(
            runs.iter().all(|run| run.token <= completed.token),
            "the completion of job {id} under token {} was accepted although it ran again",
            completed.token
        );
    }
    reruns
}

/// (a) Nodes killed with SIGKILL while they run jobs: no job is lost, and a job runs again only
/// after its killed holder's lease expired, under a larger token. The nodes that survive hold
/// `STEADY_LEASE`, so their jobs are never rescued and every rerun is a victim's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_nodes_lose_no_job_and_their_jobs_rerun_only_after_the_lease() {
    let Some(fixture) = Fixture::start().await else {
        return;
    };
    let url = database_url();
    // Handlers take half a second, so a node killed mid-stream holds jobs it started.
    let settings = NodeSettings::lease(Duration::from_secs(2)).handler(Duration::from_millis(500));
    let survivor = NodeSettings::lease(STEADY_LEASE).handler(Duration::from_millis(500));
    let mut first = fixture.node("first", &url, settings);
    let mut second = fixture.node("second", &url, settings);
    let mut third = fixture.node("third", &url, survivor);
    let ids = fixture
        .insert(fixture.spread_jobs(
            0,
            200,
            fixture.now().add(Duration::from_secs(1)),
            Duration::from_secs(4),
        ))
        .await;

    // Each victim is killed while it runs a job, once the stream has gone so far: `first` early,
    // `second` later. Not after a count of its own runs: the nodes share the jobs very unevenly
    // (one may take nearly all of them), so a count might never be reached. Should a victim
    // get no job at all after its moment, it is killed once every job has started.
    let paths: Vec<PathBuf> = [&first, &second, &third]
        .iter()
        .map(|node| node.log.clone())
        .collect();
    let mut killed: HashSet<u32> = HashSet::new();
    for (victim, share) in [(&mut first, 0.1), (&mut second, 0.3)] {
        eventually(
            "the stream to reach a victim's moment",
            PATIENCE,
            async || {
                let started = paths
                    .iter()
                    .flat_map(|path| Log::read(path).ran())
                    .collect::<HashSet<JobId>>()
                    .len();
                let log = victim.log();
                // Its completions are a subset of its runs.
                let running = log.runs.len() > log.done.len();
                let due = started as f64 >= share * ids.len() as f64;
                ((due && running) || started == ids.len()).then_some(())
            },
        )
        .await;
        victim.kill();
        killed.insert(victim.pid);
    }
    let mut fourth = fixture.node("fourth", &url, survivor);
    fixture
        .all_succeed(&ids, &mut [&mut third, &mut fourth])
        .await;

    let log = logs(&[&first, &second, &third, &fourth]);
    let lease_us = settings.lease.as_micros() as i64;
    let reruns = assert_fenced(&log, &ids, |earlier, later| {
        if !killed.contains(&earlier.pid) {
            return false;
        }
        // The earlier claim was made at most CLAIM_AHEAD before its run_at and leased for
        // `lease` from then, so its lease ran at least until this. (Not "and after the kill": a
        // victim that stalled before it was killed may rightly have been rescued already.)
        let lease_end_min = earlier.run_at_us - CLAIM_AHEAD.as_micros() as i64 + lease_us;
        later.started_us + CLOCK_TOLERANCE_US >= lease_end_min
    });
    assert!(
        reruns >= 1,
        "no killed node held a started job: the test did not exercise a rerun"
    );
}

/// (b) A node paused (SIGSTOP) past its lease while it runs jobs, then resumed: another node
/// rescues and completes them, and the paused node's late writes are refused. The rescuer holds
/// `STEADY_LEASE`, so nothing reruns its runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_s_late_completions_are_refused() {
    let Some(fixture) = Fixture::start().await else {
        return;
    };
    let url = database_url();
    let lease = Duration::from_secs(1);
    let mut paused = fixture.node(
        "paused",
        &url,
        // Its handlers outlast the time the test takes to pause it, even on a loaded machine.
        // Its heartbeats are refused as soon as it resumes, so their length costs no time.
        NodeSettings::lease(lease).handler(Duration::from_secs(20)),
    );
    let ids = fixture
        .insert(
            (0..5)
                .map(|index| fixture.job(index, fixture.now().add(Duration::from_millis(500))))
                .collect(),
        )
        .await;
    let held: HashSet<JobId> = ids.iter().copied().collect();
    eventually("the first node to start every job", PATIENCE, async || {
        paused.assert_alive();
        (paused.log().ran() == held).then_some(())
    })
    .await;
    paused.pause();
    // The pause lasts until another node has rescued and rerun every job it held.
    let mut rescuer = fixture.node("rescuer", &url, NodeSettings::lease(STEADY_LEASE));
    eventually(
        "the other node to rerun the paused node's jobs",
        PATIENCE,
        async || {
            rescuer.assert_alive();
            let done: HashSet<JobId> = rescuer.log().done.iter().map(|(id, _)| *id).collect();
            (done == held).then_some(())
        },
    )
    .await;
    paused.resume();
    eventually(
        "the resumed node's late writes to be refused",
        PATIENCE,
        async || {
            paused.assert_alive();
            let refused: HashSet<JobId> =
                paused.log().lease_lost.iter().map(|(id, _)| *id).collect();
            (refused == held).then_some(())
        },
    )
    .await;

    let paused_log = paused.log();
    let rescuer_log = rescuer.log();
    assert!(
        paused_log.done.is_empty(),
        "the paused node's completions were accepted: {:?}",
        paused_log.done
    );
    for id in &ids {
        let job = fixture.store.get(*id).await.expect("read").expect("a job");
        let rerun = rescuer_log
            .runs
            .iter()
            .find(|run| run.id == *id)
            .expect("a rerun");
        assert_eq!(job.state, JobState::Succeeded, "{id}");
        assert_eq!(
            job.lease_token.0, rerun.token,
            "{id} shows the rerun's completion"
        );
        let refused_token = paused_log
            .lease_lost
            .iter()
            .find(|(refused, _)| refused == id)
            .map(|(_, token)| *token)
            .expect("a refusal");
        assert!(refused_token < rerun.token, "{id}");
    }
    let log = logs(&[&paused, &rescuer]);
    assert_fenced(&log, &ids, |earlier, _| earlier.pid == paused.pid);
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

/// (c) PostgreSQL restarted while a node runs jobs: the node does not exit, reconnects by
/// itself, and every job acknowledged (before or after the restart) is completed.
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
    let mut node = fixture.node("node", &url, NodeSettings::lease(Duration::from_secs(1)));
    let mut ids = fixture
        .insert(fixture.spread_jobs(
            0,
            150,
            fixture.now().add(Duration::from_secs(1)),
            Duration::from_secs(6),
        ))
        .await;
    eventually("the node to run jobs", PATIENCE, async || {
        node.assert_alive();
        (node.log().runs.len() >= 30).then_some(())
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

    // Jobs acknowledged after the restart: the insert is retried until the server answers.
    let more = fixture.spread_jobs(
        150,
        20,
        fixture.now().add(Duration::from_millis(500)),
        Duration::from_secs(1),
    );
    let acknowledged = eventually("an insert after the restart", PATIENCE, async || {
        fixture.store.insert(more.clone(), fixture.now()).await.ok()
    })
    .await;
    ids.extend(acknowledged);
    fixture.all_succeed(&ids, &mut [&mut node]).await;
    node.assert_alive();
    // A completion cut short by the restart may leave its job to be rescued and rerun.
    assert_fenced(&node.log(), &ids, |_, _| true);
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

/// (d) A node cut off from the database while it runs jobs: another node rescues them after the
/// lease expires; the cut-off node does not exit, and once it reconnects its late writes are
/// refused. No job is lost. The other node holds `STEADY_LEASE`, so nothing reruns its runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_database_is_fenced_when_it_returns() {
    let Some(fixture) = Fixture::start().await else {
        return;
    };
    let proxy = Proxy::start(upstream()).await;
    let lease = Duration::from_secs(1);
    // Its handlers outlast the cut, so it still holds them when it reconnects.
    let mut cut_off = fixture.node(
        "cut_off",
        &proxy.url(),
        NodeSettings::lease(lease).handler(Duration::from_secs(20)),
    );
    let ids = fixture
        .insert(
            (0..5)
                .map(|index| fixture.job(index, fixture.now().add(Duration::from_millis(500))))
                .collect(),
        )
        .await;
    let held: HashSet<JobId> = ids.iter().copied().collect();
    eventually(
        "the proxied node to start every job",
        PATIENCE,
        async || {
            cut_off.assert_alive();
            (cut_off.log().ran() == held).then_some(())
        },
    )
    .await;
    let mut direct = fixture.node("direct", &database_url(), NodeSettings::lease(STEADY_LEASE));
    proxy.cut();
    // The cut lasts until the other node has rescued and completed every job.
    eventually(
        "the direct node to rerun the cut-off jobs",
        PATIENCE,
        async || {
            cut_off.assert_alive();
            direct.assert_alive();
            let done: HashSet<JobId> = direct.log().done.iter().map(|(id, _)| *id).collect();
            (done == held).then_some(())
        },
    )
    .await;
    proxy.heal();
    eventually(
        "the cut-off node's late writes to be refused",
        PATIENCE,
        async || {
            cut_off.assert_alive();
            let refused: HashSet<JobId> =
                cut_off.log().lease_lost.iter().map(|(id, _)| *id).collect();
            (refused == held).then_some(())
        },
    )
    .await;

    let cut_log = cut_off.log();
    assert!(cut_log.done.is_empty(), "late completions were accepted");
    let direct_log = direct.log();
    for id in &ids {
        let job = fixture.store.get(*id).await.expect("read").expect("a job");
        let rerun = direct_log
            .runs
            .iter()
            .find(|run| run.id == *id)
            .expect("a rerun");
        assert_eq!(job.state, JobState::Succeeded, "{id}");
        assert_eq!(
            job.lease_token.0, rerun.token,
            "{id} shows the rerun's completion"
        );
    }
    let log = logs(&[&cut_off, &direct]);
    assert_fenced(&log, &ids, |earlier, _| earlier.pid == cut_off.pid);
}

/// (e) A node whose own clock is a minute fast (issue 3, item 3) fires no job early and runs no
/// occurrence of a recurring job twice: it judges time on the database's clock. Each run's
/// start, read on the node's corrected clock, is at or after `run_at`, and the test, reading
/// the database clock, never sees a run logged before its `run_at`. Both nodes hold
/// `STEADY_LEASE`: nothing here may run twice, so no stall may cost a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_skewed_clock_fires_nothing_early_and_nothing_twice() {
    let Some(fixture) = Fixture::start().await else {
        return;
    };
    let url = database_url();
    const SKEW: Duration = Duration::from_secs(60);
    const INTERVAL: Duration = Duration::from_secs(1);
    let skewed_settings = NodeSettings {
        clock_skew_ms: SKEW.as_millis() as i64,
        ..NodeSettings::lease(STEADY_LEASE)
    };
    let mut skewed = fixture.node("skewed", &url, skewed_settings);
    let one_off = fixture
        .insert(fixture.spread_jobs(
            0,
            20,
            fixture.now().add(Duration::from_secs(2)),
            Duration::from_secs(2),
        ))
        .await;
    const RECURRING: usize = 1_000_000;
    let recurring = NewJob::recurring(
        Kind::new(KIND).expect("a kind"),
        Payload::from_json_text(&RECURRING.to_string()).expect("a payload"),
        Schedule::interval(INTERVAL).expect("an interval"),
        quick_retries(),
        fixture.now(),
    )
    .expect("a recurring job");
    fixture.insert(vec![recurring]).await;

    // When the test first saw each run in a log, on the database clock.
    let mut seen: HashMap<(JobId, u32), i64> = HashMap::new();
    let look = |nodes: &[&Node], seen: &mut HashMap<(JobId, u32), i64>| {
        let now = fixture.now().as_micros();
        for run in logs(nodes).runs {
            seen.entry((run.id, run.attempt)).or_insert(now);
        }
    };
    let occurrences = |log: &Log| log.runs.iter().filter(|run| run.index == RECURRING).count();
    eventually(
        "the skewed node to run the one-off jobs",
        PATIENCE,
        async || {
            skewed.assert_alive();
            look(&[&skewed], &mut seen);
            let log = skewed.log();
            let done = log.runs.iter().filter(|run| run.index < RECURRING).count();
            (done >= one_off.len() && occurrences(&log) >= 2).then_some(())
        },
    )
    .await;
    // A second node with a right clock joins for the recurring job's next occurrences.
    let mut right = fixture.node("right", &url, NodeSettings::lease(STEADY_LEASE));
    let before = occurrences(&logs(&[&skewed, &right]));
    eventually("more occurrences on two nodes", PATIENCE, async || {
        skewed.assert_alive();
        right.assert_alive();
        look(&[&skewed, &right], &mut seen);
        (occurrences(&logs(&[&skewed, &right])) >= before + 3).then_some(())
    })
    .await;
    skewed.kill();
    right.kill();

    let log = logs(&[&skewed, &right]);
    let skewed_runs = log.runs.iter().filter(|run| run.pid == skewed.pid).count();
    assert!(
        skewed_runs >= one_off.len(),
        "the skewed node ran too little to judge"
    );
    for run in &log.runs {
        assert!(
            run.started_us >= run.run_at_us,
            "job {} (index {}) started {} us before its run_at",
            run.id,
            run.index,
            run.run_at_us - run.started_us
        );
        let seen_at = seen[&(run.id, run.attempt)];
        assert!(
            seen_at >= run.run_at_us - CLOCK_TOLERANCE_US,
            "job {} was seen running {} us before its run_at",
            run.id,
            run.run_at_us - seen_at
        );
        assert!(
            run.started_us <= seen_at + CLOCK_TOLERANCE_US,
            "job {} says it started {} us after the test saw it run: the node's clock is off",
            run.id,
            run.started_us - seen_at
        );
    }
    assert_fenced(&log, &one_off, |_, _| false);
    let mut occurrence_ids = HashSet::new();
    let mut occurrence_times: Vec<i64> = Vec::new();
    for run in log.runs.iter().filter(|run| run.index == RECURRING) {
        assert!(
            occurrence_ids.insert(run.id),
            "occurrence {} ran twice",
            run.id
        );
        occurrence_times.push(run.run_at_us);
    }
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
