//! Every limit punctual enforces, in one place (TigerBeetle's "put a limit on everything").
//!
//! Inputs beyond these are refused with a `ValidationError`; internal batches never exceed them.

use std::time::Duration;

/// Longest queue or kind name, in bytes.
pub const NAME_BYTES_MAX: usize = 128;
/// Largest payload, in bytes of JSON text.
pub const PAYLOAD_BYTES_MAX: usize = 256 * 1024;
/// Largest error message kept on a job; longer ones are truncated, not refused.
pub const ERROR_BYTES_MAX: usize = 4 * 1024;
/// Most attempts a job may be given.
pub const ATTEMPT_MAX_LIMIT: u32 = 1_000;
/// Longest cron expression, in bytes.
pub const CRON_BYTES_MAX: usize = 256;
/// Shortest interval of a recurring job.
pub const INTERVAL_MIN: Duration = Duration::from_secs(1);
/// Longest interval of a recurring job (about ten years).
pub const INTERVAL_MAX: Duration = Duration::from_secs(10 * 366 * 24 * 3600);
/// How far in the past a `run_at` may lie (a clock a little behind, a replayed request).
pub const RUN_AT_PAST_MAX: Duration = Duration::from_secs(366 * 24 * 3600);
/// How far in the future a `run_at` may lie.
pub const RUN_AT_FUTURE_MAX: Duration = Duration::from_secs(100 * 366 * 24 * 3600);
/// Most jobs in one insert batch.
pub const INSERT_BATCH_MAX: usize = 10_000;
/// Most jobs handed out by one claim.
pub const CLAIM_BATCH_MAX: usize = 10_000;
/// Most kinds a claim (or `next_due`) may be limited to; a longer list is refused, not cut,
/// since cutting it would silently leave jobs of the dropped kinds unclaimed.
pub const CLAIM_KINDS_MAX: usize = 1_000;
/// Most jobs in one page of a listing.
pub const PAGE_SIZE_MAX: usize = 1_000;
/// Shortest and longest lease a claim may ask for.
pub const LEASE_MIN: Duration = Duration::from_millis(100);
pub const LEASE_MAX: Duration = Duration::from_secs(24 * 3600);

/// A requested lease, clamped into `LEASE_MIN ..= LEASE_MAX`: the lease every store grants for
/// a claim, a renewal or a leadership. Clamped rather than refused: a clamp is always safe.
pub fn clamp_lease(lease: Duration) -> Duration {
    lease.clamp(LEASE_MIN, LEASE_MAX)
}
/// Longest node (lease holder) name, in bytes.
pub const NODE_BYTES_MAX: usize = 128;
/// Longest API token id (the public half of a token), in bytes.
pub const TOKEN_ID_BYTES_MAX: usize = 64;
/// Longest label of an API token, in bytes.
pub const TOKEN_LABEL_BYTES_MAX: usize = 128;
/// Most scopes one API token may hold.
pub const TOKEN_SCOPES_MAX: usize = 16;
/// Longest scope name, in bytes.
pub const TOKEN_SCOPE_BYTES_MAX: usize = 32;
/// Longest idempotency key (the client's key with the caller's scope in front), in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 384;
/// Longest request fingerprint kept with an idempotency key, in bytes.
pub const FINGERPRINT_BYTES_MAX: usize = 128;
/// Largest response kept with an idempotency key for replays, in bytes.
pub const IDEMPOTENCY_RESPONSE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Longest an idempotency key may be kept before it expires.
pub const IDEMPOTENCY_TTL_MAX: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most queues `Store::queue_stats` reports.
pub const QUEUES_LISTED_MAX: usize = 1_000;
/// `QueueStats::due` counts due jobs up to this many per queue, so a backlog costs a bounded walk.
pub const DUE_COUNT_MAX: u64 = 10_000;
/// Longest delay a failed attempt may ask for before its retry (`FailDirective::After`).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(24 * 3600);

/// Longest jitter of a schedule's occurrences.
pub const SCHEDULE_JITTER_MAX: Duration = Duration::from_secs(24 * 3600);
/// Longest misfire grace and catch-up window of a schedule.
pub const CATCH_UP_WINDOW_MAX: Duration = Duration::from_secs(366 * 24 * 3600);
/// Most missed occurrences a schedule's `all` misfire policy fires at once.
pub const CATCH_UP_LIMIT_MAX: u32 = 1_000;
/// Most events of a recurrence one plan of a schedule walks through before it yields (a
/// schedule every second, paused for a week, catches up over several looks).
pub const SCHEDULE_PLAN_STEPS_MAX: usize = 1_000;
/// Most events one plan walks through while they are missed (or past the catch-up window), so
/// that an outage's missed occurrences meet the misfire policy together: a schedule every
/// second, down for a day, is decided in one look. Beyond it the plan decides what it met as
/// if the missed occurrences ended there, and goes on at the next look.
pub const SCHEDULE_CATCH_UP_STEPS_MAX: usize = 100_000;
/// Most jobs (and most ledger entries) one schedule write holds.
pub const SCHEDULE_WRITE_ROWS_MAX: usize = 2 * SCHEDULE_PLAN_STEPS_MAX;
/// Most rows (jobs and ledger entries) all the schedule writes of one store call hold.
pub const SCHEDULE_CALL_ROWS_MAX: usize = 20_000;
/// Most schedule writes in one store call, and most schedules one look at the due ones reads.
pub const SCHEDULE_BATCH_MAX: usize = 1_000;
/// Most schedules a deployment may hold.
pub const SCHEDULES_MAX: usize = 1_000_000;
