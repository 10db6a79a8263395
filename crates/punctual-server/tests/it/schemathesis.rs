//! The served OpenAPI document held against the server by schemathesis (from PyPI), which
//! generates requests from the document, valid and invalid, and checks each answer: never a
//! 5xx, and every status, content type, header and body as the document says. It found that an
//! array body was read as a struct (fixed, and kept as a case in `malformed`).
//!
//! CI installs schemathesis (`.ci/run`); elsewhere the test is skipped loudly when `st` is not on
//! PATH. It runs with a fixed seed so that CI is repeatable; a longer search with new seeds is
//! `PUNCTUAL_SCHEMATHESIS_EXAMPLES=500 PUNCTUAL_SCHEMATHESIS_SEED=random cargo test -p
//! punctual-server --test it schemathesis`. DELETE is left out: a generated revocation of the
//! run's own token would turn the rest of the run into 401s.

use std::time::Duration;

use crate::harness::{Backend, Server};

fn schemathesis() -> Option<&'static str> {
    let found = std::process::Command::new("st")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if found {
        return Some("st");
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "schemathesis (st) is missing, and CI=true needs it: python3 -m pip install schemathesis"
    );
    eprintln!(
        "\n*** SKIPPED: schemathesis (st) is not installed; the API was not fuzzed against its document ***\n"
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_answers_as_its_openapi_document_says() {
    let Some(st) = schemathesis() else { return };
    let server = Server::start(Backend::Sqlite).await;
    let examples =
        std::env::var("PUNCTUAL_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "25".to_owned());
    let seed =
        std::env::var("PUNCTUAL_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261201".to_owned());
    let mut command = tokio::process::Command::new(st);
    command
        .arg("run")
        .arg(format!("{}/v1/openapi.json", server.base))
        .args([
            "--header",
            &format!("Authorization: Bearer {}", server.admin),
        ])
        .args(["--checks", "all"])
        .args([
            "--exclude-checks",
            "negative_data_rejection,positive_data_acceptance",
        ])
        .args(["--exclude-method", "DELETE"])
        .args(["--max-examples", &examples])
        .args(["--request-timeout", "40"])
        .args(["--no-color"])
        .kill_on_drop(true);
    if seed != "random" {
        command.args(["--seed", &seed]);
    }
    let run = tokio::time::timeout(Duration::from_secs(600), command.output())
        .await
        .expect("schemathesis ends within 10 minutes")
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "schemathesis found answers that break the document:\n{report}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    server.stop().await;
}
