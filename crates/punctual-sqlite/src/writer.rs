//! Group commit: the one thread that writes, and the batches it commits.
//!
//! Owns the write connection and the command channel's receiving end. The writer blocks for one
//! command, drains whatever else is already queued (up to the batch cap), runs the lot inside
//! one `BEGIN IMMEDIATE` transaction, commits once, and only then answers every caller. One commit is one fsync of the WAL, so a thousand
//! concurrent completions cost one fsync between them instead of a thousand; and no caller
//! hears "stored" before its write is on disk.
//!
//! A command that fails (a refusal such as `LeaseLost`, or an SQL error) is undone alone; the
//! others in the batch still commit. A command that makes several writes runs in its own
//! savepoint, rolled back on failure; one that makes a single write statement needs none,
//! because SQLite undoes a failed statement by itself and keeps the transaction. If SQLite rolls back the whole
//! transaction (it does on some I/O errors and on a full disk), or the commit fails, every
//! command of the batch that had succeeded is answered `Unavailable` instead: nothing was
//! stored.
//!
//! Must not run reads for callers (the read pool does, beside it, thanks to WAL), and must not
//! panic on an SQL error. If it panics anyway, every reply sender it holds is dropped on the
//! way out, so callers get `Unavailable` instead of waiting forever.

use std::time::Duration;

use punctual_core::{
    ApiToken, ClaimRequest, FailOutcome, IdempotencyRecord, Idempotent, Job, JobId, JobState,
    LeaderTerm, LeaseToken, NewJob, NodeId, RescueOutcome, ScheduleId, ScheduleWrite, StoreError,
    Timestamp, TokenId, WriteOutcome,
};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::counts::Tally;
use crate::error::{Failure, from_sql, is_disk_full};
use crate::reserve::Reserve;
use crate::rows::Names;
use crate::{schedules, transitions};

/// Where a command's answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One write a caller asked for, with the channel for its answer.
pub(crate) enum Command {
    Insert {
        jobs: Vec<NewJob>,
        now: Timestamp,
        reply: Reply<Vec<JobId>>,
    },
    Claim {
        request: ClaimRequest,
        now: Timestamp,
        reply: Reply<Vec<Job>>,
    },
    ExtendLease {
        id: JobId,
        token: LeaseToken,
        expires_at: Timestamp,
        reply: Reply<()>,
    },
    Complete {
        id: JobId,
        token: LeaseToken,
        now: Timestamp,
        reply: Reply<()>,
    },
    Fail {
        id: JobId,
        token: LeaseToken,
        /// Already truncated to `limits::ERROR_BYTES_MAX`.
        error: String,
        outcome: FailOutcome,
        now: Timestamp,
        reply: Reply<JobState>,
    },
    Release {
        id: JobId,
        token: LeaseToken,
        reply: Reply<()>,
    },
    Cancel {
        id: JobId,
        now: Timestamp,
        reply: Reply<Job>,
    },
    Reschedule {
        id: JobId,
        run_at: Timestamp,
        now: Timestamp,
        reply: Reply<Job>,
    },
    Lead {
        node: NodeId,
        term: Option<LeaderTerm>,
        lease: Duration,
        now: Timestamp,
        reply: Reply<Option<LeaderTerm>>,
    },
    Resign {
        node: NodeId,
        term: LeaderTerm,
        reply: Reply<()>,
    },
    RescueExpired {
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
        reply: Reply<Vec<RescueOutcome>>,
    },
    PurgeFinished {
        term: LeaderTerm,
        finished_before: Timestamp,
        limit: usize,
        now: Timestamp,
        reply: Reply<u64>,
    },
    InsertIdempotent {
        /// Checked by the caller, as `Insert`'s are; so is the record.
        jobs: Vec<NewJob>,
        record: IdempotencyRecord,
        now: Timestamp,
        reply: Reply<Idempotent>,
    },
    PurgeIdempotency {
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
        reply: Reply<u64>,
    },
    InsertToken {
        /// Checked by the caller.
        token: ApiToken,
        reply: Reply<()>,
    },
    /// Makes the writer thread panic, as a bug in it would (tests of what follows).
    #[cfg(feature = "fault-injection")]
    Crash {
        reply: Reply<()>,
    },
    RevokeToken {
        id: TokenId,
        now: Timestamp,
        reply: Reply<ApiToken>,
    },
    WriteSchedules {
        /// Checked by the caller.
        fence: Option<LeaderTerm>,
        writes: Vec<ScheduleWrite>,
        now: Timestamp,
        reply: Reply<Vec<WriteOutcome>>,
    },
    DeleteSchedule {
        id: ScheduleId,
        reply: Reply<bool>,
    },
    PurgeOccurrences {
        term: LeaderTerm,
        recorded_before: Timestamp,
        limit: usize,
        now: Timestamp,
        reply: Reply<u64>,
    },
}

/// Sends a command's answer once the batch's fate is known: given `None` when the batch
/// committed, or the reason it did not.
type SendAnswer = Box<dyn FnOnce(Option<&str>) + Send>;

/// A command that ran, holding its answer until the batch's fate is known.
struct Settled(SendAnswer);

impl Settled {
    fn new<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Settled {
        Settled(Box::new(move |batch_failure: Option<&str>| {
            let result = match (batch_failure, result) {
                // A success inside a batch that did not commit stored nothing.
                (Some(reason), Ok(_)) => Err(StoreError::Unavailable(reason.to_owned())),
                // A refusal changed nothing, so it stands whatever became of the batch.
                (_, result) => result,
            };
            // The caller may have stopped waiting (its future was dropped); nothing to do.
            let _ = reply.send(result);
        }))
    }

    fn send(self, batch_failure: Option<&str>) {
        (self.0)(batch_failure)
    }
}

/// The writer's state: its connection, its decoded-name cache, and the count changes of the
/// transaction under way (see `counts`).
struct Writer {
    connection: Connection,
    names: Names,
    tally: Tally,
    /// Space held back for the writes that keep stored jobs moving when the disk fills.
    reserve: Reserve,
    /// Whether a write of the batch under way failed because the disk is full.
    disk_full: bool,
}

/// What an insert is told while the disk is full.
const DISK_FULL: &str = "the disk is full: new jobs are refused until space returns (the jobs \
                         already stored still run)";

/// The writer thread's body: commit batches until every sender is gone and the queue is empty.
pub(crate) fn run(
    connection: Connection,
    mut commands: mpsc::Receiver<Command>,
    batch_max: usize,
    reserve: Reserve,
) {
    let batch_max = batch_max.max(1);
    let mut writer = Writer {
        connection,
        names: Names::default(),
        tally: Tally::default(),
        reserve,
        disk_full: false,
    };
    let mut batch = Vec::with_capacity(batch_max);
    let mut settled = Vec::with_capacity(batch_max);
    // `blocking_recv` returns `None` only once the store is dropped and the queue drained, so
    // every command accepted before the drop is still run and answered.
    while let Some(first) = commands.blocking_recv() {
        batch.push(first);
        while batch.len() < batch_max {
            match commands.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        if writer.reserve.low() {
            writer.reserve.probe(std::time::Instant::now());
        }
        writer.commit_batch(&mut batch, &mut settled);
        if std::mem::take(&mut writer.disk_full) {
            writer.reserve.release();
        }
        if writer.reserve.low() {
            writer.checkpoint();
        }
    }
}

impl Writer {
    /// Runs `batch` in one transaction and answers every command in it; leaves both vectors
    /// empty for reuse.
    fn commit_batch(&mut self, batch: &mut Vec<Command>, settled: &mut Vec<Settled>) {
        if let Err(error) = self.execute("BEGIN IMMEDIATE") {
            self.disk_full |= is_disk_full(&error);
            let reason = format!("could not begin a write transaction: {}", from_sql(error));
            for command in batch.drain(..) {
                command.refuse(&reason);
            }
            return;
        }
        let mut lost: Option<String> = None;
        for command in batch.drain(..) {
            if let Some(reason) = &lost {
                command.refuse(reason);
                continue;
            }
            if self.reserve.low() && command.adds_data() {
                command.refuse(DISK_FULL);
                continue;
            }
            settled.push(command.run(self));
            if self.connection.is_autocommit() {
                // SQLite rolled the whole transaction back (an I/O error, a full disk): the
                // commands before this one are undone too.
                lost = Some(
                    "the write transaction was rolled back by SQLite (I/O error or full disk)"
                        .to_owned(),
                );
            }
        }
        // The job counts of every command kept, in the same transaction as their rows.
        if lost.is_none()
            && let Err(error) = self.tally.flush(&self.connection)
        {
            if let Failure::Sql(error) = &error {
                self.disk_full |= is_disk_full(error);
            }
            lost = Some(format!(
                "could not write the job counts: {}",
                StoreError::from(error)
            ));
            let _ = self.execute("ROLLBACK");
        }
        self.tally.clear();
        if lost.is_none()
            && let Err(error) = self.execute("COMMIT")
        {
            self.disk_full |= is_disk_full(&error);
            lost = Some(format!("commit failed: {}", from_sql(error)));
            // Best effort: if the commit failed half way, end the transaction so the next batch
            // can begin one. If this fails too, the next BEGIN reports it.
            let _ = self.execute("ROLLBACK");
        }
        for done in settled.drain(..) {
            done.send(lost.as_deref());
        }
    }

    /// Copies the WAL into the database without waiting for readers, so that the next write
    /// starts the WAL from its beginning again instead of growing it: while space is low, the
    /// WAL must not take the reserve's space. A failure (the database file itself cannot grow)
    /// is left to the next write to report.
    fn checkpoint(&self) {
        let _ = self
            .connection
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    }

    /// Remembers a failure for want of space, so the batch's end releases the reserve.
    fn note<T>(&mut self, result: &Result<T, Failure>) {
        if let Err(Failure::Sql(error)) = result {
            self.disk_full |= is_disk_full(error);
        }
    }

    fn execute(&self, sql: &'static str) -> Result<(), rusqlite::Error> {
        self.connection.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// Runs a command whose transition may make several writes (insert, claim, rescue, purge,
    /// the insert under an idempotency key) inside
    /// its own savepoint, so that on failure exactly its own writes are undone.
    fn settle<T: Send + 'static>(
        &mut self,
        reply: Reply<T>,
        transition: impl FnOnce(&Connection, &mut Names, &mut Tally) -> Result<T, Failure>,
    ) -> Settled {
        let mut tally = Tally::default();
        let result = match self.execute("SAVEPOINT command") {
            Err(error) => Err(from_sql(error)),
            Ok(()) => {
                let result = transition(&self.connection, &mut self.names, &mut tally);
                self.note(&result);
                let ended = match &result {
                    Ok(_) => self.execute("RELEASE command"),
                    Err(_) => self
                        .execute("ROLLBACK TO command")
                        .and_then(|()| self.execute("RELEASE command")),
                };
                match (result, ended) {
                    (Ok(_), Err(error)) => Err(from_sql(error)),
                    (result, _) => result.map_err(StoreError::from),
                }
            }
        };
        // A command undone by its savepoint changed no count.
        if result.is_ok() {
            self.tally.absorb(tally);
        }
        Settled::new(reply, result)
    }

    /// Runs a command whose transition makes at most one write statement (the fenced lease
    /// operations, cancel, reschedule, the idempotency purge, the token writes), without a
    /// savepoint: SQLite already undoes a failed statement alone (and its count changes
    /// are dropped with it), and keeps the transaction, so a savepoint would add nothing but
    /// cost (about 15 % of the throughput benchmark's writer time, measured). A failure that
    /// takes the whole transaction with it is caught by `commit_batch` either way.
    fn settle_one_statement<T: Send + 'static>(
        &mut self,
        reply: Reply<T>,
        transition: impl FnOnce(&Connection, &mut Names, &mut Tally) -> Result<T, Failure>,
    ) -> Settled {
        let mut tally = Tally::default();
        let result = transition(&self.connection, &mut self.names, &mut tally);
        self.note(&result);
        let result = result.map_err(StoreError::from);
        // A failed statement changed nothing, so it changed no count.
        if result.is_ok() {
            self.tally.absorb(tally);
        }
        Settled::new(reply, result)
    }
}

fn refuse<T>(reply: Reply<T>, reason: &str) {
    // The caller may have stopped waiting; nothing to do then.
    let _ = reply.send(Err(StoreError::Unavailable(reason.to_owned())));
}

impl Command {
    fn run(self, writer: &mut Writer) -> Settled {
        match self {
            Command::Insert { jobs, now, reply } => writer.settle(reply, |connection, _, tally| {
                transitions::insert(connection, tally, jobs, now)
            }),
            Command::Claim {
                request,
                now,
                reply,
            } => writer.settle(reply, |connection, names, tally| {
                transitions::claim(connection, names, tally, &request, now)
            }),
            Command::ExtendLease {
                id,
                token,
                expires_at,
                reply,
            } => writer.settle_one_statement(reply, |connection, names, _| {
                transitions::extend_lease(connection, names, id, token, expires_at)
            }),
            Command::Complete {
                id,
                token,
                now,
                reply,
            } => writer.settle_one_statement(reply, |connection, names, tally| {
                transitions::complete(connection, names, tally, id, token, now)
            }),
            Command::Fail {
                id,
                token,
                error,
                outcome,
                now,
                reply,
            } => writer.settle_one_statement(reply, |connection, names, tally| {
                transitions::fail(connection, names, tally, id, token, &error, outcome, now)
            }),
            Command::Release { id, token, reply } => {
                writer.settle_one_statement(reply, |connection, names, tally| {
                    transitions::release(connection, names, tally, id, token)
                })
            }
            Command::Cancel { id, now, reply } => writer
                .settle_one_statement(reply, |connection, names, tally| {
                    transitions::cancel(connection, names, tally, id, now)
                }),
            Command::Reschedule {
                id,
                run_at,
                now,
                reply,
            } => writer.settle_one_statement(reply, |connection, names, tally| {
                transitions::reschedule(connection, names, tally, id, run_at, now)
            }),
            Command::Lead {
                node,
                term,
                lease,
                now,
                reply,
            } => writer.settle_one_statement(reply, |connection, _, _| {
                transitions::lead(connection, &node, term, lease, now)
            }),
            Command::Resign { node, term, reply } => writer
                .settle_one_statement(reply, |connection, _, _| {
                    transitions::resign(connection, &node, term)
                }),
            Command::RescueExpired {
                term,
                now,
                limit,
                reply,
            } => writer.settle(reply, |connection, names, tally| {
                transitions::rescue_expired(connection, names, tally, term, now, limit)
            }),
            Command::PurgeFinished {
                term,
                finished_before,
                limit,
                now,
                reply,
            } => writer.settle(reply, |connection, names, tally| {
                transitions::purge_finished(
                    connection,
                    names,
                    tally,
                    term,
                    finished_before,
                    limit,
                    now,
                )
            }),
            Command::InsertIdempotent {
                jobs,
                record,
                now,
                reply,
            } => writer.settle(reply, |connection, _, tally| {
                transitions::insert_idempotent(connection, tally, jobs, &record, now)
            }),
            Command::PurgeIdempotency {
                term,
                now,
                limit,
                reply,
            } => writer.settle_one_statement(reply, |connection, _, _| {
                transitions::purge_idempotency(connection, term, now, limit)
            }),
            Command::InsertToken { token, reply } => writer
                .settle_one_statement(reply, |connection, _, _| {
                    transitions::insert_token(connection, &token)
                }),
            Command::RevokeToken { id, now, reply } => writer
                .settle_one_statement(reply, |connection, _, _| {
                    transitions::revoke_token(connection, &id, now)
                }),
            Command::WriteSchedules {
                fence,
                writes,
                now,
                reply,
            } => writer.settle(reply, |connection, names, tally| {
                schedules::write(connection, names, tally, fence, writes, now)
            }),
            Command::DeleteSchedule { id, reply } => {
                writer.settle(reply, |connection, _, _| schedules::delete(connection, id))
            }
            Command::PurgeOccurrences {
                term,
                recorded_before,
                limit,
                now,
                reply,
            } => writer.settle_one_statement(reply, |connection, _, _| {
                schedules::purge(connection, term, recorded_before, limit, now)
            }),
            #[cfg(feature = "fault-injection")]
            Command::Crash { reply: _ } => {
                panic!("the writer thread was made to panic (fault injection)")
            }
        }
    }

    /// Whether the command stores something new (a job, a token), which a full disk refuses;
    /// every other write moves what is already stored.
    fn adds_data(&self) -> bool {
        matches!(
            self,
            Command::Insert { .. }
                | Command::InsertIdempotent { .. }
                | Command::InsertToken { .. }
                | Command::WriteSchedules { .. }
        )
    }

    /// Answers the command `Unavailable` without running it.
    fn refuse(self, reason: &str) {
        match self {
            Command::Insert { reply, .. } => refuse(reply, reason),
            Command::Claim { reply, .. } => refuse(reply, reason),
            Command::ExtendLease { reply, .. } => refuse(reply, reason),
            Command::Complete { reply, .. } => refuse(reply, reason),
            Command::Fail { reply, .. } => refuse(reply, reason),
            Command::Release { reply, .. } => refuse(reply, reason),
            Command::Cancel { reply, .. } => refuse(reply, reason),
            Command::Reschedule { reply, .. } => refuse(reply, reason),
            Command::Lead { reply, .. } => refuse(reply, reason),
            Command::Resign { reply, .. } => refuse(reply, reason),
            Command::RescueExpired { reply, .. } => refuse(reply, reason),
            Command::PurgeFinished { reply, .. } => refuse(reply, reason),
            Command::InsertIdempotent { reply, .. } => refuse(reply, reason),
            Command::PurgeIdempotency { reply, .. } => refuse(reply, reason),
            Command::InsertToken { reply, .. } => refuse(reply, reason),
            Command::RevokeToken { reply, .. } => refuse(reply, reason),
            Command::WriteSchedules { reply, .. } => refuse(reply, reason),
            Command::DeleteSchedule { reply, .. } => refuse(reply, reason),
            Command::PurgeOccurrences { reply, .. } => refuse(reply, reason),
            #[cfg(feature = "fault-injection")]
            Command::Crash { reply } => refuse(reply, reason),
        }
    }
}
