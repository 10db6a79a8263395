//! Every write after a claim: the brief's `updateJobStatus` and `removeJob`.
//!
//! Owns the fenced writes of a lease holder (`extend_lease`, `fail`, `release`; `complete` is
//! the same kind of `UPDATE` for many jobs at once, in `completer`), the user's `cancel` and
//! `reschedule`, and the leader duties `rescue_expired` and `purge_finished` (each fenced by the
//! leader's term, checked first in its own transaction: see `leader`; the purge also folds the
//! job counts' zero rows). The job counts of every write here are kept by the jobs table's
//! triggers (see `migrations`), in the write's own statement. Must not
//! change a job whose lease token is not the caller's: a fenced write is one
//! `UPDATE ... WHERE id = $1 AND lease_token = $2 AND lease_expires_at_us IS NOT NULL`, so the
//! check and the change are one atomic step, and a refused write changes nothing.
//!
//! Statements that pick jobs by id say "running" as `lease_expires_at_us IS NOT NULL` (the
//! schema's check constraint makes that the same as `state = 1`), not `state = 1`: with
//! `state = 1` in the query, the planner may scan the partial index of running jobs (whose
//! predicate is `state = 1`) instead of looking the id up in the primary key, and with
//! statistics that still say few jobs run it did: 0.1 ms became 1.3 ms per write at 100,000
//! running jobs, and a batch of 1,000 completions took 10 s instead of 8 ms.
//!
//! Each write is a single statement in autocommit where possible (one round trip, one commit).
//! Only when it matched no row does a second statement look up why (`NotFound`, `LeaseLost`,
//! `Conflict`), which costs nothing on the common path.

use deadpool_postgres::GenericClient;
use punctual_core::{
    FailOutcome, Job, JobId, JobState, LeaderTerm, LeaseToken, Rescue, RescueFate, RescueOutcome,
    StoreError, Timestamp, check_run_at, truncate_error,
};
use tokio_postgres::types::ToSql;

use crate::PgStore;
use crate::error::pg;
use crate::leader::check_leader;
use crate::rows::{
    Names, column, job_columns, job_id, jobs_from_rows, retry_from_columns, sql_count, state_code,
    state_from_code, uuid,
};

/// How often `cancel` and `reschedule` try again when the job changed between their update and
/// their look-up (a race with another writer). Each retry needs a new concurrent change.
const RACE_RETRIES_MAX: usize = 8;

/// Runs a fenced update (parameters `$1` id and `$2` token first, matched with
/// `id = $1 AND lease_token = $2 AND lease_expires_at_us IS NOT NULL`); `NotFound` or
/// `LeaseLost` when it matched no row.
async fn fenced(
    store: &PgStore,
    sql: &str,
    id: JobId,
    token: LeaseToken,
    more: &[&(dyn ToSql + Sync)],
) -> Result<(), StoreError> {
    let client = store.client().await?;
    let statement = client.prepare_cached(sql).await.map_err(pg)?;
    let uuid = uuid(id);
    let token_value = token_column(token);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&uuid, &token_value];
    params.extend_from_slice(more);
    let updated = client.execute(&statement, &params).await.map_err(pg)?;
    match updated {
        1 => Ok(()),
        0 => match state_of(&client, id).await? {
            None => Err(StoreError::NotFound(id)),
            Some(_) => Err(StoreError::LeaseLost { id, token }),
        },
        more => unreachable!("an update by primary key matched {more} rows"),
    }
}

/// A lease token as the `bigint` column holds it. Tokens count claims of one job and stay far
/// below `i64::MAX`; one that does not fit matches no row, which is the right answer.
pub(crate) fn token_column(token: LeaseToken) -> i64 {
    i64::try_from(token.0).unwrap_or(-1)
}

/// The job's state, or `None` if there is no such job.
async fn state_of(client: &impl GenericClient, id: JobId) -> Result<Option<JobState>, StoreError> {
    let statement = client
        .prepare_cached("SELECT state FROM punctual_jobs WHERE id = $1")
        .await
        .map_err(pg)?;
    let row = client
        .query_opt(&statement, &[&uuid(id)])
        .await
        .map_err(pg)?;
    row.map(|row| state_from_code(column(&row, 0)?)).transpose()
}

pub(crate) async fn extend_lease(
    store: &PgStore,
    id: JobId,
    token: LeaseToken,
    expires_at: Timestamp,
) -> Result<(), StoreError> {
    let expires_at = expires_at.as_micros();
    fenced(
        store,
        "UPDATE punctual_jobs SET lease_expires_at_us = $3
         WHERE id = $1 AND lease_token = $2 AND lease_expires_at_us IS NOT NULL",
        id,
        token,
        &[&expires_at],
    )
    .await
}

pub(crate) async fn fail(
    store: &PgStore,
    id: JobId,
    token: LeaseToken,
    error: &str,
    outcome: FailOutcome,
    now: Timestamp,
) -> Result<JobState, StoreError> {
    let error = truncate_error(error);
    match outcome {
        FailOutcome::Retry { at } => {
            let at = at.as_micros();
            fenced(
                store,
                "UPDATE punctual_jobs
                 SET state = 2, run_at_us = $3, last_error = $4,
                     lease_holder = NULL, lease_expires_at_us = NULL
                 WHERE id = $1 AND lease_token = $2 AND lease_expires_at_us IS NOT NULL",
                id,
                token,
                &[&at, &error],
            )
            .await?;
            Ok(JobState::Retrying)
        }
        FailOutcome::Dead => {
            let now = now.as_micros();
            fenced(
                store,
                "UPDATE punctual_jobs
                 SET state = 4, finished_at_us = $3, last_error = $4,
                     lease_holder = NULL, lease_expires_at_us = NULL
                 WHERE id = $1 AND lease_token = $2 AND lease_expires_at_us IS NOT NULL",
                id,
                token,
                &[&now, &error],
            )
            .await?;
            Ok(JobState::Dead)
        }
    }
}

/// Hands a claimed job back: the attempt counted at claim is taken back (scheduled again if it
/// was the first, retrying otherwise); `run_at` and the lease token stay, since tokens never
/// repeat.
pub(crate) async fn release(
    store: &PgStore,
    id: JobId,
    token: LeaseToken,
) -> Result<(), StoreError> {
    fenced(
        store,
        "UPDATE punctual_jobs
         SET attempt = attempt - 1, state = CASE WHEN attempt = 1 THEN 0 ELSE 2 END,
             lease_holder = NULL, lease_expires_at_us = NULL
         WHERE id = $1 AND lease_token = $2 AND lease_expires_at_us IS NOT NULL",
        id,
        token,
        &[],
    )
    .await
}

/// Runs `sql` (which returns the changed job, or nothing when the job's state does not allow
/// the operation) until it changes the job or the job's state explains why not.
async fn update_unless(
    store: &PgStore,
    sql: &str,
    id: JobId,
    params: &[&(dyn ToSql + Sync)],
    operation: &'static str,
    refuses: impl Fn(JobState) -> bool,
) -> Result<Job, StoreError> {
    let client = store.client().await?;
    let statement = client.prepare_cached(sql).await.map_err(pg)?;
    for _ in 0..RACE_RETRIES_MAX {
        let rows = client.query(&statement, params).await.map_err(pg)?;
        if let Some(job) = jobs_from_rows(&rows)?.pop() {
            return Ok(job);
        }
        match state_of(&client, id).await? {
            None => return Err(StoreError::NotFound(id)),
            Some(state) if refuses(state) => {
                return Err(StoreError::Conflict {
                    id,
                    state,
                    operation,
                });
            }
            // Another writer moved the job into a state that allows the operation between our
            // two statements: try again.
            Some(_) => continue,
        }
    }
    Err(StoreError::Unavailable(format!(
        "job {id} kept changing during {operation}"
    )))
}

/// Cancels a scheduled, retrying or running job; a running job's lease ends at once.
pub(crate) async fn cancel(store: &PgStore, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
    let uuid = uuid(id);
    let now = now.as_micros();
    update_unless(
        store,
        concat!(
            "UPDATE punctual_jobs
             SET state = 5, finished_at_us = $2, lease_holder = NULL, lease_expires_at_us = NULL
             WHERE id = $1 AND state IN (0, 1, 2)
             RETURNING ",
            job_columns!()
        ),
        id,
        &[&uuid, &now],
        "cancel",
        JobState::is_final,
    )
    .await
}

/// Moves a pending job's `run_at`, or revives a dead or cancelled job (scheduled, attempts
/// reset, its last error kept for people to read).
pub(crate) async fn reschedule(
    store: &PgStore,
    id: JobId,
    run_at: Timestamp,
    now: Timestamp,
) -> Result<Job, StoreError> {
    check_run_at(run_at, now)?;
    let uuid = uuid(id);
    let run_at = run_at.as_micros();
    update_unless(
        store,
        concat!(
            "UPDATE punctual_jobs
             SET run_at_us = $2,
                 state = CASE WHEN state IN (4, 5) THEN 0 ELSE state END,
                 attempt = CASE WHEN state IN (4, 5) THEN 0 ELSE attempt END,
                 finished_at_us = CASE WHEN state IN (4, 5) THEN NULL ELSE finished_at_us END
             WHERE id = $1 AND state IN (0, 2, 4, 5)
             RETURNING ",
            job_columns!()
        ),
        id,
        &[&uuid, &run_at],
        "reschedule",
        |state| matches!(state, JobState::Running | JobState::Succeeded),
    )
    .await
}

/// Ends up to `limit` leases that expired at or before `now`, oldest expiry first, if `term`
/// is the current leader's.
///
/// After the leader check, two statements in the same transaction: the expired rows are locked (`SKIP LOCKED`, so two
/// rescuers never rescue one job, and a holder's concurrent fenced write either lands first or
/// waits and then finds its token gone), then each is retried after its policy's backoff
/// (computed here with the core's `RetryPolicy::backoff`, the one definition of it) or, with no
/// attempts left, marked dead.
pub(crate) async fn rescue_expired(
    store: &PgStore,
    term: LeaderTerm,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<RescueOutcome>, StoreError> {
    let mut client = store.client().await?;
    let transaction = client.transaction().await.map_err(pg)?;
    // On a refusal the transaction is dropped, which rolls it back.
    check_leader(&transaction, term, now).await?;
    let select = transaction
        .prepare_cached(
            "SELECT id, lease_holder, lease_token, attempt, attempt_max,
                    backoff_base_us, backoff_max_us, jitter_percent
             FROM punctual_jobs
             WHERE state = 1 AND lease_expires_at_us <= $1
             ORDER BY lease_expires_at_us, id
             LIMIT $2
             FOR UPDATE SKIP LOCKED",
        )
        .await
        .map_err(pg)?;
    let rows = transaction
        .query(&select, &[&now.as_micros(), &sql_count(limit)])
        .await
        .map_err(pg)?;
    if rows.is_empty() {
        transaction.commit().await.map_err(pg)?;
        return Ok(Vec::new());
    }

    let mut names = Names::default();
    let mut outcomes = Vec::with_capacity(rows.len());
    let mut ids = Vec::with_capacity(rows.len());
    let mut states = Vec::with_capacity(rows.len());
    let mut run_ats: Vec<Option<i64>> = Vec::with_capacity(rows.len());
    let mut finished_ats: Vec<Option<i64>> = Vec::with_capacity(rows.len());
    let mut errors = Vec::with_capacity(rows.len());
    for row in &rows {
        let id = job_id(column(row, 0)?);
        let holder = names.node(column(row, 1)?)?;
        let token: i64 = column(row, 2)?;
        let token =
            LeaseToken(u64::try_from(token).map_err(|_| {
                crate::error::corrupt(format!("job {id} has a negative lease token"))
            })?);
        let attempt: i32 = column(row, 3)?;
        let attempt_max: i32 = column(row, 4)?;
        let retry = retry_from_columns(column(row, 5)?, column(row, 6)?, column(row, 7)?)?;
        let rescue = Rescue::decide(
            u32::try_from(attempt).unwrap_or(0),
            u32::try_from(attempt_max).unwrap_or(0),
            &retry,
            &holder,
            token,
            now,
        );
        let state = rescue.state();
        match rescue.fate {
            RescueFate::Retry { run_at } => {
                run_ats.push(Some(run_at.as_micros()));
                finished_ats.push(None);
            }
            RescueFate::Dead { finished_at } => {
                run_ats.push(None);
                finished_ats.push(Some(finished_at.as_micros()));
            }
        }
        errors.push(rescue.error);
        ids.push(uuid(id));
        states.push(state_code(state));
        outcomes.push(RescueOutcome {
            id,
            holder,
            token,
            state,
        });
    }
    let update = transaction
        .prepare_cached(
            "UPDATE punctual_jobs
             SET state = rescued.state,
                 run_at_us = coalesce(rescued.run_at_us, punctual_jobs.run_at_us),
                 finished_at_us = rescued.finished_at_us,
                 last_error = rescued.last_error,
                 lease_holder = NULL,
                 lease_expires_at_us = NULL
             FROM unnest($1::uuid[], $2::int2[], $3::int8[], $4::int8[], $5::text[])
                 AS rescued(rescued_id, state, run_at_us, finished_at_us, last_error)
             WHERE id = rescued.rescued_id",
        )
        .await
        .map_err(pg)?;
    let updated = transaction
        .execute(&update, &[&ids, &states, &run_ats, &finished_ats, &errors])
        .await
        .map_err(pg)?;
    assert_eq!(
        updated as usize,
        outcomes.len(),
        "every locked expired job is updated"
    );
    transaction.commit().await.map_err(pg)?;
    Ok(outcomes)
}

/// Deletes count rows that add nothing (see `migrations`): rows at zero, and sets of one
/// (queue, state)'s rows that sum to zero, at most `$1` rows looked at. Rows a writer holds are
/// skipped, never waited for; the rows deleted are locked first and their counts are the
/// newest, so what they sum to (zero) is what leaves the totals, and the totals stay exact.
const FOLD_ZERO_COUNTS: &str = "
    WITH candidates AS MATERIALIZED (
        SELECT queue, state, slot, count FROM punctual_job_counts
        WHERE count = 0 OR (queue, state) IN (
            SELECT queue, state FROM punctual_job_counts
            GROUP BY queue, state HAVING sum(count) = 0)
        LIMIT $1
        FOR UPDATE SKIP LOCKED
    ), doomed AS (
        SELECT queue, state, slot FROM candidates
        WHERE count = 0 OR (queue, state) IN (
            SELECT queue, state FROM candidates GROUP BY queue, state HAVING sum(count) = 0)
    )
    DELETE FROM punctual_job_counts AS counts USING doomed
    WHERE counts.queue = doomed.queue AND counts.state = doomed.state
        AND counts.slot = doomed.slot";

/// Most count rows one purge looks at for `FOLD_ZERO_COUNTS`; the next purge takes the rest.
const FOLD_ROWS_MAX: i64 = 10_000;

/// Deletes up to `limit` final jobs that finished before `finished_before`, oldest first, if
/// `term` is the current leader's at `now`; then deletes count rows that add nothing, so the
/// counts table stays as small as the (queue, state) pairs in use.
pub(crate) async fn purge_finished(
    store: &PgStore,
    term: LeaderTerm,
    finished_before: Timestamp,
    limit: usize,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let mut client = store.client().await?;
    let transaction = client.transaction().await.map_err(pg)?;
    check_leader(&transaction, term, now).await?;
    // Locked first, so a job revived by `reschedule` at this moment is either revived (and not
    // deleted: the lock's re-check finds it no longer final) or deleted before it is revived.
    let statement = transaction
        .prepare_cached(
            "WITH doomed AS MATERIALIZED (
                 SELECT id AS doomed_id FROM punctual_jobs
                 WHERE state IN (3, 4, 5) AND finished_at_us < $1
                 ORDER BY finished_at_us, id
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED
             )
             DELETE FROM punctual_jobs WHERE id = ANY(ARRAY(SELECT doomed_id FROM doomed))",
        )
        .await
        .map_err(pg)?;
    let deleted = transaction
        .execute(
            &statement,
            &[&finished_before.as_micros(), &sql_count(limit)],
        )
        .await
        .map_err(pg)?;
    let fold = transaction
        .prepare_cached(FOLD_ZERO_COUNTS)
        .await
        .map_err(pg)?;
    transaction
        .execute(&fold, &[&FOLD_ROWS_MAX])
        .await
        .map_err(pg)?;
    transaction.commit().await.map_err(pg)?;
    Ok(deleted)
}
