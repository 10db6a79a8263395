//! Inserts under an idempotency key, and the purge of expired keys: the
//! `punctual_idempotency_keys` table (see `migrations`).
//!
//! Owns `insert_idempotent` and `purge_idempotency`. Must not let two requests under one key
//! both insert their jobs, nor keep a record without its jobs or jobs without their record.
//!
//! # How a key is taken
//!
//! One transaction, whose first statement takes the key:
//!
//! ```text
//! INSERT INTO punctual_idempotency_keys ... VALUES (the record)
//! ON CONFLICT (key) DO UPDATE SET (the record) WHERE the held record expired at now
//! RETURNING ...
//! ```
//!
//! - A row comes back: the key was free, or held by an expired record, which this one replaced.
//!   The jobs are inserted next in the same transaction (as `insert` would: a duplicate id
//!   rolls everything back, record included), and the commit makes both visible at once.
//! - No row: a live record holds the key. `ON CONFLICT DO UPDATE` locked that row even though
//!   its `WHERE` refused the update, so it cannot change before it is read back and replayed.
//!
//! Between nodes the primary key decides. A second request under a key whose first is still
//! in flight waits on the first's uncommitted row (the insert's uniqueness check, or the row
//! lock of an expired record the first is replacing), then re-checks against what the first
//! committed: a live record (it replays), or nothing (the first rolled back: it inserts). So
//! at most one request per live key ever inserts, however the requests interleave. The waits
//! are as long as the first request's transaction, bounded by `lock_timeout`.
//!
//! A batch that `insert` would refuse before looking at the store (too many jobs, an invalid
//! one) is answered by one read: the held record if there is one (a replay never looks at its
//! batch, as `MemoryStore` does), else the refusal; nothing is written either way.

use deadpool_postgres::GenericClient;
use punctual_core::{
    IdempotencyKey, IdempotencyRecord, Idempotent, JobId, LeaderTerm, NewJob, StoreError, Timestamp,
};
use tokio_postgres::Row;

use crate::PgStore;
use crate::error::{corrupt, is_duplicate_id, pg};
use crate::insert::{DUPLICATE_LOOKUPS_MAX, check_batch, first_duplicate, insert_rows};
use crate::leader::check_leader;
use crate::rows::{column, sql_count};

/// The columns `record_from_row` reads, in its order.
macro_rules! record_columns {
    () => {
        "key, fingerprint, created_at_us, expires_at_us, response"
    };
}

/// Takes the key for `$1 .. $5` unless a record live at `$6` holds it (see the module docs).
const TAKE_KEY: &str = "
    INSERT INTO punctual_idempotency_keys AS held
        (key, fingerprint, created_at_us, expires_at_us, response)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (key) DO UPDATE SET
        fingerprint = EXCLUDED.fingerprint, created_at_us = EXCLUDED.created_at_us,
        expires_at_us = EXCLUDED.expires_at_us, response = EXCLUDED.response
    WHERE held.expires_at_us <= $6
    RETURNING true";

/// The record under `$1` (as its newest committed version, or the one this transaction locked).
const RECORD: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM punctual_idempotency_keys WHERE key = $1"
);

/// The record under `$1` if it is live at `$2`.
const HELD_RECORD: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM punctual_idempotency_keys WHERE key = $1 AND expires_at_us > $2"
);

fn record_from_row(row: &Row) -> Result<IdempotencyRecord, StoreError> {
    let key_text: &str = column(row, 0)?;
    let key = IdempotencyKey::new(key_text)
        .map_err(|error| corrupt(format!("stored idempotency key {key_text:?}: {error}")))?;
    Ok(IdempotencyRecord {
        key,
        fingerprint: column(row, 1)?,
        created_at: Timestamp::from_micros(column(row, 2)?),
        expires_at: Timestamp::from_micros(column(row, 3)?),
        response: column(row, 4)?,
    })
}

async fn held_record(
    client: &impl GenericClient,
    key: &IdempotencyKey,
    now: Timestamp,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let statement = client.prepare_cached(HELD_RECORD).await.map_err(pg)?;
    let row = client
        .query_opt(&statement, &[&key.as_str(), &now.as_micros()])
        .await
        .map_err(pg)?;
    row.as_ref().map(record_from_row).transpose()
}

/// See `Store::insert_idempotent` and the module docs.
pub(crate) async fn insert_idempotent(
    store: &PgStore,
    jobs: Vec<NewJob>,
    record: IdempotencyRecord,
    now: Timestamp,
) -> Result<Idempotent, StoreError> {
    record.validate()?;
    let mut client = store.client().await?;
    if let Err(refused) = check_batch(&jobs, now) {
        return match held_record(&client, &record.key, now).await? {
            Some(held) => Ok(Idempotent::Replayed(held)),
            None => Err(refused),
        };
    }
    let ids: Vec<JobId> = jobs.iter().map(|job| job.id).collect();
    for _ in 0..DUPLICATE_LOOKUPS_MAX {
        let transaction = client.transaction().await.map_err(pg)?;
        let take = transaction.prepare_cached(TAKE_KEY).await.map_err(pg)?;
        let taken = transaction
            .query_opt(
                &take,
                &[
                    &record.key.as_str(),
                    &record.fingerprint,
                    &record.created_at.as_micros(),
                    &record.expires_at.as_micros(),
                    &record.response,
                    &now.as_micros(),
                ],
            )
            .await
            .map_err(pg)?;
        if taken.is_none() {
            // Held by a live record, which the statement locked: read it back and replay it.
            let read = transaction.prepare_cached(RECORD).await.map_err(pg)?;
            let row = transaction
                .query_one(&read, &[&record.key.as_str()])
                .await
                .map_err(pg)?;
            let held = record_from_row(&row)?;
            transaction.rollback().await.map_err(pg)?;
            return Ok(Idempotent::Replayed(held));
        }
        if jobs.is_empty() {
            transaction.commit().await.map_err(pg)?;
            return Ok(Idempotent::Inserted(ids));
        }
        match insert_rows(&transaction, &jobs, now).await {
            Ok(()) => {
                transaction.commit().await.map_err(pg)?;
                return Ok(Idempotent::Inserted(ids));
            }
            Err(error) if is_duplicate_id(&error) => {
                // The record goes with the jobs: nothing of this request is kept.
                transaction.rollback().await.map_err(pg)?;
                if let Some(duplicate) = first_duplicate(&client, &ids).await? {
                    return Err(StoreError::Duplicate(duplicate));
                }
                // The clashing job was purged in between: try again.
            }
            Err(error) => return Err(pg(error)),
        }
    }
    Err(StoreError::Unavailable(
        "an insert kept hitting a duplicate id that was gone when looked up".to_owned(),
    ))
}

/// Deletes up to `limit` records expired at `now`, the earliest first, if `term` is the current
/// leader's at `now`. Locked first and skipped when locked, so a record an `insert_idempotent`
/// is replacing at this moment is left to it.
pub(crate) async fn purge_idempotency(
    store: &PgStore,
    term: LeaderTerm,
    now: Timestamp,
    limit: usize,
) -> Result<u64, StoreError> {
    let mut client = store.client().await?;
    let transaction = client.transaction().await.map_err(pg)?;
    check_leader(&transaction, term, now).await?;
    let statement = transaction
        .prepare_cached(
            "WITH doomed AS MATERIALIZED (
                 SELECT key AS doomed_key FROM punctual_idempotency_keys
                 WHERE expires_at_us <= $1
                 ORDER BY expires_at_us, key
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED
             )
             DELETE FROM punctual_idempotency_keys
             WHERE key = ANY(ARRAY(SELECT doomed_key FROM doomed))",
        )
        .await
        .map_err(pg)?;
    let deleted = transaction
        .execute(&statement, &[&now.as_micros(), &sql_count(limit)])
        .await
        .map_err(pg)?;
    transaction.commit().await.map_err(pg)?;
    Ok(deleted)
}
