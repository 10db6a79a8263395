//! End-to-end tests of the `punctual` binary: each test runs the real executable on its own
//! temporary SQLite file, or its own PostgreSQL schema (`cluster`), and reads what it prints.
//! The fault tests (`crash`, `cluster`) run real `punctual serve` nodes (`nodes`); `schedules`
//! runs its commands against a node in the test's own process.

mod bench;
mod client;
mod cluster;
mod crash;
mod demo;
mod jobs;
mod nodes;
mod schedules;
mod walkthrough;

/// Turns for the tests that must not overlap in this binary (the harness runs tests in
/// parallel): the cluster tests, which restart PostgreSQL under each other and load the machine
/// with node processes, the crash test, whose leases and kills such load would skew, and the
/// demo test, whose timing a concurrent fault test would skew.
pub mod turns {
    use tokio::sync::Mutex;

    /// Held for a whole test by every cluster test and the crash test (`lock().await`) and by
    /// the demo test (`blocking_lock()`, outside any runtime).
    pub static EXCLUSIVE: Mutex<()> = Mutex::const_new(());
}

use std::path::Path;
use std::process::{Command, Output};

/// The result of one run of the binary, with its output decoded.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the whole output unless the run succeeded.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `punctual` with `args` and waits for it.
pub fn punctual<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output: Output = Command::new(env!("CARGO_BIN_EXE_punctual"))
        .args(args)
        // The job commands read these; a test says where its jobs are itself.
        .env_remove("PUNCTUAL_URL")
        .env_remove("PUNCTUAL_TOKEN")
        .output()
        .expect("the punctual binary runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The path as a command-line argument.
pub fn arg(path: &Path) -> String {
    path.to_str().expect("temporary paths are UTF-8").to_owned()
}

/// The SQLite file at `path` as a `--store` argument: `sqlite:PATH`.
pub fn sqlite(path: &Path) -> String {
    format!("sqlite:{}", arg(path))
}

/// Parses JSON lines.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{line:?}: {error}")))
        .collect()
}
