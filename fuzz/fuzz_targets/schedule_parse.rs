//! Fuzzes `Schedule::cron` and `Schedule::interval`, and a parsed schedule's occurrences.
//!
//! The input is text of up to three lines: a cron expression (5 or 6 fields, or a macro such
//! as `@hourly`), a time zone (default `UTC`), and the instant to look after, as microseconds
//! since the Unix epoch or RFC 3339 text (default 2026-12-01T00:00:00Z). An expression of
//! digits alone is also tried as an interval in milliseconds, as `interval_ms` is.
//!
//! Nothing may panic, and a schedule keeps its laws: each occurrence is strictly after the
//! instant it follows, and a cron schedule parsed back from what is stored of it (the trimmed
//! expression and the zone's name, as every store reads it back) is the same schedule.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use punctual_core::{Schedule, Timestamp};

/// How many occurrences after the first are followed.
const OCCURRENCES: usize = 4;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // Every schedule arrives as a JSON string or a TOML/CLI argument: UTF-8.
        return;
    };
    let mut lines = text.split('\n');
    let expression = lines.next().unwrap_or_default();
    let zone = lines
        .next()
        .filter(|zone| !zone.is_empty())
        .unwrap_or("UTC");
    let after = lines
        .next()
        .map_or(Timestamp::from_micros(DEFAULT_AFTER_US), instant);

    if let Ok(schedule) = Schedule::cron(expression, zone) {
        let (stored, name) = schedule.cron_expression().expect("a cron schedule");
        let again = Schedule::cron(stored, name);
        assert_eq!(
            again.as_ref().ok(),
            Some(&schedule),
            "read back from {stored:?} in {name:?}: {again:?}"
        );
        follow(&schedule, after);
    }
    if let Ok(interval_ms) = expression.parse::<u64>()
        && let Ok(schedule) = Schedule::interval(Duration::from_millis(interval_ms))
    {
        follow(&schedule, after);
    }
});

/// 2026-12-01T00:00:00Z.
const DEFAULT_AFTER_US: i64 = 1_796_083_200_000_000;

fn instant(text: &str) -> Timestamp {
    text.trim()
        .parse::<i64>()
        .map(Timestamp::from_micros)
        .ok()
        .or_else(|| Timestamp::parse_rfc3339(text.trim()))
        .unwrap_or(Timestamp::from_micros(DEFAULT_AFTER_US))
}

/// Walks a few occurrences from `after`: each is strictly after the one before.
fn follow(schedule: &Schedule, after: Timestamp) {
    let mut previous = after;
    for _ in 0..=OCCURRENCES {
        let Some(next) = schedule.next_after(previous) else {
            return;
        };
        assert!(
            next > previous,
            "{schedule:?}: {next:?} is not after {previous:?}"
        );
        previous = next;
    }
}
