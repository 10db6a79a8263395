//! The write side of the store: the SQL of every state transition, run on the writer's
//! connection inside the group-commit transaction.
//!
//! Owns what each `Store` write does to the `job` table: insert, claim, the fenced lease
//! operations (extend, complete, fail, release), cancel, reschedule, rescue and purge; to the
//! `leader` row: lead and resign, and the check of a term that fences the leader duties; to
//! `idempotency_key`: the insert under a key and its purge; and to `api_token`: insert and
//! revoke. Every change of a job's state (or its creation or deletion) is reported to the
//! command's `Tally`, which the writer applies to `job_count` before the commit (see `counts`);
//! the purge also drops zero counts. Each function either succeeds or returns a `Failure`.
//! Insert, claim, rescue, purge and the insert under a key make several writes and may stop
//! half way: the writer runs them in a savepoint and rolls it back. Every
//! other function makes at most one write statement, which SQLite undoes by itself if it fails,
//! and the writer runs those without a savepoint: keep them to one write each, or move them to
//! `Writer::settle` in `writer`.
//!
//! Must not begin, commit or roll back transactions (the writer does, once per batch), nor read
//! the system clock: `now` is always the caller's.

use punctual_core::{
    ApiToken, ClaimRequest, FailOutcome, IdempotencyRecord, Idempotent, Job, JobId, JobState,
    LeaderTerm, LeaseToken, NewJob, NodeId, Priority, Queue, Rescue, RescueFate, RescueOutcome,
    StoreError, Timestamp, TokenId, check_run_at, limits,
};
use std::rc::Rc;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::vtab::array::Array;
use rusqlite::{Connection, Statement, params};

use crate::counts::Tally;
use crate::error::{Failure, is_primary_key_violation};
use crate::ranges::Ranges;
use crate::reads::held_record_on;
use crate::rows::{
    Names, ScheduleColumns, id_from_blob, job_columns, job_from_row, micros, retry_columns,
    retry_from_columns, scopes_column, state_code, state_from_code, token_columns, token_from_row,
};

// The statements whose speed matters with many jobs stored, named so that `query_plans` can
// check that each is an index range scan.

/// Due pending jobs of one priority level, in claim order, from `job_pending_by_priority`.
pub(crate) const CLAIM_CANDIDATES: &str = "SELECT run_at_us, id FROM job
     WHERE state IN (0, 2) AND priority = ?1 AND run_at_us <= ?2
     ORDER BY run_at_us, id LIMIT ?3";

/// The same within one queue, from `job_pending_by_queue`.
pub(crate) const CLAIM_CANDIDATES_IN_QUEUE: &str = "SELECT run_at_us, id FROM job
     WHERE state IN (0, 2) AND queue = ?1 AND priority = ?2 AND run_at_us <= ?3
     ORDER BY run_at_us, id LIMIT ?4";

/// `CLAIM_CANDIDATES_IN_QUEUE` of the kinds in `?5` (an `rarray`): the queue's range, each
/// row's kind checked and others passed over (see `ranges` for when this is the plan).
pub(crate) const CLAIM_CANDIDATES_IN_QUEUE_OF_KINDS: &str = "SELECT run_at_us, id FROM job
     WHERE state IN (0, 2) AND queue = ?1 AND priority = ?2 AND run_at_us <= ?3
         AND kind IN rarray(?5)
     ORDER BY run_at_us, id LIMIT ?4";

/// Due pending jobs of one kind and priority level, in claim order, from
/// `job_pending_by_kind`: no row of another kind is read.
pub(crate) const CLAIM_CANDIDATES_OF_KIND: &str = "SELECT run_at_us, id FROM job
     WHERE state IN (0, 2) AND kind = ?1 AND priority = ?2 AND run_at_us <= ?3
     ORDER BY run_at_us, id LIMIT ?4";

/// `CLAIM_CANDIDATES_OF_KIND` within the queues in `?5` (an `rarray`): the kind's range, each
/// row's queue checked and others passed over (see `ranges` for when this is the plan).
pub(crate) const CLAIM_CANDIDATES_OF_KIND_IN_QUEUES: &str = "SELECT run_at_us, id FROM job
     WHERE state IN (0, 2) AND kind = ?1 AND priority = ?2 AND run_at_us <= ?3
         AND queue IN rarray(?5)
     ORDER BY run_at_us, id LIMIT ?4";

/// Takes those of the chosen jobs (`?1`, an `rarray` of ids) in state `?6` under a lease of
/// `?4` microseconds from `max(now, run_at)`, returning their new rows. `?5` is `i64::MAX - ?4`:
/// the `min` saturates the expiry as `Timestamp::add` does, where SQLite would turn an
/// overflowing sum into a float. A claim runs it for each pending state, so it knows which state
/// each job left (the job counts need it; `RETURNING` shows only the new row).
pub(crate) const CLAIM: &str = concat!(
    "UPDATE job SET state = 1, attempt = attempt + 1, lease_token = lease_token + 1,
                    lease_holder = ?2, lease_expires_at_us = min(max(?3, run_at_us), ?5) + ?4,
                    started_at_us = ?3, finished_at_us = NULL
     WHERE id IN rarray(?1) AND state = ?6
     RETURNING ",
    job_columns!()
);

/// Running jobs whose lease expired by `?1`, longest expired first.
pub(crate) const EXPIRED_LEASES: &str = "SELECT id, lease_holder, lease_token, attempt,
            attempt_max, backoff_base_us, backoff_max_us, jitter_percent, queue
     FROM job WHERE state = 1 AND lease_expires_at_us <= ?1
     ORDER BY lease_expires_at_us, id LIMIT ?2";

/// Deletes the zero counts of `job_count` (see `migrations`), so it holds only the (queue,
/// state) pairs in use since the last purge.
pub(crate) const PURGE_ZERO_COUNTS: &str = "DELETE FROM job_count WHERE count = 0";

/// Deletes finished jobs that finished before `?1`, oldest first.
pub(crate) const PURGE_FINISHED: &str = "DELETE FROM job WHERE id IN (
         SELECT id FROM job WHERE state IN (3, 4, 5) AND finished_at_us < ?1
         ORDER BY finished_at_us, id LIMIT ?2)
     RETURNING queue, state";

/// Deletes up to `?2` idempotency records expired at `?1`, the earliest expiry first.
pub(crate) const PURGE_IDEMPOTENCY: &str = "DELETE FROM idempotency_key WHERE rowid IN (
         SELECT rowid FROM idempotency_key WHERE expires_at_us <= ?1
         ORDER BY expires_at_us LIMIT ?2)";

/// The write every completion makes (the hottest statement of all).
pub(crate) const COMPLETE: &str = "UPDATE job SET state = 3, finished_at_us = ?3,
                    lease_holder = NULL, lease_expires_at_us = NULL
     WHERE id = ?1 AND state = 1 AND lease_token = ?2";

/// A count as an SQL integer (a `LIMIT` beyond `i64::MAX` is no limit at all).
fn sql_count(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// A lease token as an SQL integer. Stored tokens are below `i64::MAX`; a token beyond it
/// cannot be current, so it maps to -1, which matches no job and ends in `LeaseLost`.
fn sql_token(token: LeaseToken) -> i64 {
    i64::try_from(token.0).unwrap_or(-1)
}

/// Stores `jobs` as `NewJob::into_job(now)` would make them. A duplicate id, stored or earlier
/// in the batch, stops with `Duplicate`; the writer's savepoint then undoes the whole batch.
pub(crate) fn insert(
    connection: &Connection,
    tally: &mut Tally,
    jobs: Vec<NewJob>,
    now: Timestamp,
) -> Result<Vec<JobId>, Failure> {
    let mut ids = Vec::with_capacity(jobs.len());
    for job in &jobs {
        insert_one(connection, tally, job, now)?;
        ids.push(job.id);
    }
    Ok(ids)
}

pub(crate) fn insert_one(
    connection: &Connection,
    tally: &mut Tally,
    job: &NewJob,
    now: Timestamp,
) -> Result<(), Failure> {
    tally.moved(&job.queue, None, Some(JobState::Scheduled));
    let mut statement = connection.prepare_cached(
        "INSERT INTO job (id, queue, kind, priority, run_at_us, state, attempt, attempt_max,
                          lease_token, created_at_us, schedule_cron, schedule_time_zone,
                          schedule_interval_us, backoff_base_us, backoff_max_us, jitter_percent,
                          payload)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, ?6, 0, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    let schedule = ScheduleColumns::of(job.schedule.as_ref());
    let (backoff_base_us, backoff_max_us, jitter_percent) = retry_columns(&job.retry);
    let inserted = statement.execute(params![
        job.id.as_bytes(),
        job.queue.as_str(),
        job.kind.as_str(),
        job.priority.get(),
        job.run_at.as_micros(),
        job.attempt_max,
        now.as_micros(),
        schedule.cron,
        schedule.time_zone,
        schedule.interval_us,
        backoff_base_us,
        backoff_max_us,
        jitter_percent,
        job.payload.as_str(),
    ]);
    match inserted {
        Ok(_) => Ok(()),
        Err(error) if is_primary_key_violation(&error) => Err(StoreError::Duplicate(job.id).into()),
        Err(error) => Err(error.into()),
    }
}

/// Takes due pending jobs under a lease, in claim order (priority, then `run_at`, then id).
///
/// Candidates are found with one index range scan per priority level, or per (queue, level)
/// or (kind, level) as `Ranges` chooses for the filters, each stopping after the rows still
/// wanted, so the cost follows the batch size (times the ranges walked), not the number of
/// pending jobs. Within a level, the ranges' candidates are merged by `(run_at, id)` and the
/// first ones wanted kept. With both filters, the rows of the walked ranges that fail the
/// other are passed over (read, not taken).
pub(crate) fn claim(
    connection: &Connection,
    names: &mut Names,
    tally: &mut Tally,
    request: &ClaimRequest,
    now: Timestamp,
) -> Result<Vec<Job>, Failure> {
    let limit = request.bounded_limit();
    let ranges = Ranges::of(request.queues.as_deref(), request.kinds.as_deref());
    if limit == 0 || matches!(ranges, Ranges::Nothing) {
        return Ok(Vec::new());
    }
    let due_by = request.due_by.as_micros();
    let mut candidates: Vec<(i64, [u8; 16])> = Vec::with_capacity(limit);
    for priority in Priority::HIGHEST.get()..=Priority::LOWEST.get() {
        let wanted = limit - candidates.len();
        if wanted == 0 {
            break;
        }
        let count = sql_count(wanted);
        let level_start = candidates.len();
        let walked = match &ranges {
            Ranges::Nothing => 0,
            Ranges::All => {
                let mut statement = connection.prepare_cached(CLAIM_CANDIDATES)?;
                collect_candidates(
                    &mut statement,
                    params![priority, due_by, count],
                    &mut candidates,
                )?;
                1
            }
            Ranges::Queues { queues, kinds } => {
                let mut statement = connection.prepare_cached(match kinds {
                    None => CLAIM_CANDIDATES_IN_QUEUE,
                    Some(_) => CLAIM_CANDIDATES_IN_QUEUE_OF_KINDS,
                })?;
                for queue in queues {
                    match kinds {
                        None => collect_candidates(
                            &mut statement,
                            params![queue, priority, due_by, count],
                            &mut candidates,
                        )?,
                        Some(kinds) => collect_candidates(
                            &mut statement,
                            params![queue, priority, due_by, count, kinds],
                            &mut candidates,
                        )?,
                    }
                }
                queues.len()
            }
            Ranges::Kinds { kinds, queues } => {
                let mut statement = connection.prepare_cached(match queues {
                    None => CLAIM_CANDIDATES_OF_KIND,
                    Some(_) => CLAIM_CANDIDATES_OF_KIND_IN_QUEUES,
                })?;
                for kind in kinds {
                    match queues {
                        None => collect_candidates(
                            &mut statement,
                            params![kind, priority, due_by, count],
                            &mut candidates,
                        )?,
                        Some(queues) => collect_candidates(
                            &mut statement,
                            params![kind, priority, due_by, count, queues],
                            &mut candidates,
                        )?,
                    }
                }
                kinds.len()
            }
        };
        if walked > 1 {
            candidates[level_start..].sort_unstable();
            candidates.truncate(level_start + wanted);
        }
    }

    if candidates.is_empty() {
        return Ok(Vec::new());
    }

    // One statement for the whole batch: per-row statements cost a statement journal each,
    // which profiles showed to be most of a claim's time.
    let ids: Array = Rc::new(
        candidates
            .iter()
            .map(|(_, id)| Value::Blob(id.to_vec()))
            .collect(),
    );
    let lease_us = micros(request.bounded_lease());
    let mut update = connection.prepare_cached(CLAIM)?;
    let mut claimed = Vec::with_capacity(candidates.len());
    for left in [JobState::Scheduled, JobState::Retrying] {
        let mut rows = update.query(params![
            ids.clone(),
            request.holder.as_str(),
            now.as_micros(),
            lease_us,
            i64::MAX - lease_us,
            state_code(left),
        ])?;
        while let Some(row) = rows.next()? {
            let job = job_from_row(row, names)?;
            tally.moved(&job.queue, Some(left), Some(JobState::Running));
            claimed.push(job);
        }
    }
    // The candidates were read in this same transaction, on the only writing connection, so
    // each is still pending and was updated.
    assert_eq!(
        claimed.len(),
        candidates.len(),
        "every claim candidate is claimed"
    );
    // RETURNING gives rows in no promised order; the claim order is (priority, run_at, id).
    claimed.sort_unstable_by_key(|job| (job.priority, job.run_at, job.id));

    // The first claim of a recurring job's occurrence stores the next occurrence. Later claims
    // (retries, or a claim after a release) must not, or a failing job would multiply.
    for job in &claimed {
        if job.schedule.is_some()
            && job.lease_token == LeaseToken(1)
            && let Some(next) = job.next_occurrence(now)
        {
            insert_one(connection, tally, &next, now)?;
        }
    }
    Ok(claimed)
}

fn collect_candidates(
    statement: &mut Statement<'_>,
    parameters: impl rusqlite::Params,
    candidates: &mut Vec<(i64, [u8; 16])>,
) -> Result<(), Failure> {
    let mut rows = statement.query(parameters)?;
    while let Some(row) = rows.next()? {
        let run_at_us: i64 = row.get(0)?;
        let id = id_from_blob(row.get_ref(1)?.as_blob()?)?;
        candidates.push((run_at_us, *id.as_bytes()));
    }
    Ok(())
}

/// Runs a statement that returns at most one job row (a `SELECT` by id, or a write with
/// `RETURNING`; SQLite makes all of such a write's changes on its first step).
fn one_job(
    statement: &mut Statement<'_>,
    parameters: impl rusqlite::Params,
    names: &mut Names,
) -> Result<Option<Job>, Failure> {
    let mut rows = statement.query(parameters)?;
    match rows.next()? {
        Some(row) => Ok(Some(job_from_row(row, names)?)),
        None => Ok(None),
    }
}

/// The job's state, or `None` if there is no such job.
fn current_state(connection: &Connection, id: JobId) -> Result<Option<JobState>, Failure> {
    let mut statement = connection.prepare_cached("SELECT state FROM job WHERE id = ?1")?;
    let mut rows = statement.query(params![id.as_bytes()])?;
    match rows.next()? {
        Some(row) => Ok(Some(state_from_code(row.get(0)?)?)),
        None => Ok(None),
    }
}

/// Why a fenced write matched no row: there is no such job, or `token` is not its current
/// running lease.
fn fence_refusal(connection: &Connection, id: JobId, token: LeaseToken) -> Failure {
    match current_state(connection, id) {
        Ok(Some(_)) => StoreError::LeaseLost { id, token }.into(),
        Ok(None) => StoreError::NotFound(id).into(),
        Err(failure) => failure,
    }
}

/// Runs a fenced write: `sql` must change the job `?1` only `WHERE ... state = 1 AND
/// lease_token = ?2`, `RETURNING queue, state`. Matching no row means the job is missing or the
/// lease is not current. Returns the job's queue and its new state.
fn fenced(
    connection: &Connection,
    names: &mut Names,
    id: JobId,
    token: LeaseToken,
    sql: &'static str,
    parameters: impl rusqlite::Params,
) -> Result<(Queue, JobState), Failure> {
    let mut statement = connection.prepare_cached(sql)?;
    let mut rows = statement.query(parameters)?;
    let Some(row) = rows.next()? else {
        return Err(fence_refusal(connection, id, token));
    };
    let queue = names.queue(row.get_ref(0)?.as_str()?)?;
    let state = state_from_code(row.get(1)?)?;
    Ok((queue, state))
}

pub(crate) fn extend_lease(
    connection: &Connection,
    names: &mut Names,
    id: JobId,
    token: LeaseToken,
    expires_at: Timestamp,
) -> Result<(), Failure> {
    fenced(
        connection,
        names,
        id,
        token,
        "UPDATE job SET lease_expires_at_us = ?3
         WHERE id = ?1 AND state = 1 AND lease_token = ?2
         RETURNING queue, state",
        params![id.as_bytes(), sql_token(token), expires_at.as_micros()],
    )?;
    Ok(())
}

/// Marks the attempt under `token` succeeded; `Ok` without a change if it already succeeded
/// under that same token (see `Store::complete`).
pub(crate) fn complete(
    connection: &Connection,
    names: &mut Names,
    tally: &mut Tally,
    id: JobId,
    token: LeaseToken,
    now: Timestamp,
) -> Result<(), Failure> {
    // Read first, then write: the writer is the only one, so nothing comes between. A read by
    // primary key costs less than the same update with `RETURNING` (which SQLite runs into an
    // ephemeral table), and it brings the page the update then finds in the cache.
    let (queue, state, stored) = {
        let mut statement =
            connection.prepare_cached("SELECT queue, state, lease_token FROM job WHERE id = ?1")?;
        let mut rows = statement.query(params![id.as_bytes()])?;
        let Some(row) = rows.next()? else {
            return Err(StoreError::NotFound(id).into());
        };
        let queue = names.queue(row.get_ref(0)?.as_str()?)?;
        let state = state_from_code(row.get(1)?)?;
        let stored: i64 = row.get(2)?;
        (queue, state, stored)
    };
    match state {
        JobState::Running if stored == sql_token(token) => {
            let changed = connection.prepare_cached(COMPLETE)?.execute(params![
                id.as_bytes(),
                sql_token(token),
                now.as_micros()
            ])?;
            assert_eq!(changed, 1, "the running job just read is completed");
            tally.moved(&queue, Some(JobState::Running), Some(JobState::Succeeded));
            Ok(())
        }
        // Completed before under this same token: idempotent (see `Store::complete`).
        JobState::Succeeded if stored == sql_token(token) => Ok(()),
        _ => Err(StoreError::LeaseLost { id, token }.into()),
    }
}

/// Records a failed attempt; `error` was already cut to `limits::ERROR_BYTES_MAX` by the caller
/// (with `truncate_error`, which must run once: it appends an ellipsis).
// The writer's connection, caches and tally, then the `Store::fail` call's own five inputs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fail(
    connection: &Connection,
    names: &mut Names,
    tally: &mut Tally,
    id: JobId,
    token: LeaseToken,
    error: &str,
    outcome: FailOutcome,
    now: Timestamp,
) -> Result<JobState, Failure> {
    let (queue, state) = match outcome {
        FailOutcome::Retry { at } => fenced(
            connection,
            names,
            id,
            token,
            "UPDATE job SET state = 2, run_at_us = ?3, last_error = ?4,
                            lease_holder = NULL, lease_expires_at_us = NULL
             WHERE id = ?1 AND state = 1 AND lease_token = ?2
             RETURNING queue, state",
            params![id.as_bytes(), sql_token(token), at.as_micros(), error],
        )?,
        FailOutcome::Dead => fenced(
            connection,
            names,
            id,
            token,
            "UPDATE job SET state = 4, finished_at_us = ?3, last_error = ?4,
                            lease_holder = NULL, lease_expires_at_us = NULL
             WHERE id = ?1 AND state = 1 AND lease_token = ?2
             RETURNING queue, state",
            params![id.as_bytes(), sql_token(token), now.as_micros(), error],
        )?,
    };
    tally.moved(&queue, Some(JobState::Running), Some(state));
    Ok(state)
}

/// Hands a claimed job back: the attempt counted at claim is taken back, and the job is
/// scheduled again if that leaves no attempt, retrying otherwise. Its `run_at` and lease token
/// stay, so the next claim issues a larger token.
pub(crate) fn release(
    connection: &Connection,
    names: &mut Names,
    tally: &mut Tally,
    id: JobId,
    token: LeaseToken,
) -> Result<(), Failure> {
    let (queue, state) = fenced(
        connection,
        names,
        id,
        token,
        "UPDATE job SET state = CASE WHEN attempt <= 1 THEN 0 ELSE 2 END,
                        attempt = max(attempt - 1, 0),
                        lease_holder = NULL, lease_expires_at_us = NULL
         WHERE id = ?1 AND state = 1 AND lease_token = ?2
         RETURNING queue, state",
        params![id.as_bytes(), sql_token(token)],
    )?;
    tally.moved(&queue, Some(JobState::Running), Some(state));
    Ok(())
}

pub(crate) fn cancel(
    connection: &Connection,
    names: &mut Names,
    tally: &mut Tally,
    id: JobId,
    now: Timestamp,
) -> Result<Job, Failure> {
    // The state it leaves, for the counts (`RETURNING` shows only the new row).
    let Some(before) = current_state(connection, id)? else {
        return Err(StoreError::NotFound(id).into());
    };
    let mut statement = connection.prepare_cached(concat!(
        "UPDATE job SET state = 5, finished_at_us = ?2,
                        lease_holder = NULL, lease_expires_at_us = NULL
         WHERE id = ?1 AND state IN (0, 1, 2)
         RETURNING ",
        job_columns!()
    ))?;
    if let Some(job) = one_job(
        &mut statement,
        params![id.as_bytes(), now.as_micros()],
        names,
    )? {
        tally.moved(&job.queue, Some(before), Some(job.state));
        return Ok(job);
    }
    Err(match current_state(connection, id)? {
        Some(state) => StoreError::Conflict {
            id,
            state,
            operation: "cancel",
        },
        None => StoreError::NotFound(id),
    }
    .into())
}

pub(crate) fn reschedule(
    connection: &Connection,
    names: &mut Names,
    tally: &mut Tally,
    id: JobId,
    run_at: Timestamp,
    now: Timestamp,
) -> Result<Job, Failure> {
    check_run_at(run_at, now).map_err(StoreError::Invalid)?;
    let before = current_state(connection, id)?;
    let sql = match before {
        None => return Err(StoreError::NotFound(id).into()),
        Some(JobState::Scheduled | JobState::Retrying) => concat!(
            "UPDATE job SET run_at_us = ?2 WHERE id = ?1 RETURNING ",
            job_columns!()
        ),
        // Revive: a fresh start with all its attempts, due at `run_at`.
        Some(JobState::Dead | JobState::Cancelled) => concat!(
            "UPDATE job SET state = 0, attempt = 0, run_at_us = ?2, finished_at_us = NULL
             WHERE id = ?1 RETURNING ",
            job_columns!()
        ),
        Some(state @ (JobState::Running | JobState::Succeeded)) => {
            return Err(StoreError::Conflict {
                id,
                state,
                operation: "reschedule",
            }
            .into());
        }
    };
    let mut statement = connection.prepare_cached(sql)?;
    let job = one_job(
        &mut statement,
        params![id.as_bytes(), run_at.as_micros()],
        names,
    )?
    .ok_or(StoreError::NotFound(id))?;
    tally.moved(&job.queue, before, Some(job.state));
    Ok(job)
}

/// A leader term as an SQL integer; one beyond `i64::MAX` was never granted, so it maps to -1,
/// which matches no row.
fn sql_term(term: LeaderTerm) -> i64 {
    i64::try_from(term.0).unwrap_or(-1)
}

/// Grants `node` leadership until `now + lease`: a renewal keeps its unexpired `term`, an
/// election of a free or expired leadership takes the next term; `None` when another node holds
/// it (or `node` holds it under another term). One statement: the condition and the change are
/// judged on the same row.
pub(crate) fn lead(
    connection: &Connection,
    node: &NodeId,
    term: Option<LeaderTerm>,
    lease: Duration,
    now: Timestamp,
) -> Result<Option<LeaderTerm>, Failure> {
    let expires_at = now.add(limits::clamp_lease(lease));
    let mut statement = connection.prepare_cached(
        "UPDATE leader
         SET term = CASE WHEN holder = ?1 AND term = ?2 AND expires_at_us > ?3
                         THEN term ELSE term + 1 END,
             holder = ?1, expires_at_us = ?4
         WHERE id = 1
           AND (holder IS NULL OR expires_at_us <= ?3 OR (holder = ?1 AND term = ?2))
         RETURNING term",
    )?;
    let mut rows = statement.query(params![
        node.as_str(),
        term.map(sql_term),
        now.as_micros(),
        expires_at.as_micros(),
    ])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let term: i64 = row.get(0)?;
    let term = u64::try_from(term)
        .map_err(|_| crate::error::corrupt(format!("the leader row holds term {term}")))?;
    Ok(Some(LeaderTerm(term)))
}

/// Frees leadership if `node` holds it under `term`; otherwise changes nothing.
pub(crate) fn resign(
    connection: &Connection,
    node: &NodeId,
    term: LeaderTerm,
) -> Result<(), Failure> {
    let mut statement = connection.prepare_cached(
        "UPDATE leader SET holder = NULL, expires_at_us = NULL
         WHERE id = 1 AND holder = ?1 AND term = ?2",
    )?;
    statement.execute(params![node.as_str(), sql_term(term)])?;
    Ok(())
}

/// `NotLeader` unless `term` is the current term, unexpired at `now`. Run first in a leader
/// duty's command, inside the writer's transaction: no other write can come between the check
/// and the duty, since the writer is the only one.
pub(crate) fn check_leader(
    connection: &Connection,
    term: LeaderTerm,
    now: Timestamp,
) -> Result<(), Failure> {
    let mut statement = connection
        .prepare_cached("SELECT 1 FROM leader WHERE id = 1 AND term = ?1 AND expires_at_us > ?2")?;
    if statement.exists(params![sql_term(term), now.as_micros()])? {
        Ok(())
    } else {
        Err(StoreError::NotLeader { term }.into())
    }
}

/// Ends up to `limit` expired leases, the longest-expired first; fenced by `term`.
pub(crate) fn rescue_expired(
    connection: &Connection,
    names: &mut Names,
    tally: &mut Tally,
    term: LeaderTerm,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<RescueOutcome>, Failure> {
    check_leader(connection, term, now)?;
    struct Expired {
        id: JobId,
        holder: String,
        token: i64,
        attempt: i64,
        attempt_max: i64,
        retry: (i64, i64, i64),
        queue: Queue,
    }
    let mut expired = Vec::new();
    {
        let mut statement = connection.prepare_cached(EXPIRED_LEASES)?;
        let mut rows = statement.query(params![now.as_micros(), sql_count(limit)])?;
        while let Some(row) = rows.next()? {
            expired.push(Expired {
                id: id_from_blob(row.get_ref(0)?.as_blob()?)?,
                holder: row.get(1)?,
                token: row.get(2)?,
                attempt: row.get(3)?,
                attempt_max: row.get(4)?,
                retry: (row.get(5)?, row.get(6)?, row.get(7)?),
                queue: names.queue(row.get_ref(8)?.as_str()?)?,
            });
        }
    }
    let mut outcomes = Vec::with_capacity(expired.len());
    for job in expired {
        let holder = names.node(&job.holder)?;
        let token = LeaseToken(u64::try_from(job.token).unwrap_or(0));
        let retry = retry_from_columns(job.retry.0, job.retry.1, job.retry.2)?;
        let rescue = Rescue::decide(
            u32::try_from(job.attempt).unwrap_or(0),
            u32::try_from(job.attempt_max).unwrap_or(0),
            &retry,
            &holder,
            token,
            now,
        );
        let state = rescue.state();
        let (run_at, finished_at) = match rescue.fate {
            RescueFate::Retry { run_at } => (Some(run_at.as_micros()), None),
            RescueFate::Dead { finished_at } => (None, Some(finished_at.as_micros())),
        };
        let mut statement = connection.prepare_cached(
            "UPDATE job SET state = ?2, run_at_us = coalesce(?3, run_at_us), finished_at_us = ?4,
                            last_error = ?5, lease_holder = NULL, lease_expires_at_us = NULL
             WHERE id = ?1",
        )?;
        statement.execute(params![
            job.id.as_bytes(),
            state_code(state),
            run_at,
            finished_at,
            rescue.error
        ])?;
        tally.moved(&job.queue, Some(JobState::Running), Some(state));
        outcomes.push(RescueOutcome {
            id: job.id,
            holder,
            token,
            state,
        });
    }
    Ok(outcomes)
}

/// Deletes up to `limit` finished jobs that finished before `finished_before`, oldest first;
/// fenced by `term` at `now`. Then drops the zero counts, which the purge (and the day's
/// traffic) leave: two write statements, so the writer runs it in a savepoint.
pub(crate) fn purge_finished(
    connection: &Connection,
    names: &mut Names,
    tally: &mut Tally,
    term: LeaderTerm,
    finished_before: Timestamp,
    limit: usize,
    now: Timestamp,
) -> Result<u64, Failure> {
    check_leader(connection, term, now)?;
    let mut deleted: u64 = 0;
    {
        let mut statement = connection.prepare_cached(PURGE_FINISHED)?;
        let mut rows = statement.query(params![finished_before.as_micros(), sql_count(limit)])?;
        while let Some(row) = rows.next()? {
            let queue = names.queue(row.get_ref(0)?.as_str()?)?;
            tally.moved(&queue, Some(state_from_code(row.get(1)?)?), None);
            deleted += 1;
        }
    }
    // Zero counts (of this purge or the day's traffic) go once the tally is applied, which the
    // writer does at commit; those from earlier transactions go now.
    connection.prepare_cached(PURGE_ZERO_COUNTS)?.execute([])?;
    Ok(deleted)
}

/// `insert` under an idempotency key (see `Store::insert_idempotent`): a record live at `now`
/// is returned and nothing is written; otherwise the jobs are inserted and `record` is kept,
/// replacing an expired one under its key. The batch and the record were checked by the
/// caller. Several writes: the writer runs it in a savepoint, so a duplicate id undoes the
/// jobs before it and keeps no record. The look-up and the writes are in the writer's one
/// transaction, so no other write comes between them.
pub(crate) fn insert_idempotent(
    connection: &Connection,
    tally: &mut Tally,
    jobs: Vec<NewJob>,
    record: &IdempotencyRecord,
    now: Timestamp,
) -> Result<Idempotent, Failure> {
    if let Some(held) = held_record_on(connection, &record.key, now)? {
        return Ok(Idempotent::Replayed(held));
    }
    let ids = insert(connection, tally, jobs, now)?;
    let mut statement = connection.prepare_cached(
        "INSERT INTO idempotency_key (key, fingerprint, created_at_us, expires_at_us, response)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (key) DO UPDATE SET
             fingerprint = excluded.fingerprint, created_at_us = excluded.created_at_us,
             expires_at_us = excluded.expires_at_us, response = excluded.response",
    )?;
    statement.execute(params![
        record.key.as_str(),
        record.fingerprint,
        record.created_at.as_micros(),
        record.expires_at.as_micros(),
        record.response,
    ])?;
    Ok(Idempotent::Inserted(ids))
}

/// Deletes up to `limit` idempotency records expired at `now`, the earliest first; fenced by
/// `term`. One write statement (the check only reads).
pub(crate) fn purge_idempotency(
    connection: &Connection,
    term: LeaderTerm,
    now: Timestamp,
    limit: usize,
) -> Result<u64, Failure> {
    check_leader(connection, term, now)?;
    let mut statement = connection.prepare_cached(PURGE_IDEMPOTENCY)?;
    let deleted = statement.execute(params![now.as_micros(), sql_count(limit)])?;
    Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
}

/// Stores a checked token; `TokenExists` if its id is taken. One write statement.
pub(crate) fn insert_token(connection: &Connection, token: &ApiToken) -> Result<(), Failure> {
    let mut statement = connection.prepare_cached(
        "INSERT INTO api_token (id, label, scopes, secret_sha256, created_at_us, expires_at_us,
                                revoked_at_us)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let inserted = statement.execute(params![
        token.id.as_str(),
        token.label,
        scopes_column(&token.scopes),
        token.secret_sha256.as_slice(),
        token.created_at.as_micros(),
        token.expires_at.map(Timestamp::as_micros),
        token.revoked_at.map(Timestamp::as_micros),
    ]);
    match inserted {
        Ok(_) => Ok(()),
        Err(error) if is_primary_key_violation(&error) => {
            Err(StoreError::TokenExists(token.id.clone()).into())
        }
        Err(error) => Err(error.into()),
    }
}

/// Revokes a token at `now`, keeping an earlier revocation's time; `TokenNotFound` if there is
/// none. One write statement.
pub(crate) fn revoke_token(
    connection: &Connection,
    id: &TokenId,
    now: Timestamp,
) -> Result<ApiToken, Failure> {
    let mut statement = connection.prepare_cached(concat!(
        "UPDATE api_token SET revoked_at_us = coalesce(revoked_at_us, ?2) WHERE id = ?1
         RETURNING ",
        token_columns!()
    ))?;
    let mut rows = statement.query(params![id.as_str(), now.as_micros()])?;
    match rows.next()? {
        Some(row) => token_from_row(row),
        None => Err(StoreError::TokenNotFound(id.clone()).into()),
    }
}
