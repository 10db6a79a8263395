//! The schedule workloads: N stored schedules, each making its occurrences into jobs through the
//! leader's materializer, worked by a no-op handler.
//!
//! - `schedules`: each schedule fires every minute, at second `index % 60` of it (so about
//!   N / 60 occurrences fall due every second), for `--duration-s` (default 300); reports the
//!   lateness of every occurrence's start, and checks each schedule's ledger: every
//!   occurrence between the first and the last fired once (none lost, none doubled, none
//!   skipped), and each one's job ran once.
//! - `schedule-burst`: every schedule's first occurrence is the same second, a few seconds
//!   after they are all stored ("10,000 reminders at 09:00", as schedules); reports the
//!   lateness of the first start and of the last.
//!
//! Lateness is the handler's start minus the occurrence's time, both on the engine's clock
//! (the job's `run_at` is the occurrence: no jitter).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use punctual::{
    BoxError, JobContext, JobId, JobTemplate, OccurrenceOutcome, ScheduleDefinition, ScheduleName,
    Scheduler, Store, StoredSchedule, Timestamp,
};
use punctual_core::{Kind, Payload, Schedule, ScheduleWrite, WriteOutcome, limits};

use super::Workload;
use super::progress::Progress;
use super::report::Report;
use super::stats::Lateness;
use super::store;
use super::tally::EventCounter;
use super::{KIND, Plan, wait_until};

/// How long after the schedules are stored the burst's occurrence falls due, at least; and when
/// the schedules workload's occurrences begin.
const BURST_LEAD: Duration = Duration::from_secs(5);
/// How long after the run's end it waits for the last occurrences' jobs.
const GRACE: Duration = Duration::from_secs(30);

/// Every start: the job, its `run_at`, and when it started.
#[derive(Default)]
struct Starts(Mutex<Vec<(JobId, Timestamp, Timestamp)>>);

pub async fn run(plan: &Plan, progress: Progress) -> anyhow::Result<Report> {
    let count = plan.jobs;
    let opened = store::open(&plan.store, &plan.postgres()).await?;
    let store = opened.store.clone();
    let clock = opened.clock.clone();
    let mut report = plan.report();
    let burst = plan.workload == Workload::ScheduleBurst;

    // The burst's occurrence: a whole second far enough ahead to store every schedule first.
    let created = clock.now();
    let due_at =
        Timestamp::from_micros((created.add(BURST_LEAD).as_micros() / 1_000_000 + 1) * 1_000_000);
    let storing = progress.bar("store schedules", count as u64);
    let stored_in = Instant::now();
    for first in (0..count).step_by(limits::SCHEDULE_BATCH_MAX) {
        let now = clock.now();
        let writes = (first..count.min(first + limits::SCHEDULE_BATCH_MAX))
            .map(|index| {
                let mut definition = definition(index, burst.then_some(due_at))?;
                // Occurrences begin once the engine runs: none is due before it starts.
                definition.start_at = Some(due_at);
                Ok(ScheduleWrite::of(
                    StoredSchedule::create(definition, now),
                    None,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let written = writes.len();
        let outcomes = store
            .write_schedules(None, writes, now)
            .await
            .context("storing the schedules")?;
        if outcomes
            .iter()
            .any(|outcome| *outcome != WriteOutcome::Applied)
        {
            bail!("a schedule could not be stored (a name taken?)");
        }
        storing.inc(written as u64);
    }
    storing.finish_and_clear();
    let stored_took = stored_in.elapsed();
    report.enqueue_per_s = super::stats::rate(count as u64, stored_took);
    if burst && clock.now() >= due_at {
        eprintln!("warning: storing the schedules took past their first occurrence");
    }

    let starts = Arc::new(Starts::default());
    let events = Arc::new(EventCounter::new(usize::MAX));
    let recorded = starts.clone();
    let handler_clock = clock.clone();
    let observed = events.clone();
    let scheduler = Scheduler::builder(store.clone())
        .clock(clock.clone())
        .config(punctual::Config {
            concurrency: plan.concurrency,
            ..punctual::Config::default()
        })
        .handler(KIND, move |job: JobContext| {
            let now = handler_clock.now();
            recorded
                .0
                .lock()
                .expect("no panic under the lock")
                .push((job.id, job.run_at, now));
            std::future::ready(Ok::<(), BoxError>(()))
        })
        .observer(move |event| observed.observe(event))
        .build()
        .context("building the scheduler")?;
    scheduler.start().context("starting the scheduler")?;
    let started = Instant::now();

    let (end, expected_total) = if burst {
        (due_at, count)
    } else {
        let end = clock.now().add(plan.duration);
        (end, 0)
    };
    let working = progress.bar("occurrences", expected_total.max(1) as u64);
    let deadline = started + end.duration_since(clock.now()) + GRACE;
    if burst {
        wait_until(deadline, &working, || {
            let done = starts.0.lock().expect("no panic under the lock").len();
            (done as u64, done >= count)
        })
        .await;
    } else {
        let run_end = started + plan.duration;
        wait_until(run_end, &working, || {
            let done = starts.0.lock().expect("no panic under the lock").len();
            (done as u64, false)
        })
        .await;
    }
    // Occurrences due from here on may be handed back unstarted by the stop.
    let stopping_at = clock.now();
    scheduler.stop().await;

    let starts = std::mem::take(&mut *starts.0.lock().expect("no panic under the lock"));
    // Each job's runs, and its first start.
    let mut runs: BTreeMap<JobId, (u32, Timestamp)> = BTreeMap::new();
    for (job, _, start) in &starts {
        let run = runs.entry(*job).or_insert((0, *start));
        run.0 += 1;
        run.1 = run.1.min(*start);
    }
    report.duplicates = runs.values().map(|(runs, _)| u64::from(runs - 1)).sum();
    report.jobs = starts.len() as u64;
    let lateness: Vec<f64> = if burst {
        report.lost = (count as u64).saturating_sub(runs.len() as u64);
        starts
            .iter()
            .map(|(_, run_at, start)| start.micros_since(*run_at) as f64 / 1_000.0)
            .collect()
    } else {
        // The ledger: every schedule's occurrences, fired once each, with no gap, each job's
        // start measured from its occurrence (a job fired late runs at once, after its time).
        let checking = progress.bar("check ledgers", count as u64);
        let mut lost = 0u64;
        let mut lateness = Vec::with_capacity(starts.len());
        for index in 0..count {
            let checked = check_ledger(&*store, index, &runs, stopping_at).await?;
            lost += checked.missing + checked.unrun;
            report.duplicates += checked.doubled;
            lateness.extend(checked.lateness_ms);
            checking.inc(1);
        }
        checking.finish_and_clear();
        report.lost = lost;
        lateness
    };
    report.lateness_first_ms = lateness.iter().copied().min_by(f64::total_cmp);
    report.lateness_ms = Lateness::of(lateness);
    report.store_errors = Some(events.store_errors());
    if events.failed() > 0 {
        report
            .problems
            .push(format!("{} attempts failed", events.failed()));
    }
    drop(scheduler);
    drop(store);
    opened.close().await;
    Ok(report)
}

/// Schedule `index`: every minute at second `index % 60`, or (burst) once a day at `burst`.
fn definition(index: usize, burst: Option<Timestamp>) -> anyhow::Result<ScheduleDefinition> {
    let expression = match burst {
        None => format!("{} * * * * *", index % 60),
        Some(at) => {
            let of_day = (at.as_micros() / 1_000_000).rem_euclid(86_400);
            format!(
                "{} {} {} * * *",
                of_day % 60,
                of_day / 60 % 60,
                of_day / 3600
            )
        }
    };
    let template = JobTemplate::new(
        Kind::new(KIND)?,
        Payload::from_json_text(&index.to_string())?,
    );
    Ok(ScheduleDefinition::new(
        ScheduleName::new(&format!("bench-{index:07}"))?,
        Schedule::cron(&expression, "UTC")?,
        template,
    ))
}

/// What one schedule's ledger showed.
struct Checked {
    /// Occurrences missing (a gap or a skip) or failed.
    missing: u64,
    doubled: u64,
    /// Fired a second or more before the engine began to stop (`stopping_at`), never run.
    unrun: u64,
    /// Each run occurrence's first start minus its time.
    lateness_ms: Vec<f64>,
}

/// Checks schedule `index`'s ledger: occurrences fired once each, a minute apart, none skipped,
/// each one's job run.
async fn check_ledger(
    store: &dyn Store,
    index: usize,
    runs: &BTreeMap<JobId, (u32, Timestamp)>,
    stopping_at: Timestamp,
) -> anyhow::Result<Checked> {
    let name = ScheduleName::new(&format!("bench-{index:07}"))?;
    let schedule = store
        .get_schedule(&punctual::ScheduleKey::Name(name))
        .await?
        .context("a stored schedule is gone")?;
    let entries = store
        .list_occurrences(schedule.id, None, limits::PAGE_SIZE_MAX)
        .await?;
    let mut checked = Checked {
        missing: 0,
        doubled: 0,
        unrun: 0,
        lateness_ms: Vec::new(),
    };
    let mut fired: Vec<(Timestamp, JobId)> = Vec::new();
    for entry in entries.iter().rev() {
        match entry.outcome {
            OccurrenceOutcome::Fired { job, .. } => fired.push((entry.at, job)),
            OccurrenceOutcome::Skipped { count, .. } => checked.missing += count,
            OccurrenceOutcome::Failed { .. } => checked.missing += 1,
        }
    }
    for pair in fired.windows(2) {
        let gap = pair[1].0.micros_since(pair[0].0);
        if gap <= 0 {
            checked.doubled += 1;
        } else if gap > 60_000_000 {
            checked.missing += u64::try_from(gap / 60_000_000 - 1).unwrap_or(0);
        }
    }
    let cutoff = stopping_at.sub(Duration::from_secs(1));
    for (at, job) in &fired {
        match runs.get(job) {
            Some((_, start)) => checked
                .lateness_ms
                .push(start.micros_since(*at) as f64 / 1_000.0),
            None if *at < cutoff => checked.unrun += 1,
            None => {}
        }
    }
    if fired.is_empty() {
        checked.missing += 1;
    }
    Ok(checked)
}
