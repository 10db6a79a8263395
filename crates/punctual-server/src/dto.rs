//! The JSON wire format: every request and response body of the API, with their OpenAPI schemas.
//!
//! The core types carry no serde derives; these are the one definition of how a job (and a
//! schedule, its ledger and an explanation of it) looks on the wire, used by the server's
//! handlers, the OpenAPI document and the `punctual` CLI (which prints and parses the same
//! shapes). Times are RFC 3339 text, durations carry `_ms`.
//! Request bodies refuse unknown fields, so a misspelt option is an error, not a silent default.
//!
//! Must not validate values beyond their JSON types: that is `api::jobs`, `api::schedules` and
//! punctual-core.

use std::collections::BTreeMap;

use punctual_core::recurring::explain;
use punctual_core::{
    ApiToken, Job, JobState, Misfire, MisfireAction, OccurrenceEntry, OccurrenceOutcome,
    QueueStats, Schedule, StoredSchedule, Timestamp, WalkEnd,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::webhook::target::{Envelope, WEBHOOK_KIND};

// ---------------------------------------------------------------- jobs: requests

/// A job to create. Its target is exactly one of `kind` (for remote workers, who claim jobs by
/// kind) and `webhook`. Its time is at most one of `run_at`, `delay_ms` and `schedule`; with
/// none it is due now.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// The kind remote workers claim the job by (letters, digits and `. _ - : /`; names
    /// starting `punctual.` are reserved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9._:/-]+$", min_length = 1, max_length = 128)]
    pub kind: Option<String>,
    /// Send the payload to this HTTP endpoint at `run_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
    /// The job's data: any JSON value (default `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Value)]
    pub payload: Option<Box<RawValue>>,
    /// Run once at this instant (RFC 3339, like `2026-12-24T09:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub run_at: Option<String>,
    /// Run once this many milliseconds from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 3_162_240_000_000u64)]
    pub delay_ms: Option<u64>,
    /// Run at every occurrence of this schedule; each occurrence is its own job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,
    /// The queue (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9._:/-]+$", min_length = 1, max_length = 128)]
    pub queue: Option<String>,
    /// 0 is the most urgent, 9 the least (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<u8>,
    /// How many attempts the job may have, 1 to 1000 (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub attempt_max: Option<u32>,
    /// How long to wait between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffSpec>,
    /// Use this id (a UUID) instead of a new one; creating a second job with it is a conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = "uuid")]
    pub id: Option<String>,
}

/// An HTTP endpoint to send a job's payload to.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// An `http` or `https` URL. Loopback, private, link-local and metadata addresses are
    /// refused unless the operator allows them.
    #[schema(format = "uri", max_length = 2048)]
    pub url: String,
    /// `POST` (default), `PUT` or `PATCH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^(POST|PUT|PATCH|post|put|patch)$")]
    pub method: Option<String>,
    /// Extra request headers (at most 32; punctual's own and the connection's are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// How long to wait for the answer, 100 to 300,000 ms (default 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 100, maximum = 300_000)]
    pub timeout_ms: Option<u64>,
}

/// A recurrence: `cron` (5 fields, or 6 with seconds first, or a macro like `@hourly`) in
/// `time_zone`, or `interval_ms`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub cron: Option<String>,
    /// An IANA time zone such as `Europe/Berlin` (default `UTC`); only with `cron`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1000)]
    pub interval_ms: Option<u64>,
}

/// Exponential backoff between attempts: `base_ms * 2^(attempt - 1)`, capped at `max_ms`, less
/// up to `jitter_percent` at random. Omitted fields keep their defaults (1 s, 1 h, 20 %).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub base_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 2_592_000_000u64)]
    pub max_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 100)]
    pub jitter_percent: Option<u8>,
}

/// Several jobs to create, all or none.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobs {
    #[schema(min_items = 1, max_items = 1000)]
    pub jobs: Vec<CreateJob>,
}

/// A new time for a pending job: `run_at` or `delay_ms` (one of them).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reschedule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub run_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 3_162_240_000_000u64)]
    pub delay_ms: Option<u64>,
}

/// Which dead jobs to retry. Every given filter must match.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Redrive {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9._:/-]+$", min_length = 1, max_length = 128)]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9._:/-]+$", min_length = 1, max_length = 128)]
    pub kind: Option<String>,
    /// Only jobs of this kind of target: `webhook` or `worker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^(webhook|worker)$")]
    pub target: Option<String>,
    /// Retry at most this many (default and limit 10,000); `more` in the answer says whether
    /// matching dead jobs remain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10_000)]
    pub limit: Option<u32>,
}

// ---------------------------------------------------------------- jobs: responses

/// A stored job.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: String,
    pub queue: String,
    /// The remote workers' kind; absent for a webhook job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The webhook target; absent for a remote workers' job. Values of headers that usually
    /// carry credentials show as `***`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
    #[schema(value_type = Value)]
    pub payload: Box<RawValue>,
    /// `scheduled`, `running`, `retrying`, `succeeded`, `dead` or `cancelled`.
    pub state: String,
    /// When the job (or its next attempt) is due.
    pub run_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,
    /// Attempts begun so far.
    pub attempt: u32,
    pub attempt_max: u32,
    pub priority: u8,
    pub backoff: BackoffView,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The latest lease token issued for the job (0 if never claimed).
    pub lease_token: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseView>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BackoffView {
    pub base_ms: u64,
    pub max_ms: u64,
    pub jitter_percent: u8,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LeaseView {
    pub holder: String,
    pub token: u64,
    pub expires_at: String,
}

/// One page of jobs, in creation order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// What a batch creation stored, in the order given.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedJobs {
    pub jobs: Vec<JobSummary>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobSummary {
    pub id: String,
    pub queue: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub state: String,
    pub run_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RedriveResult {
    /// How many dead jobs were made pending again, due now.
    pub redriven: u64,
    /// Whether matching dead jobs remain (past `limit`).
    pub more: bool,
}

// ---------------------------------------------------------------- queues

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueView {
    pub queue: String,
    pub counts: StateCountsView,
    /// Pending jobs due now and not started (counted up to 10,000).
    pub due: u64,
    /// The `run_at` of the oldest of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_due_at: Option<String>,
    /// How long the oldest of them has been due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_due_age_ms: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct StateCountsView {
    pub scheduled: u64,
    pub running: u64,
    pub retrying: u64,
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
}

// ---------------------------------------------------------------- remote workers

/// A remote worker asks for due jobs of its kinds.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimJobs {
    /// The worker's name, recorded as the lease holder (letters, digits and `. _ -`).
    #[schema(pattern = r"^[A-Za-z0-9._:/-]+$", min_length = 1, max_length = 128)]
    pub worker: String,
    /// The kinds this worker runs (1 to 100).
    #[schema(min_items = 1, max_items = 100)]
    pub kinds: Vec<String>,
    /// Only these queues (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 100)]
    pub queues: Option<Vec<String>>,
    /// At most this many jobs, 1 to 1,000 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// How long the worker holds each job before it may be given to another, 1,000 to
    /// 3,600,000 ms (default 30,000). Extend it while working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1000, maximum = 3_600_000)]
    pub lease_ms: Option<u64>,
    /// When nothing is due, wait up to this long for a job to fall due, 0 to 30,000 ms
    /// (default 0: answer at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 30_000)]
    pub wait_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimedJobs {
    pub jobs: Vec<ClaimedJobView>,
}

/// A job handed to a remote worker, with the lease token every later call must carry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimedJobView {
    pub id: String,
    pub kind: String,
    pub queue: String,
    #[schema(value_type = Value)]
    pub payload: Box<RawValue>,
    pub attempt: u32,
    pub attempt_max: u32,
    /// Fences this attempt: a call with an older token is refused (`lease_lost`).
    pub lease_token: u64,
    pub lease_expires_at: String,
    pub run_at: String,
}

/// The lease of one claimed job.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRef {
    #[schema(format = "uuid")]
    pub id: String,
    pub lease_token: u64,
}

/// Extends the leases of jobs the worker holds to `lease_ms` from now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendLeases {
    #[schema(min_items = 1, max_items = 1000)]
    pub leases: Vec<LeaseRef>,
    /// 1,000 to 3,600,000 ms (default 30,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1000, maximum = 3_600_000)]
    pub lease_ms: Option<u64>,
}

/// Marks attempts the worker holds as succeeded.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteJobs {
    #[schema(min_items = 1, max_items = 1000)]
    pub jobs: Vec<LeaseRef>,
}

/// Marks attempts the worker holds as failed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailJobs {
    #[schema(min_items = 1, max_items = 1000)]
    pub jobs: Vec<FailedAttempt>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailedAttempt {
    #[schema(format = "uuid")]
    pub id: String,
    pub lease_token: u64,
    /// What went wrong (kept on the job, truncated to 4 KiB).
    pub error: String,
    /// Retry no sooner than this (instead of the job's backoff), at most a day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86_400_000)]
    pub retry_after_ms: Option<u64>,
    /// Do not retry: the job is dead at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permanent: Option<bool>,
}

/// The outcome of each item of a batch, in the order given.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchOutcome {
    pub results: Vec<ItemOutcome>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ItemOutcome {
    pub id: String,
    /// Whether this item was applied.
    pub ok: bool,
    /// The job's state afterwards (when applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The lease's new expiry (extensions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<String>,
    /// Why it was not applied (nothing was changed for this item).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::Problem>,
}

/// The lease token of a single-job worker call.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeldLease {
    pub lease_token: u64,
    /// For an extension: 1,000 to 3,600,000 ms (default 30,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1000, maximum = 3_600_000)]
    pub lease_ms: Option<u64>,
}

/// A single failed attempt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailOne {
    pub lease_token: u64,
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86_400_000)]
    pub retry_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permanent: Option<bool>,
}

// ---------------------------------------------------------------- tokens

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What the token is for, for people.
    #[schema(min_length = 1, max_length = 128)]
    pub label: String,
    /// Any of `read`, `write`, `worker`, `admin`.
    #[schema(min_items = 1, max_items = 4)]
    pub scopes: Vec<String>,
    /// The token stops working this long after creation (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 316_224_000_000u64)]
    pub expires_in_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub label: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// A new token. `token` is shown this once; the server keeps only its digest.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub record: TokenView,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------- health

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` (with `detail`).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub version: String,
    /// The IANA time zone database that cron schedules are computed with (such as `2025b`).
    pub tzdb_version: String,
    pub node: String,
}

// ---------------------------------------------------------------- schedules: requests

/// A schedule to create (`POST /v1/schedules`), or to create or replace by name (`PUT
/// /v1/schedules/{key}`). When: `cron` in `time_zone`, or `interval_ms`, between `start_at`
/// and `end_at`, each job up to `jitter_ms` after its occurrence. What: the job each
/// occurrence makes, as `POST /v1/jobs` takes it (`kind` or `webhook`, `payload`, `queue`,
/// `priority`, `attempt_max`, `backoff`). How: `misfire` and `overlap`. An omitted field takes
/// its default, in a replacement too.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// The schedule's unique name (letters, digits and `. _ - : /`, not a UUID). POST needs
    /// it; PUT takes it from its path, and one given here too must be the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9._:/-]+$", min_length = 1, max_length = 128)]
    pub name: Option<String>,
    /// A cron expression: 5 fields, or 6 with seconds first, or a macro like `@daily`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub cron: Option<String>,
    /// The IANA time zone `cron` is read in, such as `Europe/Berlin` (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Instead of `cron`: every this many milliseconds, from the previous occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1000)]
    pub interval_ms: Option<u64>,
    /// No occurrence before this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub start_at: Option<String>,
    /// No occurrence after this instant (RFC 3339): the schedule is finished then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub end_at: Option<String>,
    /// Each occurrence's job runs up to this long after it (a fixed delay per occurrence), to
    /// spread schedules that share a minute; at most a day (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86_400_000)]
    pub jitter_ms: Option<u64>,
    /// The kind remote workers claim the jobs by (not with `webhook`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9._:/-]+$", min_length = 1, max_length = 128)]
    pub kind: Option<String>,
    /// Send each occurrence's payload to this HTTP endpoint (not with `kind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
    /// Each job's data: any JSON value (default `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Value)]
    pub payload: Option<Box<RawValue>>,
    /// The jobs' queue (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9._:/-]+$", min_length = 1, max_length = 128)]
    pub queue: Option<String>,
    /// 0 is the most urgent, 9 the least (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<u8>,
    /// How many attempts each job may have, 1 to 1000 (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub attempt_max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misfire: Option<MisfireSpec>,
    /// What an occurrence due while the previous one's job has not finished does: `allow`
    /// (default: run side by side), `skip`, `buffer_one` (run it when the previous finishes;
    /// one at most) or `cancel_previous`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^(allow|skip|buffer_one|cancel_previous)$")]
    pub overlap: Option<String>,
}

/// What to do with occurrences missed while nothing ran (every node down, the store
/// unreachable): an occurrence found up to `grace_ms` late fires late; one found later is
/// missed, and `policy` decides the missed ones: `skip` them all, fire the `latest` (default),
/// or fire `all` of them, oldest first, up to `limit`. One older than `catch_up_window_ms` is
/// skipped whatever the policy. Omitted fields keep their defaults (in a change: their values).
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MisfireSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^(skip|latest|all)$")]
    pub policy: Option<String>,
    /// With `all` only: fire at most this many missed occurrences (default and most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Default 60,000 (a minute); at most 366 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 31_622_400_000u64)]
    pub grace_ms: Option<u64>,
    /// Default 86,400,000 (a day); at most 366 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 31_622_400_000u64)]
    pub catch_up_window_ms: Option<u64>,
}

/// A change of a stored schedule (`PATCH /v1/schedules/{key}`): each field given replaces the
/// stored one, each omitted field keeps it (`start_at` and `end_at` are removed by `null`).
/// `cron`, `time_zone` and `interval_ms` replace the recurrence together: `time_zone` alone
/// moves a cron expression to another zone; `payload` alone keeps the target. The schedule
/// keeps its id, its state and its history; occurrences already decided stay decided.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeSchedule {
    /// A new name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9._:/-]+$", min_length = 1, max_length = 128)]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1000)]
    pub interval_ms: Option<u64>,
    /// A new start (RFC 3339), or `null` for none.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub start_at: Option<Option<String>>,
    /// A new end (RFC 3339), or `null` for none.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub end_at: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86_400_000)]
    pub jitter_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9._:/-]+$", min_length = 1, max_length = 128)]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Value)]
    pub payload: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9._:/-]+$", min_length = 1, max_length = 128)]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub attempt_max: Option<u32>,
    /// Fields given replace the stored backoff's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffSpec>,
    /// Fields given replace the stored policy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misfire: Option<MisfireSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^(allow|skip|buffer_one|cancel_previous)$")]
    pub overlap: Option<String>,
}

/// A field that may be given as `null`: `Some(None)` then, and `None` (by `default`) when it
/// is absent.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A question for `POST /v1/schedules/explain`, answered without the store: the next `count`
/// firings of a recurrence from `from`, and, with `outage`, what recovering from an outage
/// would fire and skip under `misfire` and `overlap`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainSchedule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub cron: Option<String>,
    /// Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1000)]
    pub interval_ms: Option<u64>,
    /// From this instant on (inclusive; default now): RFC 3339, or a local date (`2026-03-28`:
    /// local midnight in `time_zone`) or local date and time (`2026-03-29T02:30`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 64)]
    pub from: Option<String>,
    /// How many firings, 1 to 1000 (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage: Option<OutageSpec>,
    /// The misfire policy the outage is met with (default: as a new schedule's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misfire: Option<MisfireSpec>,
    /// The overlap policy the outage is met with (default `allow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^(allow|skip|buffer_one|cancel_previous)$")]
    pub overlap: Option<String>,
}

/// Nothing ran from `from` to `to` (at most 366 days), and the engine recovers at `to`. Both
/// read as `ExplainSchedule::from` does.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutageSpec {
    #[schema(max_length = 64)]
    pub from: String,
    #[schema(max_length = 64)]
    pub to: String,
    /// The job of the last occurrence before the outage had not finished by its end (what the
    /// overlap policy meets; default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_unfinished: Option<bool>,
}

// ---------------------------------------------------------------- schedules: responses

/// A stored schedule: its definition (in the shape `CreateSchedule` takes), its state, and how
/// far its occurrences have been decided.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    pub id: String,
    pub name: String,
    /// `active`, `paused`, `finished` (past its end) or `failed` (see `last_error`).
    pub status: String,
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<String>,
    pub jitter_ms: u64,
    /// The remote workers' kind; absent for a webhook schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The webhook target; values of headers that usually carry credentials show as `***`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
    #[schema(value_type = Value)]
    pub payload: Box<RawValue>,
    pub queue: String,
    pub priority: u8,
    pub attempt_max: u32,
    pub backoff: BackoffView,
    pub misfire: MisfireView,
    pub overlap: String,
    /// The next occurrence after the high-water mark, if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_occurrence: Option<String>,
    /// Every occurrence at or before this instant has been decided (fired or skipped).
    pub high_water: String,
    /// When the leader looks at the schedule next; absent when it never will (finished or
    /// failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check: Option<String>,
    /// The job of the last occurrence fired or triggered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<String>,
    /// An occurrence `buffer_one` holds until the last job finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffered: Option<String>,
    /// Occurrences fired and skipped since the schedule was created.
    pub fired: u64,
    pub skipped: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// One more on every change.
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MisfireView {
    /// `skip`, `latest` or `all`.
    pub policy: String,
    /// With `all`: the most missed occurrences fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    pub grace_ms: u64,
    pub catch_up_window_ms: u64,
}

/// One page of schedules, in name order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// What an upsert did, and the schedule after it. (Nested rather than flattened: a payload is
/// raw JSON, which serde cannot read back from a flattened map.)
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UpsertedSchedule {
    /// `created`, `updated`, or `unchanged` (the stored definition was the same: nothing was
    /// written).
    pub outcome: String,
    pub schedule: ScheduleView,
}

/// A manual firing: its job is due at once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TriggeredSchedule {
    pub job_id: String,
    pub schedule_id: String,
    pub name: String,
}

/// One entry of a schedule's occurrence ledger.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OccurrenceView {
    /// Increasing; pass the last one of a page as `cursor` for older entries.
    pub seq: u64,
    /// The schedule and the occurrence's instant: `ID@TIME`.
    pub occurrence_id: String,
    /// The occurrence's instant (the first of a run of skips).
    pub at: String,
    /// `fired`, `skipped` or `failed`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// How late the job was inserted (0 when ahead of time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_ms: Option<u64>,
    /// A trigger, not an occurrence of the recurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual: Option<bool>,
    /// A clock change moved it (spring forward).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved: Option<bool>,
    /// Why it was skipped: `misfire`, `overlap`, `paused`, `outside_window` or
    /// `clock_change`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How many occurrences this entry stands for (a run of skips is one entry).
    pub count: u64,
    /// The last occurrence of a run of skips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub recorded_at: String,
}

/// A page of a schedule's ledger, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OccurrenceList {
    pub occurrences: Vec<OccurrenceView>,
    /// Pass as `cursor` for older entries; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The answer to an `ExplainSchedule`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Explanation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The zone local times are in (`UTC` for an interval).
    pub time_zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// Whether a clock change moves the expression's firings or keeps them from repeating
    /// (neither its minute nor its hour field starts with `*`), as Vixie cron does.
    pub fixed_time: bool,
    /// The IANA time zone database the answer is computed with.
    pub tzdb_version: String,
    /// The start, as an instant.
    pub from: String,
    /// Firings, and spans of local time skipped by a clock change of 3 hours or more, in time
    /// order.
    pub occurrences: Vec<ExplainedOccurrence>,
    /// Why fewer than `count` firings were found, if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExplainedOccurrence {
    /// `fire`, or `skip` (a span of local times that do not exist).
    pub event: String,
    /// The instant (for a skip: 1 µs before the clock change).
    pub utc: String,
    /// The same instant on the zone's wall clock, with its UTC offset.
    pub local: String,
    /// The UTC offset then, like `+02:00`.
    pub offset: String,
    /// The zone's abbreviation then, like `CEST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abbreviation: Option<String>,
    /// The local time named does not exist (spring forward): the firing moved to the end of
    /// the gap. `named_local` is the local time it stands for.
    pub moved: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named_local: Option<String>,
    /// How many further local times of the gap a moved firing stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<u32>,
    /// The local time happens again at this instant (fall back), where it does not fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_not_fired: Option<String>,
    /// A skip: how many matching local times, from which to which, and the clock change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_local: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_local: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift_seconds: Option<i64>,
    /// What a person should know, like `moved: 02:30 does not exist (spring forward)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What the engine fires and skips when it recovers from the outage, as its own plan decides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecoveryView {
    pub outage_from: String,
    pub outage_to: String,
    pub misfire: MisfireView,
    pub overlap: String,
    pub previous_unfinished: bool,
    pub fired: u64,
    pub skipped: u64,
    /// The ledger the recovery writes, in order.
    pub entries: Vec<RecoveryEntryView>,
    /// An occurrence `buffer_one` keeps until the previous job finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffered: Option<String>,
    /// `cancel_previous` cancels the job of the occurrence before the outage.
    pub cancels_previous: bool,
    /// Every occurrence up to this instant is decided.
    pub decided_through: String,
    /// Whether every occurrence of the outage is decided in this answer (a long outage of a
    /// dense schedule takes the engine more looks than are explained).
    pub complete: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecoveryEntryView {
    /// `fired`, `skipped` or `failed`.
    pub outcome: String,
    pub at: String,
    /// The last occurrence of a run of skips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at: Option<String>,
    pub count: u64,
    /// When a fired occurrence's job is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved: Option<bool>,
    /// `misfire`, `overlap`, `paused`, `outside_window` or `clock_change`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why, in words (for a failure: its error).
    pub why: String,
}

// ---------------------------------------------------------------- conversions

fn raw(text: &str) -> Box<RawValue> {
    // Stored payloads are checked JSON (`Payload`), and so is an envelope's inner payload.
    RawValue::from_string(text.to_owned())
        .unwrap_or_else(|_| RawValue::from_string("null".to_owned()).expect("null is JSON"))
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl JobView {
    pub fn from_job(job: &Job) -> JobView {
        let (kind, webhook, payload) = split_target(job);
        JobView {
            id: job.id.to_string(),
            queue: job.queue.to_string(),
            kind,
            webhook,
            payload,
            state: job.state.as_str().to_owned(),
            run_at: job.run_at.to_rfc3339_exact(),
            schedule: job.schedule.as_ref().map(|schedule| {
                match (schedule.cron_expression(), schedule.interval_duration()) {
                    (Some((cron, zone)), _) => ScheduleSpec {
                        cron: Some(cron.to_owned()),
                        time_zone: Some(zone.to_owned()),
                        interval_ms: None,
                    },
                    (None, interval) => ScheduleSpec {
                        cron: None,
                        time_zone: None,
                        interval_ms: interval.map(millis),
                    },
                }
            }),
            attempt: job.attempt,
            attempt_max: job.attempt_max,
            priority: job.priority.get(),
            backoff: BackoffView {
                base_ms: millis(job.retry.backoff_base()),
                max_ms: millis(job.retry.backoff_max()),
                jitter_percent: job.retry.jitter_percent(),
            },
            created_at: job.created_at.to_rfc3339_exact(),
            started_at: job.started_at.map(Timestamp::to_rfc3339_exact),
            finished_at: job.finished_at.map(Timestamp::to_rfc3339_exact),
            last_error: job.last_error.clone(),
            lease_token: job.lease_token.0,
            lease: job.lease.as_ref().map(|lease| LeaseView {
                holder: lease.holder.to_string(),
                token: lease.token.0,
                expires_at: lease.expires_at.to_rfc3339_exact(),
            }),
        }
    }
}

/// A job's kind, webhook and payload as the API shows them: a webhook job's envelope is opened.
fn split_target(job: &Job) -> (Option<String>, Option<WebhookSpec>, Box<RawValue>) {
    if job.kind.as_str() == WEBHOOK_KIND
        && let Ok(envelope) = Envelope::parse(job.payload.as_str())
    {
        let target = &envelope.webhook;
        let webhook = WebhookSpec {
            url: target.url.clone(),
            method: Some(target.method.as_str().to_owned()),
            headers: Some(target.redacted_headers()),
            timeout_ms: Some(target.timeout_ms),
        };
        return (None, Some(webhook), raw(envelope.payload.get()));
    }
    (Some(job.kind.to_string()), None, raw(job.payload.as_str()))
}

impl JobSummary {
    pub fn from_job(job: &Job) -> JobSummary {
        JobSummary {
            id: job.id.to_string(),
            queue: job.queue.to_string(),
            kind: (job.kind.as_str() != WEBHOOK_KIND).then(|| job.kind.to_string()),
            state: job.state.as_str().to_owned(),
            run_at: job.run_at.to_rfc3339_exact(),
        }
    }
}

impl ClaimedJobView {
    pub fn from_job(job: &Job) -> ClaimedJobView {
        let (token, expires_at) = job
            .lease
            .as_ref()
            .map_or((job.lease_token, job.run_at), |lease| {
                (lease.token, lease.expires_at)
            });
        ClaimedJobView {
            id: job.id.to_string(),
            kind: job.kind.to_string(),
            queue: job.queue.to_string(),
            payload: raw(job.payload.as_str()),
            attempt: job.attempt,
            attempt_max: job.attempt_max,
            lease_token: token.0,
            lease_expires_at: expires_at.to_rfc3339_exact(),
            run_at: job.run_at.to_rfc3339_exact(),
        }
    }
}

impl QueueView {
    pub fn from_stats(stats: &QueueStats, now: Timestamp) -> QueueView {
        let counts = &stats.counts;
        QueueView {
            queue: stats.queue.to_string(),
            counts: StateCountsView {
                scheduled: counts.get(JobState::Scheduled),
                running: counts.get(JobState::Running),
                retrying: counts.get(JobState::Retrying),
                succeeded: counts.get(JobState::Succeeded),
                dead: counts.get(JobState::Dead),
                cancelled: counts.get(JobState::Cancelled),
            },
            due: stats.due,
            oldest_due_at: stats.oldest_due.map(Timestamp::to_rfc3339_exact),
            oldest_due_age_ms: stats
                .oldest_due
                .map(|oldest| u64::try_from(now.micros_since(oldest).max(0) / 1_000).unwrap_or(0)),
        }
    }
}

impl TokenView {
    pub fn from_token(token: &ApiToken) -> TokenView {
        TokenView {
            id: token.id.to_string(),
            label: token.label.clone(),
            scopes: token.scopes.clone(),
            created_at: token.created_at.to_rfc3339_exact(),
            expires_at: token.expires_at.map(Timestamp::to_rfc3339_exact),
            revoked_at: token.revoked_at.map(Timestamp::to_rfc3339_exact),
        }
    }
}

impl MisfireView {
    pub fn from_misfire(misfire: &Misfire) -> MisfireView {
        let (policy, limit) = match misfire.action {
            MisfireAction::Skip => ("skip", None),
            MisfireAction::Latest => ("latest", None),
            MisfireAction::All { limit } => ("all", Some(limit)),
        };
        MisfireView {
            policy: policy.to_owned(),
            limit,
            grace_ms: millis(misfire.grace),
            catch_up_window_ms: millis(misfire.catch_up_window),
        }
    }
}

impl ScheduleView {
    pub fn from_schedule(schedule: &StoredSchedule) -> ScheduleView {
        let definition = &schedule.definition;
        let template = &definition.template;
        let (cron, time_zone) = match definition.recurrence.cron_expression() {
            Some((cron, zone)) => (Some(cron.to_owned()), Some(zone.to_owned())),
            None => (None, None),
        };
        let (kind, webhook, payload) = split_template(template.kind.as_str(), &template.payload);
        let cursor = &schedule.cursor;
        ScheduleView {
            id: schedule.id.to_string(),
            name: definition.name.to_string(),
            status: schedule.status().as_str().to_owned(),
            paused: schedule.paused,
            cron,
            time_zone,
            interval_ms: definition.recurrence.interval_duration().map(millis),
            start_at: definition.start_at.map(Timestamp::to_rfc3339_exact),
            end_at: definition.end_at.map(Timestamp::to_rfc3339_exact),
            jitter_ms: millis(definition.jitter),
            kind,
            webhook,
            payload,
            queue: template.queue.to_string(),
            priority: template.priority.get(),
            attempt_max: template.attempt_max,
            backoff: BackoffView {
                base_ms: millis(template.retry.backoff_base()),
                max_ms: millis(template.retry.backoff_max()),
                jitter_percent: template.retry.jitter_percent(),
            },
            misfire: MisfireView::from_misfire(&definition.misfire),
            overlap: definition.overlap.as_str().to_owned(),
            next_occurrence: schedule.next_occurrence().map(Timestamp::to_rfc3339_exact),
            high_water: cursor.high_water.to_rfc3339_exact(),
            next_check: cursor.next_check.map(Timestamp::to_rfc3339_exact),
            last_job: cursor.last_job.map(|job| job.to_string()),
            buffered: cursor.buffered.map(Timestamp::to_rfc3339_exact),
            fired: cursor.fired,
            skipped: cursor.skipped,
            last_error: cursor.last_error.clone(),
            version: schedule.version,
            created_at: schedule.created_at.to_rfc3339_exact(),
            updated_at: schedule.updated_at.to_rfc3339_exact(),
        }
    }
}

/// A template's kind, webhook and payload as the API shows them, as `split_target` does for
/// a job.
fn split_template(
    kind: &str,
    payload: &punctual_core::Payload,
) -> (Option<String>, Option<WebhookSpec>, Box<RawValue>) {
    if kind == WEBHOOK_KIND
        && let Ok(envelope) = Envelope::parse(payload.as_str())
    {
        let target = &envelope.webhook;
        let webhook = WebhookSpec {
            url: target.url.clone(),
            method: Some(target.method.as_str().to_owned()),
            headers: Some(target.redacted_headers()),
            timeout_ms: Some(target.timeout_ms),
        };
        return (None, Some(webhook), raw(envelope.payload.get()));
    }
    (Some(kind.to_owned()), None, raw(payload.as_str()))
}

impl OccurrenceView {
    pub fn from_entry(entry: &OccurrenceEntry) -> OccurrenceView {
        let mut view = OccurrenceView {
            seq: entry.seq,
            occurrence_id: entry.occurrence_id(),
            at: entry.at.to_rfc3339_exact(),
            outcome: String::new(),
            job_id: None,
            late_ms: None,
            manual: None,
            moved: None,
            reason: None,
            count: 1,
            last_at: None,
            error: None,
            recorded_at: entry.recorded_at.to_rfc3339_exact(),
        };
        match &entry.outcome {
            OccurrenceOutcome::Fired {
                job,
                late,
                manual,
                moved,
            } => {
                view.outcome = "fired".to_owned();
                view.job_id = Some(job.to_string());
                view.late_ms = Some(millis(*late));
                view.manual = Some(*manual);
                view.moved = Some(*moved);
            }
            OccurrenceOutcome::Skipped {
                reason,
                count,
                last_at,
            } => {
                view.outcome = "skipped".to_owned();
                view.reason = Some(reason.as_str().to_owned());
                view.count = *count;
                view.last_at = Some(last_at.to_rfc3339_exact());
            }
            OccurrenceOutcome::Failed { error } => {
                view.outcome = "failed".to_owned();
                view.error = Some(error.clone());
            }
        }
        view
    }
}

/// `+02:00`, `-09:30`, or `+05:53:28` for a local mean time.
fn offset_text(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let seconds = seconds.unsigned_abs();
    let (hours, minutes, rest) = (seconds / 3_600, seconds % 3_600 / 60, seconds % 60);
    if rest == 0 {
        format!("{sign}{hours:02}:{minutes:02}")
    } else {
        format!("{sign}{hours:02}:{minutes:02}:{rest:02}")
    }
}

fn local_text(local: chrono::NaiveDateTime) -> String {
    local.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
}

impl Explanation {
    /// The answer for `schedule` from `from`: its `upcoming` events and, for an outage, its
    /// `recovery`.
    pub fn from_core(
        schedule: &Schedule,
        from: Timestamp,
        upcoming: &explain::Upcoming,
        recovery: Option<(&explain::Outage, &explain::Recovery)>,
    ) -> Explanation {
        let (cron, time_zone) = match schedule.cron_expression() {
            Some((cron, zone)) => (Some(cron.to_owned()), zone.to_owned()),
            None => (None, "UTC".to_owned()),
        };
        let occurrences = upcoming
            .events
            .iter()
            .map(|event| match event {
                explain::Event::Fire(firing) => ExplainedOccurrence {
                    event: "fire".to_owned(),
                    utc: firing.at.to_rfc3339_exact(),
                    local: format!(
                        "{}{}",
                        local_text(firing.clock.local),
                        offset_text(firing.clock.offset_seconds)
                    ),
                    offset: offset_text(firing.clock.offset_seconds),
                    abbreviation: firing.clock.abbreviation.clone(),
                    moved: firing.moved,
                    named_local: firing.moved.then(|| local_text(firing.named)),
                    merged: (firing.merged > 0).then_some(firing.merged),
                    repeat_not_fired: firing.repeat_not_fired.map(Timestamp::to_rfc3339_exact),
                    skipped_count: None,
                    first_local: None,
                    last_local: None,
                    shift_seconds: firing.shift_seconds,
                    note: firing.note(),
                },
                explain::Event::Skip(span) => ExplainedOccurrence {
                    event: "skip".to_owned(),
                    utc: span.at.to_rfc3339_exact(),
                    local: format!(
                        "{}{}",
                        local_text(span.clock.local),
                        offset_text(span.clock.offset_seconds)
                    ),
                    offset: offset_text(span.clock.offset_seconds),
                    abbreviation: span.clock.abbreviation.clone(),
                    moved: false,
                    named_local: None,
                    merged: None,
                    repeat_not_fired: None,
                    skipped_count: Some(span.count),
                    first_local: Some(local_text(span.first_local)),
                    last_local: Some(local_text(span.last_local)),
                    shift_seconds: Some(span.shift_seconds),
                    note: Some(span.note()),
                },
            })
            .collect();
        let end = upcoming.end.as_ref().map(|end| match end {
            WalkEnd::EndOfTime => {
                "no further occurrence before the year 10000 (or the end of time)".to_owned()
            }
            WalkEnd::Failed { after, reason } => {
                format!("the next occurrence after {after} cannot be computed: {reason}")
            }
        });
        Explanation {
            cron,
            time_zone,
            interval_ms: schedule.interval_duration().map(millis),
            fixed_time: schedule.is_fixed_time(),
            tzdb_version: punctual_core::tzdb_version().to_owned(),
            from: from.to_rfc3339_exact(),
            occurrences,
            end,
            recovery: recovery.map(|(outage, recovery)| RecoveryView::from_core(outage, recovery)),
        }
    }
}

impl RecoveryView {
    pub fn from_core(outage: &explain::Outage, recovery: &explain::Recovery) -> RecoveryView {
        let entries = recovery
            .entries
            .iter()
            .map(|entry| match entry {
                explain::RecoveryEntry::Fired {
                    at,
                    run_at,
                    late,
                    moved,
                    why,
                } => RecoveryEntryView {
                    outcome: "fired".to_owned(),
                    at: at.to_rfc3339_exact(),
                    last_at: None,
                    count: 1,
                    run_at: Some(run_at.to_rfc3339_exact()),
                    late_ms: Some(millis(*late)),
                    moved: Some(*moved),
                    reason: None,
                    why: why.clone(),
                },
                explain::RecoveryEntry::Skipped {
                    at,
                    last_at,
                    count,
                    reason,
                    why,
                } => RecoveryEntryView {
                    outcome: "skipped".to_owned(),
                    at: at.to_rfc3339_exact(),
                    last_at: Some(last_at.to_rfc3339_exact()),
                    count: *count,
                    run_at: None,
                    late_ms: None,
                    moved: None,
                    reason: Some(reason.as_str().to_owned()),
                    why: why.clone(),
                },
                explain::RecoveryEntry::Failed { at, error } => RecoveryEntryView {
                    outcome: "failed".to_owned(),
                    at: at.to_rfc3339_exact(),
                    last_at: None,
                    count: 0,
                    run_at: None,
                    late_ms: None,
                    moved: None,
                    reason: None,
                    why: error.clone(),
                },
            })
            .collect();
        RecoveryView {
            outage_from: outage.from.to_rfc3339_exact(),
            outage_to: outage.to.to_rfc3339_exact(),
            misfire: MisfireView::from_misfire(&outage.misfire),
            overlap: outage.overlap.as_str().to_owned(),
            previous_unfinished: outage.previous_unfinished,
            fired: recovery.fired,
            skipped: recovery.skipped,
            entries,
            buffered: recovery.buffered.map(Timestamp::to_rfc3339_exact),
            cancels_previous: recovery.cancels_previous,
            decided_through: recovery.decided_through.to_rfc3339_exact(),
            complete: recovery.complete,
        }
    }
}
