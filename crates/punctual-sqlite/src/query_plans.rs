//! Checks that the statements which must stay cheap with a million jobs stored are index range
//! scans and seeks, never a scan of the table nor a sort: the claim reads only the rows it takes,
//! however many future jobs wait.
//!
//! SQLite's plans here depend only on the schema (the store never runs `ANALYZE`), so an empty
//! in-memory database shows the plan a full file gets.
//!
//! A plan shows which index a statement seeks, not how far it walks the range it found: a
//! filter on a column the index does not have passes over rows. So for the kinds filters, whose
//! point is that other kinds' jobs cost nothing, the work of `next_due` and `claim` themselves
//! is counted too (in SQLite's virtual machine instructions, which do not depend on the file's
//! size, only on the rows visited), with and without a crowd of other kinds' jobs ahead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use punctual_core::{ClaimRequest, JobOptions, Kind, NewJob, Priority, Queue};
use punctual_testkit::fixtures::{NOW, kind, new_job, node, queue};
use rusqlite::Connection;

use crate::counts::Tally;
use crate::rows::Names;
use crate::{migrations, reads, transitions};

fn plan(connection: &Connection, sql: &str) -> Vec<String> {
    let mut statement = connection
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("explain");
    // Unbound parameters are NULL, which is all a plan needs (`query` would refuse them).
    let mut rows = statement.raw_query();
    let mut steps = Vec::new();
    while let Some(row) = rows.next().expect("plan row") {
        steps.push(row.get(3).expect("plan detail"));
    }
    steps
}

/// An empty in-memory database with the schema, as the store's connections are set up.
fn migrated() -> Connection {
    let mut connection = Connection::open_in_memory().expect("in-memory database");
    rusqlite::vtab::array::load_module(&connection).expect("rarray");
    migrations::apply(&mut connection).expect("migrate");
    connection
}

#[test]
fn hot_statements_use_their_indexes() {
    let connection = migrated();

    let expectations = [
        (
            transitions::CLAIM_CANDIDATES,
            "SEARCH job USING INDEX job_pending_by_priority (priority=? AND run_at_us<?)",
        ),
        (
            transitions::CLAIM_CANDIDATES_IN_QUEUE,
            "SEARCH job USING INDEX job_pending_by_queue (queue=? AND priority=? AND run_at_us<?)",
        ),
        (
            transitions::CLAIM_CANDIDATES_OF_KIND,
            "SEARCH job USING INDEX job_pending_by_kind (kind=? AND priority=? AND run_at_us<?)",
        ),
        (
            transitions::CLAIM_CANDIDATES_OF_KIND_IN_QUEUES,
            "SEARCH job USING INDEX job_pending_by_kind (kind=? AND priority=? AND run_at_us<?)",
        ),
        (
            transitions::CLAIM_CANDIDATES_IN_QUEUE_OF_KINDS,
            "SEARCH job USING INDEX job_pending_by_queue (queue=? AND priority=? AND run_at_us<?)",
        ),
        (transitions::CLAIM, "SEARCH job USING PRIMARY KEY (id=?)"),
        (transitions::COMPLETE, "SEARCH job USING PRIMARY KEY (id=?)"),
        (
            transitions::EXPIRED_LEASES,
            "SEARCH job USING INDEX job_running_by_lease_expiry (lease_expires_at_us<?)",
        ),
        (
            transitions::PURGE_FINISHED,
            "SEARCH job USING INDEX job_finished_by_time (finished_at_us<?)",
        ),
        (
            reads::NEXT_DUE,
            "SEARCH job USING INDEX job_pending_by_priority (priority=?)",
        ),
        (
            reads::NEXT_DUE_IN_QUEUE,
            "SEARCH job USING INDEX job_pending_by_queue (queue=? AND priority=?)",
        ),
        (
            reads::NEXT_DUE_OF_KINDS,
            "SEARCH job USING INDEX job_pending_by_kind (kind=? AND priority=?)",
        ),
        (
            reads::NEXT_DUE_OF_KINDS_IN_QUEUES,
            "SEARCH job USING INDEX job_pending_by_kind (kind=? AND priority=?)",
        ),
        (
            reads::NEXT_DUE_IN_QUEUE_OF_KINDS,
            "SEARCH job USING INDEX job_pending_by_queue (queue=? AND priority=?)",
        ),
        (
            reads::NEXT_LEASE_EXPIRY,
            "SCAN job USING COVERING INDEX job_running_by_lease_expiry",
        ),
        (reads::COUNTS, "SCAN job_count"),
        (
            reads::DUE_IN_QUEUE,
            "SEARCH job USING INDEX job_pending_by_queue (queue=? AND priority=? AND run_at_us<?)",
        ),
        (
            transitions::PURGE_IDEMPOTENCY,
            "SEARCH idempotency_key USING COVERING INDEX idempotency_key_by_expiry (expires_at_us<?)",
        ),
    ];
    for (sql, expected) in expectations {
        let steps = plan(&connection, sql);
        assert!(
            steps.iter().any(|step| step == expected),
            "expected {expected:?} in the plan of {sql}\nplan: {steps:#?}"
        );
        for step in &steps {
            for table in ["job", "idempotency_key"] {
                assert!(
                    *step != format!("SCAN {table}"),
                    "a full scan in {sql}: {steps:#?}"
                );
            }
            assert!(!step.contains("TEMP B-TREE"), "a sort in {sql}: {steps:#?}");
        }
    }
}

/// The kind the kinds-filtered reads ask for, and the kind of the crowd ahead of it.
const WANTED: &str = "plans.wanted";
const CROWD: &str = "plans.crowd";
/// How many pending jobs of `CROWD` wait ahead: far more than any walk the reads may make,
/// and quick to insert.
const CROWD_JOBS: u64 = 20_000;

fn pending(kind_name: &str, queue_name: &str, priority: u8, seconds_early: u64) -> NewJob {
    let options = JobOptions::default()
        .queue(queue(queue_name))
        .priority(Priority::new(priority).expect("0..=9"));
    new_job(
        kind_name,
        NOW.sub(Duration::from_secs(seconds_early)),
        options,
        NOW,
    )
}

/// A database with ten due jobs of `WANTED` in `default`, one at each priority level, and
/// `crowd` due jobs of `CROWD` in `default` spread over the levels, each earlier than the
/// `WANTED` job of its level, so a walk of a level in claim order meets its crowd first.
fn stored(crowd: u64) -> Connection {
    let connection = migrated();
    let mut tally = Tally::default();
    connection.execute_batch("BEGIN").expect("begin");
    let wanted = (0..10)
        .map(|n| pending(WANTED, "default", n as u8, 1))
        .collect();
    transitions::insert(&connection, &mut tally, wanted, NOW).expect("insert");
    let jobs: Vec<NewJob> = (0..crowd)
        .map(|n| pending(CROWD, "default", (n % 10) as u8, 60 + n))
        .collect();
    for batch in jobs.chunks(5_000) {
        transitions::insert(&connection, &mut tally, batch.to_vec(), NOW).expect("insert");
    }
    connection.execute_batch("COMMIT").expect("commit");
    connection
}

/// How much work SQLite's virtual machine does for `work`: the calls of a progress handler
/// asked for after every instruction (SQLite checks at its jump and loop instructions, so the
/// count follows the rows visited, not the size of the file). What `work` wrote is rolled
/// back.
fn instructions(connection: &mut Connection, work: impl FnOnce(&Connection)) -> u64 {
    let counted = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&counted);
    connection
        .progress_handler(
            1,
            Some(move || {
                counter.fetch_add(1, Ordering::Relaxed);
                false
            }),
        )
        .expect("set the progress handler");
    connection.execute_batch("BEGIN").expect("begin");
    counted.store(0, Ordering::Relaxed);
    work(connection);
    let count = counted.load(Ordering::Relaxed);
    connection.execute_batch("ROLLBACK").expect("roll back");
    connection
        .progress_handler(0, None::<fn() -> bool>)
        .expect("clear the progress handler");
    count
}

/// A kinds-filtered read, measured by `instructions`.
type Read = fn(&Connection, Option<&[Queue]>, &[Kind]);

fn next_due(connection: &Connection, queues: Option<&[Queue]>, kinds: &[Kind]) {
    let due = reads::next_due_on(connection, queues, Some(kinds)).expect("next_due");
    assert!(due.is_some(), "a job of {kinds:?} is pending");
}

fn claim(connection: &Connection, queues: Option<&[Queue]>, kinds: &[Kind]) {
    let request = ClaimRequest {
        holder: node("plans"),
        queues: queues.map(<[Queue]>::to_vec),
        kinds: Some(kinds.to_vec()),
        limit: 5,
        due_by: NOW,
        lease: Duration::from_secs(30),
    };
    let claimed = transitions::claim(
        connection,
        &mut Names::default(),
        &mut Tally::default(),
        &request,
        NOW,
    )
    .expect("claim");
    assert_eq!(claimed.len(), 5);
    assert!(claimed.iter().all(|job| job.kind.as_str() == WANTED));
}

#[test]
fn kinds_filtered_reads_do_not_walk_other_kinds_jobs() {
    let mut alone = stored(0);
    let mut crowded = stored(CROWD_JOBS);
    let wanted = [kind(WANTED)];
    let default = [queue("default")];
    let cases: [(&str, Option<&[Queue]>, Read); 4] = [
        ("next_due of a kind", None, next_due),
        ("next_due of a kind in a queue", Some(&default), next_due),
        ("claim of a kind", None, claim),
        ("claim of a kind in a queue", Some(&default), claim),
    ];
    for (case, queues, work) in cases {
        let without = instructions(&mut alone, |connection| work(connection, queues, &wanted));
        let with = instructions(&mut crowded, |connection| work(connection, queues, &wanted));
        assert_eq!(
            with, without,
            "{case}: {with} instructions behind {CROWD_JOBS} jobs of another kind, \
             {without} without them"
        );
    }

    // The measure sees a walk: with fewer queues than kinds, the queue's ranges are walked and
    // the crowd in that queue is passed over (see `ranges`).
    let two_kinds = [kind(WANTED), kind("plans.idle")];
    let without = instructions(&mut alone, |connection| {
        claim(connection, Some(&default), &two_kinds)
    });
    let with = instructions(&mut crowded, |connection| {
        claim(connection, Some(&default), &two_kinds)
    });
    assert!(
        with > without + CROWD_JOBS,
        "walking the queue's ranges past {CROWD_JOBS} jobs took {with} instructions, \
         {without} without them"
    );
}
