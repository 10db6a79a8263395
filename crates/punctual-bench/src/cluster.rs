//! The cluster workload: `--nodes` `punctual serve` nodes share one PostgreSQL schema and send
//! the jobs, webhooks, to the benchmark's receiver while they fall due; with `--kills K` the
//! benchmark disrupts a random node K times, alternately killing it with SIGKILL (and starting
//! a new node in its place) and pausing it with SIGSTOP for longer than its lease before
//! resuming it with SIGCONT. A resumed node's late writes (completions, heartbeats) must be
//! refused, since other nodes rescued and reran its jobs meanwhile.
//!
//! Then the benchmark reads the receipts, the nodes' logs and the store: a job that did not
//! succeed, or was never received, is lost; a receipt beyond a job's first is a duplicate,
//! explained when the run before it (by lease token) was sent by a killed node, or by a paused
//! node under a claim that may have preceded the end of its pause (its `run_at` minus the claim
//! window is not after the resume), and the later run has a larger token; a job the store shows
//! succeeded under a token smaller than one it was received under is a stale completion
//! accepted (there must be none). A paused node may, once resumed, send a webhook it claimed
//! before the pause although the job was rescued and run elsewhere meanwhile; such runs are
//! counted apart (`runs_after_takeover`). Every node is killed and reaped on every path out of
//! here, errors included.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use punctual::Config;
use punctual_server::store_url::StoreUrl;
use rand::Rng as _;

use super::fleet::{Node, NodeStore, Spawner, heartbeat, lease_lost, max_rss};
use super::progress::Progress;
use super::receiver::Receiver;
use super::report::Report;
use super::stats::{
    Lateness, Run, classify_runs, first_run_lateness_ms, lease_end_bound, rate,
    runs_after_takeover, stale_completions_accepted,
};
use super::store::{self, BenchStore};
use super::{
    Plan, count_finished, insert_disrupted_jobs, receipts_max, received_runs, succeeded_webhooks,
};

/// How far ahead the first job is due when insertion starts.
const LEAD: Duration = Duration::from_secs(1);
/// How long a paused node stays stopped, at least: past its lease (by default 1 s; three leases
/// when `--lease-ms` is longer), and, should it be the leader, past its leadership
/// (`fleet::LEADER_LEASE`, 1.5 s, renewed every 0.5 s) with room for another node to take
/// over, rescue its jobs and run them again, so that its writes after it resumes are stale.
const PAUSE: Duration = Duration::from_millis(3_000);
/// How long after the last job is due (and the last disruption) the run waits for every job.
const GRACE: Duration = Duration::from_secs(60);
/// How often the benchmark counts finished jobs.
const COUNT_INTERVAL: Duration = Duration::from_millis(100);

/// A node paused and resumed: the jobs it claimed before `resumed_us` (database clock) may be
/// rerun by other nodes.
struct Pause {
    node: u32,
    paused_us: i64,
    resumed_us: i64,
}

pub async fn run(plan: &Plan, progress: Progress) -> anyhow::Result<Report> {
    let BenchStore::Url(StoreUrl::Postgres(url)) = &plan.store else {
        bail!("the cluster workload's nodes share one PostgreSQL: use --store postgres://...");
    };
    let schema = plan
        .schema
        .clone()
        .context("a PostgreSQL benchmark runs in its own schema")?;
    let jobs = plan.jobs;
    let scratch = tempfile::Builder::new()
        .prefix("punctual-cluster-")
        .tempdir()
        .context("creating a directory for the nodes' logs")?;
    // The benchmark's own handle: it inserts the jobs and reads the outcome, on the database
    // clock, which the receiver times arrivals on too.
    let opened = store::open(&plan.store, &plan.postgres()).await?;
    let store = opened.store.clone();
    let clock = opened.clock.clone();
    let receiver = Receiver::start(clock.clone(), receipts_max(jobs))
        .await
        .context("starting the webhook receiver")?;
    let mut report = plan.report();

    let started = Instant::now();
    let target = receiver.url("job");
    let took = insert_disrupted_jobs(plan, &*store, &*clock, LEAD, &target, &progress).await?;
    report.enqueue_per_s = rate(jobs as u64, took);

    let node_store = NodeStore::Postgres {
        url: url.clone(),
        schema,
    };
    let mut spawner = Spawner::new(node_store, scratch.path(), plan.concurrency, plan.lease)?;
    let mut nodes: Vec<Node> = (0..plan.nodes)
        .map(|number| spawner.spawn(&format!("node-{number}-0"), &receiver))
        .collect::<anyhow::Result<_>>()?;
    let mut logs: Vec<_> = nodes.iter().map(|node| node.log.clone()).collect();
    // Each killed node's sender, and when it was killed (database clock).
    let mut killed: HashMap<u32, i64> = HashMap::new();
    let mut pauses: Vec<Pause> = Vec::new();
    let mut rss_mb: Option<f64> = None;

    // Disruption `i` happens at a random moment within the `i`-th of K equal slices of the
    // time the jobs fall due, or at once if a pause made it late.
    let window = LEAD + plan.spread;
    let disrupting = progress.bar("disrupt", plan.kills as u64);
    for number in 0..plan.kills {
        let slice = window.as_secs_f64() / plan.kills as f64;
        let at = slice * (number as f64 + rand::rng().random_range(0.0..1.0));
        let at = started + Duration::from_secs_f64(at);
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        for node in &mut nodes {
            node.check_alive()?;
            rss_mb = max_rss(rss_mb, node.peak_rss_mb());
        }
        let target = rand::rng().random_range(0..nodes.len());
        if number % 2 == 0 {
            nodes[target].kill()?;
            killed.insert(nodes[target].sender, clock.now().as_micros());
            let replacement = spawner.spawn(&format!("node-{target}-{}", number + 1), &receiver)?;
            logs.push(replacement.log.clone());
            nodes[target] = replacement;
        } else {
            let node = &nodes[target];
            let paused_us = clock.now().as_micros();
            node.pause()?;
            tokio::time::sleep(PAUSE.max(plan.lease * 3)).await;
            node.resume()?;
            pauses.push(Pause {
                node: node.sender,
                paused_us,
                resumed_us: clock.now().as_micros(),
            });
        }
        disrupting.inc(1);
    }
    disrupting.finish_and_clear();

    let finishing = progress.bar("finish", jobs as u64);
    let deadline = Instant::now().max(started + window) + GRACE;
    let mut finished = 0;
    while finished < jobs as u64 && Instant::now() < deadline {
        for node in &mut nodes {
            node.check_alive()?;
        }
        tokio::time::sleep(COUNT_INTERVAL).await;
        finished = count_finished(&*store).await?;
        finishing.set_position(finished);
    }
    finishing.finish_and_clear();
    for node in &mut nodes {
        rss_mb = max_rss(rss_mb, node.peak_rss_mb());
        // Every job is final (or the run has failed): the nodes have nothing left to do.
        node.kill()?;
    }

    let runs = received_runs(&receiver, jobs, &mut report);
    // A job is claimed no earlier than its run_at minus the claim window.
    let claim_ahead_us = i64::try_from(Config::default().claim_ahead.as_micros()).unwrap_or(0);
    // When the holder of `run` stopped: killed, or paused (the first pause of its node that
    // ended after the job could have been claimed). It renews nothing while paused, and a
    // renewal after it resumes is refused once the job was rescued.
    let stopped = |run: &Run| {
        killed.get(&run.node).copied().or_else(|| {
            pauses
                .iter()
                .find(|pause| {
                    pause.node == run.node && run.run_at_us - claim_ahead_us <= pause.resumed_us
                })
                .map(|pause| pause.paused_us)
        })
    };
    let heartbeat_us = i64::try_from(heartbeat(plan.lease).as_micros()).unwrap_or(i64::MAX);
    let lease_us = i64::try_from(plan.lease.as_micros()).unwrap_or(i64::MAX);
    let counts = classify_runs(&runs, |run| {
        lease_end_bound(run, Some(stopped(run)?), heartbeat_us, lease_us)
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
    report.runs_after_takeover = Some(runs_after_takeover(&runs));
    report.kills = Some(killed.len() as u64);
    report.pauses = Some(pauses.len() as u64);
    report.rss_mb_max = rss_mb;
    if finished < jobs as u64 {
        report.problems.push(format!(
            "only {finished} of {jobs} jobs had finished {} s after the last was due",
            GRACE.as_secs()
        ));
    }
    drop(store);
    drop(receiver);
    opened.close().await;

    if report.broken() || !report.problems.is_empty() {
        let kept = scratch.keep();
        eprintln!("the nodes' logs are kept in {}", kept.display());
    }
    Ok(report)
}
