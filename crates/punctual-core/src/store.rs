//! The Store seam (the brief's filing cabinet): the one trait every backend implements.
//!
//! How the brief's operations map here: `addJob` is `insert`; `getDueJobs` is `claim` (find the
//! due jobs and take them under a lease in one atomic step, so two workers never get the same
//! job) and `next_due`; `updateJobStatus` is `complete`, `fail`, `release`, `cancel` and
//! `reschedule`, each a legal transition of `JobState`; `removeJob` is `cancel` (for a job that
//! has not finished) and `purge_finished` (for finished jobs past their retention).
//!
//! Leader duties. Work one node should do at a time (`rescue_expired`, `purge_finished`) is done
//! by a leader elected through the store: `lead` grants a node leadership for a while under a
//! `LeaderTerm`, and those two methods are fenced by that term: a node that lost leadership (its
//! lease ran out, another node took over) is refused with `NotLeader` and changes nothing. The
//! check and the work are one atomic step, so a deposed leader's late writes never land after
//! its successor's term began. Several nodes sharing one store therefore need no protocol of
//! their own; a lone node simply always wins.
//!
//! Every method takes `now` from the caller's `Clock`; no store reads the system clock. Every
//! write is durable when the method returns. The conformance suite in `punctual-testkit` is the
//! executable definition of this contract.

use std::time::Duration;

use async_trait::async_trait;

use std::fmt;

use crate::idempotency::{IdempotencyRecord, Idempotent};
use crate::job::ScheduleName;
use crate::job::{Job, JobId, Kind, LeaseToken, NewJob, NodeId, Queue, ValidationError};
use crate::limits;
use crate::recurring::{
    DueSchedule, OccurrenceEntry, ScheduleId, ScheduleKey, ScheduleWrite, StoredSchedule,
    WriteOutcome,
};
use crate::state::JobState;
use crate::time::Timestamp;
use crate::token::{ApiToken, TokenId};

/// Errors a store returns. Backends map their driver errors into these; none leaks a driver type.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The caller's lease token is not the job's current one: its lease expired and the job was
    /// rescued, cancelled, or claimed again. Nothing was changed.
    #[error("lease lost on job {id}: token {token} is no longer current")]
    LeaseLost { id: JobId, token: LeaseToken },
    /// The job is in a state where this operation does not apply. Nothing was changed.
    #[error("job {id} is {state}; cannot {operation}")]
    Conflict {
        id: JobId,
        state: JobState,
        operation: &'static str,
    },
    /// The caller's leader term is not the store's current, unexpired one: another node leads
    /// now, or the lease of this term ran out. Nothing was changed.
    #[error("not the leader: term {term} is no longer current")]
    NotLeader { term: LeaderTerm },
    #[error("a job with id {0} already exists")]
    Duplicate(JobId),
    #[error("API token {0} not found")]
    TokenNotFound(TokenId),
    #[error("an API token with id {0} already exists")]
    TokenExists(TokenId),
    #[error("invalid request: {0}")]
    Invalid(#[from] ValidationError),
    /// A transient failure (I/O, connection, busy database); the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The stored data or schema is not what this version understands.
    #[error("store corrupt or incompatible: {0}")]
    Corrupt(String),
}

/// What `claim` takes: who claims, how many, which queues and kinds, how far ahead, and for
/// how long.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    pub holder: NodeId,
    /// Serve only these queues; `None` serves every queue.
    pub queues: Option<Vec<Queue>>,
    /// Claim only jobs of these kinds; `None` claims any kind. A node passes the kinds it has
    /// handlers for, so jobs of other kinds stay pending for a node that can run them. An empty
    /// list claims nothing (as an empty `queues` does). At most `limits::CLAIM_KINDS_MAX`
    /// entries (see `check_kinds`); a longer list is refused with `Invalid`.
    pub kinds: Option<Vec<Kind>>,
    /// At most this many jobs (capped at `limits::CLAIM_BATCH_MAX`).
    pub limit: usize,
    /// Claim jobs whose `run_at` is at or before this instant. The engine passes a little past
    /// `now`, so a handler can start exactly at its `run_at`.
    pub due_by: Timestamp,
    /// The lease lasts this long past `max(now, run_at)`.
    pub lease: Duration,
}

impl ClaimRequest {
    /// How many jobs a store hands out for this request: `limit`, capped at
    /// `limits::CLAIM_BATCH_MAX`.
    pub fn bounded_limit(&self) -> usize {
        self.limit.min(limits::CLAIM_BATCH_MAX)
    }

    /// The lease a store grants for this request (`limits::clamp_lease`).
    pub fn bounded_lease(&self) -> Duration {
        limits::clamp_lease(self.lease)
    }
}

/// Checks a kinds filter (of `ClaimRequest::kinds` or `Store::next_due`): at most
/// `limits::CLAIM_KINDS_MAX` entries. Refused rather than cut, because a cut list would leave
/// jobs of the dropped kinds pending with nothing to say why.
pub fn check_kinds(kinds: Option<&[Kind]>) -> Result<(), ValidationError> {
    match kinds {
        Some(kinds) if kinds.len() > limits::CLAIM_KINDS_MAX => Err(ValidationError::TooLong {
            field: "kinds",
            bytes: kinds.len(),
            limit: limits::CLAIM_KINDS_MAX,
        }),
        _ => Ok(()),
    }
}

/// Checks a batch of schedule writes before any is applied (`ScheduleWrite::validate`, the
/// batch's size): every store calls it, and a refused batch changes nothing.
pub fn check_schedule_writes(
    writes: &[ScheduleWrite],
    now: Timestamp,
) -> Result<(), ValidationError> {
    if writes.len() > limits::SCHEDULE_BATCH_MAX {
        return Err(ValidationError::TooMany {
            field: "schedule writes",
            count: writes.len(),
            limit: limits::SCHEDULE_BATCH_MAX,
        });
    }
    let rows: usize = writes.iter().map(ScheduleWrite::rows).sum();
    if rows > limits::SCHEDULE_CALL_ROWS_MAX {
        return Err(ValidationError::TooMany {
            field: "rows of schedule writes",
            count: rows,
            limit: limits::SCHEDULE_CALL_ROWS_MAX,
        });
    }
    writes.iter().try_for_each(|write| write.validate(now))
}

/// A claimed job; its `lease` is present and holds the token to fence later writes.
pub type ClaimedJob = Job;

/// How a failed attempt ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOutcome {
    /// Try again at this instant (state `Retrying`).
    Retry { at: Timestamp },
    /// Give up (state `Dead`); the error is kept.
    Dead,
}

/// A job whose holder's lease expired, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RescueOutcome {
    pub id: JobId,
    pub holder: NodeId,
    pub token: LeaseToken,
    /// `Retrying` (it has attempts left) or `Dead`.
    pub state: JobState,
}

/// What becomes of a job whose lease expired, decided here once so that every store does the
/// same: the crashed attempt counts, so a job with attempts left is `Retrying` after its
/// backoff, and one without is `Dead` (a job that kills its process cannot loop forever). The
/// error names the holder and its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rescue {
    pub fate: RescueFate,
    /// The job's new `last_error`, within `limits::ERROR_BYTES_MAX`.
    pub error: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RescueFate {
    /// Pending again at `run_at`.
    Retry { run_at: Timestamp },
    /// Finished, at `finished_at`.
    Dead { finished_at: Timestamp },
}

impl Rescue {
    /// The fate of a job found at `now` with an expired lease held by `holder` under `token`,
    /// after `attempt` of `attempt_max` attempts under `retry`.
    pub fn decide(
        attempt: u32,
        attempt_max: u32,
        retry: &crate::RetryPolicy,
        holder: &NodeId,
        token: LeaseToken,
        now: Timestamp,
    ) -> Rescue {
        let fate = if attempt < attempt_max {
            RescueFate::Retry {
                run_at: now.add(retry.backoff(attempt)),
            }
        } else {
            RescueFate::Dead { finished_at: now }
        };
        Rescue {
            fate,
            error: crate::truncate_error(&format!(
                "lease expired (holder {holder}, token {token})"
            )),
        }
    }

    /// The state the job is left in: `Retrying` or `Dead`.
    pub fn state(&self) -> JobState {
        match self.fate {
            RescueFate::Retry { .. } => JobState::Retrying,
            RescueFate::Dead { .. } => JobState::Dead,
        }
    }
}

/// One tenure of leadership, numbered: each grant of leadership to a node after it was free or
/// expired takes a term larger than every earlier one, and a renewal keeps it. Leader duties
/// carry it, so the store can refuse those of a deposed leader (`StoreError::NotLeader`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaderTerm(pub u64);

impl fmt::Display for LeaderTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Filters for `list`; each present filter must match.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub queue: Option<Queue>,
    pub state: Option<JobState>,
    pub kind: Option<Kind>,
    /// Only jobs whose `run_at` is at or after this instant.
    pub due_from: Option<Timestamp>,
    /// Only jobs whose `run_at` is before this instant.
    pub due_before: Option<Timestamp>,
}

impl JobFilter {
    /// Whether `job` passes every present filter: the one reading of a filter, which the
    /// reference store applies and the SQL stores must agree with.
    pub fn matches(&self, job: &Job) -> bool {
        self.queue.as_ref().is_none_or(|queue| *queue == job.queue)
            && self.state.is_none_or(|state| state == job.state)
            && self.kind.as_ref().is_none_or(|kind| *kind == job.kind)
            && self.due_from.is_none_or(|from| job.run_at >= from)
            && self.due_before.is_none_or(|before| job.run_at < before)
    }
}

/// Where the next page of a listing starts: after this job id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor(pub JobId);

/// One page of a listing, in ascending id order (ids sort by creation time).
#[derive(Clone, Debug)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Present when more jobs may follow.
    pub next: Option<Cursor>,
}

/// The number of jobs in one queue and state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateCount {
    pub queue: Queue,
    pub state: JobState,
    pub count: u64,
}

/// How many jobs each state holds in one queue, indexed like `JobState::ALL`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts(pub [u64; 6]);

impl StateCounts {
    pub fn get(&self, state: JobState) -> u64 {
        self.0[state_index(state)]
    }

    pub fn add(&mut self, state: JobState, count: u64) {
        self.0[state_index(state)] += count;
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

fn state_index(state: JobState) -> usize {
    JobState::ALL
        .iter()
        .position(|each| *each == state)
        .expect("JobState::ALL lists every state")
}

/// One queue's health, as `Store::queue_stats` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueStats {
    pub queue: Queue,
    pub counts: StateCounts,
    /// Pending jobs due at the `now` asked about (`run_at <= now`), counted up to
    /// `limits::DUE_COUNT_MAX`.
    pub due: u64,
    /// The earliest `run_at` among those due jobs: how far behind the queue is.
    pub oldest_due: Option<Timestamp>,
}

/// Hints that other processes inserted jobs: each is the earliest `run_at` announced since the
/// previous one. A hint may be lost (the engine keeps a bounded poll); it never replaces a claim.
#[async_trait]
pub trait InsertHints: Send + 'static {
    /// Waits for the next hint. Cancel-safe: a hint not yet returned is kept.
    async fn next(&mut self) -> Timestamp;

    /// Waits for the next hint of either kind: a `run_at` as `next` gives, or a running job
    /// cancelled by another process, so that the node running it can tell its handler at once
    /// rather than at its next heartbeat. Cancel-safe. The default knows only `next`'s.
    async fn next_hint(&mut self) -> Hint {
        Hint::Due(self.next().await)
    }
}

/// What another process announced (`InsertHints::next_hint`). A hint: it may be lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hint {
    /// A job was inserted due at this instant.
    Due(Timestamp),
    /// This running job was cancelled.
    Cancelled(JobId),
}

/// The filing cabinet. Used as `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores new jobs, all or none: a duplicate id fails the whole batch with `Duplicate`, a
    /// job that fails `NewJob::validate` at `now` (or a batch over `limits::INSERT_BATCH_MAX`)
    /// with `Invalid`. Durable when it returns.
    async fn insert(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<JobId>, StoreError>;

    /// Atomically takes up to `request.limit` pending jobs due by `request.due_by`, in
    /// `request.queues` and of `request.kinds` (when given), most urgent priority first, then
    /// earliest `run_at`, then id. Each becomes `Running` with a fresh lease token and its
    /// attempt counted. The first claim of a recurring job's occurrence stores its next
    /// occurrence in the same transaction. Nothing due is an empty Vec. A kinds filter that
    /// fails `check_kinds` is `Invalid`.
    async fn claim(
        &self,
        request: ClaimRequest,
        now: Timestamp,
    ) -> Result<Vec<ClaimedJob>, StoreError>;

    /// Moves the lease's expiry to `expires_at`. `LeaseLost` if `token` is not current.
    async fn extend_lease(
        &self,
        id: JobId,
        token: LeaseToken,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Marks the attempt held under `token` succeeded. Idempotent for the holder that completed:
    /// completing a job that already succeeded under this same `token` is `Ok` and changes
    /// nothing (a retried call whose first answer was lost, or a handler that completed inside
    /// its own transaction before the engine's call). Any other token is `LeaseLost`.
    async fn complete(
        &self,
        id: JobId,
        token: LeaseToken,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Records a failed attempt with its error: retry at a time, or dead.
    async fn fail(
        &self,
        id: JobId,
        token: LeaseToken,
        error: &str,
        outcome: FailOutcome,
        now: Timestamp,
    ) -> Result<JobState, StoreError>;

    /// Hands back a claimed job whose handler never started: it is pending again at its
    /// `run_at`, and the attempt counted at claim is taken back.
    async fn release(&self, id: JobId, token: LeaseToken, now: Timestamp)
    -> Result<(), StoreError>;

    /// Cancels a job that has not finished. A running job's lease ends at once, so its holder's
    /// next write gets `LeaseLost`.
    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError>;

    /// Moves a pending job to a new `run_at`, or revives a dead or cancelled one (attempts reset).
    async fn reschedule(
        &self,
        id: JobId,
        run_at: Timestamp,
        now: Timestamp,
    ) -> Result<Job, StoreError>;

    /// One job, or `None`.
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError>;

    /// Jobs matching `filter` after `after`, at most `limit` (capped at `limits::PAGE_SIZE_MAX`).
    async fn list(
        &self,
        filter: JobFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<JobPage, StoreError>;

    /// How many jobs each queue holds in each state (zero counts are left out), in queue then
    /// state order. Answered from counts the store keeps with every write, not by a scan of the
    /// jobs, so it stays cheap with millions of jobs stored.
    async fn counts(&self) -> Result<Vec<StateCount>, StoreError>;

    /// Each queue that holds a job, by name (at most `limits::QUEUES_LISTED_MAX`): its counts by
    /// state (as `counts`), and its due pending jobs at `now`, counted up to
    /// `limits::DUE_COUNT_MAX`, with the earliest `run_at` among them. No scan of the jobs: the
    /// counts are kept with every write and the due jobs are an index range.
    async fn queue_stats(&self, now: Timestamp) -> Result<Vec<QueueStats>, StoreError>;

    /// The earliest `run_at` among pending jobs in `queues` (all queues if `None`) of `kinds`
    /// (any kind if `None`): the filters a claim would use, so a node does not wake for jobs it
    /// would not claim. An empty list matches nothing. `kinds` that fail `check_kinds` are
    /// `Invalid`.
    async fn next_due(
        &self,
        queues: Option<&[Queue]>,
        kinds: Option<&[Kind]>,
    ) -> Result<Option<Timestamp>, StoreError>;

    /// The earliest lease expiry among running jobs, so a rescuer can sleep until then.
    async fn next_lease_expiry(&self) -> Result<Option<Timestamp>, StoreError>;

    /// Makes `node` the leader until `now + lease` (the lease clamped into `limits::LEASE_MIN
    /// ..= limits::LEASE_MAX`, as a claim's is) and returns its term:
    /// - renewal: `node` holds leadership under `term`, unexpired at `now`: the same term, its
    ///   expiry moved;
    /// - election: leadership is free (never taken, resigned) or expired at `now` (its expiry
    ///   is at or before `now`): a new term, one more than the last;
    /// - otherwise `None`: another node leads, or `term` is not the one `node` holds.
    ///
    /// `term` is the term the caller believes it holds (`None` if it believes it leads not). A
    /// node that restarts under the same name thus waits for its old term to expire rather than
    /// share it.
    async fn lead(
        &self,
        node: &NodeId,
        term: Option<LeaderTerm>,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Option<LeaderTerm>, StoreError>;

    /// Gives leadership up if `node` holds it under `term`, so another node can lead at once
    /// (a graceful stop). Otherwise it changes nothing, and is still `Ok`. Terms are never
    /// reused: the next leader's term is larger.
    async fn resign(&self, node: &NodeId, term: LeaderTerm) -> Result<(), StoreError>;

    /// A leader duty: ends up to `limit` leases that expired at or before `now`: each job is
    /// retried (its policy's backoff without jitter) or, with no attempts left, dead. Fenced:
    /// `NotLeader` (and nothing changed) unless `term` is the current term, unexpired at `now`.
    async fn rescue_expired(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<RescueOutcome>, StoreError>;

    /// A leader duty: deletes up to `limit` finished jobs whose `finished_at` is before
    /// `finished_before`. Fenced like `rescue_expired`, judged at `now`.
    async fn purge_finished(
        &self,
        term: LeaderTerm,
        finished_before: Timestamp,
        limit: usize,
        now: Timestamp,
    ) -> Result<u64, StoreError>;

    /// `insert` under an idempotency key, in one atomic step: if a record under `record.key` is
    /// live at `now` (`IdempotencyRecord::is_live`), nothing is inserted and that record is
    /// returned (`Replayed`), whatever its fingerprint: the caller judges a mismatch. Otherwise
    /// the jobs are inserted exactly as `insert` would (with its errors, and then no record is
    /// kept) and `record` is kept with them, replacing an expired record under the key
    /// (`Inserted`). A record that fails `IdempotencyRecord::validate` is `Invalid`.
    async fn insert_idempotent(
        &self,
        jobs: Vec<NewJob>,
        record: IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Idempotent, StoreError>;

    /// A leader duty: deletes up to `limit` idempotency records expired at `now` (the earliest
    /// expiry first). Fenced like `rescue_expired`.
    async fn purge_idempotency(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError>;

    /// Stores a new API token. `TokenExists` if its id is taken; `Invalid` if
    /// `ApiToken::validate` refuses it.
    async fn insert_token(&self, token: ApiToken) -> Result<(), StoreError>;

    /// One API token (revoked or not), or `None`.
    async fn get_token(&self, id: &TokenId) -> Result<Option<ApiToken>, StoreError>;

    /// API tokens in id order after `after`, revoked ones included, at most `limit` (capped at
    /// `limits::PAGE_SIZE_MAX`).
    async fn list_tokens(
        &self,
        after: Option<&TokenId>,
        limit: usize,
    ) -> Result<Vec<ApiToken>, StoreError>;

    /// Revokes a token at `now` and returns it. Revoking a revoked token changes nothing (it
    /// keeps its first `revoked_at`) and is `Ok`. `TokenNotFound` if there is none.
    async fn revoke_token(&self, id: &TokenId, now: Timestamp) -> Result<ApiToken, StoreError>;

    /// Applies each write in order, all in one transaction (an empty batch is `Ok` and checks
    /// nothing, not even the fence): a write applies only if the
    /// stored schedule still has its `expected_version` (for a create, `None`: only if no
    /// schedule has its id or name), and then its schedule row, jobs, ledger entries (seq
    /// assigned by the store, increasing) and cancel land together; otherwise, or if one of its
    /// jobs' ids is taken, nothing of that write lands and it is `Stale`. Other writes of the
    /// batch are not affected. A write that fails `ScheduleWrite::validate` at `now`, or more
    /// than `limits::SCHEDULE_BATCH_MAX` writes, is `Invalid` and nothing is written. With a
    /// `fence`, a leader duty: `NotLeader` (and nothing changed) unless it is the current term,
    /// unexpired at `now`. The cancel ends the named job as `cancel` would if it has not
    /// finished, and is ignored if it has.
    async fn write_schedules(
        &self,
        fence: Option<LeaderTerm>,
        writes: Vec<ScheduleWrite>,
        now: Timestamp,
    ) -> Result<Vec<WriteOutcome>, StoreError>;

    /// One schedule, by id or name, or `None`.
    async fn get_schedule(&self, key: &ScheduleKey) -> Result<Option<StoredSchedule>, StoreError>;

    /// Schedules in name order after `after`, at most `limit` (capped at
    /// `limits::PAGE_SIZE_MAX`).
    async fn list_schedules(
        &self,
        after: Option<&ScheduleName>,
        limit: usize,
    ) -> Result<Vec<StoredSchedule>, StoreError>;

    /// Deletes a schedule and its ledger; its jobs stay. `false` if there was none.
    async fn delete_schedule(&self, id: ScheduleId) -> Result<bool, StoreError>;

    /// Schedules whose `cursor.next_check` is at or before `check_by`, earliest first (then by
    /// id), at most
    /// `limit` (capped at `limits::SCHEDULE_BATCH_MAX`), each with the state of its last job
    /// and its latest ledger entry.
    async fn due_schedules(
        &self,
        check_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<DueSchedule>, StoreError>;

    /// A schedule's ledger, newest first, entries with `seq` below `before` (all if `None`),
    /// at most `limit` (capped at `limits::PAGE_SIZE_MAX`).
    async fn list_occurrences(
        &self,
        id: ScheduleId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<OccurrenceEntry>, StoreError>;

    /// A leader duty: deletes up to `limit` ledger entries recorded before `recorded_before`,
    /// the oldest first (then by seq). An entry is recorded when it is appended (its
    /// `recorded_at`) and again whenever a `LedgerExtend` grows it (the write's `now`), so a run
    /// of skips still growing is kept. Fenced like `rescue_expired`, judged at `now`.
    async fn purge_occurrences(
        &self,
        term: LeaderTerm,
        recorded_before: Timestamp,
        limit: usize,
        now: Timestamp,
    ) -> Result<u64, StoreError>;

    /// A failure this store cannot recover from while the process lives (SQLite's writer
    /// thread died), with what is known of it; `None` (the default) while the store can still
    /// answer, even if it is unreachable for now. A node whose store reports one is not ready
    /// and not healthy: it must be restarted. Cheap: no I/O.
    fn fatal_error(&self) -> Option<String> {
        None
    }

    /// Hints of jobs inserted by other processes, for a store that several processes share
    /// (PostgreSQL's LISTEN/NOTIFY). `None` (the default) when the store has no such channel:
    /// an embedded store's writers are in-process and wake the engine directly.
    async fn listen(&self) -> Result<Option<Box<dyn InsertHints>>, StoreError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kinds_filter_is_capped_not_cut() {
        let kind = Kind::new("k").expect("valid");
        let most = vec![kind.clone(); limits::CLAIM_KINDS_MAX];
        assert!(check_kinds(None).is_ok());
        assert!(check_kinds(Some(&[])).is_ok());
        assert!(check_kinds(Some(&most)).is_ok());
        let too_many = vec![kind; limits::CLAIM_KINDS_MAX + 1];
        assert!(matches!(
            check_kinds(Some(&too_many)),
            Err(ValidationError::TooLong {
                field: "kinds",
                bytes,
                limit: limits::CLAIM_KINDS_MAX,
            }) if bytes == limits::CLAIM_KINDS_MAX + 1
        ));
    }
}

#[cfg(test)]
mod rescue_tests {
    use super::*;
    use crate::RetryPolicy;

    #[test]
    fn a_rescued_job_retries_while_it_has_attempts_and_is_dead_after_the_last() {
        let retry = RetryPolicy::default();
        let holder = NodeId::new("node-a").expect("a valid node name");
        let now = Timestamp::from_micros(1_000_000);
        let rescue = Rescue::decide(1, 3, &retry, &holder, LeaseToken(7), now);
        assert_eq!(rescue.state(), JobState::Retrying);
        assert_eq!(
            rescue.fate,
            RescueFate::Retry {
                run_at: now.add(retry.backoff(1))
            }
        );
        assert_eq!(rescue.error, "lease expired (holder node-a, token 7)");
        // The crashed attempt counts: after the last one the job is dead, not run again.
        let last = Rescue::decide(3, 3, &retry, &holder, LeaseToken(9), now);
        assert_eq!(last.fate, RescueFate::Dead { finished_at: now });
        assert_eq!(last.state(), JobState::Dead);
    }

    #[test]
    fn a_claim_is_bounded_whatever_it_asks_for() {
        let request = |limit, lease| ClaimRequest {
            holder: NodeId::new("n").expect("a valid node name"),
            queues: None,
            kinds: None,
            limit,
            due_by: Timestamp::from_micros(0),
            lease,
        };
        let huge = request(usize::MAX, Duration::from_secs(u64::MAX / 4));
        assert_eq!(huge.bounded_limit(), limits::CLAIM_BATCH_MAX);
        assert_eq!(huge.bounded_lease(), limits::LEASE_MAX);
        let tiny = request(3, Duration::ZERO);
        assert_eq!(tiny.bounded_limit(), 3);
        assert_eq!(tiny.bounded_lease(), limits::LEASE_MIN);
    }
}

/// Implements the schedule methods of `Store` by handing each to `$inner` (an expression of a
/// type that implements `Store`, evaluated in each method; `?` may end it), for a wrapper that
/// changes nothing about schedules. Invoke it inside an `#[async_trait] impl Store`: it writes
/// the methods in the form `async_trait` gives them, since that attribute cannot see into a
/// macro's output.
#[macro_export]
macro_rules! delegate_schedule_methods {
    ($this:ident => $inner:expr) => {
        $crate::delegate_schedule_methods!(@method $this, $inner, write_schedules(
            fence: Option<$crate::LeaderTerm>,
            writes: Vec<$crate::ScheduleWrite>,
            now: $crate::Timestamp
        ) -> Vec<$crate::WriteOutcome>);
        fn get_schedule<'life0, 'life1, 'async_trait>(
            &'life0 self,
            key: &'life1 $crate::ScheduleKey,
        ) -> ::core::pin::Pin<Box<dyn ::core::future::Future<
            Output = Result<Option<$crate::StoredSchedule>, $crate::StoreError>,
        > + ::core::marker::Send + 'async_trait>>
        where
            'life0: 'async_trait,
            'life1: 'async_trait,
            Self: 'async_trait,
        {
            let $this = self;
            Box::pin(async move { $inner.get_schedule(key).await })
        }
        fn list_schedules<'life0, 'life1, 'async_trait>(
            &'life0 self,
            after: Option<&'life1 $crate::ScheduleName>,
            limit: usize,
        ) -> ::core::pin::Pin<Box<dyn ::core::future::Future<
            Output = Result<Vec<$crate::StoredSchedule>, $crate::StoreError>,
        > + ::core::marker::Send + 'async_trait>>
        where
            'life0: 'async_trait,
            'life1: 'async_trait,
            Self: 'async_trait,
        {
            let $this = self;
            Box::pin(async move { $inner.list_schedules(after, limit).await })
        }
        $crate::delegate_schedule_methods!(@method $this, $inner, delete_schedule(
            id: $crate::ScheduleId
        ) -> bool);
        $crate::delegate_schedule_methods!(@method $this, $inner, due_schedules(
            check_by: $crate::Timestamp,
            limit: usize
        ) -> Vec<$crate::DueSchedule>);
        $crate::delegate_schedule_methods!(@method $this, $inner, list_occurrences(
            id: $crate::ScheduleId,
            before: Option<u64>,
            limit: usize
        ) -> Vec<$crate::OccurrenceEntry>);
        $crate::delegate_schedule_methods!(@method $this, $inner, purge_occurrences(
            term: $crate::LeaderTerm,
            recorded_before: $crate::Timestamp,
            limit: usize,
            now: $crate::Timestamp
        ) -> u64);
    };
    (@method $this:ident, $inner:expr, $name:ident($($arg:ident: $type:ty),*) -> $output:ty) => {
        fn $name<'life0, 'async_trait>(
            &'life0 self,
            $($arg: $type),*
        ) -> ::core::pin::Pin<Box<dyn ::core::future::Future<
            Output = Result<$output, $crate::StoreError>,
        > + ::core::marker::Send + 'async_trait>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            let $this = self;
            Box::pin(async move { $inner.$name($($arg),*).await })
        }
    };
}
