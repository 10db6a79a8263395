//! The read side: a small pool of read-only connections, and the queries that run on them.
//!
//! Owns `get`, `list`, `counts`, `queue_stats`, `next_due`, `next_lease_expiry`, `get_token`,
//! `list_tokens` and the integrity check. Each runs on a pooled connection inside
//! `tokio::task::spawn_blocking`, so a slow read blocks neither the async runtime nor the
//! writer: in WAL mode readers see the last committed state while the writer appends beside
//! them. A read that starts after a write was acknowledged sees that write, because the writer
//! answers only after its commit. One query here also runs on the writer's connection:
//! `held_record_on`, the look-up half of `insert_idempotent`'s check-and-insert.
//!
//! Must not write: the connections are opened read-only, so a write here fails loudly.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use punctual_core::{
    ApiToken, Cursor, IdempotencyKey, IdempotencyRecord, Job, JobFilter, JobId, JobPage, JobState,
    Kind, Priority, Queue, QueueStats, StateCount, StateCounts, StoreError, Timestamp, TokenId,
    limits,
};
use rusqlite::{Connection, OpenFlags, Statement, ToSql, params};
use tokio::sync::Semaphore;

use crate::error::{Failure, corrupt, from_sql};
use crate::ranges::Ranges;
use crate::rows::{
    Names, job_columns, job_from_row, record_columns, record_from_row, state_code, state_from_code,
    text_array, token_columns, token_from_row,
};

// The reads that the engine makes often, named so that `query_plans` can check that each is
// an index seek.

/// The earliest pending `run_at` of one priority level: the head of `job_pending_by_priority`.
pub(crate) const NEXT_DUE: &str = "SELECT run_at_us FROM job
     WHERE state IN (0, 2) AND priority = ?1 ORDER BY run_at_us LIMIT 1";

/// The same within one queue, from `job_pending_by_queue`.
pub(crate) const NEXT_DUE_IN_QUEUE: &str = "SELECT run_at_us FROM job
     WHERE state IN (0, 2) AND queue = ?1 AND priority = ?2 ORDER BY run_at_us LIMIT 1";

/// `NEXT_DUE` of the kinds in `?2` (an `rarray`): the head of each kind's range of
/// `job_pending_by_kind` for the level, one seek per kind (in this one statement), and the
/// least of them. No row of another kind is read.
pub(crate) const NEXT_DUE_OF_KINDS: &str = "SELECT min((
         SELECT run_at_us FROM job
         WHERE state IN (0, 2) AND kind = wanted.value AND priority = ?1
         ORDER BY run_at_us LIMIT 1))
     FROM rarray(?2) AS wanted";

/// `NEXT_DUE_OF_KINDS` within the queues in `?3` (an `rarray`): each kind's range is walked to
/// its first row in one of them, passing over that kind's jobs in other queues (see `ranges`
/// for when this is the plan).
pub(crate) const NEXT_DUE_OF_KINDS_IN_QUEUES: &str = "SELECT min((
         SELECT run_at_us FROM job
         WHERE state IN (0, 2) AND kind = wanted.value AND priority = ?1
             AND queue IN rarray(?3)
         ORDER BY run_at_us LIMIT 1))
     FROM rarray(?2) AS wanted";

/// `NEXT_DUE_IN_QUEUE` of the kinds in `?3`: walks the queue's range past rows of other kinds
/// (see `ranges` for when this is the plan).
pub(crate) const NEXT_DUE_IN_QUEUE_OF_KINDS: &str = "SELECT run_at_us FROM job
     WHERE state IN (0, 2) AND queue = ?1 AND priority = ?2 AND kind IN rarray(?3)
     ORDER BY run_at_us LIMIT 1";

/// The earliest lease expiry: the head of `job_running_by_lease_expiry`.
pub(crate) const NEXT_LEASE_EXPIRY: &str = "SELECT lease_expires_at_us FROM job
     WHERE state = 1 ORDER BY lease_expires_at_us LIMIT 1";

/// How many pending jobs of one queue and priority level are due by `?3`, walking at most `?4`
/// of them, and the earliest `run_at` among them: a prefix of `job_pending_by_queue`'s range
/// for (queue, priority), the same range a claim for that queue scans. The walk is in `run_at`
/// order, so its first row is the earliest even when the limit cuts it short.
pub(crate) const DUE_IN_QUEUE: &str = "SELECT count(*), min(run_at_us) FROM (
         SELECT run_at_us FROM job
         WHERE state IN (0, 2) AND queue = ?1 AND priority = ?2 AND run_at_us <= ?3
         ORDER BY run_at_us LIMIT ?4)";

/// A read-only connection and its decoded-name cache.
pub(crate) struct Reader {
    pub(crate) connection: Connection,
    names: Names,
}

/// A fixed set of readers; a read waits (asynchronously) for a free one.
pub(crate) struct ReadPool {
    readers: Mutex<Vec<Reader>>,
    free: Arc<Semaphore>,
}

/// How long a reader waits on a lock before reporting `Unavailable`. In WAL mode a reader only
/// waits in rare moments (a checkpoint resetting the WAL, recovery after a crash).
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl ReadPool {
    pub(crate) fn open(path: &Path, count: usize) -> Result<ReadPool, StoreError> {
        let count = count.max(1);
        let mut readers = Vec::with_capacity(count);
        for _ in 0..count {
            let connection = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(from_sql)?;
            connection.busy_timeout(BUSY_TIMEOUT).map_err(from_sql)?;
            // `rarray()`, with which `next_due` takes a kinds filter.
            rusqlite::vtab::array::load_module(&connection).map_err(from_sql)?;
            // Room for every shape of `list` (64) besides the other reads.
            connection.set_prepared_statement_cache_capacity(96);
            readers.push(Reader {
                connection,
                names: Names::default(),
            });
        }
        Ok(ReadPool {
            readers: Mutex::new(readers),
            free: Arc::new(Semaphore::new(count)),
        })
    }

    /// Runs `read` on a free reader, on a blocking thread.
    pub(crate) async fn run<T: Send + 'static>(
        self: &Arc<ReadPool>,
        read: impl FnOnce(&mut Reader) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, StoreError> {
        let permit = Arc::clone(&self.free)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the read pool is closed".to_owned()))?;
        let pool = Arc::clone(self);
        let joined = tokio::task::spawn_blocking(move || {
            // A permit guarantees a reader: there are as many permits as readers, and a reader
            // goes back before its permit does, even when `read` panics (see `Lent`).
            let reader = pool
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()
                .expect("a free permit means a free reader");
            let mut lent = Lent {
                pool: &pool,
                reader: Some(reader),
            };
            let result = read(lent.reader.as_mut().expect("present until dropped"));
            drop(lent);
            drop(permit);
            result
        })
        .await;
        match joined {
            Ok(result) => result.map_err(StoreError::from),
            Err(error) => Err(StoreError::Unavailable(format!("a read failed: {error}"))),
        }
    }
}

/// A reader on loan; it goes back to the pool when dropped, also during a panic's unwinding.
struct Lent<'a> {
    pool: &'a ReadPool,
    reader: Option<Reader>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            self.pool
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(reader);
        }
    }
}

pub(crate) fn get(reader: &mut Reader, id: JobId) -> Result<Option<Job>, Failure> {
    let mut statement = reader.connection.prepare_cached(concat!(
        "SELECT ",
        job_columns!(),
        " FROM job WHERE id = ?1"
    ))?;
    let mut rows = statement.query(params![id.as_bytes()])?;
    match rows.next()? {
        Some(row) => Ok(Some(job_from_row(row, &mut reader.names)?)),
        None => Ok(None),
    }
}

/// One page in id order. The statement text depends only on which filters are present (64
/// shapes), so each shape is prepared once and cached. Each filter is `JobFilter::matches`'s
/// reading of it, as SQL: equality, and `due_from <= run_at < due_before`.
pub(crate) fn list(
    reader: &mut Reader,
    filter: &JobFilter,
    after: Option<Cursor>,
    limit: usize,
) -> Result<JobPage, Failure> {
    let limit = limit.min(limits::PAGE_SIZE_MAX);
    if limit == 0 {
        return Ok(JobPage {
            jobs: Vec::new(),
            next: None,
        });
    }
    let after_bytes = after.map(|Cursor(id)| *id.as_bytes());
    let queue = filter.queue.as_ref().map(Queue::as_str);
    let state = filter.state.map(state_code);
    let kind = filter.kind.as_ref().map(|kind| kind.as_str());
    let due_from = filter.due_from.map(Timestamp::as_micros);
    let due_before = filter.due_before.map(Timestamp::as_micros);
    let limit_value = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut sql = String::from(concat!("SELECT ", job_columns!(), " FROM job WHERE 1"));
    let mut parameters: Vec<&dyn ToSql> = Vec::with_capacity(7);
    if let Some(after) = &after_bytes {
        sql.push_str(" AND id > ?");
        parameters.push(after);
    }
    if let Some(queue) = &queue {
        sql.push_str(" AND queue = ?");
        parameters.push(queue);
    }
    if let Some(state) = &state {
        sql.push_str(" AND state = ?");
        parameters.push(state);
    }
    if let Some(kind) = &kind {
        sql.push_str(" AND kind = ?");
        parameters.push(kind);
    }
    if let Some(due_from) = &due_from {
        sql.push_str(" AND run_at_us >= ?");
        parameters.push(due_from);
    }
    if let Some(due_before) = &due_before {
        sql.push_str(" AND run_at_us < ?");
        parameters.push(due_before);
    }
    sql.push_str(" ORDER BY id LIMIT ?");
    parameters.push(&limit_value);

    let mut statement = reader.connection.prepare_cached(&sql)?;
    let mut rows = statement.query(parameters.as_slice())?;
    let mut jobs = Vec::with_capacity(limit);
    while let Some(row) = rows.next()? {
        jobs.push(job_from_row(row, &mut reader.names)?);
    }
    let next = if jobs.len() == limit {
        jobs.last().map(|job| Cursor(job.id))
    } else {
        None
    };
    Ok(JobPage { jobs, next })
}

/// Every nonzero count of `job_count`, which the triggers keep (see `migrations`), in queue
/// then state order (the primary key's; TEXT compares bytewise, as `Queue` does). Reads a row
/// per (queue, state) in use, however many jobs are stored.
pub(crate) const COUNTS: &str =
    "SELECT queue, state, count FROM job_count WHERE count > 0 ORDER BY queue, state";

/// Counts by queue and state.
pub(crate) fn counts(reader: &mut Reader) -> Result<Vec<StateCount>, Failure> {
    counts_on(&reader.connection, &mut reader.names)
}

fn counts_on(connection: &Connection, names: &mut Names) -> Result<Vec<StateCount>, Failure> {
    let mut statement = connection.prepare_cached(COUNTS)?;
    let mut rows = statement.query([])?;
    let mut counts = Vec::new();
    while let Some(row) = rows.next()? {
        let count: i64 = row.get(2)?;
        counts.push(StateCount {
            queue: names.queue(row.get_ref(0)?.as_str()?)?,
            state: state_from_code(row.get(1)?)?,
            count: u64::try_from(count).map_err(|_| corrupt("a negative count"))?,
        });
    }
    // The state codes follow `JobState`'s order, so this is already sorted; the contract is
    // the sort, not the plan.
    counts.sort_unstable_by(|a, b| (&a.queue, a.state).cmp(&(&b.queue, b.state)));
    Ok(counts)
}

/// Each queue's counts, and its due jobs at `now`: for each priority level, one walk of
/// `DUE_IN_QUEUE` of at most the cap's remainder (the first row of each level gives the
/// earliest `run_at` even once the cap is reached). A queue with no pending job walks nothing.
/// In one read transaction, so the counts and the due jobs are of one moment.
pub(crate) fn queue_stats(reader: &mut Reader, now: Timestamp) -> Result<Vec<QueueStats>, Failure> {
    let transaction = reader.connection.transaction()?;
    let counts = counts_on(&transaction, &mut reader.names)?;
    let mut stats: Vec<QueueStats> = Vec::new();
    for StateCount {
        queue,
        state,
        count,
    } in counts
    {
        if stats.last().is_none_or(|last| last.queue != queue) {
            if stats.len() == limits::QUEUES_LISTED_MAX {
                break;
            }
            stats.push(QueueStats {
                queue,
                counts: StateCounts::default(),
                due: 0,
                oldest_due: None,
            });
        }
        stats
            .last_mut()
            .expect("pushed above")
            .counts
            .add(state, count);
    }
    let mut statement = transaction.prepare_cached(DUE_IN_QUEUE)?;
    for queue in &mut stats {
        let pending = queue.counts.get(JobState::Scheduled) + queue.counts.get(JobState::Retrying);
        if pending == 0 {
            continue;
        }
        let mut oldest: Option<i64> = None;
        for priority in Priority::HIGHEST.get()..=Priority::LOWEST.get() {
            let left = limits::DUE_COUNT_MAX - queue.due;
            // At least one row, for the level's earliest `run_at`.
            let walk = i64::try_from(left.max(1)).unwrap_or(i64::MAX);
            let mut rows = statement.query(params![
                queue.queue.as_str(),
                priority,
                now.as_micros(),
                walk
            ])?;
            let row = rows
                .next()?
                .ok_or_else(|| corrupt("count(*) gave no row"))?;
            let walked: i64 = row.get(0)?;
            let walked = u64::try_from(walked).map_err(|_| corrupt("a negative count"))?;
            queue.due += walked.min(left);
            if let Some(earliest) = row.get::<_, Option<i64>>(1)? {
                oldest = Some(oldest.map_or(earliest, |oldest| oldest.min(earliest)));
            }
        }
        queue.oldest_due = oldest.map(Timestamp::from_micros);
    }
    drop(statement);
    // Only read; ending it either way releases the snapshot.
    transaction.commit()?;
    Ok(stats)
}

pub(crate) fn get_token(reader: &mut Reader, id: &TokenId) -> Result<Option<ApiToken>, Failure> {
    let mut statement = reader.connection.prepare_cached(concat!(
        "SELECT ",
        token_columns!(),
        " FROM api_token WHERE id = ?1"
    ))?;
    let mut rows = statement.query(params![id.as_str()])?;
    match rows.next()? {
        Some(row) => Ok(Some(token_from_row(row)?)),
        None => Ok(None),
    }
}

/// Tokens in id order (the primary key's, bytewise) after `after`.
pub(crate) fn list_tokens(
    reader: &mut Reader,
    after: Option<&TokenId>,
    limit: usize,
) -> Result<Vec<ApiToken>, Failure> {
    let limit = limit.min(limits::PAGE_SIZE_MAX);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let limit_value = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut statement;
    let mut rows = match after {
        None => {
            statement = reader.connection.prepare_cached(concat!(
                "SELECT ",
                token_columns!(),
                " FROM api_token ORDER BY id LIMIT ?1"
            ))?;
            statement.query(params![limit_value])?
        }
        Some(after) => {
            statement = reader.connection.prepare_cached(concat!(
                "SELECT ",
                token_columns!(),
                " FROM api_token WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            statement.query(params![after.as_str(), limit_value])?
        }
    };
    let mut tokens = Vec::with_capacity(limit);
    while let Some(row) = rows.next()? {
        tokens.push(token_from_row(row)?);
    }
    Ok(tokens)
}

/// The record under `key` if it is live at `now`.
pub(crate) fn held_record(
    reader: &mut Reader,
    key: &IdempotencyKey,
    now: Timestamp,
) -> Result<Option<IdempotencyRecord>, Failure> {
    held_record_on(&reader.connection, key, now)
}

/// `held_record` on any connection; the writer runs it inside its transaction, so the check
/// and the insert that follows are one atomic step.
pub(crate) fn held_record_on(
    connection: &Connection,
    key: &IdempotencyKey,
    now: Timestamp,
) -> Result<Option<IdempotencyRecord>, Failure> {
    let mut statement = connection.prepare_cached(concat!(
        "SELECT ",
        record_columns!(),
        " FROM idempotency_key WHERE key = ?1 AND expires_at_us > ?2"
    ))?;
    let mut rows = statement.query(params![key.as_str(), now.as_micros()])?;
    match rows.next()? {
        Some(row) => Ok(Some(record_from_row(row)?)),
        None => Ok(None),
    }
}

/// The earliest `run_at` among pending jobs: the head of each priority level's index range,
/// one seek each, per queue or per kind as `Ranges` chooses; with both filters, the first row
/// of the range that passes the other.
pub(crate) fn next_due(
    reader: &mut Reader,
    queues: Option<&[Queue]>,
    kinds: Option<&[Kind]>,
) -> Result<Option<Timestamp>, Failure> {
    next_due_on(&reader.connection, queues, kinds)
}

/// `next_due` on any connection (`query_plans` measures it on its own).
pub(crate) fn next_due_on(
    connection: &Connection,
    queues: Option<&[Queue]>,
    kinds: Option<&[Kind]>,
) -> Result<Option<Timestamp>, Failure> {
    let mut earliest: Option<i64> = None;
    let mut consider = |statement: &mut Statement<'_>, parameters: &[&dyn ToSql]| {
        let mut rows = statement.query(parameters)?;
        // The `min` of the kinds' statements gives a row of NULL when no kind has a job.
        if let Some(row) = rows.next()?
            && let Some(found) = row.get::<_, Option<i64>>(0)?
        {
            earliest = Some(earliest.map_or(found, |current| current.min(found)));
        }
        Ok::<(), Failure>(())
    };
    let levels = Priority::HIGHEST.get()..=Priority::LOWEST.get();
    match Ranges::of(queues, kinds) {
        Ranges::Nothing => {}
        Ranges::All => {
            let mut statement = connection.prepare_cached(NEXT_DUE)?;
            for priority in levels {
                consider(&mut statement, &[&priority])?;
            }
        }
        Ranges::Queues { queues, kinds } => {
            let mut statement = connection.prepare_cached(match kinds {
                None => NEXT_DUE_IN_QUEUE,
                Some(_) => NEXT_DUE_IN_QUEUE_OF_KINDS,
            })?;
            for priority in levels {
                for queue in &queues {
                    match &kinds {
                        None => consider(&mut statement, &[queue, &priority])?,
                        Some(kinds) => consider(&mut statement, &[queue, &priority, kinds])?,
                    }
                }
            }
        }
        Ranges::Kinds { kinds, queues } => {
            // One statement per level takes every kind: `NEXT_DUE_OF_KINDS` seeks per kind.
            let kinds = text_array(&kinds);
            let mut statement = connection.prepare_cached(match queues {
                None => NEXT_DUE_OF_KINDS,
                Some(_) => NEXT_DUE_OF_KINDS_IN_QUEUES,
            })?;
            for priority in levels {
                match &queues {
                    None => consider(&mut statement, &[&priority, &kinds])?,
                    Some(queues) => consider(&mut statement, &[&priority, &kinds, queues])?,
                }
            }
        }
    }
    Ok(earliest.map(Timestamp::from_micros))
}

pub(crate) fn next_lease_expiry(reader: &mut Reader) -> Result<Option<Timestamp>, Failure> {
    let mut statement = reader.connection.prepare_cached(NEXT_LEASE_EXPIRY)?;
    let mut rows = statement.query([])?;
    match rows.next()? {
        Some(row) => Ok(Some(Timestamp::from_micros(row.get(0)?))),
        None => Ok(None),
    }
}

/// `PRAGMA integrity_check`: `Ok` when SQLite finds the file sound, `Corrupt` with its findings
/// otherwise.
pub(crate) fn integrity_check_on(connection: &Connection) -> Result<(), Failure> {
    let mut statement = connection.prepare("PRAGMA integrity_check")?;
    let findings: Vec<String> = statement
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    if findings.len() == 1 && findings[0] == "ok" {
        return Ok(());
    }
    Err(corrupt(format!(
        "integrity check failed: {}",
        findings.join("; ")
    )))
}
