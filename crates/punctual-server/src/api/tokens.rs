//! `/v1/tokens`: create, list and revoke API tokens (admin scope). A new token's secret is in
//! the creation's answer only; the store keeps its digest. `punctual tokens` does the same on
//! the store directly, to make the first admin token.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use punctual_core::{TokenId, limits};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::PathParam;
use crate::api::jobs::query;
use crate::app::{Admin, App, Authorized};
use crate::auth::{Scope, issue};
use crate::body::Json;
use crate::dto::{CreateToken, CreatedToken, TokenList, TokenView};
use crate::error::{ApiError, Problem};

/// The longest life a token may be given (ten years).
const EXPIRY_MAX: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// Parses scope names, refusing unknown ones and an empty list.
pub fn parse_scopes(names: &[String]) -> Result<Vec<Scope>, ApiError> {
    if names.is_empty() {
        return Err(ApiError::validation(
            "scopes: name at least one of read, write, worker, admin",
        ));
    }
    names
        .iter()
        .map(|name| {
            Scope::parse(name).ok_or_else(|| {
                ApiError::validation(format!(
                    "scopes: {name:?} is not one of read, write, worker, admin"
                ))
            })
        })
        .collect()
}

/// Create a token.
#[utoipa::path(
    post, path = "/v1/tokens", tag = "tokens",
    request_body = CreateToken,
    responses((status = 201, description = "The token, shown this once", body = CreatedToken), (status = 400, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["admin"]))
)]
pub async fn create_token(
    State(app): State<Arc<App>>,
    _: Authorized<Admin>,
    Json(spec): Json<CreateToken>,
) -> Result<(StatusCode, axum::Json<CreatedToken>), ApiError> {
    let scopes = parse_scopes(&spec.scopes)?;
    let now = app.now();
    let expires_at = match spec.expires_in_ms.map(Duration::from_millis) {
        Some(life) if life.is_zero() || life > EXPIRY_MAX => {
            return Err(ApiError::validation(
                "expires_in_ms: must be above 0 and at most ten years",
            ));
        }
        Some(life) => Some(now.add(life)),
        None => None,
    };
    let (text, record) = issue(&spec.label, &scopes, expires_at, now)?;
    app.store.insert_token(record.clone()).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedToken {
            token: text,
            record: TokenView::from_token(&record),
        }),
    ))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// At most this many, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List tokens (their secrets are never shown again).
#[utoipa::path(
    get, path = "/v1/tokens", tag = "tokens",
    params(TokenQuery),
    responses((status = 200, body = TokenList), (status = 400, body = Problem)),
    security(("bearer" = ["admin"]))
)]
pub async fn list_tokens(
    State(app): State<Arc<App>>,
    _: Authorized<Admin>,
    uri: Uri,
) -> Result<axum::Json<TokenList>, ApiError> {
    let params: TokenQuery = query(&uri)?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=limits::PAGE_SIZE_MAX).contains(&limit) {
        return Err(ApiError::validation(format!(
            "limit: {limit} is outside 1 ..= {}",
            limits::PAGE_SIZE_MAX
        )));
    }
    let after = params
        .cursor
        .as_deref()
        .map(TokenId::new)
        .transpose()
        .map_err(|_| ApiError::validation("cursor: is not a cursor this server gave"))?;
    let tokens = app.store.list_tokens(after.as_ref(), limit).await?;
    let next_cursor = (tokens.len() == limit).then(|| tokens[tokens.len() - 1].id.to_string());
    Ok(axum::Json(TokenList {
        tokens: tokens.iter().map(TokenView::from_token).collect(),
        next_cursor,
    }))
}

/// Revoke a token. It stops working at once on this node and within two seconds on others.
#[utoipa::path(
    delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "The token's id (the part after pct_ and before the second _)")),
    responses((status = 200, body = TokenView), (status = 404, body = Problem)),
    security(("bearer" = ["admin"]))
)]
pub async fn revoke_token(
    State(app): State<Arc<App>>,
    _: Authorized<Admin>,
    PathParam(id): PathParam,
) -> Result<axum::Json<TokenView>, ApiError> {
    let id = TokenId::new(&id).map_err(|_| ApiError::not_found(format!("no token {id:?}")))?;
    let token = app.store.revoke_token(&id, app.now()).await?;
    app.auth.forget(&id);
    Ok(axum::Json(TokenView::from_token(&token)))
}
