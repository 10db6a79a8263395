//! The crash and cluster workloads' worker: a separate `punctual bench-worker` process that runs
//! the engine on a SQLite file or a shared PostgreSQL database and logs every handler run, so
//! its parent can kill it with SIGKILL or pause it with SIGSTOP at any moment and still know
//! exactly what ran.
//!
//! Owns the worker's command line and the run log's format, one line per record:
//!
//! - `run {job_index} {attempt} {lease_token} {pid} {job_id} {run_at_us} {started_us}`, written
//!   by the handler when it starts (`started_us` is the engine's clock, the database's in
//!   cluster mode);
//! - `done {job_id} {attempt} {pid}` once the store acknowledged the completion;
//! - `lease_lost {job_id} {lease_token} {pid}` when the store refused this worker's write
//!   (a completion or a heartbeat) because the lease had moved on.
//!
//! Each line is one unbuffered `write` to a file opened with `O_APPEND` before the handler
//! returns, so a killed process loses no line it wrote, and a run that is not logged did not
//! happen. The worker must not outlive its parent: it exits when its parent is gone or after
//! `--lifetime-s`. It must not exit for any store error: the engine retries those.

use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use punctual::{BoxError, Clock, Config, Event, JobContext, JobId, NodeId, Scheduler, Timestamp};
use punctual_core::SystemClock;
use punctual_server::store_url::{self, PostgresSettings, StoreUrl};

use super::KIND;
use super::stats::Run;

/// How often the worker checks that its parent is still there.
const PARENT_CHECK: Duration = Duration::from_millis(200);
/// How often the leader's rescuer looks for expired leases: often, so a killed worker's jobs
/// come back soon after its leases end.
const RESCUE_INTERVAL: Duration = Duration::from_millis(200);
/// How long a worker's leadership (rescue and purge duties) lasts unrenewed: short, so that
/// when the leader is the worker killed or paused, another takes over its duties within about
/// two seconds rather than the default ten.
const LEADER_LEASE: Duration = Duration::from_millis(1_500);
/// Most connections a worker's pool opens: its claims, heartbeats and completions share them.
const POOL_SIZE: usize = 8;
/// Longest `--handler-ms`.
const HANDLER_MAX: Duration = Duration::from_secs(600);
/// Largest `--clock-skew-ms` either way: a day.
const SKEW_MAX_MS: i64 = 86_400_000;

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The store holding the jobs: sqlite:PATH or postgres://...
    #[arg(long, value_name = "STORE")]
    store: StoreUrl,
    /// The PostgreSQL schema holding the jobs [default: the connection's search_path].
    #[arg(long, value_name = "NAME")]
    schema: Option<String>,
    /// The run log to append to.
    #[arg(long)]
    log: PathBuf,
    /// Most handlers running at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Lease length; heartbeats renew it every third of it.
    #[arg(long, default_value_t = 1_000)]
    lease_ms: u64,
    /// How long each handler takes after logging its run (it stops early when told to cancel).
    #[arg(long, default_value_t = 0)]
    handler_ms: u64,
    /// Exit after this many seconds even if nobody stops the worker.
    #[arg(long, default_value_t = 600)]
    lifetime_s: u64,
    /// Test only: add this much to the node's own clock before it is corrected by the
    /// database's (PostgreSQL only), to show that a node with a wrong clock stays on time.
    #[arg(long, default_value_t = 0, hide = true, allow_negative_numbers = true)]
    clock_skew_ms: i64,
}

/// The system clock moved by a fixed skew: a node whose wall clock is wrong.
struct SkewedClock {
    skew_us: i64,
}

impl Clock for SkewedClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(SystemClock.now().as_micros().saturating_add(self.skew_us))
    }
}

/// Runs `punctual bench-worker` until it is killed, its parent goes away, or its lifetime ends.
pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let runtime = super::runtime()?;
    let result = runtime.block_on(work(args));
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

async fn work(args: WorkerArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let parent = std::os::unix::process::parent_id();
    let pid = std::process::id();
    let store_url = &args.store;
    if *store_url == StoreUrl::Sqlite(None) {
        bail!("a worker needs a store other processes can share: sqlite:PATH or postgres://");
    }
    if args.clock_skew_ms != 0 && !matches!(store_url, StoreUrl::Postgres(_)) {
        bail!("--clock-skew-ms applies only to a PostgreSQL store");
    }
    if args.clock_skew_ms.abs() > SKEW_MAX_MS {
        bail!("--clock-skew-ms must be within +-{SKEW_MAX_MS}");
    }
    let handler_time = Duration::from_millis(args.handler_ms);
    if handler_time > HANDLER_MAX {
        bail!("--handler-ms must be at most {}", HANDLER_MAX.as_millis());
    }
    let log = Arc::new(
        File::options()
            .create(true)
            .append(true)
            .open(&args.log)
            .with_context(|| format!("opening the run log {}", args.log.display()))?,
    );
    let settings = PostgresSettings {
        schema: args.schema.clone(),
        pool_size: POOL_SIZE,
        local_clock: Arc::new(SkewedClock {
            skew_us: args.clock_skew_ms.saturating_mul(1_000),
        }),
        apply_migrations: true,
    };
    let opened = store_url::open(store_url, &settings).await?;
    let clock = opened.clock.clone();
    let lease = Duration::from_millis(args.lease_ms);
    let config = Config {
        node: NodeId::new(&format!("bench-worker-{pid}")).context("the worker's node name")?,
        concurrency: args.concurrency,
        lease,
        heartbeat: lease / 3,
        leader_lease: LEADER_LEASE,
        leader_renew: LEADER_LEASE / 3,
        rescue_interval: RESCUE_INTERVAL,
        ..Config::default()
    };
    let handler_log = log.clone();
    let handler_clock = clock.clone();
    let observer_log = log.clone();
    let scheduler = Scheduler::builder(opened.store.clone())
        .clock(clock)
        .config(config)
        .handler(KIND, move |job: JobContext| {
            // The closure body runs when the engine calls the handler: that is the start time.
            let logged = log_run(&handler_log, &job, handler_clock.now(), pid);
            async move {
                logged?;
                if !handler_time.is_zero() {
                    tokio::select! {
                        () = tokio::time::sleep(handler_time) => {}
                        () = job.cancellation.cancelled() => return Err("cancelled".into()),
                    }
                }
                Ok::<(), BoxError>(())
            }
        })
        .observer(move |event| {
            let line = match event {
                Event::Succeeded { id, attempt, .. } => format!("done {id} {attempt} {pid}\n"),
                Event::LeaseLost { id, token, .. } => format!("lease_lost {id} {token} {pid}\n"),
                _ => return,
            };
            // Best effort: a line that cannot be written only hides an event from the report.
            let _ = (&*observer_log).write_all(line.as_bytes());
        })
        .build()
        .context("building the worker's scheduler")?;
    scheduler
        .start()
        .context("starting the worker's scheduler")?;

    let lifetime = Duration::from_secs(args.lifetime_s);
    while std::os::unix::process::parent_id() == parent && started.elapsed() < lifetime {
        tokio::time::sleep(PARENT_CHECK).await;
    }
    scheduler.stop().await;
    opened.close().await;
    Ok(())
}

/// Appends the run line for `job`, started at `started`, in one write.
fn log_run(log: &File, job: &JobContext, started: Timestamp, pid: u32) -> Result<(), BoxError> {
    let index: usize = job.payload.as_str().parse()?;
    let line = format!(
        "run {index} {} {} {pid} {} {} {}\n",
        job.attempt,
        job.lease_token,
        job.id,
        job.run_at.as_micros(),
        started.as_micros()
    );
    (&*log).write_all(line.as_bytes())?;
    Ok(())
}

/// A completion the store acknowledged, as a worker logged it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Done {
    pub id: JobId,
    pub attempt: u32,
    pub pid: u32,
}

/// What one worker's run log says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerLog {
    pub runs: Vec<Run>,
    pub done: Vec<Done>,
    /// Writes the store refused because the worker's lease had moved on.
    pub lease_lost: u64,
}

/// Reads a run log. Every line must be complete and well formed: a torn or unknown line is an
/// error, since a run the parent cannot read would make the report wrong.
pub fn parse_log(text: &str) -> anyhow::Result<WorkerLog> {
    let mut log = WorkerLog::default();
    if !text.is_empty() && !text.ends_with('\n') {
        bail!("the run log ends with a torn line");
    }
    for (number, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split(' ').collect();
        let well_formed = match fields.as_slice() {
            ["lease_lost", id, token, pid] => {
                log.lease_lost += 1;
                id.parse::<JobId>().is_ok()
                    && token.parse::<u64>().is_ok()
                    && pid.parse::<u32>().is_ok()
            }
            ["done", id, attempt, pid] => parse_done(id, attempt, pid)
                .map(|done| log.done.push(done))
                .is_some(),
            ["run", rest @ ..] => parse_run(rest).map(|run| log.runs.push(run)).is_some(),
            _ => false,
        };
        if !well_formed {
            bail!("line {} of the run log is malformed: {line:?}", number + 1);
        }
    }
    Ok(log)
}

fn parse_run(fields: &[&str]) -> Option<Run> {
    let [index, attempt, token, pid, id, run_at, started] = fields else {
        return None;
    };
    Some(Run {
        index: index.parse().ok()?,
        attempt: attempt.parse().ok()?,
        token: token.parse().ok()?,
        pid: pid.parse().ok()?,
        id: id.parse().ok()?,
        run_at_us: run_at.parse().ok()?,
        started_us: started.parse().ok()?,
    })
}

fn parse_done(id: &str, attempt: &str, pid: &str) -> Option<Done> {
    Some(Done {
        id: id.parse().ok()?,
        attempt: attempt.parse().ok()?,
        pid: pid.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0190f3c2-0000-7000-8000-000000000000";

    #[test]
    fn reads_runs_completions_and_refusals() {
        let text = format!(
            "run 3 1 1 100 {ID} 5000 5100\nrun 3 2 2 200 {ID} 5000 7000\n\
             lease_lost {ID} 1 100\ndone {ID} 2 200\n"
        );
        let log = parse_log(&text).expect("well formed");
        assert_eq!(log.lease_lost, 1);
        let id: JobId = ID.parse().expect("a job id");
        assert_eq!(
            log.runs,
            vec![
                Run {
                    index: 3,
                    attempt: 1,
                    token: 1,
                    pid: 100,
                    id,
                    run_at_us: 5_000,
                    started_us: 5_100,
                },
                Run {
                    index: 3,
                    attempt: 2,
                    token: 2,
                    pid: 200,
                    id,
                    run_at_us: 5_000,
                    started_us: 7_000,
                },
            ]
        );
        assert_eq!(
            log.done,
            vec![Done {
                id,
                attempt: 2,
                pid: 200
            }]
        );
        assert_eq!(parse_log("").expect("empty"), WorkerLog::default());
    }

    #[test]
    fn refuses_torn_and_malformed_lines() {
        let run = format!("run 3 1 1 100 {ID} 5000 5100\n");
        assert!(parse_log(&run).is_ok());
        assert!(parse_log(run.trim_end()).is_err());
        assert!(parse_log(&run.replace("100", "x")).is_err());
        assert!(parse_log("3 1 1 100\n").is_err());
        assert!(parse_log(&format!("done {ID} 1\n")).is_err());
        assert!(parse_log("lease_lost not-an-id 1 100\n").is_err());
    }

    #[test]
    fn a_skewed_clock_is_off_by_its_skew() {
        let skewed = SkewedClock {
            skew_us: 60_000_000,
        };
        let offset = skewed.now().micros_since(SystemClock.now());
        assert!((59_000_000..=61_000_000).contains(&offset), "{offset}");
    }
}
