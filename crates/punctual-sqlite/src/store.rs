//! `SqliteStore`: opening the file, and the `Store` trait on top of the writer and the readers.
//!
//! Owns the connection settings (WAL, `synchronous=FULL`, timeouts), the order of opening
//! (migrate, then start readers and the writer), and the store's lifetime: dropping it lets the
//! writer finish every queued command, then joins its thread.
//!
//! Must not run SQL itself beyond the connection settings: writes are commands for `writer`,
//! reads are functions in `reads`.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use punctual_core::{
    ApiToken, ClaimRequest, ClaimedJob, Cursor, FailOutcome, IdempotencyRecord, Idempotent, Job,
    JobFilter, JobId, JobPage, JobState, Kind, LeaderTerm, LeaseToken, NewJob, NodeId, Queue,
    QueueStats, RescueOutcome, StateCount, Store, StoreError, Timestamp, TokenId, ValidationError,
    check_kinds, limits, truncate_error,
};
use punctual_core::{
    DueSchedule, OccurrenceEntry, ScheduleId, ScheduleKey, ScheduleName, ScheduleWrite,
    StoredSchedule, WriteOutcome, check_schedule_writes,
};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Failure, from_sql};
use crate::migrations;
use crate::reads::{self, BUSY_TIMEOUT, ReadPool};
use crate::reserve::Reserve;
use crate::schedules;
use crate::writer::{self, Command, Reply};

/// Tuning for `SqliteStore::open_with`. Every value is a bound, and each is at least 1.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// Read-only connections for `get`, `list`, `counts`, `queue_stats`, `next_due`,
    /// `next_lease_expiry` and the token reads; more lets more reads run at once beside the
    /// writer.
    pub read_connections: usize,
    /// Most commands committed in one transaction (one fsync). Larger batches amortise the
    /// fsync further but make the first command of a batch wait for the last.
    pub commit_batch_max: usize,
    /// Most write commands queued for the writer; a caller beyond it waits for room, which is
    /// the store's backpressure.
    pub channel_capacity: usize,
    /// Bytes held back in a file beside the database (`<database>-reserve`) for a full disk:
    /// when a write fails for want of space, the file is deleted and its space keeps claims,
    /// completions, retries and rescues going while new jobs are refused; once the file can be
    /// written again (tried at most once a second), new jobs are taken again. 0: none, and a
    /// full disk stops every write. Default 8 MiB.
    pub disk_reserve: u64,
}

impl Default for SqliteOptions {
    fn default() -> SqliteOptions {
        SqliteOptions {
            read_connections: 4,
            commit_batch_max: 1_024,
            channel_capacity: 4_096,
            disk_reserve: 8 * 1024 * 1024,
        }
    }
}

/// punctual's embedded store: one SQLite file, written by one thread with group commit.
///
/// Every write is durable when its method returns: it was committed with `synchronous=FULL`.
pub struct SqliteStore {
    path: PathBuf,
    /// `None` only while dropping (it must be dropped before the writer is joined).
    commands: Option<mpsc::Sender<Command>>,
    writer: Option<JoinHandle<()>>,
    readers: Arc<ReadPool>,
    /// Set by the writer thread if it panics.
    fatal: Arc<Mutex<Option<String>>>,
}

impl SqliteStore {
    /// Opens (or creates) the store at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, SqliteOptions::default())
    }

    /// Opens (or creates) the store at `path`: applies pending migrations, then starts the
    /// readers and the writer thread. A file written by a newer punctual is refused with
    /// `Corrupt`.
    pub fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_synchronous(path.as_ref(), options, "FULL")
    }

    /// `open_with`, but with `synchronous=OFF`: nothing is ever fsynced, so a power loss can
    /// lose acknowledged jobs. Only the power-loss test's negative control uses it, to show
    /// that the test sees such a loss.
    #[cfg(feature = "fault-injection")]
    pub fn open_unsynced(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_synchronous(path.as_ref(), options, "OFF")
    }

    fn open_synchronous(
        path: &Path,
        options: SqliteOptions,
        synchronous: &str,
    ) -> Result<SqliteStore, StoreError> {
        let path = path.to_path_buf();
        let mut connection = open_write_connection(&path, synchronous)?;
        migrations::apply(&mut connection)?;
        // Readers open after the migration, so they never see a file without its schema.
        let readers = Arc::new(ReadPool::open(&path, options.read_connections)?);
        let (commands, receiver) = mpsc::channel(options.channel_capacity.max(1));
        let batch_max = options.commit_batch_max;
        let reserve = Reserve::open(&path, options.disk_reserve);
        let fatal = Arc::new(Mutex::new(None));
        let recorded = fatal.clone();
        let writer = std::thread::Builder::new()
            .name("punctual-sqlite-writer".to_owned())
            .spawn(move || {
                // The writer never panics by design; if it does anyway, the store can no
                // longer write and says so (`fatal_error`) instead of only refusing calls.
                let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    writer::run(connection, receiver, batch_max, reserve);
                }));
                if let Err(panic) = run {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|text| (*text).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic without a message".to_owned());
                    *recorded
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                        Some(format!("the SQLite writer thread panicked: {message}"));
                }
            })
            .map_err(|error| {
                StoreError::Unavailable(format!("could not start the writer thread: {error}"))
            })?;
        Ok(SqliteStore {
            path,
            commands: Some(commands),
            writer: Some(writer),
            readers,
            fatal,
        })
    }

    /// Makes the writer thread panic, as a bug in it would: every later write is refused and
    /// `fatal_error` reports it. For tests of what a node does then.
    #[cfg(feature = "fault-injection")]
    pub async fn inject_writer_panic(&self) {
        let _ = self.write(|reply| Command::Crash { reply }).await;
        // The reply is dropped as the thread unwinds; the thread ends once it has recorded why
        // (within moments; the bound only keeps a broken test from waiting forever).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self
            .writer
            .as_ref()
            .is_none_or(|writer| writer.is_finished())
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs SQLite's `PRAGMA integrity_check` on the file: `Ok` when it is sound, `Corrupt` with
    /// SQLite's findings otherwise. It reads the whole file and blocks while it does; from async
    /// code, call it inside `spawn_blocking`.
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(from_sql)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(from_sql)?;
        reads::integrity_check_on(&connection).map_err(StoreError::from)
    }

    /// Sends a command to the writer and waits for its answer, which comes after the commit.
    /// A command once sent runs even if the caller stops waiting: a claim abandoned that way
    /// still takes its jobs, and their leases expire into the rescuer's hands.
    async fn write<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let stopped = || StoreError::Unavailable("the store's writer has stopped".to_owned());
        let commands = self.commands.as_ref().ok_or_else(stopped)?;
        let (reply, answer) = oneshot::channel();
        commands.send(command(reply)).await.map_err(|_| stopped())?;
        // A dropped reply sender means the writer died (panicked) with the command in hand.
        answer.await.map_err(|_| {
            StoreError::Unavailable("the store's writer stopped before answering".to_owned())
        })?
    }

    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut reads::Reader) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.readers.run(read).await
    }
}

impl Drop for SqliteStore {
    /// Closes the command channel, lets the writer commit and answer what is queued, and joins
    /// it, so that the file is closed (and can be reopened) once the store is gone.
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(writer) = self.writer.take() {
            // An `Err` means the writer panicked; its callers already got `Unavailable`, and a
            // destructor has nobody to report to.
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The writer's connection. The settings, and why:
/// - `journal_mode=WAL`: readers run beside the writer, and a commit appends to one file.
/// - `synchronous=FULL`: a commit returns after the WAL is fsynced. With `NORMAL`, WAL mode
///   syncs only at checkpoints, so a power loss (not a mere crash) can lose the last commits,
///   and a job acknowledged as stored must survive both. Group commit is what pays for it.
/// - `busy_timeout`: another process holding the lock (a second store on the same file) makes
///   the writer wait a little before reporting `Unavailable`, rather than failing at once.
/// - `temp_store=MEMORY`: each command runs in a savepoint, whose undo journal (the "statement
///   journal") would otherwise be a temporary file written on every command; profiles showed a
///   fifth of the writer's time in those writes.
/// - `journal_size_limit`: after a checkpoint the WAL file shrinks back to this size.
fn open_write_connection(path: &Path, synchronous: &str) -> Result<Connection, StoreError> {
    let connection = Connection::open(path).map_err(from_sql)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(from_sql)?;
    let mode: String = connection
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(from_sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "{} cannot use WAL mode (SQLite kept journal mode {mode:?})",
            path.display()
        )));
    }
    connection
        .pragma_update(None, "synchronous", synchronous)
        .map_err(from_sql)?;
    connection
        .pragma_update(None, "temp_store", "MEMORY")
        .map_err(from_sql)?;
    connection
        .pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(from_sql)?;
    // 32 MiB of page cache (negative means KiB): the hot ends of the indexes stay in memory
    // even with a million jobs stored, within the backlog workload's memory budget.
    connection
        .pragma_update(None, "cache_size", -32 * 1024)
        .map_err(from_sql)?;
    // `rarray()`, with which a claim updates its batch in one statement.
    rusqlite::vtab::array::load_module(&connection).map_err(from_sql)?;
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

/// Refuses a batch `insert` would refuse before it reaches the writer: too many jobs, or one
/// that fails `NewJob::validate` at `now` (a struct literal may skip `NewJob::new`; one invalid
/// job refuses the whole batch). Checked here, on the caller's thread, to keep the one writer
/// thread for writing.
fn check_batch(jobs: &[NewJob], now: Timestamp) -> Result<(), StoreError> {
    if jobs.len() > limits::INSERT_BATCH_MAX {
        return Err(StoreError::Invalid(ValidationError::TooLong {
            field: "batch",
            bytes: jobs.len(),
            limit: limits::INSERT_BATCH_MAX,
        }));
    }
    for job in jobs {
        job.validate(now)?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn fatal_error(&self) -> Option<String> {
        let recorded = self
            .fatal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        recorded.or_else(|| {
            // Only dropping the store ends the writer; finished before that, it died.
            self.writer
                .as_ref()
                .filter(|writer| writer.is_finished())
                .map(|_| "the SQLite writer thread has stopped".to_owned())
        })
    }

    async fn insert(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<JobId>, StoreError> {
        check_batch(&jobs, now)?;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|reply| Command::Insert { jobs, now, reply })
            .await
    }

    async fn claim(
        &self,
        request: ClaimRequest,
        now: Timestamp,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        check_kinds(request.kinds.as_deref())?;
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        self.write(|reply| Command::Claim {
            request,
            now,
            reply,
        })
        .await
    }

    async fn extend_lease(
        &self,
        id: JobId,
        token: LeaseToken,
        expires_at: Timestamp,
        _now: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(|reply| Command::ExtendLease {
            id,
            token,
            expires_at,
            reply,
        })
        .await
    }

    async fn complete(
        &self,
        id: JobId,
        token: LeaseToken,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(|reply| Command::Complete {
            id,
            token,
            now,
            reply,
        })
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
        let error = truncate_error(error);
        self.write(|reply| Command::Fail {
            id,
            token,
            error,
            outcome,
            now,
            reply,
        })
        .await
    }

    async fn release(
        &self,
        id: JobId,
        token: LeaseToken,
        _now: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(|reply| Command::Release { id, token, reply })
            .await
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        self.write(|reply| Command::Cancel { id, now, reply }).await
    }

    async fn reschedule(
        &self,
        id: JobId,
        run_at: Timestamp,
        now: Timestamp,
    ) -> Result<Job, StoreError> {
        self.write(|reply| Command::Reschedule {
            id,
            run_at,
            now,
            reply,
        })
        .await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.read(move |reader| reads::get(reader, id)).await
    }

    async fn list(
        &self,
        filter: JobFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<JobPage, StoreError> {
        if limit == 0 {
            return Ok(JobPage {
                jobs: Vec::new(),
                next: None,
            });
        }
        self.read(move |reader| reads::list(reader, &filter, after, limit))
            .await
    }

    async fn counts(&self) -> Result<Vec<StateCount>, StoreError> {
        self.read(reads::counts).await
    }

    async fn queue_stats(&self, now: Timestamp) -> Result<Vec<QueueStats>, StoreError> {
        self.read(move |reader| reads::queue_stats(reader, now))
            .await
    }

    async fn next_due(
        &self,
        queues: Option<&[Queue]>,
        kinds: Option<&[Kind]>,
    ) -> Result<Option<Timestamp>, StoreError> {
        check_kinds(kinds)?;
        let queues: Option<Vec<Queue>> = queues.map(<[Queue]>::to_vec);
        let kinds: Option<Vec<Kind>> = kinds.map(<[Kind]>::to_vec);
        self.read(move |reader| reads::next_due(reader, queues.as_deref(), kinds.as_deref()))
            .await
    }

    async fn next_lease_expiry(&self) -> Result<Option<Timestamp>, StoreError> {
        self.read(reads::next_lease_expiry).await
    }

    async fn lead(
        &self,
        node: &NodeId,
        term: Option<LeaderTerm>,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        let node = node.clone();
        self.write(|reply| Command::Lead {
            node,
            term,
            lease,
            now,
            reply,
        })
        .await
    }

    async fn resign(&self, node: &NodeId, term: LeaderTerm) -> Result<(), StoreError> {
        let node = node.clone();
        self.write(|reply| Command::Resign { node, term, reply })
            .await
    }

    async fn rescue_expired(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<RescueOutcome>, StoreError> {
        // Even with a limit of 0 the term is checked: a deposed leader always hears so.
        self.write(|reply| Command::RescueExpired {
            term,
            now,
            limit,
            reply,
        })
        .await
    }

    async fn purge_finished(
        &self,
        term: LeaderTerm,
        finished_before: Timestamp,
        limit: usize,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        self.write(|reply| Command::PurgeFinished {
            term,
            finished_before,
            limit,
            now,
            reply,
        })
        .await
    }

    async fn insert_idempotent(
        &self,
        jobs: Vec<NewJob>,
        record: IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Idempotent, StoreError> {
        record.validate()?;
        if let Err(refused) = check_batch(&jobs, now) {
            // A held key is answered whatever the batch: a replay never looks at it. Only a
            // read, so no writer round trip; nothing is written either way.
            let key = record.key;
            let held = self
                .read(move |reader| reads::held_record(reader, &key, now))
                .await?;
            return match held {
                Some(held) => Ok(Idempotent::Replayed(held)),
                None => Err(refused),
            };
        }
        self.write(|reply| Command::InsertIdempotent {
            jobs,
            record,
            now,
            reply,
        })
        .await
    }

    async fn purge_idempotency(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError> {
        self.write(|reply| Command::PurgeIdempotency {
            term,
            now,
            limit,
            reply,
        })
        .await
    }

    async fn insert_token(&self, token: ApiToken) -> Result<(), StoreError> {
        token.validate()?;
        self.write(|reply| Command::InsertToken { token, reply })
            .await
    }

    async fn get_token(&self, id: &TokenId) -> Result<Option<ApiToken>, StoreError> {
        let id = id.clone();
        self.read(move |reader| reads::get_token(reader, &id)).await
    }

    async fn list_tokens(
        &self,
        after: Option<&TokenId>,
        limit: usize,
    ) -> Result<Vec<ApiToken>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let after = after.cloned();
        self.read(move |reader| reads::list_tokens(reader, after.as_ref(), limit))
            .await
    }

    async fn revoke_token(&self, id: &TokenId, now: Timestamp) -> Result<ApiToken, StoreError> {
        let id = id.clone();
        self.write(|reply| Command::RevokeToken { id, now, reply })
            .await
    }

    async fn write_schedules(
        &self,
        fence: Option<LeaderTerm>,
        writes: Vec<ScheduleWrite>,
        now: Timestamp,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        check_schedule_writes(&writes, now)?;
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|reply| Command::WriteSchedules {
            fence,
            writes,
            now,
            reply,
        })
        .await
    }

    async fn get_schedule(&self, key: &ScheduleKey) -> Result<Option<StoredSchedule>, StoreError> {
        let key = key.clone();
        self.read(move |reader| schedules::get(reader, &key)).await
    }

    async fn list_schedules(
        &self,
        after: Option<&ScheduleName>,
        limit: usize,
    ) -> Result<Vec<StoredSchedule>, StoreError> {
        let after = after.cloned();
        self.read(move |reader| schedules::list(reader, after.as_ref(), limit))
            .await
    }

    async fn delete_schedule(&self, id: ScheduleId) -> Result<bool, StoreError> {
        self.write(|reply| Command::DeleteSchedule { id, reply })
            .await
    }

    async fn due_schedules(
        &self,
        check_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<DueSchedule>, StoreError> {
        self.read(move |reader| schedules::due(reader, check_by, limit))
            .await
    }

    async fn list_occurrences(
        &self,
        id: ScheduleId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<OccurrenceEntry>, StoreError> {
        self.read(move |reader| schedules::occurrences(reader, id, before, limit))
            .await
    }

    async fn purge_occurrences(
        &self,
        term: LeaderTerm,
        recorded_before: Timestamp,
        limit: usize,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        self.write(|reply| Command::PurgeOccurrences {
            term,
            recorded_before,
            limit,
            now,
            reply,
        })
        .await
    }
}
