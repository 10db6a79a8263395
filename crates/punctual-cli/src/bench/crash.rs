//! The crash workload: a worker process runs the engine on a SQLite file and is killed with
//! SIGKILL `--kills` times at random moments while the jobs fall due; each time a new worker
//! takes over. The last one runs until every job has finished in the store.
//!
//! Then the parent reads the workers' run logs and the store: a job that did not succeed, or
//! never ran, is lost; a run beyond a job's first is a duplicate, explained when the run before
//! it was made by a killed worker under a smaller lease token. The store's integrity check must
//! pass. Every worker is killed and reaped on every path out of here, errors included.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use punctual::{Clock, JobFilter, JobOptions, JobState, RetryPolicy, Store, SystemClock};
use punctual_core::{Cursor, limits};
use punctual_sqlite::SqliteStore;
use rand::Rng as _;

use super::progress::Progress;
use super::report::{Report, peak_rss_mb};
use super::stats::{classify_runs, rate};
use super::worker::parse_log;
use super::{Plan, insert_jobs, spread_at};
use crate::store_arg::StoreArg;

/// How far ahead the first job is due when insertion starts.
const LEAD: Duration = Duration::from_secs(1);
/// The workers' lease: short, so a killed worker's jobs come back quickly.
const LEASE: Duration = Duration::from_secs(1);
/// The shortest time a worker lives before it is killed.
const KILL_AFTER_MIN: Duration = Duration::from_millis(50);
/// How long after the last job is due (and the last kill) the run waits for every job to finish.
const GRACE: Duration = Duration::from_secs(60);
/// How often the parent counts finished jobs.
const COUNT_INTERVAL: Duration = Duration::from_millis(100);

pub async fn run(plan: &Plan, progress: Progress) -> anyhow::Result<Report> {
    let StoreArg::Sqlite(requested) = &plan.store else {
        bail!(
            "the crash workload kills the worker process, so it needs a store on disk: \
             use --store sqlite or sqlite:PATH"
        );
    };
    let jobs = plan.jobs;
    let scratch = tempfile::Builder::new()
        .prefix("punctual-crash-")
        .tempdir()
        .context("creating a directory for the run logs")?;
    let db = requested
        .clone()
        .unwrap_or_else(|| scratch.path().join("punctual.db"));
    let store = Arc::new(
        SqliteStore::open(&db).with_context(|| format!("opening SQLite store {}", db.display()))?,
    );
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut report = plan.report();
    report.kills = Some(plan.kills as u64);

    // Quick retries: a rescued job is due again soon after its lease ends. Attempts enough that
    // no job can die of kills alone.
    let retry = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(1), 0)
        .context("the crash workload's retry policy")?;
    let options = JobOptions::default()
        .retry(retry)
        .attempt_max(limits::ATTEMPT_MAX_LIMIT);
    let started = Instant::now();
    let first_due = clock.now().add(LEAD);
    let took = insert_jobs(
        &*store,
        &*clock,
        0..jobs,
        |index, _| spread_at(first_due, plan.spread, index, jobs),
        &options,
        &progress.bar("insert", jobs as u64),
    )
    .await?;
    report.enqueue_per_s = rate(jobs as u64, took);

    // Kills spread on average over the whole time the jobs fall due.
    let kill_after_max =
        ((LEAD + plan.spread) * 2 / plan.kills.max(1) as u32).max(KILL_AFTER_MIN * 2);
    let spawner = Spawner {
        exe: std::env::current_exe().context("finding this executable to start workers")?,
        db: db.clone(),
        scratch: scratch.path().to_path_buf(),
        concurrency: plan.concurrency,
    };
    let mut killed = HashSet::new();
    let mut logs = Vec::new();
    let mut worker_rss_mb: Option<f64> = None;
    let killing = progress.bar("kills", plan.kills as u64);
    for number in 0..plan.kills {
        let mut worker = spawner.spawn(number)?;
        logs.push(worker.log.clone());
        let delay = rand::rng().random_range(KILL_AFTER_MIN..=kill_after_max);
        tokio::time::sleep(delay).await;
        worker.check_alive()?;
        worker_rss_mb = max_rss(worker_rss_mb, worker.peak_rss_mb());
        killed.insert(worker.kill()?);
        killing.inc(1);
    }
    killing.finish_and_clear();

    let mut last = spawner.spawn(plan.kills)?;
    logs.push(last.log.clone());
    let finishing = progress.bar("finish", jobs as u64);
    let deadline = Instant::now().max(started + LEAD + plan.spread) + GRACE;
    let mut finished = 0;
    while finished < jobs as u64 {
        if Instant::now() >= deadline {
            break;
        }
        last.check_alive()?;
        tokio::time::sleep(COUNT_INTERVAL).await;
        let counts = store.counts().await.context("counting jobs")?;
        finished = counts
            .iter()
            .filter(|count| count.state.is_final())
            .map(|count| count.count)
            .sum();
        finishing.set_position(finished);
    }
    finishing.finish_and_clear();
    worker_rss_mb = max_rss(worker_rss_mb, last.peak_rss_mb());
    last.kill()?;

    // Every run each worker logged, and what the store says of each job.
    let mut runs = Vec::new();
    let mut lease_lost = 0;
    for log in &logs {
        let text = match std::fs::read_to_string(log) {
            Ok(text) => text,
            // A worker killed before it opened its log ran nothing.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", log.display()));
            }
        };
        let parsed = parse_log(&text).with_context(|| format!("reading {}", log.display()))?;
        runs.extend(parsed.runs);
        lease_lost += parsed.lease_lost;
    }
    let counts = classify_runs(&runs, &killed);
    let succeeded = succeeded_indexes(&*store, jobs).await?;
    let ran: HashSet<usize> = runs.iter().map(|run| run.index).collect();
    report.lost = (0..jobs)
        .filter(|index| !(succeeded.contains(index) && ran.contains(index)))
        .count() as u64;
    report.duplicates = counts.duplicates;
    report.duplicates_explained = counts.explained;
    report.stale_completions_refused = Some(lease_lost);
    report.rss_mb_max = worker_rss_mb;
    if finished < jobs as u64 {
        report.problems.push(format!(
            "only {finished} of {jobs} jobs had finished {} s after the last was due",
            GRACE.as_secs()
        ));
    }
    if let Some(stray) = runs.iter().find(|run| run.index >= jobs) {
        report.problems.push(format!(
            "a worker ran job {}, which this run never scheduled",
            stray.index
        ));
    }

    let checked = store.clone();
    let integrity = tokio::task::spawn_blocking(move || checked.integrity_check())
        .await
        .context("the integrity check's thread")?;
    if let Err(error) = &integrity {
        eprintln!("error: the store's integrity check failed: {error}");
    }
    report.integrity_ok = Some(integrity.is_ok());
    drop(store);

    let broken = report.lost > 0 || report.unexplained_duplicates() > 0 || integrity.is_err();
    if broken || !report.problems.is_empty() {
        let kept = scratch.keep();
        eprintln!(
            "the run logs (and a temporary store) are kept in {}",
            kept.display()
        );
    }
    Ok(report)
}

fn max_rss(known: Option<f64>, more: Option<f64>) -> Option<f64> {
    match (known, more) {
        (Some(known), Some(more)) => Some(known.max(more)),
        (known, more) => known.or(more),
    }
}

/// The indexes of the jobs the store holds as succeeded.
async fn succeeded_indexes(store: &dyn Store, jobs: usize) -> anyhow::Result<HashSet<usize>> {
    let filter = JobFilter {
        state: Some(JobState::Succeeded),
        ..JobFilter::default()
    };
    let mut succeeded = HashSet::with_capacity(jobs);
    let mut after: Option<Cursor> = None;
    // The store holds `jobs` jobs, so this many pages always reach the end.
    let pages_max = jobs / limits::PAGE_SIZE_MAX + 2;
    for _ in 0..pages_max {
        let page = store
            .list(filter.clone(), after, limits::PAGE_SIZE_MAX)
            .await
            .context("listing succeeded jobs")?;
        for job in &page.jobs {
            let index =
                job.payload.as_str().parse().with_context(|| {
                    format!("job {} has a payload that is not an index", job.id)
                })?;
            succeeded.insert(index);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(succeeded),
        }
    }
    bail!("listing the succeeded jobs took more than {pages_max} pages")
}

/// Starts worker processes, each with its own run log and stderr file in `scratch`.
struct Spawner {
    exe: PathBuf,
    db: PathBuf,
    scratch: PathBuf,
    concurrency: usize,
}

impl Spawner {
    fn spawn(&self, number: usize) -> anyhow::Result<Worker> {
        let log = self.scratch.join(format!("worker-{number}.log"));
        let stderr_path = self.scratch.join(format!("worker-{number}.stderr"));
        let stderr = std::fs::File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let child = Command::new(&self.exe)
            .arg("bench-worker")
            .arg("--db")
            .arg(&self.db)
            .arg("--log")
            .arg(&log)
            .arg("--concurrency")
            .arg(self.concurrency.to_string())
            .arg("--lease-ms")
            .arg(LEASE.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting a bench-worker process")?;
        Ok(Worker {
            child: Some(child),
            log,
            stderr: stderr_path,
        })
    }
}

/// A running worker process. Dropping it kills and reaps the process, so no path out of the
/// workload leaves a worker behind.
struct Worker {
    /// `None` once killed and reaped.
    child: Option<Child>,
    log: PathBuf,
    stderr: PathBuf,
}

impl Worker {
    /// Fails, with the worker's stderr, if the worker exited by itself: it should only ever die
    /// by our hand.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("the worker was already killed");
        };
        if let Some(status) = child.try_wait().context("checking on a worker")? {
            self.child = None;
            bail!(
                "a bench-worker exited by itself ({status}): {}",
                read_tail(&self.stderr)
            );
        }
        Ok(())
    }

    fn peak_rss_mb(&self) -> Option<f64> {
        let child = self.child.as_ref()?;
        peak_rss_mb(&child.id().to_string())
    }

    /// Kills the worker with SIGKILL, reaps it, and returns its pid.
    fn kill(&mut self) -> anyhow::Result<u32> {
        let mut child = self.child.take().context("the worker was already killed")?;
        let pid = child.id();
        // Fails only if the process has already been reaped, which `take` above rules out.
        child.kill().context("killing a worker")?;
        child.wait().context("reaping a killed worker")?;
        Ok(pid)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last part of a worker's stderr, for an error message.
fn read_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: String = text
        .chars()
        .rev()
        .take(2_000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if tail.trim().is_empty() {
        "(no output)".to_owned()
    } else {
        tail.trim().to_owned()
    }
}
