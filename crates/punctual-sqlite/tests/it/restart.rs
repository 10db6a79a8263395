//! Data survives closing the store and opening the file again, every field intact.

use std::time::Duration;

use punctual_core::{
    ClaimRequest, JobOptions, JobState, NewJob, Payload, Priority, RetryPolicy, Schedule, Store,
};
use punctual_testkit::fixtures::{NOW, kind, node, queue};

use crate::{fresh_store, job, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_their_states_survive_closing_and_reopening() {
    let (dir, store) = fresh_store();
    let path = store.path().to_path_buf();
    assert!(path.starts_with(dir.path()));

    let retry = RetryPolicy::new(Duration::from_millis(1_500), Duration::from_secs(90), 7)
        .expect("valid policy");
    let detailed = NewJob::new(
        kind("billing.invoice:send/v2"),
        Payload::from_json_text(r#"{"customer":42,"lines":["a","é"]}"#).expect("json"),
        NOW.add(Duration::from_secs(60)),
        JobOptions::default()
            .queue(queue("billing"))
            .priority(Priority::new(3).expect("priority"))
            .attempt_max(5)
            .retry(retry),
        NOW,
    )
    .expect("valid job");
    let nightly = NewJob::recurring(
        kind("report"),
        Payload::null(),
        Schedule::cron("0 0 * * *", "Europe/Berlin").expect("cron"),
        JobOptions::default(),
        NOW,
    )
    .expect("valid recurring job");
    let every_minute = NewJob::recurring(
        kind("tick"),
        Payload::null(),
        Schedule::interval(Duration::from_secs(60)).expect("interval"),
        JobOptions::default(),
        NOW,
    )
    .expect("valid recurring job");
    let done = job(NOW);
    let ids = store
        .insert(vec![detailed, nightly, every_minute, done], NOW)
        .await
        .expect("insert");

    // Leave one job succeeded, so a finished state survives too.
    let claimed = store
        .claim(
            ClaimRequest {
                holder: node("node-a"),
                queues: None,
                kinds: None,
                limit: 1,
                due_by: NOW,
                lease: Duration::from_secs(30),
            },
            NOW,
        )
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, ids[3]);
    let token = claimed[0].lease_token;
    store.complete(ids[3], token, NOW).await.expect("complete");

    let mut before = Vec::new();
    for id in &ids {
        before.push(store.get(*id).await.expect("get").expect("stored"));
    }
    let counts_before = store.counts().await.expect("counts");
    drop(store);

    let store = open(&path);
    for (id, expected) in ids.iter().zip(&before) {
        let after = store.get(*id).await.expect("get").expect("still stored");
        assert_eq!(&after, expected);
    }
    assert_eq!(store.counts().await.expect("counts"), counts_before);
    assert_eq!(before[3].state, JobState::Succeeded);
    store.integrity_check().expect("a sound file");
}
