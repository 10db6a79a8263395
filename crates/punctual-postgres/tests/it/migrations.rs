//! Migrations: applied once, safe when nodes start together, a newer schema is refused, and a
//! step added later applies to the jobs a schema already holds.

use std::time::Duration;

use punctual_core::{ClaimRequest, JobOptions, Store, StoreError};
use punctual_postgres::{PgOptions, PgStore, SCHEMA_VERSION};
use punctual_testkit::fixtures::{NOW, kind, new_job, node};

use crate::{TestSchema, database_url, raw_client};

async fn recorded_versions(schema: &str) -> Vec<i32> {
    let client = raw_client(Some(schema)).await;
    client
        .query(
            "SELECT version FROM punctual_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("read punctual_migrations")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_applied_once_and_are_idempotent() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let store = schema.connect().await;
    assert_eq!(
        store.migrate().await.expect("migrate"),
        0,
        "connect applied them"
    );
    let again = schema.connect().await;
    assert_eq!(again.migrate().await.expect("migrate"), 0);
    let every_version: Vec<i32> = (1..=SCHEMA_VERSION).collect();
    assert_eq!(recorded_versions(&schema.name).await, every_version);

    // A node told not to migrate accepts a current schema.
    let options = PgOptions {
        apply_migrations: false,
        ..schema.options()
    };
    PgStore::connect_with(&database_url(), options)
        .await
        .expect("a current schema needs no migration");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_on_an_empty_schema_are_safe() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let mut nodes = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let options = schema.options();
        nodes.spawn(async move { PgStore::connect_with(&database_url(), options).await });
    }
    while let Some(joined) = nodes.join_next().await {
        joined
            .expect("a connecting task panicked")
            .expect("connect");
    }
    let every_version: Vec<i32> = (1..=SCHEMA_VERSION).collect();
    assert_eq!(recorded_versions(&schema.name).await, every_version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_a_newer_punctual_is_refused() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    schema.connect().await;
    let client = raw_client(Some(&schema.name)).await;
    client
        .execute(
            "INSERT INTO punctual_migrations (version, name, applied_at_us) VALUES ($1, 'from the future', 0)",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .expect("record a newer version");
    let refused = PgStore::connect_with(&database_url(), schema.options()).await;
    assert!(
        matches!(&refused, Err(StoreError::Corrupt(message)) if message.contains("newer")),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_must_not_migrate_refuses_an_old_schema() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let options = PgOptions {
        apply_migrations: false,
        ..schema.options()
    };
    let refused = PgStore::connect_with(&database_url(), options).await;
    assert!(
        matches!(&refused, Err(StoreError::Corrupt(message)) if message.contains("punctual migrate")),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let options = PgOptions {
        connect_timeout: std::time::Duration::from_secs(2),
        ..PgOptions::default()
    };
    let result = PgStore::connect_with("postgres://postgres@127.0.0.1:1/test", options).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    let result = PgStore::connect("not a url").await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
}

/// Schema step 5 indexes the pending jobs a schema already holds by kind: the step taken back
/// out of a populated schema (its index dropped, its record deleted), then a reconnect; the
/// kinds-filtered reads, which now walk only that index, find the jobs stored before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kinds_index_step_indexes_the_jobs_already_stored() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let store = schema.connect().await;
    let of_kind = |name: &str, seconds: u64| {
        new_job(
            name,
            NOW.add(Duration::from_secs(seconds)),
            JobOptions::default(),
            NOW,
        )
    };
    let jobs = vec![
        of_kind("pg.other", 1),
        of_kind("pg.wanted", 5),
        of_kind("pg.wanted", 3),
    ];
    store.insert(jobs, NOW).await.expect("insert");
    drop(store);
    raw_client(Some(&schema.name))
        .await
        .batch_execute(
            "DROP TRIGGER punctual_jobs_notify_cancelled ON punctual_jobs;
             DROP FUNCTION punctual_jobs_notify_cancelled();
             DROP TABLE punctual_schedules, punctual_schedule_occurrences;
             DROP INDEX punctual_jobs_pending_by_kind;
             DELETE FROM punctual_migrations WHERE version >= 5;",
        )
        .await
        .expect("take step 5 and later back out");

    let store = schema.connect().await;
    let every_version: Vec<i32> = (1..=SCHEMA_VERSION).collect();
    assert_eq!(recorded_versions(&schema.name).await, every_version);
    let wanted = [kind("pg.wanted")];
    let due = store.next_due(None, Some(&wanted)).await.expect("next_due");
    assert_eq!(due, Some(NOW.add(Duration::from_secs(3))));
    let request = ClaimRequest {
        holder: node("node-a"),
        queues: None,
        kinds: Some(wanted.to_vec()),
        limit: 10,
        due_by: NOW.add(Duration::from_secs(60)),
        lease: Duration::from_secs(30),
    };
    let claimed = store.claim(request, NOW).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|job| job.kind == wanted[0]));
}
