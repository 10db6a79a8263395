//! Prompt wake-ups (issue 3, item 4): an insert is announced to listening nodes with its
//! earliest `run_at`, and only to nodes of the same schema.

use std::time::Duration;

use punctual_core::{JobOptions, Store, Timestamp};
use punctual_postgres::Wakeups;
use punctual_testkit::fixtures::{NOW, new_job};

/// Waits for the next hint, failing the test after a generous deadline.
async fn next_hint(wakeups: &mut Wakeups) -> Timestamp {
    tokio::time::timeout(Duration::from_secs(10), wakeups.recv())
        .await
        .expect("a wake-up within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_wakes_listeners_with_its_earliest_run_at() {
    let Some((store, _schema)) = crate::fresh_store().await else {
        return;
    };
    let Some((other, _other_schema)) = crate::fresh_store().await else {
        return;
    };
    let mut wakeups = store.listen().await.expect("listen");

    // A batch is announced once, with its earliest run_at.
    let seconds = |count| Duration::from_secs(count);
    let batch = [30, 10, 20].map(|offset| {
        new_job(
            "wake.job",
            NOW.add(seconds(offset)),
            JobOptions::default(),
            NOW,
        )
    });
    store.insert(batch.to_vec(), NOW).await.expect("insert");
    assert_eq!(next_hint(&mut wakeups).await, NOW.add(seconds(10)));

    // Another schema's insert, even an earlier one, is not ours.
    let theirs = new_job("wake.job", NOW.sub(seconds(60)), JobOptions::default(), NOW);
    other.insert(vec![theirs], NOW).await.expect("insert");
    let ours = new_job("wake.job", NOW.add(seconds(5)), JobOptions::default(), NOW);
    store.insert(vec![ours], NOW).await.expect("insert");
    assert_eq!(next_hint(&mut wakeups).await, NOW.add(seconds(5)));

    // A refused insert (a duplicate id) stores nothing and announces nothing.
    let duplicate = new_job(
        "wake.job",
        NOW.sub(seconds(1)),
        JobOptions::default().id(batch[0].id),
        NOW,
    );
    assert!(store.insert(vec![duplicate], NOW).await.is_err());
    let last = new_job("wake.job", NOW.add(seconds(7)), JobOptions::default(), NOW);
    store.insert(vec![last], NOW).await.expect("insert");
    assert_eq!(next_hint(&mut wakeups).await, NOW.add(seconds(7)));
    assert_eq!(wakeups.try_recv(), None);
}

/// The engine sees the same hints through `Store::listen`, on an `Arc<dyn Store>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_trait_hands_the_engine_the_same_hints() {
    let Some((store, _schema)) = crate::fresh_store().await else {
        return;
    };
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(store);
    let mut hints = store
        .listen()
        .await
        .expect("listen")
        .expect("a PostgreSQL store announces inserts");
    let run_at = NOW.add(Duration::from_secs(42));
    let job = new_job("wake.job", run_at, JobOptions::default(), NOW);
    store.insert(vec![job], NOW).await.expect("insert");
    let hint = tokio::time::timeout(Duration::from_secs(10), hints.next())
        .await
        .expect("a hint within 10 s");
    assert_eq!(hint, run_at);
}

/// When the server drops the LISTEN connection (a restart, an operator's
/// `pg_terminate_backend`), the listener reconnects by itself, says so with a "look now" hint,
/// and announces inserts again; the pool replaces its dropped connections too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_and_the_pool_reconnect_after_the_server_drops_them() {
    let Some(schema) = crate::TestSchema::new().await else {
        return;
    };
    // An application name of its own, so this test terminates only its own connections.
    let base = crate::database_url();
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}application_name={}", schema.name);
    let store = punctual_postgres::PgStore::connect_with(&url, schema.options())
        .await
        .expect("connect");
    let mut wakeups = store.listen().await.expect("listen");
    let admin = crate::raw_client(None).await;
    let terminated: i64 = admin
        .query_one(
            "SELECT count(*) FROM (
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = $1) AS terminated",
            &[&schema.name],
        )
        .await
        .expect("terminate")
        .get(0);
    assert!(terminated >= 2, "the pool's and the listener's connections");

    assert_eq!(next_hint(&mut wakeups).await, Timestamp::UNIX_EPOCH);
    // The pool may hand out one connection that has not noticed yet; it fails as Unavailable
    // and is then dropped.
    let mut attempts = 0;
    let run_at = NOW.add(Duration::from_secs(3));
    let job = new_job("wake.job", run_at, JobOptions::default(), NOW);
    loop {
        attempts += 1;
        match store.insert(vec![job.clone()], NOW).await {
            Ok(_) => break,
            Err(punctual_core::StoreError::Unavailable(_)) if attempts < 5 => {}
            Err(error) => panic!("insert after the server dropped the connections: {error}"),
        }
    }
    assert_eq!(next_hint(&mut wakeups).await, run_at);
}
