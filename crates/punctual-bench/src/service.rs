//! What the service workloads share: a real `punctual serve` child process on a fresh store
//! (the same binary, `current_exe() serve`), a token for it and an HTTP client; and the
//! judgement of what the webhook receiver (`receiver`) got.
//!
//! Owns the child process: `ServeProcess` stops it (SIGTERM, then SIGKILL past a deadline) when
//! dropped, so no path out of a workload leaves one behind. Must not judge figures: the workloads
//! do.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use punctual_core::JobId;
use punctual_server::auth::{Scope, issue};
use punctual_server::store_url::{self, StoreUrl};
use serde_json::Value;

use super::Plan;
use super::receiver::Receipt;
use super::store::BenchStore;

/// How long a node may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(20);

/// A `punctual serve` child process.
pub struct ServeProcess {
    child: Option<tokio::process::Child>,
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
    pub stderr: PathBuf,
    /// The SQLite file's directory, when the run made one.
    _dir: Option<tempfile::TempDir>,
}

impl ServeProcess {
    /// Starts a node on the plan's store (a fresh SQLite file for `sqlite`, the run's own schema
    /// for PostgreSQL) with `concurrency` webhooks in flight, signing with `secret`, and waits
    /// until it is ready.
    pub async fn start(
        plan: &Plan,
        concurrency: usize,
        secret: &str,
    ) -> anyhow::Result<ServeProcess> {
        let (url, dir) = match &plan.store {
            BenchStore::Memory => bail!(
                "the service workloads run a real punctual serve, which needs a durable store: \
                 use --store sqlite or --store postgres://..."
            ),
            BenchStore::Url(StoreUrl::Sqlite(None)) => {
                let dir = tempfile::tempdir().context("creating a temporary directory")?;
                (
                    StoreUrl::Sqlite(Some(dir.path().join("punctual.db"))),
                    Some(dir),
                )
            }
            BenchStore::Url(url) => (url.clone(), None),
        };
        // The token is made on the store itself, as `punctual tokens create` does.
        let opened = store_url::open(&url, &plan.postgres()).await?;
        let (token, record) = issue(
            "bench",
            &[Scope::Write, Scope::Worker],
            None,
            opened.clock.now(),
        )
        .map_err(|error| anyhow::anyhow!("making the bench's token: {}", error.detail()))?;
        opened
            .store
            .insert_token(record)
            .await
            .context("storing the bench's token")?;
        opened.close().await;

        let port = free_port()?;
        let scratch = dir
            .as_ref()
            .map_or_else(std::env::temp_dir, |dir| dir.path().to_owned());
        let stderr = scratch.join(format!("serve-{port}.stderr"));
        let log = std::fs::File::create(&stderr)
            .with_context(|| format!("creating {}", stderr.display()))?;
        let exe = std::env::current_exe().context("finding the punctual binary")?;
        let store_text = match &url {
            StoreUrl::Sqlite(Some(path)) => format!("sqlite:{}", path.display()),
            StoreUrl::Postgres(postgres) => postgres.as_str().to_owned(),
            StoreUrl::Sqlite(None) => unreachable!("a fresh file was named above"),
        };
        let mut command = tokio::process::Command::new(exe);
        command
            .arg("serve")
            .args(["--store", &store_text])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--allow-network", "127.0.0.0/8"])
            .args(["--webhook-secret", secret])
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        if let Some(schema) = &plan.schema {
            command.args(["--schema", schema]);
        }
        let child = command.spawn().context("starting punctual serve")?;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1_024)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        let node = ServeProcess {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            token,
            client,
            stderr,
            _dir: dir,
        };
        node.wait_ready().await?;
        Ok(node)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let ready = self
                .client
                .get(format!("{}/readyz", self.base))
                .send()
                .await;
            if ready.is_ok_and(|response| response.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "punctual serve was not ready within {} s; see {}",
                    READY_WITHIN.as_secs(),
                    self.stderr.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POSTs `body` to `path` and returns the answer's JSON, failing on any status but 2xx.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let value: Value = response
            .json()
            .await
            .with_context(|| format!("reading the answer of POST {path}"))?;
        if !status.is_success() {
            bail!("POST {path} answered {status}: {value}");
        }
        Ok(value)
    }

    /// The node's peak resident memory, in MB.
    pub fn rss_mb(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id()?;
        super::report::peak_rss_mb(&pid.to_string())
    }

    /// Stops the node with SIGTERM (a graceful stop), killing it if it takes too long.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            // Through the `kill` command: the workspace has no libc binding.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(STOP_WITHIN, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => bail!(
                "punctual serve exited with {status}; see {}",
                self.stderr.display()
            ),
            Ok(Err(error)) => Err(error).context("waiting for punctual serve"),
            Err(_) => {
                let _ = child.kill().await;
                bail!(
                    "punctual serve did not stop within {} s of SIGTERM",
                    STOP_WITHIN.as_secs()
                )
            }
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    // Bound and released at once: another process could take it in between, which a bench run
    // on a quiet machine does not meet; a clash shows as a failed start.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener
        .local_addr()
        .context("reading the free port")?
        .port())
}

/// What the receipts say about `expected` jobs: how many never arrived, how many arrived more
/// than once, how many were not signed by an enrolled node, and each first arrival's lateness
/// (its arrival minus `run_at`) in milliseconds.
pub struct Judged {
    pub lost: u64,
    pub duplicates: u64,
    pub bad_signatures: u64,
    pub lateness_ms: Vec<f64>,
}

pub fn judge(receipts: &[Receipt], expected: usize) -> Judged {
    let mut first: HashMap<JobId, &Receipt> = HashMap::with_capacity(receipts.len());
    let mut duplicates = 0;
    let mut bad_signatures = 0;
    for receipt in receipts {
        if receipt.sender.is_none() {
            bad_signatures += 1;
        }
        match first.entry(receipt.id) {
            std::collections::hash_map::Entry::Occupied(_) => duplicates += 1,
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(receipt);
            }
        }
    }
    let lateness_ms = first
        .values()
        .map(|receipt| receipt.received_at.micros_since(receipt.scheduled_at) as f64 / 1_000.0)
        .collect();
    Judged {
        lost: (expected as u64).saturating_sub(first.len() as u64),
        duplicates,
        bad_signatures,
        lateness_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punctual_core::Timestamp;

    #[test]
    fn receipts_are_judged_by_id() {
        let at = Timestamp::from_millis(1_000_000);
        let receipt = |id: u8, late_ms: u64, sender: Option<u32>| Receipt {
            path: "hook".to_owned(),
            id: JobId::from_bytes([id; 16]),
            attempt: 1,
            token: 1,
            scheduled_at: at,
            stamped_s: 1_000,
            received_at: at.add(Duration::from_millis(late_ms)),
            lease_expires_at: None,
            answered_at: None,
            sender,
            body: String::new(),
        };
        let receipts = vec![
            receipt(1, 2, Some(0)),
            receipt(2, 4, Some(0)),
            receipt(1, 9, None),
        ];
        let judged = judge(&receipts, 3);
        assert_eq!(
            (judged.lost, judged.duplicates, judged.bad_signatures),
            (1, 1, 1)
        );
        let mut lateness = judged.lateness_ms;
        lateness.sort_by(f64::total_cmp);
        assert_eq!(lateness, vec![2.0, 4.0]);
    }
}
