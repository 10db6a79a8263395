//! Raw `PgStore` throughput, without the engine: insert 100,000 due jobs in batches of 10,000,
//! then claim them 1,000 at a time from a few claimer tasks and complete each one from many
//! concurrent tasks, as worker slots would. Prints jobs per second for each phase.
//!
//! ```text
//! cargo run --release -p punctual-postgres --example throughput -- [URL] [CLAIMERS] [COMPLETERS]
//! ```
//!
//! URL defaults to `PUNCTUAL_TEST_DATABASE_URL` or `postgres://postgres@127.0.0.1:5432/test`.
//! The jobs live in a fresh schema `throughput_<pid>`, dropped at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use punctual_core::{
    ClaimRequest, Clock, JobOptions, Kind, NewJob, NodeId, Payload, Store, SystemClock,
};
use punctual_postgres::{PgOptions, PgStore};
use tokio::sync::Semaphore;

const JOBS: usize = 100_000;
const INSERT_BATCH: usize = 10_000;
const CLAIM_BATCH: usize = 1_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| {
        std::env::var("PUNCTUAL_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    });
    let claimers: usize = args.next().map_or(Ok(2), |text| text.parse())?;
    let completers: usize = args.next().map_or(Ok(64), |text| text.parse())?;
    let schema = format!("throughput_{}", std::process::id());
    let options = PgOptions {
        schema: Some(schema.clone()),
        pool_size: claimers + completers,
        ..PgOptions::default()
    };
    let store = PgStore::connect_with(&url, options).await?;
    let clock = SystemClock;

    let kind = Kind::new("throughput.job")?;
    let started = Instant::now();
    for _ in 0..JOBS / INSERT_BATCH {
        let now = clock.now();
        let batch: Vec<NewJob> = (0..INSERT_BATCH)
            .map(|_| {
                NewJob::new(
                    kind.clone(),
                    Payload::null(),
                    now,
                    JobOptions::default(),
                    now,
                )
            })
            .collect::<Result<_, _>>()?;
        store.insert(batch, now).await?;
    }
    let inserting = started.elapsed();
    println!(
        "inserted {JOBS} jobs in {:.2} s: {:.0} jobs/s",
        inserting.as_secs_f64(),
        JOBS as f64 / inserting.as_secs_f64()
    );

    // Completions in flight at once, across all claimers: the worker slots of a node.
    let slots = Arc::new(Semaphore::new(completers));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for claimer in 0..claimers {
        let store = store.clone();
        let slots = Arc::clone(&slots);
        tasks.spawn(async move {
            let holder = NodeId::new(&format!("throughput-{claimer}")).expect("a valid node name");
            let mut completions = tokio::task::JoinSet::new();
            let mut claimed_total = 0usize;
            loop {
                let now = SystemClock.now();
                let request = ClaimRequest {
                    holder: holder.clone(),
                    queues: None,
                    limit: CLAIM_BATCH,
                    due_by: now,
                    lease: Duration::from_secs(60),
                };
                let claimed = store.claim(request, now).await.expect("claim");
                if claimed.is_empty() {
                    break;
                }
                claimed_total += claimed.len();
                for job in claimed {
                    let permit = Arc::clone(&slots)
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed");
                    let store = store.clone();
                    completions.spawn(async move {
                        let token = job
                            .lease
                            .as_ref()
                            .expect("a claimed job holds a lease")
                            .token;
                        store
                            .complete(job.id, token, SystemClock.now())
                            .await
                            .expect("complete");
                        drop(permit);
                    });
                    // Reap finished completions as we go so the set stays small.
                    while completions.try_join_next().is_some() {}
                }
            }
            while let Some(done) = completions.join_next().await {
                done.expect("a completion task panicked");
            }
            claimed_total
        });
    }
    let mut worked = 0;
    while let Some(done) = tasks.join_next().await {
        worked += done?;
    }
    let working = started.elapsed();
    println!(
        "claimed and completed {worked} jobs in {:.2} s with {claimers} claimers and \
         {completers} concurrent completions: {:.0} jobs/s",
        working.as_secs_f64(),
        worked as f64 / working.as_secs_f64()
    );
    assert_eq!(worked, JOBS, "every job is claimed exactly once");

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}
