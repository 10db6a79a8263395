//! Claims and `next_due` with a kinds filter read few index entries however many pending jobs of
//! other kinds wait ahead (schema version 5), counted by PostgreSQL itself: the statistics of
//! the jobs table's indexes, which count every entry an index scan returns.
//!
//! The store gets one connection (`pool_size: 1`), so its calls and the test's own reads of the
//! statistics share a backend, and `pg_stat_force_next_flush()` makes that backend publish its
//! counts before the next read: the numbers are exact, not waited for.

use std::collections::BTreeMap;
use std::time::Duration;

use punctual_core::{ClaimRequest, JobOptions, Kind, NewJob, Priority, Queue, Store, limits};
use punctual_postgres::{PgOptions, PgStore};
use punctual_testkit::fixtures::{NOW, kind, new_job, node, queue};

use crate::{TestSchema, database_url};

const WANTED: &str = "kinds.wanted";
const CROWD: &str = "kinds.crowd";
/// Pending jobs of `CROWD` ahead of the wanted ones.
const CROWD_JOBS: u64 = 20_000;
/// How often each kind of call is made: past the five custom plans PostgreSQL makes of a
/// prepared statement before it may switch to a generic one.
const CALLS: usize = 6;

fn pending(kind_name: &str, priority: u8, early: Duration) -> NewJob {
    let options = JobOptions::default()
        .queue(queue("default"))
        .priority(Priority::new(priority).expect("0..=9"));
    new_job(kind_name, NOW.sub(early), options, NOW)
}

/// What the jobs table's scans have read so far: per index, (scans, entries returned); and the
/// sequential scans of the table, and the rows they read.
#[derive(Debug, Default)]
struct Reads {
    indexes: BTreeMap<String, (i64, i64)>,
    table_scans: i64,
    table_rows: i64,
}

impl Reads {
    /// The reads since `before`.
    fn since(&self, before: &Reads) -> Reads {
        let indexes = self
            .indexes
            .iter()
            .map(|(name, (scans, entries))| {
                let (scans_before, entries_before) =
                    before.indexes.get(name).copied().unwrap_or_default();
                (
                    name.clone(),
                    (scans - scans_before, entries - entries_before),
                )
            })
            .collect();
        Reads {
            indexes,
            table_scans: self.table_scans - before.table_scans,
            table_rows: self.table_rows - before.table_rows,
        }
    }

    fn entries(&self) -> i64 {
        self.indexes.values().map(|(_, entries)| entries).sum()
    }

    fn of(&self, index: &str) -> (i64, i64) {
        self.indexes.get(index).copied().unwrap_or_default()
    }
}

/// The statistics of the store's jobs table, after its one backend published them.
async fn reads(store: &PgStore) -> Reads {
    let client = store.client().await.expect("the store's connection");
    // Published when the backend next goes idle, which is before it reads the next query.
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .expect("flush the statistics");
    let mut reads = Reads::default();
    for row in client
        .query(
            "SELECT indexrelname::text, idx_scan, idx_tup_read FROM pg_stat_user_indexes
             WHERE schemaname = current_schema() AND relname = 'punctual_jobs'",
            &[],
        )
        .await
        .expect("index statistics")
    {
        reads.indexes.insert(row.get(0), (row.get(1), row.get(2)));
    }
    let table = client
        .query_one(
            "SELECT seq_scan, seq_tup_read FROM pg_stat_user_tables
             WHERE schemaname = current_schema() AND relname = 'punctual_jobs'",
            &[],
        )
        .await
        .expect("table statistics");
    reads.table_scans = table.get(0);
    reads.table_rows = table.get(1);
    reads
}

fn request(queues: Option<&[Queue]>, kinds: &[Kind]) -> ClaimRequest {
    ClaimRequest {
        holder: node("node-a"),
        queues: queues.map(<[Queue]>::to_vec),
        kinds: Some(kinds.to_vec()),
        limit: 1,
        due_by: NOW,
        lease: Duration::from_secs(60),
    }
}

/// 20,000 pending jobs of another kind, all due, each earlier than the wanted jobs of its
/// priority level. Kinds-filtered `next_due` and claims, with and without a queue, are called
/// `CALLS` times each, so PostgreSQL's generic plan of each statement is measured as well as
/// its first custom plans: together they read an entry or none per probe, never the crowd.
/// Then, as a control, the index is dropped, and one `next_due` reads the whole crowd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_filtered_reads_do_not_walk_other_kinds_jobs() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let options = PgOptions {
        pool_size: 1,
        ..schema.options()
    };
    let store = PgStore::connect_with(&database_url(), options)
        .await
        .expect("connect to the test schema");
    let crowd: Vec<NewJob> = (0..CROWD_JOBS)
        .map(|n| {
            let early = Duration::from_secs(60) + Duration::from_micros(n);
            pending(CROWD, (n % 10) as u8, early)
        })
        .collect();
    for batch in crowd.chunks(limits::INSERT_BATCH_MAX) {
        store.insert(batch.to_vec(), NOW).await.expect("insert");
    }
    let wanted: Vec<NewJob> = (0..20)
        .map(|n| pending(WANTED, n / 2, Duration::from_secs(1)))
        .collect();
    store.insert(wanted, NOW).await.expect("insert");
    // Statistics as autovacuum would leave them, now rather than whenever it comes by.
    store
        .client()
        .await
        .expect("the store's connection")
        .batch_execute("ANALYZE punctual_jobs")
        .await
        .expect("analyze");

    let kinds = [kind(WANTED)];
    let default = [queue("default")];
    let before = reads(&store).await;
    for _ in 0..CALLS {
        let due = store.next_due(None, Some(&kinds)).await.expect("next_due");
        assert_eq!(due, Some(NOW.sub(Duration::from_secs(1))));
        let due = store
            .next_due(Some(&default), Some(&kinds))
            .await
            .expect("next_due");
        assert_eq!(due, Some(NOW.sub(Duration::from_secs(1))));
    }
    let mut claimed = Vec::new();
    for round in 0..2 * CALLS {
        let queues = (round % 2 == 1).then_some(&default[..]);
        let taken = store
            .claim(request(queues, &kinds), NOW)
            .await
            .expect("claim");
        assert_eq!(taken.len(), 1);
        claimed.extend(taken);
    }
    assert!(claimed.iter().all(|job| job.kind == kind(WANTED)));
    let levels: Vec<u8> = claimed.iter().map(|job| job.priority.get()).collect();
    let expected: Vec<u8> = (0..2 * CALLS).map(|n| (n / 2) as u8).collect();
    assert_eq!(levels, expected);
    let read = reads(&store).await.since(&before);

    // Each of the 4 * CALLS calls probes the ten levels for at most one entry each, and each
    // claim looks its job up by id: a few hundred entries, where one walk meets 20,000. A
    // claimed job leaves a dead entry in the index, which later probes read again until it can
    // be marked dead, and that waits while any other session (the other tests, running at the
    // same time) holds an older snapshot: up to twice as many, still far from a walk.
    let probes = 4 * CALLS as i64 * 10;
    let (scans, _) = read.of("punctual_jobs_pending_by_kind");
    assert!(
        scans >= probes,
        "the kinds' index serves every probe (or no statistics were published): {read:?}"
    );
    assert_eq!(read.table_scans, 0, "{read:?}");
    assert!(
        read.entries() <= 2 * (probes + 2 * CALLS as i64),
        "{} index entries read for {} calls: {read:?}",
        read.entries(),
        4 * CALLS
    );

    // The measure sees a walk: without the index, as before schema version 5, the same
    // `next_due` meets the crowd of every level (the last levels still hold wanted jobs).
    store
        .client()
        .await
        .expect("the store's connection")
        .batch_execute("DROP INDEX punctual_jobs_pending_by_kind")
        .await
        .expect("drop the kinds' index");
    let before = reads(&store).await;
    let due = store.next_due(None, Some(&kinds)).await.expect("next_due");
    assert_eq!(due, Some(NOW.sub(Duration::from_secs(1))));
    let read = reads(&store).await.since(&before);
    assert!(
        read.entries() + read.table_rows >= (CROWD_JOBS as i64) * 8 / 10,
        "without the kinds' index next_due walks past the crowd: {read:?}"
    );
}
