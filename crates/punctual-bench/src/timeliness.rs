//! The timeliness workload: N no-op jobs due at distinct instants spread evenly over the spread,
//! starting 1 s ahead, all inserted before the engine starts; reports how late each handler
//! started. The burst workload is the same with every job due at the one instant 1 s ahead
//! ("10,000 reminders at 09:00"), and reports the first start's lateness too.
//!
//! Lateness is the handler's start minus the job's `run_at`, both read on the engine's clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use punctual::{JobOptions, Scheduler};

use super::progress::Progress;
use super::report::Report;
use super::stats::{Lateness, rate};
use super::store;
use super::tally::{self, EventCounter, RunTally};
use super::{KIND, Plan, insert_jobs, spread_at, wait_until};

/// How far ahead the first job is due when insertion starts.
const LEAD: Duration = Duration::from_secs(1);
/// How long after the last job is due the run waits for stragglers.
const GRACE: Duration = Duration::from_secs(30);

pub async fn run(plan: &Plan, progress: Progress) -> anyhow::Result<Report> {
    let jobs = plan.jobs;
    let opened = store::open(&plan.store, &plan.postgres()).await?;
    let store = opened.store.clone();
    // The database's clock for PostgreSQL, so lateness is judged where `run_at` is.
    let clock = opened.clock.clone();
    let mut report = plan.report();

    let started = Instant::now();
    let first_due = clock.now().add(LEAD);
    let inserting = progress.bar("insert", jobs as u64);
    let took = insert_jobs(
        &*store,
        &*clock,
        0..jobs,
        |index, _| {
            if plan.workload == super::Workload::Burst {
                first_due
            } else {
                spread_at(first_due, plan.spread, index, jobs)
            }
        },
        &JobOptions::default(),
        &inserting,
    )
    .await?;
    report.enqueue_per_s = rate(jobs as u64, took);
    if took > LEAD {
        eprintln!(
            "warning: inserting took {:.2} s, longer than the {} s lead: the first jobs were \
             due before the engine started",
            took.as_secs_f64(),
            LEAD.as_secs()
        );
    }

    let tally = Arc::new(RunTally::new(jobs));
    let events = Arc::new(EventCounter::new(jobs));
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

    let working = progress.bar("due", jobs as u64);
    let deadline = started + LEAD + took + plan.spread + GRACE;
    let all_done = wait_until(deadline, &working, || {
        let succeeded = events.succeeded();
        (succeeded as u64, succeeded >= jobs)
    })
    .await;
    scheduler.stop().await;

    let outcome = tally.outcome(0..jobs);
    report.lateness_first_ms = outcome.lateness_ms.iter().copied().min_by(f64::total_cmp);
    report.lateness_ms = Lateness::of(outcome.lateness_ms);
    report.lost = outcome.lost;
    report.duplicates = outcome.duplicates;
    report.stale_completions_refused = Some(events.lease_lost());
    report.store_errors = Some(events.store_errors());
    if !all_done {
        report.problems.push(format!(
            "only {} of {jobs} completions were stored by {:.0} s after the last job was due",
            events.succeeded(),
            GRACE.as_secs_f64()
        ));
    }
    super::note_engine_trouble(&mut report, &events, &tally);
    drop(scheduler);
    drop(store);
    opened.close().await;
    Ok(report)
}
