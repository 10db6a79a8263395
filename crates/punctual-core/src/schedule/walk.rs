//! The walk of a recurrence through time: every instant it fires at, and every span of local
//! time a clock change made it skip, in order. It owns the rules for daylight saving time and
//! other changes of a zone's UTC offset; it must not look at a clock (time comes in as
//! `after`) nor do I/O.
//!
//! # Clock changes, as ISC/Vixie cron (Debian's cron(8)) handles them
//!
//! A cron expression names local wall-clock times in its IANA time zone. Where the zone's UTC
//! offset changes, some local times never happen (the clock jumps forward) and some happen twice
//! (it goes back). The walk decides what fires as Vixie cron does:
//!
//! 1. **Two classes.** An expression is *fixed-time* when neither its minute field nor its hour
//!    field starts with `*`: values, lists and ranges, such as `30 2 * * *`, `0,30 1-3 * * *`,
//!    `0-59/5 2 * * *` (a field is judged by its first character, as Vixie does, so `0,*/15` is
//!    fixed too). It is a *wildcard* expression when the minute or the hour field starts with
//!    `*` (`*`, `*/15`). With six fields the seconds come first and do not count: the minute is
//!    the second field and the hour the third. `@hourly` is wildcard (it means `0 * * * *`);
//!    `@daily`, `@midnight`, `@weekly`, `@monthly`, `@yearly` and `@annually` are fixed-time.
//!    (croner refuses `?` outside the two day fields, so `?` never decides a class.)
//! 2. **Wildcard expressions keep their rhythm in real time.** They fire at every instant whose
//!    local time matches: in a repeated hour (the clock goes back) they fire in both passes, and
//!    the local times that a jump forward skips do not exist, so nothing fires for them.
//! 3. **Fixed-time expressions fire once for each matching local time**, across a change of the
//!    offset by less than 3 hours:
//!    - *Forward* (spring): a matching local time that the jump skips fires at the first instant
//!      after the gap, which is the transition instant. Every matching local time in the gap,
//!      and a match at the local time the clock jumps to, fire there once, together: one
//!      `Firing` with `moved` set, `local` the first skipped local time and `merged` the number
//!      of further local times it stands for.
//!    - *Backward* (autumn): a matching local time that happens twice fires at its first
//!      occurrence only; `Firing::repeat_not_fired` names the instant of the second.
//! 4. **A change of 3 hours or more is not daylight saving time** (Pacific/Apia skipped
//!    2011-12-30 by moving from UTC−10 to UTC+14). Forward, the matching local times it skips do
//!    not fire, in either class: the walk reports them as one `SkippedSpan`, 1 µs before the
//!    transition, and goes on after it. Backward, both passes fire, in either class (Vixie: time
//!    "has changed a *lot*", run everything normally).
//! 5. **A walk never ends silently.** It ends after the last event in the years a `Timestamp`
//!    can write, UTC 0000-01-01 to 9999-12-31 (`WalkEnd::EndOfTime`, which is also where a walk
//!    that starts outside those years ends at once), or when croner fails to compute a match
//!    (`WalkEnd::Failed`; never seen for a schedule that `Schedule::cron` accepted). An interval
//!    walks on to the last instant a `Timestamp` holds.
//!
//! The threshold is the size of the change, `|offset after − offset before|`, and "less than 3
//! hours" is the same strict bound both ways. (Vixie measures in minutes, including the minute
//! it sleeps through, so it takes a backward change of exactly 3 hours for daylight saving time;
//! here that is "3 hours or more".) Vixie works in minutes and fires skipped jobs once it wakes
//! after the jump; the walk works in seconds (six-field expressions) and names the transition
//! instant itself.
//!
//! # How
//!
//! croner finds the next matching *naive* local time (it searches `chrono::NaiveDateTime`, so it
//! never sees a time zone and none of its own daylight-saving rules apply), and chrono-tz maps
//! that local time to instants: one (fires there), two (a repeat: first or both passes), or none
//! (a gap: `chrono_tz::GapInfo` gives the transition instant). Before that, the walk checks
//! whether its own cursor sits inside a repeated range, because the second pass of that range
//! lies ahead of it even though the naive search has left it behind. A step therefore costs one
//! croner search and three zone lookups, plus a binary search for the transition (second
//! precision, about 12 lookups for an hour) when the cursor is inside a repeated range.
//!
//! croner stops searching at the year 5000. The Gregorian calendar repeats every 400 years
//! (146,097 days, a whole number of weeks) and an expression has no year field, so every naive
//! search is moved by whole 400-year cycles to start between the years 2000 and 2399, and its
//! answer moved back.

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone,
    Timelike,
};
use chrono_tz::{GapInfo, Tz};
use croner::Cron;

use super::{Recurrence, Schedule};
use crate::time::Timestamp;

/// The first instant a schedule can write: 0000-01-01T00:00:00Z.
pub(super) const FIRST_INSTANT: Timestamp = Timestamp::from_micros(-62_167_219_200_000_000);

/// The last instant a schedule can write: 9999-12-31T23:59:59.999999Z.
pub(super) const LAST_INSTANT: Timestamp = Timestamp::from_micros(253_402_300_799_999_999);

/// A change of the UTC offset at least this large is not daylight saving time (rule 4).
const DST_SHIFT_LIMIT_SECONDS: i64 = 3 * 3_600;

/// Days in 400 Gregorian years: 20,871 weeks, after which every date has the same weekday.
const GREGORIAN_CYCLE_DAYS: i64 = 146_097;

/// Positions one event may take: a step moves past a transition or a repeated range at most a
/// few times before it finds its event, so more means the walk stopped advancing.
const POSITIONS_PER_EVENT_MAX: u32 = 16;

const MICROS_PER_SECOND: i64 = 1_000_000;

/// One event of a recurrence's walk. Events come in strictly increasing `at` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The recurrence fires.
    Fire(Firing),
    /// A clock change of 3 hours or more skipped matching local times; nothing fires for them.
    Skip(SkippedSpan),
}

impl Step {
    /// The instant of the event: where a walk resumed from it goes on.
    pub fn at(&self) -> Timestamp {
        match self {
            Step::Fire(firing) => firing.at,
            Step::Skip(span) => span.at,
        }
    }
}

/// An instant a recurrence fires at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Firing {
    /// The instant it fires.
    pub at: Timestamp,
    /// The local time the expression named; for a moved firing, the first skipped local time it
    /// stands for. For an interval, `at` as a UTC wall-clock time (saturating at chrono's last
    /// date, in the year 262142).
    pub local: NaiveDateTime,
    /// A jump forward skipped `local`, and the firing moved to the end of the gap (fixed-time
    /// expressions only).
    pub moved: bool,
    /// How many further local times this firing stands for: the other matching local times of
    /// the same gap, and a match at the local time the clock jumped to (fixed-time, `moved`).
    pub merged: u32,
    /// The clock goes back later and `local` happens again at this instant, where it does not
    /// fire (fixed-time expressions, changes of less than 3 hours).
    pub repeat_not_fired: Option<Timestamp>,
}

/// Matching local times that a jump forward of 3 hours or more skipped (rule 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkippedSpan {
    /// 1 µs before the transition instant, so that events stay strictly increasing (a firing at
    /// the transition itself comes next) and a walk resumed from `at` goes on after the span.
    pub at: Timestamp,
    /// The first matching local time skipped.
    pub first_local: NaiveDateTime,
    /// The last matching local time skipped (`first_local` when only one was).
    pub last_local: NaiveDateTime,
    /// How many matching local times were skipped: exact, counted per day and field rather than
    /// one by one (86,400 for `* * * * * *` over a skipped day).
    pub count: u64,
    /// The change of the UTC offset, in seconds (86,400 for Pacific/Apia in 2011).
    pub shift_seconds: i64,
}

/// Why a walk ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalkEnd {
    /// No event is left in the years a schedule can write (UTC 0000 to 9999): the next one would
    /// fall after 9999-12-31T23:59:59.999999Z, or the walk started outside those years. For an
    /// interval: the next occurrence would pass the last instant a `Timestamp` holds.
    EndOfTime,
    /// croner failed to compute the next matching local time after `after`; the recurrence has
    /// no defined occurrence past it. A schedule that `Schedule::cron` accepted has not been
    /// seen to do this.
    Failed { after: Timestamp, reason: String },
}

/// The events of a recurrence strictly after an instant (`Schedule::walk`).
///
/// Resuming a walk from the `at` of any of its events gives exactly the events after that one.
#[derive(Debug)]
pub struct Walk<'a> {
    schedule: &'a Schedule,
    /// Every event returned from here on is strictly after this instant.
    cursor: Timestamp,
    end: Option<WalkEnd>,
    /// The last repeated range the walk met, so that a dense expression inside it finds the
    /// transition once rather than at every step.
    fold: Option<Fold>,
}

impl<'a> Walk<'a> {
    pub(super) fn new(schedule: &'a Schedule, after: Timestamp) -> Walk<'a> {
        let outside = matches!(schedule.0, Recurrence::Cron { .. })
            && !(FIRST_INSTANT..=LAST_INSTANT).contains(&after);
        Walk {
            schedule,
            cursor: after,
            end: outside.then_some(WalkEnd::EndOfTime),
            fold: None,
        }
    }

    /// Why the walk ended, once `next` has returned `None`; `None` while it goes on.
    pub fn end(&self) -> Option<&WalkEnd> {
        self.end.as_ref()
    }
}

impl Iterator for Walk<'_> {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        if self.end.is_some() {
            return None;
        }
        let after = self.cursor;
        let found = match &self.schedule.0 {
            Recurrence::Interval(interval) => {
                // `add` saturates: at the end of time there is no later occurrence.
                let at = after.add(*interval);
                Ok((at > after).then(|| {
                    Step::Fire(Firing {
                        at,
                        local: at.to_chrono().naive_utc(),
                        moved: false,
                        merged: 0,
                        repeat_not_fired: None,
                    })
                }))
            }
            Recurrence::Cron {
                time_zone,
                parsed,
                fixed_time,
                ..
            } => {
                let search = Search {
                    cron: parsed,
                    zone: *time_zone,
                    fixed_time: *fixed_time,
                };
                search.next_event(after, &mut self.fold)
            }
        };
        match found {
            Ok(Some(step)) if step.at() > after => {
                self.cursor = step.at();
                Some(step)
            }
            Ok(Some(step)) => {
                // Strictly increasing is what makes a walk end and resume; an event at or
                // before the cursor would repeat forever.
                self.end = Some(WalkEnd::Failed {
                    after,
                    reason: format!("the walk did not advance: {step:?}"),
                });
                None
            }
            Ok(None) => {
                self.end = Some(WalkEnd::EndOfTime);
                None
            }
            Err(Failure(reason)) => {
                self.end = Some(WalkEnd::Failed { after, reason });
                None
            }
        }
    }
}

/// Why a step could not be computed.
struct Failure(String);

impl From<croner::errors::CronError> for Failure {
    fn from(error: croner::errors::CronError) -> Failure {
        Failure(format!("croner: {error}"))
    }
}

/// A repeated range of local time: at `transition` the offset goes from `before` down to
/// `after`, so the local times `[transition + after, transition + before)` happen twice.
#[derive(Clone, Copy, Debug)]
struct Fold {
    /// µs since the epoch.
    transition: i64,
    /// Seconds east of UTC.
    before: i64,
    after: i64,
}

impl Fold {
    fn shift_seconds(&self) -> i64 {
        self.before - self.after
    }

    fn is_daylight_saving(&self) -> bool {
        self.shift_seconds() < DST_SHIFT_LIMIT_SECONDS
    }
}

/// One cron recurrence, for the length of one step.
struct Search<'a> {
    cron: &'a Cron,
    zone: Tz,
    fixed_time: bool,
}

impl Search<'_> {
    /// The first event strictly after `after`, or `None` past the last instant a schedule can
    /// write.
    fn next_event(
        &self,
        after: Timestamp,
        fold_seen: &mut Option<Fold>,
    ) -> Result<Option<Step>, Failure> {
        let floor = after.as_micros();
        // Where the search stands: the instant, and whether an event there counts. Only a
        // transition instant is ever inclusive, and it is a whole second.
        let mut position = floor;
        let mut inclusive = false;
        for _ in 0..POSITIONS_PER_EVENT_MAX {
            if position > LAST_INSTANT.as_micros() {
                return Ok(None);
            }
            let offset = self.offset_at(position)?;
            let local = naive_utc(position + offset * MICROS_PER_SECOND)?;
            let mut found = None;
            if let LocalResult::Ambiguous(first, second) =
                self.zone.offset_from_local_datetime(&whole_second(local))
            {
                // The cursor is inside a repeated range. The naive search below moves on from
                // its local time, but the range's second pass lies ahead in real time.
                let (before, after_change) = fold_offsets(first, second);
                let fold =
                    self.fold_around(whole_second(local), before, after_change, fold_seen)?;
                let range_end = naive_utc(fold.transition + fold.before * MICROS_PER_SECOND)?;
                if offset == fold.before {
                    // First pass.
                    let next = self.next_local(local, inclusive)?;
                    if next < range_end {
                        let at = micros_of(next) - fold.before * MICROS_PER_SECOND;
                        let repeat = micros_of(next) - fold.after * MICROS_PER_SECOND;
                        let skip_repeat = self.fixed_time && fold.is_daylight_saving();
                        return Ok(self.fire(at, next, skip_repeat.then_some(repeat)));
                    }
                    position = fold.transition;
                    inclusive = true;
                    continue;
                }
                // Second pass.
                if self.fixed_time && fold.is_daylight_saving() {
                    // Rule 3: nothing repeats. Go on where the local time is new again.
                    position = fold.transition + fold.shift_seconds() * MICROS_PER_SECOND;
                    inclusive = true;
                    continue;
                }
                let next = self.next_local(local, inclusive)?;
                if next < range_end {
                    let at = micros_of(next) - fold.after * MICROS_PER_SECOND;
                    return Ok(self.fire(at, next, None));
                }
                found = Some(next);
            }
            let next = match found {
                Some(next) => next,
                None => self.next_local(local, inclusive)?,
            };
            match self.zone.offset_from_local_datetime(&next) {
                LocalResult::Single(offset) => {
                    let at = micros_of(next) - seconds_east(offset) * MICROS_PER_SECOND;
                    return Ok(self.fire(at, next, None));
                }
                LocalResult::Ambiguous(first, second) => {
                    // A repeated range ahead: its first pass comes first.
                    let (before, after_change) = fold_offsets(first, second);
                    let at = micros_of(next) - before * MICROS_PER_SECOND;
                    let repeat = micros_of(next) - after_change * MICROS_PER_SECOND;
                    let skip_repeat =
                        self.fixed_time && before - after_change < DST_SHIFT_LIMIT_SECONDS;
                    return Ok(self.fire(at, next, skip_repeat.then_some(repeat)));
                }
                LocalResult::None => {
                    // `next` lies in a gap: the clock jumps over it at `transition`.
                    let transition = GapInfo::new(&next, &self.zone)
                        .and_then(|gap| gap.end)
                        .map(|end| end.timestamp_micros())
                        .ok_or_else(|| Failure(format!("no end to the gap around {next}")))?;
                    let before = self.offset_at(transition - 1)?;
                    let after_change = self.offset_at(transition)?;
                    let shift = after_change - before;
                    let resumed = naive_utc(transition + after_change * MICROS_PER_SECOND)?;
                    if shift < DST_SHIFT_LIMIT_SECONDS {
                        if !self.fixed_time {
                            // Rule 2: those local times do not exist.
                            position = transition;
                            inclusive = true;
                            continue;
                        }
                        // Rule 3: one firing at the transition for the whole gap and a match
                        // at the local time the clock jumped to. Under 3 hours of seconds, so
                        // the count fits.
                        let in_gap = self.count_local(next, resumed)?;
                        let at_resume = u64::from(self.matches_local(resumed)?);
                        let merged =
                            u32::try_from(in_gap.saturating_sub(1) + at_resume).unwrap_or(u32::MAX);
                        if transition > LAST_INSTANT.as_micros() {
                            return Ok(None);
                        }
                        return Ok(Some(Step::Fire(Firing {
                            at: Timestamp::from_micros(transition),
                            local: next,
                            moved: true,
                            merged,
                            repeat_not_fired: None,
                        })));
                    }
                    // Rule 4.
                    let at = transition - 1;
                    if at > floor {
                        if at > LAST_INSTANT.as_micros() {
                            return Ok(None);
                        }
                        return Ok(Some(Step::Skip(SkippedSpan {
                            at: Timestamp::from_micros(at),
                            first_local: next,
                            last_local: self.previous_local(resumed)?,
                            count: self.count_local(next, resumed)?,
                            shift_seconds: shift,
                        })));
                    }
                    // Resumed from the span itself: go on after it.
                    position = transition;
                    inclusive = true;
                }
            }
        }
        Err(Failure(format!(
            "the walk did not advance from {after} in {POSITIONS_PER_EVENT_MAX} positions"
        )))
    }

    /// A plain firing at `at` (µs), or the end of the walk past the last writable instant.
    fn fire(&self, at: i64, local: NaiveDateTime, repeat_not_fired: Option<i64>) -> Option<Step> {
        (at <= LAST_INSTANT.as_micros()).then(|| {
            Step::Fire(Firing {
                at: Timestamp::from_micros(at),
                local,
                moved: false,
                merged: 0,
                repeat_not_fired: repeat_not_fired.map(Timestamp::from_micros),
            })
        })
    }

    /// The zone's UTC offset at `micros`, in seconds east.
    fn offset_at(&self, micros: i64) -> Result<i64, Failure> {
        let utc = naive_utc(micros)?;
        Ok(seconds_east(self.zone.offset_from_utc_datetime(&utc)))
    }

    /// The repeated range that contains the local time `local`, which maps to the instants
    /// `local − before` and `local − after`; the transition lies after the first and at or
    /// before the second.
    fn fold_around(
        &self,
        local: NaiveDateTime,
        before: i64,
        after: i64,
        seen: &mut Option<Fold>,
    ) -> Result<Fold, Failure> {
        let mut early = micros_of(local) - before * MICROS_PER_SECOND;
        let mut late = micros_of(local) - after * MICROS_PER_SECOND;
        if let Some(fold) = *seen
            && fold.before == before
            && fold.after == after
            && early < fold.transition
            && fold.transition <= late
        {
            return Ok(fold);
        }
        // Transitions fall on whole seconds; `early` and `late` are whole seconds.
        while late - early > MICROS_PER_SECOND {
            let middle = early + (late - early) / MICROS_PER_SECOND / 2 * MICROS_PER_SECOND;
            if self.offset_at(middle)? == before {
                early = middle;
            } else {
                late = middle;
            }
        }
        let fold = Fold {
            transition: late,
            before,
            after,
        };
        *seen = Some(fold);
        Ok(fold)
    }

    /// The first matching local time after `local` (at or after, when `inclusive`; then `local`
    /// is a whole second).
    fn next_local(&self, local: NaiveDateTime, inclusive: bool) -> Result<NaiveDateTime, Failure> {
        let (moved, cycles) = into_croner_years(local)?;
        let found = self.cron.find_next_occurrence(&moved, inclusive)?;
        out_of_croner_years(found, cycles)
    }

    /// The last matching local time before `local`.
    fn previous_local(&self, local: NaiveDateTime) -> Result<NaiveDateTime, Failure> {
        let (moved, cycles) = into_croner_years(local)?;
        let found = self.cron.find_previous_occurrence(&moved, false)?;
        out_of_croner_years(found, cycles)
    }

    fn matches_local(&self, local: NaiveDateTime) -> Result<bool, Failure> {
        let (moved, _) = into_croner_years(local)?;
        Ok(self.cron.is_time_matching(&moved)?)
    }

    /// How many matching local times lie in `[from, until)` (`from` a whole second): croner
    /// finds each matching day, and the time-of-day fields are counted, not walked.
    fn count_local(&self, from: NaiveDateTime, until: NaiveDateTime) -> Result<u64, Failure> {
        let fields = ClockFields::of(self.cron);
        let mut count = 0;
        let mut search = from;
        while search < until {
            let found = self.next_local(search, true)?;
            if found >= until {
                break;
            }
            let midnight = found
                .date()
                .succ_opt()
                .ok_or_else(|| Failure(format!("no day after {found}")))?
                .and_time(NaiveTime::MIN);
            let stop = if until < midnight {
                until.num_seconds_from_midnight()
            } else {
                86_400
            };
            count +=
                fields.count_before(stop) - fields.count_before(found.num_seconds_from_midnight());
            search = midnight;
        }
        Ok(count)
    }
}

/// The values of an expression's time-of-day fields. Whether a local time matches is whether
/// its date matches and its hour, minute and second are each in their field's set, so the
/// matches of one matching day can be counted from these sets.
struct ClockFields {
    hours: Vec<u16>,
    minutes: Vec<u16>,
    seconds: Vec<u16>,
}

impl ClockFields {
    fn of(cron: &Cron) -> ClockFields {
        ClockFields {
            hours: cron.pattern.hours.values(),
            minutes: cron.pattern.minutes.values(),
            seconds: cron.pattern.seconds.values(),
        }
    }

    /// How many matching times of day lie before `seconds_of_day` (0 ..= 86,400).
    fn count_before(&self, seconds_of_day: u32) -> u64 {
        let below = |values: &[u16], limit: u32| {
            values
                .iter()
                .filter(|&&value| u32::from(value) < limit)
                .count() as u64
        };
        let has = |values: &[u16], value: u32| values.iter().any(|&v| u32::from(v) == value);
        let (hour, minute, second) = (
            seconds_of_day / 3_600,
            seconds_of_day % 3_600 / 60,
            seconds_of_day % 60,
        );
        let per_minute = self.seconds.len() as u64;
        let per_hour = self.minutes.len() as u64 * per_minute;
        let mut count = below(&self.hours, hour) * per_hour;
        if has(&self.hours, hour) {
            count += below(&self.minutes, minute) * per_minute;
            if has(&self.minutes, minute) {
                count += below(&self.seconds, second);
            }
        }
        count
    }
}

/// `local` moved by whole 400-year cycles to a year between 2000 and 2399, and the number of
/// cycles moved (croner searches no further than the year 5000, and no earlier than the year 1).
fn into_croner_years(local: NaiveDateTime) -> Result<(NaiveDateTime, i64), Failure> {
    let cycles = i64::from(local.year() - 2000).div_euclid(400);
    let moved = TimeDelta::try_days(cycles * GREGORIAN_CYCLE_DAYS)
        .and_then(|shift| local.checked_sub_signed(shift))
        .ok_or_else(|| Failure(format!("cannot move {local} by {cycles} cycles")))?;
    Ok((moved, cycles))
}

fn out_of_croner_years(found: NaiveDateTime, cycles: i64) -> Result<NaiveDateTime, Failure> {
    TimeDelta::try_days(cycles * GREGORIAN_CYCLE_DAYS)
        .and_then(|shift| found.checked_add_signed(shift))
        .ok_or_else(|| Failure(format!("cannot move {found} back by {cycles} cycles")))
}

/// The two offsets of a repeated local time, larger (before the change) first.
fn fold_offsets(first: chrono_tz::TzOffset, second: chrono_tz::TzOffset) -> (i64, i64) {
    let (first, second) = (seconds_east(first), seconds_east(second));
    (first.max(second), first.min(second))
}

fn seconds_east(offset: chrono_tz::TzOffset) -> i64 {
    i64::from(offset.fix().local_minus_utc())
}

/// The wall-clock time `micros` after the epoch names in UTC.
fn naive_utc(micros: i64) -> Result<NaiveDateTime, Failure> {
    DateTime::from_timestamp_micros(micros)
        .map(|time| time.naive_utc())
        .ok_or_else(|| Failure(format!("{micros} µs is outside chrono's range")))
}

fn micros_of(naive: NaiveDateTime) -> i64 {
    naive.and_utc().timestamp_micros()
}

fn whole_second(naive: NaiveDateTime) -> NaiveDateTime {
    naive.with_nanosecond(0).unwrap_or(naive)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).expect("valid time")
    }

    fn local(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").expect("valid local time")
    }

    fn schedule(expression: &str, zone: &str) -> Schedule {
        Schedule::cron(expression, zone).expect("valid")
    }

    /// The first `count` events after `after`.
    fn events(expression: &str, zone: &str, after: &str, count: usize) -> Vec<Step> {
        schedule(expression, zone)
            .walk(at(after))
            .take(count)
            .collect()
    }

    fn fire(instant: &str, named: &str) -> Step {
        Step::Fire(Firing {
            at: at(instant),
            local: local(named),
            moved: false,
            merged: 0,
            repeat_not_fired: None,
        })
    }

    fn moved(instant: &str, named: &str, merged: u32) -> Step {
        Step::Fire(Firing {
            at: at(instant),
            local: local(named),
            moved: true,
            merged,
            repeat_not_fired: None,
        })
    }

    fn once(instant: &str, named: &str, repeat: &str) -> Step {
        Step::Fire(Firing {
            at: at(instant),
            local: local(named),
            moved: false,
            merged: 0,
            repeat_not_fired: Some(at(repeat)),
        })
    }

    #[test]
    fn expressions_are_classified_as_vixie_does() {
        for fixed in [
            "30 2 * * *",
            "0,30 1-3 * * *",
            "0-59/5 2 * * *",
            "0,*/15 2 * * *",
            "*/10 30 2 * * *",
            "@daily",
            "@MIDNIGHT",
            "@weekly",
            "@monthly",
            "@yearly",
            "@annually",
        ] {
            assert!(schedule(fixed, "UTC").is_fixed_time(), "{fixed}");
        }
        for wildcard in [
            "* * * * *",
            "*/15 * * * *",
            "0 * * * *",
            "30 */2 * * *",
            "0 0 * * * *",
            "0 */5 2 * * *",
            "@hourly",
        ] {
            assert!(!schedule(wildcard, "UTC").is_fixed_time(), "{wildcard}");
        }
        // croner lacks `@midnight`; it is `@daily`.
        assert_eq!(
            events("@midnight", "Europe/Berlin", "2026-03-28T12:00:00Z", 3),
            events("@daily", "Europe/Berlin", "2026-03-28T12:00:00Z", 3)
        );
        let interval = Schedule::interval(Duration::from_secs(60)).expect("valid");
        assert!(!interval.is_fixed_time());
        assert_eq!(interval.time_zone(), None);
        assert_eq!(
            schedule("@midnight", "Europe/Berlin").time_zone(),
            Some(chrono_tz::Europe::Berlin)
        );
        assert_eq!(super::super::tzdb_version(), chrono_tz::IANA_TZDB_VERSION);
    }

    #[test]
    fn berlin_spring_forward_moves_a_fixed_time_to_the_end_of_the_gap() {
        assert_eq!(
            events("30 2 * * *", "Europe/Berlin", "2026-03-28T00:00:00Z", 3),
            [
                fire("2026-03-28T01:30:00Z", "2026-03-28T02:30:00"),
                // 02:30 does not exist on the 29th: the clock goes from 02:00 CET to 03:00
                // CEST at 01:00Z.
                moved("2026-03-29T01:00:00Z", "2026-03-29T02:30:00", 0),
                fire("2026-03-30T00:30:00Z", "2026-03-30T02:30:00"),
            ]
        );
    }

    #[test]
    fn skipped_local_times_and_a_match_at_the_jump_fire_once_together() {
        // 02:00 and 02:30 are skipped, 03:00 is where the clock lands: one firing for three.
        assert_eq!(
            events("0,30 2,3 * * *", "Europe/Berlin", "2026-03-28T23:00:00Z", 2),
            [
                moved("2026-03-29T01:00:00Z", "2026-03-29T02:00:00", 2),
                fire("2026-03-29T01:30:00Z", "2026-03-29T03:30:00"),
            ]
        );
        // Seconds too: the whole minute 02:30 is one firing.
        assert_eq!(
            events("* 30 2 * * *", "Europe/Berlin", "2026-03-29T00:00:00Z", 1),
            [moved("2026-03-29T01:00:00Z", "2026-03-29T02:30:00", 59)]
        );
        // A match at the jump alone is a plain firing.
        assert_eq!(
            events("0 3 * * *", "Europe/Berlin", "2026-03-29T00:00:00Z", 1),
            [fire("2026-03-29T01:00:00Z", "2026-03-29T03:00:00")]
        );
    }

    #[test]
    fn berlin_fall_back_fires_a_fixed_time_at_its_first_occurrence_only() {
        assert_eq!(
            events("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            [
                once(
                    "2026-10-25T00:30:00Z",
                    "2026-10-25T02:30:00",
                    "2026-10-25T01:30:00Z"
                ),
                fire("2026-10-26T01:30:00Z", "2026-10-26T02:30:00"),
            ]
        );
        // A walk that starts inside the second pass does not fire it either, nor does one
        // that starts inside the first pass after the match.
        for after in ["2026-10-25T01:10:00Z", "2026-10-25T00:45:00Z"] {
            assert_eq!(
                events("30 2 * * *", "Europe/Berlin", after, 1),
                [fire("2026-10-26T01:30:00Z", "2026-10-26T02:30:00")],
                "{after}"
            );
        }
    }

    #[test]
    fn wildcards_fire_in_both_passes_and_skip_nothing_but_the_gap() {
        assert_eq!(
            events("*/30 * * * *", "Europe/Berlin", "2026-10-24T23:50:00Z", 5),
            [
                fire("2026-10-25T00:00:00Z", "2026-10-25T02:00:00"),
                fire("2026-10-25T00:30:00Z", "2026-10-25T02:30:00"),
                fire("2026-10-25T01:00:00Z", "2026-10-25T02:00:00"),
                fire("2026-10-25T01:30:00Z", "2026-10-25T02:30:00"),
                fire("2026-10-25T02:00:00Z", "2026-10-25T03:00:00"),
            ]
        );
        // A walk from inside the first pass still meets the second.
        assert_eq!(
            events("0 * * * *", "Europe/Berlin", "2026-10-25T00:10:00Z", 2),
            [
                fire("2026-10-25T01:00:00Z", "2026-10-25T02:00:00"),
                fire("2026-10-25T02:00:00Z", "2026-10-25T03:00:00"),
            ]
        );
        assert_eq!(
            events("*/30 * * * *", "Europe/Berlin", "2026-03-29T00:10:00Z", 3),
            [
                fire("2026-03-29T00:30:00Z", "2026-03-29T01:30:00"),
                fire("2026-03-29T01:00:00Z", "2026-03-29T03:00:00"),
                fire("2026-03-29T01:30:00Z", "2026-03-29T03:30:00"),
            ]
        );
    }

    #[test]
    fn new_york_changes_at_two_in_the_morning() {
        assert_eq!(
            events("30 2 * * *", "America/New_York", "2026-03-07T00:00:00Z", 3),
            [
                fire("2026-03-07T07:30:00Z", "2026-03-07T02:30:00"),
                moved("2026-03-08T07:00:00Z", "2026-03-08T02:30:00", 0),
                fire("2026-03-09T06:30:00Z", "2026-03-09T02:30:00"),
            ]
        );
        assert_eq!(
            events("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
            [
                once(
                    "2026-11-01T05:30:00Z",
                    "2026-11-01T01:30:00",
                    "2026-11-01T06:30:00Z"
                ),
                fire("2026-11-02T06:30:00Z", "2026-11-02T01:30:00"),
            ]
        );
        assert_eq!(
            events("15 * * * *", "America/New_York", "2026-11-01T05:00:00Z", 3),
            [
                fire("2026-11-01T05:15:00Z", "2026-11-01T01:15:00"),
                fire("2026-11-01T06:15:00Z", "2026-11-01T01:15:00"),
                fire("2026-11-01T07:15:00Z", "2026-11-01T02:15:00"),
            ]
        );
    }

    #[test]
    fn lord_howe_shifts_by_half_an_hour() {
        // April: 02:00 (+11) goes back to 01:30 (+10:30) at 15:00Z.
        assert_eq!(
            events(
                "45 1 * * *",
                "Australia/Lord_Howe",
                "2026-04-04T12:00:00Z",
                2
            ),
            [
                once(
                    "2026-04-04T14:45:00Z",
                    "2026-04-05T01:45:00",
                    "2026-04-04T15:15:00Z"
                ),
                fire("2026-04-05T15:15:00Z", "2026-04-06T01:45:00"),
            ]
        );
        // October: 02:00 (+10:30) jumps to 02:30 (+11) at 15:30Z.
        assert_eq!(
            events(
                "0,15 2 * * *",
                "Australia/Lord_Howe",
                "2026-10-03T12:00:00Z",
                2
            ),
            [
                moved("2026-10-03T15:30:00Z", "2026-10-04T02:00:00", 1),
                fire("2026-10-04T15:00:00Z", "2026-10-05T02:00:00"),
            ]
        );
        assert_eq!(
            events(
                "*/15 * * * *",
                "Australia/Lord_Howe",
                "2026-10-03T15:00:00Z",
                3
            ),
            [
                fire("2026-10-03T15:15:00Z", "2026-10-04T01:45:00"),
                fire("2026-10-03T15:30:00Z", "2026-10-04T02:30:00"),
                fire("2026-10-03T15:45:00Z", "2026-10-04T02:45:00"),
            ]
        );
    }

    #[test]
    fn cairo_changes_at_midnight() {
        // April 24, 2026: local midnight does not exist (00:00 jumps to 01:00 at 22:00Z).
        assert_eq!(
            events("0 0 * * *", "Africa/Cairo", "2026-04-22T12:00:00Z", 3),
            [
                fire("2026-04-22T22:00:00Z", "2026-04-23T00:00:00"),
                moved("2026-04-23T22:00:00Z", "2026-04-24T00:00:00", 0),
                fire("2026-04-24T21:00:00Z", "2026-04-25T00:00:00"),
            ]
        );
        // October 29, 2026: 24:00 goes back to 23:00, so Thursday's 23:xx repeats and
        // Friday's midnight happens once, after the repeat.
        assert_eq!(
            events("0 0 * * *", "Africa/Cairo", "2026-10-29T12:00:00Z", 1),
            [fire("2026-10-29T22:00:00Z", "2026-10-30T00:00:00")]
        );
        assert_eq!(
            events("30 23 * * *", "Africa/Cairo", "2026-10-29T12:00:00Z", 2),
            [
                once(
                    "2026-10-29T20:30:00Z",
                    "2026-10-29T23:30:00",
                    "2026-10-29T21:30:00Z"
                ),
                fire("2026-10-30T21:30:00Z", "2026-10-30T23:30:00"),
            ]
        );
    }

    #[test]
    fn apia_skipping_a_day_is_a_skipped_span_not_a_moved_firing() {
        let skipped = |first: &str, last: &str, count: u64| {
            Step::Skip(SkippedSpan {
                at: Timestamp::from_micros(at("2011-12-30T10:00:00Z").as_micros() - 1),
                first_local: local(first),
                last_local: local(last),
                count,
                shift_seconds: 86_400,
            })
        };
        assert_eq!(
            events("0 9 * * *", "Pacific/Apia", "2011-12-29T12:00:00Z", 3),
            [
                fire("2011-12-29T19:00:00Z", "2011-12-29T09:00:00"),
                skipped("2011-12-30T09:00:00", "2011-12-30T09:00:00", 1),
                fire("2011-12-30T19:00:00Z", "2011-12-31T09:00:00"),
            ]
        );
        // Wildcards too, counted rather than walked: a day of seconds.
        assert_eq!(
            events("* * * * * *", "Pacific/Apia", "2011-12-30T09:59:59Z", 2),
            [
                skipped("2011-12-30T00:00:00", "2011-12-30T23:59:59", 86_400),
                fire("2011-12-30T10:00:00Z", "2011-12-31T00:00:00"),
            ]
        );
        // next_after steps over the span.
        assert_eq!(
            schedule("0 9 * * *", "Pacific/Apia").next_after(at("2011-12-29T19:00:00Z")),
            Some(at("2011-12-30T19:00:00Z"))
        );
    }

    #[test]
    fn a_large_backward_change_fires_both_passes() {
        // America/Juneau, 1867-10-19: Alaska changed sides of the date line, from local mean
        // time UTC+15:02:19 to UTC−08:57:41, and lived October 19 twice.
        assert_eq!(
            events("0 12 * * *", "America/Juneau", "1867-10-18T00:00:00Z", 3),
            [
                fire("1867-10-18T20:57:41Z", "1867-10-19T12:00:00"),
                fire("1867-10-19T20:57:41Z", "1867-10-19T12:00:00"),
                fire("1867-10-20T20:57:41Z", "1867-10-20T12:00:00"),
            ]
        );
    }

    #[test]
    fn an_interval_walks_in_steps_of_its_interval_to_the_end_of_time() {
        let every_minute = Schedule::interval(Duration::from_secs(60)).expect("valid");
        let steps: Vec<Step> = every_minute
            .walk(at("2026-01-01T00:00:30Z"))
            .take(2)
            .collect();
        assert_eq!(
            steps,
            [
                fire("2026-01-01T00:01:30Z", "2026-01-01T00:01:30"),
                fire("2026-01-01T00:02:30Z", "2026-01-01T00:02:30"),
            ]
        );
        let mut walk = every_minute.walk(Timestamp::from_micros(i64::MAX - 1));
        assert_eq!(
            walk.next().map(|step| step.at()),
            Some(Timestamp::from_micros(i64::MAX))
        );
        assert_eq!(walk.next(), None);
        assert_eq!(walk.end(), Some(&WalkEnd::EndOfTime));
    }

    #[test]
    fn a_dense_walk_costs_one_search_per_step() {
        // Not a benchmark: a guard that a step does not walk offsets hour by hour. A day of
        // seconds across a fall-back hour, in a debug build.
        let every_second = schedule("* * * * * *", "Europe/Berlin");
        let started = std::time::Instant::now();
        let count = every_second
            .walk(at("2026-10-24T12:00:00Z"))
            .take_while(|step| step.at() <= at("2026-10-25T12:00:00Z"))
            .count();
        // Every second of 24 hours of real time, the repeated hour's included.
        assert_eq!(count, 24 * 3_600);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    const ZONES: [&str; 7] = [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Africa/Cairo",
        "Pacific/Apia",
        "America/Juneau",
    ];

    const EXPRESSIONS: [&str; 10] = [
        "30 2 * * *",
        "*/30 * * * *",
        "0,30 0-3 * * *",
        "0 0 * * *",
        "*/10 1 1 11 *",
        "*/7 * * * * *",
        "15 23 * * *",
        "0 9 * * 1-5",
        "@hourly",
        "* 30 2 * * *",
    ];

    proptest! {
        #[test]
        fn a_walk_resumed_from_any_event_gives_the_rest(
            // 2010 to 2036, so that most walks are near a clock change: the instants are
            // drawn around the ones each zone changes at.
            seconds in 1_262_304_000i64..2_082_758_400,
            micros in 0i64..1_000_000,
            expression in prop::sample::select(EXPRESSIONS.to_vec()),
            zone in prop::sample::select(ZONES.to_vec()),
            resume in 0usize..12,
        ) {
            let schedule = schedule(expression, zone);
            let after = Timestamp::from_micros(seconds * MICROS_PER_SECOND + micros);
            let all: Vec<Step> = schedule.walk(after).take(24).collect();
            prop_assert_eq!(all.len(), 24);
            for pair in all.windows(2) {
                prop_assert!(pair[0].at() < pair[1].at(), "{:?}", pair);
            }
            prop_assert!(all[0].at() > after);
            let tail: Vec<Step> = schedule.walk(all[resume].at()).take(24 - resume - 1).collect();
            prop_assert_eq!(&tail[..], &all[resume + 1..]);
            let first_fire = all.iter().find_map(|step| match step {
                Step::Fire(firing) => Some(firing.at),
                Step::Skip(_) => None,
            });
            prop_assert_eq!(schedule.next_after(after), first_fire);
        }

        #[test]
        fn resuming_just_before_a_clock_change_agrees_with_walking_through_it(
            index in 0usize..60,
            back_seconds in 0i64..12 * 3_600,
            expression in prop::sample::select(EXPRESSIONS.to_vec()),
            zone in prop::sample::select(ZONES[1..].to_vec()),
        ) {
            let transitions = &TRANSITIONS
                .iter()
                .find(|(name, _)| *name == zone)
                .expect("every zone but UTC is listed")
                .1;
            prop_assume!(!transitions.is_empty());
            let transition = transitions[index % transitions.len()];
            let schedule = schedule(expression, zone);
            let start = Timestamp::from_micros((transition - 2 * 86_400) * MICROS_PER_SECOND);
            let through: Vec<Step> = schedule.walk(start).take(200).collect();
            let after = Timestamp::from_micros((transition - back_seconds) * MICROS_PER_SECOND);
            let resumed: Vec<Step> = schedule.walk(after).take(20).collect();
            let expected: Vec<Step> =
                through.into_iter().filter(|step| step.at() > after).take(resumed.len()).collect();
            // The long walk may stop short of the window for a dense expression.
            let shared = expected.len().min(resumed.len());
            prop_assert_eq!(&resumed[..shared], &expected[..shared]);
        }
    }

    /// The transitions of `ZONES` (but UTC) from 2011 to 2035, as the walk's zone library sees
    /// them, found once.
    static TRANSITIONS: std::sync::LazyLock<Vec<(&'static str, Vec<i64>)>> =
        std::sync::LazyLock::new(|| {
            ZONES[1..]
                .iter()
                .map(|&zone| {
                    let tz: Tz = zone.parse().expect("known zone");
                    (zone, transitions_of(tz, 1_293_840_000, 2_082_758_400))
                })
                .collect()
        });

    /// Every instant (whole seconds) in `[from, until)` at which `tz`'s offset changes, found
    /// by sampling every 6 hours and bisecting.
    fn transitions_of(tz: Tz, from: i64, until: i64) -> Vec<i64> {
        let offset = |seconds: i64| {
            let utc = DateTime::from_timestamp(seconds, 0)
                .expect("in range")
                .naive_utc();
            tz.offset_from_utc_datetime(&utc).fix().local_minus_utc()
        };
        let mut found = Vec::new();
        let mut start = from;
        while start < until {
            let end = start + 6 * 3_600;
            if offset(start) != offset(end) {
                let (mut low, mut high) = (start, end);
                while high - low > 1 {
                    let middle = low + (high - low) / 2;
                    if offset(middle) == offset(start) {
                        low = middle;
                    } else {
                        high = middle;
                    }
                }
                found.push(high);
            }
            start = end;
        }
        found
    }
}
