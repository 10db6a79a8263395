//! The read side: a small pool of read-only connections, and the queries that run on them.
//!
//! Owns `get`, `list`, `counts`, `next_due`, `next_lease_expiry` and the integrity check. Each
//! runs on a pooled connection inside `tokio::task::spawn_blocking`, so a slow read blocks
//! neither the async runtime nor the writer: in WAL mode readers see the last committed state
//! while the writer appends beside them. A read that starts after a write was acknowledged
//! sees that write, because the writer answers only after its commit.
//!
//! Must not write: the connections are opened read-only, so a write here fails loudly.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use punctual_core::{
    Cursor, Job, JobFilter, JobId, JobPage, Kind, Priority, Queue, StateCount, StoreError,
    Timestamp, limits,
};
use rusqlite::{Connection, OpenFlags, Statement, ToSql, params};
use tokio::sync::Semaphore;

use crate::error::{Failure, corrupt, from_sql};
use crate::rows::{Names, job_columns, job_from_row, kind_array, state_code, state_from_code};

// The reads that the engine makes often, named so that `query_plans` can check that each is
// an index seek.

/// The earliest pending `run_at` of one priority level: the head of `job_pending_by_priority`.
pub(crate) const NEXT_DUE: &str = "SELECT run_at_us FROM job
     WHERE state IN (0, 2) AND priority = ?1 ORDER BY run_at_us LIMIT 1";

/// The same within one queue, from `job_pending_by_queue`.
pub(crate) const NEXT_DUE_IN_QUEUE: &str = "SELECT run_at_us FROM job
     WHERE state IN (0, 2) AND queue = ?1 AND priority = ?2 ORDER BY run_at_us LIMIT 1";

/// `NEXT_DUE` of the kinds in `?2` (an `rarray`): the same index, walked past rows of other
/// kinds (as the claim's scans are).
pub(crate) const NEXT_DUE_OF_KINDS: &str = "SELECT run_at_us FROM job
     WHERE state IN (0, 2) AND priority = ?1 AND kind IN rarray(?2)
     ORDER BY run_at_us LIMIT 1";

/// `NEXT_DUE_IN_QUEUE` of the kinds in `?3`.
pub(crate) const NEXT_DUE_IN_QUEUE_OF_KINDS: &str = "SELECT run_at_us FROM job
     WHERE state IN (0, 2) AND queue = ?1 AND priority = ?2 AND kind IN rarray(?3)
     ORDER BY run_at_us LIMIT 1";

/// The earliest lease expiry: the head of `job_running_by_lease_expiry`.
pub(crate) const NEXT_LEASE_EXPIRY: &str = "SELECT lease_expires_at_us FROM job
     WHERE state = 1 ORDER BY lease_expires_at_us LIMIT 1";

/// A read-only connection and its decoded-name cache.
pub(crate) struct Reader {
    connection: Connection,
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
            connection.set_prepared_statement_cache_capacity(32);
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

/// One page in id order. The statement text depends only on which filters are present (16
/// shapes), so each shape is prepared once and cached.
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
    let limit_value = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut sql = String::from(concat!("SELECT ", job_columns!(), " FROM job WHERE 1"));
    let mut parameters: Vec<&dyn ToSql> = Vec::with_capacity(5);
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

/// Counts by queue and state. This reads every row: it is for dashboards, not for hot paths.
pub(crate) fn counts(reader: &mut Reader) -> Result<Vec<StateCount>, Failure> {
    let mut statement = reader
        .connection
        .prepare_cached("SELECT queue, state, count(*) FROM job GROUP BY queue, state")?;
    let mut rows = statement.query([])?;
    let mut counts = Vec::new();
    while let Some(row) = rows.next()? {
        let count: i64 = row.get(2)?;
        counts.push(StateCount {
            queue: reader.names.queue(row.get_ref(0)?.as_str()?)?,
            state: state_from_code(row.get(1)?)?,
            count: u64::try_from(count).map_err(|_| corrupt("a negative count"))?,
        });
    }
    // SQLite already groups in this order (TEXT compares bytewise, as `Queue` does, and the
    // state codes follow `JobState`'s order), but the contract is the sort, not the plan.
    counts.sort_unstable_by(|a, b| (&a.queue, a.state).cmp(&(&b.queue, b.state)));
    Ok(counts)
}

/// The earliest `run_at` among pending jobs: the head of each priority level's index range
/// (per queue when queues are named), one index seek each; with a kinds filter, the first row
/// of those kinds in that range.
pub(crate) fn next_due(
    reader: &mut Reader,
    queues: Option<&[Queue]>,
    kinds: Option<&[Kind]>,
) -> Result<Option<Timestamp>, Failure> {
    let kinds = kinds.map(kind_array);
    if kinds.as_ref().is_some_and(|kinds| kinds.is_empty()) {
        return Ok(None);
    }
    let connection = &reader.connection;
    let mut earliest: Option<i64> = None;
    let mut consider = |statement: &mut Statement<'_>, parameters: &[&dyn ToSql]| {
        let mut rows = statement.query(parameters)?;
        if let Some(row) = rows.next()? {
            let found: i64 = row.get(0)?;
            earliest = Some(earliest.map_or(found, |current| current.min(found)));
        }
        Ok::<(), Failure>(())
    };
    for priority in Priority::HIGHEST.get()..=Priority::LOWEST.get() {
        match (queues, &kinds) {
            (None, None) => {
                let mut statement = connection.prepare_cached(NEXT_DUE)?;
                consider(&mut statement, &[&priority])?;
            }
            (None, Some(kinds)) => {
                let mut statement = connection.prepare_cached(NEXT_DUE_OF_KINDS)?;
                consider(&mut statement, &[&priority, kinds])?;
            }
            (Some(queues), None) => {
                let mut statement = connection.prepare_cached(NEXT_DUE_IN_QUEUE)?;
                for queue in queues {
                    consider(&mut statement, &[&queue.as_str(), &priority])?;
                }
            }
            (Some(queues), Some(kinds)) => {
                let mut statement = connection.prepare_cached(NEXT_DUE_IN_QUEUE_OF_KINDS)?;
                for queue in queues {
                    consider(&mut statement, &[&queue.as_str(), &priority, kinds])?;
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
