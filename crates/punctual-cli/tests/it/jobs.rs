//! `punctual schedule` and `punctual jobs`: a round trip through a SQLite file, and every bad
//! input refused with a clear message and nothing stored.

use std::path::Path;

use serde_json::Value;

use crate::{Run, arg, json_lines, punctual, sqlite};

/// Schedules with `args` into `db`, printing JSON, and returns the stored job.
fn schedule(db: &Path, args: &[&str]) -> Value {
    let store = sqlite(db);
    let mut all = vec!["schedule", "--store", &store, "--json"];
    all.extend_from_slice(args);
    let run = punctual(all).ok();
    let mut jobs = json_lines(&run.stdout);
    assert_eq!(jobs.len(), 1, "{}", run.stdout);
    jobs.remove(0)
}

fn jobs(db: &Path, args: &[&str]) -> Run {
    let store = sqlite(db);
    let mut all = vec!["jobs", "--store", &store];
    all.extend_from_slice(args);
    punctual(all)
}

fn listed_ids(db: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["list", "--json"];
    all.extend_from_slice(args);
    json_lines(&jobs(db, &all).ok().stdout)
        .iter()
        .map(|job| job["id"].as_str().expect("an id").to_owned())
        .collect()
}

#[test]
fn scheduled_jobs_can_be_listed_shown_counted_and_cancelled() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("jobs.db");

    let once = schedule(
        &db,
        &[
            "--kind",
            "email.send",
            "--payload",
            r#"{"to":"ada@example.com"}"#,
            "--in",
            "1h",
        ],
    );
    assert_eq!(once["kind"], "email.send");
    assert_eq!(once["queue"], "default");
    assert_eq!(once["state"], "scheduled");
    assert_eq!(once["payload"]["to"], "ada@example.com");
    assert_eq!(once["schedule"], Value::Null);
    assert_eq!(once["attempt_max"], 20);

    let at = schedule(
        &db,
        &["--kind", "report", "--at", "2099-01-01T09:00:00+01:00"],
    );
    assert_eq!(at["run_at"], "2099-01-01T08:00:00Z");
    assert_eq!(at["payload"], Value::Null);

    let nightly = schedule(
        &db,
        &[
            "--kind",
            "cleanup",
            "--cron",
            "0 3 * * *",
            "--tz",
            "Europe/Berlin",
            "--queue",
            "maintenance",
        ],
    );
    assert_eq!(nightly["schedule"]["cron"], "0 3 * * *");
    assert_eq!(nightly["schedule"]["time_zone"], "Europe/Berlin");
    assert_eq!(nightly["queue"], "maintenance");

    let payload_file = dir.path().join("payload.json");
    std::fs::write(&payload_file, r#"{"url": "https://example.com"}"#).expect("write payload");
    let every = schedule(
        &db,
        &[
            "--kind",
            "ping",
            "--every",
            "30s",
            "--priority",
            "3",
            "--attempts",
            "5",
            "--payload-file",
            &arg(&payload_file),
        ],
    );
    assert_eq!(every["schedule"]["interval_ms"], 30_000);
    assert_eq!(every["priority"], 3);
    assert_eq!(every["attempt_max"], 5);
    assert_eq!(every["payload"]["url"], "https://example.com");

    let ids: Vec<String> = [&once, &at, &nightly, &every]
        .iter()
        .map(|job| job["id"].as_str().expect("an id").to_owned())
        .collect();

    // The human-readable schedule output names the id.
    let plain = punctual([
        "schedule",
        "--store",
        &sqlite(&db),
        "--kind",
        "plain",
        "--in",
        "5m",
    ])
    .ok();
    assert!(
        plain.stdout.starts_with("scheduled job "),
        "{}",
        plain.stdout
    );
    let plain_id = plain.stdout["scheduled job ".len()..]
        .lines()
        .next()
        .expect("a line")
        .trim()
        .to_owned();

    // list: ids in creation order, filters, paging.
    let mut all_ids = ids.clone();
    all_ids.push(plain_id.clone());
    assert_eq!(listed_ids(&db, &[]), all_ids);
    assert_eq!(
        listed_ids(&db, &["--queue", "maintenance"]),
        [ids[2].clone()]
    );
    assert_eq!(listed_ids(&db, &["--kind", "ping"]), [ids[3].clone()]);
    assert_eq!(listed_ids(&db, &["--state", "scheduled"]).len(), 5);
    let first_page = listed_ids(&db, &["--limit", "2"]);
    assert_eq!(first_page, all_ids[..2]);
    let second_page = listed_ids(&db, &["--limit", "2", "--after", &first_page[1]]);
    assert_eq!(second_page, all_ids[2..4]);

    let table = jobs(&db, &["list"]).ok().stdout;
    let header = table.lines().next().expect("a header");
    for column in [
        "ID", "STATE", "QUEUE", "KIND", "RUN_AT", "ATTEMPT", "PRIORITY",
    ] {
        assert!(header.contains(column), "{table}");
    }
    for id in &all_ids {
        assert!(table.contains(id.as_str()), "{table}");
    }

    // show, in both forms.
    let shown = jobs(&db, &["show", &ids[0]]).ok().stdout;
    for expected in [
        "id:".to_owned(),
        ids[0].clone(),
        "email.send".to_owned(),
        "ada@example.com".to_owned(),
        "scheduled".to_owned(),
        "0 of 20".to_owned(),
    ] {
        assert!(
            shown.contains(&expected),
            "{expected:?} missing in\n{shown}"
        );
    }
    let shown_json = json_lines(&jobs(&db, &["show", &ids[1], "--json"]).ok().stdout);
    assert_eq!(shown_json[0]["id"], ids[1].as_str());

    // counts, then cancel and count again.
    let counts = jobs(&db, &["counts"]).ok().stdout;
    assert!(counts.contains("maintenance"), "{counts}");
    assert!(
        counts
            .lines()
            .any(|line| line.starts_with("total") && line.trim_end().ends_with('5')),
        "{counts}"
    );

    let cancelled = jobs(&db, &["cancel", &ids[0]]).ok();
    assert!(
        cancelled
            .stdout
            .contains(&format!("cancelled job {}", ids[0])),
        "{}",
        cancelled.stdout
    );
    let shown = json_lines(&jobs(&db, &["show", &ids[0], "--json"]).ok().stdout);
    assert_eq!(shown[0]["state"], "cancelled");
    assert_eq!(listed_ids(&db, &["--state", "cancelled"]), [ids[0].clone()]);
    let by_state = state_counts(&db);
    assert_eq!(
        by_state,
        [("cancelled".to_owned(), 1), ("scheduled".to_owned(), 4)]
    );

    // Cancelling a finished job, or a job that does not exist, is refused by name.
    let again = jobs(&db, &["cancel", &ids[0]]);
    assert_eq!(again.code, Some(4), "{}", again.stderr);
    assert!(
        again.stderr.starts_with("error: state_conflict: "),
        "{}",
        again.stderr
    );
    assert!(
        again.stderr.contains("cancelled") && again.stderr.contains("cannot cancel"),
        "{}",
        again.stderr
    );
    let missing = "0190d9b4-7c3a-7000-8000-000000000000";
    let unknown = jobs(&db, &["show", missing]);
    assert_eq!(unknown.code, Some(3));
    assert!(
        unknown.stderr.contains(&format!("no job {missing}")),
        "{}",
        unknown.stderr
    );
    let unknown = jobs(&db, &["cancel", missing]);
    assert_eq!(unknown.code, Some(3));
    assert!(unknown.stderr.contains("not found"), "{}", unknown.stderr);
    let bad_id = jobs(&db, &["show", "nope"]);
    assert_eq!(bad_id.code, Some(5));
    assert!(
        bad_id.stderr.contains("invalid job id \"nope\""),
        "{}",
        bad_id.stderr
    );
}

/// `(state, count)` summed over queues, sorted by state.
fn state_counts(db: &Path) -> Vec<(String, u64)> {
    let mut totals = std::collections::BTreeMap::<String, u64>::new();
    for count in json_lines(&jobs(db, &["counts", "--json"]).ok().stdout) {
        *totals
            .entry(count["state"].as_str().expect("a state").to_owned())
            .or_default() += count["count"].as_u64().expect("a count");
    }
    totals.into_iter().collect()
}

#[test]
fn bad_input_is_refused_by_name_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("jobs.db");
    let baseline = schedule(&db, &["--kind", "baseline", "--in", "1h"]);
    let store = sqlite(&db);

    let oversized_payload = dir.path().join("big.json");
    // Valid JSON, just over the 256 KiB limit (and over Linux's limit on one argument, hence a file).
    std::fs::write(
        &oversized_payload,
        format!("\"{}\"", "x".repeat(300 * 1024)),
    )
    .expect("write");
    let broken_payload = dir.path().join("broken.json");
    std::fs::write(&broken_payload, "{\"a\":").expect("write");
    let long_kind = "k".repeat(129);

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--kind", "", "--in", "1h"],
            "invalid --kind: kind must not be empty",
        ),
        (
            vec!["--kind", &long_kind, "--in", "1h"],
            "invalid --kind: kind is 129 bytes; the limit is 128",
        ),
        (
            vec!["--kind", "send email!", "--in", "1h"],
            "invalid --kind: kind may hold only letters, digits",
        ),
        (
            vec!["--kind", "k", "--in", "1h", "--queue", "a b"],
            "invalid --queue: queue may hold only",
        ),
        (
            vec!["--kind", "k", "--in", "1h", "--payload", "{\"a\":"],
            "invalid --payload: payload is not valid JSON",
        ),
        (
            vec!["--kind", "k", "--in", "1h", "--payload", "nope"],
            "invalid --payload: payload is not valid JSON",
        ),
        (
            vec![
                "--kind",
                "k",
                "--in",
                "1h",
                "--payload-file",
                oversized_payload.to_str().expect("UTF-8"),
            ],
            "payload is 307202 bytes; the limit is 262144",
        ),
        (
            vec![
                "--kind",
                "k",
                "--in",
                "1h",
                "--payload-file",
                broken_payload.to_str().expect("UTF-8"),
            ],
            "payload is not valid JSON",
        ),
        (
            vec![
                "--kind",
                "k",
                "--in",
                "1h",
                "--payload-file",
                "/nonexistent/payload.json",
            ],
            "invalid --payload-file /nonexistent/payload.json",
        ),
        (
            vec!["--kind", "k", "--cron", "61 * * * *"],
            "invalid --cron or --tz: invalid cron expression \"61 * * * *\"",
        ),
        (
            vec!["--kind", "k", "--cron", "* * *"],
            "expected 5 or 6 fields, found 3",
        ),
        (
            vec!["--kind", "k", "--cron", "0 0 31 2 *"],
            "it never fires",
        ),
        (
            vec!["--kind", "k", "--in", "1h", "--tz", "UTC"],
            "--tz applies only to --cron",
        ),
        (
            vec!["--kind", "k", "--cron", "0 9 * * *", "--tz", "Mars/Olympus"],
            "unknown time zone \"Mars/Olympus\"",
        ),
        (
            vec!["--kind", "k", "--at", "1900-01-01T00:00:00Z"],
            "invalid --at: run_at 1900-01-01T00:00:00.000Z is outside the accepted range",
        ),
        (
            vec!["--kind", "k", "--at", "2300-01-01T00:00:00Z"],
            "invalid --at: run_at 2300-01-01T00:00:00.000Z is outside the accepted range",
        ),
        (
            vec!["--kind", "k", "--in", "40000d"],
            "invalid --in: run_at",
        ),
        (
            vec!["--kind", "k", "--at", "tomorrow"],
            "invalid --at \"tomorrow\": expected RFC 3339",
        ),
        (
            vec!["--kind", "k", "--in", "5x"],
            "invalid --in: \"5x\" has an unknown unit",
        ),
        (
            vec!["--kind", "k", "--in", "30"],
            "invalid --in: \"30\" has no unit",
        ),
        (
            vec!["--kind", "k", "--every", "10ms"],
            "invalid --every: interval 10 ms is outside",
        ),
        (
            vec!["--kind", "k", "--in", "1h", "--attempts", "0"],
            "invalid --attempts: 0 is outside 1 ..= 1000",
        ),
        (
            vec!["--kind", "k", "--in", "1h", "--attempts", "1001"],
            "invalid --attempts: 1001 is outside 1 ..= 1000",
        ),
        (
            vec!["--kind", "k", "--in", "1h", "--priority", "10"],
            "invalid --priority: 10 is outside 0 ..= 9",
        ),
        (
            vec!["--kind", "k", "--in", "1h", "--priority", "300"],
            "invalid --priority: 300 is outside 0 ..= 9",
        ),
    ];
    for (args, expected) in &cases {
        let mut all = vec!["schedule", "--store", &store];
        all.extend_from_slice(args);
        let run = punctual(&all);
        assert_eq!(
            run.code,
            Some(5),
            "{args:?} should be refused with exit code 5; stdout:\n{}",
            run.stdout
        );
        assert!(
            run.stderr.starts_with("error: validation_failed: ") && run.stderr.contains(expected),
            "{args:?}: expected {expected:?} in stderr:\n{}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{args:?} printed {:?}", run.stdout);
    }

    // Usage errors are clap's: exit code 2, with the reason.
    let usage: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--kind", "k"], "required"),
        (
            vec!["--kind", "k", "--in", "1h", "--at", "2099-01-01T00:00:00Z"],
            "cannot be used with",
        ),
        (
            vec!["--kind", "k", "--in", "1h", "--attempts", "many"],
            "invalid value 'many'",
        ),
        (
            vec![
                "--kind",
                "k",
                "--in",
                "1h",
                "--payload",
                "1",
                "--payload-file",
                "x",
            ],
            "cannot be used with",
        ),
    ];
    for (args, expected) in &usage {
        let mut all = vec!["schedule", "--store", &store];
        all.extend_from_slice(args);
        let run = punctual(&all);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(expected),
            "{args:?}: expected {expected:?} in:\n{}",
            run.stderr
        );
    }

    // Nothing but the baseline job was stored.
    let counts = jobs(&db, &["counts"]).ok().stdout;
    assert!(
        counts
            .lines()
            .any(|line| line.starts_with("total") && line.trim_end().ends_with(" 1")),
        "{counts}"
    );
    assert_eq!(state_counts(&db), [("scheduled".to_owned(), 1)]);
    assert_eq!(
        listed_ids(&db, &[]),
        [baseline["id"].as_str().expect("an id").to_owned()]
    );

    // A refused job does not even create the database file.
    let fresh = dir.path().join("fresh.db");
    let run = punctual([
        "schedule",
        "--store",
        &sqlite(&fresh),
        "--kind",
        "",
        "--in",
        "1h",
    ]);
    assert_eq!(run.code, Some(5));
    assert!(!fresh.exists(), "a refused job created {}", fresh.display());
}

#[test]
fn reading_commands_refuse_a_missing_database_and_bad_filters() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let missing = dir.path().join("missing.db");
    for command in [
        &["counts"][..],
        &["list"],
        &["cancel", "0190d9b4-7c3a-7000-8000-000000000000"],
    ] {
        let run = jobs(&missing, command);
        assert_eq!(run.code, Some(1), "{command:?}");
        assert!(
            run.stderr.contains("no database at"),
            "{command:?}: {}",
            run.stderr
        );
    }
    assert!(!missing.exists(), "a reading command created the database");

    let db = dir.path().join("jobs.db");
    schedule(&db, &["--kind", "k", "--in", "1h"]);
    for (args, expected) in [
        (
            &["list", "--state", "asleep"][..],
            "invalid --state: unknown job state \"asleep\"",
        ),
        (
            &["list", "--limit", "0"],
            "invalid --limit: 0 is outside 1 ..= 1000",
        ),
        (
            &["list", "--limit", "1001"],
            "invalid --limit: 1001 is outside 1 ..= 1000",
        ),
        (
            &["list", "--queue", ""],
            "invalid --queue: queue must not be empty",
        ),
        (&["list", "--after", "x"], "invalid job id \"x\""),
    ] {
        let run = jobs(&db, args);
        assert_eq!(run.code, Some(5), "{args:?}");
        assert!(
            run.stderr.contains(expected),
            "{args:?}: expected {expected:?} in {}",
            run.stderr
        );
    }
}

/// A payload file whose length says nothing (`/dev/zero` reports 0 and never ends) is read only
/// up to the limit and refused, promptly, storing nothing.
#[test]
fn an_endless_payload_file_is_refused_promptly() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("jobs.db");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_punctual"))
        .args([
            "schedule",
            "--store",
            &sqlite(&db),
            "--kind",
            "k",
            "--in",
            "1h",
        ])
        .args(["--payload-file", "/dev/zero"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the punctual binary runs");
    // Reading 256 KiB takes milliseconds; the deadline only stops an unbounded read from eating
    // the machine's memory, so it is generous for a loaded machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().expect("check on punctual").is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("punctual was still reading /dev/zero after 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("punctual's output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.starts_with("error: ")
            && stderr.contains(
                "invalid --payload-file /dev/zero: payload is more than 262144 bytes; \
                 the limit is 262144"
            ),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "{:?}", output.stdout);
    assert!(!db.exists(), "a refused job created {}", db.display());
}

/// A store is named one way, `--store URL`: `sqlite:punctual.db` when none is given, a bare path
/// refused with the spelling to use, and no `--db`.
#[test]
fn a_store_is_named_by_its_url_alone() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let in_dir = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_punctual"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("the punctual binary runs");
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    };

    // Without --store, the job commands use punctual.db in the working directory.
    let missing = in_dir(&["jobs", "counts"]);
    assert_eq!(missing.code, Some(1), "{}", missing.stderr);
    assert!(
        missing.stderr.contains("no database at punctual.db")
            && missing.stderr.contains("--store sqlite:PATH"),
        "{}",
        missing.stderr
    );
    in_dir(&["schedule", "--kind", "k", "--in", "1h"]).ok();
    assert!(dir.path().join("punctual.db").exists());
    let counts = in_dir(&["jobs", "--store", "sqlite:punctual.db", "counts", "--json"]).ok();
    assert_eq!(json_lines(&counts.stdout).len(), 1, "{}", counts.stdout);

    // A bare path is not a store: the message gives the spelling that is.
    let bare = in_dir(&["jobs", "--store", "punctual.db", "counts"]);
    assert_eq!(bare.code, Some(2), "{}", bare.stderr);
    assert!(
        bare.stderr.contains("sqlite:punctual.db"),
        "{}",
        bare.stderr
    );

    // --db is gone.
    let old = in_dir(&["jobs", "--db", "punctual.db", "counts"]);
    assert_eq!(old.code, Some(2), "{}", old.stderr);
    assert!(old.stderr.contains("--db"), "{}", old.stderr);

    // A schema belongs to PostgreSQL only.
    let schema = in_dir(&[
        "jobs",
        "--store",
        "sqlite:punctual.db",
        "--schema",
        "jobs",
        "counts",
    ]);
    assert_eq!(schema.code, Some(1), "{}", schema.stderr);
    assert!(
        schema.stderr.contains("--schema applies only"),
        "{}",
        schema.stderr
    );
}

/// `reschedule`, `retry`, `redrive` and `queues list` on a store, with the exit codes a server
/// would give the same refusals. (A dead job needs a server to die: the client tests retry and
/// redrive one.)
#[test]
fn a_store_reschedules_retries_redrives_and_lists_queues() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("jobs.db");
    let job = schedule(&db, &["--kind", "k", "--in", "1h", "--queue", "mail"]);
    let id = job["id"].as_str().expect("an id");

    let moved = json_lines(
        &jobs(&db, &["reschedule", id, "--in", "2h", "--json"])
            .ok()
            .stdout,
    );
    assert!(
        moved[0]["run_at"].as_str() > job["run_at"].as_str(),
        "{moved:?}"
    );
    let moved = jobs(&db, &["reschedule", id, "--at", "2099-01-01T00:00:00Z"]).ok();
    assert!(
        moved.stdout.starts_with(&format!("rescheduled job {id}"))
            && moved.stdout.contains("2099-01-01T00:00:00Z"),
        "{}",
        moved.stdout
    );
    let far = jobs(&db, &["reschedule", id, "--at", "2300-01-01T00:00:00Z"]);
    assert_eq!(far.code, Some(5), "{}", far.stderr);
    assert!(
        far.stderr.starts_with("error: validation_failed: "),
        "{}",
        far.stderr
    );

    // Only a dead job can be retried; nothing is dead, so a redrive finds nothing.
    let retry = jobs(&db, &["retry", id]);
    assert_eq!(retry.code, Some(4), "{}", retry.stderr);
    assert!(
        retry.stderr.starts_with("error: state_conflict: ")
            && retry.stderr.contains("only a dead job can be retried"),
        "{}",
        retry.stderr
    );
    assert_eq!(
        jobs(&db, &["redrive"]).ok().stdout.trim(),
        "no dead jobs match"
    );
    let redriven = json_lines(
        &jobs(&db, &["redrive", "--json", "--queue", "mail"])
            .ok()
            .stdout,
    );
    assert_eq!(
        redriven,
        [serde_json::json!({"redriven": 0, "more": false})]
    );
    let bad = jobs(&db, &["redrive", "--limit", "10001"]);
    assert_eq!(bad.code, Some(5), "{}", bad.stderr);

    // queues list: the API's shape, one queue a line.
    let queues = json_lines(
        &punctual(["queues", "list", "--store", &sqlite(&db), "--json"])
            .ok()
            .stdout,
    );
    assert_eq!(queues.len(), 1, "{queues:?}");
    assert_eq!(queues[0]["queue"], "mail");
    assert_eq!(queues[0]["counts"]["scheduled"], 1);
    assert_eq!(queues[0]["due"], 0);
    let table = punctual(["queues", "list", "--store", &sqlite(&db)])
        .ok()
        .stdout;
    assert!(
        table.starts_with("QUEUE") && table.contains("mail"),
        "{table}"
    );
}
