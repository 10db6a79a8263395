//! Work inside the caller's own transaction (issue 3, item 6): `PgStore::insert_in` schedules
//! jobs that exist if and only if the caller's transaction commits, and `PgStore::complete_in`
//! completes a job together with the handler's own writes. See the crate's documentation for
//! the contract this gives.
//!
//! Owns those two operations. Must not begin, commit or roll back the caller's transaction: it
//! only runs statements in it, plus a savepoint of its own around an insert, so that a duplicate
//! id is reported as `Duplicate` and leaves the caller's transaction usable (PostgreSQL aborts a
//! whole transaction on a failed statement otherwise). Table names are qualified with the
//! store's schema, so the caller's connection need not share the store's `search_path`.

use punctual_core::{JobId, LeaseToken, NewJob, StoreError, Timestamp};
use tokio_postgres::Transaction;

use crate::completer::completed_under;
use crate::error::{is_duplicate_id, pg};
use crate::insert::{
    DUPLICATE_LOOKUPS_MAX, STORED_IDS, check_batch, first_of, insert_rows_in, stored_ids,
};
use crate::rows::{column, uuid};
use crate::transitions::token_column;

/// Rolls back only the failed insert, then forgets the savepoint.
const UNDO_INSERT: &str =
    "ROLLBACK TO SAVEPOINT punctual_insert_in; RELEASE SAVEPOINT punctual_insert_in";

/// Stores `jobs` in `transaction`: all or none, visible to others (and announced to listening
/// nodes) when it commits, gone if it rolls back.
pub(crate) async fn insert_in(
    transaction: &Transaction<'_>,
    table: &str,
    jobs: Vec<NewJob>,
    now: Timestamp,
) -> Result<Vec<JobId>, StoreError> {
    check_batch(&jobs, now)?;
    let ids: Vec<JobId> = jobs.iter().map(|job| job.id).collect();
    if jobs.is_empty() {
        return Ok(ids);
    }
    for _ in 0..DUPLICATE_LOOKUPS_MAX {
        transaction
            .batch_execute("SAVEPOINT punctual_insert_in")
            .await
            .map_err(pg)?;
        let error = match insert_rows_in(transaction, table, &jobs, now).await {
            Ok(()) => {
                transaction
                    .batch_execute("RELEASE SAVEPOINT punctual_insert_in")
                    .await
                    .map_err(pg)?;
                return Ok(ids);
            }
            Err(error) => error,
        };
        transaction.batch_execute(UNDO_INSERT).await.map_err(pg)?;
        if !is_duplicate_id(&error) {
            return Err(pg(error));
        }
        let uuids: Vec<uuid::Uuid> = ids.iter().copied().map(uuid).collect();
        let rows = transaction
            .query(
                STORED_IDS.replace("punctual_jobs", table).as_str(),
                &[&uuids],
            )
            .await
            .map_err(pg)?;
        if let Some(duplicate) = first_of(&ids, &stored_ids(&rows)?) {
            return Err(StoreError::Duplicate(duplicate));
        }
        // The clashing job was purged in between: try again.
    }
    Err(StoreError::Unavailable(
        "an insert kept hitting a duplicate id that was gone when looked up".to_owned(),
    ))
}

/// Completes the attempt under `token` in `transaction`, fenced like `Store::complete` (and
/// idempotent like it): `LeaseLost` when the token is not the job's running lease, and then the
/// caller must roll back. The job's row stays locked until the transaction ends, so the
/// rescuer skips it meanwhile and no other node can take the job while the caller commits.
pub(crate) async fn complete_in(
    transaction: &Transaction<'_>,
    table: &str,
    id: JobId,
    token: LeaseToken,
    now: Timestamp,
) -> Result<(), StoreError> {
    let complete = format!(
        "UPDATE {table}
         SET state = 3, finished_at_us = $3, lease_holder = NULL, lease_expires_at_us = NULL
         WHERE id = $1 AND lease_token = $2 AND lease_expires_at_us IS NOT NULL"
    );
    let updated = transaction
        .execute(
            complete.as_str(),
            &[&uuid(id), &token_column(token), &now.as_micros()],
        )
        .await
        .map_err(pg)?;
    match updated {
        1 => return Ok(()),
        0 => {}
        more => unreachable!("an update by primary key matched {more} rows"),
    }
    let lookup = format!("SELECT state, lease_token FROM {table} WHERE id = $1");
    let row = transaction
        .query_opt(lookup.as_str(), &[&uuid(id)])
        .await
        .map_err(pg)?;
    match row {
        None => Err(StoreError::NotFound(id)),
        Some(row) if completed_under((column(&row, 0)?, column(&row, 1)?), token) => Ok(()),
        Some(_) => Err(StoreError::LeaseLost { id, token }),
    }
}
