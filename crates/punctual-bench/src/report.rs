//! The benchmark's result: one `Report` per run, printed as a table for people and as one JSON
//! line for scripts, plus the reading of a process's peak memory from `/proc`.
//!
//! Owns the JSON contract of docs/benchmarks.md: every field is always present, `null` when it
//! does not apply. Must not measure or decide anything: workloads fill the report in.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::stats::Lateness;

/// Latency percentiles of requests, in milliseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RequestMs {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// The figures of one benchmark run. Field names are the JSON contract; `Option` fields are
/// `null` in JSON when they do not apply to the workload, never left out.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub workload: &'static str,
    pub store: &'static str,
    pub jobs: u64,
    pub nodes: u32,
    pub enqueue_per_s: Option<f64>,
    pub worked_per_s: Option<f64>,
    pub lateness_ms: Option<Lateness>,
    pub lost: u64,
    pub duplicates: u64,
    pub duplicates_explained: u64,
    pub stale_completions_refused: Option<u64>,
    pub rss_mb_max: Option<f64>,
    pub start_to_first_fire_ms: Option<f64>,
    pub elapsed_s: f64,
    /// api-create: the latency of single creations, from each request's scheduled time.
    pub request_ms: Option<RequestMs>,
    /// webhook, webhook-burst: receipts whose signature did not verify; must be 0.
    pub bad_signatures: Option<u64>,
    /// burst, webhook, webhook-burst: the lateness of the first start (or receipt).
    pub lateness_first_ms: Option<f64>,
    // Fields beyond the contract.
    /// `release` or `debug`: figures from a debug build are not comparable.
    pub build: &'static str,
    pub concurrency: Option<u64>,
    /// Serve nodes killed with SIGKILL (crash, cluster).
    pub kills: Option<u64>,
    /// Serve nodes paused with SIGSTOP past their lease, then resumed (cluster).
    pub pauses: Option<u64>,
    /// Completions the store accepted from a holder whose job later ran under a larger lease
    /// token (a job succeeded under a token smaller than one it was received under); must be 0
    /// (crash, cluster).
    pub stale_completions_accepted: Option<u64>,
    /// Webhooks sent by a resumed holder after its job had been taken over under a larger
    /// token (cluster): counted among the explained duplicates, their outcome refused.
    pub runs_after_takeover: Option<u64>,
    /// crash, cluster: reruns that arrived before the lease of the run before them had run out
    /// (a guarantee broken; must be 0).
    pub reruns_before_lease_expiry: Option<u64>,
    /// Bytes of the store's files (database and write-ahead log) per stored job.
    pub store_bytes_per_job: Option<f64>,
    /// backlog: how long `Store::counts` and `Store::queue_stats` (a metrics scrape's questions)
    /// took with the backlog stored.
    pub stats_ms: Option<f64>,
    /// PostgreSQL: dead row versions of the jobs table at the end (`n_dead_tup`).
    pub dead_tuples: Option<u64>,
    /// PostgreSQL: the jobs table's total size with its indexes at the end.
    pub table_bytes: Option<u64>,
    /// The store's own integrity check after the run (crash workload).
    pub integrity_ok: Option<bool>,
    /// Store calls the engine saw fail (and retried).
    pub store_errors: Option<u64>,
    /// Broken guarantees found by the run; the command fails when this is not empty.
    pub problems: Vec<String>,
}

impl Report {
    /// A report with nothing measured yet.
    pub fn new(workload: &'static str, store: &'static str, jobs: u64) -> Report {
        Report {
            workload,
            store,
            jobs,
            nodes: 1,
            enqueue_per_s: None,
            worked_per_s: None,
            lateness_ms: None,
            lost: 0,
            duplicates: 0,
            duplicates_explained: 0,
            stale_completions_refused: None,
            rss_mb_max: None,
            start_to_first_fire_ms: None,
            elapsed_s: 0.0,
            request_ms: None,
            bad_signatures: None,
            lateness_first_ms: None,
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            concurrency: None,
            kills: None,
            pauses: None,
            stale_completions_accepted: None,
            runs_after_takeover: None,
            reruns_before_lease_expiry: None,
            store_bytes_per_job: None,
            stats_ms: None,
            dead_tuples: None,
            table_bytes: None,
            integrity_ok: None,
            store_errors: None,
            problems: Vec::new(),
        }
    }

    /// Duplicates not explained by a killed holder; docs/benchmarks.md requires 0.
    pub fn unexplained_duplicates(&self) -> u64 {
        self.duplicates.saturating_sub(self.duplicates_explained)
    }

    /// Whether a guarantee is broken: a job lost, an unexplained duplicate, a stale completion
    /// accepted, a failed integrity check.
    pub fn broken(&self) -> bool {
        self.lost > 0
            || self.unexplained_duplicates() > 0
            || self.stale_completions_accepted.unwrap_or(0) > 0
            || self.reruns_before_lease_expiry.unwrap_or(0) > 0
            || self.integrity_ok == Some(false)
    }

    /// Records the guarantees every workload must keep as problems when they are broken.
    pub fn check_guarantees(&mut self) {
        if self.lost > 0 {
            self.problems
                .push(format!("{} jobs were scheduled but never ran", self.lost));
        }
        if self.unexplained_duplicates() > 0 {
            self.problems.push(format!(
                "{} duplicate runs are not explained by a killed or paused holder whose lease \
                 had provably run out",
                self.unexplained_duplicates()
            ));
        }
        if let Some(accepted) = self.stale_completions_accepted.filter(|count| *count > 0) {
            self.problems.push(format!(
                "{accepted} completions were accepted from holders whose lease had moved on"
            ));
        }
        if let Some(early) = self.reruns_before_lease_expiry.filter(|count| *count > 0) {
            self.problems.push(format!(
                "{early} reruns arrived before the lease of the run before them had run out"
            ));
        }
        if self.integrity_ok == Some(false) {
            self.problems
                .push("the store's integrity check failed".to_owned());
        }
    }

    /// The report as one line of JSON, fields in the contract's order, floats rounded to a
    /// thousandth.
    pub fn to_json_line(&self) -> serde_json::Result<String> {
        let mut rounded = self.clone();
        for value in [
            &mut rounded.enqueue_per_s,
            &mut rounded.worked_per_s,
            &mut rounded.rss_mb_max,
            &mut rounded.start_to_first_fire_ms,
            &mut rounded.store_bytes_per_job,
            &mut rounded.lateness_first_ms,
            &mut rounded.stats_ms,
        ]
        .into_iter()
        .flatten()
        {
            *value = round(*value);
        }
        if let Some(lateness) = &mut rounded.lateness_ms {
            for value in [
                &mut lateness.p50,
                &mut lateness.p99,
                &mut lateness.p999,
                &mut lateness.max,
            ] {
                *value = round(*value);
            }
        }
        if let Some(request) = &mut rounded.request_ms {
            for value in [&mut request.p50, &mut request.p99, &mut request.max] {
                *value = round(*value);
            }
        }
        rounded.elapsed_s = round(rounded.elapsed_s);
        serde_json::to_string(&rounded)
    }

    /// The report as an aligned two-column table for people.
    pub fn to_table(&self) -> String {
        let optional = |value: Option<f64>, unit: &str| match value {
            Some(value) => format!("{value:.1}{unit}"),
            None => "-".to_owned(),
        };
        let count = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |n| n.to_string());
        let mut rows: Vec<(&str, String)> = vec![
            ("workload", self.workload.to_owned()),
            ("store", self.store.to_owned()),
            ("build", self.build.to_owned()),
            ("jobs", self.jobs.to_string()),
            ("nodes", self.nodes.to_string()),
            ("enqueue", optional(self.enqueue_per_s, " jobs/s")),
            ("worked", optional(self.worked_per_s, " jobs/s")),
        ];
        match &self.lateness_ms {
            Some(lateness) => rows.push((
                "lateness",
                format!(
                    "p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
                    lateness.p50, lateness.p99, lateness.p999, lateness.max
                ),
            )),
            None => rows.push(("lateness", "-".to_owned())),
        }
        if let Some(first) = self.lateness_first_ms {
            rows.push(("lateness of the first", format!("{first:.3} ms")));
        }
        if let Some(request) = &self.request_ms {
            rows.push((
                "single create latency",
                format!(
                    "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                    request.p50, request.p99, request.max
                ),
            ));
        }
        if let Some(stats) = self.stats_ms {
            rows.push(("counts and queue stats", format!("{stats:.3} ms")));
        }
        if let Some(bad) = self.bad_signatures {
            rows.push(("bad signatures", bad.to_string()));
        }
        rows.extend([
            ("lost", self.lost.to_string()),
            (
                "duplicates",
                format!(
                    "{} ({} explained)",
                    self.duplicates, self.duplicates_explained
                ),
            ),
            (
                "stale completions refused",
                count(self.stale_completions_refused),
            ),
            (
                "stale completions accepted",
                count(self.stale_completions_accepted),
            ),
            ("runs after takeover", count(self.runs_after_takeover)),
            (
                "reruns before lease expiry",
                count(self.reruns_before_lease_expiry),
            ),
            ("kills", count(self.kills)),
            ("pauses", count(self.pauses)),
            ("peak RSS", optional(self.rss_mb_max, " MB")),
            (
                "start to first fire",
                optional(self.start_to_first_fire_ms, " ms"),
            ),
            (
                "store bytes per job",
                optional(self.store_bytes_per_job, " B"),
            ),
            ("dead tuples", count(self.dead_tuples)),
            (
                "table bytes",
                optional(
                    self.table_bytes
                        .map(|bytes| bytes as f64 / (1024.0 * 1024.0)),
                    " MiB",
                ),
            ),
            (
                "integrity check",
                match self.integrity_ok {
                    Some(true) => "ok".to_owned(),
                    Some(false) => "FAILED".to_owned(),
                    None => "-".to_owned(),
                },
            ),
            ("store errors", count(self.store_errors)),
            ("elapsed", format!("{:.2} s", self.elapsed_s)),
        ]);
        let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
        let mut table = String::new();
        for (name, value) in rows {
            // Writing to a String cannot fail.
            let _ = writeln!(table, "{name:<width$}  {value}");
        }
        for problem in &self.problems {
            let _ = writeln!(table, "PROBLEM: {problem}");
        }
        table
    }
}

/// `value` rounded to three decimals, so the JSON line stays readable.
fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// The value in kB of the `field` line (`VmHWM`, `VmRSS`) of a `/proc/<pid>/status` text.
pub fn status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// The peak resident set size of a process (`self` or a pid) in MB, from `/proc`; `None` where
/// `/proc` is not available.
pub fn peak_rss_mb(process: &str) -> Option<f64> {
    let status = std::fs::read_to_string(Path::new("/proc").join(process).join("status")).ok()?;
    status_kb(&status, "VmHWM").map(|kb| kb as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields docs/benchmarks.md promises, in its order.
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

    fn parse(report: &Report) -> serde_json::Map<String, serde_json::Value> {
        let line = report.to_json_line().expect("a report serialises");
        assert!(!line.contains('\n'), "one line: {line}");
        match serde_json::from_str(&line).expect("the line is JSON") {
            serde_json::Value::Object(fields) => fields,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn an_empty_report_has_every_field_with_null_where_not_measured() {
        let fields = parse(&Report::new("throughput", "memory", 10));
        for name in CONTRACT {
            assert!(fields.contains_key(name), "missing {name}");
        }
        // The contract's fields come first, in its order.
        let line = Report::new("throughput", "memory", 10)
            .to_json_line()
            .expect("a report serialises");
        let positions: Vec<usize> = CONTRACT
            .iter()
            .map(|name| line.find(&format!("\"{name}\":")).expect("present"))
            .collect();
        assert!(positions.is_sorted(), "{line}");
        assert!(line.starts_with("{\"workload\":"), "{line}");
        for name in [
            "enqueue_per_s",
            "worked_per_s",
            "lateness_ms",
            "stale_completions_refused",
            "rss_mb_max",
            "start_to_first_fire_ms",
            "store_bytes_per_job",
            "integrity_ok",
            "pauses",
            "stale_completions_accepted",
            "runs_after_takeover",
            "reruns_before_lease_expiry",
            "dead_tuples",
            "table_bytes",
        ] {
            assert_eq!(fields[name], serde_json::Value::Null, "{name}");
        }
        assert_eq!(fields["workload"], "throughput");
        assert_eq!(fields["jobs"], 10);
        assert_eq!(fields["nodes"], 1);
        assert_eq!(fields["lost"], 0);
    }

    #[test]
    fn measured_fields_appear_rounded() {
        let mut report = Report::new("timeliness", "sqlite", 3);
        report.lateness_ms = Some(Lateness {
            p50: 0.123_456,
            p99: 1.0,
            p999: 2.0,
            max: 3.5,
        });
        report.worked_per_s = Some(12_345.678_9);
        let fields = parse(&report);
        assert_eq!(fields["lateness_ms"]["p50"], 0.123);
        assert_eq!(fields["lateness_ms"]["max"], 3.5);
        for name in ["p50", "p99", "p999", "max"] {
            assert!(fields["lateness_ms"].get(name).is_some(), "{name}");
        }
        assert_eq!(fields["worked_per_s"], 12_345.679);
    }

    #[test]
    fn broken_guarantees_become_problems() {
        let mut report = Report::new("crash", "sqlite", 3);
        report.duplicates = 3;
        report.duplicates_explained = 3;
        report.check_guarantees();
        assert!(report.problems.is_empty());
        assert!(!report.broken());
        report.lost = 1;
        report.duplicates_explained = 2;
        report.integrity_ok = Some(false);
        report.stale_completions_accepted = Some(1);
        assert!(report.broken());
        report.check_guarantees();
        assert_eq!(report.problems.len(), 4, "{:?}", report.problems);
        assert!(report.to_table().contains("PROBLEM"));
    }

    #[test]
    fn status_fields_are_read_in_kilobytes() {
        let status = "Name:\tpunctual\nVmPeak:\t  9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(status_kb(status, "VmHWM"), Some(2048));
        assert_eq!(status_kb(status, "VmRSS"), Some(1024));
        assert_eq!(status_kb(status, "VmSwap"), None);
        assert_eq!(status_kb("VmHWM:\tlots\n", "VmHWM"), None);
    }
}
