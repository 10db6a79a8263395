//! Explaining a schedule to a person: its next firings in local time and in UTC, with what
//! clock changes do to them (`upcoming`), and what an outage would leave to fire and to skip
//! when the engine recovers (`recover`).
//!
//! Both only tell what others decide. `upcoming` is `Schedule::walk` in words; `recover` runs
//! `plan::plan` itself, on a synthetic schedule whose high-water mark is the outage's start, at
//! the outage's end, so an explanation cannot disagree with the engine: change a policy and
//! both change together.
//!
//! Must not do I/O, look at a clock, or decide anything the walk or the plan decides.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Timelike};
use chrono_tz::{OffsetName, Tz};

use super::plan;
use super::{
    DueSchedule, JobTemplate, Misfire, MisfireAction, OccurrenceEntry, OccurrenceOutcome,
    OverlapPolicy, ScheduleDefinition, ScheduleId, SkipReason, StoredSchedule,
};
use crate::job::{JobId, Kind, Payload, ScheduleName, ValidationError};
use crate::limits;
use crate::schedule::{Schedule, Step, WalkEnd};
use crate::state::JobState;
use crate::time::Timestamp;

/// Most firings one explanation lists.
pub const COUNT_MAX: usize = 1_000;
/// Most plans `recover` runs: each decides up to `limits::SCHEDULE_PLAN_STEPS_MAX`
/// occurrences, as the engine's looks do; past that the explanation says it is incomplete.
pub const RECOVERY_PLANS_MAX: usize = 20;
/// The longest outage `recover` explains: occurrences older than the longest catch-up window
/// are skipped whatever the policy, so a longer outage tells nothing more.
pub const OUTAGE_MAX: Duration = limits::CATCH_UP_WINDOW_MAX;

/// Why a question could not be answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("count is {got}; it must be 1 to {COUNT_MAX}")]
    CountOutOfRange { got: usize },
    #[error("the outage's end {to} is not after its start {from}")]
    OutageWindow { from: Timestamp, to: Timestamp },
    #[error("the outage lasts {ms} ms; the longest explained is {max_ms} ms")]
    OutageTooLong { ms: u128, max_ms: u128 },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

// ---------------------------------------------------------------- upcoming firings

/// A schedule's events from an instant on: firings and skipped spans, in time order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upcoming {
    pub events: Vec<Event>,
    /// Why the walk ended before `count` firings, if it did.
    pub end: Option<WalkEnd>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Fire(FiringExplained),
    Skip(SkipExplained),
}

/// An instant as a wall clock in a zone shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WallClock {
    pub local: NaiveDateTime,
    /// Seconds east of UTC.
    pub offset_seconds: i32,
    /// The zone's abbreviation then (`CEST`), when it has one.
    pub abbreviation: Option<String>,
}

/// One firing, in both clocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FiringExplained {
    pub at: Timestamp,
    /// The wall clock when it fires.
    pub clock: WallClock,
    /// The local time the expression named; differs from `clock.local` when `moved`.
    pub named: NaiveDateTime,
    /// A jump forward skipped `named`: the firing moved to the end of the gap.
    pub moved: bool,
    /// How many further local times this firing stands for (`Firing::merged`).
    pub merged: u32,
    /// `named` happens again at this instant (the clock goes back), where it does not fire.
    pub repeat_not_fired: Option<Timestamp>,
    /// The firing's local time happens twice and this is its first (`Some(true)`) or second
    /// (`Some(false)`) pass, and it fires in both (wildcard expressions, or a change of 3 h or
    /// more).
    pub repeated_pass: Option<bool>,
    /// The size of the clock change that moved it or keeps it from repeating, in seconds.
    pub shift_seconds: Option<i64>,
}

/// Matching local times a clock change of 3 hours or more skipped (`SkippedSpan`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkipExplained {
    pub at: Timestamp,
    pub clock: WallClock,
    pub first_local: NaiveDateTime,
    pub last_local: NaiveDateTime,
    pub count: u64,
    pub shift_seconds: i64,
}

/// The first `count` firings at or after `from`, with the skipped spans among them. An interval
/// counts from `from`, as it counts from a new schedule's creation: its first firing is one
/// interval later.
pub fn upcoming(
    schedule: &Schedule,
    from: Timestamp,
    count: usize,
) -> Result<Upcoming, ExplainError> {
    if count == 0 || count > COUNT_MAX {
        return Err(ExplainError::CountOutOfRange { got: count });
    }
    let zone = schedule.time_zone();
    let after = match schedule.interval_duration() {
        Some(_) => from,
        None => from.sub(Duration::from_micros(1)),
    };
    let mut walk = schedule.walk(after);
    let mut events = Vec::new();
    let mut fired = 0;
    // A skipped span needs a transition, at most a few a year: bounded by the firings.
    while fired < count && events.len() < 2 * count + 16 {
        let Some(step) = walk.next() else {
            break;
        };
        match step {
            Step::Fire(firing) => {
                fired += 1;
                let clock = wall_clock(zone, firing.at);
                let repeated_pass = match zone {
                    Some(zone) if firing.repeat_not_fired.is_none() => repeated_pass(zone, &clock),
                    _ => None,
                };
                let shift_seconds = match (zone, firing.moved, firing.repeat_not_fired) {
                    (Some(zone), true, _) => {
                        let before = wall_clock(Some(zone), firing.at.sub(Duration::from_secs(1)));
                        Some(i64::from(clock.offset_seconds - before.offset_seconds))
                    }
                    (Some(zone), false, Some(repeat)) => {
                        let later = wall_clock(Some(zone), repeat);
                        Some(i64::from(clock.offset_seconds - later.offset_seconds))
                    }
                    _ => None,
                };
                events.push(Event::Fire(FiringExplained {
                    at: firing.at,
                    clock,
                    named: firing.local,
                    moved: firing.moved,
                    merged: firing.merged,
                    repeat_not_fired: firing.repeat_not_fired,
                    repeated_pass,
                    shift_seconds,
                }));
            }
            Step::Skip(span) => events.push(Event::Skip(SkipExplained {
                at: span.at,
                clock: wall_clock(zone, span.at),
                first_local: span.first_local,
                last_local: span.last_local,
                count: span.count,
                shift_seconds: span.shift_seconds,
            })),
        }
    }
    let end = if fired < count {
        walk.end().cloned()
    } else {
        None
    };
    Ok(Upcoming { events, end })
}

/// `at` on the wall clock of `zone` (UTC for an interval).
pub fn wall_clock(zone: Option<Tz>, at: Timestamp) -> WallClock {
    let utc = at.to_chrono().naive_utc();
    match zone {
        Some(zone) => {
            let offset = zone.offset_from_utc_datetime(&utc);
            let seconds = offset.fix().local_minus_utc();
            WallClock {
                // Cron events stay within the year 9999, far from chrono's last date, where
                // the shift could not be added.
                local: utc
                    .checked_add_signed(chrono::TimeDelta::seconds(i64::from(seconds)))
                    .unwrap_or(utc),
                offset_seconds: seconds,
                abbreviation: offset.abbreviation().map(str::to_owned),
            }
        }
        None => WallClock {
            local: utc,
            offset_seconds: 0,
            abbreviation: Some("UTC".to_owned()),
        },
    }
}

/// Whether `clock`'s local time happens twice in `zone`, and if so whether this is its first
/// pass.
fn repeated_pass(zone: Tz, clock: &WallClock) -> Option<bool> {
    match zone.offset_from_local_datetime(&clock.local) {
        LocalResult::Ambiguous(first, _) => {
            Some(first.fix().local_minus_utc() == clock.offset_seconds)
        }
        _ => None,
    }
}

impl FiringExplained {
    /// What a person should know about this firing, or `None` for a plain one.
    pub fn note(&self) -> Option<String> {
        if self.moved {
            let named = if self.named.date() == self.clock.local.date() {
                clock_text(self.named)
            } else {
                self.named.format("%Y-%m-%d ").to_string() + &clock_text(self.named)
            };
            let mut note = format!("moved: {named} does not exist (spring forward)");
            if self.merged > 0 {
                let others = if self.merged == 1 {
                    "1 more local time".to_owned()
                } else {
                    format!("{} more local times", self.merged)
                };
                note.push_str(&format!("; fires once for it and {others} of the gap"));
            }
            return Some(note);
        }
        if let Some(repeat) = self.repeat_not_fired {
            return Some(format!(
                "{} happens again at {} (fall back): not fired again",
                clock_text(self.named),
                utc_text(repeat, self.at)
            ));
        }
        match self.repeated_pass {
            Some(true) => Some(format!(
                "first of two {}s (fall back): fires in both",
                clock_text(self.clock.local)
            )),
            Some(false) => Some(format!(
                "second {} (fall back): fires again",
                clock_text(self.clock.local)
            )),
            None => None,
        }
    }
}

impl SkipExplained {
    pub fn note(&self) -> String {
        let times = if self.count == 1 {
            format!(
                "local time {} does not exist",
                self.first_local.format("%Y-%m-%d %H:%M:%S")
            )
        } else {
            format!(
                "{} local times from {} to {} do not exist",
                self.count,
                self.first_local.format("%Y-%m-%d %H:%M:%S"),
                self.last_local.format("%Y-%m-%d %H:%M:%S")
            )
        };
        format!(
            "skipped: {times} (the clock jumps {}; a change of 3h or more is not daylight \
             saving time, so nothing fires for them)",
            shift_text(self.shift_seconds)
        )
    }
}

/// `02:30`, or `02:30:15` when the seconds matter.
fn clock_text(local: NaiveDateTime) -> String {
    if local.second() == 0 {
        local.format("%H:%M").to_string()
    } else {
        local.format("%H:%M:%S").to_string()
    }
}

/// `01:30Z` on the same UTC day as `near`, else the whole instant.
fn utc_text(at: Timestamp, near: Timestamp) -> String {
    let (at_utc, near_utc) = (at.to_chrono(), near.to_chrono());
    if at_utc.date_naive() == near_utc.date_naive() {
        format!("{}Z", clock_text(at_utc.naive_utc()))
    } else {
        at.to_rfc3339_exact()
    }
}

/// `forward 24h`, `back 1h 30m`.
fn shift_text(seconds: i64) -> String {
    let direction = if seconds >= 0 { "forward" } else { "back" };
    let seconds = seconds.unsigned_abs();
    let (hours, minutes) = (seconds / 3_600, seconds % 3_600 / 60);
    match (hours, minutes) {
        (0, minutes) => format!("{direction} {minutes}m"),
        (hours, 0) => format!("{direction} {hours}h"),
        (hours, minutes) => format!("{direction} {hours}h {minutes}m"),
    }
}

/// Reads the start of an explanation: RFC 3339 text, or a local date (`2026-03-28`, which is
/// local midnight) or local date and time (`2026-03-29T02:30`) in `zone` (UTC for an interval).
/// A local time a jump forward skips means the end of the gap, and a repeated one its first
/// pass, as the walk reads them.
pub fn parse_start(text: &str, zone: Option<Tz>) -> Option<Timestamp> {
    if let Some(at) = Timestamp::parse_rfc3339(text) {
        return Some(at);
    }
    let local = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|date| date.and_time(NaiveTime::MIN))
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M"))
        .ok()?;
    let zone = zone.unwrap_or(chrono_tz::UTC);
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => {
            Some(Timestamp::from_chrono(&at))
        }
        LocalResult::None => chrono_tz::GapInfo::new(&local, &zone)
            .and_then(|gap| gap.end)
            .map(|end| Timestamp::from_chrono(&end)),
    }
}

// ---------------------------------------------------------------- recovery after an outage

/// An outage: nothing ran from `from` to `to` (every occurrence up to `from` was decided), and
/// the engine looks again at `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outage {
    pub from: Timestamp,
    pub to: Timestamp,
    pub misfire: Misfire,
    pub overlap: OverlapPolicy,
    /// The job of the occurrence before the outage had not finished by its end (what the
    /// overlap policy looks at).
    pub previous_unfinished: bool,
}

/// What the engine does with an outage's occurrences when it recovers at its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The ledger the recovery writes, in order (a run of skips for one reason is one entry).
    pub entries: Vec<RecoveryEntry>,
    pub fired: u64,
    pub skipped: u64,
    /// An occurrence kept by `buffer_one`, fired when the job before it finishes.
    pub buffered: Option<Timestamp>,
    /// `cancel_previous` cancels the job of the occurrence before the outage.
    pub cancels_previous: bool,
    /// Every occurrence up to here is decided.
    pub decided_through: Timestamp,
    /// Whether every occurrence of the outage was decided (a long outage of a dense schedule
    /// takes the engine more looks than are explained).
    pub complete: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryEntry {
    Fired {
        at: Timestamp,
        run_at: Timestamp,
        late: Duration,
        moved: bool,
        why: String,
    },
    Skipped {
        at: Timestamp,
        last_at: Timestamp,
        count: u64,
        reason: SkipReason,
        why: String,
    },
    Failed {
        at: Timestamp,
        error: String,
    },
}

/// What recovering at `outage.to` from an outage since `outage.from` fires and skips, by
/// running the engine's plan on a schedule that stood still over the outage. The jobs the
/// recovery fires are taken to be still pending when it looks again (they have had no time to
/// run), which is what the overlap policy then meets.
pub fn recover(schedule: &Schedule, outage: &Outage) -> Result<Recovery, ExplainError> {
    if outage.to <= outage.from {
        return Err(ExplainError::OutageWindow {
            from: outage.from,
            to: outage.to,
        });
    }
    let length = outage.to.duration_since(outage.from);
    if length > OUTAGE_MAX {
        return Err(ExplainError::OutageTooLong {
            ms: length.as_millis(),
            max_ms: OUTAGE_MAX.as_millis(),
        });
    }
    let template = JobTemplate::new(
        Kind::new("explain").expect("a valid kind name"),
        Payload::null(),
    );
    let mut definition = ScheduleDefinition::new(
        ScheduleName::new("explain").expect("a valid schedule name"),
        schedule.clone(),
        template,
    );
    definition.misfire = outage.misfire;
    definition.overlap = outage.overlap;
    definition.validate()?;

    let mut stored = StoredSchedule::create(definition, outage.from);
    // Fixed, so that every explanation of the same question is the same.
    stored.id = ScheduleId::from_bytes([0; 16]);
    stored.cursor.high_water = outage.from;
    stored.cursor.next_check = Some(outage.from);
    let previous = JobId::from_bytes([0xff; 16]);
    let mut jobs: BTreeMap<JobId, JobState> = BTreeMap::new();
    if outage.previous_unfinished {
        stored.cursor.last_job = Some(previous);
        jobs.insert(previous, JobState::Running);
    }
    let mut ledger: Vec<OccurrenceEntry> = Vec::new();
    let mut run_at: BTreeMap<JobId, Timestamp> = BTreeMap::new();
    let mut cancels_previous = false;
    for _ in 0..RECOVERY_PLANS_MAX {
        if stored.cursor.next_check.is_none_or(|at| at > outage.to) {
            break;
        }
        let due = DueSchedule {
            last_job_state: stored
                .cursor
                .last_job
                .and_then(|job| jobs.get(&job).copied()),
            last_entry: ledger.last().cloned(),
            schedule: stored.clone(),
        };
        let (write, _) = plan::plan(outage.to, Duration::ZERO, &due);
        let progressed = !write.jobs.is_empty()
            || !write.append.is_empty()
            || write.extend.is_some()
            || write.schedule.cursor != stored.cursor;
        if let Some(extend) = write.extend
            && let Some(entry) = ledger.iter_mut().find(|entry| entry.seq == extend.seq)
            && let OccurrenceOutcome::Skipped { count, last_at, .. } = &mut entry.outcome
        {
            *count = extend.count;
            *last_at = extend.last_at;
        }
        for mut entry in write.append {
            entry.seq = ledger.len() as u64 + 1;
            ledger.push(entry);
        }
        for job in &write.jobs {
            jobs.insert(job.id, JobState::Scheduled);
            run_at.insert(job.id, job.run_at);
        }
        if let Some(cancelled) = write.cancel {
            jobs.insert(cancelled, JobState::Cancelled);
            cancels_previous |= cancelled == previous;
        }
        stored = write.schedule;
        if !progressed {
            break;
        }
    }

    let misfire = outage.misfire;
    let window_start = outage.to.sub(misfire.catch_up_window);
    let mut entries = Vec::with_capacity(ledger.len());
    let (mut fired, mut skipped) = (0, 0);
    for entry in &ledger {
        entries.push(match &entry.outcome {
            OccurrenceOutcome::Fired {
                job, late, moved, ..
            } => {
                fired += 1;
                let why = if late.is_zero() {
                    "due at the recovery: fires".to_owned()
                } else if *late <= misfire.grace {
                    format!(
                        "late by {}, within the grace of {}: fires",
                        duration_text(*late),
                        duration_text(misfire.grace)
                    )
                } else {
                    format!(
                        "missed (more than the grace of {} late); {}",
                        duration_text(misfire.grace),
                        match misfire.action {
                            MisfireAction::Latest => "misfire policy latest fires the latest",
                            MisfireAction::All { .. } => "misfire policy all fires it",
                            MisfireAction::Skip => "fires",
                        }
                    )
                };
                RecoveryEntry::Fired {
                    at: entry.at,
                    run_at: run_at.get(job).copied().unwrap_or(outage.to),
                    late: *late,
                    moved: *moved,
                    why,
                }
            }
            OccurrenceOutcome::Skipped {
                reason,
                count,
                last_at,
            } => {
                skipped += count;
                RecoveryEntry::Skipped {
                    at: entry.at,
                    last_at: *last_at,
                    count: *count,
                    reason: *reason,
                    why: skip_why(*reason, &misfire, outage.overlap, entry.at < window_start),
                }
            }
            OccurrenceOutcome::Failed { error } => RecoveryEntry::Failed {
                at: entry.at,
                error: error.clone(),
            },
        });
    }
    Ok(Recovery {
        entries,
        fired,
        skipped,
        buffered: stored.cursor.buffered,
        cancels_previous,
        decided_through: stored.cursor.high_water,
        complete: stored.cursor.next_check.is_none_or(|at| at > outage.to),
    })
}

fn skip_why(
    reason: SkipReason,
    misfire: &Misfire,
    overlap: OverlapPolicy,
    starts_before_window: bool,
) -> String {
    match reason {
        SkipReason::Misfire => {
            let policy = match misfire.action {
                MisfireAction::Skip => {
                    "misfire policy skip skips every missed occurrence".to_owned()
                }
                MisfireAction::Latest => {
                    "misfire policy latest fires only the latest missed occurrence".to_owned()
                }
                MisfireAction::All { limit } => {
                    format!("misfire policy all fires at most {limit} missed occurrences")
                }
            };
            let mut why = format!(
                "missed (more than the grace of {} late): {policy}",
                duration_text(misfire.grace)
            );
            if starts_before_window {
                why.push_str(&format!(
                    "; occurrences older than the catch-up window of {} are skipped whatever \
                     the policy",
                    duration_text(misfire.catch_up_window)
                ));
            }
            why
        }
        SkipReason::Overlap => format!(
            "the previous occurrence's job had not finished (overlap policy {})",
            overlap.as_str()
        ),
        SkipReason::Paused => "the schedule was paused".to_owned(),
        SkipReason::OutsideWindow => "before the schedule's start".to_owned(),
        SkipReason::ClockChange => {
            "its local time was skipped by a clock change of 3h or more".to_owned()
        }
    }
}

/// `850ms`, `90s`, `1m`, `1h 30m`, `1d`.
fn duration_text(span: Duration) -> String {
    let millis = span.as_millis();
    if !millis.is_multiple_of(1_000) {
        return format!("{millis}ms");
    }
    let seconds = span.as_secs();
    if seconds == 0 {
        return "0s".to_owned();
    }
    if seconds < 3_600 && !seconds.is_multiple_of(60) {
        // Under an hour with odd seconds reads best as seconds alone.
        return format!("{seconds}s");
    }
    let mut parts = Vec::new();
    let mut left = seconds;
    for (size, unit) in [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")] {
        if left >= size {
            parts.push(format!("{}{unit}", left / size));
            left %= size;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).expect("a valid time")
    }

    fn berlin(expression: &str) -> Schedule {
        Schedule::cron(expression, "Europe/Berlin").expect("a valid expression")
    }

    fn firings(upcoming: &Upcoming) -> Vec<&FiringExplained> {
        upcoming
            .events
            .iter()
            .filter_map(|event| match event {
                Event::Fire(firing) => Some(firing),
                Event::Skip(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_date_is_local_midnight_and_a_missing_local_time_the_end_of_its_gap() {
        let zone = Some(chrono_tz::Europe::Berlin);
        assert_eq!(
            parse_start("2026-03-28", zone),
            Some(at("2026-03-27T23:00:00Z"))
        );
        assert_eq!(
            parse_start("2026-03-29T02:30", zone),
            Some(at("2026-03-29T01:00:00Z"))
        );
        assert_eq!(
            parse_start("2026-10-25T02:30:00", zone),
            Some(at("2026-10-25T00:30:00Z"))
        );
        assert_eq!(
            parse_start("2026-03-28T12:00:00+01:00", zone),
            Some(at("2026-03-28T11:00:00Z"))
        );
        assert_eq!(
            parse_start("2026-03-28", None),
            Some(at("2026-03-28T00:00:00Z"))
        );
        // Cairo's clock jumps at midnight: local midnight is 01:00 that day.
        assert_eq!(
            parse_start("2026-04-24", Some(chrono_tz::Africa::Cairo)),
            Some(at("2026-04-23T22:00:00Z"))
        );
        assert_eq!(parse_start("yesterday", zone), None);
    }

    #[test]
    fn berlin_spring_forward_is_moved_and_said_so() {
        let upcoming =
            upcoming(&berlin("30 2 * * *"), at("2026-03-27T23:00:00Z"), 3).expect("an answer");
        let firings = firings(&upcoming);
        assert_eq!(firings.len(), 3);
        assert_eq!(firings[0].at, at("2026-03-28T01:30:00Z"));
        assert_eq!(firings[0].note(), None);
        let moved = firings[1];
        assert_eq!(moved.at, at("2026-03-29T01:00:00Z"));
        assert!(moved.moved);
        assert_eq!(moved.clock.offset_seconds, 7_200);
        assert_eq!(moved.clock.abbreviation.as_deref(), Some("CEST"));
        assert_eq!(moved.clock.local.format("%H:%M").to_string(), "03:00");
        assert_eq!(moved.shift_seconds, Some(3_600));
        assert_eq!(
            moved.note().as_deref(),
            Some("moved: 02:30 does not exist (spring forward)")
        );
        assert_eq!(firings[2].at, at("2026-03-30T00:30:00Z"));
        assert_eq!(upcoming.end, None);
    }

    #[test]
    fn berlin_fall_back_fires_once_and_says_where_the_repeat_is() {
        let nightly =
            upcoming(&berlin("30 2 * * *"), at("2026-10-24T22:00:00Z"), 2).expect("an answer");
        let nights = firings(&nightly);
        assert_eq!(nights[0].at, at("2026-10-25T00:30:00Z"));
        assert_eq!(nights[0].clock.abbreviation.as_deref(), Some("CEST"));
        assert_eq!(nights[0].repeat_not_fired, Some(at("2026-10-25T01:30:00Z")));
        assert_eq!(
            nights[0].note().as_deref(),
            Some("02:30 happens again at 01:30Z (fall back): not fired again")
        );
        assert_eq!(nights[1].at, at("2026-10-26T01:30:00Z"));
        // A wildcard expression fires in both passes, and each is named.
        let hourly =
            upcoming(&berlin("30 * * * *"), at("2026-10-25T00:00:00Z"), 2).expect("an answer");
        let notes: Vec<Option<String>> = firings(&hourly).iter().map(|f| f.note()).collect();
        assert_eq!(
            notes,
            [
                Some("first of two 02:30s (fall back): fires in both".to_owned()),
                Some("second 02:30 (fall back): fires again".to_owned()),
            ]
        );
    }

    #[test]
    fn a_large_jump_is_a_skipped_span() {
        let apia = Schedule::cron("0 12 * * *", "Pacific/Apia").expect("valid");
        let upcoming = upcoming(&apia, at("2011-12-28T00:00:00Z"), 3).expect("an answer");
        let spans: Vec<&SkipExplained> = upcoming
            .events
            .iter()
            .filter_map(|event| match event {
                Event::Skip(span) => Some(span),
                Event::Fire(_) => None,
            })
            .collect();
        assert_eq!(spans.len(), 1, "{upcoming:?}");
        assert_eq!(spans[0].count, 1);
        assert!(
            spans[0].note().contains("forward 24h"),
            "{}",
            spans[0].note()
        );
        assert_eq!(firings(&upcoming).len(), 3);
    }

    #[test]
    fn counts_are_bounded() {
        let schedule = berlin("30 2 * * *");
        for count in [0, COUNT_MAX + 1] {
            assert_eq!(
                upcoming(&schedule, at("2026-01-01T00:00:00Z"), count),
                Err(ExplainError::CountOutOfRange { got: count })
            );
        }
    }

    fn outage(from: &str, to: &str, action: MisfireAction) -> Outage {
        Outage {
            from: at(from),
            to: at(to),
            misfire: Misfire {
                action,
                ..Misfire::default()
            },
            overlap: OverlapPolicy::Allow,
            previous_unfinished: false,
        }
    }

    #[test]
    fn latest_fires_the_last_missed_and_skips_the_rest_in_one_entry() {
        let hourly = Schedule::cron("0 * * * *", "UTC").expect("valid");
        let recovery = recover(
            &hourly,
            &outage(
                "2026-05-01T00:30:00Z",
                "2026-05-01T05:10:00Z",
                MisfireAction::Latest,
            ),
        )
        .expect("an answer");
        assert!(recovery.complete);
        assert_eq!((recovery.fired, recovery.skipped), (1, 4));
        match &recovery.entries[..] {
            [
                RecoveryEntry::Skipped {
                    at: first,
                    last_at,
                    count: 4,
                    reason: SkipReason::Misfire,
                    ..
                },
                RecoveryEntry::Fired {
                    at: fired, run_at, ..
                },
            ] => {
                assert_eq!(*first, at("2026-05-01T01:00:00Z"));
                assert_eq!(*last_at, at("2026-05-01T04:00:00Z"));
                assert_eq!(*fired, at("2026-05-01T05:00:00Z"));
                assert_eq!(*run_at, at("2026-05-01T05:10:00Z"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(recovery.decided_through, at("2026-05-01T05:00:00Z"));
    }

    #[test]
    fn all_fires_up_to_its_limit_and_grace_fires_late() {
        let hourly = Schedule::cron("0 * * * *", "UTC").expect("valid");
        let recovery = recover(
            &hourly,
            &outage(
                "2026-05-01T00:30:00Z",
                "2026-05-01T05:00:30Z",
                MisfireAction::All { limit: 2 },
            ),
        )
        .expect("an answer");
        // 01:00 .. 04:00 are missed: two fire, two are skipped; 05:00 is 30 s late, within
        // the grace: it fires.
        assert_eq!((recovery.fired, recovery.skipped), (3, 2));
        let fired: Vec<Timestamp> = recovery
            .entries
            .iter()
            .filter_map(|entry| match entry {
                RecoveryEntry::Fired { at, .. } => Some(*at),
                _ => None,
            })
            .collect();
        assert_eq!(
            fired,
            [
                at("2026-05-01T01:00:00Z"),
                at("2026-05-01T02:00:00Z"),
                at("2026-05-01T05:00:00Z")
            ]
        );
    }

    #[test]
    fn skip_with_an_unfinished_previous_job_under_overlap_skip() {
        let hourly = Schedule::cron("0 * * * *", "UTC").expect("valid");
        let mut question = outage(
            "2026-05-01T00:30:00Z",
            "2026-05-01T03:00:10Z",
            MisfireAction::Latest,
        );
        question.overlap = OverlapPolicy::Skip;
        question.previous_unfinished = true;
        let recovery = recover(&hourly, &question).expect("an answer");
        assert_eq!(recovery.fired, 0, "{recovery:?}");
        assert_eq!(recovery.skipped, 3);
        assert!(recovery.complete);
        question.overlap = OverlapPolicy::CancelPrevious;
        let recovery = recover(&hourly, &question).expect("an answer");
        assert!(recovery.cancels_previous, "{recovery:?}");
        assert!(recovery.fired >= 1);
    }

    #[test]
    fn a_bad_outage_is_refused() {
        let hourly = Schedule::cron("0 * * * *", "UTC").expect("valid");
        assert!(matches!(
            recover(
                &hourly,
                &outage(
                    "2026-05-01T02:00:00Z",
                    "2026-05-01T01:00:00Z",
                    MisfireAction::Skip
                )
            ),
            Err(ExplainError::OutageWindow { .. })
        ));
        assert!(matches!(
            recover(
                &hourly,
                &outage(
                    "2026-05-01T00:00:00Z",
                    "2026-05-02T00:00:00Z",
                    MisfireAction::All { limit: 0 }
                )
            ),
            Err(ExplainError::Invalid(
                ValidationError::CatchUpLimitOutOfRange { .. }
            ))
        ));
    }

    #[test]
    fn durations_read_in_their_units() {
        assert_eq!(duration_text(Duration::from_secs(60)), "1m");
        assert_eq!(duration_text(Duration::from_secs(90)), "90s");
        assert_eq!(duration_text(Duration::from_secs(86_400)), "1d");
        assert_eq!(duration_text(Duration::from_secs(5_400)), "1h 30m");
        assert_eq!(duration_text(Duration::from_millis(1_500)), "1500ms");
        assert_eq!(duration_text(Duration::ZERO), "0s");
        assert_eq!(shift_text(-3_600), "back 1h");
    }
}
