//! A PostgreSQL benchmark run's own schema: a fresh name per run, the jobs table's health at the
//! end (dead row versions, bytes on disk), and dropping the schema when the run went well.
//!
//! No SQL here: `PgStore` creates and migrates the schema, reads the jobs table's health and
//! drops the schema (`PgStore::table_health`, `PgStore::drop_schema`); every job is read and
//! written through the `Store` trait. This module owns the name and the timing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use punctual_postgres::{PgOptions, PgStore, TableHealth};
use punctual_server::store_url::PostgresUrl;

/// PostgreSQL 15 flushes a backend's table statistics at most once a second, and when the
/// backend exits; the nodes have just disconnected when the health is read, so it waits this
/// long first.
const STATISTICS_SETTLE: Duration = Duration::from_millis(1_500);
/// How long one bookkeeping step (connecting, then reading or dropping) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

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
        tokio::time::timeout(STEP_TIMEOUT, async {
            self.open()
                .await?
                .table_health()
                .await
                .context("reading the jobs table's statistics")
        })
        .await
        .context("reading the jobs table's statistics timed out")?
    }

    /// Drops the schema and everything in it.
    pub async fn drop_schema(&self) -> anyhow::Result<()> {
        tokio::time::timeout(STEP_TIMEOUT, async {
            self.open()
                .await?
                .drop_schema()
                .await
                .with_context(|| format!("dropping schema {}", self.name))
        })
        .await
        .context("dropping the benchmark's schema timed out")?
    }

    /// A one-connection store on the schema, for the steps above. It neither creates nor
    /// migrates anything: the run did, and reading or dropping must not.
    async fn open(&self) -> anyhow::Result<PgStore> {
        let options = PgOptions {
            schema: Some(self.name.clone()),
            pool_size: 1,
            apply_migrations: false,
            ..PgOptions::default()
        };
        PgStore::connect_with(self.url.as_str(), options)
            .await
            .with_context(|| format!("connecting to {:?}, schema {}", self.url, self.name))
    }
}
