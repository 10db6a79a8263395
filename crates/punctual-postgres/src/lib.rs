//! `PgStore`: punctual's PostgreSQL store, for cluster mode, where several punctual nodes share
//! one database. It is the only place in punctual where Postgres SQL lives.
//!
//! What it owns: a connection pool (deadpool over tokio-postgres, no TLS), the versioned schema
//! (`migrations`, applied at connect under an advisory lock so nodes starting together are safe),
//! every statement that reads or writes jobs (`insert`, `claim`, `transitions`, `completer`,
//! `reads`), leadership (`leader`: the elected node's term fences rescue and purge), the
//! database's clock (`clock`: one clock for the cluster) and insert notifications (`wakeups`:
//! LISTEN/NOTIFY so a node learns at once of a job due sooner than it waits for).
//!
//! What it must not do: read any clock for a job's times (every `Store` method takes `now`; the
//! `DatabaseClock` is what a node uses to produce that `now`), decide a transition differently
//! from the conformance suite's reference (`punctual_testkit::MemoryStore`), or leak a driver
//! type (`tokio_postgres::Error`, a pool error) in its public API: everything maps to
//! `StoreError`.
//!
//! Every write is one statement or one transaction, committed (so durable under PostgreSQL's
//! `synchronous_commit`) before the method returns.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use punctual_core::{
    ClaimRequest, ClaimedJob, Cursor, FailOutcome, InsertHints, Job, JobFilter, JobId, JobPage,
    JobState, LeaderTerm, LeaseToken, NewJob, NodeId, Queue, RescueOutcome, StateCount, Store,
    StoreError, Timestamp, ValidationError,
};
use tokio_postgres::NoTls;

mod claim;
mod clock;
mod completer;
mod error;
mod insert;
mod leader;
mod migrations;
mod reads;
mod rows;
mod transitions;
mod wakeups;

pub use clock::DatabaseClock;
pub use migrations::SCHEMA_VERSION;
pub use wakeups::Wakeups;

use crate::completer::Completer;
use crate::error::{pg, pool};

/// How `PgStore::connect_with` sets up its pool and schema.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Keep punctual's tables in this schema (created if missing), by setting `search_path` on
    /// every connection. `None` uses the connection's default `search_path` (usually `public`).
    /// A plain identifier: lowercase ASCII letters, digits and `_`, not starting with a digit,
    /// at most 63 bytes.
    pub schema: Option<String>,
    /// Most connections the pool opens (LISTEN takes one more of its own).
    pub pool_size: usize,
    /// How long opening one connection may take.
    pub connect_timeout: Duration,
    /// How long a store call may wait for a free connection before `Unavailable`.
    pub wait_timeout: Duration,
    /// Apply pending migrations at connect (true), or only check that the schema is current
    /// (false: a node that must not change the schema, after `punctual migrate` ran).
    pub apply_migrations: bool,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            schema: None,
            pool_size: 16,
            connect_timeout: Duration::from_secs(10),
            wait_timeout: Duration::from_secs(30),
            apply_migrations: true,
        }
    }
}

/// Reads the database's clock in microseconds since the Unix epoch. `clock_timestamp()`, not
/// `now()`: the latter is frozen at the start of the transaction.
const DATABASE_TIME: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint";

/// Longest schema name PostgreSQL keeps (NAMEDATALEN - 1).
const SCHEMA_BYTES_MAX: usize = 63;

fn check_schema_name(schema: &str) -> Result<(), StoreError> {
    if schema.is_empty() {
        return Err(ValidationError::Empty { field: "schema" }.into());
    }
    if schema.len() > SCHEMA_BYTES_MAX {
        return Err(ValidationError::TooLong {
            field: "schema",
            bytes: schema.len(),
            limit: SCHEMA_BYTES_MAX,
        }
        .into());
    }
    let plain = schema
        .bytes()
        .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if !plain {
        return Err(ValidationError::BadCharacters {
            field: "schema",
            value: schema.to_owned(),
        }
        .into());
    }
    Ok(())
}

/// The PostgreSQL store. Cheap to clone: clones share one pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    settings: Arc<Settings>,
}

/// What a store remembers besides its pool: enough to open a dedicated connection (LISTEN) and
/// to migrate.
struct Settings {
    config: tokio_postgres::Config,
    schema: Option<String>,
    /// Shared by all clones; its flusher tasks end when the last clone is dropped.
    completer: Completer,
}

impl PgStore {
    /// Connects with default options, applying pending migrations.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        PgStore::connect_with(url, PgOptions::default()).await
    }

    /// Connects to the database at `url` (`postgres://user@host:port/database`), builds the
    /// pool, and applies pending migrations (or checks the schema, see `PgOptions`).
    ///
    /// An unreachable server is `Unavailable`; a schema written by a newer punctual is `Corrupt`.
    pub async fn connect_with(url: &str, options: PgOptions) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|error| {
            // The core has no error for a bad setting; this is the closest that says "not now,
            // not like this". The driver's message does not echo a password.
            StoreError::Unavailable(format!("invalid PostgreSQL connection URL: {error}"))
        })?;
        if let Some(schema) = &options.schema {
            check_schema_name(schema)?;
            let mut startup = config.get_options().unwrap_or_default().to_owned();
            if !startup.is_empty() {
                startup.push(' ');
            }
            startup.push_str(&format!("-c search_path={schema}"));
            config.options(startup);
        }
        if config.get_application_name().is_none() {
            config.application_name("punctual");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        // A server that vanished without closing the socket (a cut cable, a paused VM) is
        // noticed within about half a minute instead of the kernel's two hours.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(15))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);

        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // A closed connection is dropped at checkout; a broken one fails its first
                // statement with `Unavailable` and is then found closed.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|error| {
                StoreError::Unavailable(format!("building the connection pool: {error}"))
            })?;
        let store = PgStore {
            pool: pool.clone(),
            settings: Arc::new(Settings {
                config,
                schema: options.schema.clone(),
                completer: Completer::start(pool.clone()),
            }),
        };
        let mut client = store.client().await?;
        migrations::run(&mut client, store.schema(), options.apply_migrations).await?;
        Ok(store)
    }

    /// Applies every pending migration; returns how many it applied (0 when current). Safe to
    /// run from several nodes at once. `connect` already does this unless told not to.
    pub async fn migrate(&self) -> Result<u32, StoreError> {
        let mut client = self.client().await?;
        migrations::run(&mut client, self.schema(), true).await
    }

    /// The schema this store keeps its tables in, when one was named.
    pub fn schema(&self) -> Option<&str> {
        self.settings.schema.as_deref()
    }

    /// Measures this node's offset to the database's clock and returns a clock that reads the
    /// database's time. See `DatabaseClock`.
    pub async fn database_clock(&self) -> Result<Arc<DatabaseClock>, StoreError> {
        DatabaseClock::measure(self.clone(), Arc::new(punctual_core::SystemClock)).await
    }

    /// Opens a dedicated connection that LISTENs for inserts and forwards each inserting
    /// statement's earliest `run_at`. See `Wakeups`.
    pub async fn listen(&self) -> Result<Wakeups, StoreError> {
        Wakeups::start(self.settings.config.clone()).await
    }

    /// A pooled connection.
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(pool)
    }

    /// Reads the database's clock once (one round trip). Nodes use a `DatabaseClock` instead;
    /// this is for checks and tests.
    pub async fn database_time(&self) -> Result<Timestamp, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(DATABASE_TIME).await.map_err(pg)?;
        let row = client.query_one(&statement, &[]).await.map_err(pg)?;
        Ok(Timestamp::from_micros(row.try_get(0).map_err(pg)?))
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.settings.schema)
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Store for PgStore {
    async fn insert(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<JobId>, StoreError> {
        insert::insert(self, jobs, now).await
    }

    async fn claim(
        &self,
        request: ClaimRequest,
        now: Timestamp,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        claim::claim(self, request, now).await
    }

    async fn extend_lease(
        &self,
        id: JobId,
        token: LeaseToken,
        expires_at: Timestamp,
        _now: Timestamp,
    ) -> Result<(), StoreError> {
        transitions::extend_lease(self, id, token, expires_at).await
    }

    async fn complete(
        &self,
        id: JobId,
        token: LeaseToken,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.settings.completer.complete(id, token, now).await
    }

    async fn fail(
        &self,
        id: JobId,
        token: LeaseToken,
        error: &str,
        outcome: FailOutcome,
        now: Timestamp,
    ) -> Result<JobState, StoreError> {
        transitions::fail(self, id, token, error, outcome, now).await
    }

    async fn release(
        &self,
        id: JobId,
        token: LeaseToken,
        _now: Timestamp,
    ) -> Result<(), StoreError> {
        transitions::release(self, id, token).await
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        transitions::cancel(self, id, now).await
    }

    async fn reschedule(
        &self,
        id: JobId,
        run_at: Timestamp,
        now: Timestamp,
    ) -> Result<Job, StoreError> {
        transitions::reschedule(self, id, run_at, now).await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        reads::get(self, id).await
    }

    async fn list(
        &self,
        filter: JobFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<JobPage, StoreError> {
        reads::list(self, filter, after, limit).await
    }

    async fn counts(&self) -> Result<Vec<StateCount>, StoreError> {
        reads::counts(self).await
    }

    async fn next_due(&self, queues: Option<&[Queue]>) -> Result<Option<Timestamp>, StoreError> {
        reads::next_due(self, queues).await
    }

    async fn next_lease_expiry(&self) -> Result<Option<Timestamp>, StoreError> {
        reads::next_lease_expiry(self).await
    }

    async fn lead(
        &self,
        node: &NodeId,
        term: Option<LeaderTerm>,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        leader::lead(self, node, term, lease, now).await
    }

    async fn resign(&self, node: &NodeId, term: LeaderTerm) -> Result<(), StoreError> {
        leader::resign(self, node, term).await
    }

    async fn rescue_expired(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<RescueOutcome>, StoreError> {
        transitions::rescue_expired(self, term, now, limit).await
    }

    async fn purge_finished(
        &self,
        term: LeaderTerm,
        finished_before: Timestamp,
        limit: usize,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        transitions::purge_finished(self, term, finished_before, limit, now).await
    }

    /// The insert notifications of every node sharing this database (see `Wakeups`).
    async fn listen(&self) -> Result<Option<Box<dyn InsertHints>>, StoreError> {
        Ok(Some(Box::new(PgStore::listen(self).await?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema_name("punctual").is_ok());
        assert!(check_schema_name("t_1764400000_42_7").is_ok());
        assert!(check_schema_name("").is_err());
        assert!(check_schema_name("1abc").is_err());
        assert!(check_schema_name("Public").is_err());
        assert!(check_schema_name("a b").is_err());
        assert!(check_schema_name("a\"; DROP TABLE x; --").is_err());
        assert!(check_schema_name(&"a".repeat(64)).is_err());
    }
}
