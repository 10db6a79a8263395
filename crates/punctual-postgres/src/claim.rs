//! Claiming due jobs: the brief's `getDueJobs`, made safe for many nodes at once.
//!
//! Owns the claim statement and its transaction. Must not hand one job to two claimers, nor
//! claim more rows than asked, nor let a recurring job's occurrence be stored twice.
//!
//! # How a claim works (issue 3, item 2)
//!
//! One statement picks and takes the jobs:
//!
//! ```text
//! WITH candidates AS MATERIALIZED (
//!     for each priority level 0..=9 (and each served queue, or each kind asked for):
//!         the first `limit` pending rows with run_at_us <= due_by, in (run_at_us, id) order,
//!         locked FOR UPDATE SKIP LOCKED
//!     then the first `limit` of those in (priority, run_at_us, id) order
//! )
//! UPDATE punctual_jobs ... WHERE id = ANY(ARRAY(SELECT candidate_id FROM candidates)) RETURNING ...
//! ```
//!
//! - `FOR UPDATE SKIP LOCKED`: a row another claimer has locked is passed over, not waited for,
//!   so concurrent claimers take disjoint sets without queueing behind one another. A row that
//!   another claimer took (and committed) after our snapshot is re-checked against `state IN
//!   (0, 2)` on its newest version by PostgreSQL and dropped, so a job is never claimed twice.
//! - `MATERIALIZED`: the candidate set is computed once, so the `UPDATE` takes a fixed set of at
//!   most `limit` ids. Without it, PostgreSQL may inline the CTE and re-evaluate the `LIMIT`
//!   subquery inside the update, which can lock and update more rows than asked.
//! - `id = ANY(ARRAY(...))` rather than a join: the ids are gathered once and each is looked
//!   up in the primary key. With a join, the planner (which cannot know how many candidates a
//!   generic plan's `LIMIT $2` yields) chose a hash join over a scan of the whole table: 80 ms
//!   per claim at 500,000 rows instead of a few.
//! - One range scan per priority level (`priority = p AND run_at_us <= due_by` on the partial
//!   index `(priority, run_at_us, id) WHERE state IN (0, 2)`), rather than one scan of the whole
//!   index in (priority, run_at_us, id) order: that scan would have to walk past every future
//!   job of a level before reaching the next level, and PostgreSQL 15 cannot skip. The cost is
//!   up to ten cheap index probes per claim, and when several levels have due jobs at once, up
//!   to `limit` rows per level are locked for the statement's few milliseconds although only
//!   `limit` in all are taken; the others stay pending and are skipped by concurrent claimers
//!   only for that moment.
//! - A queues filter (`CLAIM_IN_QUEUES`): the same scan per (queue, level), on the index by
//!   queue, so due jobs of other queues are never read.
//! - A kinds filter (`CLAIM_OF_KINDS`): the same scan per (kind, level), on the index by kind
//!   (schema version 5), so due jobs of other kinds, however many wait ahead, are never read.
//!   Ten probes per kind asked for (10,000 at `limits::CLAIM_KINDS_MAX` kinds), and the rows
//!   locked but not taken are then up to `limit` per (kind, level) with due jobs.
//! - Both filters: no index has both, so one is a range and the other a check on its rows,
//!   which passes rows over (read, never locked: the row lock is taken only on rows that pass).
//!   `walks_kinds` picks the filter with fewer ranges to walk, the kinds on a tie, as the SQLite
//!   store does (its `ranges` module says why): the kinds' ranges pass over jobs of those kinds
//!   in other queues, the queues' ranges jobs of other kinds in those queues. Unlike SQLite's,
//!   PostgreSQL's planner has statistics, and may serve the queues' statement from the index
//!   by kind when it finds the kinds asked for rare (`kind = ANY($6)` is an index condition
//!   there too); the choice here only fixes which filter is the per-range equality.
//!
//! The claimed rows come back from `RETURNING` in no defined order, so they are sorted here.
//! A recurring job claimed for the first time (its new lease token is 1) has its next
//! occurrence inserted in the same transaction, so a crash between the two cannot lose or
//! duplicate it; a later claim of the same occurrence (a retry, a hand-back) has a larger token
//! and stores nothing.

use punctual_core::{
    ClaimRequest, ClaimedJob, LeaseToken, NewJob, Queue, StoreError, Timestamp, check_kinds,
};
use tokio_postgres::types::ToSql;

use crate::PgStore;
use crate::error::pg;
use crate::insert::insert_rows;
use crate::rows::{job_columns, jobs_from_rows, kind_names, micros, sql_count};

/// What a claim does to each candidate. $1 due_by, $2 limit, $3 now, $4 holder, $5 lease (µs);
/// the filtered candidate statements add $6 kinds and $7 queues (`NULL` for any).
macro_rules! take_candidates {
    () => {
        concat!(
            "
            UPDATE punctual_jobs SET
                state = 1,
                attempt = attempt + 1,
                lease_token = lease_token + 1,
                lease_holder = $4,
                lease_expires_at_us = greatest($3, run_at_us) + $5,
                started_at_us = $3,
                finished_at_us = NULL
            WHERE id = ANY(ARRAY(SELECT candidate_id FROM candidates))
            RETURNING ",
            job_columns!()
        )
    };
}

/// Claims from every queue, any kind.
const CLAIM_ANY_QUEUE: &str = concat!(
    "
    WITH candidates AS MATERIALIZED (
        SELECT due.id AS candidate_id
        FROM generate_series(0, 9) AS level(priority)
        CROSS JOIN LATERAL (
            SELECT id, run_at_us FROM punctual_jobs
            WHERE state IN (0, 2) AND priority = level.priority AND run_at_us <= $1
            ORDER BY run_at_us, id
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        ) AS due
        ORDER BY level.priority, due.run_at_us, due.id
        LIMIT $2
    )",
    take_candidates!()
);

/// Claims from the queues in $7, one range scan per (queue, priority level), of the kinds in
/// $6 (`NULL` for any kind, checked on each row).
const CLAIM_IN_QUEUES: &str = concat!(
    "
    WITH candidates AS MATERIALIZED (
        SELECT due.id AS candidate_id
        FROM unnest($7::text[]) AS served(queue)
        CROSS JOIN generate_series(0, 9) AS level(priority)
        CROSS JOIN LATERAL (
            SELECT id, run_at_us FROM punctual_jobs
            WHERE state IN (0, 2) AND queue = served.queue AND priority = level.priority
                AND run_at_us <= $1 AND ($6::text[] IS NULL OR kind = ANY($6::text[]))
            ORDER BY run_at_us, id
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        ) AS due
        ORDER BY level.priority, due.run_at_us, due.id
        LIMIT $2
    )",
    take_candidates!()
);

/// Claims the kinds in $6, one range scan per (kind, priority level), from the queues in $7
/// (`NULL` for every queue, checked on each row).
const CLAIM_OF_KINDS: &str = concat!(
    "
    WITH candidates AS MATERIALIZED (
        SELECT due.id AS candidate_id
        FROM unnest($6::text[]) AS wanted(kind)
        CROSS JOIN generate_series(0, 9) AS level(priority)
        CROSS JOIN LATERAL (
            SELECT id, run_at_us FROM punctual_jobs
            WHERE state IN (0, 2) AND kind = wanted.kind AND priority = level.priority
                AND run_at_us <= $1 AND ($7::text[] IS NULL OR queue = ANY($7::text[]))
            ORDER BY run_at_us, id
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        ) AS due
        ORDER BY level.priority, due.run_at_us, due.id
        LIMIT $2
    )",
    take_candidates!()
);

/// Whether a request of `kinds` (each once) in `queues` (each once; `None` for all) walks the
/// kinds' ranges (`punctual_jobs_pending_by_kind`) rather than the queues'
/// (`punctual_jobs_pending_by_queue`): with no queues filter always, with both when there are
/// no more kinds than queues. Shared with `next_due`, so a node wakes for what it would claim
/// at the cost it would claim it.
pub(crate) fn walks_kinds(queues: Option<&[&str]>, kinds: &[&str]) -> bool {
    queues.is_none_or(|queues| kinds.len() <= queues.len())
}

/// Queue names, each once (a claim walks a queue's ranges once however often it is named).
pub(crate) fn queue_names(queues: &[Queue]) -> Vec<&str> {
    let mut names: Vec<&str> = queues.iter().map(Queue::as_str).collect();
    names.sort_unstable();
    names.dedup();
    names
}

pub(crate) async fn claim(
    store: &PgStore,
    request: ClaimRequest,
    now: Timestamp,
) -> Result<Vec<ClaimedJob>, StoreError> {
    check_kinds(request.kinds.as_deref())?;
    let limit = request.bounded_limit();
    let kinds = request.kinds.as_deref().map(kind_names);
    if limit == 0 || kinds.as_ref().is_some_and(Vec::is_empty) {
        return Ok(Vec::new());
    }
    let lease = micros(request.bounded_lease());
    let due_by = request.due_by.as_micros();
    let limit = sql_count(limit);
    let now_us = now.as_micros();
    let holder = request.holder.as_str();
    let queues: Option<Vec<&str>> = request.queues.as_deref().map(queue_names);

    let mut client = store.client().await?;
    let transaction = client.transaction().await.map_err(pg)?;
    // The filters, when present, are $6 and $7; which index ranges they walk is chosen here.
    let (sql, filtered) = match (&queues, &kinds) {
        (None, None) => (CLAIM_ANY_QUEUE, false),
        (_, Some(names)) if walks_kinds(queues.as_deref(), names) => (CLAIM_OF_KINDS, true),
        _ => (CLAIM_IN_QUEUES, true),
    };
    let mut parameters: Vec<&(dyn ToSql + Sync)> = vec![&due_by, &limit, &now_us, &holder, &lease];
    if filtered {
        parameters.extend([&kinds as &(dyn ToSql + Sync), &queues]);
    }
    let statement = transaction.prepare_cached(sql).await.map_err(pg)?;
    let rows = transaction
        .query(&statement, &parameters)
        .await
        .map_err(pg)?;
    if rows.is_empty() {
        transaction.rollback().await.map_err(pg)?;
        return Ok(Vec::new());
    }
    let mut claimed = jobs_from_rows(&rows)?;
    assert!(
        claimed.len() as i64 <= limit,
        "a claim took {} rows but was asked for {limit}",
        claimed.len()
    );
    claimed.sort_unstable_by_key(|job| (job.priority, job.run_at, job.id));

    // Only the first claim of an occurrence stores the next one.
    let next: Vec<NewJob> = claimed
        .iter()
        .filter(|job| job.lease_token == LeaseToken(1))
        .filter_map(|job| job.next_occurrence(now))
        .collect();
    if !next.is_empty() {
        insert_rows(&transaction, &next, now).await.map_err(pg)?;
    }
    transaction.commit().await.map_err(pg)?;
    Ok(claimed)
}

#[cfg(test)]
mod tests {
    use punctual_core::Priority;

    #[test]
    fn the_statements_walk_every_priority_level() {
        // The claim statements and next_due's write the levels as 0..=9 literally.
        assert_eq!(Priority::HIGHEST.get(), 0);
        assert_eq!(Priority::LOWEST.get(), 9);
        for statement in [
            super::CLAIM_ANY_QUEUE,
            super::CLAIM_IN_QUEUES,
            super::CLAIM_OF_KINDS,
            crate::reads::NEXT_DUE,
            crate::reads::NEXT_DUE_IN_QUEUES,
            crate::reads::NEXT_DUE_OF_KINDS,
        ] {
            assert!(statement.contains("generate_series(0, 9)"), "{statement}");
        }
    }
}
