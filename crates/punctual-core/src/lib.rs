//! punctual's core: the job model, schedules, retry policy, limits, the injected clock, and the
//! `Store` trait every backend implements.
//!
//! This crate does no I/O and knows no async runtime: it is plain data and pure functions, so the
//! stores and the engine agree on one definition of every rule (which state follows which, when
//! the next occurrence of a cron schedule falls, how long a retry waits).

mod idempotency;
mod job;
pub mod limits;
pub mod recurring;
mod retry;
mod schedule;
mod state;
mod store;
mod time;
mod token;

pub use idempotency::{IdempotencyKey, IdempotencyRecord, Idempotent};
pub use job::{
    Job, JobId, JobOptions, Kind, Lease, LeaseToken, NewJob, NodeId, Payload, Priority, Queue,
    ScheduleName, ValidationError, check_run_at, truncate_error,
};
pub use recurring::{
    DueSchedule, JobTemplate, LedgerExtend, Misfire, MisfireAction, OccurrenceEntry,
    OccurrenceOutcome, OverlapPolicy, ScheduleCursor, ScheduleDefinition, ScheduleId, ScheduleKey,
    ScheduleStatus, ScheduleWrite, SkipReason, StoredSchedule, WriteOutcome,
};
pub use retry::{FailDirective, RetryPolicy};
pub use schedule::{Firing, Schedule, SkippedSpan, Step, Walk, WalkEnd, tzdb_version};
pub use state::JobState;
pub use store::{
    ClaimRequest, ClaimedJob, Cursor, FailOutcome, Hint, InsertHints, JobFilter, JobPage,
    LeaderTerm, QueueStats, Rescue, RescueFate, RescueOutcome, StateCount, StateCounts, Store,
    StoreError, check_kinds, check_schedule_writes,
};
pub use time::{Clock, SystemClock, Timestamp};
pub use token::{ApiToken, TokenId};
