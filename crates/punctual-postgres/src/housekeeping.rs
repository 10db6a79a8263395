//! What an operator (or a benchmark) asks of the store's own schema besides jobs: how the jobs
//! table is doing (`table_health`), and dropping the schema with everything in it
//! (`drop_schema`).
//!
//! Must not touch anything outside the store's schema: the health is read for the store's own
//! `punctual_jobs`, and only a schema named in `PgOptions::schema` is ever dropped, never
//! `public` or a system schema, which hold more than punctual's tables.

use punctual_core::StoreError;

use crate::PgStore;
use crate::error::{corrupt, pg};
use crate::rows::column;

/// The jobs table as PostgreSQL's statistics see it.
///
/// The row counts come from the cumulative statistics system: PostgreSQL 15 flushes a
/// backend's counts at most once a second while it is busy, and when it goes idle or exits, so
/// they lag the writes by up to about a second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableHealth {
    /// `n_dead_tup`: row versions left dead by updates and deletes and not yet reclaimed by
    /// vacuum or page pruning.
    pub dead_tuples: u64,
    /// `n_live_tup`: the estimated number of live rows (jobs).
    pub live_tuples: u64,
    /// `pg_total_relation_size`: heap, indexes and TOAST, in bytes.
    pub table_bytes: u64,
}

/// Schemas that hold more than punctual's tables; `drop_schema` refuses them.
const SYSTEM_SCHEMAS: [&str; 2] = ["public", "information_schema"];

/// Why `schema` (the store's `PgOptions::schema`) must not be dropped, if it must not.
fn check_droppable(schema: Option<&str>) -> Result<&str, StoreError> {
    // The core has no error for "refused"; `Unavailable` with the reason is the closest, as for
    // a bad connection URL. Nothing was changed.
    let Some(schema) = schema else {
        return Err(StoreError::Unavailable(
            "refusing to drop a schema: this store was opened without PgOptions::schema, so its \
             tables are in the connection's default schema, which may hold other data"
                .to_owned(),
        ));
    };
    if SYSTEM_SCHEMAS.contains(&schema) || schema.starts_with("pg_") {
        return Err(StoreError::Unavailable(format!(
            "refusing to drop schema {schema}: it is not punctual's own and may hold other data"
        )));
    }
    Ok(schema)
}

/// See `PgStore::table_health`.
pub(crate) async fn table_health(store: &PgStore) -> Result<TableHealth, StoreError> {
    let client = store.client().await?;
    // By the jobs table's qualified name, so it is the store's own table whatever the
    // connection's `search_path`. The statistics row is missing until the table's first counts
    // are flushed: zero then. Not a cached statement: read rarely, and the plan would pin the
    // table's oid.
    let row = client
        .query_opt(
            "SELECT coalesce(stat.n_dead_tup, 0),
                    coalesce(stat.n_live_tup, 0),
                    pg_total_relation_size(jobs.oid)
             FROM (SELECT to_regclass($1)::oid AS oid) AS jobs
             LEFT JOIN pg_stat_user_tables AS stat ON stat.relid = jobs.oid
             WHERE jobs.oid IS NOT NULL",
            &[&store.settings.jobs_table],
        )
        .await
        .map_err(pg)?;
    let Some(row) = row else {
        return Err(corrupt(format!(
            "no jobs table {} in the database",
            store.settings.jobs_table
        )));
    };
    let count = |index: usize, what: &str| -> Result<u64, StoreError> {
        let value: i64 = column(&row, index)?;
        u64::try_from(value).map_err(|_| corrupt(format!("the jobs table's {what} is {value}")))
    };
    Ok(TableHealth {
        dead_tuples: count(0, "n_dead_tup")?,
        live_tuples: count(1, "n_live_tup")?,
        table_bytes: count(2, "pg_total_relation_size")?,
    })
}

/// See `PgStore::drop_schema`.
pub(crate) async fn drop_schema(store: PgStore) -> Result<(), StoreError> {
    let schema = check_droppable(store.schema())?;
    let mut client = store.client().await?;
    let transaction = client.transaction().await.map_err(pg)?;
    // The drop waits for the locks of statements in flight however long they take, rather
    // than failing after the store's `lock_timeout`: a paused node's idle transaction is
    // ended by `idle_in_transaction_timeout` meanwhile. A plain identifier, checked at
    // connect; quoted anyway. IF EXISTS: dropping twice, or a schema an operator already
    // dropped, is done.
    transaction
        .batch_execute(&format!(
            "SET LOCAL lock_timeout = 0; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        ))
        .await
        .map_err(pg)?;
    transaction.commit().await.map_err(pg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_named_schema_of_punctuals_own_may_be_dropped() {
        assert_eq!(check_droppable(Some("punctual")).ok(), Some("punctual"));
        assert_eq!(
            check_droppable(Some("punctual_bench_1764400000_42")).ok(),
            Some("punctual_bench_1764400000_42")
        );
        for refused in [
            None,
            Some("public"),
            Some("information_schema"),
            Some("pg_catalog"),
            Some("pg_toast"),
        ] {
            let error = check_droppable(refused).expect_err("refused");
            assert!(error.to_string().contains("refusing to drop"), "{error}");
        }
    }
}
