//! The crash workload's worker: a separate `punctual bench-worker` process that runs the engine on
//! a SQLite file and logs every handler run, so its parent can kill it with SIGKILL at any moment
//! and still know exactly what ran.
//!
//! Owns the worker's command line and the run log's format (one line per run,
//! `"{job_index} {attempt} {lease_token} {pid}"`, and `"lease_lost {job_id} {lease_token} {pid}"`
//! when the store refused this worker's write). Each line is one unbuffered `write` to a file
//! opened with `O_APPEND` before the handler returns, so a killed process loses no line it
//! wrote, and a run that is not logged did not happen. The worker must not outlive its parent:
//! it exits when its parent is gone or after `--lifetime-s`.

use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use punctual::{BoxError, Config, Event, JobContext, NodeId, Scheduler};

use super::KIND;
use super::stats::Run;
use crate::store_arg::{self, StoreArg};

/// How often the worker checks that its parent is still there.
const PARENT_CHECK: Duration = Duration::from_millis(200);
/// How often the rescuer looks for expired leases: often, so a killed worker's jobs come back
/// soon after its leases end.
const RESCUE_INTERVAL: Duration = Duration::from_millis(200);

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The SQLite file holding the jobs.
    #[arg(long)]
    db: PathBuf,
    /// The run log to append to.
    #[arg(long)]
    log: PathBuf,
    /// Most handlers running at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Lease length; heartbeats renew it every third of it.
    #[arg(long, default_value_t = 1_000)]
    lease_ms: u64,
    /// Exit after this many seconds even if nobody stops the worker.
    #[arg(long, default_value_t = 600)]
    lifetime_s: u64,
}

/// Runs `punctual bench-worker` until it is killed, its parent goes away, or its lifetime ends.
pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let runtime = super::runtime()?;
    let result = runtime.block_on(work(args));
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

async fn work(args: WorkerArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let parent = std::os::unix::process::parent_id();
    let pid = std::process::id();
    let log = Arc::new(
        File::options()
            .create(true)
            .append(true)
            .open(&args.log)
            .with_context(|| format!("opening the run log {}", args.log.display()))?,
    );
    let store = store_arg::open(&StoreArg::Sqlite(Some(args.db.clone())))?.store;
    let lease = Duration::from_millis(args.lease_ms);
    let config = Config {
        node: NodeId::new(&format!("bench-worker-{pid}")).context("the worker's node name")?,
        concurrency: args.concurrency,
        lease,
        heartbeat: lease / 3,
        rescue_interval: RESCUE_INTERVAL,
        ..Config::default()
    };
    let handler_log = log.clone();
    let observer_log = log.clone();
    let scheduler = Scheduler::builder(store)
        .config(config)
        .handler(KIND, move |job: JobContext| {
            let result = log_run(&handler_log, &job, pid);
            std::future::ready(result)
        })
        .observer(move |event| {
            if let Event::LeaseLost { id, token, .. } = event {
                // Best effort: a line that cannot be written only hides a refusal from the report.
                let _ = (&*observer_log)
                    .write_all(format!("lease_lost {id} {token} {pid}\n").as_bytes());
            }
        })
        .build()
        .context("building the worker's scheduler")?;
    scheduler
        .start()
        .context("starting the worker's scheduler")?;

    let lifetime = Duration::from_secs(args.lifetime_s);
    while std::os::unix::process::parent_id() == parent && started.elapsed() < lifetime {
        tokio::time::sleep(PARENT_CHECK).await;
    }
    scheduler.stop().await;
    Ok(())
}

/// Appends the run line for `job`, in one write, before the handler returns.
fn log_run(log: &File, job: &JobContext, pid: u32) -> Result<(), BoxError> {
    let index: usize = job.payload.as_str().parse()?;
    let line = format!("{index} {} {} {pid}\n", job.attempt, job.lease_token);
    (&*log).write_all(line.as_bytes())?;
    Ok(())
}

/// What one worker's run log says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerLog {
    pub runs: Vec<Run>,
    /// Writes the store refused because the worker's lease had moved on.
    pub lease_lost: u64,
}

/// Reads a run log. Every line must be complete and well formed: a torn or unknown line is an
/// error, since a run the parent cannot read would make the report wrong.
pub fn parse_log(text: &str) -> anyhow::Result<WorkerLog> {
    let mut log = WorkerLog::default();
    if !text.is_empty() && !text.ends_with('\n') {
        bail!("the run log ends with a torn line");
    }
    for (number, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split(' ').collect();
        let well_formed = match fields.as_slice() {
            ["lease_lost", _id, _token, _pid] => {
                log.lease_lost += 1;
                true
            }
            [index, attempt, token, pid] => parse_run(index, attempt, token, pid)
                .map(|run| log.runs.push(run))
                .is_some(),
            _ => false,
        };
        if !well_formed {
            bail!("line {} of the run log is malformed: {line:?}", number + 1);
        }
    }
    Ok(log)
}

fn parse_run(index: &str, attempt: &str, token: &str, pid: &str) -> Option<Run> {
    Some(Run {
        index: index.parse().ok()?,
        attempt: attempt.parse().ok()?,
        token: token.parse().ok()?,
        pid: pid.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_runs_and_refusals() {
        let text = "3 1 1 100\n3 2 2 200\nlease_lost 0190f3c2-0000-7000-8000-000000000000 5 200\n";
        let log = parse_log(text).expect("well formed");
        assert_eq!(log.lease_lost, 1);
        assert_eq!(
            log.runs,
            vec![
                Run {
                    index: 3,
                    attempt: 1,
                    token: 1,
                    pid: 100
                },
                Run {
                    index: 3,
                    attempt: 2,
                    token: 2,
                    pid: 200
                },
            ]
        );
        assert_eq!(parse_log("").expect("empty"), WorkerLog::default());
    }

    #[test]
    fn refuses_torn_and_malformed_lines() {
        assert!(parse_log("3 1 1 100\n4 1 1").is_err());
        assert!(parse_log("3 1 x 100\n").is_err());
        assert!(parse_log("3 1 1\n").is_err());
    }
}
