//! The crash test, end to end: one `punctual serve` on a SQLite file, killed with
//! SIGKILL at random moments while webhook jobs fall due and while a client creates more
//! through its API, and started again each time, under the same node name, as a service
//! manager would. Every job the API acknowledged (201) must eventually be received by the
//! test's webhook receiver and end succeeded, and a job may be received again only after a
//! kill: under a larger lease token, once the killed holder's lease had ended.
//!
//! The client sends each batch of jobs under an idempotency key and sends it again, to the next
//! node, until a node answers 201; so every job ends acknowledged, and a batch that a killed
//! node stored before it could answer is not stored twice (the store ends with exactly the
//! acknowledged jobs).
//!
//! The receiver is the observer of runs; `cluster`'s module documentation says why its
//! assertions hold although a node killed while sending may have made a run the receiver never
//! saw. This test takes the binary's exclusive turn: its leases and kill moments would be
//! skewed by the cluster tests' node processes, and would skew the demo's timing.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use punctual_bench::receiver::Receiver;
use punctual_core::{Clock, JobId, Store, SystemClock};
use punctual_sqlite::SqliteStore;
use rand::Rng as _;
use serde_json::Value;
use tokio::sync::watch;

use crate::nodes::{
    Api, Node, NodeSpec, PATIENCE, POLL, admin_token, after_lease, all_succeed,
    assert_completed_by_last_run, assert_fenced, eventually, receipts, spread_jobs,
};
use crate::turns::EXCLUSIVE;

/// The node's lease: long enough that the last node, which nobody kills, is not rescued from
/// a stall on a loaded machine (its rerun would be unexplained).
const LEASE: Duration = Duration::from_secs(3);
/// How many times the node is killed (and started again).
const KILLS: u32 = 4;
/// The jobs, created in batches of `BATCH`, one batch every `PACE`.
const JOBS: usize = 120;
const BATCH: usize = 10;
/// Not a wait for an effect: the pace at which the client creates jobs, so that creations meet
/// the kills.
const PACE: Duration = Duration::from_millis(250);

/// Creates `jobs` in batches on whichever node `address` names at the moment, each batch under
/// its own idempotency key and sent again (to the next node, when this one was killed) until a
/// node answers 201. Returns the acknowledged ids.
async fn create_through_kills(
    api: Arc<Api>,
    jobs: Vec<Value>,
    mut address: watch::Receiver<Option<SocketAddr>>,
) -> Vec<JobId> {
    let mut ids = Vec::with_capacity(jobs.len());
    for (number, batch) in jobs.chunks(BATCH).enumerate() {
        let key = format!("batch {number}");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let current = *address.borrow_and_update();
            if let Some(current) = current
                && let Ok(created) = api.create(current, batch, Some(&key)).await
            {
                ids.extend(created);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "batch {number} was never acknowledged"
            );
            // Refused or cut short: the node is being killed, or a new one is starting. Look
            // again when the next one serves, or soon.
            let _ = tokio::time::timeout(POLL * 5, address.changed()).await;
        }
        tokio::time::sleep(PACE).await;
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serve_process_killed_and_restarted_loses_no_acknowledged_job() {
    let _turn = EXCLUSIVE.lock().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("punctual.db");
    let store_url = crate::sqlite(&path);
    let api = Arc::new(Api::new(admin_token(&store_url, None)));
    // The test's own view of the file, read while the nodes write it (WAL allows both).
    let store = SqliteStore::open(&path).expect("open the test's SQLite file");
    let receiver = Receiver::start(Arc::new(SystemClock), 100_000)
        .await
        .expect("start the webhook receiver");
    // Webhooks take 200 ms to answer, so a node killed while the jobs fall due is likely to
    // hold some in flight.
    receiver.set_delay(Duration::from_millis(200));
    let spec = NodeSpec::new("crash", &store_url, None, LEASE);
    let jobs = spread_jobs(
        &receiver,
        0,
        JOBS,
        SystemClock.now().add(Duration::from_secs(1)),
        Duration::from_millis(2_500),
    );
    let (address, addresses) = watch::channel(None);
    let creator = tokio::spawn(create_through_kills(api.clone(), jobs, addresses));

    let mut killed: HashSet<u32> = HashSet::new();
    // The jobs whose webhooks were in flight when their node was killed: it never got their
    // answers, so it completed none of them; a later node must have.
    let mut unfinished: Vec<(JobId, u32)> = Vec::new();
    for number in 0..KILLS {
        let mut node = Node::start(dir.path(), &receiver, number, &spec);
        address.send_replace(Some(node.address().await));
        // A random moment in its life, and then, for up to a second more, one when it has a
        // webhook in flight, which must then be run again after its lease.
        let delay = rand::rng().random_range(200..800);
        let moment = Instant::now() + Duration::from_millis(delay);
        eventually("a moment to kill the node", PATIENCE, async || {
            node.assert_alive();
            let now = Instant::now();
            let in_flight = receiver.in_flight(number) > 0;
            (now >= moment && (in_flight || now >= moment + Duration::from_secs(1))).then_some(())
        })
        .await;
        let in_flight = receiver.hold(number);
        unfinished.extend(in_flight.into_iter().map(|id| (id, number)));
        node.kill();
        killed.insert(number);
    }
    let mut last = Node::start(dir.path(), &receiver, KILLS, &spec);
    address.send_replace(Some(last.address().await));
    let ids = creator.await.expect("the client's task");
    assert_eq!(ids.len(), JOBS, "every job is acknowledged once");
    all_succeed(&store, &ids, &mut [&mut last]).await;
    last.kill();

    let receipts = receipts(&receiver);
    // The receiver and the nodes read one clock, the system's.
    let reruns = assert_fenced(&receipts, &ids, |earlier, later| {
        earlier
            .sender
            .is_some_and(|sender| killed.contains(&sender))
            && after_lease(earlier, later, LEASE, 0)
    });
    assert!(
        !unfinished.is_empty() && reruns >= 1,
        "no node was killed with a webhook in flight: the test did not exercise a rerun"
    );
    assert_completed_by_last_run(&store, &receipts, &ids).await;
    for (id, number) in &unfinished {
        let job = store.get(*id).await.expect("read").expect("a job");
        let completed_by = receipts
            .iter()
            .find(|receipt| receipt.id == *id && receipt.token == job.lease_token.0)
            .and_then(|receipt| receipt.sender);
        assert!(
            completed_by.is_some_and(|sender| sender > *number),
            "job {id}, in flight when node {number} was killed, was not finished by a later node"
        );
    }
    let unique: HashSet<JobId> = ids.iter().copied().collect();
    assert_eq!(unique.len(), JOBS, "an acknowledged id twice");
    let stored: u64 = store
        .counts()
        .await
        .expect("counts")
        .iter()
        .map(|count| count.count)
        .sum();
    assert_eq!(
        stored, JOBS as u64,
        "a creation sent again stored its jobs twice"
    );
    let integrity = tokio::task::spawn_blocking(move || store.integrity_check())
        .await
        .expect("the integrity check's thread");
    integrity.expect("the file passes SQLite's integrity check after the kills");
}
