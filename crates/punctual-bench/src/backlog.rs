//! The backlog workload: N jobs due over the next days, a trickle due in the next seconds, then an
//! engine restart over it all.
//!
//! Shows that a large backlog of future jobs costs neither timeliness (the trickle's lateness),
//! nor memory (`rss_mb_max`), nor start-up time (`start_to_first_fire_ms`: from opening the store
//! again to the first handler start). One trickle job (index 0) is already due when the engine
//! restarts, so the first fire measures start-up rather than waiting; it is left out of the
//! lateness figures because it fell due while no engine ran. The backlog's jobs never run.
//! `stats_ms` is how long the store takes to answer what a metrics scrape asks (`counts` and
//! `queue_stats`) with the backlog stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use punctual::{JobOptions, Scheduler};
use punctual_server::store_url::StoreUrl;

use super::progress::Progress;
use super::report::Report;
use super::stats::{Lateness, rate};
use super::store::{self, BenchStore};
use super::tally::{self, EventCounter, RunTally};
use super::{KIND, Plan, insert_jobs, spread_at, sqlite_bytes, wait_until};

/// Jobs in the trickle besides the one due at the restart.
pub const TRICKLE_JOBS: usize = 2_000;
/// How far ahead of its insertion the trickle's first spread job is due: room for the restart.
const TRICKLE_LEAD: Duration = Duration::from_secs(2);
/// The backlog is due between one and three days ahead.
const BACKLOG_FIRST: Duration = Duration::from_secs(24 * 3600);
const BACKLOG_SPREAD: Duration = Duration::from_secs(2 * 24 * 3600);
/// How long after the last trickle job is due the run waits for stragglers.
const GRACE: Duration = Duration::from_secs(30);

pub async fn run(plan: &Plan, progress: Progress) -> anyhow::Result<Report> {
    let jobs = plan.jobs;
    // Index 0 is due at the restart, 1..=TRICKLE_JOBS are spread, the backlog follows.
    let trickle = 0..TRICKLE_JOBS + 1;
    let backlog = trickle.end..trickle.end + jobs;
    let opened = store::open(&plan.store, &plan.postgres()).await?;
    let store = opened.store.clone();
    let clock = opened.clock.clone();
    let mut report = plan.report();

    let inserting = progress.bar("backlog", jobs as u64);
    let backlog_first = clock.now().add(BACKLOG_FIRST);
    let backlog_start = backlog.start;
    let took = insert_jobs(
        &*store,
        &*clock,
        backlog,
        |index, _| spread_at(backlog_first, BACKLOG_SPREAD, index - backlog_start, jobs),
        &JobOptions::default(),
        &inserting,
    )
    .await?;
    report.enqueue_per_s = rate(jobs as u64, took);

    let trickle_first = clock.now().add(TRICKLE_LEAD);
    insert_jobs(
        &*store,
        &*clock,
        trickle.clone(),
        |index, now| match index {
            0 => now,
            _ => spread_at(trickle_first, plan.spread, index - 1, TRICKLE_JOBS),
        },
        &JobOptions::default(),
        &progress.bar("trickle", trickle.len() as u64),
    )
    .await?;

    // What a metrics scrape (or GET /v1/queues) asks the store, with the backlog stored: it
    // must not scan the jobs.
    let asked = Instant::now();
    store.counts().await.context("counting the jobs")?;
    store
        .queue_stats(clock.now())
        .await
        .context("reading the queue stats")?;
    report.stats_ms = Some(asked.elapsed().as_secs_f64() * 1_000.0);

    // The restart: close the store and open it again (a memory store has nothing to reopen and
    // is kept), then start a fresh engine. PostgreSQL's reopening includes a fresh measure of
    // the database clock, as a node starting up does.
    let restarted = Instant::now();
    let (opened, store, clock) = match &plan.store {
        BenchStore::Memory => (opened, store, clock),
        BenchStore::Url(_) => {
            let mut opened = opened;
            let reopened = match &opened.path {
                Some(path) => BenchStore::Url(StoreUrl::Sqlite(Some(path.clone()))),
                None => plan.store.clone(),
            };
            // A temporary SQLite file must outlive its first opening.
            let temp = opened.temp.take();
            drop(store);
            opened.close().await;
            let mut opened = store::open(&reopened, &plan.postgres())
                .await
                .context("reopening the store for the restart")?;
            opened.temp = temp;
            let store = opened.store.clone();
            let clock = opened.clock.clone();
            (opened, store, clock)
        }
    };
    let tally = Arc::new(RunTally::new(trickle.len()));
    let events = Arc::new(EventCounter::new(trickle.len()));
    let config = punctual::Config {
        concurrency: plan.concurrency,
        ..punctual::Config::default()
    };
    let observed = events.clone();
    let scheduler = Scheduler::builder(store.clone())
        .clock(clock.clone())
        .config(config)
        .handler(KIND, tally::handler(tally.clone(), clock.clone()))
        .observer(move |event| observed.observe(event))
        .build()
        .context("building the scheduler")?;
    scheduler.start().context("starting the scheduler")?;

    let working = progress.bar("trickle", trickle.len() as u64);
    let deadline = restarted + TRICKLE_LEAD + plan.spread + GRACE;
    let all_done = wait_until(deadline, &working, || {
        let succeeded = events.succeeded();
        (succeeded as u64, succeeded >= trickle.len())
    })
    .await;
    scheduler.stop().await;

    report.start_to_first_fire_ms = tally
        .first_start()
        .map(|first| (first - restarted).as_secs_f64() * 1000.0);
    let outcome = tally.outcome(trickle.clone());
    report.lost = outcome.lost;
    report.duplicates = outcome.duplicates;
    report.lateness_ms = Lateness::of(tally.outcome(1..trickle.end).lateness_ms);
    report.stale_completions_refused = Some(events.lease_lost());
    report.store_errors = Some(events.store_errors());
    // PostgreSQL's figure is filled in from the table's size once the run is over.
    report.store_bytes_per_job = opened
        .path
        .as_deref()
        .map(|path| sqlite_bytes(path) as f64 / (jobs + trickle.len()) as f64);
    if !all_done {
        report.problems.push(format!(
            "only {} of {} trickle completions were stored by {:.0} s after the last was due",
            events.succeeded(),
            trickle.len(),
            GRACE.as_secs_f64()
        ));
    }
    super::note_engine_trouble(&mut report, &events, &tally);
    drop(scheduler);
    drop(store);
    opened.close().await;
    Ok(report)
}
