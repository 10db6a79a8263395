//! The benchmark's arithmetic: percentiles, lateness summaries, rates, and the classification of
//! duplicate runs into explained and unexplained.
//!
//! Pure functions over plain data, so they are tested without an engine, a store or a clock. This
//! module must not measure anything itself (no clocks, no I/O).

use std::collections::HashMap;
use std::time::Duration;

use punctual_core::JobId;
use serde::Serialize;

/// The nearest-rank percentile `p` (in percent, `0.0 < p <= 100.0`) of `sorted`, which must be in
/// ascending order. `None` for an empty slice.
///
/// Nearest rank: the smallest value such that at least `p` percent of the values are at or below
/// it, so the result is always one of the samples (never an interpolation).
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let count = sorted.len();
    // The exact rank is p/100 * count rounded up. Percentages such as 99.9 are not exact in
    // binary, so the product can land a hair above a whole number (999.0000000000001 for 99.9 %
    // of 1,000) and round up one rank too far; the epsilon, far below one rank for any count we
    // hold (at most ten million samples), absorbs that.
    let exact = p.clamp(0.0, 100.0) / 100.0 * count as f64;
    let rank = (exact - 1e-6).ceil() as usize;
    let index = rank.clamp(1, count) - 1;
    Some(sorted[index])
}

/// Lateness percentiles in milliseconds, as reported in `lateness_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Lateness {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Lateness {
    /// The summary of `samples` (milliseconds, any order); `None` when there are none.
    pub fn of(mut samples: Vec<f64>) -> Option<Lateness> {
        samples.sort_by(f64::total_cmp);
        Some(Lateness {
            p50: percentile(&samples, 50.0)?,
            p99: percentile(&samples, 99.0)?,
            p999: percentile(&samples, 99.9)?,
            max: *samples.last()?,
        })
    }
}

/// `count` per second over `took`; `None` when no time passed (the rate would be infinite).
pub fn rate(count: u64, took: Duration) -> Option<f64> {
    let seconds = took.as_secs_f64();
    (seconds > 0.0).then(|| count as f64 / seconds)
}

/// One run of a job in the crash and cluster workloads: a webhook the benchmark's receiver got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// The job's index in this benchmark (its payload).
    pub index: usize,
    pub attempt: u32,
    pub token: u64,
    /// The node that sent it (its sender number).
    pub node: u32,
    pub id: JobId,
    /// When the attempt was due (to the millisecond, as the webhook says), and when the
    /// webhook arrived, on the benchmark's clock (the database's in cluster mode), in
    /// microseconds since the Unix epoch.
    pub run_at_us: i64,
    pub received_us: i64,
    /// When the sender's lease on this attempt ran out as confirmed when the handler started
    /// (the `punctual-lease-expires-at` header), and when the receiver answered; on the same
    /// clocks as the above.
    pub lease_expires_us: Option<i64>,
    pub answered_us: Option<i64>,
}

/// The latest instant `run`'s lease can have lasted until, given that its holder stopped
/// (killed, or paused) at `stopped_us`, that holders renew every `heartbeat_us` while a
/// handler runs, and that a renewal lasts `lease_us`; `None` when that cannot be told.
///
/// A handler that was answered before a heartbeat can have fallen due (the first comes a
/// heartbeat after the start, which is not before `run_at`) was never renewed: its lease ran
/// out when the header says. Otherwise a renewal may have come up to the moment its holder
/// stopped, and lasted a lease from then.
pub fn lease_end_bound(
    run: &Run,
    stopped_us: Option<i64>,
    heartbeat_us: i64,
    lease_us: i64,
) -> Option<i64> {
    /// Room for the answer to reach the holder before its first heartbeat.
    const ANSWER_MARGIN_US: i64 = 1_000;
    let confirmed = run.lease_expires_us?;
    let answered_early = run
        .answered_us
        .is_some_and(|answered| answered + ANSWER_MARGIN_US < run.run_at_us + heartbeat_us);
    if answered_early {
        return Some(confirmed);
    }
    stopped_us.map(|stopped| confirmed.max(stopped + lease_us))
}

/// What the runs of a set of jobs add up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Distinct jobs that ran at least once.
    pub jobs_run: u64,
    /// Runs beyond the first, over all jobs.
    pub duplicates: u64,
    /// Duplicates that followed a run whose holder lost its lease for a reason the workload
    /// caused (killed, or paused past its lease), under a larger lease token, and that arrived
    /// after that lease had provably run out: the job was claimed anew after it expired, as it
    /// should be.
    pub explained: u64,
    /// Duplicates that arrived before the lease of the run before them had run out, by the
    /// lease its holder was confirmed when it started: a rerun the store allowed too early.
    pub before_lease_expiry: u64,
}

/// Counts the runs of each job and classifies every run after a job's first.
///
/// A job's runs are taken in lease-token order (tokens grow with each claim of a job). A later
/// run is explained when `lease_end` says the run before it was made by a holder that lost its
/// lease (a killed process; a paused one) and gives the latest its lease can have lasted
/// (`lease_end_bound`), the later run arrived after that, and its token is strictly larger. Two
/// runs under one token, a second run after a holder that kept its lease, or one that may have
/// started while the earlier lease still held, are unexplained.
pub fn classify_runs(runs: &[Run], lease_end: impl Fn(&Run) -> Option<i64>) -> RunCounts {
    let mut sorted = runs.to_vec();
    sorted.sort_by_key(|run| (run.index, run.token, run.attempt, run.node));
    let mut counts = RunCounts::default();
    let mut previous: Option<&Run> = None;
    for run in &sorted {
        match previous {
            Some(earlier) if earlier.index == run.index => {
                counts.duplicates += 1;
                let after_lease = lease_end(earlier).is_some_and(|end| run.received_us > end);
                if after_lease && run.token > earlier.token {
                    counts.explained += 1;
                }
                if earlier
                    .lease_expires_us
                    .is_some_and(|expiry| run.received_us <= expiry)
                {
                    counts.before_lease_expiry += 1;
                }
            }
            _ => counts.jobs_run += 1,
        }
        previous = Some(run);
    }
    counts
}

/// The lateness of each job's first run (the one under its smallest lease token), in
/// milliseconds: arrival minus `run_at`, both on the benchmark's clock.
pub fn first_run_lateness_ms(runs: &[Run]) -> Vec<f64> {
    let mut first: HashMap<usize, &Run> = HashMap::new();
    for run in runs {
        let earliest = first.entry(run.index).or_insert(run);
        if run.token < earliest.token {
            *earliest = run;
        }
    }
    first
        .values()
        .map(|run| run.received_us.saturating_sub(run.run_at_us) as f64 / 1000.0)
        .collect()
}

/// Runs that arrived after the same job had already arrived under a larger lease token: a
/// holder that kept running (a paused node resumed) sent a webhook under a lease that had
/// expired and been taken over meanwhile. Such a run's outcome is refused, but the webhook was
/// sent: an extra execution the engine could avoid by checking its lease before starting.
pub fn runs_after_takeover(runs: &[Run]) -> u64 {
    let mut runs_by_job: HashMap<JobId, Vec<&Run>> = HashMap::new();
    for run in runs {
        runs_by_job.entry(run.id).or_default().push(run);
    }
    runs_by_job
        .values()
        .map(|job_runs| {
            job_runs
                .iter()
                .filter(|run| {
                    job_runs
                        .iter()
                        .any(|other| other.token > run.token && other.received_us < run.received_us)
                })
                .count() as u64
        })
        .sum()
}

/// Completions the store accepted from a holder whose lease had already moved on: a job the
/// store shows succeeded under a lease token (`completions`: job, token) smaller than one a run
/// of it carried. The completion a store accepts keeps the token of the claim it completed, and
/// every later claim takes a larger one, so this must be 0.
pub fn stale_completions_accepted(runs: &[Run], completions: &[(JobId, u64)]) -> u64 {
    let mut last_token: HashMap<JobId, u64> = HashMap::new();
    for run in runs {
        let last = last_token.entry(run.id).or_insert(run.token);
        *last = (*last).max(run.token);
    }
    completions
        .iter()
        .filter(|(id, token)| last_token.get(id).is_some_and(|last| last > token))
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_nothing_is_none() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(Lateness::of(Vec::new()), None);
    }

    #[test]
    fn percentile_of_one_sample_is_that_sample() {
        for p in [0.0, 1.0, 50.0, 99.9, 100.0] {
            assert_eq!(percentile(&[7.5], p), Some(7.5));
        }
    }

    #[test]
    fn percentile_uses_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 99.9), Some(100.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        assert_eq!(percentile(&values, 0.0), Some(1.0));
        // Out-of-range percentages are clamped rather than indexing out of bounds.
        assert_eq!(percentile(&values, 250.0), Some(100.0));
        assert_eq!(percentile(&values, -3.0), Some(1.0));
        let four = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&four, 50.0), Some(2.0));
        assert_eq!(percentile(&four, 50.1), Some(3.0));
    }

    #[test]
    fn lateness_sorts_its_samples_and_keeps_negative_ones() {
        let lateness = Lateness::of(vec![3.0, -0.5, 1.0, 2.0]).expect("four samples");
        assert_eq!(lateness.p50, 1.0);
        assert_eq!(lateness.p99, 3.0);
        assert_eq!(lateness.max, 3.0);
        let lateness = Lateness::of((0..1000).rev().map(f64::from).collect()).expect("samples");
        assert_eq!(lateness.p50, 499.0);
        assert_eq!(lateness.p99, 989.0);
        assert_eq!(lateness.p999, 998.0);
        assert_eq!(lateness.max, 999.0);
    }

    #[test]
    fn a_rate_over_no_time_is_none() {
        assert_eq!(rate(10, Duration::ZERO), None);
        assert_eq!(rate(10, Duration::from_millis(500)), Some(20.0));
    }

    fn run(index: usize, token: u64, node: u32) -> Run {
        Run {
            index,
            attempt: u32::try_from(token).unwrap_or(u32::MAX),
            token,
            node,
            id: id(index),
            run_at_us: 0,
            // Each run an hour after the one before, its lease over long before.
            received_us: token as i64 * 3_600_000_000,
            lease_expires_us: Some(token as i64 * 3_600_000_000 + 1_000_000),
            answered_us: Some(token as i64 * 3_600_000_000),
        }
    }

    fn id(index: usize) -> JobId {
        format!("0190f3c2-0000-7000-8000-{index:012}")
            .parse()
            .expect("a job id")
    }

    /// The lease end of runs by `nodes`, killed at once; `None` for other nodes.
    fn killed(nodes: &[u32]) -> impl Fn(&Run) -> Option<i64> {
        let nodes = nodes.to_vec();
        move |run: &Run| {
            nodes
                .contains(&run.node)
                .then(|| lease_end_bound(run, Some(run.received_us), 500_000, 1_000_000))
                .flatten()
        }
    }

    #[test]
    fn single_runs_are_not_duplicates() {
        let counts = classify_runs(&[run(0, 1, 10), run(1, 1, 10)], killed(&[]));
        assert_eq!(
            counts,
            RunCounts {
                jobs_run: 2,
                duplicates: 0,
                explained: 0,
                before_lease_expiry: 0,
            }
        );
    }

    #[test]
    fn a_rerun_after_a_killed_holder_with_a_larger_token_is_explained() {
        // Logged out of order on purpose: classification orders by token, not by log position.
        let counts = classify_runs(&[run(0, 2, 11), run(0, 1, 10)], killed(&[10]));
        assert_eq!(counts.jobs_run, 1);
        assert_eq!(counts.duplicates, 1);
        assert_eq!(counts.explained, 1);
        assert_eq!(counts.duplicates - counts.explained, 0);
    }

    #[test]
    fn a_rerun_before_the_killed_holder_s_lease_ran_out_is_unexplained_and_reported() {
        let first = run(0, 1, 10);
        let mut early = run(0, 2, 11);
        // Arrived half a second into the first run's one-second lease.
        early.received_us = first.received_us + 500_000;
        let counts = classify_runs(&[first, early], killed(&[10]));
        assert_eq!(counts.duplicates, 1);
        assert_eq!(counts.explained, 0);
        assert_eq!(counts.before_lease_expiry, 1);
    }

    #[test]
    fn a_holder_that_may_have_renewed_is_judged_by_when_it_stopped() {
        // Answered after its first heartbeat could have fallen due: it may have renewed until
        // it was killed, two seconds after it started, and that renewal lasted a lease.
        let mut long = run(0, 1, 10);
        long.answered_us = Some(long.received_us + 600_000);
        let killed_us = long.received_us + 2_000_000;
        let bound = lease_end_bound(&long, Some(killed_us), 500_000, 1_000_000);
        assert_eq!(bound, Some(killed_us + 1_000_000));
        // Without a known stop, nothing can be told.
        assert_eq!(lease_end_bound(&long, None, 500_000, 1_000_000), None);
        let mut rerun = run(0, 2, 11);
        rerun.received_us = killed_us + 500_000;
        let counts = classify_runs(&[long, rerun], |run: &Run| {
            lease_end_bound(run, Some(killed_us), 500_000, 1_000_000)
        });
        assert_eq!((counts.explained, counts.before_lease_expiry), (0, 0));
        rerun.received_us = killed_us + 1_000_001;
        let counts = classify_runs(&[long, rerun], |run: &Run| {
            lease_end_bound(run, Some(killed_us), 500_000, 1_000_000)
        });
        assert_eq!(counts.explained, 1);
    }

    #[test]
    fn a_rerun_after_a_live_holder_is_unexplained() {
        let counts = classify_runs(&[run(0, 1, 10), run(0, 2, 11)], killed(&[99]));
        assert_eq!(counts.duplicates, 1);
        assert_eq!(counts.duplicates - counts.explained, 1);
    }

    #[test]
    fn two_runs_under_one_token_are_unexplained_even_after_a_kill() {
        let counts = classify_runs(&[run(0, 3, 10), run(0, 3, 11)], killed(&[10]));
        assert_eq!(counts.duplicates, 1);
        assert_eq!(counts.duplicates - counts.explained, 1);
    }

    #[test]
    fn chains_of_reruns_are_judged_pair_by_pair() {
        let runs = [run(4, 1, 10), run(4, 2, 11), run(4, 3, 12), run(4, 4, 13)];
        let counts = classify_runs(&runs, killed(&[10, 11]));
        assert_eq!(counts.jobs_run, 1);
        assert_eq!(counts.duplicates, 3);
        // 10 -> 11 and 11 -> 12 follow killed holders; 12 -> 13 follows a live one.
        assert_eq!(counts.explained, 2);
        assert_eq!(counts.duplicates - counts.explained, 1);
    }

    #[test]
    fn lateness_is_taken_from_each_job_s_first_run() {
        let mut late = run(0, 1, 10);
        late.run_at_us = 1_000;
        late.received_us = 3_500;
        let mut rerun = run(0, 2, 11);
        rerun.received_us = 2_000_000;
        let mut on_time = run(1, 1, 10);
        on_time.run_at_us = 5_000;
        on_time.received_us = 5_000;
        let mut lateness = first_run_lateness_ms(&[rerun, late, on_time]);
        lateness.sort_by(f64::total_cmp);
        assert_eq!(lateness, vec![0.0, 2.5]);
    }

    #[test]
    fn a_run_after_a_takeover_is_counted() {
        let mut stale = run(0, 1, 10);
        stale.received_us = 9_000;
        let mut takeover = run(0, 2, 11);
        takeover.received_us = 7_000;
        assert_eq!(runs_after_takeover(&[stale, takeover]), 1);
        // In the usual order, the earlier holder's run comes first.
        stale.received_us = 5_000;
        assert_eq!(runs_after_takeover(&[stale, takeover]), 0);
    }

    #[test]
    fn a_completion_is_stale_when_the_job_ran_again_under_a_larger_token() {
        let runs = [run(0, 1, 10), run(0, 2, 11), run(1, 1, 10)];
        // The rerun's completion and a lone run's completion are fine.
        assert_eq!(
            stale_completions_accepted(&runs, &[(id(0), 2), (id(1), 1)]),
            0
        );
        // The first holder's completion of job 0, accepted, is not.
        assert_eq!(stale_completions_accepted(&runs, &[(id(0), 1)]), 1);
        // A completion of a job nobody received is not judged.
        assert_eq!(stale_completions_accepted(&runs, &[(id(7), 1)]), 0);
    }
}
