//! The checker checked: a checker that cannot fail is worthless. Forged histories break one
//! invariant each and must be caught (and a clean one, and a legal rerun after a lease expiry,
//! must not be); whole runs on a deliberately broken store must fail.

use std::time::Duration;

use punctual_core::{
    FailOutcome, Job, JobId, JobOptions, JobState, LeaderTerm, Lease, LeaseToken, NewJob, NodeId,
    Payload, Timestamp,
};
use punctual_sim::{CLIENT, Entry, History, Invariant, Mutation, Options, check, plan::START};
use punctual_testkit::fixtures;

use crate::simulate;

const END_MS: u64 = 60_000;

fn ms(millis: u64) -> Timestamp {
    START.add(Duration::from_millis(millis))
}

fn job_a() -> JobId {
    fixtures::job_id(START, 1)
}

fn job_b() -> JobId {
    fixtures::job_id(START, 2)
}

const T1: LeaseToken = LeaseToken(1);
const T2: LeaseToken = LeaseToken(2);
const TERM: LeaderTerm = LeaderTerm(1);

/// A history written by hand, in time order.
#[derive(Default)]
struct Forge {
    history: History,
}

impl Forge {
    fn at(mut self, millis: u64, entry: Entry) -> Forge {
        self.history
            .push(ms(millis), Duration::from_millis(millis), entry);
        self
    }

    /// Node 0 leads for ten seconds; job A (3 attempts, due at 100 ms) is stored and confirmed.
    fn stored() -> Forge {
        Forge::default()
            .at(
                0,
                Entry::Led {
                    node: 0,
                    term: TERM,
                    expires_at: ms(10_000),
                    now: ms(0),
                },
            )
            .at(
                10,
                Entry::Inserted {
                    node: CLIENT,
                    id: job_a(),
                    run_at: ms(100),
                    attempt_max: 3,
                },
            )
            .at(10, Entry::Confirmed { id: job_a() })
    }

    /// `node` claims job A under `token` (attempt `attempt`), due at `run_at`, for a second.
    fn claim(
        self,
        millis: u64,
        node: usize,
        token: LeaseToken,
        attempt: u32,
        run_at: u64,
    ) -> Forge {
        self.at(
            millis,
            Entry::Claimed {
                node,
                id: job_a(),
                token,
                attempt,
                attempt_max: 3,
                run_at: ms(run_at),
                expires_at: ms(millis.max(run_at) + 1_000),
                due_by: ms(millis + 100),
                now: ms(millis),
            },
        )
    }

    fn start(
        self,
        millis: u64,
        node: usize,
        token: LeaseToken,
        attempt: u32,
        run_at: u64,
    ) -> Forge {
        self.at(
            millis,
            Entry::Started {
                node,
                incarnation: 0,
                id: job_a(),
                token,
                attempt,
                run_at: ms(run_at),
            },
        )
    }

    fn returned(self, millis: u64, node: usize, token: LeaseToken) -> Forge {
        self.at(
            millis,
            Entry::Returned {
                node,
                id: job_a(),
                token,
            },
        )
    }

    fn complete(self, millis: u64, node: usize, token: LeaseToken) -> Forge {
        self.at(
            millis,
            Entry::Completed {
                node,
                id: job_a(),
                token,
                now: ms(millis),
            },
        )
    }

    fn rescue(self, millis: u64, token: LeaseToken) -> Forge {
        self.at(
            millis,
            Entry::Rescued {
                node: 0,
                term: TERM,
                id: job_a(),
                token,
                state: JobState::Retrying,
                now: ms(millis),
            },
        )
    }

    /// The invariants this history and `jobs` break.
    fn broken(&self, jobs: &[Job]) -> Vec<Invariant> {
        let mut broken: Vec<Invariant> = check(&self.history, jobs, ms(END_MS))
            .into_iter()
            .map(|violation| violation.invariant)
            .collect();
        broken.sort();
        broken.dedup();
        broken
    }
}

/// Job A as the store holds it at the end.
fn final_a(state: JobState, attempt: u32, token: LeaseToken) -> Job {
    let options = JobOptions {
        id: Some(job_a()),
        attempt_max: Some(3),
        ..JobOptions::default()
    };
    let mut job = NewJob::new(
        fixtures::kind("alpha"),
        Payload::null(),
        ms(100),
        options,
        ms(10),
    )
    .expect("a valid job")
    .into_job(ms(10));
    job.state = state;
    job.attempt = attempt;
    job.lease_token = token;
    if state.is_final() {
        job.finished_at = Some(ms(5_000));
    }
    job
}

fn succeeded(attempt: u32, token: LeaseToken) -> Vec<Job> {
    vec![final_a(JobState::Succeeded, attempt, token)]
}

/// Claimed, started on time, returned, completed: nothing to report.
fn clean() -> Forge {
    Forge::stored()
        .claim(50, 0, T1, 1, 100)
        .start(100, 0, T1, 1, 100)
        .returned(150, 0, T1)
        .complete(150, 0, T1)
}

#[test]
fn a_clean_history_breaks_nothing() {
    assert_eq!(clean().broken(&succeeded(1, T1)), []);
}

#[test]
fn a_rerun_after_the_lease_expired_is_allowed() {
    // Node 0 stops heartbeating (cut off); its lease runs out at 1100 ms; the rescue and
    // node 1's rerun come after, while node 0's handler still runs. That is the one case the
    // guarantee allows.
    let forge = Forge::stored()
        .claim(50, 0, T1, 1, 100)
        .start(100, 0, T1, 1, 100)
        .rescue(1_200, T1)
        .claim(1_300, 1, T2, 2, 1_300)
        .start(1_300, 1, T2, 2, 1_300)
        .returned(1_400, 0, T1)
        .returned(1_500, 1, T2)
        .complete(1_500, 1, T2);
    assert_eq!(forge.broken(&succeeded(2, T2)), []);
}

#[test]
fn a_double_run_is_caught() {
    // The rescue comes at 500 ms, before the lease's expiry at 1100 ms, and node 1 runs the job
    // while node 0's handler still runs.
    let forge = Forge::stored()
        .claim(50, 0, T1, 1, 100)
        .start(100, 0, T1, 1, 100)
        .rescue(500, T1)
        .claim(600, 1, T2, 2, 600)
        .start(600, 1, T2, 2, 600)
        .returned(700, 1, T2)
        .complete(700, 1, T2)
        .returned(800, 0, T1);
    assert_eq!(forge.broken(&succeeded(2, T2)), [Invariant::NoDoubleRun]);
}

#[test]
fn a_run_after_success_is_caught() {
    // Node 0's handler under the first token starts late, after the job was rescued, run again
    // and completed (the bug seeds 65 and 283 found).
    let forge = Forge::stored()
        .claim(50, 0, T1, 1, 100)
        .rescue(1_200, T1)
        .claim(1_300, 1, T2, 2, 1_300)
        .start(1_300, 1, T2, 2, 1_300)
        .returned(1_400, 1, T2)
        .complete(1_400, 1, T2)
        .start(2_000, 0, T1, 1, 100);
    assert_eq!(
        forge.broken(&succeeded(2, T2)),
        [Invariant::NoDoubleRun, Invariant::StartWithinLease]
    );
}

#[test]
fn an_early_start_is_caught() {
    let forge = Forge::stored()
        .claim(50, 0, T1, 1, 100)
        .start(90, 0, T1, 1, 100)
        .returned(150, 0, T1)
        .complete(150, 0, T1);
    assert_eq!(forge.broken(&succeeded(1, T1)), [Invariant::NoEarlyStart]);
}

#[test]
fn a_start_outside_the_lease_is_caught() {
    // The lease ran to 1100 ms, unrenewed; the handler starts at 1200 ms.
    let forge = Forge::stored()
        .claim(50, 0, T1, 1, 100)
        .start(1_200, 0, T1, 1, 100)
        .returned(1_300, 0, T1)
        .complete(1_300, 0, T1);
    assert_eq!(
        forge.broken(&succeeded(1, T1)),
        [Invariant::StartWithinLease]
    );
}

#[test]
fn a_stale_write_accepted_is_caught() {
    // Node 0's completion under the first token is accepted after node 1 claimed the job.
    let forge = Forge::stored()
        .claim(50, 0, T1, 1, 100)
        .start(100, 0, T1, 1, 100)
        .rescue(1_200, T1)
        .claim(1_300, 1, T2, 2, 1_300)
        .returned(1_400, 0, T1)
        .complete(1_400, 0, T1)
        .start(1_300, 1, T2, 2, 1_300)
        .returned(1_500, 1, T2)
        .complete(1_500, 1, T2);
    let broken = forge.broken(&succeeded(2, T2));
    assert!(broken.contains(&Invariant::NoStaleWrite), "{broken:?}");
}

#[test]
fn a_lost_job_is_caught() {
    // Job B was confirmed to the client, and is not in the final state.
    let forge = clean().at(20, Entry::Confirmed { id: job_b() });
    assert_eq!(forge.broken(&succeeded(1, T1)), [Invariant::NoJobLost]);
    // Nor is job A, which the store took.
    assert_eq!(clean().broken(&[]), [Invariant::NoJobLost]);
}

#[test]
fn attempts_past_the_maximum_are_caught() {
    // Three attempts fail and are retried; a fourth is claimed.
    let mut forge = Forge::stored();
    for attempt in 1..=3u32 {
        let start = u64::from(attempt) * 1_000;
        let token = LeaseToken(u64::from(attempt));
        // Due at the insert's 100 ms, then at each retry's time.
        let due = if attempt == 1 { 100 } else { start };
        forge = forge
            .claim(start, 0, token, attempt, due)
            .start(start, 0, token, attempt, due)
            .returned(start + 100, 0, token)
            .at(
                start + 100,
                Entry::Failed {
                    node: 0,
                    id: job_a(),
                    token,
                    outcome: FailOutcome::Retry {
                        at: ms(start + 1_000),
                    },
                    now: ms(start + 100),
                },
            );
    }
    let forge = forge
        .claim(4_000, 0, LeaseToken(4), 4, 4_000)
        .start(4_000, 0, LeaseToken(4), 4, 4_000)
        .returned(4_100, 0, LeaseToken(4))
        .complete(4_100, 0, LeaseToken(4));
    assert_eq!(
        forge.broken(&succeeded(4, LeaseToken(4))),
        [Invariant::AttemptsBounded]
    );
}

#[test]
fn a_job_left_behind_is_caught() {
    // Job A is never claimed: at the end it is overdue by nearly a minute.
    let forge = Forge::stored();
    let pending = vec![final_a(JobState::Scheduled, 0, LeaseToken(0))];
    assert_eq!(forge.broken(&pending), [Invariant::FinishedOrPending]);
    // And a job still running under a lease that expired long ago.
    let forge = Forge::stored().claim(50, 0, T1, 1, 100);
    let mut running = final_a(JobState::Running, 1, T1);
    running.lease = Some(Lease {
        holder: NodeId::new("node-0").expect("valid"),
        token: T1,
        expires_at: ms(1_100),
    });
    assert_eq!(forge.broken(&[running]), [Invariant::FinishedOrPending]);
}

#[test]
fn two_leaders_and_a_stale_term_are_caught() {
    let forge = clean()
        .at(
            1_000,
            Entry::Led {
                node: 1,
                term: LeaderTerm(2),
                expires_at: ms(2_000),
                now: ms(1_000),
            },
        )
        .at(
            3_000,
            Entry::Duty {
                node: 0,
                term: TERM,
                now: ms(3_000),
            },
        );
    let broken = check(&forge.history, &succeeded(1, T1), ms(END_MS));
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(
        broken
            .iter()
            .all(|violation| violation.invariant == Invariant::LeaderFenced)
    );
}

#[test]
fn a_final_state_the_history_does_not_explain_is_caught() {
    let dead = vec![final_a(JobState::Dead, 1, T1)];
    assert_eq!(clean().broken(&dead), [Invariant::StoreModel]);
}

/// Runs seeds under `mutation` until one breaks `invariant`; panics if none of the first
/// `seeds` does.
fn caught(mutation: Mutation, invariant: Invariant, seeds: u64) -> u64 {
    let options = Options {
        mutation: Some(mutation),
    };
    for seed in 0..seeds {
        let run = simulate(seed, options);
        if run
            .violations()
            .iter()
            .any(|violation| violation.invariant == invariant)
        {
            return seed;
        }
    }
    panic!("no run of {seeds} seeds under {mutation:?} broke {invariant:?}");
}

#[test]
fn a_store_that_rescues_live_leases_fails_the_runs() {
    caught(Mutation::RescueEarly, Invariant::NoDoubleRun, 10);
}

#[test]
fn a_store_that_accepts_stale_completions_fails_the_runs() {
    caught(
        Mutation::AcceptStaleCompletions,
        Invariant::NoStaleWrite,
        50,
    );
}

#[test]
fn a_store_that_forgets_inserts_fails_the_runs() {
    caught(Mutation::ForgetInserts, Invariant::NoJobLost, 10);
}
