//! A disk that fills up: the database lives on a tmpfs of a size this test sets (mounting one
//! needs root, which CI has; elsewhere the test says SKIPPED, and fails under `CI=true`).
//! Inserts fail with a clear, typed error and store nothing; every acknowledged job is still
//! there; the store goes on answering reads and comes back by itself when space returns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use punctual_core::{ClaimRequest, JobId, JobOptions, NewJob, Payload, Store, StoreError};
use punctual_sqlite::SqliteStore;
use punctual_testkit::fixtures::{NOW, kind, node};

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Result<SmallDisk, String> {
        let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|error| format!("could not run mount: {error}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Writes a file of zeros at `path` until the filesystem is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("create the filler");
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    // The last partial block may have been cut short; whatever fitted stays.
    let _ = file.sync_all();
}

fn big_job(sequence: usize) -> NewJob {
    let payload = format!("\"{}\"", "x".repeat(2_000 + sequence % 7));
    NewJob::new(
        kind("k"),
        Payload::from_json_text(&payload).expect("json"),
        NOW.add(Duration::from_secs(1)),
        JobOptions::default(),
        NOW,
    )
    .expect("a valid job")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_inserts_keeps_what_was_acknowledged_and_recovers() {
    let disk = match SmallDisk::mount("16m") {
        Ok(disk) => disk,
        Err(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "the disk-full test needs to mount a tmpfs (root), and CI=true: {why}"
            );
            eprintln!("SKIPPED: the disk-full test could not mount a tmpfs: {why}");
            return;
        }
    };
    let db: PathBuf = disk.path().join("punctual.db");
    let store = SqliteStore::open(&db).expect("open");

    // Acknowledged jobs, then a disk with no room left.
    let mut acknowledged: Vec<JobId> = Vec::new();
    for batch in 0..20 {
        let jobs: Vec<NewJob> = (0..10).map(|n| big_job(batch * 10 + n)).collect();
        acknowledged.extend(
            store
                .insert(jobs, NOW)
                .await
                .expect("insert while there is room"),
        );
    }
    let filler = disk.path().join("filler");
    fill(&filler);

    // Inserts now fail, typed, and store nothing; a batch is all or none.
    let mut refused = None;
    for attempt in 0..200 {
        let jobs: Vec<NewJob> = (0..50).map(|n| big_job(attempt * 50 + n)).collect();
        let ids: Vec<JobId> = jobs.iter().map(|job| job.id).collect();
        match store.insert(jobs, NOW).await {
            Ok(stored) => acknowledged.extend(stored),
            Err(error) => {
                refused = Some((error, ids));
                break;
            }
        }
    }
    let (error, refused_ids) = refused.expect("a full disk refuses an insert");
    match &error {
        StoreError::Unavailable(message) => {
            assert!(message.contains("full"), "the error says why: {message}");
        }
        other => panic!("a full disk is Unavailable (it may pass), not {other:?}"),
    }
    for id in &refused_ids {
        assert_eq!(store.get(*id).await.expect("reads still answer"), None);
    }
    // Every acknowledged job is there, readable while the disk is full.
    for id in &acknowledged {
        assert!(store.get(*id).await.expect("get").is_some(), "lost {id}");
    }
    assert!(store.fatal_error().is_none(), "a full disk is not fatal");
    // A claim is a write too: while the disk is full it is refused like an insert (nothing
    // claimed, nothing half done), so the node waits for space to fire what it has. Keeping a
    // reserve for claims and completions is not done yet (the CHANGELOG says so).
    let claim = |limit| ClaimRequest {
        holder: node("node-a"),
        queues: None,
        kinds: None,
        limit,
        due_by: NOW.add(Duration::from_secs(2)),
        lease: Duration::from_secs(30),
    };
    let due = NOW.add(Duration::from_secs(1));
    match store.claim(claim(5), due).await {
        Err(StoreError::Unavailable(message)) => assert!(message.contains("full"), "{message}"),
        other => panic!("a claim on a full disk: {other:?}"),
    }

    // Space returns: the store writes again, without a restart.
    std::fs::remove_file(&filler).expect("free the space");
    let again = store
        .insert(vec![big_job(0)], NOW)
        .await
        .expect("an insert succeeds once there is room");
    acknowledged.extend(again);
    let claimed = store.claim(claim(1_000), due).await.expect("claim");
    assert_eq!(
        claimed.len(),
        acknowledged.len(),
        "the refused claim took nothing"
    );
    for job in &claimed {
        let token = job.lease.as_ref().expect("claimed").token;
        store.complete(job.id, token, due).await.expect("complete");
    }
    drop(store);

    // And the file holds all of it after a reopen.
    let reopened = SqliteStore::open(&db).expect("reopen");
    for id in &acknowledged {
        assert!(reopened.get(*id).await.expect("get").is_some(), "lost {id}");
    }
    reopened.integrity_check().expect("the file is sound");
}
