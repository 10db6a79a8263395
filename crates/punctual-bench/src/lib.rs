//! punctual's benchmark harness: the workloads of docs/benchmarks.md, run end to end on the
//! real engine and a real store. The throughput, timeliness and backlog workloads run the
//! engine in this process; the crash and cluster workloads run `punctual serve` nodes, which
//! they kill and pause, and observe the webhooks those nodes send with an in-process receiver
//! (`receiver`, public: the binary's fault tests use it too). The `punctual` binary's `bench`
//! command is one call into `run`.
//!
//! Owns the command line, the tokio runtime it runs on, the resolution of each workload's
//! defaults and limits, a PostgreSQL run's own schema (fresh for each run, dropped at the end
//! unless the run failed, so it can be inspected), and the helpers the workloads share
//! (inserting jobs in batches, waiting with a deadline, reading outcomes from the store and the
//! receiver). A benchmark measures and reports; it asserts no speed. It fails (after printing
//! its report) only when a guarantee is broken: a job lost, a duplicate run without a killed or
//! paused holder to explain it, a stale completion accepted, a store that fails its integrity
//! check.
//!
//! The crash and cluster workloads start their nodes as `current_exe() serve ...`, so the
//! binary that calls `run` must also offer `serve`.
//!
//! Unlike the library crates, this one reports errors with `anyhow`: it is a harness whose only
//! caller is the binary, which prints its errors, so no caller acts on a variant.

mod api;
mod backlog;
mod cluster;
mod crash;
mod fleet;
mod progress;
pub mod receiver;
mod report;
mod schedules;
mod scratch_schema;
mod service;
mod stats;
mod store;
mod tally;
mod throughput;
mod timeliness;

use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::ProgressBar;
use punctual::{
    Clock, JobFilter, JobId, JobOptions, JobState, Kind, NewJob, Payload, RetryPolicy, Store,
    Timestamp,
};
use punctual_core::{Cursor, limits};
use punctual_server::store_url::{PostgresSettings, StoreUrl};
use punctual_server::webhook::target::{Envelope, Target, WEBHOOK_KIND, envelope};

use progress::Progress;
use receiver::Receiver;
use report::Report;
use scratch_schema::ScratchSchema;
use store::BenchStore;

/// The kind of every benchmark job; its handler does nothing but record the run.
const KIND: &str = "noop";

/// Most jobs a benchmark may ask for: bounds the tally's memory and the run's duration.
const JOBS_MAX: usize = 10_000_000;
/// Most kills in one crash run.
const KILLS_MAX: usize = 1_000;
/// Most nodes in one cluster run.
const NODES_MAX: usize = 64;
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
    /// A serve node killed --kills times while webhook jobs fall due: nothing lost or run twice.
    Crash,
    /// --nodes serve nodes sharing one PostgreSQL; --kills alternately kills and pauses them.
    Cluster,
    /// N no-op jobs all due at one instant, 1 s ahead: lateness of the first and the last.
    Burst,
    /// Through a real punctual serve: batch creations, then single creations at 1,000/s.
    ApiCreate,
    /// Through a real punctual serve: N webhooks spread over --spread-s to a local receiver.
    Webhook,
    /// Through a real punctual serve: N webhooks due at one instant, the receiver answering
    /// after --receiver-delay-ms.
    WebhookBurst,
    /// Through a real punctual serve: N jobs due now, worked by HTTP workers in batches.
    RemoteWorker,
    /// N stored schedules, each every minute at second `index % 60`, for --duration-s:
    /// occurrence lateness, and every ledger checked for lost, doubled or skipped occurrences.
    Schedules,
    /// N stored schedules whose first occurrence is the same second: lateness of the first
    /// start and of the last.
    ScheduleBurst,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Throughput => "throughput",
            Workload::Timeliness => "timeliness",
            Workload::Backlog => "backlog",
            Workload::Crash => "crash",
            Workload::Cluster => "cluster",
            Workload::Burst => "burst",
            Workload::ApiCreate => "api-create",
            Workload::Webhook => "webhook",
            Workload::WebhookBurst => "webhook-burst",
            Workload::RemoteWorker => "remote-worker",
            Workload::Schedules => "schedules",
            Workload::ScheduleBurst => "schedule-burst",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Which workload to run.
    #[arg(long, value_enum)]
    workload: Workload,
    /// The store: memory, sqlite (a fresh temporary file), sqlite:PATH, or postgres://... (each
    /// run in a fresh schema, dropped at the end unless the run failed).
    #[arg(long)]
    store: BenchStore,
    /// Number of jobs (default: 100,000 throughput; 10,000 timeliness, crash and cluster;
    /// 1,000,000 backlog).
    #[arg(long)]
    jobs: Option<usize>,
    /// Seconds over which due times are spread (timeliness, crash, cluster, and backlog's
    /// trickle; default 10).
    #[arg(long)]
    spread_s: Option<f64>,
    /// Most handlers running at once (default: 1,000 throughput, 256 otherwise).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Serve nodes sharing the database (cluster only; default 3).
    #[arg(long)]
    nodes: Option<usize>,
    /// Crash: how many times the node is killed (default 20). Cluster: how many times a
    /// random node is disrupted, alternately killed (and restarted) and paused past its lease
    /// (default 0).
    #[arg(long)]
    kills: Option<usize>,
    /// Crash and cluster: the nodes' lease in milliseconds (default 1,000, the shortest serve
    /// takes: a disrupted node's jobs come back quickly). A node that stalls longer than its
    /// lease without being disrupted is rescued too, and its rerun counts as unexplained: give
    /// a loaded machine a longer lease.
    #[arg(long)]
    lease_ms: Option<u64>,
    /// webhook-burst: how long the receiver takes to answer, in milliseconds (default 100).
    #[arg(long)]
    receiver_delay_ms: Option<u64>,
    /// schedules: how long the schedules fire, in seconds (default 300).
    #[arg(long)]
    duration_s: Option<u64>,
    /// Print the report as one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
}

/// A workload's parameters with defaults applied and limits checked.
#[derive(Clone, Debug)]
struct Plan {
    workload: Workload,
    store: BenchStore,
    jobs: usize,
    spread: Duration,
    concurrency: usize,
    nodes: usize,
    kills: usize,
    /// The lease of crash and cluster nodes.
    lease: Duration,
    /// A PostgreSQL run's own schema.
    schema: Option<String>,
    /// How long the webhook-burst receiver takes to answer.
    receiver_delay: Duration,
    /// How long the schedules workload runs.
    duration: Duration,
}

impl Plan {
    fn from_args(args: &BenchArgs) -> anyhow::Result<Plan> {
        let workload = args.workload;
        let postgres = matches!(args.store, BenchStore::Url(StoreUrl::Postgres(_)));
        if workload == Workload::Cluster && !postgres {
            bail!(
                "the cluster workload's nodes share one PostgreSQL: use --store postgres://...; \
                 --workload crash --store sqlite is the single-machine equivalent"
            );
        }
        if args.nodes.is_some() && workload != Workload::Cluster {
            bail!("--nodes applies only to the cluster workload");
        }
        if args.kills.is_some() && !matches!(workload, Workload::Crash | Workload::Cluster) {
            bail!("--kills applies only to the crash and cluster workloads");
        }
        let spread_applies = matches!(
            workload,
            Workload::Timeliness
                | Workload::Backlog
                | Workload::Crash
                | Workload::Cluster
                | Workload::Webhook
        );
        if args.spread_s.is_some() && !spread_applies {
            bail!(
                "--spread-s does not apply to the {} workload (its jobs are due now, or all at one instant)",
                workload.name()
            );
        }
        if args.receiver_delay_ms.is_some() && workload != Workload::WebhookBurst {
            bail!("--receiver-delay-ms applies only to the webhook-burst workload");
        }
        let receiver_delay_ms = args.receiver_delay_ms.unwrap_or(100);
        if receiver_delay_ms > 60_000 {
            bail!("--receiver-delay-ms must be at most 60000");
        }
        let jobs = args.jobs.unwrap_or(match workload {
            Workload::Throughput | Workload::ApiCreate | Workload::RemoteWorker => 100_000,
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
            Workload::Throughput
            | Workload::Webhook
            | Workload::WebhookBurst
            | Workload::Burst
            | Workload::ScheduleBurst => 1_000,
            // Batch creations in flight at once.
            Workload::ApiCreate => 4,
            // HTTP workers.
            Workload::RemoteWorker => 8,
            _ => 256,
        });
        if !(1..=100_000).contains(&concurrency) {
            bail!("--concurrency must be within 1 ..= 100000");
        }
        let kills = args.kills.unwrap_or(match workload {
            Workload::Cluster => 0,
            _ => 20,
        });
        if kills > KILLS_MAX {
            bail!("--kills must be at most {KILLS_MAX}");
        }
        let nodes = args.nodes.unwrap_or(match workload {
            Workload::Cluster => 3,
            _ => 1,
        });
        if !(1..=NODES_MAX).contains(&nodes) {
            bail!("--nodes must be within 1 ..= {NODES_MAX}");
        }
        let lease_ms = args.lease_ms.unwrap_or(1_000);
        // The lower bound is serve's own (`engine.lease_ms`).
        if !(1_000..=60_000).contains(&lease_ms) {
            bail!("--lease-ms must be within 1000 ..= 60000");
        }
        if args.lease_ms.is_some() && !matches!(workload, Workload::Crash | Workload::Cluster) {
            bail!("--lease-ms applies to the crash and cluster workloads only");
        }
        let lease = Duration::from_millis(lease_ms);
        if args.duration_s.is_some() && workload != Workload::Schedules {
            bail!("--duration-s applies only to the schedules workload");
        }
        let duration_s = args.duration_s.unwrap_or(300);
        if !(10..=24 * 3600).contains(&duration_s) {
            bail!("--duration-s must be within 10 ..= 86400");
        }
        if matches!(workload, Workload::Schedules | Workload::ScheduleBurst)
            && jobs > limits::SCHEDULES_MAX
        {
            bail!(
                "--jobs (schedules) must be at most {}",
                limits::SCHEDULES_MAX
            );
        }
        Ok(Plan {
            workload,
            store: args.store.clone(),
            jobs,
            spread,
            concurrency,
            nodes,
            kills,
            lease,
            schema: None,
            receiver_delay: Duration::from_millis(receiver_delay_ms),
            duration: Duration::from_secs(duration_s),
        })
    }

    /// A report for this plan with nothing measured yet.
    fn report(&self) -> Report {
        let mut report = Report::new(self.workload.name(), self.store.name(), self.jobs as u64);
        report.concurrency = Some(self.concurrency as u64);
        report.nodes = u32::try_from(self.nodes).unwrap_or(u32::MAX);
        report
    }

    /// How this run opens a PostgreSQL store: in its own schema.
    fn postgres(&self) -> PostgresSettings {
        PostgresSettings {
            schema: self.schema.clone(),
            ..PostgresSettings::default()
        }
    }
}

/// Runs `punctual bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut plan = Plan::from_args(&args)?;
    let scratch = match &plan.store {
        BenchStore::Url(StoreUrl::Postgres(url)) => Some(ScratchSchema::new(url.clone())),
        _ => None,
    };
    plan.schema = scratch.as_ref().map(|scratch| scratch.name().to_owned());
    let progress = Progress::new(args.json);
    let runtime = runtime()?;
    let started = Instant::now();
    let result = runtime.block_on(async {
        match plan.workload {
            Workload::Throughput => throughput::run(&plan, progress).await,
            Workload::Timeliness => timeliness::run(&plan, progress).await,
            Workload::Backlog => backlog::run(&plan, progress).await,
            Workload::Crash => crash::run(&plan, progress).await,
            Workload::Cluster => cluster::run(&plan, progress).await,
            Workload::Burst => timeliness::run(&plan, progress).await,
            Workload::ApiCreate => api::api_create(&plan, progress).await,
            Workload::Webhook | Workload::WebhookBurst => api::webhook(&plan, progress).await,
            Workload::RemoteWorker => api::remote_worker(&plan, progress).await,
            Workload::Schedules | Workload::ScheduleBurst => schedules::run(&plan, progress).await,
        }
    });
    let elapsed = started.elapsed();
    let result = match (result, &scratch) {
        (Ok(mut report), Some(scratch)) => {
            // The workload has closed its stores and stopped its nodes by now.
            match runtime.block_on(scratch.table_health()) {
                Ok(health) => {
                    report.dead_tuples = Some(health.dead_tuples);
                    report.table_bytes = Some(health.table_bytes);
                    if plan.workload == Workload::Backlog {
                        // The backlog, the trickle and the job due at the restart.
                        let stored = plan.jobs + backlog::TRICKLE_JOBS + 1;
                        report.store_bytes_per_job =
                            Some(health.table_bytes as f64 / stored as f64);
                    }
                }
                Err(error) => eprintln!("warning: {error:#}"),
            }
            Ok(report)
        }
        (result, _) => result,
    };
    let broken = result.as_ref().map_or(true, |report| {
        report.broken() || !report.problems.is_empty()
    });
    if let Some(scratch) = &scratch {
        if broken {
            eprintln!(
                "the PostgreSQL schema {} is kept for inspection; drop it with \
                 DROP SCHEMA {} CASCADE",
                scratch.name(),
                scratch.name()
            );
        } else if let Err(error) = runtime.block_on(scratch.drop_schema()) {
            eprintln!("warning: {error:#}");
        }
    }
    // Tasks still alive (a stopped engine's stragglers) get a bounded time to end.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let mut report = result?;
    report.elapsed_s = elapsed.as_secs_f64();
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

/// Inserts the jobs of a run whose nodes are disrupted (crash, cluster): webhooks to `target`
/// whose payload is the job's index, spread over the plan's spread from `lead` ahead (each due
/// time a whole millisecond, so the `punctual-scheduled-at` a webhook carries is exactly its
/// first attempt's `run_at`), with quick retries (a rescued job is due again soon after its
/// lease ends) and the most attempts, so that no job can die of disruptions alone. Returns how
/// long it took.
async fn insert_disrupted_jobs(
    plan: &Plan,
    store: &dyn Store,
    clock: &dyn Clock,
    lead: Duration,
    target: &str,
    progress: &Progress,
) -> anyhow::Result<Duration> {
    let retry = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(1), 0)
        .context("the retry policy of disrupted nodes' jobs")?;
    let options = JobOptions::default()
        .retry(retry)
        .attempt_max(limits::ATTEMPT_MAX_LIMIT);
    let target = Target::new(target, None, None, None)
        .map_err(|error| anyhow::anyhow!("the receiver's address as a webhook: {error}"))?;
    let kind = Kind::new(WEBHOOK_KIND).context("the webhook kind")?;
    let jobs = plan.jobs;
    let first_due = clock.now().add(lead);
    insert_jobs_of(
        store,
        clock,
        0..jobs,
        &kind,
        |index| {
            envelope(&target, &index.to_string())
                .map_err(|error| anyhow::anyhow!("a webhook job's payload: {error}"))
        },
        |index, _| {
            let at = spread_at(first_due, plan.spread, index, jobs);
            Timestamp::from_millis(at.as_millis())
        },
        &options,
        &progress.bar("insert", jobs as u64),
    )
    .await
}

/// Inserts one benchmark job (`KIND`) per index in `indexes` (payload: the index), in batches of
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
    let payload =
        |index: usize| Payload::from_json_text(&index.to_string()).context("an index as a payload");
    insert_jobs_of(store, clock, indexes, &kind, payload, run_at, options, bar).await
}

/// Inserts one job of `kind` per index in `indexes` with `payload(index)`, in batches of
/// `limits::INSERT_BATCH_MAX`, each due at `run_at(index, now)`, each batch durable before the
/// next. Returns how long it took.
#[allow(
    clippy::too_many_arguments,
    reason = "the two callers above name every part; a struct would only rename them"
)]
async fn insert_jobs_of(
    store: &dyn Store,
    clock: &dyn Clock,
    indexes: Range<usize>,
    kind: &Kind,
    payload: impl Fn(usize) -> anyhow::Result<Payload>,
    run_at: impl Fn(usize, Timestamp) -> Timestamp,
    options: &JobOptions,
    bar: &ProgressBar,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut next = indexes.start;
    while next < indexes.end {
        let end = indexes.end.min(next + limits::INSERT_BATCH_MAX);
        let now = clock.now();
        let batch = (next..end)
            .map(|index| {
                let job = NewJob::new(
                    kind.clone(),
                    payload(index)?,
                    run_at(index, now),
                    options.clone(),
                    now,
                )?;
                Ok(job)
            })
            .collect::<anyhow::Result<Vec<_>>>()
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

/// How many jobs the store holds in a final state.
async fn count_finished(store: &dyn Store) -> anyhow::Result<u64> {
    let counts = store.counts().await.context("counting jobs")?;
    Ok(counts
        .iter()
        .filter(|count| count.state.is_final())
        .map(|count| count.count)
        .sum())
}

/// A webhook job the store holds as succeeded: its index (the payload in its envelope), its id,
/// and the lease token of the completion the store accepted.
struct Succeeded {
    index: usize,
    id: JobId,
    token: u64,
}

/// The webhook jobs the store holds as succeeded.
async fn succeeded_webhooks(store: &dyn Store, jobs: usize) -> anyhow::Result<Vec<Succeeded>> {
    let filter = JobFilter {
        state: Some(JobState::Succeeded),
        ..JobFilter::default()
    };
    let mut succeeded = Vec::with_capacity(jobs);
    let mut after: Option<Cursor> = None;
    // The store holds `jobs` jobs, so this many pages always reach the end.
    let pages_max = jobs / limits::PAGE_SIZE_MAX + 2;
    for _ in 0..pages_max {
        let page = store
            .list(filter.clone(), after, limits::PAGE_SIZE_MAX)
            .await
            .context("listing succeeded jobs")?;
        for job in &page.jobs {
            let index = Envelope::parse(job.payload.as_str())
                .ok()
                .and_then(|envelope| envelope.payload.get().parse().ok())
                .with_context(|| format!("job {} is not a webhook with an index", job.id))?;
            succeeded.push(Succeeded {
                index,
                id: job.id,
                token: job.lease_token.0,
            });
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(succeeded),
        }
    }
    bail!("listing the succeeded jobs took more than {pages_max} pages")
}

/// How many receipts the receiver of a run of `jobs` keeps: every job once, and room for far
/// more reruns than disruptions cause. One more is a problem the report names.
fn receipts_max(jobs: usize) -> usize {
    jobs.saturating_mul(2).saturating_add(10_000)
}

/// The runs the receiver saw, as `stats` judges them, and what is wrong with the rest as
/// problems in `report`: requests that are not punctual's, that no node of this run signed,
/// whose body is not an index of this run, or that the receiver had no room to keep.
fn received_runs(receiver: &Receiver, jobs: usize, report: &mut Report) -> Vec<stats::Run> {
    let mut runs = Vec::new();
    let mut unsigned = 0;
    let mut strays = 0;
    for receipt in receiver.receipts() {
        let index = receipt
            .body
            .parse::<usize>()
            .ok()
            .filter(|index| *index < jobs);
        match (receipt.sender, index) {
            (Some(node), Some(index)) => runs.push(stats::Run {
                index,
                attempt: receipt.attempt,
                token: receipt.token,
                node,
                id: receipt.id,
                run_at_us: receipt.scheduled_at.as_micros(),
                received_us: receipt.received_at.as_micros(),
                lease_expires_us: receipt.lease_expires_at.map(|at| at.as_micros()),
                answered_us: receipt.answered_at.map(|at| at.as_micros()),
            }),
            (None, _) => unsigned += 1,
            (Some(_), None) => strays += 1,
        }
    }
    let mut problem = |count: u64, what: &str| {
        if count > 0 {
            report.problems.push(format!("{count} {what}"));
        }
    };
    problem(
        receiver.malformed(),
        "requests reached the receiver without punctual's headers",
    );
    problem(unsigned, "webhooks were signed by no node of this run");
    problem(strays, "webhooks were for jobs this run never scheduled");
    problem(
        receiver.overflow(),
        "webhooks arrived beyond the receiver's capacity and were not judged",
    );
    runs
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
    fn defaults_follow_docs_benchmarks_md() {
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
    fn the_cluster_workload_defaults_to_three_nodes_and_no_disruption() {
        let cluster = plan(&[
            "--workload",
            "cluster",
            "--store",
            "postgres://localhost/db",
        ])
        .expect("valid");
        assert_eq!((cluster.nodes, cluster.kills, cluster.jobs), (3, 0, 10_000));
        assert_eq!(cluster.report().nodes, 3);
        let crash = plan(&["--workload", "crash", "--store", "postgres://h/db"]).expect("valid");
        assert_eq!((crash.nodes, crash.kills), (1, 20));
    }

    #[test]
    fn refuses_what_does_not_apply() {
        let refused = |arguments: &[&str]| plan(arguments).expect_err("refused").to_string();
        assert!(refused(&["--workload", "cluster", "--store", "memory"]).contains("PostgreSQL"));
        assert!(refused(&["--workload", "cluster", "--store", "sqlite"]).contains("PostgreSQL"));
        assert!(
            refused(&["--workload", "crash", "--store", "sqlite", "--nodes", "2"])
                .contains("--nodes")
        );
        assert!(
            refused(&[
                "--workload",
                "cluster",
                "--store",
                "postgres://h/db",
                "--nodes",
                "0"
            ])
            .contains("--nodes")
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
        // Shorter than serve takes.
        assert!(
            refused(&[
                "--workload",
                "crash",
                "--store",
                "sqlite",
                "--lease-ms",
                "500"
            ])
            .contains("--lease-ms")
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
