//! The service workloads: a real `punctual serve` child process over loopback, authenticated,
//! driven by this process as a client and (for webhooks) as the receiver.
//!
//! - `api-create`: batch creations (1,000 jobs each, `--concurrency` in flight), then single
//!   creations at a fixed 1,000 per second; the batches' rate and the singles' latency.
//! - `webhook`: N webhook jobs spread over `--spread-s`, 2 s ahead; lateness is the receipt at
//!   the receiver minus `run_at`, both on this machine's clock.
//! - `webhook-burst`: N webhook jobs due at one instant, to a receiver that answers after
//!   `--receiver-delay-ms`; the lateness of the first and the last receipt.
//! - `remote-worker`: N jobs due now, worked by `--concurrency` HTTP workers that claim and
//!   complete in batches.
//!
//! Every job is created through the API, so each run also checks that what the API
//! acknowledged ran (or is stored): lost must be 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use punctual_core::{Clock, SystemClock, Timestamp};
use punctual_server::webhook::sign::Secret;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::progress::Progress;
use super::receiver::Receiver;
use super::report::{Report, RequestMs};
use super::service::{ServeProcess, judge};
use super::stats::{Lateness, percentile, rate};
use super::{Plan, Workload, spread_at, wait_until};

/// Jobs per batch creation.
const BATCH: usize = 1_000;
/// The rate of single creations, per second, and for how long they run.
const SINGLE_RATE: u64 = 1_000;
const SINGLE_FOR: Duration = Duration::from_secs(5);
/// How far ahead the first webhook is due when creation starts.
const LEAD: Duration = Duration::from_secs(2);
/// How long after the last job is due a run waits for stragglers.
const GRACE: Duration = Duration::from_secs(30);
/// Jobs one remote worker claims (and completes) at a time.
const CLAIM_BATCH: usize = 500;
/// The kind of the jobs remote workers run.
const WORKER_KIND: &str = "bench.work";

/// Creates `bodies` (each a batch) with at most `in_flight` requests at once; the time taken.
async fn create_batches(
    node: &Arc<ServeProcess>,
    bodies: Vec<Value>,
    in_flight: usize,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Duration> {
    let permits = Arc::new(Semaphore::new(in_flight.max(1)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for body in bodies {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .context("the batch semaphore")?;
        let node = node.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let created = node.post("/v1/jobs/batch", &body).await?;
            let count = created["jobs"].as_array().map_or(0, Vec::len);
            anyhow::Ok(count)
        });
        while let Some(done) = tasks.try_join_next() {
            progress.inc(done.context("a batch task")?? as u64);
        }
    }
    while let Some(done) = tasks.join_next().await {
        progress.inc(done.context("a batch task")?? as u64);
    }
    Ok(started.elapsed())
}

fn batches(jobs: usize, job: impl Fn(usize) -> Value) -> Vec<Value> {
    (0..jobs)
        .step_by(BATCH)
        .map(|start| {
            let chunk: Vec<Value> = (start..(start + BATCH).min(jobs)).map(&job).collect();
            json!({ "jobs": chunk })
        })
        .collect()
}

/// How many jobs the node's store holds, from `/v1/queues`.
async fn stored(node: &ServeProcess, state: Option<&str>) -> anyhow::Result<u64> {
    let answer: Value = node
        .client
        .get(format!("{}/v1/queues", node.base))
        .bearer_auth(&node.token)
        .send()
        .await
        .context("GET /v1/queues")?
        .json()
        .await
        .context("reading /v1/queues")?;
    let queues = answer["queues"].as_array().context("the queue list")?;
    Ok(queues
        .iter()
        .map(|queue| {
            let counts = &queue["counts"];
            match state {
                Some(state) => counts[state].as_u64().unwrap_or(0),
                None => counts
                    .as_object()
                    .map_or(0, |all| all.values().filter_map(Value::as_u64).sum()),
            }
        })
        .sum())
}

pub async fn api_create(plan: &Plan, progress: Progress) -> anyhow::Result<Report> {
    let node = Arc::new(ServeProcess::start(plan, 64, &Secret::generate()).await?);
    let mut report = plan.report();
    // Due in an hour: the run measures creation, not execution.
    let job = |index: usize| json!({"kind": "bench.later", "delay_ms": 3_600_000, "payload": {"n": index}});
    let bodies = batches(plan.jobs, job);
    let creating = progress.bar("batches", plan.jobs as u64);
    let took = create_batches(&node, bodies, plan.concurrency, &creating).await?;
    report.enqueue_per_s = rate(plan.jobs as u64, took);

    let singles = SINGLE_RATE * SINGLE_FOR.as_secs();
    let sending = progress.bar("singles", singles);
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..singles {
        // Open loop: each request has its time, and its latency counts from that time, so a
        // slow answer cannot hide the requests queued behind it.
        let due = started + Duration::from_micros(index * 1_000_000 / SINGLE_RATE);
        tokio::time::sleep_until(due).await;
        let node = node.clone();
        tasks.spawn(async move {
            node.post(
                "/v1/jobs",
                &json!({"kind": "bench.later", "delay_ms": 3_600_000}),
            )
            .await?;
            anyhow::Ok(due.elapsed().as_secs_f64() * 1_000.0)
        });
        sending.inc(1);
    }
    let mut latencies = Vec::with_capacity(usize::try_from(singles).unwrap_or(0));
    while let Some(done) = tasks.join_next().await {
        latencies.push(done.context("a single creation")??);
    }
    latencies.sort_by(f64::total_cmp);
    report.request_ms = Some(RequestMs {
        p50: percentile(&latencies, 50.0).unwrap_or(0.0),
        p99: percentile(&latencies, 99.0).unwrap_or(0.0),
        max: latencies.last().copied().unwrap_or(0.0),
    });
    let expected = plan.jobs as u64 + singles;
    report.lost = expected.saturating_sub(stored(&node, None).await?);
    report.rss_mb_max = node.rss_mb();
    finish(node).await?;
    Ok(report)
}

pub async fn webhook(plan: &Plan, progress: Progress) -> anyhow::Result<Report> {
    let burst = plan.workload == Workload::WebhookBurst;
    let clock = SystemClock;
    // Room for every receipt, and for duplicates should there be any.
    let receiver = Receiver::start(Arc::new(clock), plan.jobs + 1_000)
        .await
        .context("starting the receiver")?;
    if burst {
        receiver.set_delay(plan.receiver_delay);
    }
    let secret = receiver.enroll(0);
    let node = Arc::new(ServeProcess::start(plan, plan.concurrency, &secret).await?);
    let mut report = plan.report();
    let jobs = plan.jobs;
    let first_due = clock.now().add(LEAD);
    let due = |index: usize| -> Timestamp {
        if burst {
            first_due
        } else {
            spread_at(first_due, plan.spread, index, jobs)
        }
    };
    let url = receiver.url("hook");
    let bodies = batches(
        jobs,
        |index| json!({"webhook": {"url": url}, "run_at": due(index).to_rfc3339_exact(), "payload": {"n": index}}),
    );
    let creating = progress.bar("create", jobs as u64);
    let took = create_batches(&node, bodies, plan.concurrency.min(8), &creating).await?;
    report.enqueue_per_s = rate(jobs as u64, took);
    if took > LEAD {
        eprintln!(
            "warning: creating took {:.2} s, longer than the {} s lead: the first jobs were due before they were all created",
            took.as_secs_f64(),
            LEAD.as_secs()
        );
    }
    let last_due = due(jobs.saturating_sub(1));
    let wait_for = Duration::from_micros(
        u64::try_from(last_due.micros_since(clock.now()).max(0)).unwrap_or(0),
    ) + GRACE;
    let receiving = progress.bar("received", jobs as u64);
    let all = wait_until(Instant::now() + wait_for, &receiving, || {
        let count = receiver.receipts().len();
        (count as u64, count >= jobs)
    })
    .await;
    // A moment more, so a duplicate sent just after the last first receipt is counted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let judged = judge(&receiver.receipts(), jobs);
    report.lost = judged.lost;
    report.duplicates = judged.duplicates;
    report.bad_signatures = Some(judged.bad_signatures);
    report.lateness_first_ms = judged.lateness_ms.iter().copied().min_by(f64::total_cmp);
    report.lateness_ms = Lateness::of(judged.lateness_ms);
    report.rss_mb_max = node.rss_mb();
    if !all {
        report.problems.push(format!(
            "only {} of {jobs} webhooks arrived by {} s after the last was due",
            receiver.receipts().len(),
            GRACE.as_secs()
        ));
    }
    if judged.bad_signatures > 0 {
        report.problems.push(format!(
            "{} webhooks arrived without a valid signature",
            judged.bad_signatures
        ));
    }
    finish(node).await?;
    Ok(report)
}

pub async fn remote_worker(plan: &Plan, progress: Progress) -> anyhow::Result<Report> {
    let node = Arc::new(ServeProcess::start(plan, 64, &Secret::generate()).await?);
    let mut report = plan.report();
    let jobs = plan.jobs;
    let bodies = batches(
        jobs,
        |index| json!({"kind": WORKER_KIND, "payload": {"n": index}}),
    );
    let creating = progress.bar("create", jobs as u64);
    let took = create_batches(&node, bodies, 4, &creating).await?;
    report.enqueue_per_s = rate(jobs as u64, took);

    let completed = Arc::new(AtomicU64::new(0));
    let working = progress.bar("worked", jobs as u64);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..plan.concurrency {
        let node = node.clone();
        let completed = completed.clone();
        let working = working.clone();
        workers.spawn(async move {
            let claim = json!({"worker": format!("bench-{worker}"), "kinds": [WORKER_KIND], "limit": CLAIM_BATCH, "lease_ms": 60_000, "wait_ms": 200});
            while completed.load(Ordering::Relaxed) < jobs as u64 {
                let claimed = node.post("/v1/workers/claim", &claim).await?;
                let held: Vec<Value> = claimed["jobs"]
                    .as_array()
                    .context("the claimed jobs")?
                    .iter()
                    .map(|job| json!({"id": job["id"], "lease_token": job["lease_token"]}))
                    .collect();
                if held.is_empty() {
                    continue;
                }
                let answer = node.post("/v1/workers/complete", &json!({ "jobs": held })).await?;
                let done = answer["results"].as_array().map_or(0, |results| results.iter().filter(|result| result["ok"] == true).count());
                if done < held.len() {
                    bail!("{} of {} completions were refused: {answer}", held.len() - done, held.len());
                }
                completed.fetch_add(done as u64, Ordering::Relaxed);
                working.inc(done as u64);
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("a remote worker")??;
    }
    report.worked_per_s = rate(jobs as u64, started.elapsed());
    report.lost = (jobs as u64).saturating_sub(stored(&node, Some("succeeded")).await?);
    report.rss_mb_max = node.rss_mb();
    finish(node).await?;
    Ok(report)
}

async fn finish(node: Arc<ServeProcess>) -> anyhow::Result<()> {
    match Arc::try_unwrap(node) {
        Ok(node) => node.stop().await,
        Err(_) => bail!("a request task still holds the node"),
    }
}
