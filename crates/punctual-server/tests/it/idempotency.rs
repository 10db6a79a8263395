//! `Idempotency-Key`: a retried creation never creates a second job.

use serde_json::json;

use crate::harness::{Answer, Server, answer};

async fn create_with_key(server: &Server, path: &str, key: &str, body: &str) -> Answer {
    let response = server
        .client
        .post(format!("{}{path}", server.base))
        .bearer_auth(&server.admin)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_owned())
        .send()
        .await
        .expect("answers");
    answer(response).await
}

#[tokio::test]
async fn a_replay_gets_the_first_answer_and_a_different_body_is_refused() {
    let server = Server::start().await;
    let body = r#"{"kind": "invoice", "delay_ms": 60000, "payload": {"n": 1}}"#;
    let first = create_with_key(&server, "/v1/jobs", "order-7", body).await;
    assert_eq!(first.status, 201, "{first:?}");
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = create_with_key(&server, "/v1/jobs", "order-7", body).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body, "the first answer, byte for byte");
    assert_eq!(again.headers["location"], first.headers["location"]);
    assert_eq!(server.job_count().await, 1);

    let other = create_with_key(
        &server,
        "/v1/jobs",
        "order-7",
        r#"{"kind": "invoice", "payload": {"n": 2}}"#,
    )
    .await;
    assert_eq!(
        (other.status, other.code()),
        (422, "idempotency_key_mismatch")
    );
    // The same key on another route is another request too.
    let batch = create_with_key(
        &server,
        "/v1/jobs/batch",
        "order-7",
        &format!(r#"{{"jobs": [{body}]}}"#),
    )
    .await;
    assert_eq!(
        (batch.status, batch.code()),
        (422, "idempotency_key_mismatch")
    );
    assert_eq!(server.job_count().await, 1);

    // Another key, another job; a key is scoped to its token.
    let fresh = create_with_key(&server, "/v1/jobs", "order-8", body).await;
    assert_eq!(fresh.status, 201);
    assert_ne!(fresh.body["id"], first.body["id"]);
    assert_eq!(server.job_count().await, 2);
    server.node.stop().await;
}

#[tokio::test]
async fn a_refused_request_keeps_no_key_and_batches_replay_too() {
    let server = Server::start().await;
    let refused = create_with_key(
        &server,
        "/v1/jobs",
        "k1",
        r#"{"kind": "x", "priority": 99}"#,
    )
    .await;
    assert_eq!(refused.status, 422);
    let fixed = create_with_key(&server, "/v1/jobs", "k1", r#"{"kind": "x", "priority": 9}"#).await;
    assert_eq!(fixed.status, 201, "an error keeps no key: {fixed:?}");

    let batch = r#"{"jobs": [{"kind": "x", "delay_ms": 60000}, {"kind": "y", "delay_ms": 60000}]}"#;
    let first = create_with_key(&server, "/v1/jobs/batch", "b1", batch).await;
    let again = create_with_key(&server, "/v1/jobs/batch", "b1", batch).await;
    assert_eq!((first.status, again.status), (201, 201));
    assert_eq!(first.body, again.body);
    assert_eq!(server.job_count().await, 3);

    let empty = create_with_key(&server, "/v1/jobs", "", r#"{"kind": "x"}"#).await;
    assert_eq!((empty.status, empty.code()), (400, "bad_request"));
    let _ = json!({});
    server.node.stop().await;
}
