//! Remote workers over HTTP: claim (with a long poll), extend, complete, fail; fenced on the
//! lease token.

use std::time::{Duration, Instant};

use punctual_server::auth::Scope;
use serde_json::json;

use crate::harness::{Backend, Server};

crate::on_every_store!(
    a_worker_long_polls_claims_extends_and_completes,
    a_worker_whose_lease_was_lost_is_refused_and_changes_nothing,
    failures_retry_after_the_asked_delay_or_end_the_job,
    claims_refuse_bad_requests,
);

pub async fn a_worker_long_polls_claims_extends_and_completes(backend: Backend) {
    let server = Server::start(backend).await;
    let worker = server.token(&[Scope::Worker]).await;
    let id = server
        .create(&json!({"kind": "resize", "payload": {"image": 7}, "delay_ms": 400}))
        .await;

    let asked = Instant::now();
    let claim = json!({"worker": "py-1", "kinds": ["resize"], "limit": 10, "lease_ms": 5000, "wait_ms": 5000});
    let claimed = server
        .request("POST", "/v1/workers/claim", Some(&worker), Some(&claim))
        .await;
    let waited = asked.elapsed();
    assert_eq!(claimed.status, 200, "{claimed:?}");
    let jobs = claimed.body["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_secs(2),
        "answered after {waited:?}"
    );
    let job = &jobs[0];
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["payload"], json!({"image": 7}));
    assert_eq!(job["attempt"], 1);
    let token = job["lease_token"].as_u64().expect("a token");

    let extended = server
        .request(
            "POST",
            &format!("/v1/jobs/{id}/lease"),
            Some(&worker),
            Some(&json!({"lease_token": token, "lease_ms": 20000})),
        )
        .await;
    assert_eq!(extended.status, 200, "{extended:?}");
    let done = server
        .request(
            "POST",
            "/v1/workers/complete",
            Some(&worker),
            Some(&json!({"jobs": [{"id": id, "lease_token": token}]})),
        )
        .await;
    assert_eq!(done.status, 200);
    assert_eq!(done.body["results"][0]["ok"], true, "{done:?}");
    assert_eq!(server.job(&id).await["state"], "succeeded");

    // Nothing due: a claim without a wait answers at once, empty.
    let asked = Instant::now();
    let empty = server
        .request(
            "POST",
            "/v1/workers/claim",
            Some(&worker),
            Some(&json!({"worker": "py-1", "kinds": ["resize"]})),
        )
        .await;
    assert_eq!(empty.body["jobs"], json!([]));
    assert!(asked.elapsed() < Duration::from_millis(500));
    server.stop().await;
}

pub async fn a_worker_whose_lease_was_lost_is_refused_and_changes_nothing(backend: Backend) {
    let server = Server::start(backend).await;
    let worker = server.token(&[Scope::Worker]).await;
    let id = server
        .create(&json!({"kind": "slow", "attempt_max": 5}))
        .await;
    let claim = |name: &str, lease_ms: u64| json!({"worker": name, "kinds": ["slow"], "lease_ms": lease_ms, "wait_ms": 5000});
    let first = server
        .request(
            "POST",
            "/v1/workers/claim",
            Some(&worker),
            Some(&claim("lost", 1000)),
        )
        .await;
    let stale = first.body["jobs"][0]["lease_token"]
        .as_u64()
        .expect("a token");

    // The lease ends unrenewed; the leader rescues the job and another worker takes it.
    let second = server
        .request(
            "POST",
            "/v1/workers/claim",
            Some(&worker),
            Some(&claim("other", 30000)),
        )
        .await;
    let jobs = second.body["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 1, "{second:?}");
    let current = jobs[0]["lease_token"].as_u64().expect("a token");
    assert!(current > stale);
    assert_eq!(jobs[0]["attempt"], 2);

    for (path, body) in [
        (
            format!("/v1/jobs/{id}/complete"),
            json!({"lease_token": stale}),
        ),
        (
            format!("/v1/jobs/{id}/fail"),
            json!({"lease_token": stale, "error": "late"}),
        ),
        (
            format!("/v1/jobs/{id}/lease"),
            json!({"lease_token": stale}),
        ),
    ] {
        let refused = server
            .request("POST", &path, Some(&worker), Some(&body))
            .await;
        assert_eq!(
            (refused.status, refused.code()),
            (409, "lease_lost"),
            "{path}: {refused:?}"
        );
    }
    let batch = server
        .request(
            "POST",
            "/v1/workers/complete",
            Some(&worker),
            Some(&json!({"jobs": [{"id": id, "lease_token": stale}]})),
        )
        .await;
    assert_eq!(batch.body["results"][0]["ok"], false);
    assert_eq!(batch.body["results"][0]["error"]["code"], "lease_lost");
    let job = server.job(&id).await;
    assert_eq!(job["state"], "running");
    assert_eq!(job["lease"]["holder"], "other");
    assert_eq!(job["lease"]["token"], current);
    server.stop().await;
}

pub async fn failures_retry_after_the_asked_delay_or_end_the_job(backend: Backend) {
    let server = Server::start(backend).await;
    let worker = server.token(&[Scope::Worker]).await;
    let later = server.create(&json!({"kind": "mail"})).await;
    let never = server.create(&json!({"kind": "mail"})).await;
    let claimed = server
        .request(
            "POST",
            "/v1/workers/claim",
            Some(&worker),
            Some(&json!({"worker": "w", "kinds": ["mail"], "limit": 2})),
        )
        .await;
    let token_of = |id: &str| {
        claimed.body["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .find(|job| job["id"] == id)
            .expect("claimed")["lease_token"]
            .as_u64()
            .expect("a token")
    };
    let failed = server
        .request(
            "POST",
            "/v1/workers/fail",
            Some(&worker),
            Some(&json!({"jobs": [
                {"id": later, "lease_token": token_of(&later), "error": "smtp busy", "retry_after_ms": 60000},
                {"id": never, "lease_token": token_of(&never), "error": "no such mailbox", "permanent": true},
            ]})),
        )
        .await;
    assert_eq!(failed.body["results"][0]["state"], "retrying", "{failed:?}");
    assert_eq!(failed.body["results"][1]["state"], "dead");
    let job = server.job(&later).await;
    assert_eq!(job["last_error"], "smtp busy");
    let due = punctual_core::Timestamp::parse_rfc3339(job["run_at"].as_str().expect("a time"))
        .expect("a time");
    let ahead = due.micros_since(punctual_core::Timestamp::from_system_time(
        std::time::SystemTime::now(),
    ));
    assert!(ahead > 55_000_000, "retried {ahead} µs ahead, not a minute");
    assert_eq!(server.job(&never).await["attempt"], 1);
    server.stop().await;
}

pub async fn claims_refuse_bad_requests(backend: Backend) {
    let server = Server::start(backend).await;
    let worker = server.token(&[Scope::Worker]).await;
    for body in [
        json!({"worker": "w", "kinds": []}),
        json!({"worker": "w", "kinds": ["punctual.webhook"]}),
        json!({"worker": "bad name", "kinds": ["k"]}),
        json!({"worker": "w", "kinds": ["k"], "limit": 0}),
        json!({"worker": "w", "kinds": ["k"], "lease_ms": 10}),
        json!({"worker": "w", "kinds": ["k"], "wait_ms": 60000}),
    ] {
        let answer = server
            .request("POST", "/v1/workers/claim", Some(&worker), Some(&body))
            .await;
        assert_eq!(
            (answer.status, answer.code()),
            (422, "validation_failed"),
            "{body}"
        );
    }
    let answer = server
        .request(
            "POST",
            "/v1/workers/claim",
            Some(&worker),
            Some(&json!({"kinds": ["k"]})),
        )
        .await;
    assert_eq!(answer.status, 400);
    server.stop().await;
}
