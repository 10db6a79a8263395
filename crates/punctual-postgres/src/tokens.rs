//! API tokens: the `punctual_api_tokens` table (see `migrations`).
//!
//! Owns `insert_token`, `get_token`, `list_tokens` and `revoke_token`: each one statement in
//! autocommit. Must not store a token that fails `ApiToken::validate`, nor change a token but to
//! revoke it (once: a revocation keeps the first `revoked_at`).

use punctual_core::{ApiToken, StoreError, Timestamp, TokenId, limits};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use crate::PgStore;
use crate::error::{corrupt, pg};
use crate::rows::{column, sql_count};

/// The columns `token_from_row` reads, in its order.
macro_rules! token_columns {
    () => {
        "id, label, scopes, secret_sha256, created_at_us, expires_at_us, revoked_at_us"
    };
}

fn token_from_row(row: &Row) -> Result<ApiToken, StoreError> {
    let id_text: &str = column(row, 0)?;
    let id = TokenId::new(id_text)
        .map_err(|error| corrupt(format!("stored token id {id_text:?}: {error}")))?;
    let digest: &[u8] = column(row, 3)?;
    let secret_sha256: [u8; 32] = digest.try_into().map_err(|_| {
        corrupt(format!(
            "token {id}'s secret digest is {} bytes, not 32",
            digest.len()
        ))
    })?;
    Ok(ApiToken {
        label: column(row, 1)?,
        scopes: column(row, 2)?,
        secret_sha256,
        created_at: Timestamp::from_micros(column(row, 4)?),
        expires_at: column::<Option<i64>>(row, 5)?.map(Timestamp::from_micros),
        revoked_at: column::<Option<i64>>(row, 6)?.map(Timestamp::from_micros),
        id,
    })
}

pub(crate) async fn insert_token(store: &PgStore, token: ApiToken) -> Result<(), StoreError> {
    token.validate()?;
    let client = store.client().await?;
    let statement = client
        .prepare_cached(
            "INSERT INTO punctual_api_tokens (id, label, scopes, secret_sha256, created_at_us,
                                              expires_at_us, revoked_at_us)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await
        .map_err(pg)?;
    let inserted = client
        .execute(
            &statement,
            &[
                &token.id.as_str(),
                &token.label,
                &token.scopes,
                &token.secret_sha256.as_slice(),
                &token.created_at.as_micros(),
                &token.expires_at.map(Timestamp::as_micros),
                &token.revoked_at.map(Timestamp::as_micros),
            ],
        )
        .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(error) if is_taken_id(&error) => Err(StoreError::TokenExists(token.id)),
        Err(error) => Err(pg(error)),
    }
}

/// True when `error` is a unique violation on the tokens' primary key.
fn is_taken_id(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some("punctual_api_tokens_pkey")
    })
}

pub(crate) async fn get_token(
    store: &PgStore,
    id: &TokenId,
) -> Result<Option<ApiToken>, StoreError> {
    let client = store.client().await?;
    let statement = client
        .prepare_cached(concat!(
            "SELECT ",
            token_columns!(),
            " FROM punctual_api_tokens WHERE id = $1"
        ))
        .await
        .map_err(pg)?;
    let row = client
        .query_opt(&statement, &[&id.as_str()])
        .await
        .map_err(pg)?;
    row.as_ref().map(token_from_row).transpose()
}

/// Tokens in id order after `after`: a range of the primary key, whose `COLLATE "C"` order is
/// `TokenId`'s. Two statements rather than `$1 IS NULL OR id > $1`, which a generic plan could
/// not use as a range.
pub(crate) async fn list_tokens(
    store: &PgStore,
    after: Option<&TokenId>,
    limit: usize,
) -> Result<Vec<ApiToken>, StoreError> {
    let limit = sql_count(limit.min(limits::PAGE_SIZE_MAX));
    if limit == 0 {
        return Ok(Vec::new());
    }
    let client = store.client().await?;
    let rows = match after {
        None => {
            let statement = client
                .prepare_cached(concat!(
                    "SELECT ",
                    token_columns!(),
                    " FROM punctual_api_tokens ORDER BY id LIMIT $1"
                ))
                .await
                .map_err(pg)?;
            client.query(&statement, &[&limit]).await
        }
        Some(after) => {
            let statement = client
                .prepare_cached(concat!(
                    "SELECT ",
                    token_columns!(),
                    " FROM punctual_api_tokens WHERE id > $1 ORDER BY id LIMIT $2"
                ))
                .await
                .map_err(pg)?;
            client.query(&statement, &[&after.as_str(), &limit]).await
        }
    }
    .map_err(pg)?;
    rows.iter().map(token_from_row).collect()
}

/// Revokes at `now` unless already revoked (then the first time stays); one statement, so two
/// revocations at once keep the earlier-committed one's time.
pub(crate) async fn revoke_token(
    store: &PgStore,
    id: &TokenId,
    now: Timestamp,
) -> Result<ApiToken, StoreError> {
    let client = store.client().await?;
    let statement = client
        .prepare_cached(concat!(
            "UPDATE punctual_api_tokens SET revoked_at_us = coalesce(revoked_at_us, $2)
             WHERE id = $1
             RETURNING ",
            token_columns!()
        ))
        .await
        .map_err(pg)?;
    let row = client
        .query_opt(&statement, &[&id.as_str(), &now.as_micros()])
        .await
        .map_err(pg)?;
    match row {
        Some(row) => token_from_row(&row),
        None => Err(StoreError::TokenNotFound(id.clone())),
    }
}
