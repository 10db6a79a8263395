//! The JSON wire format: every request and response body of the API, with their OpenAPI schemas.
//!
//! The core types carry no serde derives; these are the one definition of how a job looks on
//! the wire, used by the server's handlers, the OpenAPI document and the `punctual` CLI (which
//! prints and parses the same shapes). Times are RFC 3339 text, durations carry `_ms`.
//! Request bodies refuse unknown fields, so a misspelt option is an error, not a silent default.
//!
//! Must not validate values beyond their JSON types: that is `api::jobs` and punctual-core.

use std::collections::BTreeMap;

use punctual_core::{ApiToken, Job, JobState, QueueStats, Timestamp};
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
    pub node: String,
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
