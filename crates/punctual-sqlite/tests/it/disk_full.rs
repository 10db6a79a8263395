//! A disk that fills up: the database lives on a tmpfs of a size this test sets (mounting one
//! needs root, which CI has; elsewhere the test says SKIPPED, and fails under `CI=true`).
//! Inserts fail with a clear, typed error and store nothing; every acknowledged job is still
//! there; claims and completions go on in the space of the store's disk reserve, so what is
//! stored still runs; and the store takes new jobs again by itself when space returns.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use punctual_core::{ClaimRequest, JobId, JobOptions, NewJob, Payload, Store, StoreError};
use punctual_sqlite::{SqliteOptions, SqliteStore};
use punctual_testkit::fixtures::{NOW, kind, node};
use punctual_testkit::small_disk::SmallDisk;

/// Small beside the 16 MiB disk, large beside what the test's claims and completions write.
const RESERVE: u64 = 2 * 1024 * 1024;

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
    let Some(disk) = SmallDisk::mount_or_skip("16m", "the SQLite disk-full test") else {
        return;
    };
    let db: PathBuf = disk.path().join("punctual.db");
    let options = SqliteOptions {
        disk_reserve: RESERVE,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(&db, options.clone()).expect("open");
    let reserve_file = disk.path().join("punctual.db-reserve");
    assert_eq!(
        std::fs::metadata(&reserve_file).expect("the reserve").len(),
        RESERVE
    );

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
    let filler = disk.fill("filler");

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
    assert!(
        !reserve_file.exists(),
        "the reserve was given up for the jobs already stored"
    );
    // More inserts are refused at once, without writing, and say why.
    match store.insert(vec![big_job(1)], NOW).await {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("disk is full"), "{message}");
        }
        other => panic!("an insert while the disk is full: {other:?}"),
    }

    // What is stored still runs: claims and completions write into the reserve's space.
    let claim = |limit| ClaimRequest {
        holder: node("node-a"),
        queues: None,
        kinds: None,
        limit,
        due_by: NOW.add(Duration::from_secs(2)),
        lease: Duration::from_secs(30),
    };
    let due = NOW.add(Duration::from_secs(1));
    let claimed = store
        .claim(claim(1_000), due)
        .await
        .expect("a claim while the disk is full");
    assert_eq!(
        claimed.len(),
        acknowledged.len(),
        "every stored job is claimed"
    );
    for job in &claimed {
        let token = job.lease.as_ref().expect("claimed").token;
        store
            .complete(job.id, token, due)
            .await
            .expect("a completion while the disk is full");
    }

    // Space returns: within about a second (the store's probe), new jobs are taken again,
    // without a restart, and the reserve is held again.
    std::fs::remove_file(&filler).expect("free the space");
    let freed = Instant::now();
    let again = loop {
        match store.insert(vec![big_job(0)], due).await {
            Ok(stored) => break stored,
            Err(StoreError::Unavailable(_)) if freed.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("inserts are still refused after space returned: {error}"),
        }
    };
    assert_eq!(
        std::fs::metadata(&reserve_file).expect("the reserve").len(),
        RESERVE
    );
    acknowledged.extend(again);
    drop(store);

    // And the file holds all of it after a reopen.
    let reopened = SqliteStore::open_with(&db, options).expect("reopen");
    for id in &acknowledged {
        assert!(reopened.get(*id).await.expect("get").is_some(), "lost {id}");
    }
    reopened.integrity_check().expect("the file is sound");
}
