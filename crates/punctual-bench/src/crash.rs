//! The crash workload: one `punctual serve` node runs on a SQLite file (or a PostgreSQL
//! schema) and sends the jobs, webhooks, to the benchmark's receiver; it is killed with SIGKILL
//! `--kills` times at random moments while the jobs fall due, and started again each time under
//! the same node name, as a service manager would. The last one runs until every job has
//! finished in the store.
//!
//! Then the benchmark reads the receipts and the store: a job that did not succeed, or was
//! never received, is lost; a receipt beyond a job's first is a duplicate, explained when the
//! run before it (by lease token) was sent by a node that was then killed, and the later one has
//! a larger token. A job the store shows succeeded under a token smaller than one it was
//! received under is a stale completion accepted. A SQLite store's integrity check must pass.
//! Every node is killed and reaped on every path out of here, errors included.
//!
//! A node killed while sending may have made a run the receiver never saw; such a run had no
//! effect on the receiver, and the receipts that did arrive are judged as they are (see
//! docs/benchmarks.md).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use punctual_server::store_url::StoreUrl;
use rand::Rng as _;

use super::fleet::{NodeStore, Spawner, heartbeat, lease_lost, max_rss};
use super::progress::Progress;
use super::receiver::Receiver;
use super::report::Report;
use super::stats::{
    Lateness, classify_runs, first_run_lateness_ms, lease_end_bound, rate,
    stale_completions_accepted,
};
use super::store::{self, BenchStore};
use super::{
    Plan, count_finished, insert_disrupted_jobs, receipts_max, received_runs, succeeded_webhooks,
};

/// How far ahead the first job is due when insertion starts.
const LEAD: Duration = Duration::from_secs(1);
/// The shortest time a node lives before it is killed.
const KILL_AFTER_MIN: Duration = Duration::from_millis(50);
/// How long after the last job is due (and the last kill) the run waits for every job to finish.
const GRACE: Duration = Duration::from_secs(60);
/// How often the benchmark counts finished jobs.
const COUNT_INTERVAL: Duration = Duration::from_millis(100);
/// The node's name in the store, the same for each start: one service, restarted.
const NODE: &str = "crash";

pub async fn run(plan: &Plan, progress: Progress) -> anyhow::Result<Report> {
    let jobs = plan.jobs;
    let scratch = tempfile::Builder::new()
        .prefix("punctual-crash-")
        .tempdir()
        .context("creating a directory for the nodes' logs")?;
    // The benchmark's own handle on the store: it inserts the jobs and reads the outcome.
    let (opened, node_store) = match &plan.store {
        BenchStore::Url(StoreUrl::Sqlite(requested)) => {
            let db = requested
                .clone()
                .unwrap_or_else(|| scratch.path().join("punctual.db"));
            let shared = BenchStore::Url(StoreUrl::Sqlite(Some(db.clone())));
            let opened = store::open(&shared, &plan.postgres()).await?;
            (opened, NodeStore::Sqlite(db))
        }
        BenchStore::Url(StoreUrl::Postgres(url)) => {
            let schema = plan
                .schema
                .clone()
                .context("a PostgreSQL benchmark runs in its own schema")?;
            let opened = store::open(&plan.store, &plan.postgres()).await?;
            let node_store = NodeStore::Postgres {
                url: url.clone(),
                schema,
            };
            (opened, node_store)
        }
        BenchStore::Memory => bail!(
            "the crash workload kills the node's process, so it needs a store other processes \
             can share: use --store sqlite, sqlite:PATH or postgres://..."
        ),
    };
    let store = opened.store.clone();
    let clock = opened.clock.clone();
    let receiver = Receiver::start(clock.clone(), receipts_max(jobs))
        .await
        .context("starting the webhook receiver")?;
    let mut report = plan.report();
    report.kills = Some(plan.kills as u64);

    let started = Instant::now();
    let target = receiver.url("job");
    let took = insert_disrupted_jobs(plan, &*store, &*clock, LEAD, &target, &progress).await?;
    report.enqueue_per_s = rate(jobs as u64, took);

    // Kills spread on average over the whole time the jobs fall due.
    let kill_after_max =
        ((LEAD + plan.spread) * 2 / plan.kills.max(1) as u32).max(KILL_AFTER_MIN * 2);
    let mut spawner = Spawner::new(node_store, scratch.path(), plan.concurrency, plan.lease)?;
    // Each killed node's sender, and when it was killed (on the clock the receiver uses).
    let mut killed: HashMap<u32, i64> = HashMap::new();
    let mut logs = Vec::new();
    let mut node_rss_mb: Option<f64> = None;
    let killing = progress.bar("kills", plan.kills as u64);
    for _ in 0..plan.kills {
        let mut node = spawner.spawn(NODE, &receiver)?;
        logs.push(node.log.clone());
        let delay = rand::rng().random_range(KILL_AFTER_MIN..=kill_after_max);
        tokio::time::sleep(delay).await;
        node.check_alive()?;
        node_rss_mb = max_rss(node_rss_mb, node.peak_rss_mb());
        node.kill()?;
        killed.insert(node.sender, clock.now().as_micros());
        killing.inc(1);
    }
    killing.finish_and_clear();

    let mut last = spawner.spawn(NODE, &receiver)?;
    logs.push(last.log.clone());
    let finishing = progress.bar("finish", jobs as u64);
    let deadline = Instant::now().max(started + LEAD + plan.spread) + GRACE;
    let mut finished = 0;
    while finished < jobs as u64 {
        if Instant::now() >= deadline {
            break;
        }
        last.check_alive()?;
        tokio::time::sleep(COUNT_INTERVAL).await;
        finished = count_finished(&*store).await?;
        finishing.set_position(finished);
    }
    finishing.finish_and_clear();
    node_rss_mb = max_rss(node_rss_mb, last.peak_rss_mb());
    last.kill()?;

    // Every webhook the receiver got, and what the store says of each job.
    let runs = received_runs(&receiver, jobs, &mut report);
    let heartbeat_us = i64::try_from(heartbeat(plan.lease).as_micros()).unwrap_or(i64::MAX);
    let lease_us = i64::try_from(plan.lease.as_micros()).unwrap_or(i64::MAX);
    let counts = classify_runs(&runs, |run| {
        let stopped = killed.get(&run.node).copied()?;
        lease_end_bound(run, Some(stopped), heartbeat_us, lease_us)
    });
    let succeeded = succeeded_webhooks(&*store, jobs).await?;
    let succeeded_indexes: HashSet<usize> = succeeded.iter().map(|job| job.index).collect();
    let received: HashSet<usize> = runs.iter().map(|run| run.index).collect();
    report.lost = (0..jobs)
        .filter(|index| !(succeeded_indexes.contains(index) && received.contains(index)))
        .count() as u64;
    report.duplicates = counts.duplicates;
    report.duplicates_explained = counts.explained;
    report.reruns_before_lease_expiry = Some(counts.before_lease_expiry);
    report.lateness_ms = Lateness::of(first_run_lateness_ms(&runs));
    report.stale_completions_refused = Some(lease_lost(&logs)?);
    let completions: Vec<_> = succeeded.iter().map(|job| (job.id, job.token)).collect();
    report.stale_completions_accepted = Some(stale_completions_accepted(&runs, &completions));
    report.rss_mb_max = node_rss_mb;
    if finished < jobs as u64 {
        report.problems.push(format!(
            "only {finished} of {jobs} jobs had finished {} s after the last was due",
            GRACE.as_secs()
        ));
    }

    drop(store);
    drop(receiver);
    if let Some(sqlite) = opened.sqlite.clone() {
        let integrity = tokio::task::spawn_blocking(move || sqlite.integrity_check())
            .await
            .context("the integrity check's thread")?;
        if let Err(error) = &integrity {
            eprintln!("error: the store's integrity check failed: {error}");
        }
        report.integrity_ok = Some(integrity.is_ok());
    }
    opened.close().await;

    if report.broken() || !report.problems.is_empty() {
        let kept = scratch.keep();
        eprintln!(
            "the nodes' logs (and a temporary store, if any) are kept in {}",
            kept.display()
        );
    }
    Ok(report)
}
