//! Checks that the statements which must stay cheap with a million jobs stored are index range
//! scans and seeks, never a scan of the table nor a sort: the claim reads only the rows it takes,
//! however many future jobs wait.
//!
//! SQLite's plans here depend only on the schema (the store never runs `ANALYZE`), so an empty
//! in-memory database shows the plan a full file gets.

use rusqlite::Connection;

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

#[test]
fn hot_statements_use_their_indexes() {
    let mut connection = Connection::open_in_memory().expect("in-memory database");
    rusqlite::vtab::array::load_module(&connection).expect("rarray");
    migrations::apply(&mut connection).expect("migrate");

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
            transitions::CLAIM_CANDIDATES_OF_KINDS,
            "SEARCH job USING INDEX job_pending_by_priority (priority=? AND run_at_us<?)",
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
            "SEARCH job USING INDEX job_pending_by_priority (priority=?)",
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
