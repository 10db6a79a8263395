//! kill -9: every job the store acknowledged is in the file after the process dies mid-write.
//!
//! The test runs this same test binary as a child process (selecting only
//! `child_inserts_until_killed`, which does nothing unless `CHILD_DATABASE` is set). The child
//! inserts jobs from several tasks, so that group commit batches them, and prints each id once
//! its insert is acknowledged. The parent kills it with SIGKILL while it is writing, reopens the
//! file, and checks that every printed id is stored and that the file is sound; three times, so
//! a crashed WAL is recovered and written on again.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use punctual_core::{JobId, Store};
use punctual_sqlite::SqliteStore;
use punctual_testkit::fixtures::NOW;

use crate::job;

/// The database the child writes to; unset, the child test returns at once.
const CHILD_DATABASE: &str = "PUNCTUAL_SQLITE_CRASH_CHILD_DATABASE";
const ROUNDS: usize = 3;
/// Acknowledgements the parent waits for before each kill.
const ACKS_PER_ROUND: usize = 1_500;
/// A bound on how long the parent waits for them, and on how long an orphaned child runs.
const DEADLINE: Duration = Duration::from_secs(60);

/// Kills the child if the test panics before it does, so no process is left behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn acknowledged_jobs_survive_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("punctual.db");
    let mut acknowledged: HashSet<JobId> = HashSet::new();

    for round in 0..ROUNDS {
        let child = Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "crash::child_inserts_until_killed",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DATABASE, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child");
        let mut child = KillOnDrop(child);
        let stdout = child.0.stdout.take().expect("piped stdout");

        // A thread reads the child's lines so the parent can wait with a deadline.
        let (lines, received) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });

        let mut this_round = 0;
        let started = Instant::now();
        while this_round < ACKS_PER_ROUND {
            let left = DEADLINE.saturating_sub(started.elapsed());
            let line = received
                .recv_timeout(left)
                .unwrap_or_else(|error| panic!("round {round}: child stopped acking: {error}"));
            if let Some(id) = parse_ack(&line) {
                acknowledged.insert(id);
                this_round += 1;
            }
        }
        // SIGKILL, while the child's writers are still busy.
        child.0.kill().expect("kill the child");
        child.0.wait().expect("reap the child");
        // Acks the child printed before it died are still in the pipe: they count too.
        reader.join().expect("reader thread");
        acknowledged.extend(received.try_iter().filter_map(|line| parse_ack(&line)));
    }

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let store = SqliteStore::open(&path).expect("reopen after kill -9");
    store.integrity_check().expect("a sound file after kill -9");
    let mut missing = Vec::new();
    runtime.block_on(async {
        for id in &acknowledged {
            if store.get(*id).await.expect("get").is_none() {
                missing.push(*id);
            }
        }
    });
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged jobs were lost, e.g. {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(acknowledged.len() >= ROUNDS * ACKS_PER_ROUND);
}

fn parse_ack(line: &str) -> Option<JobId> {
    line.strip_prefix("acked ")?.parse().ok()
}

/// The child's side of `acknowledged_jobs_survive_kill_9`; does nothing in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_inserts_until_killed() {
    let Some(path) = std::env::var_os(CHILD_DATABASE) else {
        return;
    };
    let store = Arc::new(SqliteStore::open(path).expect("open in the child"));
    let started = Instant::now();
    let mut writers = Vec::new();
    for writer in 0..8 {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            // Bounded, so that a child whose parent died stops by itself.
            while started.elapsed() < DEADLINE {
                let jobs = (0..1 + writer % 4).map(|_| job(NOW)).collect();
                let ids = store.insert(jobs, NOW).await.expect("insert in the child");
                let mut out = std::io::stdout().lock();
                for id in ids {
                    writeln!(out, "acked {id}").expect("write to the parent");
                }
                out.flush().expect("flush to the parent");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer task");
    }
}
