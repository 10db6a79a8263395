//! The throughput workload: insert N no-op jobs due now, then work them all.
//!
//! `enqueue_per_s` is N over the insert phase; `worked_per_s` is N over the time from starting
//! the engine until the N-th completion was acknowledged by the store (the engine emits
//! `Succeeded` only then), so it counts claim, run and durable completion end to end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use punctual::{Config, JobOptions, Scheduler};

use super::progress::Progress;
use super::report::Report;
use super::stats::rate;
use super::store;
use super::tally::{self, EventCounter, RunTally};
use super::{KIND, Plan, insert_jobs, wait_until};

/// Jobs handed out by one claim.
const CLAIM_BATCH: usize = 1_000;

pub async fn run(plan: &Plan, progress: Progress) -> anyhow::Result<Report> {
    let jobs = plan.jobs;
    let opened = store::open(&plan.store, &plan.postgres()).await?;
    let store = opened.store.clone();
    // The database's clock for PostgreSQL, so lateness is judged where `run_at` is.
    let clock = opened.clock.clone();
    let mut report = plan.report();

    let inserting = progress.bar("insert", jobs as u64);
    let took = insert_jobs(
        &*store,
        &*clock,
        0..jobs,
        |_, now| now,
        &JobOptions::default(),
        &inserting,
    )
    .await?;
    report.enqueue_per_s = rate(jobs as u64, took);

    let tally = Arc::new(RunTally::new(jobs));
    let events = Arc::new(EventCounter::new(jobs));
    let config = Config {
        concurrency: plan.concurrency,
        claim_batch: CLAIM_BATCH,
        ..Config::default()
    };
    let observed = events.clone();
    let scheduler = Scheduler::builder(store.clone())
        .clock(clock.clone())
        .config(config)
        .handler(KIND, tally::handler(tally.clone(), clock.clone()))
        .observer(move |event| observed.observe(event))
        .build()
        .context("building the scheduler")?;

    let working = progress.bar("work", jobs as u64);
    let started = Instant::now();
    scheduler.start().context("starting the scheduler")?;
    // Generous: a slow debug build on a loaded machine still works 1,000 jobs a second.
    let deadline = started + Duration::from_secs(60) + Duration::from_millis(jobs as u64);
    let all_done = wait_until(deadline, &working, || {
        let succeeded = events.succeeded();
        (succeeded as u64, succeeded >= jobs)
    })
    .await;
    let worked_took = events
        .all_succeeded_at()
        .map_or_else(|| started.elapsed(), |at| at - started);
    scheduler.stop().await;

    let outcome = tally.outcome(0..jobs);
    let completed = events.succeeded();
    report.worked_per_s = rate(completed as u64, worked_took);
    report.lost = outcome.lost;
    report.duplicates = outcome.duplicates;
    report.stale_completions_refused = Some(events.lease_lost());
    report.store_errors = Some(events.store_errors());
    if !all_done {
        report.problems.push(format!(
            "only {completed} of {jobs} completions were stored within {:.0} s",
            (deadline - started).as_secs_f64()
        ));
    }
    super::note_engine_trouble(&mut report, &events, &tally);
    drop(scheduler);
    drop(store);
    opened.close().await;
    Ok(report)
}
