//! Authentication and authorisation, route by route, with every route taken from the OpenAPI
//! document the server serves: so the matrix covers each route, and a route missing from the
//! document (or documented but not served) fails here.

use punctual_server::auth::Scope;
use serde_json::json;

use crate::harness::{Backend, Server};

crate::on_every_store!(
    every_documented_route_is_served_and_guarded_by_its_scope,
    undocumented_routes_and_methods_are_problems,
    tokens_are_created_listed_and_revoked_through_the_api_and_secrets_never_shown,
    metrics_need_a_read_token_and_show_the_jobs,
);

/// The routes anyone may call.
const PUBLIC: [&str; 3] = ["/healthz", "/readyz", "/v1/openapi.json"];

/// Every (method, path) of the document, with `{id}` filled in.
async fn documented(server: &Server) -> Vec<(String, String, Vec<String>)> {
    let document = server.request("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(document.status, 200);
    assert_eq!(
        document.body["openapi"].as_str().map(|v| &v[..3]),
        Some("3.1")
    );
    let mut routes = Vec::new();
    for (path, item) in document.body["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("an item") {
            let scopes: Vec<String> = operation["security"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|entry| entry["bearer"].as_array())
                        .flatten()
                        .filter_map(|scope| scope.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let path = path.replace("{id}", "0193f0e4-0000-7000-8000-000000000000");
            routes.push((method.to_uppercase(), path, scopes));
        }
    }
    routes
}

fn held(scope: Scope) -> &'static [&'static str] {
    match scope {
        Scope::Read => &["read"],
        Scope::Write => &["read", "write"],
        Scope::Worker => &["worker"],
        Scope::Admin => &["read", "write", "worker", "admin"],
    }
}

pub async fn every_documented_route_is_served_and_guarded_by_its_scope(backend: Backend) {
    let server = Server::start(backend).await;
    let routes = documented(&server).await;
    assert!(routes.len() >= 20, "{routes:?}");
    let revoked = server.token(&[Scope::Admin]).await;
    let revoked_id = revoked.split('_').nth(1).expect("an id").to_owned();
    let answer = server
        .request(
            "DELETE",
            &format!("/v1/tokens/{revoked_id}"),
            Some(&server.admin),
            None,
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let tokens: Vec<(Scope, String)> = scoped_tokens(&server).await;
    let wrong = "pct_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    for (method, path, needed) in &routes {
        let body = (method != "GET" && method != "DELETE").then(|| json!({}));
        if PUBLIC.contains(&path.as_str()) {
            let answer = server.request(method, path, None, body.as_ref()).await;
            assert!(answer.status < 400, "{method} {path} is public: {answer:?}");
            continue;
        }
        assert_eq!(
            needed.len(),
            1,
            "{method} {path} documents one scope: {needed:?}"
        );
        let needed = Scope::parse(&needed[0]).expect("a known scope");
        for (token, label) in [
            (None, "no token"),
            (Some(wrong), "wrong token"),
            (Some(revoked.as_str()), "revoked token"),
        ] {
            let answer = server.request(method, path, token, body.as_ref()).await;
            assert_eq!(
                (answer.status, answer.code()),
                (401, "unauthorized"),
                "{method} {path} with {label}"
            );
            assert!(answer.headers.contains_key("www-authenticate"));
        }
        for (scope, token) in &tokens {
            let answer = server
                .request(method, path, Some(token), body.as_ref())
                .await;
            let allowed = held(*scope).contains(&needed.as_str());
            if allowed {
                assert!(
                    answer.status != 401 && answer.status != 403 && answer.status != 405,
                    "{method} {path} with {scope:?}: {answer:?}"
                );
                // Documented routes are served: an unknown job is 404 with a problem, not a
                // missing route.
                if answer.status == 404 {
                    assert_eq!(answer.code(), "not_found", "{method} {path}");
                    assert!(
                        !answer.body["detail"]
                            .as_str()
                            .unwrap_or_default()
                            .contains("no such route"),
                        "{method} {path}"
                    );
                }
            } else {
                assert_eq!(
                    (answer.status, answer.code()),
                    (403, "forbidden"),
                    "{method} {path} with {scope:?}"
                );
            }
        }
    }
    server.stop().await;
}

async fn scoped_tokens(server: &Server) -> Vec<(Scope, String)> {
    let mut tokens = Vec::new();
    for scope in Scope::ALL {
        tokens.push((scope, server.token(&[scope]).await));
    }
    tokens
}

pub async fn undocumented_routes_and_methods_are_problems(backend: Backend) {
    let server = Server::start(backend).await;
    let missing = server.get("/v1/nothing").await;
    assert_eq!((missing.status, missing.code()), (404, "not_found"));
    assert_eq!(missing.headers["content-type"], "application/problem+json");
    let method = server
        .request("PUT", "/v1/jobs", Some(&server.admin), Some(&json!({})))
        .await;
    assert_eq!((method.status, method.code()), (405, "method_not_allowed"));
    server.stop().await;
}

pub async fn tokens_are_created_listed_and_revoked_through_the_api_and_secrets_never_shown(
    backend: Backend,
) {
    let server = Server::start(backend).await;
    let created = server
        .post(
            "/v1/tokens",
            &json!({"label": "ci deploys", "scopes": ["write"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let secret = created.body["token"]
        .as_str()
        .expect("the token")
        .to_owned();
    let id = created.body["id"].as_str().expect("an id").to_owned();
    assert!(secret.starts_with(&format!("pct_{id}_")));

    let listed = server.get("/v1/tokens").await;
    assert_eq!(listed.status, 200);
    let text = listed.body.to_string();
    assert!(
        text.contains(&id) && !text.contains(&secret[5 + id.len() + 1..]),
        "{text}"
    );

    let usable = server
        .request("GET", "/v1/queues", Some(&secret), None)
        .await;
    assert_eq!(usable.status, 200);
    let refused = server
        .post("/v1/tokens", &json!({"label": "x", "scopes": ["root"]}))
        .await;
    assert_eq!((refused.status, refused.code()), (422, "validation_failed"));

    let revoked = server
        .request(
            "DELETE",
            &format!("/v1/tokens/{id}"),
            Some(&server.admin),
            None,
        )
        .await;
    assert_eq!(revoked.status, 200);
    assert!(revoked.body["revoked_at"].is_string());
    let after = server
        .request("GET", "/v1/queues", Some(&secret), None)
        .await;
    assert_eq!(
        after.status, 401,
        "revoked at once on the node that revoked it"
    );
    server.stop().await;
}

pub async fn metrics_need_a_read_token_and_show_the_jobs(backend: Backend) {
    let server = Server::start(backend).await;
    let _ = server
        .create(&json!({"kind": "report", "delay_ms": 60000, "queue": "nightly"}))
        .await;
    let refused = server.request("GET", "/metrics", None, None).await;
    assert_eq!(refused.status, 401);
    let response = server
        .client
        .get(format!("{}/metrics", server.base))
        .bearer_auth(&server.admin)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("text");
    assert!(
        text.contains(r#"punctual_jobs{queue="nightly",state="scheduled"} 1"#),
        "{text}"
    );
    assert!(text.contains("punctual_http_requests_total"), "{text}");
    server.stop().await;
}
