//! Webhook jobs end to end: created over HTTP, sent at `run_at`, signed, judged by the answer.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Backend, Receiver, Reply, Server, webhook_job};

crate::on_every_store!(
    a_webhook_job_fires_on_time_signed_and_is_listed,
    a_failed_webhook_is_retried_with_the_same_id_and_a_larger_token,
    gone_is_dead_at_once_and_retry_and_redrive_revive_it,
    rate_limits_are_honoured_and_redirects_not_followed,
    pending_and_running_jobs_can_be_cancelled,
    a_batch_is_stored_all_or_none,
);

pub async fn a_webhook_job_fires_on_time_signed_and_is_listed(backend: Backend) {
    let server = Server::start(backend).await;
    let receiver = Receiver::start().await;
    let created_at = std::time::Instant::now();
    let id = server
        .create(&webhook_job(
            &receiver.url("hooks/order"),
            300,
            json!({"order": 42, "note": "é"}),
        ))
        .await;

    let got = receiver
        .wait_for("hooks/order", 1, Duration::from_secs(5))
        .await;
    let request = &got[0];
    assert!(
        request.at.duration_since(created_at) >= Duration::from_millis(290),
        "sent early"
    );
    assert!(
        request.signed,
        "the signature verifies: {:?}",
        request.headers
    );
    assert_eq!(request.headers["webhook-id"], id);
    assert_eq!(request.headers["punctual-attempt"], "1");
    assert_eq!(request.headers["punctual-lease-token"], "1");
    assert_eq!(request.headers["content-type"], "application/json");
    assert!(request.headers.contains_key("punctual-scheduled-at"));
    let body: serde_json::Value = serde_json::from_slice(&request.body).expect("JSON");
    assert_eq!(body, json!({"order": 42, "note": "é"}));

    let job = server
        .wait_for_state(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(job["webhook"]["url"], receiver.url("hooks/order"));
    assert!(job.get("kind").is_none(), "{job}");
    assert_eq!(job["payload"], json!({"order": 42, "note": "é"}));

    let listed = server.get("/v1/jobs?state=succeeded").await;
    assert_eq!(listed.status, 200);
    let ids: Vec<&str> = listed.body["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|job| job["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);
    server.stop().await;
}

pub async fn a_failed_webhook_is_retried_with_the_same_id_and_a_larger_token(backend: Backend) {
    let server = Server::start(backend).await;
    let receiver = Receiver::start().await;
    receiver.reply("flaky", vec![Reply::status(500), Reply::status(200)]);
    let id = server
        .create(&json!({"webhook": {"url": receiver.url("flaky")}, "backoff": {"base_ms": 50, "jitter_percent": 0}}))
        .await;
    let got = receiver.wait_for("flaky", 2, Duration::from_secs(5)).await;
    assert_eq!(got[0].headers["webhook-id"], got[1].headers["webhook-id"]);
    assert_eq!(got[0].headers["punctual-attempt"], "1");
    assert_eq!(got[1].headers["punctual-attempt"], "2");
    let first: u64 = got[0].headers["punctual-lease-token"]
        .parse()
        .expect("a number");
    let second: u64 = got[1].headers["punctual-lease-token"]
        .parse()
        .expect("a number");
    assert!(second > first);
    let job = server
        .wait_for_state(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(job["attempt"], 2);
    server.stop().await;
}

pub async fn gone_is_dead_at_once_and_retry_and_redrive_revive_it(backend: Backend) {
    let server = Server::start(backend).await;
    let receiver = Receiver::start().await;
    receiver.reply(
        "gone",
        vec![Reply::status(410), Reply::status(410), Reply::status(200)],
    );
    let first = server
        .create(&json!({"webhook": {"url": receiver.url("gone")}}))
        .await;
    let second = server
        .create(&json!({"webhook": {"url": receiver.url("gone")}}))
        .await;
    for id in [&first, &second] {
        let job = server
            .wait_for_state(id, "dead", Duration::from_secs(5))
            .await;
        assert_eq!(job["attempt"], 1, "410 is not retried: {job}");
        assert!(
            job["last_error"]
                .as_str()
                .expect("an error")
                .contains("410")
        );
    }

    let retried = server
        .post(&format!("/v1/jobs/{first}/retry"), &json!({}))
        .await;
    assert_eq!(retried.status, 200, "{retried:?}");
    server
        .wait_for_state(&first, "succeeded", Duration::from_secs(5))
        .await;
    let again = server
        .post(&format!("/v1/jobs/{first}/retry"), &json!({}))
        .await;
    assert_eq!((again.status, again.code()), (409, "state_conflict"));

    let redriven = server
        .post("/v1/jobs/redrive", &json!({"target": "webhook"}))
        .await;
    assert_eq!(redriven.status, 200, "{redriven:?}");
    assert_eq!(redriven.body, json!({"redriven": 1, "more": false}));
    server
        .wait_for_state(&second, "succeeded", Duration::from_secs(5))
        .await;
    server.stop().await;
}

pub async fn rate_limits_are_honoured_and_redirects_not_followed(backend: Backend) {
    let server = Server::start(backend).await;
    let receiver = Receiver::start().await;
    receiver.reply(
        "limited",
        vec![
            Reply {
                status: 429,
                retry_after: Some("1"),
                delay: Duration::ZERO,
            },
            Reply::status(200),
        ],
    );
    receiver.reply("moved", vec![Reply::status(302)]);
    let limited = server
        .create(&json!({"webhook": {"url": receiver.url("limited")}, "backoff": {"base_ms": 1}}))
        .await;
    let moved = server
        .create(&json!({"webhook": {"url": receiver.url("moved")}, "attempt_max": 1}))
        .await;

    let got = receiver
        .wait_for("limited", 2, Duration::from_secs(5))
        .await;
    let waited = got[1].at.duration_since(got[0].at);
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}, not after Retry-After's second"
    );
    server
        .wait_for_state(&limited, "succeeded", Duration::from_secs(5))
        .await;

    let job = server
        .wait_for_state(&moved, "dead", Duration::from_secs(5))
        .await;
    assert!(
        job["last_error"]
            .as_str()
            .expect("an error")
            .contains("redirects are not followed")
    );
    assert_eq!(receiver.received_on("moved").len(), 1);
    server.stop().await;
}

pub async fn pending_and_running_jobs_can_be_cancelled(backend: Backend) {
    let server = Server::start(backend).await;
    let receiver = Receiver::start().await;
    receiver.reply(
        "slow",
        vec![Reply {
            status: 200,
            retry_after: None,
            delay: Duration::from_secs(10),
        }],
    );

    let pending = server
        .create(&webhook_job(&receiver.url("never"), 60_000, json!(1)))
        .await;
    let cancelled = server
        .post(&format!("/v1/jobs/{pending}/cancel"), &json!({}))
        .await;
    assert_eq!(cancelled.status, 200);
    assert_eq!(cancelled.body["state"], "cancelled");

    let running = server
        .create(&json!({"webhook": {"url": receiver.url("slow"), "timeout_ms": 60000}}))
        .await;
    receiver.wait_for("slow", 1, Duration::from_secs(5)).await;
    server
        .wait_for_state(&running, "running", Duration::from_secs(5))
        .await;
    let cancelled = server
        .post(&format!("/v1/jobs/{running}/cancel"), &json!({}))
        .await;
    assert_eq!(cancelled.body["state"], "cancelled", "{cancelled:?}");
    let finished = server
        .post(&format!("/v1/jobs/{running}/cancel"), &json!({}))
        .await;
    assert_eq!((finished.status, finished.code()), (409, "state_conflict"));

    // The send is abandoned at the next heartbeat; the job stays cancelled and is not sent again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(server.job(&running).await["state"], "cancelled");
    assert_eq!(receiver.received_on("slow").len(), 1);
    assert!(receiver.received_on("never").is_empty());
    server.stop().await;
}

pub async fn a_batch_is_stored_all_or_none(backend: Backend) {
    let server = Server::start(backend).await;
    let receiver = Receiver::start().await;
    let good = json!({"webhook": {"url": receiver.url("batch")}, "delay_ms": 100});
    let bad = json!({"webhook": {"url": receiver.url("batch")}, "priority": 12});
    let refused = server
        .post("/v1/jobs/batch", &json!({"jobs": [good.clone(), bad]}))
        .await;
    assert_eq!((refused.status, refused.code()), (422, "validation_failed"));
    assert!(
        refused.body["detail"]
            .as_str()
            .expect("detail")
            .starts_with("jobs[1].priority"),
        "{refused:?}"
    );
    assert_eq!(server.job_count().await, 0);

    let jobs: Vec<_> = (0..50).map(|_| good.clone()).collect();
    let created = server
        .post("/v1/jobs/batch", &json!({ "jobs": jobs }))
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["jobs"].as_array().expect("jobs").len(), 50);
    receiver
        .wait_for("batch", 50, Duration::from_secs(10))
        .await;
    server.stop().await;
}
