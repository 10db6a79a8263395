//! A PostgreSQL benchmark run's own schema: a fresh name per run, the jobs table's health at the
//! end (dead row versions, bytes on disk), and dropping the schema when the run went well.
//!
//! The only SQL in the CLI, and only for the benchmark's bookkeeping: `PgStore` creates and
//! migrates the schema, and every job is read and written through the `Store` trait. Dropping a
//! schema and reading `pg_stat_user_tables` are operator actions the store's API does not offer;
//! they belong in `punctual-postgres` once it offers them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio_postgres::NoTls;

use crate::store_arg::PostgresUrl;

/// PostgreSQL 15 flushes a backend's table statistics at most once a second, and when the
/// backend exits; the nodes have just disconnected when the health is read, so it waits this
/// long first.
const STATISTICS_SETTLE: Duration = Duration::from_millis(1_500);
/// How long one bookkeeping statement may take.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The jobs table at the end of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableHealth {
    /// `n_dead_tup` of `punctual_jobs`: row versions left dead by updates and deletes and not
    /// yet reclaimed by vacuum or page pruning.
    pub dead_tuples: u64,
    /// `pg_total_relation_size` of `punctual_jobs`: heap, indexes and TOAST.
    pub table_bytes: u64,
}

/// A benchmark run's schema, named `punctual_bench_<unix seconds>_<pid>`.
#[derive(Clone, Debug)]
pub struct ScratchSchema {
    url: PostgresUrl,
    name: String,
}

impl ScratchSchema {
    /// A fresh, unused name; `PgStore` creates the schema when it first connects to it.
    pub fn new(url: PostgresUrl) -> ScratchSchema {
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let name = format!("punctual_bench_{seconds}_{}", std::process::id());
        ScratchSchema { url, name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads the jobs table's dead row versions and size, after letting statistics settle.
    pub async fn table_health(&self) -> anyhow::Result<TableHealth> {
        tokio::time::sleep(STATISTICS_SETTLE).await;
        let client = self.connect().await?;
        let row = tokio::time::timeout(
            STATEMENT_TIMEOUT,
            client.query_one(
                "SELECT coalesce(stat.n_dead_tup, 0),
                        pg_total_relation_size(format('%I.punctual_jobs', $1::text)::regclass)
                 FROM pg_namespace AS namespace
                 JOIN pg_class AS class
                   ON class.relnamespace = namespace.oid AND class.relname = 'punctual_jobs'
                 LEFT JOIN pg_stat_user_tables AS stat ON stat.relid = class.oid
                 WHERE namespace.nspname = $1",
                &[&self.name],
            ),
        )
        .await
        .context("reading the jobs table's statistics timed out")?
        .context("reading the jobs table's statistics")?;
        let dead: i64 = row.try_get(0).context("n_dead_tup")?;
        let bytes: i64 = row.try_get(1).context("pg_total_relation_size")?;
        Ok(TableHealth {
            dead_tuples: dead.max(0).unsigned_abs(),
            table_bytes: bytes.max(0).unsigned_abs(),
        })
    }

    /// Drops the schema and everything in it.
    pub async fn drop_schema(&self) -> anyhow::Result<()> {
        let client = self.connect().await?;
        // The name is ours, built above from digits and letters; quoted anyway.
        let statement = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        tokio::time::timeout(STATEMENT_TIMEOUT, client.batch_execute(&statement))
            .await
            .context("dropping the benchmark's schema timed out")?
            .with_context(|| format!("dropping schema {}", self.name))
    }

    /// A plain connection for the statements above; its driver task ends with the client.
    async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::connect(self.url.as_str(), NoTls)
            .await
            .with_context(|| format!("connecting to {:?}", self.url))?;
        tokio::spawn(async move {
            // Ends when the client is dropped; an error then changes nothing for the run.
            let _ = connection.await;
        });
        Ok(client)
    }
}
