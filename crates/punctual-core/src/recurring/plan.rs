//! The one decision of what a schedule's due occurrences become: `plan(now, ahead, due)` is a
//! plain function from a reading of the store to the one `ScheduleWrite` that applies it.
//!
//! The walk goes through the recurrence's events after the high-water mark (`Schedule::walk`),
//! in time order, and decides each:
//!
//! - an occurrence more than `ahead` away is not decided yet: the leader looks again at
//!   `occurrence - ahead`;
//! - an occurrence within `ahead` fires ahead of time (its job is inserted now, due at the
//!   occurrence plus its jitter), so that the engine claims it in time — unless the schedule is
//!   paused, or outside its start, or the overlap policy has something to decide (the previous
//!   job has not finished), which is decided when the occurrence is due;
//! - a due occurrence found within the misfire `grace` fires (late) or meets the overlap
//!   policy; one found later is *missed*, and the misfire policy decides the missed ones
//!   together: skip them, fire the latest, or fire each up to a limit, oldest first; one older
//!   than the catch-up window is skipped whatever the policy;
//! - a due occurrence of a paused schedule, or before its start, is skipped, and so is a span
//!   of local times a clock change of three hours or more skipped;
//! - an occurrence after the schedule's end finishes it; a recurrence that has no next event
//!   before its end fails the schedule, with an entry in the ledger: a schedule never stops
//!   silently.
//!
//! Under an overlap policy other than `allow`, one plan fires at most one occurrence, so that
//! the next is decided against the real state of that occurrence's job. A run of skips for
//! the same reason is one ledger entry, grown as the run goes on.

use std::time::Duration;

use super::{
    DueSchedule, LedgerExtend, MisfireAction, OccurrenceEntry, OccurrenceOutcome, OverlapPolicy,
    ScheduleWrite, SkipReason,
};
use crate::job::JobId;
use crate::limits;
use crate::schedule::{Step, WalkEnd};
use crate::time::Timestamp;

/// What a plan did, for metrics and events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanSummary {
    pub fired: u64,
    pub skipped: Vec<(SkipReason, u64)>,
    /// How late the earliest occurrence decided was (zero when it was decided ahead of time).
    pub lag: Duration,
    /// The schedule failed in this plan (its next occurrence could not be computed).
    pub failed: bool,
}

/// The write that decides `due`'s occurrences at `now`, inserting jobs up to `ahead` early, and
/// what it did.
pub fn plan(now: Timestamp, ahead: Duration, due: &DueSchedule) -> (ScheduleWrite, PlanSummary) {
    let mut planner = Planner::new(now, due);
    planner.run(ahead);
    planner.finish()
}

/// A manual firing ("trigger now") of `due`'s schedule at `now`: its job is due at once and
/// the ledger says it was manual. The high-water mark does not move: the schedule's own
/// occurrences go on as before.
pub fn trigger(now: Timestamp, due: &DueSchedule) -> (ScheduleWrite, JobId) {
    let mut planner = Planner::new(now, due);
    let job = planner.fire(now, now, true, false);
    let (write, _) = planner.finish();
    (write, job)
}

/// The missed occurrences met so far in one plan.
#[derive(Default)]
struct CatchUp {
    /// Met one (or one past the window) since the last on-time event.
    active: bool,
    /// Fired by `all` so far.
    fired: u32,
    /// The latest met, held by `latest`.
    latest: Option<(Timestamp, bool)>,
}

struct Planner<'a> {
    now: Timestamp,
    due: &'a DueSchedule,
    write: ScheduleWrite,
    summary: PlanSummary,
    /// Whether the job of the previous occurrence (stored, or fired by this plan) is unfinished.
    previous_active: bool,
    /// Whether this plan fired under an overlap policy other than `allow` (then it stops).
    fired_guarded: bool,
    /// Whether the occurrence being decided is a missed one (catch-up firings do not stop the
    /// plan: the misfire policy decides all the missed occurrences in one plan).
    in_catch_up: bool,
    lag_seen: bool,
}

impl<'a> Planner<'a> {
    fn new(now: Timestamp, due: &'a DueSchedule) -> Planner<'a> {
        let mut schedule = due.schedule.clone();
        schedule.version += 1;
        schedule.updated_at = now;
        let previous_active = due.last_job_state.is_some_and(|state| !state.is_final());
        Planner {
            now,
            due,
            write: ScheduleWrite::of(schedule, Some(due.schedule.version)),
            summary: PlanSummary::default(),
            previous_active,
            fired_guarded: false,
            in_catch_up: false,
            lag_seen: false,
        }
    }

    fn cursor_mut(&mut self) -> &mut super::ScheduleCursor {
        &mut self.write.schedule.cursor
    }

    fn guarded(&self) -> bool {
        self.write.schedule.definition.overlap != OverlapPolicy::Allow
    }

    fn note_lag(&mut self, at: Timestamp) {
        if !self.lag_seen {
            self.lag_seen = true;
            self.summary.lag = self.now.duration_since(at);
        }
    }

    fn run(&mut self, ahead: Duration) {
        let now = self.now;
        let horizon = now.add(ahead);
        if self.write.schedule.cursor.next_check.is_none() {
            // Finished or failed: nothing to decide until an update revives it.
            return;
        }
        // A buffered occurrence fires once the job before it has finished.
        if let Some(buffered) = self.write.schedule.cursor.buffered
            && !self.previous_active
        {
            self.note_lag(buffered);
            self.cursor_mut().buffered = None;
            self.fire(buffered, now, false, false);
        }
        let definition = self.write.schedule.definition.clone();
        let paused = self.write.schedule.paused;
        let mut missed = CatchUp::default();
        let mut walk = definition
            .recurrence
            .walk(self.write.schedule.cursor.high_water);
        let mut steps = 0usize;
        let next_check = loop {
            // Missed occurrences (and those past the window) cost a step of the larger catch-up
            // budget, so that an outage's are decided together, by one reading of the policy.
            let budget = if missed.active {
                limits::SCHEDULE_CATCH_UP_STEPS_MAX
            } else {
                limits::SCHEDULE_PLAN_STEPS_MAX
            };
            if steps >= budget || self.fired_guarded {
                self.flush_missed(&mut missed);
                // Go on at the next look, soon.
                break Some(now);
            }
            steps += 1;
            let Some(step) = walk.next() else {
                self.flush_missed(&mut missed);
                if let Some(WalkEnd::Failed { after, reason }) = walk.end() {
                    self.fail(format!(
                        "the next occurrence after {after} cannot be computed: {reason}"
                    ));
                }
                // Otherwise no occurrence is left before the year 10000: finished.
                break None;
            };
            let at = step.at();
            if definition.end_at.is_some_and(|end| at > end) {
                self.flush_missed(&mut missed);
                break None;
            }
            if at > horizon {
                self.flush_missed(&mut missed);
                break Some(at.sub(ahead));
            }
            let outside = definition.start_at.is_some_and(|start| at < start);
            if at > now {
                // Ahead of time: only a plain firing is decided this early.
                self.flush_missed(&mut missed);
                let waits = self.guarded() && self.previous_active;
                let plain = matches!(step, Step::Fire(_)) && !paused && !outside && !waits;
                if !plain {
                    break Some(at);
                }
                if let Step::Fire(firing) = step {
                    let run_at = at.add(definition.jitter_for(self.write.schedule.id, at));
                    self.fire(at, run_at, false, firing.moved);
                }
                self.advance(at);
                continue;
            }
            // Due.
            let late = now.duration_since(at);
            match step {
                Step::Skip(span) => {
                    self.flush_missed(&mut missed);
                    self.note_lag(at);
                    self.skip(SkipReason::ClockChange, at, span.count.max(1));
                }
                Step::Fire(firing) => {
                    if outside || paused {
                        self.flush_missed(&mut missed);
                        self.note_lag(at);
                        let reason = if outside {
                            SkipReason::OutsideWindow
                        } else {
                            SkipReason::Paused
                        };
                        self.skip(reason, at, 1);
                    } else if late > definition.misfire.catch_up_window {
                        self.note_lag(at);
                        missed.active = true;
                        self.skip(SkipReason::Misfire, at, 1);
                    } else if late > definition.misfire.grace {
                        self.note_lag(at);
                        self.missed(&mut missed, at, firing.moved);
                    } else {
                        self.flush_missed(&mut missed);
                        self.note_lag(at);
                        self.decide_due(at, firing.moved);
                    }
                }
            }
            self.advance(at);
        };
        self.cursor_mut().next_check = next_check;
    }

    /// The misfire policy meets one missed occurrence, oldest first: `skip` skips it, `all`
    /// fires it while the limit allows, `latest` holds it until a later one replaces it (and is
    /// skipped) or the missed ones end (`flush_missed`, and it fires).
    fn missed(&mut self, missed: &mut CatchUp, at: Timestamp, moved: bool) {
        missed.active = true;
        match self.write.schedule.definition.misfire.action {
            MisfireAction::Skip => self.skip(SkipReason::Misfire, at, 1),
            MisfireAction::All { limit } => {
                if missed.fired < limit {
                    missed.fired += 1;
                    self.catch_up(at, moved);
                } else {
                    self.skip(SkipReason::Misfire, at, 1);
                }
            }
            MisfireAction::Latest => {
                if let Some((earlier, _)) = missed.latest.replace((at, moved)) {
                    self.skip(SkipReason::Misfire, earlier, 1);
                }
            }
        }
    }

    /// The missed occurrences ended: the one `latest` held fires.
    fn flush_missed(&mut self, missed: &mut CatchUp) {
        if let Some((at, moved)) = missed.latest.take() {
            self.catch_up(at, moved);
        }
        missed.active = false;
    }

    /// A missed occurrence that the misfire policy fires meets the overlap policy, and does
    /// not stop the plan.
    fn catch_up(&mut self, at: Timestamp, moved: bool) {
        self.in_catch_up = true;
        self.decide_due(at, moved);
        self.in_catch_up = false;
    }

    /// A due occurrence meets the overlap policy.
    fn decide_due(&mut self, at: Timestamp, moved: bool) {
        let now = self.now;
        let run_at = at
            .add(
                self.write
                    .schedule
                    .definition
                    .jitter_for(self.write.schedule.id, at),
            )
            .max(now);
        if !self.previous_active {
            self.fire(at, run_at, false, moved);
            return;
        }
        match self.write.schedule.definition.overlap {
            OverlapPolicy::Allow => {
                self.fire(at, run_at, false, moved);
            }
            OverlapPolicy::Skip => self.skip(SkipReason::Overlap, at, 1),
            OverlapPolicy::BufferOne => {
                if self.write.schedule.cursor.buffered.is_none() {
                    self.cursor_mut().buffered = Some(at);
                } else {
                    self.skip(SkipReason::Overlap, at, 1);
                }
            }
            OverlapPolicy::CancelPrevious => {
                let previous = self.write.schedule.cursor.last_job;
                let fired_here = self.write.jobs.iter().any(|job| Some(job.id) == previous);
                if fired_here {
                    // Fired by this plan: not inserted after all, and skipped as overlapped.
                    self.write.jobs.retain(|job| Some(job.id) != previous);
                    self.unfire(previous);
                } else {
                    self.write.cancel = previous;
                }
                self.fire(at, run_at, false, moved);
            }
        }
    }

    /// Inserts the job of the occurrence at `at`, due at `run_at`; returns its id.
    fn fire(&mut self, at: Timestamp, run_at: Timestamp, manual: bool, moved: bool) -> JobId {
        let id = self.write.schedule.id.occurrence_job(at);
        let job = self.write.schedule.definition.template.job(id, run_at);
        self.write.jobs.push(job);
        self.write.append.push(OccurrenceEntry {
            seq: 0,
            schedule: self.write.schedule.id,
            at,
            outcome: OccurrenceOutcome::Fired {
                job: id,
                late: self.now.duration_since(at),
                manual,
                moved,
            },
            recorded_at: self.now,
        });
        let cursor = self.cursor_mut();
        cursor.last_job = Some(id);
        cursor.fired += 1;
        self.summary.fired += 1;
        self.previous_active = true;
        if self.guarded() && !self.in_catch_up {
            self.fired_guarded = true;
        }
        id
    }

    /// Records `count` skipped occurrences from `at`, growing the latest run of skips for the
    /// same reason when there is one.
    fn count_skip(&mut self, reason: SkipReason, count: u64) {
        match self
            .summary
            .skipped
            .iter_mut()
            .find(|(each, _)| *each == reason)
        {
            Some((_, total)) => *total += count,
            None => self.summary.skipped.push((reason, count)),
        }
    }

    /// The firing of `job` by this plan becomes a skip for overlap (a later one cancelled it).
    fn unfire(&mut self, job: Option<JobId>) {
        let Some(entry) = self.write.append.iter_mut().find(|entry| {
            matches!(entry.outcome, OccurrenceOutcome::Fired { job: fired, .. } if Some(fired) == job)
        }) else {
            return;
        };
        entry.outcome = OccurrenceOutcome::Skipped {
            reason: SkipReason::Overlap,
            count: 1,
            last_at: entry.at,
        };
        let cursor = &mut self.write.schedule.cursor;
        cursor.fired -= 1;
        cursor.skipped += 1;
        self.summary.fired -= 1;
        self.count_skip(SkipReason::Overlap, 1);
    }

    fn skip(&mut self, reason: SkipReason, at: Timestamp, count: u64) {
        self.cursor_mut().skipped += count;
        self.count_skip(reason, count);
        if let Some(last) = self.write.append.last_mut() {
            if let OccurrenceOutcome::Skipped {
                reason: last_reason,
                count: last_count,
                last_at,
            } = &mut last.outcome
                && *last_reason == reason
            {
                *last_count += count;
                *last_at = at;
                return;
            }
        } else {
            // The run to grow is the stored latest entry, if it is a skip; this plan may
            // already have grown it (`extend`, which only ever names that entry).
            let run = match &self.due.last_entry {
                Some(OccurrenceEntry {
                    seq,
                    outcome:
                        OccurrenceOutcome::Skipped {
                            reason: stored,
                            count: stored_count,
                            ..
                        },
                    ..
                }) => Some((
                    *seq,
                    *stored,
                    self.write
                        .extend
                        .map_or(*stored_count, |extend| extend.count),
                )),
                _ => None,
            };
            if let Some((seq, stored_reason, base)) = run
                && stored_reason == reason
            {
                self.write.extend = Some(LedgerExtend {
                    seq,
                    last_at: at,
                    count: base + count,
                });
                return;
            }
        }
        self.write.append.push(OccurrenceEntry {
            seq: 0,
            schedule: self.write.schedule.id,
            at,
            outcome: OccurrenceOutcome::Skipped {
                reason,
                count,
                last_at: at,
            },
            recorded_at: self.now,
        });
    }

    fn fail(&mut self, error: String) {
        let at = self.write.schedule.cursor.high_water;
        self.write.append.push(OccurrenceEntry {
            seq: 0,
            schedule: self.write.schedule.id,
            at,
            outcome: OccurrenceOutcome::Failed {
                error: error.clone(),
            },
            recorded_at: self.now,
        });
        self.cursor_mut().last_error = Some(error);
        self.summary.failed = true;
    }

    fn advance(&mut self, at: Timestamp) {
        self.cursor_mut().high_water = at;
    }

    fn finish(self) -> (ScheduleWrite, PlanSummary) {
        (self.write, self.summary)
    }
}

#[cfg(test)]
mod tests;
