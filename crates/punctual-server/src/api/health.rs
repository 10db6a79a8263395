//! `/healthz` (the process lives and its store can recover), `/readyz` (the store answers and
//! the node is not stopping) and `/metrics`.
//!
//! A store that reports a fatal error (`Store::fatal_error`: SQLite's writer thread died) fails
//! both: the node cannot write again until it is restarted, and a supervisor that watches
//! `/healthz` restarts it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use punctual_core::JobId;

use crate::app::App;
use crate::auth::Scope;
use crate::dto::Health;
use crate::error::{ApiError, Problem};

/// How long `/readyz` waits for the store.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

fn health(app: &App, status: &str, detail: Option<String>) -> Health {
    Health {
        status: status.to_owned(),
        detail,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        tzdb_version: punctual_core::tzdb_version().to_owned(),
        node: app.settings.node.to_string(),
    }
}

/// 503 with `detail`, and a `Retry-After`.
fn unavailable(app: &App, detail: String) -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(health(app, "unavailable", Some(detail))),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// What makes the node unable to recover without a restart, if anything.
fn fatal(app: &App) -> Option<String> {
    app.store
        .fatal_error()
        .map(|error| format!("the store failed and cannot recover: {error}; restart the node"))
}

/// The process lives, and nothing it needs has failed beyond recovery.
#[utoipa::path(
    get, path = "/healthz", tag = "health",
    responses((status = 200, body = Health), (status = 503, description = "The store failed beyond recovery: restart the node", body = Health))
)]
pub async fn healthz(State(app): State<Arc<App>>) -> Response {
    match fatal(&app) {
        Some(detail) => unavailable(&app, detail),
        None => axum::Json(health(&app, "ok", None)).into_response(),
    }
}

/// The node can serve: its store answers and it is not stopping.
#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, description = "Not ready; see detail", body = Health))
)]
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let unready = |detail: String| unavailable(&app, detail);
    if let Some(detail) = fatal(&app) {
        return unready(detail);
    }
    if app.stopping.is_cancelled() {
        return unready("the node is stopping".to_owned());
    }
    // A primary-key lookup of an id no job has: the cheapest question a store can answer.
    match tokio::time::timeout(READY_TIMEOUT, app.store.get(JobId::from_bytes([0; 16]))).await {
        Ok(Ok(_)) => axum::Json(health(&app, "ok", None)).into_response(),
        Ok(Err(error)) => unready(format!("the store does not answer: {error}")),
        Err(_) => unready(format!(
            "the store did not answer within {} ms",
            READY_TIMEOUT.as_millis()
        )),
    }
}

/// Prometheus metrics.
#[utoipa::path(
    get, path = "/metrics", tag = "health",
    responses((status = 200, description = "The Prometheus text format", content_type = "text/plain"), (status = 401, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = ["read"]), ())
)]
pub async fn metrics(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !app.settings.metrics_public {
        app.auth
            .authenticate(&headers)
            .await?
            .require(Scope::Read)?;
    }
    let now = app.now();
    let counts = app.store.counts().await?;
    let queues = app.store.queue_stats(now).await?;
    let text = app
        .metrics
        .render(&counts, &queues, app.scheduler.health(), now)
        .await;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
