//! The schema is applied once, reopening changes nothing, and a newer schema is refused.

use punctual_core::{ClaimRequest, FailOutcome, JobOptions, JobState, Store, StoreError};
use punctual_sqlite::{SCHEMA_VERSION, SqliteStore};
use punctual_testkit::fixtures::{NOW, kind, new_job, node, queue};

use crate::{job, open};

fn user_version(path: &std::path::Path) -> u32 {
    let connection = rusqlite::Connection::open(path).expect("open with rusqlite");
    connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("user_version")
}

/// The names of the schema's tables and indexes, sorted.
fn schema_objects(path: &std::path::Path) -> Vec<String> {
    let connection = rusqlite::Connection::open(path).expect("open with rusqlite");
    let mut statement = connection
        .prepare("SELECT type || ' ' || name FROM sqlite_schema ORDER BY name")
        .expect("prepare");
    statement
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_file_gets_the_schema_once_and_reopening_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("punctual.db");
    let store = open(&path);
    let id = store.insert(vec![job(NOW)], NOW).await.expect("insert")[0];
    drop(store);
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let objects = schema_objects(&path);
    assert_eq!(
        objects,
        [
            "table api_token",
            "table idempotency_key",
            "index idempotency_key_by_expiry",
            "table job",
            "table job_count",
            "index job_finished_by_time",
            "index job_pending_by_kind",
            "index job_pending_by_priority",
            "index job_pending_by_queue",
            "index job_running_by_lease_expiry",
            "table leader",
            "table schedule",
            "index schedule_by_next_check",
            "table schedule_occurrence",
            "index schedule_occurrence_by_recorded",
            "index schedule_occurrence_by_schedule",
            "index sqlite_autoindex_idempotency_key_1",
            "index sqlite_autoindex_schedule_2",
            "table sqlite_sequence",
        ]
    );

    for _ in 0..2 {
        let store = open(&path);
        assert!(store.get(id).await.expect("get").is_some());
        drop(store);
        assert_eq!(user_version(&path), SCHEMA_VERSION);
        assert_eq!(schema_objects(&path), objects);
    }
}

#[test]
fn a_file_from_a_newer_version_is_refused_as_corrupt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("punctual.db");
    drop(open(&path));
    let connection = rusqlite::Connection::open(&path).expect("open with rusqlite");
    connection
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("set user_version");
    drop(connection);

    match SqliteStore::open(&path) {
        Err(StoreError::Corrupt(message)) => {
            assert!(message.contains("newer"), "unclear message: {message}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Refusing it changed nothing.
    assert_eq!(user_version(&path), SCHEMA_VERSION + 1);
}

#[test]
fn a_file_that_is_not_a_database_is_refused_as_corrupt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("punctual.db");
    std::fs::write(&path, vec![0x5a; 8_192]).expect("write garbage");
    match SqliteStore::open(&path) {
        Err(StoreError::Corrupt(_)) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Schema step 4 starts the job counts from the jobs a file already holds. A file from before
/// it is made by taking the step back out of a current one (its table dropped,
/// `user_version` set to 3), with jobs in several queues and states left in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counts_step_counts_the_jobs_already_stored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("punctual.db");
    let store = open(&path);
    let jobs = (0..7)
        .map(|n| {
            let name = if n < 4 { "alpha" } else { "beta" };
            new_job(
                "sqlite.test",
                NOW,
                JobOptions::default().queue(queue(name)),
                NOW,
            )
        })
        .collect();
    store.insert(jobs, NOW).await.expect("insert");
    let request = ClaimRequest {
        holder: node("node-a"),
        queues: None,
        kinds: None,
        limit: 3,
        due_by: NOW,
        lease: std::time::Duration::from_secs(30),
    };
    let claimed = store.claim(request, NOW).await.expect("claim");
    let token = claimed[0].lease.as_ref().expect("leased").token;
    store
        .fail(claimed[0].id, token, "boom", FailOutcome::Dead, NOW)
        .await
        .expect("fail");
    let before = store.counts().await.expect("counts");
    assert_eq!(before.iter().map(|count| count.count).sum::<u64>(), 7);
    assert!(
        before
            .iter()
            .any(|count| count.state == JobState::Dead && count.count == 1)
    );
    drop(store);

    // Steps 4 and 5 made and then dropped the triggers, and step 6 added an index; taking
    // them out leaves a file of version 3, whose jobs the counts step must count.
    let connection = rusqlite::Connection::open(&path).expect("open with rusqlite");
    connection
        .execute_batch(
            "DROP TABLE schedule; DROP TABLE schedule_occurrence; DROP INDEX job_pending_by_kind; DROP TABLE job_count; PRAGMA user_version = 3;",
        )
        .expect("take steps 4 to 6 back out");
    drop(connection);

    let store = open(&path);
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(store.counts().await.expect("counts"), before);
}

/// Schema step 6 indexes the pending jobs a file already holds by kind. A file from before it is
/// made by taking the step back out of a current one (the index dropped, `user_version` set to
/// 5); once reopened, the kinds-filtered reads, which now walk only the new index, find those
/// jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kinds_index_step_indexes_the_jobs_already_stored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("punctual.db");
    let store = open(&path);
    let of_kind = |name: &str, seconds: u64| {
        new_job(
            name,
            NOW.add(std::time::Duration::from_secs(seconds)),
            JobOptions::default(),
            NOW,
        )
    };
    let jobs = vec![
        of_kind("sqlite.other", 1),
        of_kind("sqlite.wanted", 5),
        of_kind("sqlite.wanted", 3),
    ];
    store.insert(jobs, NOW).await.expect("insert");
    drop(store);

    let connection = rusqlite::Connection::open(&path).expect("open with rusqlite");
    connection
        .execute_batch(
            "DROP TABLE schedule; DROP TABLE schedule_occurrence; DROP INDEX job_pending_by_kind; PRAGMA user_version = 5;",
        )
        .expect("take step 6 back out");
    drop(connection);

    let store = open(&path);
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert!(schema_objects(&path).contains(&"index job_pending_by_kind".to_owned()));
    let wanted = [kind("sqlite.wanted")];
    let due = store.next_due(None, Some(&wanted)).await.expect("next_due");
    assert_eq!(due, Some(NOW.add(std::time::Duration::from_secs(3))));
    let request = ClaimRequest {
        holder: node("node-a"),
        queues: None,
        kinds: Some(wanted.to_vec()),
        limit: 10,
        due_by: NOW.add(std::time::Duration::from_secs(60)),
        lease: std::time::Duration::from_secs(30),
    };
    let claimed = store.claim(request, NOW).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|job| job.kind == wanted[0]));
}
