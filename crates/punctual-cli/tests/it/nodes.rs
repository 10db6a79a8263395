//! Real `punctual serve` nodes for the fault tests (`cluster`, `crash`), and what those tests
//! read back: the webhooks a receiver of theirs got (`punctual_bench::receiver`), the nodes'
//! JSON logs (refused writes), their metrics (acknowledged completions), and the store.
//!
//! A node is the real binary, `serve` on `127.0.0.1:0` (the OS picks a free port; the node
//! logs the address it took, and `Node::address` reads it from the log, which is also the sign
//! that it is up), with JSON logs to a file, a config file for its lease, webhooks to loopback
//! allowed, and a signing secret of its own, which is how the receiver tells who sent what.
//! Dropping a `Node` kills and reaps its process, so no path out of a test (a panic included)
//! leaves one running, a paused one included: SIGKILL ends a stopped process too.
//!
//! Nothing here waits a fixed time for an effect: `eventually` polls with a deadline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use punctual_bench::receiver::{Receipt, Receiver};
use punctual_core::{JobId, JobState, Store, Timestamp};
use serde_json::{Value, json};

/// How often waits look again.
pub const POLL: Duration = Duration::from_millis(20);
/// How long any one effect may take to show on a loaded machine before a test gives up.
pub const PATIENCE: Duration = Duration::from_secs(60);
/// The engine's default claim window: a job is claimed at most this long before its `run_at`.
pub const CLAIM_AHEAD: Duration = Duration::from_millis(100);
/// How long a test node's leadership (rescue duties) lasts unrenewed: short, so that when the
/// node a test kills or pauses is the leader, another takes over within two seconds.
pub const LEADER_LEASE: Duration = Duration::from_millis(1_500);
/// How long a webhook may take before its node gives up on it: longer than any answer a test
/// holds back, so that a node never fails an attempt a test means to leave in flight.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(120);

/// Polls `check` until it returns `Some`, or panics after `patience` saying what it waited for.
pub async fn eventually<T>(
    what: &str,
    patience: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {} s waiting for {what}",
            patience.as_secs()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Makes an admin token on the store with `punctual tokens create` and returns it.
pub fn admin_token(store: &str, schema: Option<&str>) -> String {
    let mut args = vec!["tokens", "create", "--store", store];
    if let Some(schema) = schema {
        args.extend(["--schema", schema]);
    }
    args.extend(["--label", "fault tests", "--scope", "admin"]);
    let created = crate::punctual(args).ok();
    let token = created.stdout.trim().to_owned();
    assert!(token.starts_with("pct_"), "{}", created.stdout);
    token
}

/// How a node is started.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    /// `sqlite:PATH` or a PostgreSQL URL (maybe through a proxy).
    pub store: String,
    pub schema: Option<String>,
    /// Its jobs' lease; heartbeats renew it every third of it.
    pub lease: Duration,
    /// Most webhooks in flight at once.
    pub concurrency: usize,
    /// The hidden test-only skew of its own clock (PostgreSQL only).
    pub clock_skew_ms: i64,
}

impl NodeSpec {
    pub fn new(name: &str, store: &str, schema: Option<&str>, lease: Duration) -> NodeSpec {
        NodeSpec {
            name: name.to_owned(),
            store: store.to_owned(),
            schema: schema.map(str::to_owned),
            lease,
            concurrency: 64,
            clock_skew_ms: 0,
        }
    }

    pub fn concurrency(self, concurrency: usize) -> NodeSpec {
        NodeSpec {
            concurrency,
            ..self
        }
    }
}

/// A `punctual serve` process; dropping it kills and reaps it.
pub struct Node {
    pub name: String,
    /// Who signs its webhooks, for the receiver.
    pub sender: u32,
    pub pid: u32,
    child: Option<Child>,
    log: PathBuf,
    address: Option<SocketAddr>,
}

impl Node {
    /// Starts a node as `spec` says, its files in `dir`, enrolled with `receiver` as `sender`.
    pub fn start(dir: &Path, receiver: &Receiver, sender: u32, spec: &NodeSpec) -> Node {
        let file = format!("{}-{sender}", spec.name);
        let config = dir.join(format!("{file}.toml"));
        std::fs::write(
            &config,
            format!(
                "[engine]\nlease_ms = {}\nleader_lease_ms = {}\nconcurrency = {}\n",
                spec.lease.as_millis(),
                LEADER_LEASE.as_millis(),
                spec.concurrency
            ),
        )
        .expect("write a node's config file");
        let log = dir.join(format!("{file}.log"));
        let stderr = std::fs::File::create(&log).expect("a log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_punctual"));
        command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--store", &spec.store])
            .args(["--node", &spec.name, "--log-format", "json"])
            .args(["--log-level", "info", "--allow-network", "127.0.0.0/8"])
            .env("PUNCTUAL_WEBHOOK_SECRETS", receiver.enroll(sender))
            // The log level above decides what is logged; a RUST_LOG of the test's caller
            // would win over it and could hide the lines the tests read.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(schema) = &spec.schema {
            command.args(["--schema", schema]);
        }
        if spec.clock_skew_ms != 0 {
            command.env(
                "PUNCTUAL_TEST_CLOCK_SKEW_MS",
                spec.clock_skew_ms.to_string(),
            );
        }
        let child = command.spawn().expect("start punctual serve");
        Node {
            name: spec.name.clone(),
            sender,
            pid: child.id(),
            child: Some(child),
            log,
            address: None,
        }
    }

    /// Panics, with the node's log, if it exited: a node must survive every fault here.
    pub fn assert_alive(&mut self) {
        let child = self
            .child
            .as_mut()
            .expect("the node was killed by the test");
        if let Some(status) = child.try_wait().expect("check on a node") {
            panic!(
                "node {} exited by itself ({status}):\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    /// Where its API listens, once it says it serves.
    pub async fn address(&mut self) -> SocketAddr {
        if let Some(address) = self.address {
            return address;
        }
        let what = format!("node {} to serve", self.name);
        let address = eventually(&what, PATIENCE, async || {
            self.assert_alive();
            self.log_lines()
                .iter()
                .find(|line| line["message"] == "punctual is serving")
                .and_then(|line| line["address"].as_str()?.parse().ok())
        })
        .await;
        self.address = Some(address);
        address
    }

    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("a running node");
        child.kill().expect("SIGKILL a node");
        child.wait().expect("reap a node");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid);
    }

    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Its log's complete lines so far, as JSON (a line cut short by a kill is left out).
    pub fn log_lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The writes the store refused it, from its `lease lost` warnings: (job, lease token).
    /// Jobs whose outcome this node gave up recording (the store unreachable past the lease).
    pub fn outcomes_not_recorded(&self) -> Vec<JobId> {
        self.log_lines()
            .iter()
            .filter(|line| {
                line["message"]
                    .as_str()
                    .is_some_and(|message| message.starts_with("outcome not recorded"))
            })
            .filter_map(|line| line["job"].as_str().and_then(|id| id.parse().ok()))
            .collect()
    }

    pub fn lease_lost(&self) -> Vec<(JobId, u64)> {
        self.log_lines()
            .iter()
            .filter(|line| {
                line["message"]
                    .as_str()
                    .is_some_and(|message| message.starts_with("lease lost"))
            })
            .map(|line| {
                let id = line["job"].as_str().and_then(|id| id.parse().ok());
                let token = line["token"].as_u64();
                (id.expect("a job id"), token.expect("a lease token"))
            })
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A client of the nodes' API with an admin token.
pub struct Api {
    client: reqwest::Client,
    token: String,
}

impl Api {
    pub fn new(token: String) -> Api {
        Api {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            token,
        }
    }

    /// Creates `jobs` with one batch request to the node at `address`, under `key` as its
    /// `Idempotency-Key` if given. The ids, when it answered 201; otherwise what went wrong.
    pub async fn create(
        &self,
        address: SocketAddr,
        jobs: &[Value],
        key: Option<&str>,
    ) -> Result<Vec<JobId>, String> {
        let mut request = self
            .client
            .post(format!("http://{address}/v1/jobs/batch"))
            .bearer_auth(&self.token)
            .json(&json!({ "jobs": jobs }));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.map_err(|error| error.to_string())?;
        if status != 201 {
            return Err(format!("{status}: {body}"));
        }
        Ok(body["jobs"]
            .as_array()
            .expect("created jobs")
            .iter()
            .map(|job| {
                job["id"]
                    .as_str()
                    .expect("an id")
                    .parse()
                    .expect("a job id")
            })
            .collect())
    }

    /// Creates `jobs` (any number) on the node at `address`, asserting 201 for each batch.
    pub async fn create_all(&self, address: SocketAddr, jobs: &[Value]) -> Vec<JobId> {
        let mut ids = Vec::with_capacity(jobs.len());
        for batch in jobs.chunks(1_000) {
            match self.create(address, batch, None).await {
                Ok(created) => ids.extend(created),
                Err(error) => panic!("creating jobs failed: {error}"),
            }
        }
        ids
    }

    /// The attempts the node at `address` has seen succeed: completions the store
    /// acknowledged (its `punctual_job_outcomes_total`, outcome `succeeded`). `None` unless it
    /// answered 200 (the scrape reads the store, which a node that just reconnected may not
    /// reach yet).
    pub async fn succeeded_outcomes(&self, address: SocketAddr) -> Option<u64> {
        let response = self
            .client
            .get(format!("http://{address}/metrics"))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        if response.status() != reqwest::StatusCode::OK {
            return None;
        }
        let text = response.text().await.ok()?;
        let succeeded = text
            .lines()
            .filter(|line| {
                line.starts_with("punctual_job_outcomes_total{")
                    && line.contains("outcome=\"succeeded\"")
            })
            .map(|line| {
                let value = line.rsplit(' ').next().expect("a value");
                value.parse::<f64>().expect("a number") as u64
            })
            .sum();
        Some(succeeded)
    }
}

/// A webhook job to `url`, due at `run_at` (to the millisecond, as RFC 3339 says it), with
/// quick retries, so a rescued job runs again soon, and attempts enough that faults alone never
/// make it dead.
pub fn webhook_job(url: &str, run_at: Timestamp, payload: Value) -> Value {
    json!({
        "webhook": {"url": url, "timeout_ms": WEBHOOK_TIMEOUT.as_millis() as u64},
        "payload": payload,
        "run_at": run_at.to_rfc3339(),
        "attempt_max": punctual_core::limits::ATTEMPT_MAX_LIMIT,
        "backoff": {"base_ms": 100, "max_ms": 1_000, "jitter_percent": 0},
    })
}

/// `count` webhook jobs to `once/<index>` for indexes `first..first + count`, due evenly over
/// `spread` from `start`.
pub fn spread_jobs(
    receiver: &Receiver,
    first: usize,
    count: usize,
    start: Timestamp,
    spread: Duration,
) -> Vec<Value> {
    (0..count)
        .map(|offset| {
            let at = start.add(spread.mul_f64(offset as f64 / count as f64));
            let index = first + offset;
            webhook_job(&receiver.url(&format!("once/{index}")), at, json!(index))
        })
        .collect()
}

/// The receiver's receipts, after checking that each is one of punctual's, signed by a node
/// of the test, and kept.
pub fn receipts(receiver: &Receiver) -> Vec<Receipt> {
    assert_eq!(
        receiver.malformed(),
        0,
        "requests without punctual's headers"
    );
    assert_eq!(
        receiver.overflow(),
        0,
        "receipts beyond the receiver's capacity"
    );
    let receipts = receiver.receipts();
    if let Some(unsigned) = receipts.iter().find(|receipt| receipt.sender.is_none()) {
        panic!("a webhook signed by no node of the test: {unsigned:?}");
    }
    receipts
}

/// The receipts of each job, in lease-token order.
pub fn by_job(receipts: &[Receipt]) -> HashMap<JobId, Vec<Receipt>> {
    let mut by_job: HashMap<JobId, Vec<Receipt>> = HashMap::new();
    for receipt in receipts {
        by_job.entry(receipt.id).or_default().push(receipt.clone());
    }
    for runs in by_job.values_mut() {
        runs.sort_by_key(|run| (run.token, run.received_at));
    }
    by_job
}

/// Checks what every fault must leave intact, on the receiver's side: each job in `ids` was
/// received, and a job was received again only under a larger token and when
/// `lost_lease(earlier receipt, later receipt)` says the earlier sender lost its lease. Returns
/// how many receipts were reruns.
///
/// A run the receiver never saw (a node killed while it sent) had no effect to judge, and it
/// cannot hide a broken rule: the runs it saw stay in token order, and a lease lost before an
/// unseen run was lost before every later one too.
pub fn assert_fenced(
    receipts: &[Receipt],
    ids: &[JobId],
    lost_lease: impl Fn(&Receipt, &Receipt) -> bool,
) -> usize {
    let by_job = by_job(receipts);
    for id in ids {
        assert!(by_job.contains_key(id), "job {id} was never received");
    }
    let mut reruns = 0;
    for runs in by_job.values() {
        for pair in runs.windows(2) {
            let (earlier, later) = (&pair[0], &pair[1]);
            reruns += 1;
            assert!(
                later.token > earlier.token,
                "job {} was received twice under token {}",
                earlier.id,
                earlier.token
            );
            assert!(
                lost_lease(earlier, later),
                "job {} ran again ({later:?}) while its earlier holder kept its lease ({earlier:?})",
                earlier.id
            );
        }
    }
    reruns
}

/// Whether `later` came after the lease of `earlier` could have ended: that claim was made at
/// most `CLAIM_AHEAD` before the attempt's `run_at` and leased for `lease` from then. (Not "and
/// after the fault": a victim that stalled before it was killed may rightly have been rescued
/// already.) `tolerance_us` is how far the clocks that read the two may disagree.
pub fn after_lease(earlier: &Receipt, later: &Receipt, lease: Duration, tolerance_us: i64) -> bool {
    let lease_end_min = earlier.scheduled_at.sub(CLAIM_AHEAD).add(lease);
    later.received_at.as_micros() + tolerance_us >= lease_end_min.as_micros()
}

/// Checks the store's side: each job in `ids` succeeded, and under the largest lease token any
/// of its receipts carried, so the completion the store accepted is its last run's: none from
/// a holder whose job ran again later.
pub async fn assert_completed_by_last_run(store: &dyn Store, receipts: &[Receipt], ids: &[JobId]) {
    let by_job = by_job(receipts);
    for id in ids {
        let job = store.get(*id).await.expect("read a job").expect("the job");
        assert_eq!(job.state, JobState::Succeeded, "{id}");
        let last = by_job[id].last().expect("a receipt");
        assert_eq!(
            job.lease_token.0, last.token,
            "job {id} shows a completion that is not its last run's"
        );
    }
}

/// Waits until every job in `ids` has succeeded in `store` (store errors count as "not yet"),
/// checking that `nodes` stay alive meanwhile.
pub async fn all_succeed(store: &dyn Store, ids: &[JobId], nodes: &mut [&mut Node]) {
    eventually("every job to succeed", PATIENCE, async || {
        for node in nodes.iter_mut() {
            node.assert_alive();
        }
        for id in ids {
            match store.get(*id).await {
                Ok(Some(job)) if job.state == JobState::Succeeded => {}
                Ok(Some(job)) if job.state.is_final() => {
                    panic!("job {id} ended {}, not succeeded", job.state)
                }
                _ => return None,
            }
        }
        Some(())
    })
    .await;
}

#[test]
fn the_test_only_clock_skew_is_hidden_from_help() {
    let help = crate::punctual(["serve", "--help"]).ok();
    assert!(help.stdout.contains("--allow-network"), "{}", help.stdout);
    assert!(!help.stdout.contains("skew"), "{}", help.stdout);
}
