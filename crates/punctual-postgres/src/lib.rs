//! `PgStore`: punctual's PostgreSQL store, for cluster mode, where several punctual nodes share
//! one database. It is the only place in punctual where Postgres SQL lives.
//!
//! What it owns: a connection pool (deadpool over tokio-postgres, TLS by rustls with libpq's `sslmode`: `tls`), the versioned schema
//! (`migrations`, applied at connect under an advisory lock so nodes starting together are safe),
//! every statement that reads or writes jobs (`insert`, `claim`, `transitions`, `completer`,
//! `reads`), idempotency keys (`idempotency`) and API tokens (`tokens`), leadership (`leader`: the elected node's term fences rescue and purge), the
//! database's clock (`clock`: one clock for the cluster), insert notifications (`wakeups`:
//! LISTEN/NOTIFY so a node learns at once of a job due sooner than it waits for), and an
//! operator's housekeeping of the store's own schema (`housekeeping`: the jobs table's health,
//! dropping the schema).
//!
//! What it must not do: read any clock for a job's times (every `Store` method takes `now`; the
//! `DatabaseClock` is what a node uses to produce that `now`), decide a transition differently
//! from the conformance suite's reference (`punctual_testkit::MemoryStore`), or leak a driver
//! type (`tokio_postgres::Error`, a pool error) in its public API: everything maps to
//! `StoreError`.
//!
//! Every write is one statement or one transaction, committed (so durable under PostgreSQL's
//! `synchronous_commit`) before the method returns; except `insert_in` and `complete_in`, which
//! write inside the caller's transaction and are committed with it.
//!
//! # What runs how often: at least once, fenced; once for effects in the job's transaction
//!
//! A job's handler runs **at least once**. A node can die, pause or lose the database after its
//! handler did its work and before the completion was stored; the job's lease then expires, the
//! leader's rescuer makes it pending again, and it runs again (on any node) under a new, larger
//! lease token. Every write about an attempt carries its lease token, and a stale one is refused
//! with `LeaseLost` and changes nothing, so a late holder cannot overwrite a newer attempt's
//! outcome: execution is at least once, and the record of it is fenced. (A holder whose lease
//! expired but was not yet rescued may still complete: nobody else has run the job.)
//!
//! Effects in this same database happen **exactly once** when they share the job's transaction:
//! open a transaction of your own (`PgStore::client`, or any connection to the database), do
//! your writes, and complete the job in it with `PgStore::complete_in(&transaction, job.id,
//! job.lease_token, now)`. It is fenced like `complete`: if the lease was lost (the job was
//! rescued and may be running elsewhere) it returns `LeaseLost`; roll back, and your writes
//! never happened. If it succeeds, your writes and the job's success commit together or not at
//! all, and the job cannot be rescued while your transaction is open (its row is locked until
//! the transaction ends; keep it short, since the job's heartbeat waits too). Then return `Ok`
//! from the handler: the engine's own `complete` with the same token is a no-op, because
//! `complete` is idempotent for the holder that completed. If your transaction rolls back for
//! another reason, return an error from the handler instead, so the job is retried rather than
//! recorded as done without your writes. Likewise `PgStore::insert_in` schedules jobs inside
//! your transaction: they exist if and only if it commits, and nodes are woken at the commit.
//!
//! ```no_run
//! # use punctual_core::{JobId, LeaseToken, Timestamp};
//! # async fn handler(store: punctual_postgres::PgStore, id: JobId, token: LeaseToken, now: Timestamp)
//! #     -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let mut client = store.client().await?;
//! let transaction = client.transaction().await?;
//! transaction
//!     .execute("UPDATE accounts SET balance = balance - 10 WHERE id = 1", &[])
//!     .await?;
//! // On `LeaseLost`, `?` drops the transaction, which rolls it back: the update never happened.
//! store.complete_in(&transaction, id, token, now).await?;
//! transaction.commit().await?;
//! # Ok(()) }
//! ```
//!
//! Effects anywhere else (an email, an HTTP call, another database) cannot share the
//! transaction, and may happen more than once. For those, `(job id, attempt, lease token)` is the
//! idempotency key of one attempt (`JobContext` carries all three): hand it to the other system
//! so it recognises a repeat. The job id alone names the job across its attempts (deduplicate on
//! it when the effect must happen once per job); the lease token orders the attempts (a larger
//! token is a later attempt, so a late write from an earlier one can be ignored).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use punctual_core::{
    ApiToken, ClaimRequest, ClaimedJob, Cursor, FailOutcome, IdempotencyRecord, Idempotent,
    InsertHints, Job, JobFilter, JobId, JobPage, JobState, Kind, LeaderTerm, LeaseToken, NewJob,
    NodeId, Queue, QueueStats, RescueOutcome, StateCount, Store, StoreError, Timestamp, TokenId,
    ValidationError,
};

mod bounded;
mod claim;
mod clock;
mod completer;
mod error;
mod housekeeping;
mod idempotency;
mod in_transaction;
mod insert;
mod leader;
mod migrations;
mod reads;
mod rows;
mod schedules;
mod tls;
mod tokens;
mod transitions;
mod wakeups;

/// The driver and pool this crate uses, for `insert_in`, `complete_in` and `client`: use these
/// re-exports so your transaction's types are the very ones the store expects.
pub use deadpool_postgres;
pub use tokio_postgres;

pub use clock::DatabaseClock;
pub use housekeeping::TableHealth;
pub use migrations::SCHEMA_VERSION;
pub use tls::SslMode;
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
    /// How long one statement may wait for a lock before it fails with `Unavailable`, which
    /// callers retry (PostgreSQL's `lock_timeout`, set on every connection the store opens).
    /// A node paused or cut off inside a transaction keeps its locks (the leader row `FOR
    /// SHARE` during a leader duty, jobs `FOR UPDATE` during a claim) until its session ends;
    /// unbounded, every other node's `lead` waits behind it: no leader is elected, nothing is
    /// rescued, and `Scheduler::stop` hangs on the election task. `None` leaves the server's
    /// own setting (by default no limit); zero means no limit. Default 5 s.
    pub lock_timeout: Option<Duration>,
    /// How long a session may sit idle inside an open transaction before PostgreSQL ends it,
    /// rolling the transaction back and releasing its locks (`idle_in_transaction_session_
    /// timeout`, set on every connection the store opens). This is what frees the locks of a
    /// paused or cut-off node; `lock_timeout` only bounds how long the others wait meanwhile.
    /// `None` leaves the server's own setting (by default no limit); zero means no limit.
    /// Default 30 s.
    ///
    /// Both settings also hold on the connections `PgStore::client` hands out; see there.
    pub idle_in_transaction_timeout: Option<Duration>,
    /// Longest a store call may take, from waiting for a connection to the last row, before it
    /// fails with `Unavailable` (a timed-out write may or may not have been applied, as with
    /// any lost connection). Also the server's `statement_timeout` on every connection the
    /// store opens, so a statement the server runs too long ends there as well. A network that
    /// silently stops delivering (no reset) would otherwise hang a call until the kernel gives
    /// up on the connection. Migrations are not bounded by it. Default 15 s.
    pub call_timeout: Duration,
    /// How long data sent on a connection may stay unacknowledged before the kernel closes it
    /// (`TCP_USER_TIMEOUT`, Linux), so a connection to a vanished server is found closed and
    /// replaced. `None` leaves the kernel's default (about 15 minutes). Default 20 s.
    pub tcp_user_timeout: Option<Duration>,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            schema: None,
            pool_size: 16,
            connect_timeout: Duration::from_secs(10),
            wait_timeout: Duration::from_secs(30),
            apply_migrations: true,
            lock_timeout: Some(Duration::from_secs(5)),
            idle_in_transaction_timeout: Some(Duration::from_secs(30)),
            call_timeout: Duration::from_secs(15),
            tcp_user_timeout: Some(Duration::from_secs(20)),
        }
    }
}

/// The `-c name=value` startup options for the session settings `options` asks for.
fn session_settings(options: &PgOptions) -> Vec<String> {
    // PostgreSQL takes these in whole milliseconds, at most `i32::MAX`; a sub-millisecond
    // duration rounds up, since 0 would mean "no limit".
    let milliseconds =
        |duration: Duration| duration.as_micros().div_ceil(1_000).min(i32::MAX as u128);
    let mut settings = Vec::new();
    if let Some(timeout) = options.lock_timeout {
        settings.push(format!("-c lock_timeout={}", milliseconds(timeout)));
    }
    if let Some(timeout) = options.idle_in_transaction_timeout {
        settings.push(format!(
            "-c idle_in_transaction_session_timeout={}",
            milliseconds(timeout)
        ));
    }
    if !options.call_timeout.is_zero() {
        settings.push(format!(
            "-c statement_timeout={}",
            milliseconds(options.call_timeout)
        ));
    }
    settings
}

/// What in the server's settings, as this session sees them, could lose jobs the store has
/// acknowledged: `fsync` or `synchronous_commit` off. Empty when both are safe.
pub async fn durability_warnings(
    client: &tokio_postgres::Client,
) -> Result<Vec<String>, StoreError> {
    let row = client
        .query_one(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit')",
            &[],
        )
        .await
        .map_err(pg)?;
    let (fsync, synchronous_commit): (String, String) = (row.get(0), row.get(1));
    let mut warnings = Vec::new();
    if fsync == "off" {
        warnings.push(
            "PostgreSQL runs with fsync=off: a crash of the database's machine can lose or \
             corrupt jobs punctual acknowledged as stored"
                .to_owned(),
        );
    }
    if synchronous_commit == "off" {
        warnings.push(
            "PostgreSQL runs with synchronous_commit=off: a crash of the database can lose the \
             last jobs punctual acknowledged as stored (up to three times wal_writer_delay); \
             set synchronous_commit=on for punctual's database or role"
                .to_owned(),
        );
    }
    Ok(warnings)
}

/// The TLS version `client`'s connection negotiated (`TLSv1.3`), or `None` when it is not
/// encrypted, as the server sees it (`pg_stat_ssl`).
pub async fn tls_version(client: &tokio_postgres::Client) -> Result<Option<String>, StoreError> {
    let row = client
        .query_opt(
            "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl",
            &[],
        )
        .await
        .map_err(pg)?;
    Ok(row.map(|row| row.get(0)))
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
    /// `sslmode` and the rustls set-up every connection uses, pooled or LISTEN.
    tls: tls::Tls,
    schema: Option<String>,
    /// The jobs table, qualified with `schema` when one is named, for statements run on the
    /// caller's connections (whose `search_path` may differ).
    jobs_table: String,
    /// Shared by all clones; its flusher tasks end when the last clone is dropped.
    completer: Completer,
    /// `PgOptions::call_timeout`.
    call_timeout: Duration,
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
        let (mut config, tls) = tls::configure(url)?;
        // The store's session settings first, so that the same setting in the URL's own
        // `options` (applied after them) wins; the schema's `search_path` last.
        let mut startup = session_settings(&options);
        let from_url = config.get_options().unwrap_or_default().trim().to_owned();
        if !from_url.is_empty() {
            startup.push(from_url);
        }
        if let Some(schema) = &options.schema {
            check_schema_name(schema)?;
            startup.push(format!("-c search_path={schema}"));
        }
        if !startup.is_empty() {
            config.options(startup.join(" "));
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
        if let Some(timeout) = options.tcp_user_timeout {
            config.tcp_user_timeout(timeout);
        }

        let manager = Manager::from_config(
            config.clone(),
            tls.connector.clone(),
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
                tls,
                schema: options.schema.clone(),
                jobs_table: match &options.schema {
                    // A plain identifier, checked above; quoted anyway.
                    Some(schema) => format!("\"{schema}\".punctual_jobs"),
                    None => "punctual_jobs".to_owned(),
                },
                completer: Completer::start(pool.clone(), options.call_timeout),
                call_timeout: options.call_timeout,
            }),
        };
        let mut client = store.client().await?;
        migrations::run(&mut client, store.schema(), options.apply_migrations).await?;
        for warning in durability_warnings(&client).await? {
            tracing::warn!("{warning}");
        }
        let encrypted = tls_version(&client).await?;
        let remote = store
            .settings
            .config
            .get_hosts()
            .iter()
            .any(|host| match host {
                tokio_postgres::config::Host::Tcp(name) => {
                    !matches!(name.as_str(), "localhost" | "127.0.0.1" | "::1")
                }
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(_) => false,
            });
        match &encrypted {
            None if remote => tracing::warn!(
                "the connection to PostgreSQL is not encrypted (sslmode={}): jobs, payloads and \
                 the password cross the network in plaintext; set sslmode=verify-full",
                store.settings.tls.mode.as_str()
            ),
            None => tracing::debug!("connected to PostgreSQL without TLS"),
            Some(version) => tracing::debug!(
                "connected to PostgreSQL over {version} (sslmode={})",
                store.settings.tls.mode.as_str()
            ),
        }
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
        Wakeups::start(
            self.settings.config.clone(),
            self.settings.tls.connector.clone(),
        )
        .await
    }

    /// A connection from the store's pool (its `search_path` set to the store's schema), for your
    /// own statements and transactions, such as those `insert_in` and `complete_in` join. It
    /// goes back to the pool when dropped. The pool is sized for the store (`PgOptions::
    /// pool_size`): hold it briefly, or connect your own client with the re-exported
    /// `tokio_postgres` for long work. `Unavailable` when no connection frees up within
    /// `PgOptions::wait_timeout`.
    ///
    /// The connection carries the store's `PgOptions::lock_timeout` and `PgOptions::
    /// idle_in_transaction_timeout`, deliberately: a transaction of yours takes locks the
    /// store's nodes wait for (`complete_in` locks the job's row), and if your process pauses
    /// inside it, those bounds are what free them. A transaction of yours that idles between
    /// statements longer than the idle timeout (waiting on a slow HTTP call, say) is rolled
    /// back and its connection closed, and its next statement fails. For a transaction that
    /// legitimately waits or idles longer, lift the bounds for it alone with `SET LOCAL
    /// lock_timeout = 0` and `SET LOCAL idle_in_transaction_session_timeout = 0` as its first
    /// statements (they end with the transaction, so the connection goes back to the pool as
    /// it came), or connect your own client.
    pub async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(pool)
    }

    /// Runs `call` (the store operation `operation`) within `PgOptions::call_timeout`; see
    /// `bounded::within`.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        bounded::within(&self.pool, self.settings.call_timeout, operation, call).await
    }

    /// Stores `jobs` (validated `NewJob`s, as `Store::insert` takes them) inside the caller's
    /// `transaction`: they exist if and only if it commits, and listening nodes are woken at
    /// the commit. All or none: a duplicate id is `Duplicate`, and then nothing of the batch is
    /// stored and the caller's transaction is still usable. A transaction from `client()` (a
    /// `deadpool_postgres::Transaction`) is passed as `&transaction`, by deref.
    pub async fn insert_in(
        &self,
        transaction: &tokio_postgres::Transaction<'_>,
        jobs: Vec<NewJob>,
        now: Timestamp,
    ) -> Result<Vec<JobId>, StoreError> {
        in_transaction::insert_in(transaction, &self.settings.jobs_table, jobs, now).await
    }

    /// Completes the attempt held under `token` inside the caller's `transaction`, so that the
    /// handler's own writes in it and the job's success commit together. Fenced and idempotent
    /// like `Store::complete`: `LeaseLost` means the job's lease was lost (it may run, or have
    /// run, elsewhere), and the caller must roll back. Until the transaction ends, the job's row
    /// stays locked: the rescuer skips it, and its heartbeat waits. See the crate's
    /// documentation for the whole contract.
    pub async fn complete_in(
        &self,
        transaction: &tokio_postgres::Transaction<'_>,
        id: JobId,
        token: LeaseToken,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        in_transaction::complete_in(transaction, &self.settings.jobs_table, id, token, now).await
    }

    /// The store's own jobs table as PostgreSQL's statistics see it: dead row versions, live
    /// rows, and bytes on disk (see `TableHealth`; the row counts lag writes by about a second).
    /// `Corrupt` when the table does not exist.
    pub async fn table_health(&self) -> Result<TableHealth, StoreError> {
        housekeeping::table_health(self).await
    }

    /// Drops the store's schema (`PgOptions::schema`) with everything in it: jobs, leadership,
    /// migrations. Done when the schema is already gone. Refused, changing nothing, when the
    /// store was opened without a schema or on `public` or a system schema, which hold more than
    /// punctual's tables: `Unavailable` with the reason. Takes the store, since it is unusable
    /// afterwards; so are its clones, and any other node on the schema, whose calls then fail.
    /// The drop waits for the locks of statements in flight on the schema's tables.
    pub async fn drop_schema(self) -> Result<(), StoreError> {
        housekeeping::drop_schema(self).await
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
        self.bounded("insert", insert::insert(self, jobs, now))
            .await
    }

    async fn claim(
        &self,
        request: ClaimRequest,
        now: Timestamp,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        self.bounded("claim", claim::claim(self, request, now))
            .await
    }

    async fn extend_lease(
        &self,
        id: JobId,
        token: LeaseToken,
        expires_at: Timestamp,
        _now: Timestamp,
    ) -> Result<(), StoreError> {
        self.bounded(
            "extend_lease",
            transitions::extend_lease(self, id, token, expires_at),
        )
        .await
    }

    async fn complete(
        &self,
        id: JobId,
        token: LeaseToken,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.bounded("complete", self.settings.completer.complete(id, token, now))
            .await
    }

    async fn fail(
        &self,
        id: JobId,
        token: LeaseToken,
        error: &str,
        outcome: FailOutcome,
        now: Timestamp,
    ) -> Result<JobState, StoreError> {
        self.bounded(
            "fail",
            transitions::fail(self, id, token, error, outcome, now),
        )
        .await
    }

    async fn release(
        &self,
        id: JobId,
        token: LeaseToken,
        _now: Timestamp,
    ) -> Result<(), StoreError> {
        self.bounded("release", transitions::release(self, id, token))
            .await
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        self.bounded("cancel", transitions::cancel(self, id, now))
            .await
    }

    async fn reschedule(
        &self,
        id: JobId,
        run_at: Timestamp,
        now: Timestamp,
    ) -> Result<Job, StoreError> {
        self.bounded("reschedule", transitions::reschedule(self, id, run_at, now))
            .await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.bounded("get", reads::get(self, id)).await
    }

    async fn list(
        &self,
        filter: JobFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<JobPage, StoreError> {
        self.bounded("list", reads::list(self, filter, after, limit))
            .await
    }

    async fn counts(&self) -> Result<Vec<StateCount>, StoreError> {
        self.bounded("counts", reads::counts(self)).await
    }

    async fn queue_stats(&self, now: Timestamp) -> Result<Vec<QueueStats>, StoreError> {
        self.bounded("queue_stats", reads::queue_stats(self, now))
            .await
    }

    async fn next_due(
        &self,
        queues: Option<&[Queue]>,
        kinds: Option<&[Kind]>,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.bounded("next_due", reads::next_due(self, queues, kinds))
            .await
    }

    async fn next_lease_expiry(&self) -> Result<Option<Timestamp>, StoreError> {
        self.bounded("next_lease_expiry", reads::next_lease_expiry(self))
            .await
    }

    async fn lead(
        &self,
        node: &NodeId,
        term: Option<LeaderTerm>,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        self.bounded("lead", leader::lead(self, node, term, lease, now))
            .await
    }

    async fn resign(&self, node: &NodeId, term: LeaderTerm) -> Result<(), StoreError> {
        self.bounded("resign", leader::resign(self, node, term))
            .await
    }

    async fn rescue_expired(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<RescueOutcome>, StoreError> {
        self.bounded(
            "rescue_expired",
            transitions::rescue_expired(self, term, now, limit),
        )
        .await
    }

    async fn purge_finished(
        &self,
        term: LeaderTerm,
        finished_before: Timestamp,
        limit: usize,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        self.bounded(
            "purge_finished",
            transitions::purge_finished(self, term, finished_before, limit, now),
        )
        .await
    }

    async fn insert_idempotent(
        &self,
        jobs: Vec<NewJob>,
        record: IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Idempotent, StoreError> {
        self.bounded(
            "insert_idempotent",
            idempotency::insert_idempotent(self, jobs, record, now),
        )
        .await
    }

    async fn purge_idempotency(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError> {
        self.bounded(
            "purge_idempotency",
            idempotency::purge_idempotency(self, term, now, limit),
        )
        .await
    }

    async fn insert_token(&self, token: ApiToken) -> Result<(), StoreError> {
        self.bounded("insert_token", tokens::insert_token(self, token))
            .await
    }

    async fn get_token(&self, id: &TokenId) -> Result<Option<ApiToken>, StoreError> {
        self.bounded("get_token", tokens::get_token(self, id)).await
    }

    async fn list_tokens(
        &self,
        after: Option<&TokenId>,
        limit: usize,
    ) -> Result<Vec<ApiToken>, StoreError> {
        self.bounded("list_tokens", tokens::list_tokens(self, after, limit))
            .await
    }

    async fn revoke_token(&self, id: &TokenId, now: Timestamp) -> Result<ApiToken, StoreError> {
        self.bounded("revoke_token", tokens::revoke_token(self, id, now))
            .await
    }

    async fn write_schedules(
        &self,
        fence: Option<LeaderTerm>,
        writes: Vec<punctual_core::ScheduleWrite>,
        now: Timestamp,
    ) -> Result<Vec<punctual_core::WriteOutcome>, StoreError> {
        self.bounded(
            "write_schedules",
            schedules::write(self, fence, writes, now),
        )
        .await
    }

    async fn get_schedule(
        &self,
        key: &punctual_core::ScheduleKey,
    ) -> Result<Option<punctual_core::StoredSchedule>, StoreError> {
        self.bounded("get_schedule", schedules::get(self, key))
            .await
    }

    async fn list_schedules(
        &self,
        after: Option<&punctual_core::ScheduleName>,
        limit: usize,
    ) -> Result<Vec<punctual_core::StoredSchedule>, StoreError> {
        self.bounded("list_schedules", schedules::list(self, after, limit))
            .await
    }

    async fn delete_schedule(&self, id: punctual_core::ScheduleId) -> Result<bool, StoreError> {
        self.bounded("delete_schedule", schedules::delete(self, id))
            .await
    }

    async fn due_schedules(
        &self,
        check_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<punctual_core::DueSchedule>, StoreError> {
        self.bounded("due_schedules", schedules::due(self, check_by, limit))
            .await
    }

    async fn list_occurrences(
        &self,
        id: punctual_core::ScheduleId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<punctual_core::OccurrenceEntry>, StoreError> {
        self.bounded(
            "list_occurrences",
            schedules::occurrences(self, id, before, limit),
        )
        .await
    }

    async fn purge_occurrences(
        &self,
        term: LeaderTerm,
        recorded_before: Timestamp,
        limit: usize,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        self.bounded(
            "purge_occurrences",
            schedules::purge(self, term, recorded_before, limit, now),
        )
        .await
    }

    /// The insert notifications of every node sharing this database (see `Wakeups`).
    async fn listen(&self) -> Result<Option<Box<dyn InsertHints>>, StoreError> {
        let wakeups = self.bounded("listen", PgStore::listen(self)).await?;
        Ok(Some(Box::new(wakeups)))
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

    #[test]
    fn session_settings_are_whole_milliseconds_and_optional() {
        assert_eq!(
            session_settings(&PgOptions::default()),
            [
                "-c lock_timeout=5000",
                "-c idle_in_transaction_session_timeout=30000",
                "-c statement_timeout=15000"
            ]
        );
        let options = PgOptions {
            // Rounded up, never to 0 (which would mean no limit); capped at PostgreSQL's
            // largest value.
            lock_timeout: Some(Duration::from_micros(1)),
            idle_in_transaction_timeout: Some(Duration::from_secs(u64::MAX)),
            ..PgOptions::default()
        };
        assert_eq!(
            session_settings(&options),
            [
                "-c lock_timeout=1",
                "-c idle_in_transaction_session_timeout=2147483647",
                "-c statement_timeout=15000"
            ]
        );
        let options = PgOptions {
            lock_timeout: None,
            idle_in_transaction_timeout: None,
            call_timeout: Duration::ZERO,
            ..PgOptions::default()
        };
        assert!(session_settings(&options).is_empty());
    }
}
