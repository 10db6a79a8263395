//! `/v1/jobs`: create (one, or a batch, all or none, with `Idempotency-Key`), get, list, cancel,
//! reschedule, retry a dead job, and redrive the dead jobs matching a filter.
//!
//! Every input is validated into a `NewJob` (punctual-core's checks, and the webhook target's,
//! SSRF guard included) before anything is stored, so a refused request stores nothing.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use punctual_core::{
    Cursor, IdempotencyKey, IdempotencyRecord, Idempotent, JobFilter, JobId, JobOptions, JobState,
    Kind, NewJob, Payload, Priority, Queue, RetryPolicy, Schedule, Timestamp, ValidationError,
    limits,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::IntoParams;

use crate::api::PathParam;
use crate::app::{App, Authorized, InFlight, Read, Write};
use crate::body::{self, BATCH_BODY_BYTES_MAX, JOB_BODY_BYTES_MAX, Json, RawJson};
use crate::dto::{
    CreateJob, CreateJobs, CreatedJobs, JobList, JobSummary, JobView, Redrive, RedriveResult,
    Reschedule,
};
use crate::error::{ApiError, Problem};
use crate::webhook::target::{self, RESERVED_KIND_PREFIX, Target, TargetError, WEBHOOK_KIND};

/// Most jobs in one batch creation.
pub const BATCH_JOBS_MAX: usize = 1_000;
/// The page size of a listing when none is asked for.
const PAGE_SIZE_DEFAULT: usize = 100;
/// A listing stops adding jobs past this many bytes of payload, whatever its page size.
const PAGE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most dead jobs one redrive retries.
const REDRIVE_MAX: u32 = 10_000;
/// Reschedules a redrive keeps in flight at once (the store commits them in groups).
const REDRIVE_CONCURRENCY: usize = 64;
/// Longest `Idempotency-Key`, in bytes.
const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;
/// The header that marks a replayed answer.
const REPLAYED: &str = "idempotent-replayed";

/// Turns one `CreateJob` into a validated job, judged at `now`. `at` names the job in a batch
/// (`jobs[3]`), so an error says which one broke which rule.
pub(crate) async fn new_job(
    app: &App,
    spec: CreateJob,
    now: Timestamp,
    at: &str,
) -> Result<NewJob, ApiError> {
    let field = |name: &str| {
        if at.is_empty() {
            name.to_owned()
        } else {
            format!("{at}.{name}")
        }
    };
    let invalid = |name: &str, error: &dyn std::fmt::Display| {
        ApiError::validation(format!("{}: {error}", field(name)))
    };

    let payload_text = spec.payload.as_ref().map_or("null", |raw| raw.get());
    let (kind, payload) = match (spec.kind.as_deref(), spec.webhook) {
        (Some(kind), None) => {
            let kind = Kind::new(kind).map_err(|error| invalid("kind", &error))?;
            if kind.as_str().starts_with(RESERVED_KIND_PREFIX) {
                return Err(invalid(
                    "kind",
                    &format!(
                        "{kind:?} is reserved: kinds starting {RESERVED_KIND_PREFIX} are punctual's own"
                    ),
                ));
            }
            let payload = Payload::from_json_text(payload_text)
                .map_err(|error| invalid("payload", &error))?;
            (kind, payload)
        }
        (None, Some(webhook)) => {
            let target = Target::new(
                &webhook.url,
                webhook.method.as_deref(),
                webhook.headers.as_ref(),
                webhook.timeout_ms,
            )
            .map_err(|error| target_error(at, error))?;
            target
                .check_address(&app.guard)
                .await
                .map_err(|error| target_error(at, error))?;
            let payload =
                target::envelope(&target, payload_text).map_err(|error| target_error(at, error))?;
            (
                Kind::new(WEBHOOK_KIND).expect("the webhook kind is a valid name"),
                payload,
            )
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::validation(format!(
                "{}: give either kind or webhook, not both",
                field("kind")
            )));
        }
        (None, None) => {
            return Err(ApiError::validation(format!(
                "{}: say what runs the job: kind (for remote workers) or webhook",
                field("kind")
            )));
        }
    };

    let mut options = JobOptions::default();
    if let Some(queue) = &spec.queue {
        options = options.queue(Queue::new(queue).map_err(|error| invalid("queue", &error))?);
    }
    if let Some(priority) = spec.priority {
        options =
            options.priority(Priority::new(priority).map_err(|error| invalid("priority", &error))?);
    }
    if let Some(attempt_max) = spec.attempt_max {
        options = options.attempt_max(attempt_max);
    }
    if let Some(backoff) = &spec.backoff {
        let defaults = RetryPolicy::DEFAULT;
        let policy = RetryPolicy::new(
            backoff
                .base_ms
                .map_or(defaults.backoff_base(), Duration::from_millis),
            backoff
                .max_ms
                .map_or(defaults.backoff_max(), Duration::from_millis),
            backoff.jitter_percent.unwrap_or(defaults.jitter_percent()),
        )
        .map_err(|error| invalid("backoff", &error))?;
        options = options.retry(policy);
    }
    if let Some(id) = &spec.id {
        options = options.id(id.parse::<JobId>().map_err(|error| invalid("id", &error))?);
    }

    let times = [
        spec.run_at.is_some(),
        spec.delay_ms.is_some(),
        spec.schedule.is_some(),
    ];
    if times.iter().filter(|given| **given).count() > 1 {
        return Err(ApiError::validation(format!(
            "{}: give at most one of run_at, delay_ms and schedule",
            field("run_at")
        )));
    }
    let job = if let Some(schedule) = &spec.schedule {
        let schedule = match (&schedule.cron, schedule.interval_ms) {
            (Some(cron), None) => {
                Schedule::cron(cron, schedule.time_zone.as_deref().unwrap_or("UTC"))
                    .map_err(|error| invalid("schedule", &error))?
            }
            (None, Some(interval_ms)) => {
                if schedule.time_zone.is_some() {
                    return Err(invalid("schedule.time_zone", &"applies only to cron"));
                }
                Schedule::interval(Duration::from_millis(interval_ms))
                    .map_err(|error| invalid("schedule", &error))?
            }
            _ => {
                return Err(invalid(
                    "schedule",
                    &"give exactly one of cron and interval_ms",
                ));
            }
        };
        NewJob::recurring(kind, payload, schedule, options, now)
            .map_err(|error| invalid(field_of(&error, "schedule"), &error))?
    } else {
        let (run_at, name) = match (&spec.run_at, spec.delay_ms) {
            (Some(text), _) => (
                parse_time(text).map_err(|error| invalid("run_at", &error))?,
                "run_at",
            ),
            (None, Some(delay_ms)) => {
                let delay = Duration::from_millis(delay_ms);
                if delay > limits::RUN_AT_FUTURE_MAX {
                    return Err(invalid(
                        "delay_ms",
                        &format!(
                            "{delay_ms} is further ahead than the limit of {} ms",
                            limits::RUN_AT_FUTURE_MAX.as_millis()
                        ),
                    ));
                }
                (now.add(delay), "delay_ms")
            }
            (None, None) => (now, "run_at"),
        };
        NewJob::new(kind, payload, run_at, options, now)
            .map_err(|error| invalid(field_of(&error, name), &error))?
    };
    Ok(job)
}

/// The request field a job's validation error is about: `attempt_max` for its own error, else
/// the field that set the time (`run_at`, `delay_ms` or `schedule`).
fn field_of<'a>(error: &ValidationError, time_field: &'a str) -> &'a str {
    match error {
        ValidationError::AttemptMaxOutOfRange { .. } => "attempt_max",
        _ => time_field,
    }
}

fn target_error(at: &str, error: TargetError) -> ApiError {
    let prefix = if at.is_empty() {
        String::new()
    } else {
        format!("{at}.")
    };
    match error {
        TargetError::Refused(_) => ApiError::target_refused(format!("{prefix}{error}")),
        TargetError::Invalid { .. } => ApiError::validation(format!("{prefix}{error}")),
    }
}

/// RFC 3339 text, as a time.
pub(crate) fn parse_time(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(text)
        .ok_or_else(|| format!("{text:?} is not an RFC 3339 time (like 2026-12-24T09:00:00Z)"))
}

/// The `Idempotency-Key` header, if sent: printable ASCII, at most 255 bytes, bare or as a
/// structured-field string (`"..."`).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("Idempotency-Key must be printable ASCII"))?
        .trim();
    let text = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or(text);
    if text.is_empty() || text.len() > IDEMPOTENCY_KEY_BYTES_MAX {
        return Err(ApiError::bad_request(format!(
            "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} characters"
        )));
    }
    Ok(Some(text.to_owned()))
}

/// A digest of the request a key was first used with: its route and its exact body.
fn fingerprint(route: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    let digest = hasher.finalize();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256:{hex}")
}

/// What is kept with an idempotency key to answer its replays.
#[derive(serde::Serialize, Deserialize)]
struct StoredResponse {
    status: u16,
    location: Option<String>,
    body: Box<serde_json::value::RawValue>,
}

fn created(status: StatusCode, location: Option<&str>, body: Vec<u8>, replayed: bool) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(location) = location.and_then(|location| HeaderValue::from_str(location).ok()) {
        headers.insert(header::LOCATION, location);
    }
    if replayed {
        headers.insert(REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// A creation, validated, with the answer it gets.
struct Creation<'a> {
    /// The caller's scope for idempotency keys (its token's id).
    scope: &'a str,
    key: Option<String>,
    /// `POST /v1/jobs` or `POST /v1/jobs/batch`: part of the request's fingerprint.
    route: &'static str,
    request_body: &'a [u8],
    jobs: Vec<NewJob>,
    now: Timestamp,
    location: Option<String>,
    body: Vec<u8>,
}

/// Stores the jobs and answers, honouring an `Idempotency-Key`: a replay of the same request
/// gets the first answer (even after a restart), another request under the key 422, a key whose
/// first request is still in progress here 409.
async fn store_and_answer(app: &App, creation: Creation<'_>) -> Result<Response, ApiError> {
    let Creation {
        scope: principal_scope,
        key,
        route,
        request_body,
        jobs,
        now,
        location,
        body,
    } = creation;
    let earliest = jobs.iter().map(|job| job.run_at).min();
    let Some(key) = key else {
        app.scheduler.schedule_many(jobs).await?;
        if let Some(earliest) = earliest {
            app.announce(earliest);
        }
        return Ok(created(
            StatusCode::CREATED,
            location.as_deref(),
            body,
            false,
        ));
    };
    let scoped = IdempotencyKey::new(&format!("{principal_scope}:{key}"))
        .map_err(|error| ApiError::bad_request(format!("Idempotency-Key: {error}")))?;
    let Some(_in_flight) = InFlight::enter(app, scoped.as_str()) else {
        return Err(ApiError::idempotency_in_progress());
    };
    let fingerprint = fingerprint(route, request_body);
    let stored = StoredResponse {
        status: StatusCode::CREATED.as_u16(),
        location: location.clone(),
        body: serde_json::value::RawValue::from_string(
            String::from_utf8(body.clone()).unwrap_or_default(),
        )
        .map_err(|error| ApiError::unavailable(format!("could not keep the response: {error}")))?,
    };
    let record = IdempotencyRecord {
        key: scoped,
        fingerprint: fingerprint.clone(),
        response: serde_json::to_string(&stored).unwrap_or_default(),
        created_at: now,
        expires_at: now.add(app.settings.idempotency_ttl),
    };
    match app.store.insert_idempotent(jobs, record, now).await? {
        Idempotent::Inserted(_) => {
            if let Some(earliest) = earliest {
                app.announce(earliest);
            }
            Ok(created(
                StatusCode::CREATED,
                location.as_deref(),
                body,
                false,
            ))
        }
        Idempotent::Replayed(first) => {
            if first.fingerprint != fingerprint {
                return Err(ApiError::idempotency_mismatch());
            }
            let first: StoredResponse = serde_json::from_str(&first.response).map_err(|error| {
                ApiError::unavailable(format!("the kept response is unreadable: {error}"))
            })?;
            let status = StatusCode::from_u16(first.status).unwrap_or(StatusCode::CREATED);
            Ok(created(
                status,
                first.location.as_deref(),
                first.body.get().as_bytes().to_vec(),
                true,
            ))
        }
    }
}

/// Create a job.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs",
    request_body = CreateJob,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe creation: the same key with the same body returns the first response for 24 hours")),
    responses(
        (status = 201, description = "Stored durably", body = JobView),
        (status = 400, description = "Not readable", body = Problem),
        (status = 409, description = "Id taken, or the key's first request in progress", body = Problem),
        (status = 422, description = "A value broke a rule, or the key was used with another request", body = Problem),
        (status = 503, description = "The store is unavailable; retry", body = Problem),
    ),
    security(("bearer" = ["write"]))
)]
pub async fn create_job(
    State(app): State<Arc<App>>,
    Authorized(principal, ..): Authorized<Write>,
    headers: HeaderMap,
    RawJson(bytes): RawJson<JOB_BODY_BYTES_MAX>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let spec: CreateJob = body::decode(&bytes)?;
    let now = app.now();
    let job = new_job(&app, spec, now, "").await?;
    let stored = job.clone().into_job(now);
    let location = format!("/v1/jobs/{}", stored.id);
    let body = serde_json::to_vec(&JobView::from_job(&stored)).unwrap_or_default();
    let creation = Creation {
        scope: principal.scope_name(),
        key,
        route: "POST /v1/jobs",
        request_body: &bytes,
        jobs: vec![job],
        now,
        location: Some(location),
        body,
    };
    store_and_answer(&app, creation).await
}

/// Create several jobs, all or none.
#[utoipa::path(
    post, path = "/v1/jobs/batch", tag = "jobs",
    request_body = CreateJobs,
    params(("Idempotency-Key" = Option<String>, Header, description = "As for a single creation")),
    responses(
        (status = 201, description = "All stored durably", body = CreatedJobs),
        (status = 400, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem),
        (status = 422, description = "A job broke a rule (its index is named); nothing was stored", body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = ["write"]))
)]
pub async fn create_jobs(
    State(app): State<Arc<App>>,
    Authorized(principal, ..): Authorized<Write>,
    headers: HeaderMap,
    RawJson(bytes): RawJson<BATCH_BODY_BYTES_MAX>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let batch: CreateJobs = body::decode(&bytes)?;
    if batch.jobs.is_empty() || batch.jobs.len() > BATCH_JOBS_MAX {
        return Err(ApiError::validation(format!(
            "jobs: a batch holds 1 to {BATCH_JOBS_MAX} jobs, not {}",
            batch.jobs.len()
        )));
    }
    let now = app.now();
    let mut jobs = Vec::with_capacity(batch.jobs.len());
    for (index, spec) in batch.jobs.into_iter().enumerate() {
        jobs.push(new_job(&app, spec, now, &format!("jobs[{index}]")).await?);
    }
    let summaries: Vec<JobSummary> = jobs
        .iter()
        .map(|job| JobSummary::from_job(&job.clone().into_job(now)))
        .collect();
    let body = serde_json::to_vec(&CreatedJobs { jobs: summaries }).unwrap_or_default();
    let creation = Creation {
        scope: principal.scope_name(),
        key,
        route: "POST /v1/jobs/batch",
        request_body: &bytes,
        jobs,
        now,
        location: None,
        body,
    };
    store_and_answer(&app, creation).await
}

fn job_id(text: &str) -> Result<JobId, ApiError> {
    text.parse::<JobId>()
        .map_err(|_| ApiError::not_found(format!("no job {text:?} (job ids are UUIDs)")))
}

/// Get a job.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = JobView), (status = 404, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = ["read"]))
)]
pub async fn get_job(
    State(app): State<Arc<App>>,
    _: Authorized<Read>,
    PathParam(id): PathParam,
) -> Result<axum::Json<JobView>, ApiError> {
    let id = job_id(&id)?;
    let job = app
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(axum::Json(JobView::from_job(&job)))
}

/// Filters of a listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this queue.
    #[param(pattern = r"^[A-Za-z0-9._:/-]+$", min_length = 1, max_length = 128)]
    queue: Option<String>,
    /// Only jobs in this state.
    #[param(pattern = r"^(scheduled|running|retrying|succeeded|dead|cancelled)$")]
    state: Option<String>,
    /// Only jobs of this kind (`punctual.webhook` for webhook jobs).
    #[param(pattern = r"^[A-Za-z0-9._:/-]+$", min_length = 1, max_length = 128)]
    kind: Option<String>,
    /// Only jobs due at or after this instant (RFC 3339).
    #[param(format = DateTime)]
    due_after: Option<String>,
    /// Only jobs due before this instant (RFC 3339).
    #[param(format = DateTime)]
    due_before: Option<String>,
    /// At most this many jobs, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[param(format = "uuid")]
    cursor: Option<String>,
}

/// Decodes a query string into `T`, naming the parameter that does not fit.
pub(crate) fn query<T: serde::de::DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    let text = uri.query().unwrap_or_default();
    serde_urlencoded::from_str(text)
        .map_err(|error| ApiError::bad_request(format!("query: {error}")))
}

/// List jobs, a page at a time, in creation order.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs",
    params(ListQuery),
    responses((status = 200, body = JobList), (status = 400, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = ["read"]))
)]
pub async fn list_jobs(
    State(app): State<Arc<App>>,
    _: Authorized<Read>,
    uri: Uri,
) -> Result<axum::Json<JobList>, ApiError> {
    let params: ListQuery = query(&uri)?;
    let invalid = |name: &str, error: &dyn std::fmt::Display| {
        ApiError::validation(format!("{name}: {error}"))
    };
    let filter = JobFilter {
        queue: params
            .queue
            .as_deref()
            .map(Queue::new)
            .transpose()
            .map_err(|error| invalid("queue", &error))?,
        state: params
            .state
            .as_deref()
            .map(str::parse::<JobState>)
            .transpose()
            .map_err(|error| invalid("state", &error))?,
        kind: params
            .kind
            .as_deref()
            .map(Kind::new)
            .transpose()
            .map_err(|error| invalid("kind", &error))?,
        due_from: params
            .due_after
            .as_deref()
            .map(parse_time)
            .transpose()
            .map_err(|error| invalid("due_after", &error))?,
        due_before: params
            .due_before
            .as_deref()
            .map(parse_time)
            .transpose()
            .map_err(|error| invalid("due_before", &error))?,
    };
    let limit = params.limit.unwrap_or(PAGE_SIZE_DEFAULT);
    if !(1..=limits::PAGE_SIZE_MAX).contains(&limit) {
        return Err(invalid(
            "limit",
            &format!("{limit} is outside 1 ..= {}", limits::PAGE_SIZE_MAX),
        ));
    }
    let after = params
        .cursor
        .as_deref()
        .map(|text| text.parse::<JobId>().map(Cursor))
        .transpose()
        .map_err(|_| invalid("cursor", &"is not a cursor this server gave"))?;
    let page = app.store.list(filter, after, limit).await?;
    let mut jobs = Vec::with_capacity(page.jobs.len());
    let mut bytes = 0;
    let mut next = page.next.map(|Cursor(id)| id.to_string());
    for job in &page.jobs {
        bytes += job.payload.as_str().len();
        if bytes > PAGE_BYTES_MAX && !jobs.is_empty() {
            // A page of large payloads ends early; the next starts after the last one sent.
            next = jobs.last().map(|last: &JobView| last.id.clone());
            break;
        }
        jobs.push(JobView::from_job(job));
    }
    Ok(axum::Json(JobList {
        jobs,
        next_cursor: next,
    }))
}

/// Cancel a job that has not finished. A running webhook is told to stop at its next heartbeat;
/// a remote worker holding the job is refused its next call (`lease_lost`).
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = JobView), (status = 404, body = Problem), (status = 409, description = "Already finished", body = Problem)),
    security(("bearer" = ["write"]))
)]
pub async fn cancel_job(
    State(app): State<Arc<App>>,
    _: Authorized<Write>,
    PathParam(id): PathParam,
) -> Result<axum::Json<JobView>, ApiError> {
    let id = job_id(&id)?;
    // Through the engine, so a handler running on this node hears of it at once.
    let job = app.scheduler.cancel(id).await?;
    Ok(axum::Json(JobView::from_job(&job)))
}

/// Move a pending job to a new time, or revive a dead or cancelled one.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/reschedule", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    request_body = Reschedule,
    responses((status = 200, body = JobView), (status = 404, body = Problem), (status = 409, description = "Running or succeeded", body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["write"]))
)]
pub async fn reschedule_job(
    State(app): State<Arc<App>>,
    _: Authorized<Write>,
    PathParam(id): PathParam,
    Json(spec): Json<Reschedule>,
) -> Result<axum::Json<JobView>, ApiError> {
    let id = job_id(&id)?;
    let now = app.now();
    let run_at = match (&spec.run_at, spec.delay_ms) {
        (Some(text), None) => {
            parse_time(text).map_err(|error| ApiError::validation(format!("run_at: {error}")))?
        }
        (None, Some(delay_ms)) => {
            let delay = Duration::from_millis(delay_ms);
            if delay > limits::RUN_AT_FUTURE_MAX {
                return Err(ApiError::validation(format!(
                    "delay_ms: {delay_ms} is further ahead than the limit of {} ms",
                    limits::RUN_AT_FUTURE_MAX.as_millis()
                )));
            }
            now.add(delay)
        }
        _ => {
            return Err(ApiError::validation(
                "run_at: give exactly one of run_at and delay_ms",
            ));
        }
    };
    let job = app.store.reschedule(id, run_at, now).await?;
    app.announce(run_at);
    Ok(axum::Json(JobView::from_job(&job)))
}

/// Retry a dead job now, with its attempts reset.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = JobView), (status = 404, body = Problem), (status = 409, description = "Not dead", body = Problem)),
    security(("bearer" = ["write"]))
)]
pub async fn retry_job(
    State(app): State<Arc<App>>,
    _: Authorized<Write>,
    PathParam(id): PathParam,
) -> Result<axum::Json<JobView>, ApiError> {
    let id = job_id(&id)?;
    let job = app
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    if job.state != JobState::Dead {
        return Err(ApiError::from(punctual_core::StoreError::Conflict {
            id,
            state: job.state,
            operation: "retry (only a dead job can be retried)",
        }));
    }
    let now = app.now();
    let job = app.store.reschedule(id, now, now).await?;
    app.announce(now);
    Ok(axum::Json(JobView::from_job(&job)))
}

/// Retry every dead job matching a filter (up to `limit`), due now.
#[utoipa::path(
    post, path = "/v1/jobs/redrive", tag = "jobs",
    request_body = Redrive,
    responses((status = 200, body = RedriveResult), (status = 400, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = ["write"]))
)]
pub async fn redrive_jobs(
    State(app): State<Arc<App>>,
    _: Authorized<Write>,
    Json(spec): Json<Redrive>,
) -> Result<axum::Json<RedriveResult>, ApiError> {
    let invalid = |name: &str, error: &dyn std::fmt::Display| {
        ApiError::validation(format!("{name}: {error}"))
    };
    let limit = spec.limit.unwrap_or(REDRIVE_MAX);
    if !(1..=REDRIVE_MAX).contains(&limit) {
        return Err(invalid(
            "limit",
            &format!("{limit} is outside 1 ..= {REDRIVE_MAX}"),
        ));
    }
    let webhooks_only = match spec.target.as_deref() {
        None => None,
        Some("webhook") => Some(true),
        Some("worker") => Some(false),
        Some(other) => {
            return Err(invalid(
                "target",
                &format!("{other:?} is not webhook or worker"),
            ));
        }
    };
    let mut kind = spec
        .kind
        .as_deref()
        .map(Kind::new)
        .transpose()
        .map_err(|error| invalid("kind", &error))?;
    if webhooks_only == Some(true) {
        if kind
            .as_ref()
            .is_some_and(|kind| kind.as_str() != WEBHOOK_KIND)
        {
            return Err(invalid("kind", &"a webhook job has no kind of its own"));
        }
        kind = Some(Kind::new(WEBHOOK_KIND).expect("the webhook kind is a valid name"));
    }
    let filter = JobFilter {
        queue: spec
            .queue
            .as_deref()
            .map(Queue::new)
            .transpose()
            .map_err(|error| invalid("queue", &error))?,
        state: Some(JobState::Dead),
        kind,
        ..JobFilter::default()
    };
    let now = app.now();
    let mut redriven: u64 = 0;
    let mut after = None;
    let mut more = false;
    'pages: loop {
        let page = app
            .store
            .list(filter.clone(), after, limits::PAGE_SIZE_MAX)
            .await?;
        let mut chosen: Vec<JobId> = Vec::new();
        for job in &page.jobs {
            if webhooks_only == Some(false) && job.kind.as_str() == WEBHOOK_KIND {
                continue;
            }
            if redriven + chosen.len() as u64 == u64::from(limit) {
                more = true;
                break;
            }
            chosen.push(job.id);
        }
        for chunk in chosen.chunks(REDRIVE_CONCURRENCY) {
            let mut tasks = tokio::task::JoinSet::new();
            for id in chunk {
                let store = app.store.clone();
                let id = *id;
                tasks.spawn(async move { store.reschedule(id, now, now).await });
            }
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok(Ok(_)) => redriven += 1,
                    // Retried, cancelled or purged meanwhile: not ours to redrive any more.
                    Ok(Err(
                        punctual_core::StoreError::Conflict { .. }
                        | punctual_core::StoreError::NotFound(_),
                    )) => {}
                    Ok(Err(error)) => return Err(error.into()),
                    Err(error) => {
                        return Err(ApiError::unavailable(format!(
                            "a redrive task failed: {error}"
                        )));
                    }
                }
            }
        }
        if more {
            break 'pages;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if redriven > 0 {
        app.announce(now);
    }
    Ok(axum::Json(RedriveResult { redriven, more }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_bare_or_quoted_and_bounded() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).expect("absent"), None);
        headers.insert(
            "idempotency-key",
            HeaderValue::from_static("\"8e03978e-40d5-43e8\""),
        );
        assert_eq!(
            idempotency_key(&headers).expect("quoted").as_deref(),
            Some("8e03978e-40d5-43e8")
        );
        headers.insert("idempotency-key", HeaderValue::from_static("abc"));
        assert_eq!(
            idempotency_key(&headers).expect("bare").as_deref(),
            Some("abc")
        );
        headers.insert(
            "idempotency-key",
            HeaderValue::from_str(&"k".repeat(256)).expect("ascii"),
        );
        assert!(idempotency_key(&headers).is_err());
        headers.insert("idempotency-key", HeaderValue::from_static("\"\""));
        assert!(idempotency_key(&headers).is_err());
    }

    #[test]
    fn fingerprints_tell_routes_and_bodies_apart() {
        assert_eq!(
            fingerprint("POST /v1/jobs", b"{}"),
            fingerprint("POST /v1/jobs", b"{}")
        );
        assert_ne!(
            fingerprint("POST /v1/jobs", b"{}"),
            fingerprint("POST /v1/jobs/batch", b"{}")
        );
        assert_ne!(
            fingerprint("POST /v1/jobs", b"{}"),
            fingerprint("POST /v1/jobs", b"{ }")
        );
    }
}
