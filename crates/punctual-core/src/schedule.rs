//! Recurrence: a cron expression in an IANA time zone, or a fixed interval.
//!
//! `Schedule::walk` (its events, in order) and `Schedule::next_after` (the first firing) are the
//! one definition of "the next occurrence" that every store and the engine use. How a cron
//! expression meets daylight saving time and other clock changes is written down in the `walk`
//! module, rule by rule.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use croner::parser::{CronParser, Seconds, Year};

use crate::job::ValidationError;
use crate::limits;
use crate::time::Timestamp;

mod walk;

pub use walk::{Firing, SkippedSpan, Step, Walk, WalkEnd};

/// The version of the IANA time zone database that schedules are computed with (chrono-tz's,
/// such as "2025b"): a change of it can move occurrences, so it is worth showing and logging.
pub fn tzdb_version() -> &'static str {
    chrono_tz::IANA_TZDB_VERSION
}

/// How a recurring job repeats: a cron expression in a time zone, or a fixed interval.
///
/// Opaque, so that `Schedule::cron` and `Schedule::interval` are the only ways to make one: a
/// schedule that exists is valid, and the stores, which re-check a schedule when they read it
/// back, never meet one they refuse (an interval below `limits::INTERVAL_MIN` written through a
/// public variant was read back as `Corrupt` and failed every claim that met its row).
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule(Recurrence);

#[derive(Clone)]
enum Recurrence {
    /// A cron expression of 5 fields (minute granularity) or 6 (with seconds first), evaluated in
    /// `time_zone`, so "0 0 * * *" in Europe/Berlin is midnight in Berlin across DST changes.
    Cron {
        expression: String,
        time_zone: chrono_tz::Tz,
        parsed: Box<croner::Cron>,
        /// The class that decides what a clock change does to it (see the `walk` module).
        fixed_time: bool,
    },
    /// Every `Duration`, counted from the previous occurrence's due time.
    Interval(Duration),
}

impl Schedule {
    /// Parses a cron expression (5 or 6 fields) in the IANA time zone `time_zone`.
    pub fn cron(expression: &str, time_zone: &str) -> Result<Schedule, ValidationError> {
        let expression = expression.trim();
        if expression.len() > limits::CRON_BYTES_MAX {
            return Err(ValidationError::TooLong {
                field: "cron",
                bytes: expression.len(),
                limit: limits::CRON_BYTES_MAX,
            });
        }
        let invalid = |reason: String| ValidationError::InvalidCron {
            expression: expression.to_owned(),
            reason,
        };
        let fields = expression.split_whitespace().count();
        let is_alias = expression.starts_with('@');
        if !is_alias && fields != 5 && fields != 6 {
            return Err(invalid(format!("expected 5 or 6 fields, found {fields}")));
        }
        // croner knows every alias Vixie cron does but `@midnight`, which is `@daily`.
        let croner_expression = if expression.eq_ignore_ascii_case("@midnight") {
            "@daily"
        } else {
            expression
        };
        let parsed = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(croner_expression)
            .map_err(|error| invalid(error.to_string()))?;
        // A time field that matches no value (croner reads `,` alone as an empty list) never
        // fires, and croner would step through a year of seconds to find that out: seconds
        // of CPU for one request. Refused before the probe below.
        let time_fields = [
            ("second", &parsed.pattern.seconds),
            ("minute", &parsed.pattern.minutes),
            ("hour", &parsed.pattern.hours),
        ];
        for (name, field) in time_fields {
            if field.values().is_empty() {
                return Err(invalid(format!("the {name} field matches no value")));
            }
        }
        let time_zone = chrono_tz::Tz::from_str(time_zone)
            .map_err(|_| ValidationError::UnknownTimeZone(time_zone.to_owned()))?;
        let schedule = Schedule(Recurrence::Cron {
            expression: expression.to_owned(),
            time_zone,
            parsed: Box::new(parsed),
            fixed_time: is_fixed_time(expression),
        });
        // An expression that can never fire (the 31st of February) is refused here, not at claim.
        let probe = Timestamp::from_millis(0);
        if schedule.next_after(probe).is_none() {
            return Err(invalid("it never fires".to_owned()));
        }
        Ok(schedule)
    }

    /// A fixed interval within `limits::INTERVAL_MIN ..= limits::INTERVAL_MAX`.
    pub fn interval(interval: Duration) -> Result<Schedule, ValidationError> {
        if interval < limits::INTERVAL_MIN || interval > limits::INTERVAL_MAX {
            return Err(ValidationError::IntervalOutOfRange {
                interval_ms: interval.as_millis(),
                min_ms: limits::INTERVAL_MIN.as_millis(),
                max_ms: limits::INTERVAL_MAX.as_millis(),
            });
        }
        Ok(Schedule(Recurrence::Interval(interval)))
    }

    /// The first occurrence strictly after `after` (the walk's first `Step::Fire`), or `None` if
    /// there is none: past the end of the years a cron schedule can write (UTC 0000 to 9999),
    /// or past the last instant a `Timestamp` holds for an interval. A walk tells the end of a
    /// schedule from a failure to compute it (`Walk::end`); this does not.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        match &self.0 {
            Recurrence::Interval(interval) => {
                // `add` saturates: at the end of time there is no later occurrence.
                let next = after.add(*interval);
                (next > after).then_some(next)
            }
            Recurrence::Cron { .. } => self.walk(after).find_map(|step| match step {
                Step::Fire(firing) => Some(firing.at),
                Step::Skip(_) => None,
            }),
        }
    }

    /// The recurrence's events strictly after `after`, in strictly increasing order: where it
    /// fires, and (cron, clock changes of 3 hours or more) the local times it skips. For an
    /// interval: a firing at `after + interval`, `after + 2 × interval`, and so on.
    pub fn walk(&self, after: Timestamp) -> Walk<'_> {
        Walk::new(self, after)
    }

    /// Whether this is a fixed-time cron expression (neither its minute nor its hour field
    /// starts with `*`), which a clock change moves or keeps from repeating; `false` for a
    /// wildcard expression and for an interval. The rules are in the `walk` module.
    pub fn is_fixed_time(&self) -> bool {
        match &self.0 {
            Recurrence::Cron { fixed_time, .. } => *fixed_time,
            Recurrence::Interval(_) => false,
        }
    }

    /// The cron expression's time zone, or `None` for an interval.
    pub fn time_zone(&self) -> Option<chrono_tz::Tz> {
        match &self.0 {
            Recurrence::Cron { time_zone, .. } => Some(*time_zone),
            Recurrence::Interval(_) => None,
        }
    }

    /// The cron expression and its time zone's name, or `None` for an interval.
    pub fn cron_expression(&self) -> Option<(&str, &str)> {
        match &self.0 {
            Recurrence::Cron {
                expression,
                time_zone,
                ..
            } => Some((expression, time_zone.name())),
            Recurrence::Interval(_) => None,
        }
    }

    /// The interval, or `None` for a cron expression.
    pub fn interval_duration(&self) -> Option<Duration> {
        match &self.0 {
            Recurrence::Interval(interval) => Some(*interval),
            Recurrence::Cron { .. } => None,
        }
    }
}

/// Vixie's classification: fixed-time unless the minute or the hour field starts with `*` (or
/// `?`, which croner refuses there). `expression` is one croner accepted: 5 or 6 fields, or an
/// alias.
fn is_fixed_time(expression: &str) -> bool {
    if expression.starts_with('@') {
        // `@hourly` is `0 * * * *`; every other alias names a time of day.
        return !expression.eq_ignore_ascii_case("@hourly");
    }
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let (minute, hour) = match fields.as_slice() {
        [_, minute, hour, _, _, _] => (*minute, *hour),
        [minute, hour, ..] => (*minute, *hour),
        _ => return false,
    };
    let wildcard = |field: &str| field.starts_with('*') || field.starts_with('?');
    !wildcard(minute) && !wildcard(hour)
}

impl PartialEq for Recurrence {
    fn eq(&self, other: &Recurrence) -> bool {
        match (self, other) {
            (Recurrence::Interval(a), Recurrence::Interval(b)) => a == b,
            (
                Recurrence::Cron {
                    expression: a,
                    time_zone: zone_a,
                    ..
                },
                Recurrence::Cron {
                    expression: b,
                    time_zone: zone_b,
                    ..
                },
            ) => a == b && zone_a == zone_b,
            _ => false,
        }
    }
}

impl Eq for Recurrence {}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Recurrence::Cron {
                expression,
                time_zone,
                ..
            } => write!(f, "cron({expression:?} in {})", time_zone.name()),
            Recurrence::Interval(interval) => write!(f, "every {} ms", interval.as_millis()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).expect("valid time")
    }

    #[test]
    fn midnight_in_berlin_follows_daylight_saving() {
        let nightly = Schedule::cron("0 0 * * *", "Europe/Berlin").expect("valid");
        // Winter: UTC+1.
        assert_eq!(
            nightly.next_after(at("2026-01-10T12:00:00Z")),
            Some(at("2026-01-10T23:00:00Z"))
        );
        // Summer: UTC+2.
        assert_eq!(
            nightly.next_after(at("2026-07-10T12:00:00Z")),
            Some(at("2026-07-10T22:00:00Z"))
        );
    }

    #[test]
    fn six_fields_mean_seconds() {
        let every_ten = Schedule::cron("*/10 * * * * *", "UTC").expect("valid");
        assert_eq!(
            every_ten.next_after(at("2026-01-10T12:00:01.500Z")),
            Some(at("2026-01-10T12:00:10Z"))
        );
    }

    #[test]
    fn bad_cron_and_zone_are_refused() {
        assert!(matches!(
            Schedule::cron("* * *", "UTC"),
            Err(ValidationError::InvalidCron { .. })
        ));
        assert!(matches!(
            Schedule::cron("61 * * * *", "UTC"),
            Err(ValidationError::InvalidCron { .. })
        ));
        assert!(matches!(
            Schedule::cron("0 0 * * * * 2030", "UTC"),
            Err(ValidationError::InvalidCron { .. })
        ));
        assert!(matches!(
            Schedule::cron("0 0 31 2 *", "UTC"),
            Err(ValidationError::InvalidCron { .. })
        ));
        assert!(matches!(
            Schedule::cron("0 0 * * *", "Mars/Olympus"),
            Err(ValidationError::UnknownTimeZone(_))
        ));
        assert!(matches!(
            Schedule::interval(Duration::from_millis(10)),
            Err(ValidationError::IntervalOutOfRange { .. })
        ));
    }

    #[test]
    fn an_interval_outside_the_limits_cannot_be_made() {
        let below = limits::INTERVAL_MIN - Duration::from_millis(1);
        let above = limits::INTERVAL_MAX + Duration::from_secs(1);
        for interval in [Duration::ZERO, Duration::from_millis(500), below, above] {
            assert!(
                matches!(
                    Schedule::interval(interval),
                    Err(ValidationError::IntervalOutOfRange { .. })
                ),
                "{interval:?}"
            );
        }
        for interval in [limits::INTERVAL_MIN, limits::INTERVAL_MAX] {
            let schedule = Schedule::interval(interval).expect("within the limits");
            assert_eq!(schedule.interval_duration(), Some(interval));
            assert_eq!(schedule.cron_expression(), None);
        }
    }

    #[test]
    fn a_time_field_that_matches_nothing_is_refused_at_once() {
        // Found by the fuzz target schedule_parse (fuzz/corpus/schedule_parse/
        // empty-minute-list): `0 , * * * *` took 7 s of CPU (release build) to be refused as
        // "never fires", croner stepping a year second by second. The reason shows the field
        // check refused it, before any walk.
        for expression in ["0 , * * * *", ", * * * *", "0 ,, * * *", "0 0 , * * *"] {
            let refused = Schedule::cron(expression, "UTC");
            assert!(
                matches!(&refused, Err(ValidationError::InvalidCron { reason, .. }) if reason.contains("matches no value")),
                "{expression}: {refused:?}"
            );
        }
        // A list with an empty item and a value still means the value.
        let at_five = Schedule::cron("5, * * * *", "UTC").expect("valid");
        assert_eq!(
            at_five.next_after(at("2026-01-10T12:00:00Z")),
            Some(at("2026-01-10T12:05:00Z"))
        );
    }

    #[test]
    fn an_interval_has_no_occurrence_after_the_end_of_time() {
        // Found by the fuzz target schedule_parse (fuzz/corpus/schedule_parse/
        // interval-near-end-of-time): `add` saturated, and the "next" occurrence was `after`.
        let every_second = Schedule::interval(Duration::from_secs(1)).expect("valid");
        let last = Timestamp::from_micros(i64::MAX);
        assert_eq!(every_second.next_after(last), None);
        // Short of the end, the occurrence is the last instant there is, as `add` saturates.
        let near = Timestamp::from_micros(i64::MAX - 500_000);
        assert_eq!(every_second.next_after(near), Some(last));
    }

    #[test]
    fn a_cron_schedule_has_no_occurrence_outside_the_years_it_can_write() {
        // Found by the fuzz target schedule_parse (fuzz/corpus/schedule_parse/
        // after-max-instant): after i64::MAX µs, chrono's last instant in Kiritimati (UTC+14)
        // has no local time, and croner panicked walking from it.
        let new_year = Schedule::cron("0 0 1 1 *", "Pacific/Kiritimati").expect("valid");
        let every_minute = Schedule::cron("* * * * *", "Etc/GMT+12").expect("valid");
        for micros in [
            i64::MAX,
            i64::MIN,
            253_402_300_800_000_000,
            -62_167_219_200_000_001,
        ] {
            let after = Timestamp::from_micros(micros);
            assert_eq!(new_year.next_after(after), None, "{micros}");
            assert_eq!(every_minute.next_after(after), None, "{micros}");
        }
        // Inside the range the walk goes on to its very end. (croner itself looks no further
        // than the year 5000; the walk moves its searches by 400-year cycles, so the years
        // 5000 to 9999 have their occurrences too. This assertion used to expect `None` after
        // 5001-01-01.)
        assert_eq!(
            every_minute.next_after(at("4999-12-31T23:58:30Z")),
            Some(at("4999-12-31T23:59:00Z"))
        );
        assert_eq!(
            every_minute.next_after(at("5001-01-01T00:00:00Z")),
            Some(at("5001-01-01T00:01:00Z"))
        );
        assert_eq!(
            every_minute.next_after(at("9999-12-31T23:58:30Z")),
            Some(at("9999-12-31T23:59:00Z"))
        );
        assert_eq!(every_minute.next_after(at("9999-12-31T23:59:00Z")), None);
        let mut walk = every_minute.walk(at("9999-12-31T23:59:00Z"));
        assert_eq!(walk.next(), None);
        assert_eq!(walk.end(), Some(&WalkEnd::EndOfTime));
        // In Kiritimati (UTC+14) the last New Year a schedule can write is local 10000-01-01.
        assert_eq!(
            new_year.next_after(at("9999-01-01T00:00:00Z")),
            Some(at("9999-12-31T10:00:00Z"))
        );
    }

    proptest! {
        #[test]
        fn next_cron_occurrence_is_after_now(
            millis in 0i64..4_000_000_000_000,
            expression in prop::sample::select(vec!["* * * * *", "0 9 * * 1-5", "*/7 * * * * *", "0 0 1 * *", "30 2 * * *"]),
            zone in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
        ) {
            let schedule = Schedule::cron(expression, zone).expect("valid");
            let now = Timestamp::from_millis(millis);
            let next = schedule.next_after(now).expect("has a next occurrence");
            prop_assert!(next > now);
            // And it is the first: nothing between now and next fires.
            let again = schedule.next_after(now).expect("deterministic");
            prop_assert_eq!(next, again);
        }

        #[test]
        fn next_interval_occurrence_is_after_now(millis in 0i64..4_000_000_000_000, seconds in 1u64..100_000) {
            let schedule = Schedule::interval(Duration::from_secs(seconds)).expect("valid");
            let now = Timestamp::from_millis(millis);
            prop_assert_eq!(schedule.next_after(now), Some(now.add(Duration::from_secs(seconds))));
        }
    }
}
