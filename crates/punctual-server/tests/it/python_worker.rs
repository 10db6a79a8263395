//! The Python remote worker in `examples/worker.py` (standard library only), run against a
//! real server: it claims, works, completes, and fails a job for good.

use std::process::Stdio;
use std::time::Duration;

use punctual_server::auth::Scope;
use serde_json::json;

use crate::harness::Server;

fn python() -> Option<&'static str> {
    let found = std::process::Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if found {
        return Some("python3");
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "python3 is missing, and CI=true needs it"
    );
    eprintln!(
        "\n*** SKIPPED: python3 is not installed, so the Python worker example is not tested ***\n"
    );
    None
}

#[tokio::test]
async fn the_python_example_worker_claims_works_and_completes() {
    let Some(python) = python() else { return };
    let server = Server::start(crate::harness::Backend::Sqlite).await;
    let token = server.token(&[Scope::Worker]).await;
    let mut ids = Vec::new();
    for name in ["Ada", "Grace"] {
        ids.push(
            server
                .create(&json!({"kind": "example.greet", "payload": {"name": name}}))
                .await,
        );
    }
    let nobody = server
        .create(&json!({"kind": "example.greet", "payload": {"name": "nobody"}, "delay_ms": 300}))
        .await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/worker.py");
    let run = tokio::process::Command::new(python)
        .args([
            script,
            "--kind",
            "example.greet",
            "--max-jobs",
            "3",
            "--worker",
            "py-test",
        ])
        .env("PUNCTUAL_URL", &server.base)
        .env("PUNCTUAL_TOKEN", &token)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the worker exits after three jobs")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("hello, Ada") && stdout.contains("hello, Grace"),
        "{stdout}"
    );
    for id in &ids {
        let job = server.job(id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["attempt"], 1);
    }
    let job = server.job(&nobody).await;
    assert_eq!(job["state"], "dead", "{job}");
    assert_eq!(job["last_error"], "there is nobody to greet");
    server.stop().await;
}
