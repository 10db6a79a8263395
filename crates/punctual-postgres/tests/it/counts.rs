//! The kept job counts (schema step 4) where only PostgreSQL can show them: writers on several
//! nodes at once, a transaction of the caller's own, a transaction in flight that must not hold
//! up another's counts, the purge's folding of rows that add nothing, and the step started on
//! a schema that already holds jobs.

use std::collections::BTreeMap;
use std::time::Duration;

use punctual_core::{
    ClaimRequest, FailOutcome, Job, JobOptions, JobState, LeaderTerm, NewJob, StateCount, Store,
    Timestamp,
};
use punctual_postgres::PgStore;
use punctual_testkit::fixtures::{NOW, new_job, node, queue};

use crate::{TestSchema, raw_client};

const LEASE: Duration = Duration::from_secs(30);

fn job_in(name: &str) -> NewJob {
    new_job(
        "count.job",
        NOW,
        JobOptions::default().queue(queue(name)),
        NOW,
    )
}

fn claim_request(holder: &str, limit: usize) -> ClaimRequest {
    ClaimRequest {
        holder: node(holder),
        queues: None,
        kinds: None,
        limit,
        due_by: NOW,
        lease: LEASE,
    }
}

fn token_of(job: &Job) -> punctual_core::LeaseToken {
    job.lease
        .as_ref()
        .expect("a claimed job holds a lease")
        .token
}

/// The counts a scan of the jobs table gives, in `counts`' order.
async fn counted_by_scan(schema: &str) -> Vec<StateCount> {
    let rows = raw_client(Some(schema))
        .await
        .query(
            "SELECT queue, state, count(*) FROM punctual_jobs GROUP BY queue, state",
            &[],
        )
        .await
        .expect("scan the jobs");
    let mut counts: BTreeMap<(String, i16), i64> = BTreeMap::new();
    for row in rows {
        counts.insert((row.get(0), row.get(1)), row.get(2));
    }
    let mut counts: Vec<StateCount> = counts
        .into_iter()
        .map(|((name, state), count)| StateCount {
            queue: queue(&name),
            state: JobState::ALL[usize::try_from(state).expect("a state code")],
            count: u64::try_from(count).expect("a count"),
        })
        .collect();
    counts.sort_unstable_by(|a, b| (&a.queue, a.state).cmp(&(&b.queue, b.state)));
    counts
}

/// The raw rows of the counts table: (queue, state, slot, count).
async fn count_rows(schema: &str) -> Vec<(String, i16, i16, i64)> {
    raw_client(Some(schema))
        .await
        .query(
            "SELECT queue, state, slot, count FROM punctual_job_counts ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .expect("read the counts table")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect()
}

/// Leads, purges everything finished, resigns.
async fn purge_all(store: &PgStore, now: Timestamp) -> u64 {
    let leader = node("leader");
    let term: LeaderTerm = store
        .lead(&leader, None, LEASE, now)
        .await
        .expect("lead")
        .expect("nobody else leads");
    let purged = store
        .purge_finished(term, now, 100_000, now)
        .await
        .expect("purge");
    store.resign(&leader, term).await.expect("resign");
    purged
}

/// Four nodes insert, claim, complete, fail and cancel at once; the kept counts equal a scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_stay_exact_with_writers_on_several_nodes() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let mut nodes = tokio::task::JoinSet::new();
    for index in 0..4 {
        let store = schema.connect().await;
        nodes.spawn(async move {
            let holder = format!("node-{index}");
            for round in 0..10 {
                let jobs = (0..20)
                    .map(|n| {
                        job_in(if (n + round) % 3 == 0 {
                            "alpha"
                        } else {
                            "beta"
                        })
                    })
                    .collect();
                store.insert(jobs, NOW).await.expect("insert");
                let claimed = store
                    .claim(claim_request(&holder, 15), NOW)
                    .await
                    .expect("claim");
                for (n, job) in claimed.iter().enumerate() {
                    let token = token_of(job);
                    match n % 4 {
                        0 | 1 => store.complete(job.id, token, NOW).await.expect("complete"),
                        2 => {
                            store
                                .fail(job.id, token, "boom", FailOutcome::Dead, NOW)
                                .await
                                .expect("fail");
                        }
                        _ => {
                            store.cancel(job.id, NOW).await.expect("cancel");
                        }
                    }
                }
            }
        });
    }
    while let Some(joined) = nodes.join_next().await {
        joined.expect("a node panicked");
    }
    let store = schema.connect().await;
    let expected = counted_by_scan(&schema.name).await;
    assert_eq!(expected.iter().map(|count| count.count).sum::<u64>(), 800);
    assert_eq!(store.counts().await.expect("counts"), expected);

    // And after a purge, which also folds the rows that add nothing.
    assert!(purge_all(&store, NOW.add(Duration::from_secs(1))).await > 0);
    assert_eq!(
        store.counts().await.expect("counts"),
        counted_by_scan(&schema.name).await
    );
}

/// Jobs written in a caller's transaction are counted if and only if it commits, also from a
/// connection whose `search_path` does not name the store's schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_transaction_is_counted_with_its_commit() {
    let Some((store, schema)) = crate::fresh_store().await else {
        return;
    };
    let mut client = raw_client(None).await;
    let transaction = client.transaction().await.expect("begin");
    store
        .insert_in(&transaction, vec![job_in("alpha"), job_in("alpha")], NOW)
        .await
        .expect("insert_in");
    transaction.rollback().await.expect("rollback");
    assert_eq!(store.counts().await.expect("counts"), Vec::new());
    assert_eq!(count_rows(&schema.name).await, Vec::new());

    let transaction = client.transaction().await.expect("begin");
    store
        .insert_in(&transaction, vec![job_in("alpha"), job_in("beta")], NOW)
        .await
        .expect("insert_in");
    transaction.commit().await.expect("commit");
    let claimed = store
        .claim(claim_request("node-a", 1), NOW)
        .await
        .expect("claim");
    let transaction = client.transaction().await.expect("begin");
    store
        .complete_in(&transaction, claimed[0].id, token_of(&claimed[0]), NOW)
        .await
        .expect("complete_in");
    transaction.commit().await.expect("commit");
    let counts = store.counts().await.expect("counts");
    assert_eq!(counts, counted_by_scan(&schema.name).await);
    assert_eq!(
        counts.iter().map(|count| count.count).sum::<u64>(),
        2,
        "{counts:?}"
    );
    assert!(
        counts
            .iter()
            .any(|count| count.state == JobState::Succeeded && count.count == 1)
    );
}

/// A transaction that counted a job and stays open holds one slot's rows; another node's
/// writes to the same counts take another slot and commit meanwhile, rather than wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_in_flight_does_not_hold_up_anothers_counts() {
    let Some((store, schema)) = crate::fresh_store().await else {
        return;
    };
    let mut client = store.client().await.expect("a pooled connection");
    let open = client.transaction().await.expect("begin");
    store
        .insert_in(&open, vec![job_in("alpha")], NOW)
        .await
        .expect("insert_in");
    // Well within the store's lock_timeout (5 s), which a wait on the open transaction's
    // count row would run into.
    let other = schema.connect().await;
    tokio::time::timeout(Duration::from_secs(2), async {
        other
            .insert(vec![job_in("alpha")], NOW)
            .await
            .expect("insert");
        let claimed = other
            .claim(claim_request("node-b", 1), NOW)
            .await
            .expect("claim");
        other
            .complete(claimed[0].id, token_of(&claimed[0]), NOW)
            .await
            .expect("complete");
    })
    .await
    .expect("the other node's writes commit while the transaction is open");
    open.commit().await.expect("commit");

    let rows = count_rows(&schema.name).await;
    let slots: std::collections::BTreeSet<i16> = rows.iter().map(|row| row.2).collect();
    assert!(slots.len() >= 2, "two transactions, two slots: {rows:?}");
    assert_eq!(
        store.counts().await.expect("counts"),
        counted_by_scan(&schema.name).await
    );

    // Once everything is finished and purged, the rows that add nothing are folded away.
    let all = store
        .list(punctual_core::JobFilter::default(), None, 10)
        .await
        .expect("list");
    for job in all.jobs {
        if !job.state.is_final() {
            store.cancel(job.id, NOW).await.expect("cancel");
        }
    }
    purge_all(&store, NOW.add(Duration::from_secs(1))).await;
    assert_eq!(store.counts().await.expect("counts"), Vec::new());
    assert_eq!(count_rows(&schema.name).await, Vec::new());
}

/// Schema step 4 starts the counts from the jobs a schema already holds: the step taken back
/// out of a populated schema (its objects dropped, its record deleted, and step 5, which
/// follows it, with it), then a reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counts_step_counts_the_jobs_already_stored() {
    let Some((store, schema)) = crate::fresh_store().await else {
        return;
    };
    let jobs = (0..7)
        .map(|n| job_in(if n < 4 { "alpha" } else { "beta" }))
        .collect();
    store.insert(jobs, NOW).await.expect("insert");
    let claimed = store
        .claim(claim_request("node-a", 3), NOW)
        .await
        .expect("claim");
    store
        .fail(
            claimed[0].id,
            token_of(&claimed[0]),
            "boom",
            FailOutcome::Dead,
            NOW,
        )
        .await
        .expect("fail");
    let before = store.counts().await.expect("counts");
    assert_eq!(before, counted_by_scan(&schema.name).await);
    drop(store);

    raw_client(Some(&schema.name))
        .await
        .batch_execute(
            "DROP TRIGGER punctual_jobs_notify_cancelled ON punctual_jobs;
             DROP FUNCTION punctual_jobs_notify_cancelled();
             DROP TABLE punctual_schedules, punctual_schedule_occurrences;
             DROP TABLE punctual_job_counts;
             DROP TRIGGER punctual_jobs_count_inserted ON punctual_jobs;
             DROP TRIGGER punctual_jobs_count_updated ON punctual_jobs;
             DROP TRIGGER punctual_jobs_count_deleted ON punctual_jobs;
             DROP TRIGGER punctual_jobs_count_truncated ON punctual_jobs;
             DROP FUNCTION punctual_jobs_count_inserted(), punctual_jobs_count_updated(),
                 punctual_jobs_count_deleted(), punctual_jobs_count_truncated(),
                 punctual_job_counts_slot();
             DROP INDEX punctual_jobs_pending_by_kind;
             DELETE FROM punctual_migrations WHERE version >= 4;",
        )
        .await
        .expect("take steps 4 and later back out");
    let store = schema.connect().await;
    assert_eq!(store.counts().await.expect("counts"), before);
}
