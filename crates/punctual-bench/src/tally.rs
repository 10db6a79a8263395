//! What an in-process workload records while the engine works: how often each job ran, how late
//! its first run started, and the engine's events.
//!
//! Owns the benchmark's handler and observer. Both run on the engine's hot path, so they only
//! touch pre-sized atomics (no locks, no allocation per job). Must not decide what the numbers
//! mean: that is `stats`.

use std::ops::Range;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use punctual::{BoxError, Clock, Event, Handler, JobContext};

/// Marks a job whose handler has not started yet.
const NO_SAMPLE: i64 = i64::MIN;

/// Per-job run counts and first-run lateness, indexed by the job's payload (its index).
pub struct RunTally {
    runs: Vec<AtomicU32>,
    first_lateness_us: Vec<AtomicI64>,
    /// Runs whose payload was not an index of this tally.
    strays: AtomicU64,
    /// When the first handler of any job started.
    first_start: OnceLock<Instant>,
}

/// The runs of a range of jobs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunOutcome {
    pub jobs: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Lateness of each job's first run, in milliseconds, in index order.
    pub lateness_ms: Vec<f64>,
}

impl RunTally {
    pub fn new(jobs: usize) -> RunTally {
        RunTally {
            runs: (0..jobs).map(|_| AtomicU32::new(0)).collect(),
            first_lateness_us: (0..jobs).map(|_| AtomicI64::new(NO_SAMPLE)).collect(),
            strays: AtomicU64::new(0),
            first_start: OnceLock::new(),
        }
    }

    /// Records a run of the job whose payload is `payload`, `lateness_us` after its `run_at`.
    pub fn record(&self, payload: &str, lateness_us: i64) {
        self.first_start.get_or_init(Instant::now);
        let index = payload
            .parse::<usize>()
            .ok()
            .filter(|index| *index < self.runs.len());
        let Some(index) = index else {
            self.strays.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.runs[index].fetch_add(1, Ordering::Relaxed) == 0 {
            self.first_lateness_us[index].store(lateness_us, Ordering::Relaxed);
        }
    }

    pub fn first_start(&self) -> Option<Instant> {
        self.first_start.get().copied()
    }

    pub fn strays(&self) -> u64 {
        self.strays.load(Ordering::Relaxed)
    }

    /// How the jobs with indexes in `indexes` (clamped to this tally) fared.
    pub fn outcome(&self, indexes: Range<usize>) -> RunOutcome {
        let end = indexes.end.min(self.runs.len());
        let start = indexes.start.min(end);
        let mut outcome = RunOutcome::default();
        for index in start..end {
            outcome.jobs += 1;
            let runs = self.runs[index].load(Ordering::Relaxed);
            if runs == 0 {
                outcome.lost += 1;
                continue;
            }
            outcome.duplicates += u64::from(runs - 1);
            let lateness_us = self.first_lateness_us[index].load(Ordering::Relaxed);
            if lateness_us != NO_SAMPLE {
                outcome.lateness_ms.push(lateness_us as f64 / 1000.0);
            }
        }
        outcome
    }
}

/// The benchmark's handler: records the run and returns at once. Lateness is read on `clock`,
/// the engine's own clock, so `run_at` and the start time come from one source.
pub fn handler(tally: Arc<RunTally>, clock: Arc<dyn Clock>) -> impl Handler {
    move |job: JobContext| {
        // The closure body runs when the engine calls the handler: that is the start time.
        let lateness_us = clock.now().micros_since(job.run_at);
        tally.record(job.payload.as_str(), lateness_us);
        std::future::ready(Ok::<(), BoxError>(()))
    }
}

/// Counts the engine's events. `Succeeded` is emitted after the store acknowledged the
/// completion, so `succeeded` counts durable completions.
pub struct EventCounter {
    /// The number of completions that means "all done".
    target: usize,
    succeeded: AtomicUsize,
    lease_lost: AtomicU64,
    failed: AtomicU64,
    store_errors: AtomicU64,
    first_store_error: Mutex<Option<String>>,
    all_succeeded: OnceLock<Instant>,
}

impl EventCounter {
    pub fn new(target: usize) -> EventCounter {
        EventCounter {
            target,
            succeeded: AtomicUsize::new(0),
            lease_lost: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            first_store_error: Mutex::new(None),
            all_succeeded: OnceLock::new(),
        }
    }

    pub fn observe(&self, event: &Event) {
        match event {
            Event::Succeeded { .. } => {
                let succeeded = self.succeeded.fetch_add(1, Ordering::Relaxed) + 1;
                if succeeded == self.target {
                    self.all_succeeded.get_or_init(Instant::now);
                }
            }
            Event::LeaseLost { .. } => {
                self.lease_lost.fetch_add(1, Ordering::Relaxed);
            }
            Event::Failed { .. } => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            Event::StoreError { operation, error } => {
                self.store_errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_store_error.lock() {
                    first.get_or_insert_with(|| format!("{operation}: {error}"));
                }
            }
            _ => {}
        }
    }

    pub fn succeeded(&self) -> usize {
        self.succeeded.load(Ordering::Relaxed)
    }

    /// When the `target`-th completion was stored.
    pub fn all_succeeded_at(&self) -> Option<Instant> {
        self.all_succeeded.get().copied()
    }

    /// Completions the store refused because the lease had moved on.
    pub fn lease_lost(&self) -> u64 {
        self.lease_lost.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn store_errors(&self) -> u64 {
        self.store_errors.load(Ordering::Relaxed)
    }

    pub fn first_store_error(&self) -> Option<String> {
        self.first_store_error
            .lock()
            .ok()
            .and_then(|first| first.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_runs_lost_jobs_duplicates_and_strays() {
        let tally = RunTally::new(4);
        assert_eq!(tally.first_start(), None);
        tally.record("0", 1_500);
        tally.record("1", -200);
        tally.record("1", 99_000);
        tally.record("3", 0);
        tally.record("7", 0);
        tally.record("\"text\"", 0);
        assert!(tally.first_start().is_some());
        assert_eq!(tally.strays(), 2);
        let outcome = tally.outcome(0..4);
        assert_eq!(outcome.jobs, 4);
        assert_eq!(outcome.lost, 1);
        assert_eq!(outcome.duplicates, 1);
        // The first run's lateness is kept, in milliseconds.
        assert_eq!(outcome.lateness_ms, vec![1.5, -0.2, 0.0]);
        assert_eq!(tally.outcome(1..100).jobs, 3);
    }

    #[test]
    fn notes_when_the_target_is_reached() {
        let counter = EventCounter::new(1);
        assert_eq!(counter.all_succeeded_at(), None);
        counter.observe(&Event::StoreError {
            operation: "claim",
            error: "busy".to_owned(),
        });
        counter.observe(&Event::Purged { count: 3 });
        assert_eq!(counter.store_errors(), 1);
        assert_eq!(counter.first_store_error().as_deref(), Some("claim: busy"));
        assert_eq!(counter.succeeded(), 0);
    }
}
