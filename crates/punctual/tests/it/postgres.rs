//! The engine on a real PostgreSQL store: a handler that completes its own job inside its own
//! transaction (`PgStore::complete_in`), after which the engine's `complete` with the same lease
//! token is a no-op, and the job succeeds once.
//!
//! Real time, not paused (the database's driver has timeouts of its own). The server is
//! `PUNCTUAL_TEST_DATABASE_URL`, or `postgres://postgres@127.0.0.1:5432/test`; unreachable, the
//! test prints `SKIPPED` and passes, unless `CI=true`. Its schema is named like punctual-postgres'
//! test schemas (`t_<unix seconds>_...`), whose test run drops those over an hour old: the
//! engine crate holds no SQL, not even a `DROP SCHEMA`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use punctual::{Config, Event, JobContext, JobOptions, JobState, NodeId, Scheduler, Store};
use punctual_postgres::{PgOptions, PgStore};

async fn connect(name: &str) -> Option<PgStore> {
    let url = std::env::var("PUNCTUAL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    let options = PgOptions {
        schema: Some(format!("t_{seconds}_{}_engine_{name}", std::process::id())),
        pool_size: 4,
        connect_timeout: Duration::from_secs(5),
        ..PgOptions::default()
    };
    match PgStore::connect_with(&url, options).await {
        Ok(store) => Some(store),
        Err(error) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED: PostgreSQL not reachable at {url} ({error})");
            None
        }
        Err(error) => panic!("PostgreSQL is not reachable at {url} ({error}), and CI=true"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_completes_in_its_own_transaction_succeeds_once() {
    let Some(store) = connect("tx").await else {
        return;
    };
    let store = Arc::new(store);
    let events = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&events);
    let in_handler = Arc::clone(&store);
    let clock = store.database_clock().await.expect("measure the clock");
    let handler_clock = Arc::clone(&clock);
    let scheduler = Scheduler::builder(store.clone() as Arc<dyn Store>)
        .clock(clock)
        .config(Config {
            node: NodeId::new("engine-pg").expect("valid"),
            ..Config::default()
        })
        .observer(move |event| recorded.lock().expect("not poisoned").push(event.clone()))
        .handler("transfer", move |job: JobContext| {
            let store = Arc::clone(&in_handler);
            let clock = Arc::clone(&handler_clock);
            async move {
                // The handler's own writes would go here, in the same transaction.
                let mut client = store.client().await?;
                let transaction = client.transaction().await?;
                let now = punctual::Clock::now(&*clock);
                store
                    .complete_in(&transaction, job.id, job.lease_token, now)
                    .await?;
                transaction.commit().await?;
                Ok(())
            }
        })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    let id = scheduler
        .schedule_in("transfer", &(), Duration::ZERO, JobOptions::default())
        .await
        .expect("schedule");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let succeeded = || {
        events
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|event| matches!(event, Event::Succeeded { id: done, .. } if *done == id))
            .count()
    };
    while succeeded() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no success in 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    scheduler.stop().await;

    let job = store.get(id).await.expect("get").expect("exists");
    assert_eq!((job.state, job.attempt), (JobState::Succeeded, 1));
    assert_eq!(succeeded(), 1);
    let events = events.lock().expect("not poisoned");
    assert!(
        !events.iter().any(|event| matches!(
            event,
            Event::LeaseLost { .. } | Event::Failed { .. } | Event::StoreError { .. }
        )),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_on_another_node_reaches_the_running_handler_within_a_second() {
    let Some(store) = connect("cancel").await else {
        return;
    };
    let store = Arc::new(store);
    let clock = store.database_clock().await.expect("measure the clock");
    let heard: Arc<Mutex<Option<std::time::Instant>>> = Arc::new(Mutex::new(None));
    let started = Arc::new(tokio::sync::Notify::new());
    let (heard_in, started_in) = (Arc::clone(&heard), Arc::clone(&started));
    // The node that runs the job, with the default 10 s heartbeat.
    let runner = Scheduler::builder(store.clone() as Arc<dyn Store>)
        .clock(clock.clone())
        .config(Config {
            node: NodeId::new("engine-pg-runner").expect("valid"),
            ..Config::default()
        })
        .handler("waits", move |job: JobContext| {
            let (heard, started) = (Arc::clone(&heard_in), Arc::clone(&started_in));
            async move {
                started.notify_one();
                job.cancellation.cancelled().await;
                *heard.lock().expect("not poisoned") = Some(std::time::Instant::now());
                Ok(())
            }
        })
        .build()
        .expect("build");
    runner.start().expect("start");
    // Another node, with no handler for the kind: it only cancels.
    let other = Scheduler::builder(store.clone() as Arc<dyn Store>)
        .clock(clock)
        .config(Config {
            node: NodeId::new("engine-pg-other").expect("valid"),
            ..Config::default()
        })
        .accept_unknown_kinds(true)
        .build()
        .expect("build");
    let id = other
        .schedule_in("waits", &(), Duration::ZERO, JobOptions::default())
        .await
        .expect("schedule");
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("the handler started");
    let cancelled = std::time::Instant::now();
    other.cancel(id).await.expect("cancel");
    let deadline = cancelled + Duration::from_secs(5);
    let reached = loop {
        if let Some(at) = *heard.lock().expect("not poisoned") {
            break at;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the handler never heard"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = reached.duration_since(cancelled);
    assert!(
        took < Duration::from_secs(1),
        "the handler heard {took:?} later"
    );
    runner.stop().await;
}
