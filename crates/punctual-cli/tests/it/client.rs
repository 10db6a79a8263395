//! `punctual jobs` and `punctual queues` as clients of a real `punctual serve` process on a
//! temporary SQLite file, and the same commands, exit codes and JSON shapes directly on that
//! file afterwards. Webhook jobs go to a receiver in this process that answers 410 Gone, which
//! makes a job dead at its first attempt.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use punctual_server::dto::{JobView, QueueView, RedriveResult};
use serde_json::Value;

use crate::{Run, json_lines, punctual, sqlite};

/// How long a test waits for something the server does by itself (start, run a webhook, stop).
/// Generous for a loaded machine: each wait ends as soon as the effect is seen.
const DEADLINE: Duration = Duration::from_secs(60);
/// The pause between two looks at the server while waiting.
const POLL: Duration = Duration::from_millis(50);

/// A `punctual serve` process. Dropping it kills and reaps the process; `stop` ends it as an
/// operator would.
struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`, from the server's own log line.
    url: String,
    /// An admin token, made on the store before the server started.
    token: String,
    /// A token with the `read` scope only.
    reader: String,
    /// The server's log lines so far, for failure messages.
    log: Arc<Mutex<Vec<String>>>,
}

/// Makes a token on the SQLite file at `db`.
fn make_token(db: &Path, label: &str, scope: &str) -> String {
    let run = punctual([
        "tokens",
        "create",
        "--store",
        &sqlite(db),
        "--label",
        label,
        "--scope",
        scope,
    ])
    .ok();
    run.stdout.trim().to_owned()
}

impl Server {
    fn start(db: &Path) -> Server {
        let token = make_token(db, "t", "admin");
        let reader = make_token(db, "r", "read");
        let mut command = Command::new(env!("CARGO_BIN_EXE_punctual"));
        // The server reads PUNCTUAL_* variables; this test says everything on its command line.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PUNCTUAL_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        let mut child = command
            .args(["serve", "--store", &sqlite(db), "--listen", "127.0.0.1:0"])
            .args(["--allow-network", "127.0.0.0/8", "--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("punctual serve starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        // Reads the log to its end, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("punctual is serving")
                    && let Some(address) = line
                        .split_whitespace()
                        .find_map(|field| field.strip_prefix("address="))
                {
                    let _ = address_tx.send(address.to_owned());
                }
                lines.lock().expect("the log lock").push(line);
            }
        });
        let mut server = Server {
            child: Some(child),
            url: String::new(),
            token,
            reader,
            log,
        };
        match address_rx.recv_timeout(DEADLINE) {
            Ok(address) => server.url = format!("http://{address}"),
            Err(_) => panic!("the server did not say where it serves:\n{}", server.logs()),
        }
        server
    }

    fn logs(&self) -> String {
        self.log.lock().expect("the log lock").join("\n")
    }

    /// Runs `punctual` against this server, the address and token given as the variables.
    fn cli(&self, args: &[&str]) -> Run {
        self.cli_as(&self.token, args)
    }

    fn cli_as(&self, token: &str, args: &[&str]) -> Run {
        let output = Command::new(env!("CARGO_BIN_EXE_punctual"))
            .args(args)
            .env("PUNCTUAL_URL", &self.url)
            .env("PUNCTUAL_TOKEN", token)
            .output()
            .expect("the punctual binary runs");
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// One job, by `jobs get --json`.
    fn job(&self, id: &str) -> JobView {
        let run = self.cli(&["jobs", "get", id, "--json"]).ok();
        serde_json::from_str(run.stdout.trim()).expect("a job as the API shows it")
    }

    /// Waits until the job is in `state`, and returns it.
    fn wait_for(&self, id: &str, state: &str) -> JobView {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let job = self.job(id);
            if job.state == state {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} is still {} after {DEADLINE:?}, not {state}:\n{}",
                job.state,
                self.logs()
            );
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, then the exit code within the deadline.
    fn stop(mut self) -> Option<i32> {
        let mut child = self.child.take().expect("a running server");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("check on the server") {
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not stop after SIGTERM:\n{}", self.logs());
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A webhook receiver that answers every request `410 Gone`, counting them.
fn gone_receiver() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a receiver");
    let url = format!(
        "http://{}/gone",
        listener.local_addr().expect("the receiver's address")
    );
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    // Lives as long as the test binary: it only ever blocks in accept.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            // The request's head, then as much body as it announces (a small payload).
            let mut request = Vec::new();
            let mut byte = [0_u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                request.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<u64>().ok())
                .unwrap_or(0);
            let _ = std::io::copy(&mut (&mut stream).take(length), &mut std::io::sink());
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = stream
                .write_all(b"HTTP/1.1 410 Gone\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, hits)
}

fn single_job(run: &Run) -> JobView {
    serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|error| panic!("{error}: {}", run.stdout))
}

fn listed(run: &Run) -> Vec<String> {
    json_lines(&run.stdout)
        .iter()
        .map(|job| job["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// Asserts the exit code and that stderr starts `error: CODE: `.
fn assert_refused(run: &Run, exit: i32, code: &str) {
    assert_eq!(
        run.code,
        Some(exit),
        "expected exit {exit} ({code})\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr.starts_with(&format!("error: {code}: ")),
        "expected error: {code}: in\n{}",
        run.stderr
    );
}

/// The JSON object's member names.
fn members(value: &Value) -> Vec<String> {
    let mut names: Vec<String> = value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    names.sort();
    names
}

#[test]
fn the_cli_works_a_servers_jobs_and_a_stores_alike() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db: PathBuf = dir.path().join("served.db");
    let server = Server::start(&db);
    let (receiver, hits) = gone_receiver();

    // schedule, a kind job: the API's own JSON.
    let mail = single_job(
        &server
            .cli(&[
                "jobs",
                "schedule",
                "--kind",
                "email.send",
                "--payload",
                r#"{"to":"ada"}"#,
                "--in",
                "1h",
                "--queue",
                "mail",
                "--priority",
                "3",
                "--json",
            ])
            .ok(),
    );
    assert_eq!(
        (
            mail.kind.as_deref(),
            mail.queue.as_str(),
            mail.state.as_str()
        ),
        (Some("email.send"), "mail", "scheduled")
    );
    assert_eq!(mail.payload.get(), r#"{"to":"ada"}"#);
    assert_eq!(mail.priority, 3);

    // `punctual schedule` is the same command; --url and --token work as flags too.
    let plain = punctual([
        "schedule",
        "--url",
        &server.url,
        "--token",
        &server.token,
        "--kind",
        "report",
        "--cron",
        "0 3 29 2 *",
        "--tz",
        "Europe/Berlin",
    ])
    .ok();
    assert!(
        plain.stdout.starts_with("scheduled job ") && plain.stdout.contains("server http://"),
        "{}",
        plain.stdout
    );
    assert!(
        plain
            .stdout
            .contains("recurring: cron \"0 3 29 2 *\" in Europe/Berlin"),
        "{}",
        plain.stdout
    );
    let report_id = plain.stdout["scheduled job ".len()..]
        .lines()
        .next()
        .expect("a line")
        .trim()
        .to_owned();

    // schedule, a webhook job, due now: the receiver answers 410, so it is dead at once.
    let hook = single_job(
        &server
            .cli(&[
                "jobs",
                "schedule",
                "--webhook",
                &receiver,
                "--method",
                "PUT",
                "--header",
                "X-Team: billing",
                "--timeout-ms",
                "5000",
                "--payload",
                r#"{"n":1}"#,
                "--in",
                "0s",
                "--json",
            ])
            .ok(),
    );
    assert_eq!(hook.kind, None);
    let webhook = hook.webhook.as_ref().expect("a webhook target");
    assert_eq!(
        (webhook.url.as_str(), webhook.method.as_deref()),
        (receiver.as_str(), Some("PUT"))
    );
    let dead = server.wait_for(&hook.id, "dead");
    assert_eq!(dead.attempt, 1);
    assert!(
        dead.last_error
            .as_deref()
            .is_some_and(|error| error.contains("410")),
        "{dead:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // get, for people.
    let shown = server.cli(&["jobs", "get", &hook.id]).ok().stdout;
    for expected in [
        "state:        dead",
        "webhook:      webhook PUT",
        "x-team: billing",
    ] {
        assert!(shown.contains(expected), "{expected:?} missing in\n{shown}");
    }
    let shown = server.cli(&["jobs", "show", &mail.id]).ok().stdout;
    assert!(
        shown.contains("kind:") && shown.contains("email.send"),
        "{shown}"
    );

    // list, with each filter, and a page at a time.
    let list = |args: &[&str]| {
        let mut all = vec!["jobs", "list", "--json"];
        all.extend_from_slice(args);
        listed(&server.cli(&all).ok())
    };
    let everything = vec![mail.id.clone(), report_id.clone(), hook.id.clone()];
    assert_eq!(list(&[]), everything);
    assert_eq!(list(&["--queue", "mail"]), vec![mail.id.clone()]);
    assert_eq!(list(&["--state", "dead"]), vec![hook.id.clone()]);
    assert_eq!(list(&["--kind", "punctual.webhook"]), vec![hook.id.clone()]);
    assert_eq!(list(&["--kind", "report"]), vec![report_id.clone()]);
    let in_30_minutes = chrono_like_in(30 * 60);
    assert_eq!(
        list(&["--due-after", &in_30_minutes, "--state", "scheduled"]),
        [mail.id.clone(), report_id.clone()]
    );
    assert_eq!(
        list(&["--due-before", &in_30_minutes]),
        vec![hook.id.clone()]
    );
    let first = server.cli(&["jobs", "list", "--json", "--limit", "2"]).ok();
    assert_eq!(listed(&first), everything[..2]);
    let hint = format!("more jobs may follow: add --after {}", everything[1]);
    assert!(first.stderr.contains(&hint), "{}", first.stderr);
    assert_eq!(
        list(&["--limit", "2", "--cursor", &everything[1]]),
        everything[2..]
    );
    let table = server.cli(&["jobs", "list"]).ok().stdout;
    assert!(
        table.starts_with("ID ") && table.contains("(webhook)"),
        "{table}"
    );

    // queues list and counts.
    let queues: Vec<QueueView> = json_lines(&server.cli(&["queues", "list", "--json"]).ok().stdout)
        .into_iter()
        .map(|queue| serde_json::from_value(queue).expect("a queue as the API shows it"))
        .collect();
    let by_name = |name: &str| {
        queues
            .iter()
            .find(|queue| queue.queue == name)
            .unwrap_or_else(|| panic!("no queue {name} in {queues:?}"))
    };
    assert_eq!(by_name("mail").counts.scheduled, 1);
    assert_eq!(by_name("default").counts.dead, 1);
    assert_eq!(by_name("default").counts.scheduled, 1);
    let table = server.cli(&["queues", "list"]).ok().stdout;
    assert!(
        table.starts_with("QUEUE") && table.contains("OLDEST_DUE") && table.contains("mail"),
        "{table}"
    );
    let counts = json_lines(&server.cli(&["jobs", "counts", "--json"]).ok().stdout);
    assert!(
        counts.contains(&serde_json::json!({"queue": "default", "state": "dead", "count": 1})),
        "{counts:?}"
    );

    // retry the dead job: due now with its attempts reset, and dead again at its next 410.
    let retried = single_job(&server.cli(&["jobs", "retry", &hook.id, "--json"]).ok());
    assert_eq!(retried.attempt, 0);
    assert_ne!(retried.state, "dead");
    server.wait_for(&hook.id, "dead");
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // redrive: only what matches.
    let redrive = |args: &[&str]| -> RedriveResult {
        let mut all = vec!["jobs", "redrive", "--json"];
        all.extend_from_slice(args);
        serde_json::from_str(server.cli(&all).ok().stdout.trim()).expect("a redrive result")
    };
    assert_eq!(redrive(&["--target", "worker"]).redriven, 0);
    assert_eq!(redrive(&["--queue", "mail"]).redriven, 0);
    let redriven = redrive(&["--target", "webhook", "--limit", "10"]);
    assert_eq!((redriven.redriven, redriven.more), (1, false));
    server.wait_for(&hook.id, "dead");
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    // reschedule, then cancel; a second cancel is a conflict.
    let moved = single_job(
        &server
            .cli(&["jobs", "reschedule", &mail.id, "--in", "2h", "--json"])
            .ok(),
    );
    assert!(
        moved.run_at > mail.run_at,
        "{} !> {}",
        moved.run_at,
        mail.run_at
    );
    let moved = single_job(
        &server
            .cli(&[
                "jobs",
                "reschedule",
                &mail.id,
                "--at",
                "2099-01-01T00:00:00Z",
                "--json",
            ])
            .ok(),
    );
    assert_eq!(moved.run_at, "2099-01-01T00:00:00Z");
    let cancelled = server.cli(&["jobs", "cancel", &mail.id]).ok();
    assert!(
        cancelled
            .stdout
            .starts_with(&format!("cancelled job {}", mail.id)),
        "{}",
        cancelled.stdout
    );

    // Each kind of refusal, with its exit code and the problem's code and detail.
    let missing = "0190d9b4-7c3a-7000-8000-000000000000";
    let run = server.cli(&["jobs", "get", missing]);
    assert_refused(&run, 3, "not_found");
    assert!(
        run.stderr.contains(&format!("no job {missing}")),
        "{}",
        run.stderr
    );
    assert_refused(
        &server.cli(&["jobs", "cancel", &mail.id]),
        4,
        "state_conflict",
    );
    assert_refused(
        &server.cli(&["jobs", "retry", &report_id]),
        4,
        "state_conflict",
    );
    assert_refused(
        &server.cli(&[
            "jobs",
            "schedule",
            "--kind",
            "k",
            "--in",
            "1s",
            "--attempts",
            "0",
        ]),
        5,
        "validation_failed",
    );
    assert_refused(
        &server.cli(&["jobs", "schedule", "--kind", "punctual.x", "--in", "1s"]),
        5,
        "validation_failed",
    );
    assert_refused(
        &server.cli(&[
            "jobs",
            "schedule",
            "--webhook",
            "http://10.1.2.3/x",
            "--in",
            "1s",
        ]),
        5,
        "webhook_target_refused",
    );
    assert_refused(
        &server.cli(&["jobs", "list", "--limit", "0"]),
        5,
        "validation_failed",
    );
    assert_refused(
        &server.cli(&["jobs", "get", "nope"]),
        5,
        "validation_failed",
    );
    assert_refused(
        &server.cli_as("pct_0000000000000000_wrong", &["jobs", "list"]),
        6,
        "unauthorized",
    );
    assert_refused(
        &server.cli_as(
            &server.reader,
            &["jobs", "schedule", "--kind", "k", "--in", "1s"],
        ),
        6,
        "forbidden",
    );
    // The reader may read.
    server.cli_as(&server.reader, &["queues", "list"]).ok();

    // An idempotency key: the same request gets the same job; another request is refused.
    let keyed = [
        "jobs",
        "schedule",
        "--kind",
        "k",
        "--in",
        "1h",
        "--json",
        "--idempotency-key",
        "key-1",
    ];
    let first = single_job(&server.cli(&keyed).ok());
    let again = single_job(&server.cli(&keyed).ok());
    assert_eq!(first.id, again.id);
    let mut other = keyed.to_vec();
    other[5] = "2h";
    assert_refused(&server.cli(&other), 5, "idempotency_key_mismatch");

    // A second dead job, for the store to retry.
    let second = single_job(
        &server
            .cli(&[
                "jobs",
                "schedule",
                "--webhook",
                &receiver,
                "--in",
                "0s",
                "--json",
            ])
            .ok(),
    );
    server.wait_for(&second.id, "dead");
    assert_eq!(hits.load(Ordering::SeqCst), 4);

    // The same job's JSON from the server and from the store has the same members.
    let over_http: Value = serde_json::from_str(
        server
            .cli(&["jobs", "get", &hook.id, "--json"])
            .ok()
            .stdout
            .trim(),
    )
    .expect("JSON");

    // SIGTERM ends the server cleanly; then it cannot be reached.
    let url = server.url.clone();
    let token = server.token.clone();
    assert_eq!(server.stop(), Some(0));
    let gone = punctual(["jobs", "list", "--url", &url, "--token", &token]);
    assert_refused(&gone, 7, "unavailable");
    assert!(
        gone.stderr.contains("cannot reach the server"),
        "{}",
        gone.stderr
    );

    // Store mode on the same file: the same shapes, and the same exit codes for the same errors.
    let store = sqlite(&db);
    let on_store = |args: &[&str]| {
        let mut all = vec!["jobs", "--store", &store];
        all.extend_from_slice(args);
        punctual(all)
    };
    let from_store: Value =
        serde_json::from_str(on_store(&["get", &hook.id, "--json"]).ok().stdout.trim())
            .expect("JSON");
    assert_eq!(members(&from_store), members(&over_http));
    assert_eq!(from_store["webhook"]["url"], over_http["webhook"]["url"]);
    assert_eq!(
        listed(&on_store(&["list", "--json", "--state", "dead"]).ok()),
        [hook.id.clone(), second.id.clone()]
    );
    let queues = json_lines(
        &punctual(["queues", "list", "--store", &store, "--json"])
            .ok()
            .stdout,
    );
    assert!(
        queues
            .iter()
            .any(|queue| queue["queue"] == "default" && queue["counts"]["dead"] == 2),
        "{queues:?}"
    );
    let run = on_store(&["get", missing]);
    assert_refused(&run, 3, "not_found");
    assert!(
        run.stderr.contains(&format!("no job {missing}")),
        "{}",
        run.stderr
    );
    assert_refused(&on_store(&["cancel", &mail.id]), 4, "state_conflict");
    assert_refused(&on_store(&["retry", &report_id]), 4, "state_conflict");
    assert_refused(
        &on_store(&["schedule", "--kind", "k", "--in", "1s", "--attempts", "0"]),
        5,
        "validation_failed",
    );
    assert_refused(
        &on_store(&["schedule", "--kind", "punctual.x", "--in", "1s"]),
        5,
        "validation_failed",
    );
    assert_refused(&on_store(&["list", "--limit", "0"]), 5, "validation_failed");
    assert_refused(&on_store(&["get", "nope"]), 5, "validation_failed");
    let unreachable = punctual([
        "jobs",
        "list",
        "--store",
        "postgres://postgres@127.0.0.1:1/test",
    ]);
    assert_refused(&unreachable, 7, "unavailable");
    // What only a server can do is a usage error, which says so.
    for args in [
        &[
            "schedule",
            "--webhook",
            "https://example.com/x",
            "--in",
            "1s",
        ][..],
        &[
            "schedule",
            "--kind",
            "k",
            "--in",
            "1s",
            "--idempotency-key",
            "k",
        ],
    ] {
        let run = on_store(args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("needs a server"), "{}", run.stderr);
    }
    // Both --url and --store: refused by clap.
    let both = punctual(["jobs", "list", "--url", &url, "--store", &store]);
    assert_eq!(both.code, Some(2), "{}", both.stderr);
    assert!(
        both.stderr.contains("cannot be used with"),
        "{}",
        both.stderr
    );

    // retry and redrive work on the store as on the server.
    let retried = single_job(&on_store(&["retry", &second.id, "--json"]).ok());
    assert_eq!((retried.state.as_str(), retried.attempt), ("scheduled", 0));
    assert_refused(&on_store(&["retry", &second.id]), 4, "state_conflict");
    assert_eq!(
        on_store(&["redrive", "--target", "worker"])
            .ok()
            .stdout
            .trim(),
        "no dead jobs match"
    );
    let redriven: RedriveResult = serde_json::from_str(
        on_store(&["redrive", "--target", "webhook", "--json"])
            .ok()
            .stdout
            .trim(),
    )
    .expect("a redrive result");
    assert_eq!((redriven.redriven, redriven.more), (1, false));
    assert_eq!(
        single_job(&on_store(&["get", &hook.id, "--json"]).ok()).state,
        "scheduled"
    );
    let cancelled = single_job(&on_store(&["cancel", &hook.id, "--json"]).ok());
    assert_eq!(cancelled.state, "cancelled");
}

/// An RFC 3339 instant `seconds` from now, from the system clock (the server's too).
fn chrono_like_in(seconds: u64) -> String {
    use punctual_core::Clock as _;
    punctual_core::SystemClock
        .now()
        .add(Duration::from_secs(seconds))
        .to_rfc3339()
}
