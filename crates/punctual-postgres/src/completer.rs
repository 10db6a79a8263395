//! Group completion: concurrent `complete` calls share one statement and one commit.
//!
//! `complete` is the hottest write (once per job), and one autocommit `UPDATE` per job costs a
//! round trip, a plan execution and a commit (a WAL flush) each. Measured on the 2-core
//! development machine, that capped raw store throughput near 16,000 jobs/s with PostgreSQL
//! spending most of both cores on per-statement and per-commit work. So completions go through
//! a bounded queue to a few flusher tasks; a flusher takes whatever is queued (up to
//! `BATCH_MAX`) and completes it with one `UPDATE ... FROM unnest(...)`. Nothing waits for a
//! batch to fill: a lone completion is flushed at once, and batches form only while a flush is
//! in flight, which is exactly when there is load.
//!
//! Owns the queue and the flushers. Must not answer a caller before its completion is
//! committed (durability is unchanged: each batch is a committed transaction), and must not
//! change the fencing: each completion is still matched on its lease token and a present lease
//! and refused alone (`LeaseLost`, `NotFound`) when it does not match, without affecting the
//! others in its batch; one that finds its job already succeeded under its own token is `Ok`. A caller that stops waiting (its future dropped) may still have its
//! completion applied, as with any statement already sent to the server.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use punctual_core::{JobId, LeaseToken, StoreError, Timestamp};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::error::SqlState;

use crate::bounded::within;
use crate::error::{pg, pool as pool_error};
use crate::rows::{SUCCEEDED, column, job_id, uuid};

/// Completions waiting for a flusher; a caller past this waits for room (backpressure).
const QUEUE_MAX: usize = 10_000;
/// Most completions in one statement.
const BATCH_MAX: usize = 1_000;
/// Batches in flight at once: a flush is mostly waiting (for its round trip and its commit),
/// and PostgreSQL commits concurrent transactions with one WAL flush (group commit).
const FLUSHERS: usize = 2;
/// A batch that deadlocked with another (only possible when one job is completed twice at
/// once) is retried this often before its callers get `Unavailable`.
const DEADLOCK_RETRIES_MAX: usize = 3;

/// Running is said as `lease_expires_at_us IS NOT NULL`, not `state = 1`, so that each id is
/// looked up in the primary key (see `transitions`): with `state = 1` and stale statistics the
/// planner walked every running job once per completion in the batch.
const COMPLETE_BATCH: &str = "
    UPDATE punctual_jobs
    SET state = 3, finished_at_us = done.finished_at_us,
        lease_holder = NULL, lease_expires_at_us = NULL
    FROM unnest($1::uuid[], $2::int8[], $3::int8[]) AS done(done_id, token, finished_at_us)
    WHERE id = done.done_id AND lease_token = done.token AND lease_expires_at_us IS NOT NULL
    RETURNING id";

struct Completion {
    id: JobId,
    token: LeaseToken,
    now: Timestamp,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The queue's sending end and the flusher tasks, which end with it.
pub(crate) struct Completer {
    sender: mpsc::Sender<Completion>,
    flushers: Vec<tokio::task::JoinHandle<()>>,
}

impl Completer {
    /// Starts the flushers on the current runtime.
    /// Each round's statements take at most `call_timeout` (`PgOptions::call_timeout`).
    pub(crate) fn start(pool: Pool, call_timeout: Duration) -> Completer {
        let (sender, receiver) = mpsc::channel(QUEUE_MAX);
        let receiver = Arc::new(Mutex::new(receiver));
        let flushers = (0..FLUSHERS)
            .map(|_| {
                tokio::spawn(flush_forever(
                    pool.clone(),
                    call_timeout,
                    Arc::clone(&receiver),
                ))
            })
            .collect();
        Completer { sender, flushers }
    }

    pub(crate) async fn complete(
        &self,
        id: JobId,
        token: LeaseToken,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let completion = Completion {
            id,
            token,
            now,
            reply,
        };
        let stopped = || StoreError::Unavailable("the completion flushers stopped".to_owned());
        self.sender.send(completion).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        // Dropped with the last clone of its store, so no caller is waiting on a flusher.
        for flusher in &self.flushers {
            flusher.abort();
        }
    }
}

/// Takes a batch off the queue and flushes it, until the queue closes.
async fn flush_forever(
    pool: Pool,
    limit: Duration,
    receiver: Arc<Mutex<mpsc::Receiver<Completion>>>,
) {
    loop {
        let batch = {
            // Held only while taking a batch, not while flushing it, so the next flusher can
            // take the next batch meanwhile.
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut batch = Vec::with_capacity(BATCH_MAX.min(receiver.len() + 1));
            batch.push(first);
            while batch.len() < BATCH_MAX {
                match receiver.try_recv() {
                    Ok(completion) => batch.push(completion),
                    Err(_) => break,
                }
            }
            batch
        };
        flush(&pool, limit, batch).await;
    }
}

/// Completes a batch and answers each caller. A job named twice in the batch is completed in
/// arrival order: the later call waits for a second round (and finds the job succeeded, which
/// is `Ok` under the same token and `LeaseLost` under another, as it would had the calls been
/// made one after the other).
async fn flush(pool: &Pool, limit: Duration, mut batch: Vec<Completion>) {
    while !batch.is_empty() {
        let mut seen = HashSet::with_capacity(batch.len());
        let (round, later): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|completion| seen.insert(completion.id));
        match within(pool, limit, "complete", complete_round(pool, &round)).await {
            Ok(updated) => answer(pool, limit, round, &updated).await,
            Err(error) => {
                for completion in round {
                    let _ = completion.reply.send(Err(replicate(&error)));
                }
            }
        }
        batch = later;
    }
}

/// Runs one statement for `round` (ids distinct) and returns the ids it completed.
async fn complete_round(pool: &Pool, round: &[Completion]) -> Result<HashSet<JobId>, StoreError> {
    let mut ordered: Vec<&Completion> = round.iter().collect();
    // One lock order for every batch, so two batches can only deadlock over a job completed
    // twice at once (and that is retried below).
    ordered.sort_unstable_by_key(|completion| completion.id);
    let ids: Vec<uuid::Uuid> = ordered
        .iter()
        .map(|completion| uuid(completion.id))
        .collect();
    let tokens: Vec<i64> = ordered
        .iter()
        .map(|completion| i64::try_from(completion.token.0).unwrap_or(-1))
        .collect();
    let finished: Vec<i64> = ordered
        .iter()
        .map(|completion| completion.now.as_micros())
        .collect();
    let client = pool.get().await.map_err(pool_error)?;
    let statement = client.prepare_cached(COMPLETE_BATCH).await.map_err(pg)?;
    let mut retries = 0;
    loop {
        match client.query(&statement, &[&ids, &tokens, &finished]).await {
            Ok(rows) => {
                return rows.iter().map(|row| column(row, 0).map(job_id)).collect();
            }
            Err(error)
                if error.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
                    && retries < DEADLOCK_RETRIES_MAX =>
            {
                retries += 1;
            }
            Err(error) => return Err(pg(error)),
        }
    }
}

/// Answers `Ok` for every completed id; for the rest, `Ok` if the job already succeeded under
/// the caller's token (`Store::complete` is idempotent for the holder that completed), else
/// `LeaseLost` if the job exists and `NotFound` if not.
async fn answer(pool: &Pool, limit: Duration, round: Vec<Completion>, updated: &HashSet<JobId>) {
    let missed: Vec<uuid::Uuid> = round
        .iter()
        .filter(|completion| !updated.contains(&completion.id))
        .map(|completion| uuid(completion.id))
        .collect();
    let existing = if missed.is_empty() {
        Ok(HashMap::new())
    } else {
        within(pool, limit, "complete", existing_jobs(pool, &missed)).await
    };
    for completion in round {
        let result = if updated.contains(&completion.id) {
            Ok(())
        } else {
            match &existing {
                Ok(existing) => match existing.get(&completion.id) {
                    Some(&stored) if completed_under(stored, completion.token) => Ok(()),
                    Some(_) => Err(StoreError::LeaseLost {
                        id: completion.id,
                        token: completion.token,
                    }),
                    None => Err(StoreError::NotFound(completion.id)),
                },
                Err(error) => Err(replicate(error)),
            }
        };
        // A caller that gave up waiting dropped its receiver; nothing to tell it.
        let _ = completion.reply.send(result);
    }
}

/// Whether a job's stored `(state, lease_token)` says it succeeded under `token`.
pub(crate) fn completed_under((state, stored): (i16, i64), token: LeaseToken) -> bool {
    state == SUCCEEDED && i64::try_from(token.0).is_ok_and(|token| token == stored)
}

/// The state and lease token of each of `ids` that exists.
async fn existing_jobs(
    pool: &Pool,
    ids: &[uuid::Uuid],
) -> Result<HashMap<JobId, (i16, i64)>, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let rows = client
        .query(
            "SELECT id, state, lease_token FROM punctual_jobs WHERE id = ANY($1::uuid[])",
            &[&ids],
        )
        .await
        .map_err(pg)?;
    rows.iter()
        .map(|row| Ok((job_id(column(row, 0)?), (column(row, 1)?, column(row, 2)?))))
        .collect()
}

/// The same error for another caller of the batch (`StoreError` is not `Clone`; a batch fails
/// only with the driver's `Unavailable` or `Corrupt`).
fn replicate(error: &StoreError) -> StoreError {
    match error {
        StoreError::Corrupt(message) => StoreError::Corrupt(message.clone()),
        StoreError::Unavailable(message) => StoreError::Unavailable(message.clone()),
        other => StoreError::Unavailable(other.to_string()),
    }
}
