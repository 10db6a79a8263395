//! The crash workload: a worker process runs the engine on a SQLite file or a PostgreSQL schema
//! and is killed with SIGKILL `--kills` times at random moments while the jobs fall due; each
//! time a new worker takes over. The last one runs until every job has finished in the store.
//!
//! Then the parent reads the workers' run logs and the store: a job that did not succeed, or
//! never ran, is lost; a run beyond a job's first is a duplicate, explained when the run before
//! it was made by a killed worker under a smaller lease token. A SQLite store's integrity check
//! must pass. Every worker is killed and reaped on every path out of here, errors included.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use punctual_server::store_url::StoreUrl;
use rand::Rng as _;

use super::fleet::{Logs, Spawner, WorkerStore, max_rss};
use super::progress::Progress;
use super::report::Report;
use super::stats::{
    Lateness, classify_runs, first_run_lateness_ms, rate, stale_completions_accepted,
};
use super::store::{self, BenchStore};
use super::{Plan, count_finished, insert_disrupted_jobs, succeeded_indexes};

/// How far ahead the first job is due when insertion starts.
const LEAD: Duration = Duration::from_secs(1);
/// The shortest time a worker lives before it is killed.
const KILL_AFTER_MIN: Duration = Duration::from_millis(50);
/// How long after the last job is due (and the last kill) the run waits for every job to finish.
const GRACE: Duration = Duration::from_secs(60);
/// How often the parent counts finished jobs.
const COUNT_INTERVAL: Duration = Duration::from_millis(100);

pub async fn run(plan: &Plan, progress: Progress) -> anyhow::Result<Report> {
    let jobs = plan.jobs;
    let scratch = tempfile::Builder::new()
        .prefix("punctual-crash-")
        .tempdir()
        .context("creating a directory for the run logs")?;
    // The parent's own handle on the store: it inserts the jobs and reads the outcome.
    let (opened, worker_store) = match &plan.store {
        BenchStore::Url(StoreUrl::Sqlite(requested)) => {
            let db = requested
                .clone()
                .unwrap_or_else(|| scratch.path().join("punctual.db"));
            let shared = BenchStore::Url(StoreUrl::Sqlite(Some(db.clone())));
            let opened = store::open(&shared, &plan.postgres()).await?;
            (opened, WorkerStore::Sqlite(db))
        }
        BenchStore::Url(StoreUrl::Postgres(url)) => {
            let schema = plan
                .schema
                .clone()
                .context("a PostgreSQL benchmark runs in its own schema")?;
            let opened = store::open(&plan.store, &plan.postgres()).await?;
            let worker_store = WorkerStore::Postgres {
                url: url.clone(),
                schema,
            };
            (opened, worker_store)
        }
        BenchStore::Memory => bail!(
            "the crash workload kills the worker process, so it needs a store other processes \
             can share: use --store sqlite, sqlite:PATH or postgres://..."
        ),
    };
    let store = opened.store.clone();
    let clock = opened.clock.clone();
    let mut report = plan.report();
    report.kills = Some(plan.kills as u64);

    let started = Instant::now();
    let took = insert_disrupted_jobs(plan, &*store, &*clock, LEAD, &progress).await?;
    report.enqueue_per_s = rate(jobs as u64, took);

    // Kills spread on average over the whole time the jobs fall due.
    let kill_after_max =
        ((LEAD + plan.spread) * 2 / plan.kills.max(1) as u32).max(KILL_AFTER_MIN * 2);
    let spawner = Spawner {
        exe: std::env::current_exe().context("finding this executable to start workers")?,
        store: worker_store,
        scratch: scratch.path().to_path_buf(),
        concurrency: plan.concurrency,
        lease: plan.lease,
    };
    let mut killed = HashSet::new();
    let mut logs = Vec::new();
    let mut worker_rss_mb: Option<f64> = None;
    let killing = progress.bar("kills", plan.kills as u64);
    for number in 0..plan.kills {
        let mut worker = spawner.spawn(&format!("worker-{number}"))?;
        logs.push(worker.log.clone());
        let delay = rand::rng().random_range(KILL_AFTER_MIN..=kill_after_max);
        tokio::time::sleep(delay).await;
        worker.check_alive()?;
        worker_rss_mb = max_rss(worker_rss_mb, worker.peak_rss_mb());
        worker.kill()?;
        killed.insert(worker.pid);
        killing.inc(1);
    }
    killing.finish_and_clear();

    let mut last = spawner.spawn(&format!("worker-{}", plan.kills))?;
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
        finished = count_finished(&*store).await?;
        finishing.set_position(finished);
    }
    finishing.finish_and_clear();
    worker_rss_mb = max_rss(worker_rss_mb, last.peak_rss_mb());
    last.kill()?;

    // Every run each worker logged, and what the store says of each job.
    let logged = Logs::read(&logs)?;
    let counts = classify_runs(&logged.runs, |run| killed.contains(&run.pid));
    let succeeded = succeeded_indexes(&*store, jobs).await?;
    let ran = logged.ran();
    report.lost = (0..jobs)
        .filter(|index| !(succeeded.contains(index) && ran.contains(index)))
        .count() as u64;
    report.duplicates = counts.duplicates;
    report.duplicates_explained = counts.explained;
    report.lateness_ms = Lateness::of(first_run_lateness_ms(&logged.runs));
    report.stale_completions_refused = Some(logged.lease_lost);
    let accepted = stale_completions_accepted(&logged.runs, &logged.done);
    report.stale_completions_accepted = Some(accepted);
    report.rss_mb_max = worker_rss_mb;
    if finished < jobs as u64 {
        report.problems.push(format!(
            "only {finished} of {jobs} jobs had finished {} s after the last was due",
            GRACE.as_secs()
        ));
    }
    if let Some(stray) = logged.runs.iter().find(|run| run.index >= jobs) {
        report.problems.push(format!(
            "a worker ran job {}, which this run never scheduled",
            stray.index
        ));
    }

    drop(store);
    if let Some(sqlite) = opened.sqlite.clone() {
        let integrity = tokio::task::spawn_blocking(move || sqlite.integrity_check())
            .await
            .context("the integrity check's thread")?;
        if let Err(error) = &integrity {
            eprintln!("error: the store's integrity check failed: {error}");
        }
        report.integrity_ok = Some(integrity.is_ok());
    }
    opened.close().await;

    if report.broken() || !report.problems.is_empty() {
        let kept = scratch.keep();
        eprintln!(
            "the run logs (and a temporary store, if any) are kept in {}",
            kept.display()
        );
    }
    Ok(report)
}
