//! `punctual demo`: the brief's three jobs fire at 2 s, 3.5 s and 5 s, the third fails, is
//! retried and ends dead, and a summary follows.
//!
//! Timing bounds here are lenient (300 ms) because CI machines are loaded; the 50 ms promise is
//! checked by a person running the demo.

use std::time::Duration;

use crate::{arg, json_lines, punctual};

const TOLERANCE: Duration = Duration::from_millis(300);

/// The offset in seconds at the start of a line like `[ 2.001s] ...`, and the rest of the line.
fn stamped(line: &str) -> Option<(f64, &str)> {
    let rest = line.strip_prefix('[')?;
    let (stamp, text) = rest.split_once("s] ")?;
    Some((stamp.trim().parse().ok()?, text))
}

/// The first stamped line whose text starts with `prefix`: its offset and text.
fn find<'a>(lines: &[(f64, &'a str)], prefix: &str) -> (f64, &'a str) {
    *lines
        .iter()
        .find(|(_, text)| text.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}"))
}

fn assert_near(actual_seconds: f64, target: Duration, what: &str) {
    let error = (actual_seconds - target.as_secs_f64()).abs();
    assert!(
        error <= TOLERANCE.as_secs_f64(),
        "{what} at {actual_seconds:.3} s, expected {:.3} s within {} ms",
        target.as_secs_f64(),
        TOLERANCE.as_millis()
    );
}

/// `+2.001s` in a summary line, after `label`.
fn summary_offset(line: &str, label: &str) -> f64 {
    let after = line
        .split_once(label)
        .unwrap_or_else(|| panic!("{label:?} missing in {line:?}"))
        .1;
    let value = after
        .strip_prefix('+')
        .and_then(|rest| rest.split_once('s'))
        .map(|(number, _)| number)
        .unwrap_or_else(|| panic!("no offset after {label:?} in {line:?}"));
    value.parse().expect("an offset in seconds")
}

#[test]
fn demo_runs_three_jobs_on_time_and_buries_the_failing_one() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("demo.db");
    let run = punctual(["demo", "--db", &arg(&db)]).ok();
    let out = &run.stdout;
    let context = format!("demo output:\n{out}\nstderr:\n{}", run.stderr);
    assert!(
        out.contains(&format!("database: {}", db.display())),
        "{context}"
    );

    let lines: Vec<(f64, &str)> = out.lines().filter_map(stamped).collect();
    let check = |prefix: &str| {
        assert!(
            lines.iter().any(|(_, text)| text.starts_with(prefix)),
            "no line starting with {prefix:?}\n{context}"
        );
    };

    // Job 1 prints its message at 2 s.
    check("job 1 (print): Hello from punctual!");
    let (at, _) = find(&lines, "job 1 (print): Hello from punctual!");
    assert_near(at, Duration::from_millis(2_000), "job 1's message");

    // Job 2 counts to 3, starting at 3.5 s, in order.
    let counted: Vec<(f64, &str)> = lines
        .iter()
        .filter(|(_, text)| text.starts_with("job 2 (count): "))
        .copied()
        .collect();
    let numbers: Vec<&str> = counted
        .iter()
        .map(|(_, text)| &text["job 2 (count): ".len()..])
        .collect();
    assert_eq!(numbers, ["1", "2", "3"], "{context}");
    assert_near(
        counted[0].0,
        Duration::from_millis(3_500),
        "job 2's first number",
    );

    // Job 3 fails three times, with the engine saying when it retries, then is dead.
    check("job 3 (fail): attempt 1/3, failing on purpose");
    let (first_failure, _) = find(&lines, "job 3 (fail): attempt 1/3, failing on purpose");
    assert_near(
        first_failure,
        Duration::from_millis(5_000),
        "job 3's first attempt",
    );
    for attempt in 1..=2 {
        check(&format!(
            "engine: job 3 (fail) attempt {attempt}/3 failed: simulated failure on attempt {attempt}/3; will retry at +"
        ));
    }
    check(
        "engine: job 3 (fail) attempt 3/3 failed: simulated failure on attempt 3/3; no attempts left, marked dead",
    );
    // Retries follow the backoff (200 ms, then 400 ms), after the first attempt.
    let (second, _) = find(&lines, "job 3 (fail): attempt 2/3");
    let (third, _) = find(&lines, "job 3 (fail): attempt 3/3");
    assert!(
        second >= first_failure + 0.15 && third >= second + 0.35,
        "{context}"
    );

    // The engine reports starts with their lateness.
    check("engine: job 1 (print) started, attempt 1/1, due +2.000s, ");

    // The summary: final states, attempts, scheduled against actual offsets, the kept error.
    let summary = out
        .split_once("summary (offsets from the start):")
        .unwrap_or_else(|| panic!("no summary\n{context}"))
        .1;
    let line_of = |prefix: &str| -> &str {
        summary
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no summary line for {prefix:?}\n{context}"))
    };
    let expectations = [
        ("job 1 (print): succeeded, attempts 1/1", 2_000),
        ("job 2 (count): succeeded, attempts 1/1", 3_500),
        ("job 3 (fail): dead, attempts 3/3", 5_000),
    ];
    for (prefix, millis) in expectations {
        let line = line_of(prefix);
        let target = Duration::from_millis(millis);
        assert_near(summary_offset(line, "scheduled at "), target, prefix);
        assert_near(summary_offset(line, "started at "), target, prefix);
    }
    assert!(
        line_of("job 3 (fail)").ends_with("last error: simulated failure on attempt 3/3"),
        "{context}"
    );

    // The jobs stay in the file, where `punctual jobs` finds them.
    let counts = punctual(["jobs", "--db", &arg(&db), "counts", "--json"]).ok();
    let mut found: Vec<(String, String, u64)> = json_lines(&counts.stdout)
        .iter()
        .map(|count| {
            (
                count["queue"].as_str().expect("queue").to_owned(),
                count["state"].as_str().expect("state").to_owned(),
                count["count"].as_u64().expect("count"),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("demo".to_owned(), "dead".to_owned(), 1),
            ("demo".to_owned(), "succeeded".to_owned(), 2)
        ]
    );
}
