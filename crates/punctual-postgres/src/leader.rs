//! Leadership through the database (issue 3, item 5): the `punctual_leader` row, and the check
//! that fences the leader duties.
//!
//! Owns `lead`, `resign` and `check_leader`. `lead` is one `UPDATE` of the one row, so two nodes
//! electing themselves at once are ordered by its row lock: the second re-reads the row the first
//! wrote (PostgreSQL's re-check under `READ COMMITTED`) and finds it taken. `check_leader` runs
//! first in a duty's transaction and locks the row `FOR SHARE` until that transaction ends: a new
//! term's `UPDATE` waits for a deposed leader's duty in flight to commit, and a duty that starts
//! after the new term sees it and is refused. So no deposed leader's write lands inside a later
//! term, whatever the nodes' clocks say. That wait is bounded: a duty's node paused inside its
//! transaction would otherwise stall every election; past `PgOptions::lock_timeout` the `UPDATE`
//! fails with `Unavailable` and changes nothing (the caller asks again at its next renewal), and
//! `PgOptions::idle_in_transaction_timeout` ends the paused transaction, freeing the row.
//!
//! Must not touch jobs: the duties themselves live in `transitions`.

use std::time::Duration;

use deadpool_postgres::GenericClient;
use punctual_core::{LeaderTerm, NodeId, StoreError, Timestamp, limits};

use crate::PgStore;
use crate::error::{corrupt, pg};
use crate::rows::column;

/// A leader term as the `bigint` column holds it; one beyond `i64::MAX` was never granted, so it
/// maps to -1, which matches no row.
fn term_column(term: LeaderTerm) -> i64 {
    i64::try_from(term.0).unwrap_or(-1)
}

/// See `Store::lead`: a renewal keeps `term`, an election of a free or expired leadership takes
/// the next one, and anything else changes nothing and is `None`.
pub(crate) async fn lead(
    store: &PgStore,
    node: &NodeId,
    term: Option<LeaderTerm>,
    lease: Duration,
    now: Timestamp,
) -> Result<Option<LeaderTerm>, StoreError> {
    let expires_at = now.add(limits::clamp_lease(lease));
    let client = store.client().await?;
    let statement = client
        .prepare_cached(
            "UPDATE punctual_leader
             SET term = CASE WHEN holder = $1 AND term = $2 AND expires_at_us > $3
                             THEN term ELSE term + 1 END,
                 holder = $1, expires_at_us = $4
             WHERE id = 1
               AND (holder IS NULL OR expires_at_us <= $3 OR (holder = $1 AND term = $2))
             RETURNING term",
        )
        .await
        .map_err(pg)?;
    let row = client
        .query_opt(
            &statement,
            &[
                &node.as_str(),
                &term.map(term_column),
                &now.as_micros(),
                &expires_at.as_micros(),
            ],
        )
        .await
        .map_err(pg)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let term: i64 = column(&row, 0)?;
    let term =
        u64::try_from(term).map_err(|_| corrupt(format!("the leader row holds term {term}")))?;
    Ok(Some(LeaderTerm(term)))
}

/// Frees leadership if `node` holds it under `term`; otherwise changes nothing.
pub(crate) async fn resign(
    store: &PgStore,
    node: &NodeId,
    term: LeaderTerm,
) -> Result<(), StoreError> {
    let client = store.client().await?;
    let statement = client
        .prepare_cached(
            "UPDATE punctual_leader SET holder = NULL, expires_at_us = NULL
             WHERE id = 1 AND holder = $1 AND term = $2",
        )
        .await
        .map_err(pg)?;
    client
        .execute(&statement, &[&node.as_str(), &term_column(term)])
        .await
        .map_err(pg)?;
    Ok(())
}

/// `NotLeader` unless `term` is the current term, unexpired at `now`. Call it first inside the
/// duty's transaction: the row stays locked `FOR SHARE` until that transaction ends.
pub(crate) async fn check_leader(
    transaction: &impl GenericClient,
    term: LeaderTerm,
    now: Timestamp,
) -> Result<(), StoreError> {
    let statement = transaction
        .prepare_cached(
            "SELECT 1 FROM punctual_leader
             WHERE id = 1 AND term = $1 AND expires_at_us > $2
             FOR SHARE",
        )
        .await
        .map_err(pg)?;
    let row = transaction
        .query_opt(&statement, &[&term_column(term), &now.as_micros()])
        .await
        .map_err(pg)?;
    match row {
        Some(_) => Ok(()),
        None => Err(StoreError::NotLeader { term }),
    }
}
