//! The in-process router (`node::in_process_router`, what the fuzz target `api_request` drives):
//! the same routes, authentication and validation as a served node, with no socket and no
//! engine running.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use punctual_core::{Clock, JobState, Store, SystemClock};
use punctual_server::auth::{Scope, issue};
use punctual_server::node::in_process_router;
use punctual_server::webhook::guard::NameResolver;
use punctual_testkit::MemoryStore;
use serde_json::Value;
use tower::ServiceExt;

use crate::harness::node_config;

/// Resolves nothing: these requests name no webhook.
struct NoNames;

#[async_trait]
impl NameResolver for NoNames {
    async fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        Err(std::io::Error::other(format!(
            "no resolver here for {host}"
        )))
    }
}

fn post(token: &str, path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .expect("a valid request")
}

#[tokio::test]
async fn the_in_process_router_validates_stores_and_runs_nothing() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (token, record) = issue("test", &[Scope::Admin], None, clock.now()).expect("valid");
    store.insert_token(record).await.expect("stored");
    let router = in_process_router(
        store.clone(),
        clock,
        &node_config("in-process"),
        Arc::new(NoNames),
    )
    .expect("the router is built");

    let created = router
        .clone()
        .oneshot(post(&token, "/v1/jobs", r#"{"kind": "email"}"#))
        .await
        .expect("infallible");
    assert_eq!(created.status(), StatusCode::CREATED);
    let body = axum::body::to_bytes(created.into_body(), usize::MAX)
        .await
        .expect("a body");
    let view: Value = serde_json::from_slice(&body).expect("JSON");
    let id = view["id"]
        .as_str()
        .expect("an id")
        .parse()
        .expect("a job id");
    // Due now, and still scheduled: no engine claims it.
    let job = store.get(id).await.expect("read").expect("stored");
    assert_eq!(job.state, JobState::Scheduled);

    let refused = router
        .clone()
        .oneshot(post(
            &token,
            "/v1/jobs",
            r#"{"kind": "email", "colour": 1}"#,
        ))
        .await
        .expect("infallible");
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let unauthorised = router
        .oneshot(post("pct_nope_nope", "/v1/jobs", r#"{"kind": "email"}"#))
        .await
        .expect("infallible");
    assert_eq!(unauthorised.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_path_parameter_that_is_not_utf8_is_a_problem() {
    // Found by the fuzz target api_request (fuzz/corpus/api_request/path-not-utf8): axum's
    // own Path extractor answered these with a plain-text 400.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (token, record) = issue("test", &[Scope::Admin], None, clock.now()).expect("valid");
    store.insert_token(record).await.expect("stored");
    let router = in_process_router(store, clock, &node_config("in-process"), Arc::new(NoNames))
        .expect("the router is built");
    let routes = [
        ("GET", "/v1/jobs/%FF"),
        ("POST", "/v1/jobs/%FF/cancel"),
        ("POST", "/v1/jobs/%FF/reschedule"),
        ("POST", "/v1/jobs/%FF/retry"),
        ("POST", "/v1/jobs/%FF/lease"),
        ("POST", "/v1/jobs/%C3%28/complete"),
        ("POST", "/v1/jobs/%B1/fail"),
        ("DELETE", "/v1/tokens/%FF"),
    ];
    for (method, path) in routes {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"lease_token": 1, "error": "e"}"#))
            .expect("a valid request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{method} {path}"
        );
        let content_type = response.headers()[header::CONTENT_TYPE].clone();
        assert_eq!(content_type, "application/problem+json", "{method} {path}");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        let problem: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(problem["code"], "bad_request", "{method} {path}");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|detail| detail.starts_with("path:")),
            "{method} {path}: {problem}"
        );
    }
}
