//! Handler timeouts: past its timeout a handler is told to stop, and aborted if it does not;
//! either way the attempt fails with a timeout error and the job's retry policy applies.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use punctual::{Config, JobContext, JobOptions, JobState, RetryPolicy, Scheduler, Store};
use punctual_core::{Clock, Timestamp};

use crate::engine::{Harness, START, config};

fn once() -> JobOptions {
    JobOptions::default().attempt_max(1)
}

#[tokio::test(start_paused = true)]
async fn a_hung_handler_is_aborted_after_its_timeout_and_the_attempt_fails() {
    let harness = Harness::new();
    let finished = Arc::new(AtomicU32::new(0));
    let done = finished.clone();
    let scheduler = Scheduler::builder(harness.store.clone() as Arc<dyn Store>)
        .clock(harness.clock.clone())
        .config(config())
        .handler("hang", move |_job: JobContext| {
            let done = done.clone();
            async move {
                // Ignores its cancellation, as a handler stuck in a blocking call would.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                done.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .timeout("hang", Duration::from_secs(2))
        .build()
        .expect("build");
    scheduler.start().expect("start");
    let id = scheduler
        .schedule("hang", &(), START, once())
        .await
        .expect("schedule");
    harness
        .wait_until(Duration::from_secs(10), async || {
            harness.state(id).await == JobState::Dead
        })
        .await;
    let job = harness.store.get(id).await.expect("get").expect("stored");
    assert_eq!(
        job.last_error.as_deref(),
        Some("the handler timed out after 2000 ms")
    );
    // Failed once the grace after the timeout ran out, not before.
    let took = job.finished_at.expect("finished").duration_since(START);
    assert!(
        took >= Duration::from_secs(2) + punctual::TIMEOUT_GRACE && took < Duration::from_secs(4),
        "failed {took:?} after its start"
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the handler was aborted"
    );
    scheduler.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_stops_when_told_fails_at_its_timeout_and_is_retried() {
    let harness = Harness::new();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let clock = harness.clock.clone();
    let scheduler = Scheduler::builder(harness.store.clone() as Arc<dyn Store>)
        .clock(harness.clock.clone())
        .config(Config {
            handler_timeout: Some(Duration::from_millis(500)),
            ..config()
        })
        .handler("slow", move |job: JobContext| {
            let seen = seen.clone();
            let clock = clock.clone();
            async move {
                let started: Timestamp = clock.now();
                tokio::select! {
                    () = job.cancellation.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
                seen.lock()
                    .expect("not poisoned")
                    .push(clock.now().duration_since(started));
                Ok(())
            }
        })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    let retry = RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(1), 0).expect("valid");
    let id = scheduler
        .schedule(
            "slow",
            &(),
            START,
            JobOptions::default().attempt_max(2).retry(retry),
        )
        .await
        .expect("schedule");
    harness
        .wait_until(Duration::from_secs(10), async || {
            harness.state(id).await == JobState::Dead
        })
        .await;
    let ran = attempts.lock().expect("not poisoned").clone();
    assert_eq!(
        ran,
        [Duration::from_millis(500), Duration::from_millis(500)]
    );
    let job = harness.store.get(id).await.expect("get").expect("stored");
    assert_eq!(job.attempt, 2);
    assert_eq!(
        job.last_error.as_deref(),
        Some("the handler timed out after 500 ms")
    );
    scheduler.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_handler_within_its_timeout_succeeds() {
    let harness = Harness::new();
    let scheduler = Scheduler::builder(harness.store.clone() as Arc<dyn Store>)
        .clock(harness.clock.clone())
        .config(Config {
            handler_timeout: Some(Duration::from_millis(100)),
            ..config()
        })
        .handler("quick", |_job: JobContext| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        })
        // The kind's own timeout overrides the node's.
        .timeout("quick", Duration::from_secs(10))
        .build()
        .expect("build");
    scheduler.start().expect("start");
    let id = scheduler
        .schedule("quick", &(), START, once())
        .await
        .expect("schedule");
    harness
        .wait_until(Duration::from_secs(20), async || {
            harness.state(id).await == JobState::Succeeded
        })
        .await;
    scheduler.stop().await;
}
