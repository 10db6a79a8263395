//! Many callers at once: group commit batches their commands, and each still gets its own
//! answer, with one command's failure undoing only that command.

use std::sync::Arc;
use std::time::Duration;

use punctual_core::{ClaimRequest, JobState, StateCount, Store, StoreError};
use punctual_sqlite::{SqliteOptions, SqliteStore};
use punctual_testkit::fixtures::{NOW, node, queue};
use tokio::task::JoinSet;

use crate::job;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_completions_all_land() {
    const JOBS: usize = 3_000;
    let (_dir, store) = crate::fresh_store();
    let store = Arc::new(store);
    for chunk in 0..JOBS / 1_000 {
        let jobs = (0..1_000).map(|_| job(NOW)).collect();
        let ids = store.insert(jobs, NOW).await.expect("insert");
        assert_eq!(ids.len(), 1_000, "chunk {chunk}");
    }
    let mut claimed = Vec::new();
    loop {
        let batch = store
            .claim(
                ClaimRequest {
                    holder: node("node-a"),
                    queues: None,
                    kinds: None,
                    limit: 1_000,
                    due_by: NOW,
                    lease: Duration::from_secs(30),
                },
                NOW,
            )
            .await
            .expect("claim");
        if batch.is_empty() {
            break;
        }
        claimed.extend(batch);
    }
    assert_eq!(claimed.len(), JOBS);

    let mut completions = JoinSet::new();
    for job in &claimed {
        let store = Arc::clone(&store);
        let (id, token) = (job.id, job.lease_token);
        completions.spawn(async move { store.complete(id, token, NOW).await });
    }
    while let Some(done) = completions.join_next().await {
        done.expect("task").expect("complete");
    }

    assert_eq!(
        store.counts().await.expect("counts"),
        [StateCount {
            queue: queue("default"),
            state: JobState::Succeeded,
            count: JOBS as u64,
        }]
    );
    // The fence still holds once the batch has committed: only the token that completed may
    // complete again (a no-op).
    let first = &claimed[0];
    let other = punctual_core::LeaseToken(first.lease_token.0 + 1);
    assert!(matches!(
        store.complete(first.id, other, NOW).await,
        Err(StoreError::LeaseLost { .. })
    ));
    store
        .complete(first.id, first.lease_token, NOW)
        .await
        .expect("a repeated completion by its holder");
    store.integrity_check().expect("a sound file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_does_not_undo_its_batch_neighbours() {
    const PAIRS: usize = 200;
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SqliteOptions {
        read_connections: 2,
        commit_batch_max: 64,
        channel_capacity: 16,
        ..SqliteOptions::default()
    };
    let store =
        Arc::new(SqliteStore::open_with(dir.path().join("punctual.db"), options).expect("open"));
    let taken = job(NOW);
    let taken_id = store
        .insert(vec![taken.clone()], NOW)
        .await
        .expect("insert")[0];

    // Half the inserts carry the stored job along and must fail whole; the other half must land,
    // although they share transactions with the failing ones.
    let mut inserts = JoinSet::new();
    for pair in 0..PAIRS {
        let store = Arc::clone(&store);
        let fresh = job(NOW);
        let duplicate = taken.clone();
        let doomed = job(NOW);
        inserts.spawn(async move {
            if pair % 2 == 0 {
                (fresh.id, true, store.insert(vec![fresh], NOW).await)
            } else {
                let id = doomed.id;
                (id, false, store.insert(vec![doomed, duplicate], NOW).await)
            }
        });
    }
    while let Some(done) = inserts.join_next().await {
        let (id, should_land, result) = done.expect("task");
        let stored = store.get(id).await.expect("get").is_some();
        if should_land {
            assert_eq!(result.expect("a fresh insert lands"), [id]);
            assert!(stored, "job {id} was acknowledged but is missing");
        } else {
            assert!(
                matches!(result, Err(StoreError::Duplicate(duplicate)) if duplicate == taken_id),
                "unexpected answer {result:?}"
            );
            assert!(!stored, "job {id} of a refused batch was stored");
        }
    }
    let counts = store.counts().await.expect("counts");
    assert_eq!(counts[0].count, 1 + PAIRS as u64 / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_failures_become_unavailable_and_the_store_keeps_answering() {
    let (_dir, store) = crate::fresh_store();
    let id = store.insert(vec![job(NOW)], NOW).await.expect("insert")[0];

    // Pull the table from under the store, as a damaged or foreign file would.
    let connection = rusqlite::Connection::open(store.path()).expect("open with rusqlite");
    connection
        .execute_batch("DROP TABLE job")
        .expect("drop the table");

    for _ in 0..2 {
        assert!(matches!(
            store.insert(vec![job(NOW)], NOW).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.cancel(id, NOW).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.get(id).await,
            Err(StoreError::Unavailable(_))
        ));
    }
}
