//! `/healthz` (the process lives), `/readyz` (the store answers and the node is not stopping)
//! and `/metrics`.

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
        node: app.settings.node.to_string(),
    }
}

/// The process lives.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz(State(app): State<Arc<App>>) -> axum::Json<Health> {
    axum::Json(health(&app, "ok", None))
}

/// The node can serve: its store answers and it is not stopping.
#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, description = "Not ready; see detail", body = Health))
)]
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let unready = |detail: String| {
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(health(&app, "unavailable", Some(detail))),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    };
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
    let text = app.metrics.render(&counts, &queues, now).await;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
