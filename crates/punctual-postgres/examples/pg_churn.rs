//! Churn of `PgStore`'s jobs table over rounds, without the engine: each round inserts 100,000
//! due jobs in batches of 10,000, claims them 1,000 at a time from a few claimer tasks and
//! completes each one from many concurrent tasks, as worker slots would, then purges the
//! finished jobs, as retention would, and prints the table's live and dead row versions and its
//! size on disk, so bloat shows as growth from round to round (and as the rounds' jobs per
//! second). When the server runs without autovacuum (as this project's development machines
//! do), each round also ends with the plain `VACUUM` that autovacuum would have run; `novacuum`
//! as fifth argument skips it, to see the table without any vacuum.
//!
//! `punctual bench --workload throughput --store postgres://...` is the throughput benchmark,
//! through the engine, and reports the table's health after one run (`dead_tuples`,
//! `table_bytes`); this example is for what happens to the table over many runs' worth of jobs.
//!
//! ```text
//! cargo run --release -p punctual-postgres --example pg_churn -- \
//!     [URL] [CLAIMERS (2)] [COMPLETERS (64)] [ROUNDS (5)] [novacuum]
//! ```
//!
//! URL defaults to `PUNCTUAL_TEST_DATABASE_URL` or `postgres://postgres@127.0.0.1:5432/test`
//! (an empty argument means the default). The jobs live in a fresh schema `churn_<pid>`,
//! dropped at the end.

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
    let url = args
        .next()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| {
            std::env::var("PUNCTUAL_TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
        });
    let claimers: usize = args.next().map_or(Ok(2), |text| text.parse())?;
    let completers: usize = args.next().map_or(Ok(64), |text| text.parse())?;
    let rounds: usize = args.next().map_or(Ok(5), |text| text.parse())?;
    let vacuum_allowed = args.next().as_deref() != Some("novacuum");
    let schema = format!("churn_{}", std::process::id());
    let options = PgOptions {
        schema: Some(schema.clone()),
        // Completions share the store's few flusher connections; claims take one each.
        pool_size: claimers + 4,
        ..PgOptions::default()
    };
    let store = PgStore::connect_with(&url, options).await?;
    let clock = SystemClock;

    let kind = Kind::new("churn.job")?;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let autovacuum: String = client.query_one("SHOW autovacuum", &[]).await?.get(0);
    let vacuum = autovacuum != "on" && vacuum_allowed;
    if vacuum {
        println!("autovacuum is {autovacuum} on this server: each round ends with a VACUUM");
    }
    for round in 1..=rounds {
        println!("round {round}");
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
                let holder = NodeId::new(&format!("churn-{claimer}")).expect("a valid node name");
                let mut completions = tokio::task::JoinSet::new();
                let mut claimed_total = 0usize;
                loop {
                    let now = SystemClock.now();
                    let request = ClaimRequest {
                        holder: holder.clone(),
                        queues: None,
                        kinds: None,
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
        purge_and_report(&store, &client, &schema, vacuum).await?;
    }

    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}

/// Deletes every finished job, as retention would, then prints the table's row versions and
/// size. The statistics are those PostgreSQL's backends have reported, which lags by up to a
/// second, so it waits that long first.
async fn purge_and_report(
    store: &PgStore,
    client: &tokio_postgres::Client,
    schema: &str,
    vacuum: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut purged = 0;
    // Purging is a leader duty: this process leads for the while, then steps down.
    let node = punctual_core::NodeId::new("churn-example")?;
    let term = store
        .lead(&node, None, Duration::from_secs(60), SystemClock.now())
        .await?
        .ok_or("another node leads this schema")?;
    loop {
        let now = SystemClock.now();
        let deleted = store
            .purge_finished(term, now.add(Duration::from_secs(1)), 10_000, now)
            .await?;
        if deleted == 0 {
            break;
        }
        purged += deleted;
    }
    store.resign(&node, term).await?;
    println!(
        "purged {purged} finished jobs in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    if vacuum {
        let started = Instant::now();
        client
            .batch_execute(&format!("VACUUM \"{schema}\".punctual_jobs"))
            .await?;
        println!("vacuumed in {:.2} s", started.elapsed().as_secs_f64());
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let row = client
        .query_one(
            "SELECT n_live_tup, n_dead_tup, autovacuum_count + vacuum_count,
                    pg_relation_size(relid), pg_indexes_size(relid)
             FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'punctual_jobs'",
            &[&schema],
        )
        .await?;
    let (live, dead, autovacuums, table, indexes): (i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    println!(
        "table: {live} live and {dead} dead row versions, {autovacuums} vacuums so far, \
         heap {:.1} MiB, indexes {:.1} MiB",
        table as f64 / 1_048_576.0,
        indexes as f64 / 1_048_576.0
    );
    Ok(())
}
