//! The schema, as an ordered list of migrations tracked in `PRAGMA user_version`.
//!
//! Owns every `CREATE` statement and the rule for applying them: at open, in one transaction,
//! each step whose number is above the file's `user_version`, then `user_version` is set to the
//! last step. A file from a newer version of this code is refused, never "repaired". Steps are
//! append-only: a released step is never edited, a change is a new step.
//!
//! Must not hold any job logic; the statements that read and write jobs live in `transitions`
//! and `reads`.
//!
//! # The schema (version 1)
//!
//! One table, `job`, keyed by the 16 bytes of the job's UUIDv7 id, `WITHOUT ROWID`: the rows
//! are stored in the primary key's B-tree itself, so a job's id is stored once (a rowid table
//! would store it in the table and again in a unique index, and look every id up twice). The
//! secondary indexes then end in the id instead of a rowid, which the claim and listing order
//! need anyway. The payload is the last column so that reading a row's small columns does not
//! walk a large payload's overflow pages.
//!
//! Timestamps are microseconds since the Unix epoch in `*_us` integer columns (the core's
//! `Timestamp`); durations are `*_us` too, so a retry policy and an interval round-trip exactly
//! to the microsecond.
//!
//! `state` is a small integer, because SQLite stores 0 and 1 in no bytes at all and the rest in
//! one, and the partial indexes below name states by these numbers. The mapping is fixed (a new
//! state takes a new number; a number is never reused):
//!
//! | state     | code |
//! | --------- | ---- |
//! | scheduled | 0    |
//! | running   | 1    |
//! | retrying  | 2    |
//! | succeeded | 3    |
//! | dead      | 4    |
//! | cancelled | 5    |
//!
//! Pending means `state IN (0, 2)`; final means `state IN (3, 4, 5)`. Every query that should use
//! a partial index repeats its `WHERE` term literally, because SQLite only uses a partial index
//! when it can see that the query's terms imply the index's.
//!
//! # Version 2: leadership
//!
//! One more table, `leader`, with exactly one row (`id = 1`): the last term granted (0 before
//! the first election), and the holder with its expiry while someone leads. It is the same for
//! one process as for several sharing the file, so the fencing of the leader duties does not
//! depend on how the file is used.
//!
//! # Version 3: API tokens and idempotency keys
//!
//! `api_token` holds one row per token, keyed by its id (`WITHOUT ROWID`: the rows are small,
//! and listings page in id order, which is the key's order; `TEXT` compares bytewise, as
//! `TokenId` does). The scopes are one `TEXT` of the scope names joined by single spaces (a
//! scope name is a word, so the join is unambiguous; no scopes is the empty string), and the
//! secret is its 32-byte SHA-256 digest, never the secret itself.
//!
//! `idempotency_key` holds the first request made under each key, with the response to replay
//! (up to `limits::IDEMPOTENCY_RESPONSE_BYTES_MAX`). An ordinary rowid table, unlike `job`:
//! SQLite keeps rows of several megabytes better in a table B-tree than in the index B-tree a
//! `WITHOUT ROWID` table is. `idempotency_key_by_expiry` serves `purge_idempotency`, which
//! deletes the earliest expired keys first.
//!
//! # Version 4: job counts kept with every write
//!
//! `job_count` holds how many jobs each (queue, state) has, so `counts` and `queue_stats`
//! read a handful of rows instead of scanning `job` (a Prometheus scrape calls them, and the
//! file may hold ten million jobs). Three row triggers on `job` keep it, in the same
//! statement, hence the same transaction, as the change they count: `job_count_inserted`
//! (+1 for the new row), `job_count_moved` (after an update of `queue` or `state` that changes
//! either: -1 for the old pair, +1 for the new; a heartbeat, which changes neither, does not
//! fire it) and `job_count_deleted` (-1). Every write path is covered without a line of Rust,
//! including ones added later, the next occurrences a claim stores, and a rolled-back
//! statement or savepoint, whose trigger writes SQLite undoes with it. The step fills the
//! table from the jobs already stored, in the migration's one transaction.
//!
//! A count that reaches zero keeps its row (the running count of an idle queue goes to zero
//! and back all day; an update is cheaper than a delete and a re-insert); reads leave zero
//! rows out, and the purge duty deletes them, so the table holds no more than the (queue,
//! state) pairs in use since the last purge. `CHECK (count >= 0)` turns a broken count into a
//! failed write rather than a silently wrong number.
//!
//! # Version 5: the counts kept by the writer
//!
//! The triggers of step 4 are dropped: each fired once per job, and measured they cost about a
//! fifth of the throughput benchmark's completed jobs per second and two fifths of its
//! inserts. The writer now keeps the same counts (`counts::Tally`): each transition reports the
//! states it moves jobs between, and the writer applies the sum once per (queue, state) just
//! before the group commit, in the same transaction, keeping a command's changes only if the
//! command was kept. Every write goes through the writer, so every write is counted.
//!
//! # Version 6: pending jobs by kind
//!
//! `job_pending_by_kind`, on `(kind, priority, run_at_us)` (and the id, which SQLite appends)
//! of the pending jobs, serves `next_due` and `claim` with a kinds filter: one seek per (kind,
//! priority level) to the head of that kind's due jobs, ten per kind asked for. Without it they
//! walked `job_pending_by_priority` and passed over every pending job of another kind ahead of
//! the first of theirs. That is the usual case once nodes differ: a `punctual serve` node's
//! engine asks only for the kind `punctual.webhook` while jobs for remote workers wait in the
//! same table. Measured with 100,000 pending jobs of another kind, a kinds-filtered `next_due`
//! took about 30 ms, and the engine asks at least once a second (its bounded poll) and before
//! every claim; a claim paid the same when due jobs of other kinds were ahead. The cost grew
//! with other kinds' backlog, on every node. With the index it follows the kinds asked for and
//! the jobs taken. (With a queues filter as well, `ranges` chooses this index or
//! `job_pending_by_queue`.)
//!
//! What it costs: one more index entry per pending job (the kind's bytes, the priority, the
//! `run_at` and the 16-byte id), inserted when a job becomes pending (an insert, a retry, a
//! release, a rescue, a revival), deleted when it stops being pending (a claim, a cancel) and
//! moved by a reschedule: one more B-tree to change in each of those writes, in the writer's
//! transaction (a group commit writes each changed page once, however many of its jobs share
//! it). Completions, heartbeats and the purge, which touch only running or finished jobs, do
//! not change it, and its size follows the pending jobs, not the table. That is worth paying
//! because the reads it saves come from every node, all the time, whatever the write rate, and
//! grew without bound. Appending the kind to `job_pending_by_priority` instead would have
//! spared the row reads of the walk but not the walk; an index on queue and kind together
//! would serve only requests naming both.
//!
//! # Version 7: schedules and their occurrence ledger
//!
//! `schedule` holds one row per schedule (`WITHOUT ROWID`, keyed by its id): its definition as
//! the core's JSON text (`recurring::codec`), its cursor in columns, `version` for the optimistic
//! check of every write, `name` unique, and a partial index on `next_check_us` for the leader's
//! look at the due ones. `schedule_occurrence` is the ledger: `seq INTEGER PRIMARY KEY
//! AUTOINCREMENT` (never reused, so a schedule's entries keep their order), the outcome as the
//! core's codes, indexes by (schedule, seq) for listings and by `recorded_at_us` for the purge.

use punctual_core::StoreError;
use rusqlite::{Connection, TransactionBehavior};

use crate::error::from_sql;

/// One step of the schema's history.
struct Migration {
    /// What the step does, for error messages.
    name: &'static str,
    sql: &'static str,
}

/// Every step, oldest first. The schema version of a file is the number of steps applied to it.
const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "create the job table and its indexes",
        sql: "
        CREATE TABLE job (
            id                   BLOB    NOT NULL PRIMARY KEY,
            queue                TEXT    NOT NULL,
            kind                 TEXT    NOT NULL,
            priority             INTEGER NOT NULL,
            run_at_us            INTEGER NOT NULL,
            state                INTEGER NOT NULL,
            attempt              INTEGER NOT NULL,
            attempt_max          INTEGER NOT NULL,
            lease_token          INTEGER NOT NULL,
            lease_holder         TEXT,
            lease_expires_at_us  INTEGER,
            created_at_us        INTEGER NOT NULL,
            started_at_us        INTEGER,
            finished_at_us       INTEGER,
            schedule_cron        TEXT,
            schedule_time_zone   TEXT,
            schedule_interval_us INTEGER,
            backoff_base_us      INTEGER NOT NULL,
            backoff_max_us       INTEGER NOT NULL,
            jitter_percent       INTEGER NOT NULL,
            last_error           TEXT,
            payload              TEXT    NOT NULL
        ) WITHOUT ROWID;

        -- Claiming without a queue filter, and next_due: one range scan per priority level
        -- (priority = ? AND run_at_us <= ?) already in claim order, so a claim reads only the
        -- rows it takes, however many future jobs wait. The id is appended by SQLite.
        CREATE INDEX job_pending_by_priority
            ON job (priority, run_at_us) WHERE state IN (0, 2);

        -- Claiming for some queues: the same scan per (queue, priority), so jobs due in queues
        -- the claimer does not serve are never read.
        CREATE INDEX job_pending_by_queue
            ON job (queue, priority, run_at_us) WHERE state IN (0, 2);

        -- rescue_expired and next_lease_expiry: running jobs by lease expiry.
        CREATE INDEX job_running_by_lease_expiry
            ON job (lease_expires_at_us) WHERE state = 1;

        -- purge_finished: finished jobs by finish time.
        CREATE INDEX job_finished_by_time
            ON job (finished_at_us) WHERE state IN (3, 4, 5);
    ",
    },
    Migration {
        name: "create the leader table",
        sql: "
        CREATE TABLE leader (
            id            INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
            term          INTEGER NOT NULL,
            holder        TEXT,
            expires_at_us INTEGER,
            CHECK ((holder IS NULL) = (expires_at_us IS NULL))
        );
        INSERT INTO leader (id, term) VALUES (1, 0);
    ",
    },
    Migration {
        name: "create the api_token and idempotency_key tables",
        sql: "
        CREATE TABLE api_token (
            id            TEXT    NOT NULL PRIMARY KEY,
            label         TEXT    NOT NULL,
            scopes        TEXT    NOT NULL,
            secret_sha256 BLOB    NOT NULL CHECK (length(secret_sha256) = 32),
            created_at_us INTEGER NOT NULL,
            expires_at_us INTEGER,
            revoked_at_us INTEGER
        ) WITHOUT ROWID;

        CREATE TABLE idempotency_key (
            key           TEXT    NOT NULL PRIMARY KEY,
            fingerprint   TEXT    NOT NULL,
            created_at_us INTEGER NOT NULL,
            expires_at_us INTEGER NOT NULL,
            response      TEXT    NOT NULL
        );

        -- purge_idempotency: keys by expiry.
        CREATE INDEX idempotency_key_by_expiry ON idempotency_key (expires_at_us);
    ",
    },
    Migration {
        name: "keep job counts in the job_count table",
        sql: "
        CREATE TABLE job_count (
            queue TEXT    NOT NULL,
            state INTEGER NOT NULL,
            count INTEGER NOT NULL CHECK (count >= 0),
            PRIMARY KEY (queue, state)
        ) WITHOUT ROWID;

        INSERT INTO job_count (queue, state, count)
            SELECT queue, state, count(*) FROM job GROUP BY queue, state;

        CREATE TRIGGER job_count_inserted AFTER INSERT ON job
        BEGIN
            INSERT INTO job_count (queue, state, count) VALUES (NEW.queue, NEW.state, 1)
                ON CONFLICT (queue, state) DO UPDATE SET count = count + 1;
        END;

        CREATE TRIGGER job_count_moved AFTER UPDATE OF queue, state ON job
            WHEN OLD.queue IS NOT NEW.queue OR OLD.state IS NOT NEW.state
        BEGIN
            UPDATE job_count SET count = count - 1
                WHERE queue = OLD.queue AND state = OLD.state;
            INSERT INTO job_count (queue, state, count) VALUES (NEW.queue, NEW.state, 1)
                ON CONFLICT (queue, state) DO UPDATE SET count = count + 1;
        END;

        CREATE TRIGGER job_count_deleted AFTER DELETE ON job
        BEGIN
            UPDATE job_count SET count = count - 1
                WHERE queue = OLD.queue AND state = OLD.state;
        END;
    ",
    },
    Migration {
        name: "keep the job counts in the writer instead of triggers",
        sql: "
        DROP TRIGGER job_count_inserted;
        DROP TRIGGER job_count_moved;
        DROP TRIGGER job_count_deleted;
    ",
    },
    Migration {
        name: "index pending jobs by kind",
        sql: "
        -- Claiming and next_due for some kinds: one range scan per (kind, priority), in claim
        -- order, so pending jobs of other kinds are never read. The id is appended by SQLite.
        CREATE INDEX job_pending_by_kind
            ON job (kind, priority, run_at_us) WHERE state IN (0, 2);
    ",
    },
    Migration {
        name: "schedules and their occurrence ledger",
        sql: "
        -- One row per schedule; the definition is the core's JSON text, the cursor columns.
        CREATE TABLE schedule (
            id BLOB PRIMARY KEY NOT NULL,
            name TEXT NOT NULL UNIQUE,
            definition TEXT NOT NULL,
            paused INTEGER NOT NULL,
            version INTEGER NOT NULL,
            high_water_us INTEGER NOT NULL,
            next_check_us INTEGER,
            last_job BLOB,
            buffered_us INTEGER,
            fired INTEGER NOT NULL,
            skipped INTEGER NOT NULL,
            last_error TEXT,
            created_at_us INTEGER NOT NULL,
            updated_at_us INTEGER NOT NULL
        ) WITHOUT ROWID;
        -- The leader's look at the due schedules: one range scan.
        CREATE INDEX schedule_by_next_check ON schedule (next_check_us)
            WHERE next_check_us IS NOT NULL;
        -- AUTOINCREMENT: a seq is never reused, so a schedule's entries keep their order.
        CREATE TABLE schedule_occurrence (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            schedule_id BLOB NOT NULL,
            at_us INTEGER NOT NULL,
            outcome INTEGER NOT NULL,
            reason INTEGER,
            job_id BLOB,
            late_us INTEGER NOT NULL,
            count INTEGER NOT NULL,
            last_at_us INTEGER,
            flags INTEGER NOT NULL,
            error TEXT,
            recorded_at_us INTEGER NOT NULL
        );
        CREATE INDEX schedule_occurrence_by_schedule ON schedule_occurrence (schedule_id, seq);
        CREATE INDEX schedule_occurrence_by_recorded ON schedule_occurrence (recorded_at_us);
    ",
    },
];

/// The schema version this code writes and understands.
// A handful of steps always fits in a u32.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the schema of `connection`'s file up to `SCHEMA_VERSION`, all steps in one
/// transaction, and returns how many steps it applied (0 for a file already current).
pub(crate) fn apply(connection: &mut Connection) -> Result<u32, StoreError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(from_sql)?;
    let found: u32 = transaction
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(from_sql)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {found}, but this punctual knows versions up to \
             {SCHEMA_VERSION}: it was written by a newer punctual; upgrade punctual to open it"
        )));
    }
    let pending = MIGRATIONS.iter().enumerate().skip(found as usize);
    let mut applied = 0;
    for (index, migration) in pending {
        transaction.execute_batch(migration.sql).map_err(|error| {
            StoreError::Corrupt(format!(
                "schema step {} ({}) failed: {error}",
                index + 1,
                migration.name
            ))
        })?;
        applied += 1;
    }
    if applied > 0 {
        transaction
            .pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(from_sql)?;
    }
    transaction.commit().map_err(from_sql)?;
    Ok(applied)
}
