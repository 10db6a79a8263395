//! `punctual bench` end to end: each workload runs on the real binary with a small N, and its
//! JSON report must carry every field of docs/benchmarks.md's contract and keep the guarantees
//! (no job lost, no unexplained duplicate). Speeds are reported, never asserted.

use std::process::Command;

use serde_json::Value;

/// The fields docs/benchmarks.md promises in every report.
const CONTRACT: [&str; 14] = [
    "workload",
    "store",
    "jobs",
    "nodes",
    "enqueue_per_s",
    "worked_per_s",
    "lateness_ms",
    "lost",
    "duplicates",
    "duplicates_explained",
    "stale_completions_refused",
    "rss_mb_max",
    "start_to_first_fire_ms",
    "elapsed_s",
];

/// Runs `punctual bench ... --json`, requires success, and returns the last stdout line parsed.
fn bench(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_punctual"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("the punctual binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let last = stdout.lines().last().expect("some output");
    let report: Value = serde_json::from_str(last)
        .unwrap_or_else(|error| panic!("the last line is not JSON ({error}): {last:?}"));
    assert!(report.is_object(), "{report}");
    for field in CONTRACT {
        assert!(report.get(field).is_some(), "{field} missing from {report}");
    }
    assert_eq!(report["lost"], 0, "{report}");
    let duplicates = report["duplicates"].as_u64().expect("a count");
    let explained = report["duplicates_explained"].as_u64().expect("a count");
    assert_eq!(
        duplicates - explained,
        0,
        "unexplained duplicates: {report}"
    );
    assert!(report["elapsed_s"].is_number(), "{report}");
    report
}

/// Runs `punctual bench ...`, requires failure, and returns stderr.
fn refused(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_punctual"))
        .arg("bench")
        .args(args)
        .output()
        .expect("the punctual binary runs");
    assert!(!output.status.success(), "bench {args:?} should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_lateness(report: &Value) {
    let lateness = &report["lateness_ms"];
    for field in ["p50", "p99", "p999", "max"] {
        assert!(lateness[field].is_number(), "lateness_ms.{field}: {report}");
    }
}

#[test]
fn throughput_on_memory_works_every_job() {
    let report = bench(&[
        "--workload",
        "throughput",
        "--store",
        "memory",
        "--jobs",
        "2000",
    ]);
    assert_eq!(report["workload"], "throughput");
    assert_eq!(report["store"], "memory");
    assert_eq!(report["jobs"], 2000);
    assert!(report["enqueue_per_s"].is_number(), "{report}");
    assert!(report["worked_per_s"].is_number(), "{report}");
    assert!(report["lateness_ms"].is_null(), "{report}");
}

#[test]
fn throughput_on_sqlite_works_every_job() {
    let report = bench(&[
        "--workload",
        "throughput",
        "--store",
        "sqlite",
        "--jobs",
        "2000",
    ]);
    assert_eq!(report["store"], "sqlite");
    assert!(report["worked_per_s"].is_number(), "{report}");
}

#[test]
fn timeliness_reports_lateness_percentiles() {
    for store in ["memory", "sqlite"] {
        let report = bench(&[
            "--workload",
            "timeliness",
            "--store",
            store,
            "--jobs",
            "200",
            "--spread-s",
            "1",
        ]);
        assert_eq!(report["workload"], "timeliness");
        assert_lateness(&report);
        assert!(report["worked_per_s"].is_null(), "{report}");
    }
}

#[test]
fn backlog_restarts_and_fires_the_trickle() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let store = format!("sqlite:{}", directory.path().join("backlog.db").display());
    let report = bench(&[
        "--workload",
        "backlog",
        "--store",
        &store,
        "--jobs",
        "20000",
        "--spread-s",
        "1",
    ]);
    assert_eq!(report["workload"], "backlog");
    assert_lateness(&report);
    assert!(report["start_to_first_fire_ms"].is_number(), "{report}");
    assert!(report["rss_mb_max"].is_number(), "{report}");
    assert!(report["store_bytes_per_job"].is_number(), "{report}");
}

#[test]
fn crash_loses_nothing_and_explains_every_duplicate() {
    let report = bench(&[
        "--workload",
        "crash",
        "--store",
        "sqlite",
        "--jobs",
        "300",
        "--kills",
        "3",
        "--spread-s",
        "2",
        // Longer than the default, so that a worker stalled (not killed) by a loaded CI machine
        // is not rescued: its rerun would count as unexplained.
        "--lease-ms",
        "3000",
    ]);
    assert_eq!(report["workload"], "crash");
    assert_eq!(report["kills"], 3);
    assert_eq!(report["integrity_ok"], true, "{report}");
}

#[test]
fn refuses_what_cannot_work() {
    assert!(refused(&["--workload", "cluster", "--store", "memory"]).contains("PostgreSQL"));
    assert!(refused(&["--workload", "cluster", "--store", "sqlite"]).contains("PostgreSQL"));
    assert!(refused(&["--workload", "crash", "--store", "memory"]).contains("sqlite"));
    assert!(refused(&["--workload", "crash", "--store", "mysql://h/db"]).contains("unknown store"));
    assert!(
        refused(&["--workload", "throughput", "--store", "bench.db"]).contains("sqlite:bench.db")
    );
}

/// The service workloads run a real `punctual serve` child and drive it over loopback.
#[test]
fn the_service_workloads_run_through_a_real_server_and_keep_their_guarantees() {
    let report = bench(&[
        "--workload",
        "api-create",
        "--store",
        "sqlite",
        "--jobs",
        "2000",
    ]);
    assert!(
        report["enqueue_per_s"].as_f64().expect("a rate") > 0.0,
        "{report}"
    );
    for field in ["p50", "p99", "max"] {
        assert!(report["request_ms"][field].is_number(), "{report}");
    }
    let report = bench(&[
        "--workload",
        "webhook",
        "--store",
        "sqlite",
        "--jobs",
        "300",
        "--spread-s",
        "1",
    ]);
    assert_eq!(report["bad_signatures"], 0, "{report}");
    assert!(report["lateness_ms"]["p99"].is_number(), "{report}");
    let report = bench(&[
        "--workload",
        "webhook-burst",
        "--store",
        "sqlite",
        "--jobs",
        "300",
        "--receiver-delay-ms",
        "20",
    ]);
    assert_eq!(report["bad_signatures"], 0, "{report}");
    assert!(report["lateness_first_ms"].is_number(), "{report}");
    let report = bench(&[
        "--workload",
        "remote-worker",
        "--store",
        "sqlite",
        "--jobs",
        "2000",
    ]);
    assert!(
        report["worked_per_s"].as_f64().expect("a rate") > 0.0,
        "{report}"
    );
    let report = bench(&["--workload", "burst", "--store", "sqlite", "--jobs", "500"]);
    assert!(report["lateness_first_ms"].is_number(), "{report}");
    // The service needs a durable store.
    let refused = refused(&["--workload", "webhook", "--store", "memory", "--jobs", "10"]);
    assert!(refused.contains("durable store"), "{refused}");
}
