//! `punctual schedules` end to end: `explain` without a server (the table a person reads, and
//! JSON the same as the server's `POST /v1/schedules/explain`), and every other command against
//! a node running in this process, with their JSON shapes and exit codes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use punctual_core::{Clock as _, NodeId, Store, SystemClock};
use punctual_server::auth::{Scope, issue};
use punctual_server::dto::{
    Explanation, OccurrenceView, ScheduleView, TriggeredSchedule, UpsertedSchedule,
};
use punctual_server::webhook::sign::Secret;
use punctual_server::{Node, NodeConfig};
use serde_json::{Value, json};

use crate::{Run, json_lines, punctual};

/// A node on a temporary SQLite file, served on loopback from a runtime of its own, so that a
/// test can run the binary against it from plain (blocking) code.
struct InProcess {
    runtime: tokio::runtime::Runtime,
    node: Option<Node>,
    url: String,
    admin: String,
    reader: String,
    _dir: tempfile::TempDir,
}

impl InProcess {
    fn start() -> InProcess {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store: Arc<dyn Store> = Arc::new(
            punctual_sqlite::SqliteStore::open(dir.path().join("punctual.db")).expect("SQLite"),
        );
        let now = SystemClock.now();
        let (admin, record) = issue("admin", &[Scope::Admin], None, now).expect("a token");
        let (reader, read_record) = issue("reader", &[Scope::Read], None, now).expect("a token");
        let node = runtime.block_on(async {
            store.insert_token(record).await.expect("stored");
            store.insert_token(read_record).await.expect("stored");
            let config = NodeConfig {
                listen: "127.0.0.1:0".parse().expect("an address"),
                engine: punctual::Config {
                    node: NodeId::new("cli-schedules").expect("a node name"),
                    ..punctual::Config::default()
                },
                insecure_no_auth: false,
                metrics_public: false,
                idempotency_ttl: Duration::from_secs(3600),
                webhook_secrets: vec![Secret::parse(&Secret::generate()).expect("a secret")],
                allow_networks: vec!["127.0.0.0/8".parse().expect("a range")],
            };
            Node::start(store, Arc::new(SystemClock), config)
                .await
                .expect("the node starts")
        });
        let url = format!("http://{}", node.address());
        InProcess {
            runtime,
            node: Some(node),
            url,
            admin,
            reader,
            _dir: dir,
        }
    }

    /// `punctual schedules ARGS` against this node, as the admin.
    fn schedules(&self, args: &[&str]) -> Run {
        self.schedules_as(&self.admin, args)
    }

    fn schedules_as(&self, token: &str, args: &[&str]) -> Run {
        let mut all = vec!["schedules", "--url", &self.url, "--token", token];
        all.extend_from_slice(args);
        punctual(all)
    }

    /// `POST /v1/schedules/explain` with `question`.
    fn explain(&self, question: &Value) -> Explanation {
        let url = format!("{}/v1/schedules/explain", self.url);
        self.runtime.block_on(async {
            let response = reqwest::Client::new()
                .post(url)
                .bearer_auth(&self.reader)
                .json(question)
                .send()
                .await
                .expect("the server answers");
            assert_eq!(response.status(), 200);
            response.json().await.expect("an explanation")
        })
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            self.runtime.block_on(async {
                node.stop().await;
            });
        }
    }
}

fn one<T: serde::de::DeserializeOwned>(run: Run) -> T {
    let run = run.ok();
    serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|error| panic!("{error}: {}", run.stdout))
}

#[test]
fn explain_shows_the_spring_forward_and_the_fall_back_at_a_glance() {
    let spring = punctual([
        "schedules",
        "explain",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--from",
        "2026-03-28",
        "--count",
        "3",
    ])
    .ok();
    let lines: Vec<&str> = spring.stdout.lines().collect();
    assert!(
        lines[0].starts_with("cron \"30 2 * * *\" in Europe/Berlin, fixed-time (tzdb "),
        "{}",
        spring.stdout
    );
    assert!(lines[1].starts_with("LOCAL"), "{}", spring.stdout);
    assert!(
        lines[2].starts_with("Sat 2026-03-28 02:30  +01:00 CET   2026-03-28T01:30:00Z"),
        "{}",
        spring.stdout
    );
    assert_eq!(
        lines[3],
        "Sun 2026-03-29 03:00  +02:00 CEST  2026-03-29T01:00:00Z  moved: 02:30 does not exist \
         (spring forward)"
    );
    assert!(lines[4].starts_with("Mon 2026-03-30 02:30  +02:00 CEST  2026-03-30T00:30:00Z"));

    let autumn = punctual([
        "schedules",
        "explain",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--from",
        "2026-10-25",
        "--count",
        "1",
        "--json",
    ])
    .ok();
    let answer: Explanation = serde_json::from_str(autumn.stdout.trim()).expect("JSON");
    let once = &answer.occurrences[0];
    assert_eq!(once.utc, "2026-10-25T00:30:00Z");
    assert_eq!(once.local, "2026-10-25T02:30:00+02:00");
    assert_eq!(once.abbreviation.as_deref(), Some("CEST"));
    assert_eq!(
        once.repeat_not_fired.as_deref(),
        Some("2026-10-25T01:30:00Z")
    );

    let outage = punctual([
        "schedules",
        "explain",
        "0 * * * *",
        "--from",
        "2026-05-01",
        "--count",
        "1",
        "--outage-from",
        "2026-05-01T00:30:00Z",
        "--outage-to",
        "2026-05-01T05:10:00Z",
        "--misfire",
        "latest",
    ])
    .ok();
    assert!(
        outage.stdout.contains("1 fired, 4 skipped"),
        "{}",
        outage.stdout
    );
    assert!(
        outage
            .stdout
            .contains("skipped  2026-05-01T01:00:00Z .. 2026-05-01T04:00:00Z  4"),
        "{}",
        outage.stdout
    );
}

#[test]
fn explain_refuses_bad_input_with_the_servers_codes() {
    for (args, code) in [
        (vec!["61 * * * *"], 5),
        (vec!["30 2 * * *", "--tz", "Mars/Olympus"], 5),
        (vec!["30 2 * * *", "--from", "soon"], 5),
        (vec!["30 2 * * *", "--count", "0"], 5),
        (
            vec![
                "30 2 * * *",
                "--outage-from",
                "2026-01-02",
                "--outage-to",
                "2026-01-01",
            ],
            5,
        ),
        (vec!["30 2 * * *", "--misfire", "latest"], 5),
        (vec!["--every", "5 minutes"], 5),
        (vec!["30 2 * * *", "--outage-from", "2026-01-02"], 2),
        (vec![], 2),
    ] {
        let mut all = vec!["schedules", "explain"];
        all.extend(args.iter().copied());
        let run = punctual(&all);
        assert_eq!(run.code, Some(code), "{all:?}: {}", run.stderr);
        if code == 5 {
            assert!(
                run.stderr.starts_with("error: validation_failed: "),
                "{}",
                run.stderr
            );
        }
    }
    // The other commands need a server.
    let run = punctual(["schedules", "list"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--url"), "{}", run.stderr);
}

#[test]
fn the_cli_and_the_api_explain_the_same() {
    let node = InProcess::start();
    let questions: Vec<(Vec<&str>, Value)> = vec![
        (
            vec![
                "30 2 * * *",
                "--tz",
                "Europe/Berlin",
                "--from",
                "2026-03-28",
                "--count",
                "3",
            ],
            json!({"cron": "30 2 * * *", "time_zone": "Europe/Berlin", "from": "2026-03-28", "count": 3}),
        ),
        (
            vec![
                "30 2 * * *",
                "--tz",
                "Europe/Berlin",
                "--from",
                "2026-10-24T12:00",
                "--count",
                "3",
            ],
            json!({"cron": "30 2 * * *", "time_zone": "Europe/Berlin", "from": "2026-10-24T12:00", "count": 3}),
        ),
        (
            vec![
                "*/30 * * * *",
                "--tz",
                "America/New_York",
                "--from",
                "2026-11-01",
                "--count",
                "8",
            ],
            json!({"cron": "*/30 * * * *", "time_zone": "America/New_York", "from": "2026-11-01", "count": 8}),
        ),
        (
            vec![
                "0 * * * *",
                "--tz",
                "Europe/Berlin",
                "--from",
                "2026-03-29",
                "--count",
                "2",
                "--outage-from",
                "2026-03-29T00:30",
                "--outage-to",
                "2026-03-29T06:10",
                "--misfire",
                "all",
                "--limit",
                "2",
                "--grace",
                "15m",
                "--overlap",
                "skip",
                "--previous-unfinished",
            ],
            json!({
                "cron": "0 * * * *", "time_zone": "Europe/Berlin", "from": "2026-03-29", "count": 2,
                "outage": {"from": "2026-03-29T00:30", "to": "2026-03-29T06:10", "previous_unfinished": true},
                "misfire": {"policy": "all", "limit": 2, "grace_ms": 900_000},
                "overlap": "skip",
            }),
        ),
        (
            vec![
                "--every",
                "90m",
                "--from",
                "2026-01-01T00:00:00Z",
                "--count",
                "3",
            ],
            json!({"interval_ms": 5_400_000, "from": "2026-01-01T00:00:00Z", "count": 3}),
        ),
    ];
    for (args, question) in questions {
        let mut all = vec!["schedules", "explain", "--json"];
        all.extend(args.iter().copied());
        let local: Explanation = one(punctual(&all));
        let served = node.explain(&question);
        assert_eq!(local, served, "{args:?}");
    }
}

#[test]
fn every_schedules_command_talks_to_the_api() {
    let node = InProcess::start();
    let created: ScheduleView = one(node.schedules(&[
        "create",
        "nightly",
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--kind",
        "report",
        "--payload",
        r#"{"format":"pdf"}"#,
        "--misfire",
        "all",
        "--limit",
        "3",
        "--overlap",
        "skip",
        "--json",
    ]));
    assert_eq!(created.name, "nightly");
    assert_eq!(created.status, "active");
    assert_eq!(created.misfire.policy, "all");
    assert_eq!(created.misfire.limit, Some(3));
    assert_eq!(created.overlap, "skip");

    let again = node.schedules(&["create", "nightly", "--every", "1h", "--kind", "report"]);
    assert_eq!(again.code, Some(4), "{}", again.stderr);
    assert!(
        again.stderr.starts_with("error: already_exists: "),
        "{}",
        again.stderr
    );
    let invalid = node.schedules(&["create", "bad", "--cron", "61 * * * *", "--kind", "x"]);
    assert_eq!(invalid.code, Some(5), "{}", invalid.stderr);
    let missing = node.schedules(&["get", "weekly"]);
    assert_eq!(missing.code, Some(3), "{}", missing.stderr);
    let forbidden = node.schedules_as(&node.reader, &["pause", "nightly"]);
    assert_eq!(forbidden.code, Some(6), "{}", forbidden.stderr);

    // Upsert twice: created, then unchanged; a name with a slash is one path segment.
    let upsert = [
        "upsert",
        "team/tick",
        "--every",
        "1h",
        "--kind",
        "tick",
        "--jitter",
        "5s",
        "--json",
    ];
    let first: UpsertedSchedule = one(node.schedules(&upsert));
    assert_eq!(first.outcome, "created");
    assert_eq!(first.schedule.jitter_ms, 5_000);
    let second: UpsertedSchedule = one(node.schedules(&upsert));
    assert_eq!(second.outcome, "unchanged");
    assert_eq!(second.schedule.id, first.schedule.id);
    let human = node
        .schedules(&["upsert", "team/tick", "--every", "2h", "--kind", "tick"])
        .ok();
    assert!(
        human.stdout.starts_with("updated schedule team/tick ("),
        "{}",
        human.stdout
    );

    let shown = node.schedules(&["get", "team/tick"]).ok();
    assert!(shown.stdout.contains("when:"), "{}", shown.stdout);
    assert!(shown.stdout.contains("every 2h"), "{}", shown.stdout);
    let by_id: ScheduleView = one(node.schedules(&["get", &first.schedule.id, "--json"]));
    assert_eq!(by_id.name, "team/tick");

    let listed = node.schedules(&["list", "--json", "--limit", "1"]).ok();
    let page = json_lines(&listed.stdout);
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["name"], "nightly");
    assert!(
        listed.stderr.contains("--after nightly"),
        "{}",
        listed.stderr
    );
    let rest = node
        .schedules(&["list", "--json", "--after", "nightly"])
        .ok();
    assert_eq!(json_lines(&rest.stdout)[0]["name"], "team/tick");
    let table = node.schedules(&["list"]).ok();
    assert!(table.stdout.starts_with("NAME"), "{}", table.stdout);
    assert!(table.stdout.contains("team/tick"), "{}", table.stdout);

    let updated: ScheduleView = one(node.schedules(&[
        "update",
        "nightly",
        "--tz",
        "Asia/Tokyo",
        "--end-at",
        "2030-01-01T00:00:00Z",
        "--json",
    ]));
    assert_eq!(updated.time_zone.as_deref(), Some("Asia/Tokyo"));
    assert_eq!(updated.cron.as_deref(), Some("30 2 * * *"));
    assert_eq!(updated.end_at.as_deref(), Some("2030-01-01T00:00:00Z"));
    assert_eq!(updated.misfire.limit, Some(3));
    let cleared: ScheduleView = one(node.schedules(&["update", "nightly", "--no-end", "--json"]));
    assert_eq!(cleared.end_at, None);

    let paused: ScheduleView = one(node.schedules(&["pause", "nightly", "--json"]));
    assert_eq!(paused.status, "paused");
    let resumed = node.schedules(&["resume", "nightly"]).ok();
    assert!(
        resumed.stdout.starts_with("resumed schedule nightly"),
        "{}",
        resumed.stdout
    );

    let triggered: TriggeredSchedule = one(node.schedules(&["trigger", "nightly", "--json"]));
    assert_eq!(triggered.name, "nightly");
    let job = punctual([
        "jobs",
        "get",
        &triggered.job_id,
        "--url",
        &node.url,
        "--token",
        &node.admin,
        "--json",
    ])
    .ok();
    let job: Value = serde_json::from_str(job.stdout.trim()).expect("a job");
    assert_eq!(job["kind"], "report");
    assert_eq!(job["payload"], json!({"format": "pdf"}));

    let deadline = Instant::now() + Duration::from_secs(10);
    let entries = loop {
        let run = node.schedules(&["occurrences", "nightly", "--json"]).ok();
        let entries: Vec<OccurrenceView> = json_lines(&run.stdout)
            .into_iter()
            .map(|line| serde_json::from_value(line).expect("an occurrence"))
            .collect();
        if !entries.is_empty() || Instant::now() > deadline {
            break entries;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].outcome, "fired");
    assert_eq!(entries[0].manual, Some(true));
    assert_eq!(
        entries[0].job_id.as_deref(),
        Some(triggered.job_id.as_str())
    );
    let table = node.schedules(&["occurrences", "nightly"]).ok();
    assert!(table.stdout.contains("triggered"), "{}", table.stdout);

    let deleted = node.schedules(&["delete", "nightly"]).ok();
    assert!(
        deleted.stdout.starts_with("deleted schedule nightly"),
        "{}",
        deleted.stdout
    );
    let gone = node.schedules(&["get", "nightly"]);
    assert_eq!(gone.code, Some(3), "{}", gone.stderr);
}

#[test]
fn version_names_the_time_zone_database() {
    let run = punctual(["version"]).ok();
    assert_eq!(
        run.stdout,
        format!(
            "punctual {}\ntzdb {}\n",
            env!("CARGO_PKG_VERSION"),
            punctual_core::tzdb_version()
        )
    );
    let json: Value =
        serde_json::from_str(punctual(["version", "--json"]).ok().stdout.trim()).expect("JSON");
    assert_eq!(json["tzdb_version"], punctual_core::tzdb_version());
}
