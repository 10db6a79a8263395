//! The README's walk-through, run as written: the shell blocks after the
//! `<!-- walkthrough:NAME -->` markers are read from README.md and run with bash, with the real
//! binary first on PATH (and in place of `cargo run ... --`), in a scratch directory. Only the
//! ports change (through `PUNCTUAL_LISTEN` and a substitution of 7272 and 8080), so the test
//! does not collide with a node a developer runs. A webhook signing secret is set in the
//! environment, so the receiver also checks the signature.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::arg;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The shell block after `<!-- walkthrough:NAME -->` in the README.
fn block(readme: &str, name: &str) -> String {
    let marker = format!("<!-- walkthrough:{name} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"))
        .1;
    let body = after
        .split_once("```sh\n")
        .expect("a sh block after the marker")
        .1;
    body.split_once("```").expect("the block ends").0.to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A bash process in its own process group, stopped with the whole group when dropped.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        // `--` so that the negative pid (the whole group) is not read as an option.
        let _ = Command::new("kill")
            .args(["-s", "TERM", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

fn bash(script: &str, dir: &Path, path: &str, port: u16, out: &Path) -> Command {
    use std::os::unix::process::CommandExt as _;
    let mut command = Command::new("bash");
    command
        .args(["-e", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .env("PUNCTUAL_LISTEN", format!("127.0.0.1:{port}"))
        .env("PUNCTUAL_WEBHOOK_SECRETS", SECRET)
        .env("PUNCTUAL_WEBHOOK_SECRET", SECRET)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).expect("an output file"))
        .stderr(std::fs::File::create(out.with_extension("stderr")).expect("an error file"))
        .process_group(0);
    command
}

fn wait_for(file: &Path, text: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let content = std::fs::read_to_string(file).unwrap_or_default();
        if content.contains(text) {
            return content;
        }
        let errors = std::fs::read_to_string(file.with_extension("stderr")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "{} never showed {text:?}:\n{content}\nstderr:\n{errors}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_readme_walkthrough_works_as_written() {
    if Command::new("python3").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 is missing, and CI=true needs it"
        );
        eprintln!(
            "\n*** SKIPPED: python3 is not installed; the README walk-through was not run ***\n"
        );
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let dir = scratch.path();
    std::os::unix::fs::symlink(root.join("examples"), dir.join("examples")).expect("link examples");
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).expect("a bin directory");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_punctual"), bin.join("punctual"))
        .expect("link the binary");
    let path = format!(
        "{}:{}",
        arg(&bin),
        std::env::var("PATH").unwrap_or_default()
    );
    let (api, receiver) = (free_port(), free_port());
    let ported = |script: String| {
        script
            .replace("7272", &api.to_string())
            .replace("8080", &receiver.to_string())
    };

    let serve =
        block(&readme, "serve").replace("cargo run --release -p punctual-cli --", "punctual");
    let server_out = dir.join("serve.out");
    let _server = Group(
        bash(&serve, dir, &path, api, &server_out)
            .spawn()
            .expect("start the node"),
    );
    wait_for(
        &server_out.with_extension("stderr"),
        "punctual is serving",
        Duration::from_secs(30),
    );

    // The schedule block exports the token; the list block needs it too, so they run together,
    // with the wait for the receipt in between, as a person would wait.
    let schedule = ported(block(&readme, "schedule"));
    let list = ported(block(&readme, "list"));
    let client_out = dir.join("client.out");
    let marker = "=== waiting for the webhook ===";
    let script = format!(
        "{schedule}\necho\necho '{marker}'\nuntil grep -q 'received /reminder' client.out; do sleep 0.1; done\n{list}\necho"
    );
    let client = bash(&script, dir, &path, api, &client_out)
        .spawn()
        .expect("run the client");
    let _client = Group(client);
    let output = wait_for(&client_out, "\"jobs\"", Duration::from_secs(60));

    let created: serde_json::Value = serde_json::from_str(
        output
            .lines()
            .find(|line| line.starts_with('{') && line.contains("\"webhook\""))
            .unwrap_or_else(|| panic!("the creation's answer:\n{output}")),
    )
    .expect("the created job is JSON");
    let id = created["id"].as_str().expect("an id");
    assert_eq!(created["state"], "scheduled", "{created}");
    let received = output
        .lines()
        .find(|line| line.starts_with("received /reminder"))
        .expect("the receiver printed the webhook");
    assert!(received.contains(id), "{received}");
    assert!(received.contains("signature verified"), "{received}");
    assert!(received.contains("ada@example.com"), "{received}");
    let listed: serde_json::Value = serde_json::from_str(
        output
            .lines()
            .rev()
            .find(|line| line.starts_with("{\"jobs\""))
            .expect("the listing"),
    )
    .expect("the listing is JSON");
    let job = &listed["jobs"][0];
    assert_eq!(job["id"], id);
    // The listing may come a moment before the completion is stored; then it is stored soon.
    assert!(
        matches!(job["state"].as_str(), Some("succeeded" | "running")),
        "{job}"
    );
    let store = crate::sqlite(&dir.join("punctual.db"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = crate::punctual(["jobs", "show", id, "--store", &store, "--json"]).ok();
        let job: serde_json::Value = serde_json::from_str(shown.stdout.trim()).expect("JSON");
        if job["state"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "{job}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
