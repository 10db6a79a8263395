//! The checker: replays a history against its own model of the store protocol and judges the
//! final state. It knows nothing of the engine's code or of `MemoryStore`'s: it holds both to
//! the invariants below, from what they recorded.
//!
//! - `NoJobLost`: every job the store took (an insert, an occurrence a claim stored) or the
//!   client was told is stored is in the final state.
//! - `FinishedOrPending`: at the end every job is finished (succeeded, dead, cancelled), or
//!   pending and due no more than `STUCK_AFTER` ago, or running under a lease that has not been
//!   expired for longer than that.
//! - `NoEarlyStart`: no handler starts before its attempt's `run_at` (by the clock).
//! - `NoDoubleRun`: two handlers of one job never run at once unless the earlier one's lease
//!   expired and was rescued first; none starts after the job succeeded under another token;
//!   no lease is rescued before it expires.
//! - `StartWithinLease`: a handler starts only while its lease is current and unexpired (or
//!   the job was just cancelled, which ends a lease at once by design).
//! - `NoStaleWrite`: every accepted extend, complete, fail and release carries the job's
//!   current lease token while it runs (or, for complete, the token it succeeded under); a
//!   completion is of an attempt that started.
//! - `AttemptsBounded`: no attempt is claimed, started or stored above `attempt_max`, no retry
//!   is granted past it, and no attempt that ran is handed back uncounted.
//! - `LeaderFenced`: a leader duty is accepted only under the current, unexpired term; no two
//!   nodes lead at once; terms grow.
//! - `StoreModel`: every other transition the store recorded is one the protocol allows
//!   (claims of pending, due jobs only; tokens and attempts counting up; the final state is the
//!   one the history leads to).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use punctual_core::{FailOutcome, Job, JobId, JobState, LeaderTerm, LeaseToken, Timestamp};

use crate::history::{Entry, History, Node};

/// A job pending and overdue by more than this at the end, or running under a lease expired
/// this long, is stuck: the run ends with a fault-free minute in which every node is up.
pub const STUCK_AFTER: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    NoJobLost,
    FinishedOrPending,
    NoEarlyStart,
    NoDoubleRun,
    StartWithinLease,
    NoStaleWrite,
    AttemptsBounded,
    LeaderFenced,
    StoreModel,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: Invariant,
    pub id: Option<JobId>,
    /// When, by the clock (the record's time, or the end).
    pub at: Timestamp,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.at.micros_since(crate::plan::START) as f64 / 1_000.0;
        write!(f, "{:?} at {millis:.3} ms", self.invariant)?;
        if let Some(id) = self.id {
            write!(f, " (job {id})")?;
        }
        write!(f, ": {}", self.detail)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Pending,
    Running,
    Succeeded,
    Dead,
    Cancelled,
}

impl State {
    fn of(state: JobState) -> State {
        match state {
            JobState::Scheduled | JobState::Retrying => State::Pending,
            JobState::Running => State::Running,
            JobState::Succeeded => State::Succeeded,
            JobState::Dead => State::Dead,
            JobState::Cancelled => State::Cancelled,
        }
    }

    fn is_final(self) -> bool {
        matches!(self, State::Succeeded | State::Dead | State::Cancelled)
    }
}

#[derive(Clone, Copy, Debug)]
struct Lease {
    token: LeaseToken,
    expires_at: Timestamp,
}

#[derive(Clone, Copy, Debug, Default)]
struct Attempt {
    run_at: Option<Timestamp>,
    started: bool,
    returned: bool,
    /// Its lease ended by a rescue after it expired: whatever its handler still does, another
    /// may run.
    expired: bool,
}

#[derive(Debug)]
struct Shadow {
    state: State,
    /// Unknown after a rescue (the backoff is the store's to apply).
    run_at: Option<Timestamp>,
    attempt: u32,
    attempt_max: u32,
    token: LeaseToken,
    lease: Option<Lease>,
    succeeded_under: Option<LeaseToken>,
    attempts: BTreeMap<LeaseToken, Attempt>,
}

impl Shadow {
    fn new(run_at: Timestamp, attempt_max: u32) -> Shadow {
        Shadow {
            state: State::Pending,
            run_at: Some(run_at),
            attempt: 0,
            attempt_max,
            token: LeaseToken(0),
            lease: None,
            succeeded_under: None,
            attempts: BTreeMap::new(),
        }
    }

    /// Whether `token` holds the job's lease now.
    fn held_by(&self, token: LeaseToken) -> bool {
        self.state == State::Running && self.lease.is_some_and(|lease| lease.token == token)
    }
}

/// Who the store says leads, under which term, until when.
#[derive(Debug, Default)]
struct Leadership {
    term: u64,
    holder: Option<(Node, Timestamp)>,
}

struct Checker {
    jobs: BTreeMap<JobId, Shadow>,
    /// Every id the store took or the client was told it took: each must survive.
    promised: BTreeSet<JobId>,
    leadership: Leadership,
    violations: Vec<Violation>,
    /// The time of the record being applied (the end, once the final state is judged).
    at: Timestamp,
}

/// Judges `history` and the final state `jobs` (read at `end`). Empty when every invariant held.
pub fn check(history: &History, jobs: &[Job], end: Timestamp) -> Vec<Violation> {
    let mut checker = Checker {
        jobs: BTreeMap::new(),
        promised: BTreeSet::new(),
        leadership: Leadership::default(),
        violations: Vec::new(),
        at: crate::plan::START,
    };
    for record in &history.records {
        checker.at = record.at;
        checker.apply(&record.entry);
    }
    checker.at = end;
    checker.finish(jobs, end);
    checker.violations
}

impl Checker {
    fn violate(&mut self, invariant: Invariant, id: Option<JobId>, detail: String) {
        self.violations.push(Violation {
            invariant,
            id,
            at: self.at,
            detail,
        });
    }

    /// The job's shadow, or a `StoreModel` violation if no one stored it.
    fn shadow(&mut self, id: JobId, what: &str) -> Option<&mut Shadow> {
        if !self.jobs.contains_key(&id) {
            self.violate(
                Invariant::StoreModel,
                Some(id),
                format!("{what} of a job that was never stored"),
            );
        }
        self.jobs.get_mut(&id)
    }

    fn apply(&mut self, entry: &Entry) {
        let at = self.at;
        match *entry {
            Entry::Inserted {
                id,
                run_at,
                attempt_max,
                ..
            } => self.stored(id, run_at, attempt_max, "insert"),
            Entry::Occurrence { parent, id, run_at } => {
                let attempt_max = self.jobs.get(&parent).map_or(1, |job| job.attempt_max);
                self.stored(id, run_at, attempt_max, "occurrence");
            }
            Entry::Confirmed { id } => {
                self.promised.insert(id);
            }
            Entry::Claimed {
                id,
                token,
                attempt,
                attempt_max,
                run_at,
                expires_at,
                due_by,
                ..
            } => self.claimed(id, token, attempt, attempt_max, run_at, expires_at, due_by),
            Entry::Extended {
                id,
                token,
                expires_at,
                ..
            } => {
                let Some(job) = self.shadow(id, "extend") else {
                    return;
                };
                if job.held_by(token) {
                    job.lease = Some(Lease { token, expires_at });
                } else {
                    let detail = format!("extend under {token} accepted: {}", describe(job));
                    self.violate(Invariant::NoStaleWrite, Some(id), detail);
                }
            }
            Entry::Completed { id, token, .. } => {
                let Some(job) = self.shadow(id, "complete") else {
                    return;
                };
                if job.held_by(token) {
                    let started = job.attempts.get(&token).is_some_and(|a| a.started);
                    job.state = State::Succeeded;
                    job.lease = None;
                    job.succeeded_under = Some(token);
                    if !started {
                        let detail =
                            format!("completion under {token} of an attempt that never started");
                        self.violate(Invariant::NoStaleWrite, Some(id), detail);
                    }
                } else if job.succeeded_under != Some(token) {
                    let detail = format!("completion under {token} accepted: {}", describe(job));
                    self.violate(Invariant::NoStaleWrite, Some(id), detail);
                }
            }
            Entry::Failed {
                id, token, outcome, ..
            } => {
                let Some(job) = self.shadow(id, "fail") else {
                    return;
                };
                if !job.held_by(token) {
                    let detail = format!("failure under {token} accepted: {}", describe(job));
                    self.violate(Invariant::NoStaleWrite, Some(id), detail);
                    return;
                }
                job.lease = None;
                match outcome {
                    FailOutcome::Retry { at: retry_at } => {
                        let (attempt, attempt_max) = (job.attempt, job.attempt_max);
                        job.state = State::Pending;
                        job.run_at = Some(retry_at);
                        if attempt >= attempt_max {
                            let detail =
                                format!("a retry granted after attempt {attempt} of {attempt_max}");
                            self.violate(Invariant::AttemptsBounded, Some(id), detail);
                        }
                    }
                    FailOutcome::Dead => job.state = State::Dead,
                }
            }
            Entry::Released { id, token, .. } => {
                let Some(job) = self.shadow(id, "release") else {
                    return;
                };
                if !job.held_by(token) {
                    let detail = format!("release under {token} accepted: {}", describe(job));
                    self.violate(Invariant::NoStaleWrite, Some(id), detail);
                    return;
                }
                let started = job.attempts.get(&token).is_some_and(|a| a.started);
                job.state = State::Pending;
                job.lease = None;
                job.attempt = job.attempt.saturating_sub(1);
                if started {
                    let detail = format!("attempt under {token} ran, then was released uncounted");
                    self.violate(Invariant::AttemptsBounded, Some(id), detail);
                }
            }
            Entry::Rescued {
                node,
                term,
                id,
                token,
                state,
                now,
            } => {
                self.fenced(node, term, now, "rescue_expired");
                self.rescued(id, token, state, now);
            }
            Entry::Cancelled { id, .. } => {
                let Some(job) = self.shadow(id, "cancel") else {
                    return;
                };
                let problem = job
                    .state
                    .is_final()
                    .then(|| format!("cancel accepted: {}", describe(job)));
                job.state = State::Cancelled;
                job.lease = None;
                if let Some(detail) = problem {
                    self.violate(Invariant::StoreModel, Some(id), detail);
                }
            }
            Entry::Led {
                node,
                term,
                expires_at,
                now,
            } => self.led(node, term, expires_at, now),
            Entry::Resigned { node, term } => {
                let leadership = &mut self.leadership;
                if leadership.term == term.0
                    && leadership.holder.is_some_and(|(holder, _)| holder == node)
                {
                    leadership.holder = None;
                }
            }
            Entry::Duty { node, term, now } => self.fenced(node, term, now, "purge"),
            Entry::Started {
                id,
                token,
                attempt,
                run_at,
                ..
            } => self.started(id, token, attempt, run_at, at),
            Entry::Returned { id, token, .. } => {
                if let Some(attempt) = self
                    .jobs
                    .get_mut(&id)
                    .and_then(|job| job.attempts.get_mut(&token))
                {
                    attempt.returned = true;
                }
            }
            Entry::Refused { .. }
            | Entry::Crashed { .. }
            | Entry::Restarted { .. }
            | Entry::Stopped { .. }
            | Entry::Jumped { .. }
            | Entry::Drained => {}
        }
    }

    fn stored(&mut self, id: JobId, run_at: Timestamp, attempt_max: u32, how: &str) {
        self.promised.insert(id);
        if self.jobs.contains_key(&id) {
            self.violate(
                Invariant::StoreModel,
                Some(id),
                format!("{how} of a job that is already stored"),
            );
            return;
        }
        self.jobs.insert(id, Shadow::new(run_at, attempt_max));
    }

    #[allow(clippy::too_many_arguments, reason = "the fields of one Claimed entry")]
    fn claimed(
        &mut self,
        id: JobId,
        token: LeaseToken,
        attempt: u32,
        attempt_max: u32,
        run_at: Timestamp,
        expires_at: Timestamp,
        due_by: Timestamp,
    ) {
        let Some(job) = self.shadow(id, "claim") else {
            return;
        };
        let mut problems = Vec::new();
        if job.state != State::Pending {
            problems.push(format!("claimed under {token}: {}", describe(job)));
        }
        if job.run_at.is_some_and(|known| known != run_at) {
            problems.push(format!(
                "claimed with run_at {run_at:?}, stored as {:?}",
                job.run_at
            ));
        }
        if run_at > due_by {
            problems.push(format!(
                "claimed due at {run_at:?}, after due_by {due_by:?}"
            ));
        }
        if token <= job.token {
            problems.push(format!("token {token} issued after {}", job.token));
        }
        if attempt != job.attempt + 1 {
            problems.push(format!("attempt {attempt} counted after {}", job.attempt));
        }
        let over = attempt > attempt_max;
        job.state = State::Running;
        job.run_at = Some(run_at);
        job.attempt = attempt;
        job.token = token;
        job.lease = Some(Lease { token, expires_at });
        job.attempts.insert(
            token,
            Attempt {
                run_at: Some(run_at),
                ..Attempt::default()
            },
        );
        for problem in problems {
            self.violate(Invariant::StoreModel, Some(id), problem);
        }
        if over {
            let detail = format!("claimed attempt {attempt} of {attempt_max}");
            self.violate(Invariant::AttemptsBounded, Some(id), detail);
        }
    }

    fn rescued(&mut self, id: JobId, token: LeaseToken, state: JobState, now: Timestamp) {
        let Some(job) = self.shadow(id, "rescue") else {
            return;
        };
        if !job.held_by(token) {
            let detail = format!("rescue of {token}: {}", describe(job));
            self.violate(Invariant::StoreModel, Some(id), detail);
            return;
        }
        let expires_at = job.lease.map(|lease| lease.expires_at);
        let expected = if job.attempt < job.attempt_max {
            State::Pending
        } else {
            State::Dead
        };
        job.state = State::of(state);
        job.run_at = None;
        job.lease = None;
        let unexpired = expires_at.is_some_and(|expires_at| expires_at > now);
        if let Some(attempt) = job.attempts.get_mut(&token) {
            attempt.expired = !unexpired;
        }
        if unexpired {
            let detail =
                format!("lease {token} rescued at {now:?}, before it expired at {expires_at:?}");
            self.violate(Invariant::NoDoubleRun, Some(id), detail);
        }
        if State::of(state) != expected {
            let detail = format!("rescue left it {state}, expected {expected:?}");
            self.violate(Invariant::StoreModel, Some(id), detail);
        }
    }

    fn started(
        &mut self,
        id: JobId,
        token: LeaseToken,
        attempt: u32,
        run_at: Timestamp,
        at: Timestamp,
    ) {
        let Some(job) = self.shadow(id, "start") else {
            return;
        };
        let mut found = Vec::new();
        match job.attempts.get(&token) {
            None => found.push((
                Invariant::StoreModel,
                format!("a handler started under {token}, which no claim issued"),
            )),
            Some(claimed) => {
                if let Some(due) = claimed.run_at.filter(|due| at < *due) {
                    found.push((
                        Invariant::NoEarlyStart,
                        format!("started {} us before its run_at", due.micros_since(at)),
                    ));
                }
                if claimed.run_at.is_some_and(|due| due != run_at) {
                    found.push((
                        Invariant::StoreModel,
                        format!(
                            "the handler was told run_at {run_at:?}, the claim said {:?}",
                            claimed.run_at
                        ),
                    ));
                }
            }
        }
        if attempt > job.attempt_max {
            found.push((
                Invariant::AttemptsBounded,
                format!("attempt {attempt} of {} started", job.attempt_max),
            ));
        }
        if job.succeeded_under.is_some_and(|done| done != token) {
            found.push((
                Invariant::NoDoubleRun,
                format!("started under {token} after the job succeeded"),
            ));
        }
        let live = job.held_by(token) && job.lease.is_some_and(|lease| at < lease.expires_at);
        if !live && job.state != State::Cancelled {
            found.push((
                Invariant::StartWithinLease,
                format!("started under {token}: {}", describe(job)),
            ));
        }
        for (other, running) in &job.attempts {
            if *other != token && running.started && !running.returned && !running.expired {
                found.push((
                    Invariant::NoDoubleRun,
                    format!(
                        "started under {token} while the handler under {other} runs, its lease not expired"
                    ),
                ));
            }
        }
        if let Some(this) = job.attempts.get_mut(&token) {
            this.started = true;
        }
        for (invariant, detail) in found {
            self.violate(invariant, Some(id), detail);
        }
    }

    /// A `LeaderFenced` violation unless `term` is the current term, held unexpired at `now`
    /// by `node`.
    fn fenced(&mut self, node: Node, term: LeaderTerm, now: Timestamp, duty: &str) {
        let leadership = &self.leadership;
        let current = leadership.term == term.0
            && leadership
                .holder
                .is_some_and(|(holder, expires_at)| holder == node && now < expires_at);
        if !current {
            let detail = format!(
                "{duty} by node {node} under term {term} accepted; the store's term is {} held by {:?}",
                leadership.term, leadership.holder
            );
            self.violate(Invariant::LeaderFenced, None, detail);
        }
    }

    fn led(&mut self, node: Node, term: LeaderTerm, expires_at: Timestamp, now: Timestamp) {
        let leadership = &mut self.leadership;
        let live = leadership.holder.filter(|(_, until)| now < *until);
        let problem = match live {
            Some((holder, _)) if holder == node && leadership.term == term.0 => None,
            Some((holder, until)) => Some(format!(
                "node {node} granted term {term} while node {holder} leads under term {} until {until:?}",
                leadership.term
            )),
            None if term.0 <= leadership.term => Some(format!(
                "node {node} granted term {term}, not above the last term {}",
                leadership.term
            )),
            None => None,
        };
        leadership.term = leadership.term.max(term.0);
        leadership.holder = Some((node, expires_at));
        if let Some(detail) = problem {
            self.violate(Invariant::LeaderFenced, None, detail);
        }
    }

    fn finish(&mut self, jobs: &[Job], end: Timestamp) {
        let stored: BTreeMap<JobId, &Job> = jobs.iter().map(|job| (job.id, job)).collect();
        let promised: Vec<JobId> = self.promised.iter().copied().collect();
        for id in promised {
            if !stored.contains_key(&id) {
                self.violate(
                    Invariant::NoJobLost,
                    Some(id),
                    "stored (or confirmed) and then gone".to_owned(),
                );
            }
        }
        let stuck_before = end.sub(STUCK_AFTER);
        for job in jobs {
            let mut found = Vec::new();
            match self.jobs.get(&job.id) {
                None => found.push((
                    Invariant::StoreModel,
                    format!("in the final state as {}, never recorded stored", job.state),
                )),
                Some(shadow) => {
                    if shadow.state != State::of(job.state) || shadow.attempt != job.attempt {
                        found.push((
                            Invariant::StoreModel,
                            format!(
                                "ends {} at attempt {}; the history leads to {}",
                                job.state,
                                job.attempt,
                                describe(shadow)
                            ),
                        ));
                    }
                }
            }
            if job.attempt > job.attempt_max {
                found.push((
                    Invariant::AttemptsBounded,
                    format!("ends at attempt {} of {}", job.attempt, job.attempt_max),
                ));
            }
            match State::of(job.state) {
                State::Pending if job.run_at < stuck_before => found.push((
                    Invariant::FinishedOrPending,
                    format!(
                        "{} and overdue by {:?} at the end",
                        job.state,
                        end.duration_since(job.run_at)
                    ),
                )),
                State::Running => {
                    let expires_at = job.lease.as_ref().map(|lease| lease.expires_at);
                    if expires_at.is_none_or(|expires_at| expires_at < stuck_before) {
                        found.push((
                            Invariant::FinishedOrPending,
                            format!(
                                "running at the end under a lease that expired at {expires_at:?}"
                            ),
                        ));
                    }
                }
                _ => {}
            }
            for (invariant, detail) in found {
                self.violate(invariant, Some(job.id), detail);
            }
        }
    }
}

fn describe(job: &Shadow) -> String {
    match (job.state, job.lease) {
        (State::Running, Some(lease)) => format!(
            "the job runs under {} until {:?} (attempt {})",
            lease.token, lease.expires_at, job.attempt
        ),
        (state, _) => format!(
            "the job is {state:?} (attempt {}, last token {})",
            job.attempt, job.token
        ),
    }
}
