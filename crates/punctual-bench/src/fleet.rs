//! The `punctual serve` nodes of the crash and cluster workloads: starting them, killing
//! (SIGKILL), pausing (SIGSTOP) and resuming (SIGCONT) them, and reading their JSON logs for
//! the writes the store refused them.
//!
//! A node is the running executable's `serve` (so the build that measures is the build that
//! serves), listening on a port the OS picks on loopback (the benchmark does not call its API),
//! with JSON logs to a file, a configuration file for its lease, its leader lease and its
//! concurrency, webhooks to loopback allowed, and a signing secret of its own from the
//! benchmark's receiver, which is how a receipt names its sender.
//!
//! Owns every child process it starts: a `Node` kills and reaps its process when dropped, so no
//! path out of a workload, errors included, leaves one behind (a paused one included: SIGKILL
//! ends a stopped process too). A node shares the benchmark's process group, so an interrupt
//! from the terminal reaches it too. Signals other than SIGKILL go through the `kill` command,
//! which keeps the workspace free of `unsafe` and of a libc binding. Must not judge the runs:
//! that is `stats`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use punctual_server::store_url::PostgresUrl;

use super::receiver::Receiver;
use super::report::peak_rss_mb;

/// How long a node's leadership (the rescue of expired leases) lasts unrenewed: short, so that
/// when the leader is the node killed or paused, another takes over its duties within about two
/// seconds rather than the default thirteen.
pub const LEADER_LEASE: Duration = Duration::from_millis(1_500);

/// Where the nodes find the jobs.
#[derive(Clone, Debug)]
pub enum NodeStore {
    Sqlite(PathBuf),
    Postgres { url: PostgresUrl, schema: String },
}

/// How often the nodes renew a running job's lease of `lease` (written to their configuration,
/// so that the judgement of reruns knows it).
pub fn heartbeat(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(10))
}

/// Starts nodes, each with its own log file in `scratch`, all with one configuration file.
pub struct Spawner {
    exe: PathBuf,
    store: NodeStore,
    scratch: PathBuf,
    config: PathBuf,
    /// The next node's sender number.
    next: u32,
}

impl Spawner {
    /// Writes the nodes' configuration file (their `lease`, `LEADER_LEASE`, `concurrency`).
    pub fn new(
        store: NodeStore,
        scratch: &Path,
        concurrency: usize,
        lease: Duration,
    ) -> anyhow::Result<Spawner> {
        let config = scratch.join("node.toml");
        let text = format!(
            "[engine]\nlease_ms = {}\nheartbeat_ms = {}\nleader_lease_ms = {}\n\
             concurrency = {concurrency}\n",
            lease.as_millis(),
            heartbeat(lease).as_millis(),
            LEADER_LEASE.as_millis()
        );
        std::fs::write(&config, text)
            .with_context(|| format!("writing the nodes' configuration {}", config.display()))?;
        Ok(Spawner {
            exe: std::env::current_exe().context("finding this executable to start nodes")?,
            store,
            scratch: scratch.to_path_buf(),
            config,
            next: 0,
        })
    }

    /// Starts a node named `name` (its holder name in the store), enrolled with `receiver`.
    pub fn spawn(&mut self, name: &str, receiver: &Receiver) -> anyhow::Result<Node> {
        let sender = self.next;
        self.next += 1;
        let log = self.scratch.join(format!("{name}-{sender}.log"));
        let stderr =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(&self.exe);
        command
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .args(["--listen", "127.0.0.1:0", "--node", name])
            .args(["--log-format", "json", "--log-level", "info"])
            .args(["--allow-network", "127.0.0.0/8"])
            .env("PUNCTUAL_WEBHOOK_SECRETS", receiver.enroll(sender))
            // The log level above keeps the lines counted here; RUST_LOG would win over it.
            .env_remove("RUST_LOG");
        match &self.store {
            NodeStore::Sqlite(path) => {
                let mut store = std::ffi::OsString::from("sqlite:");
                store.push(path);
                command.arg("--store").arg(store);
            }
            NodeStore::Postgres { url, schema } => {
                command
                    .arg("--store")
                    .arg(url.as_str())
                    .arg("--schema")
                    .arg(schema);
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting a punctual serve node")?;
        Ok(Node {
            pid: child.id(),
            sender,
            child: Some(child),
            log,
        })
    }
}

/// A running node. Dropping it kills and reaps the process.
pub struct Node {
    pub pid: u32,
    /// Whose signature its webhooks carry, for the receiver.
    pub sender: u32,
    /// `None` once killed and reaped.
    child: Option<Child>,
    pub log: PathBuf,
}

impl Node {
    /// Fails, with the end of the node's log, if it exited by itself: it should only ever die
    /// by our hand.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("the node was already killed");
        };
        if let Some(status) = child.try_wait().context("checking on a node")? {
            self.child = None;
            bail!(
                "a serve node exited by itself ({status}): {}",
                read_tail(&self.log)
            );
        }
        Ok(())
    }

    pub fn peak_rss_mb(&self) -> Option<f64> {
        self.child.as_ref()?;
        peak_rss_mb(&self.pid.to_string())
    }

    /// Kills the node with SIGKILL and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("the node was already killed")?;
        // Fails only if the process has already been reaped, which `take` above rules out.
        child.kill().context("killing a node")?;
        child.wait().context("reaping a killed node")?;
        Ok(())
    }

    /// Stops the node with SIGSTOP: it keeps its connections and leases but does nothing.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// Lets a paused node go on with SIGCONT.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, name: &str) -> anyhow::Result<()> {
        if self.child.is_none() {
            bail!("the node was already killed");
        }
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid.to_string())
            .status()
            .with_context(|| format!("running kill -{name}"))?;
        if !status.success() {
            bail!("kill -{name} {} failed ({status})", self.pid);
        }
        Ok(())
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

/// How many writes the store refused the nodes whose logs are `paths`: their `lease lost`
/// warnings. A node killed before it logged anything refused nothing; a line a kill cut short
/// is not counted.
pub fn lease_lost(paths: &[PathBuf]) -> anyhow::Result<u64> {
    let mut refused = 0;
    for path in paths {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        };
        refused += count_lease_lost(&text);
    }
    Ok(refused)
}

fn count_lease_lost(log: &str) -> u64 {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| {
            line["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("lease lost"))
        })
        .count() as u64
}

/// The larger of two optional peaks.
pub fn max_rss(known: Option<f64>, more: Option<f64>) -> Option<f64> {
    match (known, more) {
        (Some(known), Some(more)) => Some(known.max(more)),
        (known, more) => known.or(more),
    }
}

/// The last part of a node's log, for an error message.
fn read_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: String = text
        .chars()
        .rev()
        .take(2_000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if tail.trim().is_empty() {
        "(no output)".to_owned()
    } else {
        tail.trim().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_lease_lost_warnings_of_a_json_log() {
        let log = concat!(
            r#"{"level":"INFO","message":"punctual is serving","address":"127.0.0.1:1"}"#,
            "\n",
            r#"{"level":"WARN","message":"lease lost: this node's write was refused","job":"x","token":3}"#,
            "\n",
            r#"{"level":"WARN","message":"lease lost: this node's write was refused","job":"y","token":4}"#,
            "\n",
            // Cut short by a kill.
            r#"{"level":"WARN","message":"lease lost: this"#,
        );
        assert_eq!(count_lease_lost(log), 2);
        assert_eq!(count_lease_lost(""), 0);
    }
}
