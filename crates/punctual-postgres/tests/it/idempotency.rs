//! Idempotency keys between nodes: of many requests under one key made at once, from separate
//! stores (as separate processes would be), exactly one inserts its jobs, and every other one
//! replays that one's record; also when the key is held by an expired record that each of them
//! would replace.

use std::sync::Arc;
use std::time::Duration;

use punctual_core::{
    IdempotencyKey, IdempotencyRecord, Idempotent, JobFilter, JobOptions, Store, Timestamp,
};
use punctual_testkit::fixtures::{NOW, job_id, new_job};
use tokio::sync::Barrier;

use crate::TestSchema;

const NODES: usize = 6;
const JOBS_PER_REQUEST: u64 = 50;

fn record(fingerprint: usize, created_at: Timestamp) -> IdempotencyRecord {
    IdempotencyRecord {
        key: IdempotencyKey::new("tok-1:order-7").expect("a valid key"),
        fingerprint: format!("sha256:{fingerprint}"),
        response: format!("{{\"node\":{fingerprint}}}"),
        created_at,
        expires_at: created_at.add(Duration::from_secs(60)),
    }
}

/// Every node sends its own request (its own jobs, its own fingerprint) under the key at once;
/// checks that exactly one inserted and the rest replayed its record, and returns the one.
async fn race(schema: &TestSchema, round: u64, now: Timestamp) -> usize {
    let barrier = Arc::new(Barrier::new(NODES));
    let mut requests = tokio::task::JoinSet::new();
    for node in 0..NODES {
        let store = schema.connect().await;
        let barrier = Arc::clone(&barrier);
        requests.spawn(async move {
            // Ids of their own in each round, so no request fails on another's.
            let first = round * 100_000 + node as u64 * 1_000;
            let jobs = (first..first + JOBS_PER_REQUEST)
                .map(|sequence| {
                    let options = JobOptions::default().id(job_id(NOW, sequence));
                    new_job("idempotent.job", now, options, NOW)
                })
                .collect();
            barrier.wait().await;
            let outcome = store
                .insert_idempotent(jobs, record(node, now), now)
                .await
                .expect("insert_idempotent");
            (node, outcome)
        });
    }
    let mut winners = Vec::new();
    let mut replays = Vec::new();
    while let Some(joined) = requests.join_next().await {
        match joined.expect("a request panicked") {
            (node, Idempotent::Inserted(ids)) => {
                assert_eq!(ids.len() as u64, JOBS_PER_REQUEST);
                winners.push(node);
            }
            (_, Idempotent::Replayed(held)) => replays.push(held),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one request inserts: {winners:?}");
    let winner = winners[0];
    assert_eq!(replays.len(), NODES - 1);
    for held in replays {
        assert_eq!(
            held,
            record(winner, now),
            "every other request replays the winner"
        );
    }
    winner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_under_one_key_at_once_insert_once() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let observer = schema.connect().await;
    race(&schema, 0, NOW).await;
    let stored = observer
        .list(JobFilter::default(), None, 1_000)
        .await
        .expect("list");
    assert_eq!(stored.jobs.len() as u64, JOBS_PER_REQUEST);

    // After the record expires, the key is free once more, and again exactly one of many
    // requests takes it (each would replace the expired record; the row lock orders them).
    let later = NOW.add(Duration::from_secs(61));
    race(&schema, 1, later).await;
    let stored = observer
        .list(JobFilter::default(), None, 1_000)
        .await
        .expect("list");
    assert_eq!(stored.jobs.len() as u64, 2 * JOBS_PER_REQUEST);
}
