//! `punctual bench`: the workloads of BENCHMARKS.md, run end to end on the real engine and a real
//! store, and the hidden `bench-worker` process the crash workload kills.
//!
//! Owns the command line of both, the tokio runtime they run on, the resolution of each
//! workload's defaults and limits, and the helpers the workloads share (inserting jobs in
//! batches, waiting with a deadline). A benchmark measures and reports; it asserts no speed. It
//! fails (after printing its report) only when a guarantee is broken: a job lost, a duplicate
//! run without a killed holder to explain it, a store that fails its integrity check.

mod backlog;
mod crash;
mod progress;
mod report;
mod stats;
mod tally;
mod throughput;
mod timeliness;
mod worker;

use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::ProgressBar;
use punctual::{Clock, JobOptions, Kind, NewJob, Payload, Store, Timestamp};
use punctual_core::limits;

use crate::store_arg::StoreArg;
use progress::Progress;
use report::Report;

pub use worker::{WorkerArgs, run as worker};

/// The kind of every benchmark job; its handler does nothing but record the run.
const KIND: &str = "noop";

/// Most jobs a benchmark may ask for: bounds the tally's memory and the run's duration.
const JOBS_MAX: usize = 10_000_000;
/// Most kills in one crash run.
const KILLS_MAX: usize = 1_000;
/// Longest spread of due times.
const SPREAD_MAX: Duration = Duration::from_secs(3_600);
/// How often waiting loops look at their condition and update the progress bar.
const POLL: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Insert N no-op jobs due now, then work them: enqueue and worked rates.
    Throughput,
    /// N jobs due at distinct times over --spread-s seconds: lateness percentiles.
    Timeliness,
    /// N jobs due in days, a trickle due in seconds, an engine restart: memory, first fire.
    Backlog,
    /// A worker process killed --kills times while jobs fall due: nothing lost or run twice.
    Crash,
    /// --nodes worker processes sharing one PostgreSQL (needs the PostgreSQL store).
    Cluster,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Throughput => "throughput",
            Workload::Timeliness => "timeliness",
            Workload::Backlog => "backlog",
            Workload::Crash => "crash",
            Workload::Cluster => "cluster",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Which workload to run.
    #[arg(long, value_enum)]
    workload: Workload,
    /// The store: memory, sqlite (a fresh temporary file) or sqlite:PATH.
    #[arg(long)]
    store: StoreArg,
    /// Number of jobs (default: 100,000 throughput; 10,000 timeliness and crash; 1,000,000
    /// backlog).
    #[arg(long)]
    jobs: Option<usize>,
    /// Seconds over which due times are spread (timeliness, crash, and backlog's trickle;
    /// default 10).
    #[arg(long)]
    spread_s: Option<f64>,
    /// Most handlers running at once (default: 1,000 throughput, 256 otherwise).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Worker processes (cluster only).
    #[arg(long)]
    nodes: Option<usize>,
    /// How many times the worker is killed (crash only; default 20).
    #[arg(long)]
    kills: Option<usize>,
    /// Print the report as one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
}

/// A workload's parameters with defaults applied and limits checked.
#[derive(Clone, Debug)]
struct Plan {
    workload: Workload,
    store: StoreArg,
    jobs: usize,
    spread: Duration,
    concurrency: usize,
    kills: usize,
}

impl Plan {
    fn from_args(args: &BenchArgs) -> anyhow::Result<Plan> {
        let workload = args.workload;
        if workload == Workload::Cluster {
            bail!(
                "the cluster workload needs the PostgreSQL store, which is not built yet; \
                 try --workload crash --store sqlite for the single-machine equivalent"
            );
        }
        if args.nodes.is_some_and(|nodes| nodes != 1) {
            bail!("--nodes applies only to the cluster workload");
        }
        if args.kills.is_some() && workload != Workload::Crash {
            bail!("--kills applies only to the crash workload");
        }
        if args.spread_s.is_some() && workload == Workload::Throughput {
            bail!("--spread-s does not apply to the throughput workload (its jobs are due now)");
        }
        let jobs = args.jobs.unwrap_or(match workload {
            Workload::Throughput => 100_000,
            Workload::Backlog => 1_000_000,
            _ => 10_000,
        });
        if !(1..=JOBS_MAX).contains(&jobs) {
            bail!("--jobs must be within 1 ..= {JOBS_MAX}");
        }
        let spread_s = args.spread_s.unwrap_or(10.0);
        let spread = Duration::try_from_secs_f64(spread_s)
            .ok()
            .filter(|spread| !spread.is_zero() && *spread <= SPREAD_MAX)
            .with_context(|| {
                format!(
                    "--spread-s must be above 0 and at most {} (got {spread_s})",
                    SPREAD_MAX.as_secs()
                )
            })?;
        let concurrency = args.concurrency.unwrap_or(match workload {
            Workload::Throughput => 1_000,
            _ => 256,
        });
        if !(1..=100_000).contains(&concurrency) {
            bail!("--concurrency must be within 1 ..= 100000");
        }
        let kills = args.kills.unwrap_or(20);
        if kills > KILLS_MAX {
            bail!("--kills must be at most {KILLS_MAX}");
        }
        Ok(Plan {
            workload,
            store: args.store.clone(),
            jobs,
            spread,
            concurrency,
            kills,
        })
    }

    /// A report for this plan with nothing measured yet.
    fn report(&self) -> Report {
        let mut report = Report::new(self.workload.name(), self.store.name(), self.jobs as u64);
        report.concurrency = Some(self.concurrency as u64);
        report
    }
}

/// Runs `punctual bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::from_args(&args)?;
    let progress = Progress::new(args.json);
    let runtime = runtime()?;
    let started = Instant::now();
    let result = runtime.block_on(async {
        match plan.workload {
            Workload::Throughput => throughput::run(&plan, progress).await,
            Workload::Timeliness => timeliness::run(&plan, progress).await,
            Workload::Backlog => backlog::run(&plan, progress).await,
            Workload::Crash => crash::run(&plan, progress).await,
            Workload::Cluster => Err(anyhow::anyhow!("the cluster workload is not built yet")),
        }
    });
    // Tasks still alive (a stopped engine's stragglers) get a bounded time to end.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let mut report = result?;
    report.elapsed_s = started.elapsed().as_secs_f64();
    if report.rss_mb_max.is_none() {
        report.rss_mb_max = report::peak_rss_mb("self");
    }
    report.check_guarantees();
    print!("{}", report.to_table());
    if args.json {
        println!("{}", report.to_json_line().context("encoding the report")?);
    }
    if !report.problems.is_empty() {
        bail!(
            "the {} benchmark broke a guarantee: {}",
            report.workload,
            report.problems.join("; ")
        );
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("punctual-bench")
        .build()
        .context("starting the tokio runtime")
}

/// Inserts one benchmark job per index in `indexes` (payload: the index), in batches of
/// `limits::INSERT_BATCH_MAX`, each due at `run_at(index, now)`. Returns how long it took.
async fn insert_jobs(
    store: &dyn Store,
    clock: &dyn Clock,
    indexes: Range<usize>,
    run_at: impl Fn(usize, Timestamp) -> Timestamp,
    options: &JobOptions,
    bar: &ProgressBar,
) -> anyhow::Result<Duration> {
    let kind = Kind::new(KIND).context("the benchmark's kind name")?;
    let started = Instant::now();
    let mut next = indexes.start;
    while next < indexes.end {
        let end = indexes.end.min(next + limits::INSERT_BATCH_MAX);
        let now = clock.now();
        let batch = (next..end)
            .map(|index| {
                let payload = Payload::from_json_text(&index.to_string())?;
                NewJob::new(
                    kind.clone(),
                    payload,
                    run_at(index, now),
                    options.clone(),
                    now,
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .context("building a batch of jobs")?;
        store
            .insert(batch, now)
            .await
            .with_context(|| format!("inserting jobs {next}..{end}"))?;
        bar.inc((end - next) as u64);
        next = end;
    }
    bar.finish_and_clear();
    Ok(started.elapsed())
}

/// `start + spread * (index / count)`: `count` instants spread evenly from `start`.
fn spread_at(start: Timestamp, spread: Duration, index: usize, count: usize) -> Timestamp {
    start.add(spread.mul_f64(index as f64 / count.max(1) as f64))
}

/// Polls `check` (which returns progress and whether it is done) until done or `deadline`;
/// returns whether it got done.
async fn wait_until(
    deadline: Instant,
    bar: &ProgressBar,
    mut check: impl FnMut() -> (u64, bool),
) -> bool {
    loop {
        let (position, done) = check();
        bar.set_position(position);
        if done {
            bar.finish_and_clear();
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            bar.abandon();
            return false;
        }
        tokio::time::sleep((deadline - now).min(POLL)).await;
    }
}

/// Records what the engine's events and the tally say went wrong outside the measured figures:
/// failed attempts (a no-op handler never fails) and runs of jobs this run did not schedule as
/// problems; store errors (which the engine retries) as a warning on stderr.
fn note_engine_trouble(report: &mut Report, events: &tally::EventCounter, tally: &tally::RunTally) {
    if events.failed() > 0 {
        report
            .problems
            .push(format!("{} attempts failed", events.failed()));
    }
    if tally.strays() > 0 {
        report.problems.push(format!(
            "{} runs of jobs this benchmark did not expect to run",
            tally.strays()
        ));
    }
    if let Some(error) = events.first_store_error() {
        eprintln!(
            "warning: {} store calls failed and were retried; the first: {error}",
            events.store_errors()
        );
    }
}

/// The size in bytes of a SQLite store's files: the database and its write-ahead log.
fn sqlite_bytes(path: &std::path::Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    [path.to_path_buf(), PathBuf::from(wal)]
        .iter()
        .filter_map(|file| std::fs::metadata(file).ok())
        .map(|metadata| metadata.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn plan(arguments: &[&str]) -> anyhow::Result<Plan> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(arguments.iter().copied()))?;
        Plan::from_args(&cli.args)
    }

    #[test]
    fn defaults_follow_benchmarks_md() {
        let throughput = plan(&["--workload", "throughput", "--store", "memory"]).expect("valid");
        assert_eq!(throughput.jobs, 100_000);
        assert_eq!(throughput.concurrency, 1_000);
        let timeliness = plan(&["--workload", "timeliness", "--store", "sqlite"]).expect("valid");
        assert_eq!(timeliness.jobs, 10_000);
        assert_eq!(timeliness.spread, Duration::from_secs(10));
        let backlog = plan(&["--workload", "backlog", "--store", "memory"]).expect("valid");
        assert_eq!(backlog.jobs, 1_000_000);
        let crash = plan(&["--workload", "crash", "--store", "sqlite"]).expect("valid");
        assert_eq!((crash.jobs, crash.kills), (10_000, 20));
    }

    #[test]
    fn refuses_what_is_not_built_or_does_not_apply() {
        let refused = |arguments: &[&str]| plan(arguments).expect_err("refused").to_string();
        assert!(refused(&["--workload", "cluster", "--store", "memory"]).contains("PostgreSQL"));
        assert!(
            refused(&[
                "--workload",
                "throughput",
                "--store",
                "postgres://localhost/db"
            ])
            .contains("PostgreSQL")
        );
        assert!(
            refused(&[
                "--workload",
                "throughput",
                "--store",
                "memory",
                "--kills",
                "3"
            ])
            .contains("--kills")
        );
        assert!(
            refused(&[
                "--workload",
                "timeliness",
                "--store",
                "memory",
                "--spread-s",
                "0"
            ])
            .contains("--spread-s")
        );
        assert!(
            refused(&[
                "--workload",
                "timeliness",
                "--store",
                "memory",
                "--jobs",
                "0"
            ])
            .contains("--jobs")
        );
    }

    #[test]
    fn due_times_spread_evenly_from_the_start() {
        let start = Timestamp::from_millis(1_000);
        let spread = Duration::from_secs(10);
        assert_eq!(spread_at(start, spread, 0, 10), start);
        assert_eq!(
            spread_at(start, spread, 5, 10),
            Timestamp::from_millis(6_000)
        );
        assert_eq!(
            spread_at(start, spread, 3, 0),
            Timestamp::from_millis(31_000)
        );
    }
}
