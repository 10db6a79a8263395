//! `/v1/queues`: every queue with its counts by state and how far behind it is. Answered from
//! the store's kept counts and index ranges, so it is cheap with millions of jobs.

use std::sync::Arc;

use axum::extract::State;

use crate::app::{App, Authorized, Read};
use crate::dto::{QueueList, QueueView};
use crate::error::{ApiError, Problem};

/// List queues.
#[utoipa::path(
    get, path = "/v1/queues", tag = "queues",
    responses((status = 200, body = QueueList), (status = 503, body = Problem)),
    security(("bearer" = ["read"]))
)]
pub async fn list_queues(
    State(app): State<Arc<App>>,
    _: Authorized<Read>,
) -> Result<axum::Json<QueueList>, ApiError> {
    let now = app.now();
    let stats = app.store.queue_stats(now).await?;
    Ok(axum::Json(QueueList {
        queues: stats
            .iter()
            .map(|stats| QueueView::from_stats(stats, now))
            .collect(),
    }))
}
