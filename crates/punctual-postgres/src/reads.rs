//! Reading jobs without changing them: `get`, `list`, `counts`, `queue_stats`, `next_due`,
//! `next_lease_expiry`.
//!
//! Owns the read-only statements. Must not write, lock, or take a transaction: each read is one
//! statement on a pooled connection, consistent within itself.

use punctual_core::{
    Cursor, Job, JobFilter, JobId, JobPage, JobState, Kind, Queue, QueueStats, StateCount,
    StateCounts, StoreError, Timestamp, check_kinds, limits,
};
use tokio_postgres::types::ToSql;

use crate::PgStore;
use crate::claim::{queue_names, walks_kinds};
use crate::error::{corrupt, pg};
use crate::rows::{
    column, job_columns, jobs_from_rows, kind_names, sql_count, state_code, state_from_code, uuid,
};

pub(crate) async fn get(store: &PgStore, id: JobId) -> Result<Option<Job>, StoreError> {
    let client = store.client().await?;
    let statement = client
        .prepare_cached(concat!(
            "SELECT ",
            job_columns!(),
            " FROM punctual_jobs WHERE id = $1"
        ))
        .await
        .map_err(pg)?;
    let rows = client.query(&statement, &[&uuid(id)]).await.map_err(pg)?;
    Ok(jobs_from_rows(&rows)?.pop())
}

/// One page in id order. The statement names only the filters present (at most 64 shapes, each
/// prepared once per connection), so that `id > $n` is a range condition on the primary key
/// and a page costs its own rows, not every row before it. Each filter is
/// `JobFilter::matches`'s reading of it, as SQL: equality, and `due_from <= run_at < due_before`.
pub(crate) async fn list(
    store: &PgStore,
    filter: JobFilter,
    after: Option<Cursor>,
    limit: usize,
) -> Result<JobPage, StoreError> {
    let limit = limit.min(limits::PAGE_SIZE_MAX);
    if limit == 0 {
        return Ok(JobPage {
            jobs: Vec::new(),
            next: None,
        });
    }
    let after = after.map(|Cursor(id)| uuid(id));
    let queue = filter.queue.as_ref().map(Queue::as_str);
    let state = filter.state.map(state_code);
    let kind = filter.kind.as_ref().map(|kind| kind.as_str());
    let due_from = filter.due_from.map(Timestamp::as_micros);
    let due_before = filter.due_before.map(Timestamp::as_micros);
    let limit_value = sql_count(limit);

    let mut sql = String::from(concat!(
        "SELECT ",
        job_columns!(),
        " FROM punctual_jobs WHERE true"
    ));
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(7);
    if let Some(after) = &after {
        params.push(after);
        sql.push_str(&format!(" AND id > ${}", params.len()));
    }
    if let Some(queue) = &queue {
        params.push(queue);
        sql.push_str(&format!(" AND queue = ${}", params.len()));
    }
    if let Some(state) = &state {
        params.push(state);
        sql.push_str(&format!(" AND state = ${}", params.len()));
    }
    if let Some(kind) = &kind {
        params.push(kind);
        sql.push_str(&format!(" AND kind = ${}", params.len()));
    }
    if let Some(due_from) = &due_from {
        params.push(due_from);
        sql.push_str(&format!(" AND run_at_us >= ${}", params.len()));
    }
    if let Some(due_before) = &due_before {
        params.push(due_before);
        sql.push_str(&format!(" AND run_at_us < ${}", params.len()));
    }
    params.push(&limit_value);
    sql.push_str(&format!(" ORDER BY id LIMIT ${}", params.len()));

    let client = store.client().await?;
    let statement = client.prepare_cached(&sql).await.map_err(pg)?;
    let rows = client.query(&statement, &params).await.map_err(pg)?;
    let jobs = jobs_from_rows(&rows)?;
    let next = (jobs.len() == limit)
        .then(|| jobs.last().map(|job| Cursor(job.id)))
        .flatten();
    Ok(JobPage { jobs, next })
}

/// The kept counts (see `migrations`): the slots' rows of each (queue, state) summed, zeros
/// left out. Reads the counts table only, a few rows per (queue, state), however many jobs
/// are stored.
macro_rules! totals {
    () => {
        "SELECT queue, state, sum(count)::bigint AS count FROM punctual_job_counts
         GROUP BY queue, state HAVING sum(count) <> 0"
    };
}

/// Counts per queue and state, sorted here (by queue name's bytes, then `JobState`'s order) so
/// the order does not depend on the database's collation.
pub(crate) async fn counts(store: &PgStore) -> Result<Vec<StateCount>, StoreError> {
    let client = store.client().await?;
    let statement = client.prepare_cached(totals!()).await.map_err(pg)?;
    let rows = client.query(&statement, &[]).await.map_err(pg)?;
    let mut counts = rows
        .iter()
        .map(|row| {
            let queue: &str = column(row, 0)?;
            let queue =
                Queue::new(queue).map_err(|error| corrupt(format!("stored queue: {error}")))?;
            let state: JobState = state_from_code(column(row, 1)?)?;
            let count: i64 = column(row, 2)?;
            let count =
                u64::try_from(count).map_err(|_| corrupt(format!("a negative count: {count}")))?;
            Ok(StateCount {
                queue,
                state,
                count,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    counts.sort_unstable_by(|a, b| (&a.queue, a.state).cmp(&(&b.queue, b.state)));
    Ok(counts)
}

/// Each queue with a job, by name in bytewise order (`COLLATE "C"`, `Queue`'s order), at most
/// `$1` of them: its counts by state, as two arrays, and its due jobs at `$2`. The due jobs are
/// walked per priority level on `punctual_jobs_pending_by_queue` (the claim's index for a
/// queue), the levels one after the other under one `LIMIT $3`, which stops the walk at the
/// cap however the jobs fall across levels; the oldest is the least of each level's first
/// entry. One statement, so the counts and the due jobs are of one snapshot.
const QUEUE_STATS: &str = concat!(
    "WITH totals AS (",
    totals!(),
    r#"), listed AS (
        SELECT queue FROM totals GROUP BY queue ORDER BY queue COLLATE "C" LIMIT $1
    )
    SELECT listed.queue,
        (SELECT array_agg(totals.state ORDER BY totals.state) FROM totals
         WHERE totals.queue = listed.queue),
        (SELECT array_agg(totals.count ORDER BY totals.state) FROM totals
         WHERE totals.queue = listed.queue),
        (SELECT count(*) FROM (
             SELECT 1 FROM generate_series(0, 9) AS level(priority)
             CROSS JOIN LATERAL (
                 SELECT 1 FROM punctual_jobs
                 WHERE state IN (0, 2) AND queue = listed.queue AND priority = level.priority
                     AND run_at_us <= $2
                 ORDER BY run_at_us
                 LIMIT $3
             ) AS walk
             LIMIT $3
         ) AS capped),
        (SELECT min(first.run_at_us)
         FROM generate_series(0, 9) AS level(priority)
         CROSS JOIN LATERAL (
             SELECT run_at_us FROM punctual_jobs
             WHERE state IN (0, 2) AND queue = listed.queue AND priority = level.priority
                 AND run_at_us <= $2
             ORDER BY run_at_us
             LIMIT 1
         ) AS first)
    FROM listed
    ORDER BY listed.queue COLLATE "C""#
);

pub(crate) async fn queue_stats(
    store: &PgStore,
    now: Timestamp,
) -> Result<Vec<QueueStats>, StoreError> {
    let client = store.client().await?;
    let statement = client.prepare_cached(QUEUE_STATS).await.map_err(pg)?;
    let listed = sql_count(limits::QUEUES_LISTED_MAX);
    let cap = i64::try_from(limits::DUE_COUNT_MAX).unwrap_or(i64::MAX);
    let rows = client
        .query(&statement, &[&listed, &now.as_micros(), &cap])
        .await
        .map_err(pg)?;
    rows.iter()
        .map(|row| {
            let name: &str = column(row, 0)?;
            let queue =
                Queue::new(name).map_err(|error| corrupt(format!("stored queue: {error}")))?;
            let states: Vec<i16> = column(row, 1)?;
            let counts: Vec<i64> = column(row, 2)?;
            let mut by_state = StateCounts::default();
            for (state, count) in states.into_iter().zip(counts) {
                let count = u64::try_from(count)
                    .map_err(|_| corrupt(format!("queue {queue} has a negative count")))?;
                by_state.add(state_from_code(state)?, count);
            }
            let due: i64 = column(row, 3)?;
            Ok(QueueStats {
                queue,
                counts: by_state,
                due: u64::try_from(due).map_err(|_| corrupt("a negative count"))?,
                oldest_due: column::<Option<i64>>(row, 4)?.map(Timestamp::from_micros),
            })
        })
        .collect()
}

/// The earliest pending `run_at` over every queue and kind: the first entry of each priority
/// level's range of `punctual_jobs_pending` (one probe per level), and the least of those.
pub(crate) const NEXT_DUE: &str = "SELECT min(first.run_at_us)
     FROM generate_series(0, 9) AS level(priority)
     CROSS JOIN LATERAL (
         SELECT run_at_us FROM punctual_jobs
         WHERE state IN (0, 2) AND priority = level.priority
         ORDER BY run_at_us LIMIT 1
     ) AS first";

/// `NEXT_DUE` in the queues in `$2`, one probe per (queue, level) of
/// `punctual_jobs_pending_by_queue`, of the kinds in `$1` (`NULL` for any kind: with kinds,
/// each range is walked to its first row of those kinds).
pub(crate) const NEXT_DUE_IN_QUEUES: &str = "SELECT min(first.run_at_us)
     FROM unnest($2::text[]) AS served(queue)
     CROSS JOIN generate_series(0, 9) AS level(priority)
     CROSS JOIN LATERAL (
         SELECT run_at_us FROM punctual_jobs
         WHERE state IN (0, 2) AND queue = served.queue
             AND priority = level.priority
             AND ($1::text[] IS NULL OR kind = ANY($1::text[]))
         ORDER BY run_at_us LIMIT 1
     ) AS first";

/// `NEXT_DUE` of the kinds in `$1`, one probe per (kind, level) of
/// `punctual_jobs_pending_by_kind`, in the queues in `$2` (`NULL` for every queue: with
/// queues, each range is walked to its first row in one of them).
pub(crate) const NEXT_DUE_OF_KINDS: &str = "SELECT min(first.run_at_us)
     FROM unnest($1::text[]) AS wanted(kind)
     CROSS JOIN generate_series(0, 9) AS level(priority)
     CROSS JOIN LATERAL (
         SELECT run_at_us FROM punctual_jobs
         WHERE state IN (0, 2) AND kind = wanted.kind
             AND priority = level.priority
             AND ($2::text[] IS NULL OR queue = ANY($2::text[]))
         ORDER BY run_at_us LIMIT 1
     ) AS first";

/// The earliest pending `run_at` in `queues` of `kinds`: the ranges a claim with these filters
/// walks (`claim::walks_kinds` chooses), each to its first row, and the least of those.
pub(crate) async fn next_due(
    store: &PgStore,
    queues: Option<&[Queue]>,
    kinds: Option<&[Kind]>,
) -> Result<Option<Timestamp>, StoreError> {
    check_kinds(kinds)?;
    let kinds = kinds.map(kind_names);
    let queues = queues.map(queue_names);
    if kinds.as_ref().is_some_and(Vec::is_empty) || queues.as_ref().is_some_and(Vec::is_empty) {
        return Ok(None);
    }
    let client = store.client().await?;
    let row = match (&queues, &kinds) {
        (None, None) => {
            let statement = client.prepare_cached(NEXT_DUE).await.map_err(pg)?;
            client.query_one(&statement, &[]).await
        }
        (_, Some(names)) if walks_kinds(queues.as_deref(), names) => {
            let statement = client.prepare_cached(NEXT_DUE_OF_KINDS).await.map_err(pg)?;
            client.query_one(&statement, &[&kinds, &queues]).await
        }
        _ => {
            let statement = client
                .prepare_cached(NEXT_DUE_IN_QUEUES)
                .await
                .map_err(pg)?;
            client.query_one(&statement, &[&kinds, &queues]).await
        }
    }
    .map_err(pg)?;
    Ok(column::<Option<i64>>(&row, 0)?.map(Timestamp::from_micros))
}

pub(crate) async fn next_lease_expiry(store: &PgStore) -> Result<Option<Timestamp>, StoreError> {
    let client = store.client().await?;
    let statement = client
        .prepare_cached("SELECT min(lease_expires_at_us) FROM punctual_jobs WHERE state = 1")
        .await
        .map_err(pg)?;
    let row = client.query_one(&statement, &[]).await.map_err(pg)?;
    Ok(column::<Option<i64>>(&row, 0)?.map(Timestamp::from_micros))
}
