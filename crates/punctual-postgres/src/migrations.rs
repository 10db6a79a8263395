//! The schema, as an ordered list of migrations recorded in the `punctual_migrations` table.
//!
//! Owns every `CREATE` statement and the rule for applying them: in one transaction that first
//! takes a transaction-scoped advisory lock (so nodes starting at once apply each step exactly
//! once, one after the other), every step whose number is above the highest recorded version
//! runs and is recorded. A schema from a newer version of this code is refused, never "repaired".
//! Steps are append-only: a released step is never edited; a change is a new step.
//!
//! Must not hold any job logic; the statements that read and write jobs live in `transitions`,
//! `reads` and `insert`.
//!
//! # The schema (version 1)
//!
//! One table, `punctual_jobs`, keyed by the job's UUIDv7 id (the `uuid` type: 16 bytes, and
//! readable in `psql`). Timestamps are microseconds since the Unix epoch in `*_us` `bigint`
//! columns (the core's `Timestamp`), never `timestamptz`, so every comparison is an integer
//! comparison against the `now` the caller passed, and the store never reads a clock. Durations
//! are `*_us` too, so a retry policy and an interval round-trip exactly. The payload is `text`,
//! not `jsonb`, so it round-trips byte for byte (`jsonb` reorders keys and drops whitespace).
//! Columns are ordered fixed-width first (8, 4, then 2 bytes) so no alignment padding is stored.
//!
//! `state` is a `smallint` code; the partial indexes name states by these numbers. The mapping
//! is fixed (a new state takes a new number; a number is never reused):
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
//! a partial index repeats its predicate literally (a parameter would hide it from the planner).
//!
//! # Version 2: leadership
//!
//! `punctual_leader` holds exactly one row (`id = 1`): the last term granted (0 before the first
//! election), and while someone leads, the holder and its expiry (see `leader`). A tiny table
//! updated every few seconds by the leader only; its dead versions are pruned on its one page.
//!
//! # Version 3: API tokens and idempotency keys
//!
//! `punctual_api_tokens` holds one row per token, keyed by its id; `punctual_idempotency_keys`
//! the first request made under each key, with the response to replay (up to
//! `limits::IDEMPOTENCY_RESPONSE_BYTES_MAX`, TOASTed out of line), and an index by expiry for
//! `purge_idempotency`. The id and the key are `text COLLATE "C"`: their order (token listings
//! page in id order) is then bytewise, as `TokenId`'s and `IdempotencyKey`'s, whatever the
//! database's collation (a locale's order ignores `-` and folds case). Scopes are a `text[]`,
//! the secret its 32-byte SHA-256 digest (`bytea`), never the secret itself.
//!
//! The key's primary key is what makes `insert_idempotent` safe between nodes: the record is
//! written first, by `INSERT ... ON CONFLICT DO UPDATE ... WHERE` the held record expired,
//! so of two requests under one key the second waits on the first's row until it commits or
//! rolls back, and then finds the key held (and replays) or free (and inserts).
//!
//! # Version 4: job counts kept with every write
//!
//! `counts` and `queue_stats` must stay cheap with ten million jobs stored (a Prometheus scrape
//! calls them), so the number of jobs per (queue, state) is kept in `punctual_job_counts` by
//! three statement-level triggers on `punctual_jobs`, in the transaction of the change they
//! count: after `INSERT` (+1 per new row), after `UPDATE` (+1 per new row version, -1 per old,
//! summed per (queue, state): a heartbeat nets zero and writes nothing) and after `DELETE`
//! (-1), each reading its statement's transition tables, so a claim of 1,000 jobs or a batch
//! of 1,000 completions adds two upserts, not 2,000. Every path that writes jobs is covered,
//! the caller's own transaction included (`insert_in`, `complete_in`, or plain SQL), and a
//! rolled-back transaction rolls its counts back with it. An `AFTER TRUNCATE` trigger empties
//! the counts with the jobs.
//!
//! One row per (queue, state) would be a hot row: every node's every commit would update it,
//! and each would wait for the one before to commit. So the rows are split by a `slot`
//! (0 to 63), and `counts` sums them. A transaction takes a slot of its own on its first
//! counted write (`punctual_job_counts_slot`: the first slot whose transaction-scoped advisory
//! lock it gets without waiting, remembered for the rest of the transaction in the
//! `punctual.job_counts_slot` setting), so no two transactions in flight write the same count
//! row: no waits, and no lock-order deadlocks between a store's statements and a caller's
//! own transaction. Past 64 transactions writing at once, the 65th shares a slot chosen by
//! its backend's pid, which is correct (the row lock orders the two) but may wait. Slots are
//! taken lowest first, so with the few writers of a typical cluster the counts live in the
//! first few slots.
//!
//! A slot's row may hold a negative count (a job counted in on one slot and out on another);
//! only the sum over slots means anything, and a negative sum is reported as `Corrupt`. Rows
//! whose count is zero, and sets of rows of a (queue, state) whose counts sum to zero, are
//! deleted by `purge_finished` (locked `SKIP LOCKED`, so it never waits for a writer), which
//! keeps the table at most (queue, state) pairs in use times the slots in use.
//!
//! The step takes the jobs table's lock that writers conflict with, creates the triggers and
//! fills the counts from the jobs already stored, all in the migration's transaction: a node
//! of an older version writing meanwhile waits for it, and is then counted by the triggers.
//!
//! The cost is on the write path: per job-writing statement, the transition tables (the
//! changed rows, kept in memory), a small aggregate, and an upsert of one row per (queue,
//! state) it changed (HOT: `count` is not indexed, and the table's fillfactor leaves room);
//! per transaction, one advisory try-lock. Reads sum a few rows.
//!
//! # Version 5: pending jobs by kind
//!
//! `punctual_jobs_pending_by_kind`, on `(kind, priority, run_at_us, id)` of the pending jobs,
//! serves `next_due` and `claim` with a kinds filter: one probe per (kind, priority level) to
//! the head of that kind's due jobs, ten per kind asked for. Without it they walked
//! `punctual_jobs_pending` and passed over every pending job of another kind ahead of the
//! first of theirs (and the claim locked none of those, but read them all). That is the usual
//! case once nodes differ: a `punctual serve` node's engine asks only for the kind
//! `punctual.webhook` while jobs for remote workers wait in the same table. Measured with
//! 100,000 pending jobs of another kind, a kinds-filtered `next_due` took about 26 ms, and
//! every node's engine asks at least once a second (its bounded poll) and before every claim;
//! a claim paid the same when due jobs of other kinds were ahead. The cost grew with other
//! kinds' backlog, on every node. With the index it follows the kinds asked for and the jobs
//! taken. (With a queues filter as well, `claim` chooses this index or
//! `punctual_jobs_pending_by_queue`; see `claim::walks_kinds`.)
//!
//! What it costs: one more index entry per pending row version. No update of a job is HOT
//! (see "Churn" below), and PostgreSQL adds an entry to a partial index only for a new row
//! version that satisfies its predicate: so an insert, and a move into a pending state (a
//! retry, a release, a rescue, a revival, a reschedule), writes one more entry (with its WAL),
//! while a claim, a completion, a heartbeat or a purge writes none here. The entries of row
//! versions no longer pending are left for vacuum and bottom-up deletion, as in the other
//! pending indexes; the index's size follows the pending jobs and their churn, not the table.
//! That is worth paying because the reads it saves come from every node, all the time,
//! whatever the write rate, and grew without bound. Appending the kind to
//! `punctual_jobs_pending` instead would have made the walk an index-only filter but still a
//! walk; an index on queue and kind together would serve only requests naming both.
//!
//! The step builds the index in the migration's transaction (`CONCURRENTLY` cannot run in
//! one), which holds off writes to the jobs table while it reads the table once: on a table
//! of millions of jobs, run `punctual migrate` at a quiet moment.
//!
//! # Churn: what is updated, what is deleted (issue 3, item 8)
//!
//! A job is one row for its whole life. It is inserted once, updated in place at each transition
//! (claim; then complete, fail, release, rescue or cancel; heartbeats move its lease expiry), and
//! deleted only by `purge_finished`, once it is final and past retention. Nothing else deletes.
//! So a job that runs once costs one insert, two updates and one delete: each update leaves one
//! dead row version, and each delete one more.
//!
//! Every update changes `state` or an indexed column, and `state` appears in every partial
//! index's predicate, so no update is HOT (heap-only): each writes a new entry into the primary
//! key and into the partial indexes the new version belongs to (the running one, the finished
//! one, or the pending ones: two, three since version 5). We accept that: partial
//! indexes keep the claim index holding only pending jobs, so a claim never walks past the
//! millions of finished rows that a full index on (state, priority, run_at) would still hold as
//! dead entries between vacuums; the alternative (a non-partial index) would allow HOT updates
//! only for heartbeats, which are rare next to transitions. The old entries are cleaned by
//! PostgreSQL's bottom-up index deletion (the primary key churns versions of unchanged keys,
//! which is exactly what it targets) and by vacuum.
//!
//! The table's `fillfactor` of 80 keeps a fifth of each page free: a row's new version is then
//! written on the same page as the old one (non-HOT updates also prefer the old page), and
//! on-page pruning reclaims the old version's space without waiting for vacuum, so the table
//! does not grow while vacuum catches up. Autovacuum is set per table to run after 1 % of the
//! rows are dead (the default, 20 %, lets a table of millions of rows carry hundreds of
//! thousands of dead versions through the claim index), with a higher cost limit so that one
//! pass finishes quickly instead of sleeping through its budget.
//!
//! # Version 6: schedules and their occurrence ledger
//!
//! `punctual_schedules` holds one row per schedule: its definition as the core's JSON text
//! (`recurring::codec`), its cursor in columns, `version` for the optimistic check of every
//! write, `name` unique (`COLLATE "C"`, bytewise, as `ScheduleName` orders), and a partial
//! index on `next_check_us` for the leader's look at the due ones. `punctual_schedule_occurrences`
//! is the ledger: a `bigserial` seq (never reused), the outcome as the core's codes, indexes by
//! (schedule, seq) for listings and by `recorded_at_us` for the purge.
//!
//! # Version 7: cancel notices
//!
//! A row trigger on `punctual_jobs`, `WHEN (OLD.state = 1 AND NEW.state = 5)`, sends
//! `'cancel <id> <schema>'` on the insert channel when a running job is cancelled, so the node
//! running it tells its handler at once (`Hint::Cancelled`).

use deadpool_postgres::GenericClient;
use punctual_core::StoreError;

use crate::error::pg;

/// One step of the schema's history.
struct Migration {
    /// What the step does, for error messages and the `punctual_migrations` table.
    name: &'static str,
    sql: &'static str,
}

/// Every step, oldest first. Step `n` (1-based) takes the schema to version `n`.
const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "create the jobs table, its indexes and the insert notification",
        sql: "
        CREATE TABLE punctual_jobs (
            id                   uuid     NOT NULL,
            run_at_us            bigint   NOT NULL,
            lease_token          bigint   NOT NULL,
            created_at_us        bigint   NOT NULL,
            backoff_base_us      bigint   NOT NULL,
            backoff_max_us       bigint   NOT NULL,
            lease_expires_at_us  bigint,
            started_at_us        bigint,
            finished_at_us       bigint,
            schedule_interval_us bigint,
            attempt              integer  NOT NULL,
            attempt_max          integer  NOT NULL,
            state                smallint NOT NULL CHECK (state BETWEEN 0 AND 5),
            priority             smallint NOT NULL CHECK (priority BETWEEN 0 AND 9),
            jitter_percent       smallint NOT NULL,
            queue                text     NOT NULL,
            kind                 text     NOT NULL,
            lease_holder         text,
            schedule_cron        text,
            schedule_time_zone   text,
            last_error           text,
            payload              text     NOT NULL,
            CONSTRAINT punctual_jobs_pkey PRIMARY KEY (id),
            -- A lease is present exactly when the job is running: fenced writes rely on it.
            CONSTRAINT punctual_jobs_lease_iff_running CHECK (
                (state = 1) = (lease_holder IS NOT NULL)
                AND (state = 1) = (lease_expires_at_us IS NOT NULL))
        ) WITH (
            fillfactor = 80,
            autovacuum_vacuum_scale_factor = 0.01,
            autovacuum_vacuum_threshold = 1000,
            autovacuum_vacuum_insert_scale_factor = 0.01,
            autovacuum_analyze_scale_factor = 0.02,
            autovacuum_vacuum_cost_limit = 2000,
            autovacuum_vacuum_cost_delay = 1
        );

        -- Claims over every queue, and next_due: one range scan per priority level
        -- (priority = p AND run_at_us <= due_by), already in claim order, so a claim reads only
        -- the rows it takes however many future jobs wait.
        CREATE INDEX punctual_jobs_pending
            ON punctual_jobs (priority, run_at_us, id) WHERE state IN (0, 2);

        -- Claims for some queues: the same scan per (queue, priority), so due jobs of queues the
        -- claimer does not serve are never read.
        CREATE INDEX punctual_jobs_pending_by_queue
            ON punctual_jobs (queue, priority, run_at_us, id) WHERE state IN (0, 2);

        -- rescue_expired and next_lease_expiry: running jobs by lease expiry.
        CREATE INDEX punctual_jobs_running_by_lease_expiry
            ON punctual_jobs (lease_expires_at_us, id) WHERE state = 1;

        -- purge_finished: final jobs by finish time.
        CREATE INDEX punctual_jobs_finished_by_time
            ON punctual_jobs (finished_at_us, id) WHERE state IN (3, 4, 5);

        -- Wakes listening nodes (`PgStore::listen`) once per inserting statement with the
        -- earliest run_at it inserted and the schema it went into. A statement-level trigger,
        -- so a batch of 10,000 jobs sends one notification, and so jobs inserted by any path
        -- (a user's own transaction, a claim storing a next occurrence) are announced.
        -- PostgreSQL sends it at commit, and never for a rolled-back insert.
        CREATE FUNCTION punctual_jobs_notify_inserted() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            earliest bigint;
        BEGIN
            SELECT min(run_at_us) INTO earliest FROM inserted;
            IF earliest IS NOT NULL THEN
                PERFORM pg_notify('punctual_jobs', earliest::text || ' ' || TG_TABLE_SCHEMA);
            END IF;
            RETURN NULL;
        END
        $$;

        CREATE TRIGGER punctual_jobs_notify_inserted
            AFTER INSERT ON punctual_jobs
            REFERENCING NEW TABLE AS inserted
            FOR EACH STATEMENT EXECUTE FUNCTION punctual_jobs_notify_inserted();
    ",
    },
    Migration {
        name: "create the leader table",
        sql: "
        CREATE TABLE punctual_leader (
            id            smallint NOT NULL CHECK (id = 1),
            term          bigint   NOT NULL,
            expires_at_us bigint,
            holder        text,
            CONSTRAINT punctual_leader_pkey PRIMARY KEY (id),
            CONSTRAINT punctual_leader_held_until CHECK (
                (holder IS NULL) = (expires_at_us IS NULL))
        );
        INSERT INTO punctual_leader (id, term) VALUES (1, 0);
    ",
    },
    Migration {
        name: "create the API token and idempotency key tables",
        sql: r#"
        CREATE TABLE punctual_api_tokens (
            created_at_us bigint NOT NULL,
            expires_at_us bigint,
            revoked_at_us bigint,
            id            text COLLATE "C" NOT NULL,
            label         text   NOT NULL,
            scopes        text[] NOT NULL,
            secret_sha256 bytea  NOT NULL CHECK (octet_length(secret_sha256) = 32),
            CONSTRAINT punctual_api_tokens_pkey PRIMARY KEY (id)
        );

        CREATE TABLE punctual_idempotency_keys (
            created_at_us bigint NOT NULL,
            expires_at_us bigint NOT NULL,
            key           text COLLATE "C" NOT NULL,
            fingerprint   text NOT NULL,
            response      text NOT NULL,
            CONSTRAINT punctual_idempotency_keys_pkey PRIMARY KEY (key)
        );

        -- purge_idempotency: keys by expiry, the earliest first.
        CREATE INDEX punctual_idempotency_keys_by_expiry
            ON punctual_idempotency_keys (expires_at_us, key);
    "#,
    },
    Migration {
        name: "keep job counts in the job counts table",
        sql: r#"
        -- Writers wait until the counts are filled and the triggers in place.
        LOCK TABLE punctual_jobs IN SHARE ROW EXCLUSIVE MODE;

        CREATE TABLE punctual_job_counts (
            count bigint   NOT NULL,
            state smallint NOT NULL CHECK (state BETWEEN 0 AND 5),
            slot  smallint NOT NULL CHECK (slot BETWEEN 0 AND 63),
            queue text     NOT NULL,
            CONSTRAINT punctual_job_counts_pkey PRIMARY KEY (queue, state, slot)
        ) WITH (fillfactor = 50);

        INSERT INTO punctual_job_counts (queue, state, slot, count)
            SELECT queue, state, 0, count(*) FROM punctual_jobs GROUP BY queue, state;

        -- The slot of this transaction's count rows: the first whose advisory lock it gets
        -- without waiting (kept until the transaction ends), or, with all 64 taken, one
        -- shared by the backend's pid. Remembered in a transaction-local setting.
        CREATE FUNCTION punctual_job_counts_slot() RETURNS smallint
        LANGUAGE plpgsql AS $$
        DECLARE
            taken smallint := nullif(current_setting('punctual.job_counts_slot', true), '');
        BEGIN
            IF taken IS NOT NULL THEN
                RETURN taken;
            END IF;
            FOR candidate IN 0..63 LOOP
                IF pg_try_advisory_xact_lock(hashtext('punctual_job_counts'), candidate) THEN
                    taken := candidate;
                    EXIT;
                END IF;
            END LOOP;
            IF taken IS NULL THEN
                taken := pg_backend_pid() % 64;
            END IF;
            PERFORM set_config('punctual.job_counts_slot', taken::text, true);
            RETURN taken;
        END
        $$;

        -- The trigger functions name tables unqualified; `SET search_path FROM CURRENT` pins
        -- them to this schema, whatever the search_path of the connection that writes jobs
        -- (a caller's own transaction may have another).
        CREATE FUNCTION punctual_jobs_count_inserted() RETURNS trigger
        LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
        BEGIN
            INSERT INTO punctual_job_counts AS counts (queue, state, slot, count)
            SELECT queue, state, punctual_job_counts_slot(), count(*)
            FROM inserted
            GROUP BY queue, state
            ORDER BY queue, state
            ON CONFLICT (queue, state, slot)
                DO UPDATE SET count = counts.count + EXCLUDED.count;
            RETURN NULL;
        END
        $$;

        CREATE FUNCTION punctual_jobs_count_updated() RETURNS trigger
        LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
        BEGIN
            INSERT INTO punctual_job_counts AS counts (queue, state, slot, count)
            SELECT queue, state, punctual_job_counts_slot(), sum(change)
            FROM (
                SELECT queue, state, 1 AS change FROM updated_new
                UNION ALL
                SELECT queue, state, -1 AS change FROM updated_old
            ) AS changes
            GROUP BY queue, state
            HAVING sum(change) <> 0
            ORDER BY queue, state
            ON CONFLICT (queue, state, slot)
                DO UPDATE SET count = counts.count + EXCLUDED.count;
            RETURN NULL;
        END
        $$;

        CREATE FUNCTION punctual_jobs_count_deleted() RETURNS trigger
        LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
        BEGIN
            INSERT INTO punctual_job_counts AS counts (queue, state, slot, count)
            SELECT queue, state, punctual_job_counts_slot(), -count(*)
            FROM deleted
            GROUP BY queue, state
            ORDER BY queue, state
            ON CONFLICT (queue, state, slot)
                DO UPDATE SET count = counts.count + EXCLUDED.count;
            RETURN NULL;
        END
        $$;

        CREATE FUNCTION punctual_jobs_count_truncated() RETURNS trigger
        LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
        BEGIN
            DELETE FROM punctual_job_counts;
            RETURN NULL;
        END
        $$;

        CREATE TRIGGER punctual_jobs_count_inserted
            AFTER INSERT ON punctual_jobs
            REFERENCING NEW TABLE AS inserted
            FOR EACH STATEMENT EXECUTE FUNCTION punctual_jobs_count_inserted();

        CREATE TRIGGER punctual_jobs_count_updated
            AFTER UPDATE ON punctual_jobs
            REFERENCING OLD TABLE AS updated_old NEW TABLE AS updated_new
            FOR EACH STATEMENT EXECUTE FUNCTION punctual_jobs_count_updated();

        CREATE TRIGGER punctual_jobs_count_deleted
            AFTER DELETE ON punctual_jobs
            REFERENCING OLD TABLE AS deleted
            FOR EACH STATEMENT EXECUTE FUNCTION punctual_jobs_count_deleted();

        CREATE TRIGGER punctual_jobs_count_truncated
            AFTER TRUNCATE ON punctual_jobs
            FOR EACH STATEMENT EXECUTE FUNCTION punctual_jobs_count_truncated();
    "#,
    },
    Migration {
        name: "index pending jobs by kind",
        sql: "
        -- Claims and next_due for some kinds: one range scan per (kind, priority), in claim
        -- order, so pending jobs of other kinds are never read.
        CREATE INDEX punctual_jobs_pending_by_kind
            ON punctual_jobs (kind, priority, run_at_us, id) WHERE state IN (0, 2);
    ",
    },
    Migration {
        name: "schedules and their occurrence ledger",
        sql: "
        -- One row per schedule; the definition is the core's JSON text, the cursor columns.
        CREATE TABLE punctual_schedules (
            id uuid PRIMARY KEY,
            version bigint NOT NULL,
            high_water_us bigint NOT NULL,
            next_check_us bigint,
            buffered_us bigint,
            fired bigint NOT NULL,
            skipped bigint NOT NULL,
            created_at_us bigint NOT NULL,
            updated_at_us bigint NOT NULL,
            paused boolean NOT NULL,
            last_job uuid,
            name text COLLATE \"C\" NOT NULL UNIQUE,
            definition text NOT NULL,
            last_error text
        );
        -- The leader's look at the due schedules: one range scan.
        CREATE INDEX punctual_schedules_by_next_check ON punctual_schedules (next_check_us)
            WHERE next_check_us IS NOT NULL;
        -- A sequence never hands a number out twice, so a schedule's entries keep their order.
        CREATE TABLE punctual_schedule_occurrences (
            seq bigserial PRIMARY KEY,
            at_us bigint NOT NULL,
            late_us bigint NOT NULL,
            count bigint NOT NULL,
            last_at_us bigint,
            recorded_at_us bigint NOT NULL,
            schedule_id uuid NOT NULL,
            job_id uuid,
            outcome smallint NOT NULL,
            reason smallint,
            flags smallint NOT NULL,
            error text
        );
        CREATE INDEX punctual_schedule_occurrences_by_schedule
            ON punctual_schedule_occurrences (schedule_id, seq);
        CREATE INDEX punctual_schedule_occurrences_by_recorded
            ON punctual_schedule_occurrences (recorded_at_us);
    ",
    },
    Migration {
        name: "announce the cancel of a running job",
        sql: r#"
        -- Tells listening nodes (`PgStore::listen`) that a running job was cancelled, so the
        -- node running it tells its handler at once rather than at its next heartbeat. Sent
        -- on the insert channel as 'cancel <id> <schema>', at commit. A row trigger whose WHEN
        -- is false for every other update (a claim, a heartbeat, a completion) costs those
        -- nothing but the test.
        CREATE FUNCTION punctual_jobs_notify_cancelled() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('punctual_jobs', 'cancel ' || NEW.id::text || ' ' || TG_TABLE_SCHEMA);
            RETURN NULL;
        END
        $$;

        CREATE TRIGGER punctual_jobs_notify_cancelled
            AFTER UPDATE OF state ON punctual_jobs
            FOR EACH ROW WHEN (OLD.state = 1 AND NEW.state = 5)
            EXECUTE FUNCTION punctual_jobs_notify_cancelled();
    "#,
    },
];

/// The schema version this code writes and understands.
// A handful of steps always fits in an i32.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The notification channel the insert trigger sends on.
pub(crate) const CHANNEL: &str = "punctual_jobs";

/// Creates the bookkeeping table (and the schema, when one is named), then applies every step
/// above the recorded version, all in one transaction under an advisory lock keyed by the
/// schema's name. Returns how many steps it applied (0 for a schema already current).
///
/// With `apply` false it changes nothing and only checks that the schema is current.
pub(crate) async fn run(
    client: &mut deadpool_postgres::Client,
    schema: Option<&str>,
    apply: bool,
) -> Result<u32, StoreError> {
    let transaction = client.transaction().await.map_err(pg)?;
    // A step may build an index over millions of rows: the store's statement_timeout bounds
    // the calls of a running node, not its migrations.
    transaction
        .batch_execute("SET LOCAL statement_timeout = 0")
        .await
        .map_err(pg)?;
    if apply {
        // Several nodes may start at once on an empty schema; the lock makes them take turns,
        // and each later one finds the steps already recorded. Transaction-scoped, so a node
        // that dies mid-migration releases it with its rolled-back transaction.
        transaction
            .execute(
                "SELECT pg_advisory_xact_lock(hashtext('punctual_migrations'), hashtext($1))",
                &[&schema.unwrap_or("")],
            )
            .await
            .map_err(pg)?;
        if let Some(schema) = schema {
            // The name was checked by `PgOptions` to be a plain identifier; quoted anyway.
            transaction
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .await
                .map_err(pg)?;
        }
        transaction
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS punctual_migrations (
                     version       integer NOT NULL PRIMARY KEY,
                     name          text    NOT NULL,
                     applied_at_us bigint  NOT NULL
                 )",
            )
            .await
            .map_err(pg)?;
    }
    let found = recorded_version(&transaction).await?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "the database has punctual schema version {found}, but this punctual knows versions \
             up to {SCHEMA_VERSION}: it was written by a newer punctual; upgrade punctual to use it"
        )));
    }
    if !apply {
        if found < SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "the database has punctual schema version {found}, this punctual needs \
                 {SCHEMA_VERSION}: run `punctual migrate` first"
            )));
        }
        return Ok(0);
    }
    let mut applied = 0;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        // `index + 1` is at most SCHEMA_VERSION, which fits in an i32.
        let version = index as i32 + 1;
        transaction
            .batch_execute(migration.sql)
            .await
            .map_err(|error| {
                StoreError::Corrupt(format!(
                    "schema step {version} ({}) failed: {}",
                    migration.name,
                    pg(error)
                ))
            })?;
        transaction
            .execute(
                "INSERT INTO punctual_migrations (version, name, applied_at_us)
                 VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1e6)::bigint)",
                &[&version, &migration.name],
            )
            .await
            .map_err(pg)?;
        applied += 1;
    }
    transaction.commit().await.map_err(pg)?;
    Ok(applied)
}

/// The highest version recorded, 0 for a schema never migrated.
async fn recorded_version(client: &impl GenericClient) -> Result<i32, StoreError> {
    let exists = client
        .query_one("SELECT to_regclass('punctual_migrations') IS NOT NULL", &[])
        .await
        .map_err(pg)?;
    if !exists.try_get::<_, bool>(0).map_err(pg)? {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM punctual_migrations",
            &[],
        )
        .await
        .map_err(pg)?;
    row.try_get(0).map_err(pg)
}
