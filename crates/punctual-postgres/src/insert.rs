//! Inserting jobs: the brief's `addJob`, in batches of up to `limits::INSERT_BATCH_MAX`.
//!
//! Owns the one `INSERT` statement: the whole batch is sent as one array per column and
//! expanded by `unnest`, so 10,000 jobs are one statement, one round trip and one commit (and
//! one notification, see `migrations`). Also used by `claim` to store a recurring job's next
//! occurrence inside the claim's transaction, and by `in_transaction` to insert inside the
//! caller's own transaction. Must not change existing rows: a duplicate id fails the whole
//! batch.

use std::collections::HashSet;

use deadpool_postgres::GenericClient;
use punctual_core::{JobId, NewJob, StoreError, Timestamp, ValidationError, limits};

use crate::PgStore;
use crate::error::{is_duplicate_id, pg};
use crate::rows::{ScheduleColumns, job_id, retry_columns, uuid};
use tokio_postgres::types::ToSql;

/// A new job's columns; state, attempt and lease token start at 0, lease and times empty.
const INSERT: &str = "
    INSERT INTO punctual_jobs (
        id, queue, kind, priority, run_at_us, attempt_max, schedule_cron, schedule_time_zone,
        schedule_interval_us, backoff_base_us, backoff_max_us, jitter_percent, payload,
        state, attempt, lease_token, created_at_us)
    SELECT batch.*, 0, 0, 0, $14
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int2[], $5::int8[], $6::int4[],
                $7::text[], $8::text[], $9::int8[], $10::int8[], $11::int8[], $12::int2[],
                $13::text[]) AS batch";

/// How often an insert that hit a duplicate id is retried when the duplicate cannot be found
/// afterwards (it was purged in between). More than twice in a row is not a race but a bug.
pub(crate) const DUPLICATE_LOOKUPS_MAX: usize = 3;

/// Stores `jobs` as they are at `now`, all or none (the statement is atomic).
pub(crate) async fn insert(
    store: &PgStore,
    jobs: Vec<NewJob>,
    now: Timestamp,
) -> Result<Vec<JobId>, StoreError> {
    check_batch(&jobs, now)?;
    let ids: Vec<JobId> = jobs.iter().map(|job| job.id).collect();
    if jobs.is_empty() {
        return Ok(ids);
    }
    let client = store.client().await?;
    for _ in 0..DUPLICATE_LOOKUPS_MAX {
        match insert_rows(&client, &jobs, now).await {
            Ok(()) => return Ok(ids),
            Err(error) if is_duplicate_id(&error) => {
                if let Some(duplicate) = first_duplicate(&client, &ids).await? {
                    return Err(StoreError::Duplicate(duplicate));
                }
            }
            Err(error) => return Err(pg(error)),
        }
    }
    Err(StoreError::Unavailable(
        "an insert kept hitting a duplicate id that was gone when looked up".to_owned(),
    ))
}

/// `Invalid` for a batch over `limits::INSERT_BATCH_MAX`, or with a job that fails
/// `NewJob::validate` at `now` (a struct literal may skip `NewJob::new`): the whole batch is
/// refused.
pub(crate) fn check_batch(jobs: &[NewJob], now: Timestamp) -> Result<(), StoreError> {
    if jobs.len() > limits::INSERT_BATCH_MAX {
        return Err(ValidationError::TooLong {
            field: "batch",
            bytes: jobs.len(),
            limit: limits::INSERT_BATCH_MAX,
        }
        .into());
    }
    for job in jobs {
        job.validate(now)?;
    }
    Ok(())
}

/// Sends the batch as one `INSERT ... SELECT FROM unnest(...)`.
pub(crate) async fn insert_rows(
    client: &impl GenericClient,
    jobs: &[NewJob],
    now: Timestamp,
) -> Result<(), tokio_postgres::Error> {
    let columns = Columns::of(jobs, now);
    let statement = client.prepare_cached(INSERT).await?;
    client.execute(&statement, &columns.params()).await?;
    Ok(())
}

/// `INSERT` as `in_transaction` runs it on a transaction of the caller's, with the table named
/// by `table` (schema-qualified), where no statement cache is at hand.
pub(crate) async fn insert_rows_in(
    transaction: &tokio_postgres::Transaction<'_>,
    table: &str,
    jobs: &[NewJob],
    now: Timestamp,
) -> Result<(), tokio_postgres::Error> {
    let columns = Columns::of(jobs, now);
    let sql = INSERT.replace("punctual_jobs", table);
    transaction.execute(sql.as_str(), &columns.params()).await?;
    Ok(())
}

/// A batch as one array per column, the parameters of `INSERT`.
struct Columns<'a> {
    ids: Vec<uuid::Uuid>,
    queues: Vec<&'a str>,
    kinds: Vec<&'a str>,
    priorities: Vec<i16>,
    run_ats: Vec<i64>,
    attempt_maxes: Vec<i32>,
    crons: Vec<Option<&'a str>>,
    zones: Vec<Option<&'a str>>,
    intervals: Vec<Option<i64>>,
    bases: Vec<i64>,
    maxes: Vec<i64>,
    jitters: Vec<i16>,
    payloads: Vec<&'a str>,
    created_at: i64,
}

impl<'a> Columns<'a> {
    fn of(jobs: &'a [NewJob], now: Timestamp) -> Columns<'a> {
        let count = jobs.len();
        let mut columns = Columns {
            ids: Vec::with_capacity(count),
            queues: Vec::with_capacity(count),
            kinds: Vec::with_capacity(count),
            priorities: Vec::with_capacity(count),
            run_ats: Vec::with_capacity(count),
            attempt_maxes: Vec::with_capacity(count),
            crons: Vec::with_capacity(count),
            zones: Vec::with_capacity(count),
            intervals: Vec::with_capacity(count),
            bases: Vec::with_capacity(count),
            maxes: Vec::with_capacity(count),
            jitters: Vec::with_capacity(count),
            payloads: Vec::with_capacity(count),
            created_at: now.as_micros(),
        };
        for job in jobs {
            columns.ids.push(uuid(job.id));
            columns.queues.push(job.queue.as_str());
            columns.kinds.push(job.kind.as_str());
            columns.priorities.push(i16::from(job.priority.get()));
            columns.run_ats.push(job.run_at.as_micros());
            // A validated attempt_max is at most limits::ATTEMPT_MAX_LIMIT (1,000).
            columns
                .attempt_maxes
                .push(i32::try_from(job.attempt_max).unwrap_or(i32::MAX));
            let schedule = ScheduleColumns::of(job.schedule.as_ref());
            columns.crons.push(schedule.cron);
            columns.zones.push(schedule.time_zone);
            columns.intervals.push(schedule.interval_us);
            let (base, max, jitter) = retry_columns(&job.retry);
            columns.bases.push(base);
            columns.maxes.push(max);
            columns.jitters.push(jitter);
            columns.payloads.push(job.payload.as_str());
        }
        columns
    }

    /// `$1` to `$14` of `INSERT`.
    fn params(&self) -> [&(dyn ToSql + Sync); 14] {
        [
            &self.ids,
            &self.queues,
            &self.kinds,
            &self.priorities,
            &self.run_ats,
            &self.attempt_maxes,
            &self.crons,
            &self.zones,
            &self.intervals,
            &self.bases,
            &self.maxes,
            &self.jitters,
            &self.payloads,
            &self.created_at,
        ]
    }
}

/// The first id of the batch, in batch order, that is already stored or repeats an earlier one
/// of the batch (what `MemoryStore` reports); `None` if there is none any more.
pub(crate) async fn first_duplicate(
    client: &impl GenericClient,
    ids: &[JobId],
) -> Result<Option<JobId>, StoreError> {
    let uuids: Vec<uuid::Uuid> = ids.iter().copied().map(uuid).collect();
    let rows = client.query(STORED_IDS, &[&uuids]).await.map_err(pg)?;
    Ok(first_of(ids, &stored_ids(&rows)?))
}

/// Which of the ids `$1` are stored.
pub(crate) const STORED_IDS: &str = "SELECT id FROM punctual_jobs WHERE id = ANY($1::uuid[])";

pub(crate) fn stored_ids(rows: &[tokio_postgres::Row]) -> Result<HashSet<JobId>, StoreError> {
    rows.iter()
        .map(|row| row.try_get(0).map(job_id))
        .collect::<Result<_, _>>()
        .map_err(pg)
}

/// The first of `ids` that is in `stored` or repeats an earlier one.
pub(crate) fn first_of(ids: &[JobId], stored: &HashSet<JobId>) -> Option<JobId> {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.iter()
        .copied()
        .find(|id| stored.contains(id) || !seen.insert(*id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insert_names_as_many_columns_as_it_selects() {
        let columns = INSERT
            .split("INSERT INTO punctual_jobs (")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .expect("a column list")
            .split(',')
            .count();
        // 13 unnested arrays plus state, attempt, lease_token and created_at.
        assert_eq!(columns, 13 + 4);
    }
}
