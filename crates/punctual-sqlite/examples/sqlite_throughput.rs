//! Durable throughput of `SqliteStore`, end to end: insert N no-op jobs due now, then work them
//! (claim in batches of 1,000, complete each from its own task), every write committed with
//! fsync. A quick figure for this crate alone; `punctual bench` is the project's benchmark.
//!
//! ```text
//! cargo run --release -p punctual-sqlite --example sqlite_throughput -- [JOBS] [CLAIMERS]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use punctual_core::{
    ClaimRequest, Clock, JobOptions, Kind, NewJob, NodeId, Payload, Store, SystemClock, limits,
};
use punctual_sqlite::SqliteStore;
use tokio::task::JoinSet;

const INSERT_BATCH: usize = 1_000;
const CLAIM_BATCH: usize = 1_000;
const INSERTERS: usize = 4;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let jobs: usize = args.next().map_or(Ok(100_000), |text| text.parse())?;
    let claimers: usize = args.next().map_or(Ok(4), |text| text.parse())?;
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path().join("punctual.db"))?);
    let clock = SystemClock;
    let kind = Kind::new("noop")?;

    // Enqueue: several inserters at once, so group commit can share fsyncs between them too.
    let started = Instant::now();
    let mut inserters = JoinSet::new();
    for inserter in 0..INSERTERS {
        let store = Arc::clone(&store);
        let kind = kind.clone();
        let share = jobs / INSERTERS + usize::from(inserter < jobs % INSERTERS);
        inserters.spawn(async move {
            let mut left = share;
            while left > 0 {
                let now = clock.now();
                let count = left.min(INSERT_BATCH).min(limits::INSERT_BATCH_MAX);
                let batch = (0..count)
                    .map(|_| {
                        NewJob::new(
                            kind.clone(),
                            Payload::null(),
                            now,
                            JobOptions::default(),
                            now,
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                store.insert(batch, now).await?;
                left -= count;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
    }
    while let Some(done) = inserters.join_next().await {
        done?.map_err(|error| error.to_string())?;
    }
    let enqueue = started.elapsed();

    // Work: each claimer claims a batch, completes every job of it from its own task, and
    // claims again; several claimers keep the writer busy while completions are in flight.
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for claimer in 0..claimers {
        let store = Arc::clone(&store);
        let holder = NodeId::new(&format!("worker-{claimer}"))?;
        workers.spawn(async move {
            let mut worked = 0usize;
            loop {
                let now = clock.now();
                let request = ClaimRequest {
                    holder: holder.clone(),
                    queues: None,
                    kinds: None,
                    limit: CLAIM_BATCH,
                    due_by: now,
                    lease: Duration::from_secs(60),
                };
                let claimed = store.claim(request, now).await?;
                if claimed.is_empty() {
                    return Ok::<_, punctual_core::StoreError>(worked);
                }
                let mut completions = JoinSet::new();
                for job in claimed {
                    let store = Arc::clone(&store);
                    completions.spawn(async move {
                        store.complete(job.id, job.lease_token, clock.now()).await
                    });
                }
                while let Some(done) = completions.join_next().await {
                    done.expect("a completion task does not panic")?;
                    worked += 1;
                }
            }
        });
    }
    let mut worked = 0;
    while let Some(done) = workers.join_next().await {
        worked += done??;
    }
    let work = started.elapsed();
    assert_eq!(worked, jobs, "every job was worked once");

    let path = store.path().to_path_buf();
    drop(store);
    let bytes = std::fs::metadata(&path)?.len();
    println!(
        "sqlite (release): {jobs} jobs; enqueue {:.0} jobs/s ({:.2} s); worked {:.0} jobs/s \
         ({:.2} s) with {claimers} claimers; file {:.1} MB",
        jobs as f64 / enqueue.as_secs_f64(),
        enqueue.as_secs_f64(),
        worked as f64 / work.as_secs_f64(),
        work.as_secs_f64(),
        bytes as f64 / 1e6,
    );
    Ok(())
}
