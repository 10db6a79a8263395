//! The HTTP API: the routes, the OpenAPI document generated from the same handlers (so the
//! document cannot drift from the routes), and the middleware every request passes (metrics).
//!
//! Must not hold job logic: handlers turn requests into store and engine calls and back.

pub mod health;
pub mod jobs;
pub mod queues;
pub mod schedules;
pub mod tokens;
pub mod workers;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::error::{ApiError, PROBLEM_JSON, Problem};

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
        (name = "schedules", description = "Recurring jobs as data: create, upsert by name, change, pause, resume, trigger, delete, their occurrence ledger, and explain"),
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

/// A route's one path parameter (`{id}`), as text. axum's own `Path` answers a parameter it
/// cannot read (percent-encoded bytes that are not UTF-8) with a plain-text 400; this answers
/// with a problem document, as every other refusal is (found by the fuzz target
/// `api_request`).
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(text) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                ApiError::bad_request(format!("path: {}", rejection.body_text()))
            })?;
        Ok(PathParam(text))
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
        .routes(routes!(
            schedules::create_schedule,
            schedules::list_schedules
        ))
        .routes(routes!(schedules::explain_schedule))
        .routes(routes!(
            schedules::get_schedule,
            schedules::upsert_schedule,
            schedules::change_schedule,
            schedules::delete_schedule
        ))
        .routes(routes!(schedules::pause_schedule))
        .routes(routes!(schedules::resume_schedule))
        .routes(routes!(schedules::trigger_schedule))
        .routes(routes!(schedules::list_occurrences))
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

/// The answers every route may give besides its own, added to each operation of the document
/// so that no status the server sends is undocumented: authentication's (401, 403) where a
/// token is needed, the body reader's (400, 413, 415, 422) where a body is read, and an outage's
/// (503) everywhere under `/v1`. Every problem is served as `application/problem+json`.
struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let problem = || {
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(Ref::from_schema_name("Problem"))))
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                item.get.as_mut(),
                item.put.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ];
            for operation in operations.into_iter().flatten() {
                let authenticated = operation
                    .security
                    .as_ref()
                    .is_some_and(|requirements| !requirements.is_empty());
                let has_body = operation.request_body.is_some();
                let has_parameters = operation
                    .parameters
                    .as_ref()
                    .is_some_and(|parameters| !parameters.is_empty());
                let mut extra: Vec<(&str, &str)> = Vec::new();
                if authenticated {
                    extra.push((
                        "401",
                        "No token, or a malformed, unknown, revoked or expired one",
                    ));
                    extra.push(("403", "The token lacks this route's scope"));
                }
                if has_body {
                    extra.push((
                        "400",
                        "The body could not be read: not JSON, a wrong type, an unknown field",
                    ));
                    extra.push(("413", "The body is over this route's limit"));
                    extra.push(("415", "The body is not application/json"));
                    extra.push(("422", "A value breaks a rule"));
                }
                if has_parameters {
                    extra.push(("400", "A parameter could not be read"));
                    extra.push(("422", "A parameter breaks a rule"));
                }
                if path.starts_with("/v1/") && path != "/v1/openapi.json" {
                    extra.push(("503", "The store is unavailable; retry after Retry-After"));
                }
                for (status, description) in extra {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| {
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(description)
                                    .content(PROBLEM_JSON, problem())
                                    .build(),
                            )
                        });
                }
                for response in operation.responses.responses.values_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    let is_problem = response.content.get("application/json").is_some_and(|content| {
                        matches!(&content.schema, Some(RefOr::Ref(reference)) if reference.ref_location.ends_with("/Problem"))
                    });
                    if is_problem
                        && let Some(content) = response.content.shift_remove("application/json")
                    {
                        response.content.insert(PROBLEM_JSON.to_owned(), content);
                    }
                }
            }
        }
    }
}

/// The OpenAPI document, as served at `/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = routes().split_for_parts().1;
    ProblemResponses.modify(&mut document);
    document
}

/// The whole HTTP surface of a node.
pub fn router(app: Arc<App>) -> Router {
    let (router, mut document) = routes().split_for_parts();
    ProblemResponses.modify(&mut document);
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
