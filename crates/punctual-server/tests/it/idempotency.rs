//! `Idempotency-Key`: a retried creation never creates a second job.

use crate::harness::{Answer, Backend, Server, answer};

crate::on_every_store!(
    a_replay_gets_the_first_answer_and_a_different_body_is_refused,
    a_refused_request_keeps_no_key_and_batches_replay_too,
);

mod durable {
    use crate::harness::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_replay_after_a_restart_gets_the_first_answer(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if crate::harness::postgres_available().await {
            super::a_replay_after_a_restart_gets_the_first_answer(Backend::Postgres).await;
        }
    }
}

/// The key is in the store, not the node's memory: a client retrying across a restart (the
/// node crashed before its answer reached the client) gets the first answer.
async fn a_replay_after_a_restart_gets_the_first_answer(backend: Backend) {
    let server = Server::start(backend).await;
    let body = r#"{"kind": "invoice", "delay_ms": 60000}"#;
    let first = create_with_key(&server, "/v1/jobs", "across-restart", body).await;
    assert_eq!(first.status, 201);
    let server = server.restart().await;
    let again = create_with_key(&server, "/v1/jobs", "across-restart", body).await;
    assert_eq!(again.status, 201, "{again:?}");
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body);
    assert_eq!(server.job_count().await, 1);
    server.stop().await;
}

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

pub async fn a_replay_gets_the_first_answer_and_a_different_body_is_refused(backend: Backend) {
    let server = Server::start(backend).await;
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
    server.stop().await;
}

pub async fn a_refused_request_keeps_no_key_and_batches_replay_too(backend: Backend) {
    let server = Server::start(backend).await;
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
    server.stop().await;
}

/// While the first request under a key is being answered, another under the same key is 409
/// `idempotency_key_in_use` (with `Retry-After`) and stores nothing; once the first is answered,
/// a retry gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_first_request_is_in_progress_is_a_conflict() {
    let flaky = std::sync::Arc::new(crate::outage::Flaky::new());
    let server = Server::start_on(flaky.clone(), crate::harness::node_config("gated")).await;
    let body = r#"{"kind": "invoice", "delay_ms": 60000}"#;
    let held = flaky.gate.write().await;
    let first = {
        let client = server.client.clone();
        let url = format!("{}/v1/jobs", server.base);
        let token = server.admin.clone();
        tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .header("idempotency-key", "slow-1")
                .body(body)
                .send()
                .await
                .expect("answers");
            crate::harness::answer(response).await
        })
    };
    // Once the first request is inside the store, waiting at the gate, ask again under its key.
    crate::harness::eventually(
        std::time::Duration::from_secs(10),
        "the first request at the gate",
        || async {
            flaky
                .idempotent_calls
                .load(std::sync::atomic::Ordering::SeqCst)
                == 1
        },
    )
    .await;
    let second = create_with_key(&server, "/v1/jobs", "slow-1", body).await;
    assert_eq!(
        (second.status, second.code()),
        (409, "idempotency_key_in_use"),
        "{second:?}"
    );
    assert!(second.headers.contains_key("retry-after"));
    drop(held);
    let first = first.await.expect("the first request's task");
    assert_eq!(first.status, 201, "{first:?}");
    let third = create_with_key(&server, "/v1/jobs", "slow-1", body).await;
    assert_eq!(third.status, 201);
    assert_eq!(third.headers["idempotent-replayed"], "true");
    assert_eq!(third.body, first.body);
    assert_eq!(server.job_count().await, 1);
    server.stop().await;
}
