//! Housekeeping of the store's own schema: the jobs table's health as PostgreSQL's statistics
//! see it, and dropping the schema (only a schema of punctual's own).

use std::time::{Duration, Instant};

use punctual_core::{JobOptions, Store, StoreError};
use punctual_postgres::{PgOptions, PgStore, TableHealth};
use punctual_testkit::fixtures::{NOW, job_id, new_job};

use crate::{TestSchema, database_url, raw_client};

/// PostgreSQL flushes a backend's statistics within about a second of its writes; a loaded
/// machine gets far more.
const STATISTICS_PATIENCE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
/// Few enough that their row versions stay on one page below the fillfactor, so neither page
/// pruning nor autovacuum (1,000 dead rows at least) reclaims a dead version during the test.
const JOBS: u64 = 5;

/// Reads `store`'s health until `done` holds, failing the test after `STATISTICS_PATIENCE`.
async fn health_when(
    store: &PgStore,
    what: &str,
    done: impl Fn(&TableHealth) -> bool,
) -> TableHealth {
    let deadline = Instant::now() + STATISTICS_PATIENCE;
    loop {
        let health = store.table_health().await.expect("table health");
        if done(&health) {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {health:?} after {STATISTICS_PATIENCE:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn schema_exists(name: &str) -> bool {
    let client = raw_client(None).await;
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            &[&name],
        )
        .await
        .expect("look for the schema");
    row.get::<_, i64>(0) == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_health_counts_the_stores_own_jobs_table() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let Some(other) = TestSchema::new().await else {
        return;
    };
    let store = schema.connect().await;
    let neighbour = other.connect().await;

    let empty = store.table_health().await.expect("table health");
    assert_eq!((empty.dead_tuples, empty.live_tuples), (0, 0), "{empty:?}");
    // An empty heap takes no page, but each index has its metapage.
    assert!(empty.table_bytes > 0, "{empty:?}");

    let ids = store
        .insert(
            (0..JOBS)
                .map(|sequence| {
                    let options = JobOptions::default().id(job_id(NOW, sequence));
                    new_job("health.job", NOW, options, NOW)
                })
                .collect(),
            NOW,
        )
        .await
        .expect("insert");
    // Another schema's jobs are not this store's.
    neighbour
        .insert(
            (0..2 * JOBS)
                .map(|sequence| {
                    let options = JobOptions::default().id(job_id(NOW, sequence));
                    new_job("health.job", NOW, options, NOW)
                })
                .collect(),
            NOW,
        )
        .await
        .expect("insert next door");
    let inserted = health_when(&store, "the inserts counted", |health| {
        health.live_tuples == JOBS
    })
    .await;
    assert_eq!(inserted.dead_tuples, 0, "{inserted:?}");
    assert!(inserted.table_bytes > empty.table_bytes, "{inserted:?}");
    health_when(&neighbour, "the neighbour's inserts counted", |health| {
        health.live_tuples == 2 * JOBS
    })
    .await;

    // Each cancel updates its row, leaving one dead version.
    for id in ids {
        store.cancel(id, NOW).await.expect("cancel");
    }
    let cancelled = health_when(&store, "the cancels counted", |health| {
        health.dead_tuples == JOBS
    })
    .await;
    assert_eq!(cancelled.live_tuples, JOBS, "{cancelled:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_schema_drops_the_stores_schema_and_everything_in_it() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let store = schema.connect().await;
    store
        .insert(
            vec![new_job("drop.job", NOW, JobOptions::default(), NOW)],
            NOW,
        )
        .await
        .expect("insert");
    assert!(schema_exists(&schema.name).await);

    let clone = store.clone();
    store.drop_schema().await.expect("drop the schema");
    assert!(!schema_exists(&schema.name).await, "the schema is gone");
    // Dropping a schema that is already gone is done.
    clone.drop_schema().await.expect("drop it again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_schema_refuses_a_store_opened_without_a_schema() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    // A store whose tables are in the connection's default schema, set in the URL rather than
    // by `PgOptions::schema` (which would name it), so `public` stays untouched.
    raw_client(None)
        .await
        .batch_execute(&format!("CREATE SCHEMA \"{}\"", schema.name))
        .await
        .expect("create the schema");
    let url = database_url();
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}options=-c%20search_path%3D{}", schema.name);
    let options = PgOptions {
        schema: None,
        pool_size: 2,
        ..PgOptions::default()
    };
    let store = PgStore::connect_with(&url, options)
        .await
        .expect("connect on the default schema");
    assert_eq!(store.schema(), None);
    let health = store.table_health().await.expect("its own table's health");
    assert_eq!(health.live_tuples, 0, "{health:?}");

    let refused = store.drop_schema().await;
    assert!(
        matches!(&refused, Err(StoreError::Unavailable(message))
            if message.contains("refusing to drop") && message.contains("PgOptions::schema")),
        "{refused:?}"
    );
    assert!(schema_exists(&schema.name).await, "nothing was dropped");
    let jobs = raw_client(Some(&schema.name))
        .await
        .query_one("SELECT count(*) FROM punctual_jobs", &[])
        .await
        .expect("the jobs table is still there");
    assert_eq!(jobs.get::<_, i64>(0), 0);
}
