//! Bad input is a 4xx problem that says what is wrong, and stores nothing.

use serde_json::{Value, json};

use crate::harness::{Backend, Server};

crate::on_every_store!(
    malformed_creations_are_refused_and_store_nothing,
    bodies_that_are_not_json_too_large_or_mistyped_are_refused,
    listings_refuse_bad_filters_and_pages,
    listings_filter_and_page,
);

pub async fn malformed_creations_are_refused_and_store_nothing(backend: Backend) {
    let server = Server::start(backend).await;
    let url = "http://127.0.0.1:9/hook";
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (json!({"kind": 7}), 400, "bad_request", "kind"),
        (
            json!({"kind": "k", "priority": "high"}),
            400,
            "bad_request",
            "priority",
        ),
        (
            json!({"kind": "k", "colour": "red"}),
            400,
            "bad_request",
            "colour",
        ),
        (
            json!({"kind": "k", "webhook": {"url": url}}),
            422,
            "validation_failed",
            "either kind or webhook",
        ),
        (
            json!({"payload": 1}),
            422,
            "validation_failed",
            "say what runs the job",
        ),
        (
            json!({"kind": "has space"}),
            422,
            "validation_failed",
            "kind",
        ),
        (
            json!({"kind": "punctual.webhook"}),
            422,
            "validation_failed",
            "reserved",
        ),
        (
            json!({"kind": "k", "priority": 10}),
            422,
            "validation_failed",
            "priority",
        ),
        (
            json!({"kind": "k", "attempt_max": 0}),
            422,
            "validation_failed",
            "attempt_max",
        ),
        (
            json!({"kind": "k", "run_at": "tomorrow"}),
            422,
            "validation_failed",
            "run_at",
        ),
        (
            json!({"kind": "k", "run_at": "2026-12-01T09:00:00Z", "delay_ms": 5}),
            422,
            "validation_failed",
            "at most one",
        ),
        (
            json!({"kind": "k", "schedule": {"cron": "61 * * * *"}}),
            422,
            "validation_failed",
            "cron",
        ),
        (
            json!({"kind": "k", "schedule": {"cron": "0 9 * * *", "time_zone": "Mars/Olympus"}}),
            422,
            "validation_failed",
            "Mars/Olympus",
        ),
        (
            json!({"kind": "k", "schedule": {"interval_ms": 10}}),
            422,
            "validation_failed",
            "interval",
        ),
        (
            json!({"kind": "k", "schedule": {}}),
            422,
            "validation_failed",
            "schedule",
        ),
        (
            json!({"kind": "k", "backoff": {"base_ms": 0}}),
            422,
            "validation_failed",
            "backoff",
        ),
        (
            json!({"kind": "k", "id": "not-a-uuid"}),
            422,
            "validation_failed",
            "id",
        ),
        (
            json!({"kind": "k", "queue": ""}),
            422,
            "validation_failed",
            "queue",
        ),
        (
            json!({"webhook": {"url": "ftp://example.com/"}}),
            422,
            "validation_failed",
            "scheme",
        ),
        (
            json!({"webhook": {"url": url, "method": "DELETE"}}),
            422,
            "validation_failed",
            "method",
        ),
        (
            json!({"webhook": {"url": url, "headers": {"Host": "x"}}}),
            422,
            "validation_failed",
            "headers",
        ),
        (
            json!({"webhook": {"url": url, "timeout_ms": 1}}),
            422,
            "validation_failed",
            "timeout_ms",
        ),
        (
            json!({"webhook": {"url": url, "verb": "POST"}}),
            400,
            "bad_request",
            "verb",
        ),
        (json!([1, 2]), 400, "bad_request", "object"),
        (json!(["k"]), 400, "bad_request", "object"),
    ];
    for (body, status, code, mentions) in cases {
        let answer = server.post("/v1/jobs", &body).await;
        assert_eq!(
            (answer.status, answer.code()),
            (status, code),
            "{body}: {answer:?}"
        );
        assert_eq!(answer.headers["content-type"], "application/problem+json");
        let detail = answer.body["detail"].as_str().expect("a detail");
        assert!(
            detail.contains(mentions),
            "{body}: {detail:?} should mention {mentions:?}"
        );
        assert_eq!(answer.body["status"], status);
        assert!(
            answer.body["type"]
                .as_str()
                .expect("a type")
                .ends_with(code)
        );
    }
    assert_eq!(server.job_count().await, 0);
    server.stop().await;
}

pub async fn bodies_that_are_not_json_too_large_or_mistyped_are_refused(backend: Backend) {
    let server = Server::start(backend).await;
    let url = format!("{}/v1/jobs", server.base);
    let send = |body: Vec<u8>, content_type: &'static str| {
        server
            .client
            .post(&url)
            .bearer_auth(&server.admin)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let answer = crate::harness::answer(
        send(b"{\"kind\": \"k\"".to_vec(), "application/json")
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!((answer.status, answer.code()), (400, "bad_request"));
    let answer = crate::harness::answer(
        send(b"kind=k".to_vec(), "application/x-www-form-urlencoded")
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!(
        (answer.status, answer.code()),
        (415, "unsupported_media_type")
    );
    let huge = format!(
        "{{\"kind\": \"k\", \"payload\": \"{}\"}}",
        "x".repeat(600 * 1024)
    );
    let answer = crate::harness::answer(
        send(huge.into_bytes(), "application/json")
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!((answer.status, answer.code()), (413, "body_too_large"));
    let large_payload = format!(
        "{{\"kind\": \"k\", \"payload\": \"{}\"}}",
        "x".repeat(300 * 1024)
    );
    let answer = crate::harness::answer(
        send(large_payload.into_bytes(), "application/json")
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!(
        (answer.status, answer.code()),
        (422, "validation_failed"),
        "{answer:?}"
    );
    assert!(
        answer.body["detail"]
            .as_str()
            .expect("detail")
            .contains("payload")
    );

    let batch: Vec<Value> = (0..1_001).map(|_| json!({"kind": "k"})).collect();
    let answer = server.post("/v1/jobs/batch", &json!({"jobs": batch})).await;
    assert_eq!((answer.status, answer.code()), (422, "validation_failed"));
    let answer = server.post("/v1/jobs/batch", &json!({"jobs": []})).await;
    assert_eq!(answer.status, 422);
    // Found by schemathesis: serde reads a struct from an array of its fields, which made
    // `[null, null]` a redrive of every dead job.
    let answer = server.post("/v1/jobs/redrive", &json!([null, null])).await;
    assert_eq!(
        (answer.status, answer.code()),
        (400, "bad_request"),
        "{answer:?}"
    );
    assert_eq!(server.job_count().await, 0);
    server.stop().await;
}

pub async fn listings_refuse_bad_filters_and_pages(backend: Backend) {
    let server = Server::start(backend).await;
    for (query, status) in [
        ("state=sleeping", 422),
        ("limit=0", 422),
        ("limit=1001", 422),
        ("limit=many", 400),
        ("due_after=yesterday", 422),
        ("cursor=zzz", 422),
        ("colour=red", 400),
    ] {
        let answer = server.get(&format!("/v1/jobs?{query}")).await;
        assert_eq!(answer.status, status, "{query}: {answer:?}");
    }
    let bad_id = server.get("/v1/jobs/not-an-id").await;
    assert_eq!((bad_id.status, bad_id.code()), (404, "not_found"));
    server.stop().await;
}

pub async fn listings_filter_and_page(backend: Backend) {
    let server = Server::start(backend).await;
    let mut ids = Vec::new();
    for index in 0..7 {
        let queue = if index % 2 == 0 { "even" } else { "odd" };
        ids.push(
            server
                .create(&json!({"kind": "k", "queue": queue, "delay_ms": 60_000 + index * 1_000}))
                .await,
        );
    }
    let mut seen = Vec::new();
    let mut path = "/v1/jobs?limit=3".to_owned();
    loop {
        let page = server.get(&path).await;
        assert_eq!(page.status, 200);
        for job in page.body["jobs"].as_array().expect("jobs") {
            seen.push(job["id"].as_str().expect("id").to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/jobs?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    // In id order, which is creation order to the millisecond (UUIDv7).
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    let even = server.get("/v1/jobs?queue=even").await;
    assert_eq!(even.body["jobs"].as_array().expect("jobs").len(), 4);
    let job = server.job(&ids[3]).await;
    let due_at = job["run_at"].as_str().expect("a time");
    let later = server.get(&format!("/v1/jobs?due_after={due_at}")).await;
    assert_eq!(later.body["jobs"].as_array().expect("jobs").len(), 4);
    // Odd jobs are 1, 3 and 5; before job 3's time, only job 1.
    let earlier = server
        .get(&format!("/v1/jobs?due_before={due_at}&queue=odd"))
        .await;
    assert_eq!(earlier.body["jobs"].as_array().expect("jobs").len(), 1);
    let queues = server.get("/v1/queues").await;
    assert_eq!(queues.body["queues"][0]["queue"], "even");
    assert_eq!(queues.body["queues"][0]["counts"]["scheduled"], 4);
    server.stop().await;
}
