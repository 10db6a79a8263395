//! Fuzzes the validation of a new job in punctual-core: names (`Kind`, `Queue`), the payload
//! (`Payload::from_json_text`), the options (`Priority`, `RetryPolicy`, `attempt_max`, the id)
//! and its time (`run_at`, or a schedule's first occurrence) into a `NewJob`.
//!
//! The input is text, one field a line, each line optional (a missing or empty line leaves the
//! field out), and everything after the ninth line is the payload (default `null`):
//!
//! ```text
//! kind
//! queue
//! priority                  a number
//! attempt_max               a number
//! backoff                   base_ms max_ms jitter_percent
//! id                        a UUID
//! time                      at MICROS | at RFC3339 | cron EXPRESSION | ZONE | every MS
//! now                       microseconds since the Unix epoch (default 2026-12-01T00:00:00Z)
//! error                     a handler's error message, for `truncate_error`
//! payload...
//! ```
//!
//! Nothing may panic, and what is accepted keeps its laws: the job validates again at `now`,
//! its payload is the text given and reads back as raw JSON, its run_at is the one asked for (or the
//! schedule's next occurrence after `now`), and a truncated error fits the limit (and its ellipsis).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use punctual_core::{
    JobId, JobOptions, Kind, NewJob, Payload, Priority, Queue, RetryPolicy, Schedule, Timestamp,
    limits, truncate_error,
};

/// 2026-12-01T00:00:00Z.
const DEFAULT_NOW_US: i64 = 1_796_083_200_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // Every field arrives as JSON text or a CLI argument: UTF-8.
        return;
    };
    let mut lines = text.splitn(10, '\n');
    let mut field = || lines.next().filter(|line| !line.is_empty());
    let kind = field();
    let queue = field();
    let priority = field();
    let attempt_max = field();
    let backoff = field();
    let id = field();
    let time = field();
    let now = field()
        .and_then(|line| line.trim().parse::<i64>().ok())
        .map_or(
            Timestamp::from_micros(DEFAULT_NOW_US),
            Timestamp::from_micros,
        );
    let error = field();
    let payload = lines.next().unwrap_or("null");

    if let Some(error) = error {
        let kept = truncate_error(error);
        // Cut to the limit, then marked with an ellipsis past it (as punctual-core's own test
        // of `truncate_error` has it).
        let bound = limits::ERROR_BYTES_MAX + '…'.len_utf8();
        assert!(kept.len() <= bound, "{} bytes", kept.len());
        assert!(!kept.contains('\0'));
        if error.len() <= limits::ERROR_BYTES_MAX && !error.contains('\0') {
            assert_eq!(kept, error, "a storable message is kept as it is");
        }
    }

    // Each value is checked on its own first, as the API does, naming the field it refuses.
    let Ok(kind) = Kind::new(kind.unwrap_or_default()) else {
        return;
    };
    assert!(kind.as_str().len() <= limits::NAME_BYTES_MAX);
    let payload = match Payload::from_json_text(payload) {
        Ok(accepted) => {
            assert_eq!(accepted.as_str(), payload);
            assert!(payload.len() <= limits::PAYLOAD_BYTES_MAX);
            // The server and the webhook envelope carry a payload as raw JSON text. (Not as
            // a `serde_json::Value`: JSON's grammar has numbers past f64 and lone surrogate
            // escapes, which `Value` refuses and `Payload::to_value` reads as null.)
            assert!(
                serde_json::value::RawValue::from_string(payload.to_owned()).is_ok(),
                "an accepted payload does not read back as raw JSON: {payload:?}"
            );
            accepted
        }
        Err(_) => return,
    };
    let mut options = JobOptions::default();
    if let Some(queue) = queue {
        let Ok(queue) = Queue::new(queue) else {
            return;
        };
        options = options.queue(queue);
    }
    if let Some(priority) = priority {
        let Some(priority) = priority
            .trim()
            .parse::<u8>()
            .ok()
            .and_then(|value| Priority::new(value).ok())
        else {
            return;
        };
        options = options.priority(priority);
    }
    if let Some(attempt_max) = attempt_max {
        let Ok(attempt_max) = attempt_max.trim().parse::<u32>() else {
            return;
        };
        options = options.attempt_max(attempt_max);
    }
    if let Some(backoff) = backoff {
        let numbers: Vec<u64> = backoff
            .split_whitespace()
            .filter_map(|number| number.parse().ok())
            .collect();
        let [base_ms, max_ms, jitter_percent] = numbers[..] else {
            return;
        };
        let Ok(jitter_percent) = u8::try_from(jitter_percent) else {
            return;
        };
        let Ok(policy) = RetryPolicy::new(
            Duration::from_millis(base_ms),
            Duration::from_millis(max_ms),
            jitter_percent,
        ) else {
            return;
        };
        // Backoff is monotonic in the attempt and capped.
        let mut previous = Duration::ZERO;
        for attempt in [1, 2, 3, 10, 63, 64, 65, u32::MAX] {
            let delay = policy.backoff(attempt);
            assert!(delay >= previous && delay <= policy.backoff_max());
            let jittered = policy.backoff_with_jitter(attempt, 0.999);
            assert!(jittered <= delay);
            previous = delay;
        }
        options = options.retry(policy);
    }
    if let Some(id) = id {
        let Ok(id) = id.trim().parse::<JobId>() else {
            return;
        };
        options = options.id(id);
    }

    let job = match time.map(|line| line.split_once(' ').unwrap_or((line, ""))) {
        None => NewJob::new(kind, payload.clone(), now, options, now).map(|job| (job, Some(now))),
        Some(("at", when)) => {
            let Some(run_at) = when
                .trim()
                .parse::<i64>()
                .map(Timestamp::from_micros)
                .ok()
                .or_else(|| Timestamp::parse_rfc3339(when))
            else {
                return;
            };
            NewJob::new(kind, payload.clone(), run_at, options, now).map(|job| (job, Some(run_at)))
        }
        Some(("cron", spec)) => {
            let (expression, zone) = spec.split_once('|').unwrap_or((spec, "UTC"));
            let Ok(schedule) = Schedule::cron(expression, zone.trim()) else {
                return;
            };
            let first = schedule.next_after(now);
            NewJob::recurring(kind, payload.clone(), schedule, options, now).map(|job| (job, first))
        }
        Some(("every", interval_ms)) => {
            let Ok(interval_ms) = interval_ms.trim().parse::<u64>() else {
                return;
            };
            let Ok(schedule) = Schedule::interval(Duration::from_millis(interval_ms)) else {
                return;
            };
            let first = schedule.next_after(now);
            NewJob::recurring(kind, payload.clone(), schedule, options, now).map(|job| (job, first))
        }
        Some(_) => return,
    };
    let Ok((job, expected_run_at)) = job else {
        return;
    };
    job.validate(now).expect("an accepted job validates again");
    assert_eq!(Some(job.run_at), expected_run_at);
    assert_eq!(job.payload, payload);
    assert!((1..=limits::ATTEMPT_MAX_LIMIT).contains(&job.attempt_max));
    if job.schedule.is_some() {
        assert!(
            job.run_at > now,
            "a recurring job's first occurrence is after now"
        );
    }
    // Stored, then claimed: the next occurrence follows this one.
    let stored = job.clone().into_job(now);
    if let Some(next) = stored.next_occurrence(now) {
        assert!(next.run_at > job.run_at.max(now));
        assert_ne!(next.id, job.id);
    }
});
