//! Values at the edges of their ranges, where SQLite's integer arithmetic differs from Rust's.

use std::time::Duration;

use punctual_core::{ClaimRequest, FailOutcome, Store, Timestamp};
use punctual_testkit::fixtures::{NOW, node};

use crate::{fresh_store, job};

fn claim_all(due_by: Timestamp) -> ClaimRequest {
    ClaimRequest {
        holder: node("node-a"),
        queues: None,
        kinds: None,
        limit: 10,
        due_by,
        lease: Duration::from_secs(30),
    }
}

/// SQLite turns an overflowing integer sum into a float; the lease expiry must saturate at the
/// end of time as `Timestamp::add` does, and the row must still read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_past_the_end_of_time_saturates() {
    let (_dir, store) = fresh_store();
    let id = store.insert(vec![job(NOW)], NOW).await.expect("insert")[0];
    let claimed = store.claim(claim_all(NOW), NOW).await.expect("claim");
    let end_of_time = Timestamp::from_micros(i64::MAX);
    let retry = FailOutcome::Retry { at: end_of_time };
    store
        .fail(id, claimed[0].lease_token, "boom", retry, NOW)
        .await
        .expect("fail");

    let claimed = store
        .claim(claim_all(end_of_time), NOW)
        .await
        .expect("claim");
    let lease = claimed[0].lease.as_ref().expect("a lease");
    assert_eq!(lease.expires_at, end_of_time);
    let stored = store.get(id).await.expect("get").expect("stored");
    assert_eq!(stored.lease, claimed[0].lease);
}
