//! The HTTP API: the routes, the OpenAPI document generated from the same handlers (so the
//! document cannot drift from the routes), and the middleware every request passes (metrics).
//!
//! Must not hold job logic: handlers turn requests into store and engine calls and back.

pub mod health;
pub mod jobs;
pub mod queues;
pub mod tokens;
pub mod workers;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::error::{ApiError, Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "punctual",
        description = "A durable job scheduler: jobs run on time, once, even when machines crash. Errors are RFC 9457 problem documents with a stable `code`.",
        license(name = "MIT OR Apache-2.0"),
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "jobs", description = "Create, inspect, cancel, reschedule and retry jobs"),
        (name = "workers", description = "Remote workers: claim, extend, complete, fail"),
        (name = "queues", description = "Queue health"),
        (name = "tokens", description = "API tokens (admin)"),
        (name = "health", description = "Liveness, readiness, metrics"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Every route and its OpenAPI description, from one list.
fn routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(jobs::create_job, jobs::list_jobs))
        .routes(routes!(jobs::create_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::reschedule_job))
        .routes(routes!(jobs::retry_job))
        .routes(routes!(jobs::redrive_jobs))
        .routes(routes!(workers::claim))
        .routes(routes!(workers::extend_batch))
        .routes(routes!(workers::complete_batch))
        .routes(routes!(workers::fail_batch))
        .routes(routes!(workers::extend_lease))
        .routes(routes!(workers::complete_job))
        .routes(routes!(workers::fail_job))
        .routes(routes!(queues::list_queues))
        .routes(routes!(tokens::create_token, tokens::list_tokens))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
}

/// The OpenAPI document, as served at `/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The whole HTTP surface of a node.
pub fn router(app: Arc<App>) -> Router {
    let (router, document) = routes().split_for_parts();
    let document = Arc::new(document);
    router
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { axum::Json(document.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::not_found("no such route; see /v1/openapi.json") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(app.clone(), track))
        .with_state(app)
}

/// Counts and times every request by its route (the pattern, not the path, so ids do not
/// make labels).
async fn track(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await.into_response();
    app.metrics.http_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
