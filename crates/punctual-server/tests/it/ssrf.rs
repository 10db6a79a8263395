//! The SSRF guard end to end: at creation, and at connect time on the address dialled.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::harness::{Backend, FixedResolver, Receiver, Server, node_config};

crate::on_every_store!(
    private_targets_are_refused_unless_allowed,
    a_name_that_later_resolves_to_a_refused_address_is_refused_when_sent,
);

pub async fn private_targets_are_refused_unless_allowed(backend: Backend) {
    let mut config = node_config("guarded");
    config.allow_networks.clear();
    let server = Server::start_with(backend, config, None).await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost:8080/hook",
        "http://[::1]/hook",
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/hook",
    ] {
        let answer = server
            .post("/v1/jobs", &json!({"webhook": {"url": url}}))
            .await;
        assert_eq!(
            (answer.status, answer.code()),
            (422, "webhook_target_refused"),
            "{url}: {answer:?}"
        );
    }
    assert_eq!(server.job_count().await, 0);
    server.stop().await;
}

pub async fn a_name_that_later_resolves_to_a_refused_address_is_refused_when_sent(
    backend: Backend,
) {
    let receiver = Receiver::start().await;
    let mut config = node_config("rebinding");
    config.allow_networks.clear();
    let resolver = Arc::new(FixedResolver(Mutex::new(vec![
        "93.184.216.34".parse().expect("ip"),
    ])));
    let server = Server::start_with(backend, config, Some(resolver.clone())).await;
    let url = format!("http://receiver.test:{}/hook", receiver.address.port());
    // Public when created ...
    let id = server
        .create(&json!({"webhook": {"url": url}, "delay_ms": 300, "attempt_max": 1}))
        .await;
    // ... loopback when sent (DNS rebinding): the client never dials it.
    *resolver.0.lock().expect("lock") = vec!["127.0.0.1".parse().expect("ip")];
    let job = server
        .wait_for_state(&id, "dead", Duration::from_secs(5))
        .await;
    let error = job["last_error"].as_str().expect("an error");
    assert!(error.contains("may not reach"), "{error}");
    assert!(receiver.received().is_empty());
    server.stop().await;
}
