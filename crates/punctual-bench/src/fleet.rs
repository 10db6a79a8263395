//! The worker processes of the crash and cluster workloads: starting them, killing (SIGKILL),
//! pausing (SIGSTOP) and resuming (SIGCONT) them, and reading back what their run logs say.
//!
//! Owns every child process it starts: a `Worker` kills and reaps its process when dropped, so no
//! path out of a workload, errors included, leaves one behind (a paused one included: SIGKILL
//! ends a stopped process too). Signals other than SIGKILL go through the `kill` command, which
//! keeps the workspace free of `unsafe` and of a libc binding. Must not judge the runs: that is
//! `stats`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use punctual::JobId;

use super::report::peak_rss_mb;
use super::stats::Run;
use super::worker::parse_log;
use punctual_server::store_url::PostgresUrl;

/// Where the workers find the jobs.
#[derive(Clone, Debug)]
pub enum WorkerStore {
    Sqlite(PathBuf),
    Postgres { url: PostgresUrl, schema: String },
}

/// Starts worker processes, each with its own run log and stderr file in `scratch`.
pub struct Spawner {
    pub exe: PathBuf,
    pub store: WorkerStore,
    pub scratch: PathBuf,
    pub concurrency: usize,
    pub lease: Duration,
}

impl Spawner {
    /// Starts a worker whose files are named after `name`.
    pub fn spawn(&self, name: &str) -> anyhow::Result<Worker> {
        let log = self.scratch.join(format!("{name}.log"));
        let stderr_path = self.scratch.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let mut command = Command::new(&self.exe);
        command.arg("bench-worker");
        match &self.store {
            WorkerStore::Sqlite(path) => {
                let mut store = std::ffi::OsString::from("sqlite:");
                store.push(path);
                command.arg("--store").arg(store);
            }
            WorkerStore::Postgres { url, schema } => {
                command
                    .arg("--store")
                    .arg(url.as_str())
                    .arg("--schema")
                    .arg(schema);
            }
        }
        let child = command
            .arg("--log")
            .arg(&log)
            .arg("--concurrency")
            .arg(self.concurrency.to_string())
            .arg("--lease-ms")
            .arg(self.lease.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting a bench-worker process")?;
        Ok(Worker {
            pid: child.id(),
            child: Some(child),
            log,
            stderr: stderr_path,
        })
    }
}

/// A running worker process. Dropping it kills and reaps the process.
pub struct Worker {
    pub pid: u32,
    /// `None` once killed and reaped.
    child: Option<Child>,
    pub log: PathBuf,
    stderr: PathBuf,
}

impl Worker {
    /// Fails, with the worker's stderr, if the worker exited by itself: it should only ever die
    /// by our hand.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("the worker was already killed");
        };
        if let Some(status) = child.try_wait().context("checking on a worker")? {
            self.child = None;
            bail!(
                "a bench-worker exited by itself ({status}): {}",
                read_tail(&self.stderr)
            );
        }
        Ok(())
    }

    pub fn peak_rss_mb(&self) -> Option<f64> {
        self.child.as_ref()?;
        peak_rss_mb(&self.pid.to_string())
    }

    /// Kills the worker with SIGKILL and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("the worker was already killed")?;
        // Fails only if the process has already been reaped, which `take` above rules out.
        child.kill().context("killing a worker")?;
        child.wait().context("reaping a killed worker")?;
        Ok(())
    }

    /// Stops the worker with SIGSTOP: it keeps its connections and leases but does nothing.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// Lets a paused worker go on with SIGCONT.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, name: &str) -> anyhow::Result<()> {
        if self.child.is_none() {
            bail!("the worker was already killed");
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

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Everything the workers' logs say, taken together.
#[derive(Debug, Default)]
pub struct Logs {
    pub runs: Vec<Run>,
    /// Acknowledged completions: (job, attempt).
    pub done: Vec<(JobId, u32)>,
    /// Writes refused because the writer's lease had moved on.
    pub lease_lost: u64,
}

impl Logs {
    /// Reads every log in `paths`; a worker killed before it opened its log ran nothing.
    pub fn read(paths: &[PathBuf]) -> anyhow::Result<Logs> {
        let mut logs = Logs::default();
        for path in paths {
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(error) => {
                    return Err(error).with_context(|| format!("reading {}", path.display()));
                }
            };
            let parsed = parse_log(&text).with_context(|| format!("reading {}", path.display()))?;
            logs.runs.extend(parsed.runs);
            logs.done
                .extend(parsed.done.iter().map(|done| (done.id, done.attempt)));
            logs.lease_lost += parsed.lease_lost;
        }
        Ok(logs)
    }

    /// The indexes of the jobs that ran at least once.
    pub fn ran(&self) -> HashSet<usize> {
        self.runs.iter().map(|run| run.index).collect()
    }
}

/// The larger of two optional peaks.
pub fn max_rss(known: Option<f64>, more: Option<f64>) -> Option<f64> {
    match (known, more) {
        (Some(known), Some(more)) => Some(known.max(more)),
        (known, more) => known.or(more),
    }
}

/// The last part of a worker's stderr, for an error message.
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
