//! `/v1/schedules`: schedules as data. Create (`POST`, a conflict if the name is taken),
//! create or replace by name (`PUT /v1/schedules/{key}`: what a deploy runs), get and list,
//! change (`PATCH`: the fields given replace the stored ones), pause, resume, trigger, delete,
//! and the occurrence ledger, newest first. `POST /v1/schedules/explain` answers what a
//! recurrence does around clock changes and after an outage without touching the store.
//!
//! Every input is validated into a `ScheduleDefinition` before anything is stored, so a refused
//! request changes nothing: the job template through `jobs::new_job` (the same checks as a
//! job's, the webhook's SSRF guard included), the rest through punctual-core. Which occurrence
//! fires is the engine's (`punctual::Schedules`, `recurring::plan`); this module only carries
//! requests to it and answers back.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use punctual::Upserted;
use punctual_core::recurring::explain::{self, ExplainError, Outage};
use punctual_core::{
    JobTemplate, Misfire, MisfireAction, OverlapPolicy, Schedule, ScheduleDefinition, ScheduleId,
    ScheduleKey, ScheduleName, StoredSchedule, Timestamp, ValidationError, limits,
};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::PathParam;
use crate::api::jobs::{new_job, parse_time, query};
use crate::app::{App, Authorized, Read, Write};
use crate::body::{JOB_BODY_BYTES_MAX, Json};
use crate::dto::{
    BackoffSpec, ChangeSchedule, CreateJob, CreateSchedule, ExplainSchedule, Explanation,
    MisfireSpec, OccurrenceList, OccurrenceView, ScheduleList, ScheduleView, TriggeredSchedule,
    UpsertedSchedule, WebhookSpec,
};
use crate::error::{ApiError, Problem};
use crate::webhook::target::{Envelope, WEBHOOK_KIND};

/// The page size of a listing when none is asked for.
const PAGE_SIZE_DEFAULT: usize = 100;
/// How many firings an explanation lists when none is asked for.
const EXPLAIN_COUNT_DEFAULT: u32 = 10;
/// Names a schedule may not have: `explain` is a route of its own, and `.` and `..` are not
/// path segments a client can send.
const RESERVED_NAMES: [&str; 3] = ["explain", ".", ".."];

fn invalid(field: &str, error: &dyn std::fmt::Display) -> ApiError {
    ApiError::validation(format!("{field}: {error}"))
}

/// A name for a new or renamed schedule. One that reads as a UUID is refused: a key in a path
/// is an id when it is a UUID, so such a schedule could not be found by its name.
fn schedule_name(text: &str, field: &str) -> Result<ScheduleName, ApiError> {
    let name = ScheduleName::new(text).map_err(|error| invalid(field, &error))?;
    if text.parse::<ScheduleId>().is_ok() {
        return Err(invalid(
            field,
            &format!("{text:?} is a UUID, which names a schedule by its id; choose another name"),
        ));
    }
    if RESERVED_NAMES.contains(&text) {
        return Err(invalid(field, &format!("{text:?} is reserved")));
    }
    Ok(name)
}

/// The schedule a path names: an id if it is a UUID, else a name. One that can be neither is
/// not found, as a job id that is not a UUID is.
fn schedule_key(text: &str) -> Result<ScheduleKey, ApiError> {
    ScheduleKey::parse(text)
        .map_err(|_| ApiError::not_found(format!("no schedule {text:?} (give its id or name)")))
}

fn key_text(key: &ScheduleKey) -> String {
    match key {
        ScheduleKey::Id(id) => id.to_string(),
        ScheduleKey::Name(name) => name.to_string(),
    }
}

async fn stored(app: &App, key: &ScheduleKey) -> Result<StoredSchedule, ApiError> {
    app.scheduler
        .schedules()
        .get(key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no schedule {}", key_text(key))))
}

/// `cron` in `time_zone`, or `interval_ms`.
fn recurrence(
    cron: Option<&str>,
    time_zone: Option<&str>,
    interval_ms: Option<u64>,
) -> Result<Schedule, ApiError> {
    match (cron, interval_ms) {
        (Some(cron), None) => Schedule::cron(cron, time_zone.unwrap_or("UTC")).map_err(|error| {
            let field = match error {
                ValidationError::UnknownTimeZone(_) => "time_zone",
                _ => "cron",
            };
            invalid(field, &error)
        }),
        (None, Some(interval_ms)) => {
            if time_zone.is_some() {
                return Err(invalid("time_zone", &"applies only to cron"));
            }
            Schedule::interval(Duration::from_millis(interval_ms))
                .map_err(|error| invalid("interval_ms", &error))
        }
        (Some(_), Some(_)) => Err(invalid(
            "cron",
            &"give either cron or interval_ms, not both",
        )),
        (None, None) => Err(invalid(
            "cron",
            &"say when: cron (with time_zone) or interval_ms",
        )),
    }
}

/// `spec` over `base`: each field given replaces `base`'s.
fn misfire(spec: Option<&MisfireSpec>, base: Misfire, at: &str) -> Result<Misfire, ApiError> {
    let Some(spec) = spec else {
        return Ok(base);
    };
    let field = |name: &str| format!("{at}.{name}");
    let base_limit = match base.action {
        MisfireAction::All { limit } => Some(limit),
        _ => None,
    };
    let limit_refused = || invalid(&field("limit"), &"applies only to policy all");
    let action = match spec.policy.as_deref() {
        Some("skip" | "latest") if spec.limit.is_some() => return Err(limit_refused()),
        Some("skip") => MisfireAction::Skip,
        Some("latest") => MisfireAction::Latest,
        Some("all") => MisfireAction::All {
            limit: spec
                .limit
                .or(base_limit)
                .unwrap_or(limits::CATCH_UP_LIMIT_MAX),
        },
        Some(other) => {
            return Err(invalid(
                &field("policy"),
                &format!("{other:?} is not skip, latest or all"),
            ));
        }
        None => match (spec.limit, base_limit) {
            (Some(limit), Some(_)) => MisfireAction::All { limit },
            (Some(_), None) => return Err(limit_refused()),
            (None, _) => base.action,
        },
    };
    Ok(Misfire {
        action,
        grace: spec.grace_ms.map_or(base.grace, Duration::from_millis),
        catch_up_window: spec
            .catch_up_window_ms
            .map_or(base.catch_up_window, Duration::from_millis),
    })
}

fn overlap(text: Option<&str>, base: OverlapPolicy) -> Result<OverlapPolicy, ApiError> {
    text.map_or(Ok(base), |text| {
        OverlapPolicy::parse(text).map_err(|error| invalid("overlap", &error))
    })
}

fn optional_time(text: Option<&str>, field: &str) -> Result<Option<Timestamp>, ApiError> {
    text.map(|text| parse_time(text).map_err(|error| invalid(field, &error)))
        .transpose()
}

/// Checks the definition's fields against each other, naming the request field at fault.
fn check(definition: &ScheduleDefinition) -> Result<(), ApiError> {
    definition.validate().map_err(|error| {
        let field = match &error {
            ValidationError::BadWindow { .. } => "end_at",
            ValidationError::DurationOutOfRange {
                field: "jitter", ..
            } => "jitter_ms",
            ValidationError::DurationOutOfRange {
                field: "misfire grace",
                ..
            } => "misfire.grace_ms",
            ValidationError::DurationOutOfRange { .. } => "misfire.catch_up_window_ms",
            ValidationError::CatchUpLimitOutOfRange { .. } => "misfire.limit",
            ValidationError::AttemptMaxOutOfRange { .. } => "attempt_max",
            _ => "schedule",
        };
        invalid(field, &error)
    })
}

/// The job template a schedule's occurrences make, validated as a job due now would be.
async fn template(app: &App, spec: CreateJob, now: Timestamp) -> Result<JobTemplate, ApiError> {
    let job = new_job(app, spec, now, "").await?;
    Ok(JobTemplate {
        queue: job.queue,
        kind: job.kind,
        payload: job.payload,
        priority: job.priority,
        attempt_max: job.attempt_max,
        retry: job.retry,
    })
}

/// A whole definition from a creation (or replacement) named `name`.
async fn definition(
    app: &App,
    spec: CreateSchedule,
    name: ScheduleName,
    now: Timestamp,
) -> Result<ScheduleDefinition, ApiError> {
    let recurrence = recurrence(
        spec.cron.as_deref(),
        spec.time_zone.as_deref(),
        spec.interval_ms,
    )?;
    let job = CreateJob {
        kind: spec.kind,
        webhook: spec.webhook,
        payload: spec.payload,
        queue: spec.queue,
        priority: spec.priority,
        attempt_max: spec.attempt_max,
        backoff: spec.backoff,
        ..CreateJob::default()
    };
    let template = template(app, job, now).await?;
    let mut definition = ScheduleDefinition::new(name, recurrence, template);
    definition.start_at = optional_time(spec.start_at.as_deref(), "start_at")?;
    definition.end_at = optional_time(spec.end_at.as_deref(), "end_at")?;
    definition.jitter = Duration::from_millis(spec.jitter_ms.unwrap_or(0));
    definition.misfire = misfire(spec.misfire.as_ref(), Misfire::default(), "misfire")?;
    definition.overlap = overlap(spec.overlap.as_deref(), OverlapPolicy::default())?;
    check(&definition)?;
    Ok(definition)
}

/// The stored definition with `change` applied.
async fn changed(
    app: &App,
    stored: &StoredSchedule,
    change: ChangeSchedule,
    now: Timestamp,
) -> Result<ScheduleDefinition, ApiError> {
    let old = &stored.definition;
    let mut definition = old.clone();
    if let Some(name) = &change.name {
        definition.name = schedule_name(name, "name")?;
    }
    if change.cron.is_some() || change.time_zone.is_some() || change.interval_ms.is_some() {
        let old_cron = old.recurrence.cron_expression();
        definition.recurrence = match (&change.cron, &change.time_zone, change.interval_ms) {
            (None, Some(zone), None) => match old_cron {
                Some((cron, _)) => recurrence(Some(cron), Some(zone), None)?,
                None => return Err(invalid("time_zone", &"applies only to cron")),
            },
            (Some(cron), zone, None) => recurrence(
                Some(cron),
                zone.as_deref().or(old_cron.map(|(_, zone)| zone)),
                None,
            )?,
            (cron, zone, interval_ms) => recurrence(cron.as_deref(), zone.as_deref(), interval_ms)?,
        };
    }
    if let Some(start_at) = &change.start_at {
        definition.start_at = optional_time(start_at.as_deref(), "start_at")?;
    }
    if let Some(end_at) = &change.end_at {
        definition.end_at = optional_time(end_at.as_deref(), "end_at")?;
    }
    if let Some(jitter_ms) = change.jitter_ms {
        definition.jitter = Duration::from_millis(jitter_ms);
    }
    let job_changed = change.kind.is_some()
        || change.webhook.is_some()
        || change.payload.is_some()
        || change.queue.is_some()
        || change.priority.is_some()
        || change.attempt_max.is_some()
        || change.backoff.is_some();
    if job_changed {
        let stored_template = &old.template;
        let (old_kind, old_webhook, old_payload) = open_template(stored_template);
        let (kind, webhook) = if change.kind.is_some() || change.webhook.is_some() {
            (change.kind, change.webhook)
        } else {
            (old_kind, old_webhook)
        };
        let retry = stored_template.retry;
        let backoff = change.backoff.as_ref();
        let job = CreateJob {
            kind,
            webhook,
            payload: Some(change.payload.unwrap_or(old_payload)),
            queue: Some(
                change
                    .queue
                    .unwrap_or_else(|| stored_template.queue.to_string()),
            ),
            priority: Some(change.priority.unwrap_or(stored_template.priority.get())),
            attempt_max: Some(change.attempt_max.unwrap_or(stored_template.attempt_max)),
            backoff: Some(BackoffSpec {
                base_ms: Some(
                    backoff
                        .and_then(|backoff| backoff.base_ms)
                        .unwrap_or(millis(retry.backoff_base())),
                ),
                max_ms: Some(
                    backoff
                        .and_then(|backoff| backoff.max_ms)
                        .unwrap_or(millis(retry.backoff_max())),
                ),
                jitter_percent: Some(
                    backoff
                        .and_then(|backoff| backoff.jitter_percent)
                        .unwrap_or(retry.jitter_percent()),
                ),
            }),
            ..CreateJob::default()
        };
        definition.template = template(app, job, now).await?;
    }
    definition.misfire = misfire(change.misfire.as_ref(), old.misfire, "misfire")?;
    definition.overlap = overlap(change.overlap.as_deref(), old.overlap)?;
    check(&definition)?;
    Ok(definition)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A stored template's target and payload as a request gives them, with a webhook's headers
/// as stored (not redacted: they are sent back to the checks, never to a client).
fn open_template(
    template: &JobTemplate,
) -> (
    Option<String>,
    Option<WebhookSpec>,
    Box<serde_json::value::RawValue>,
) {
    let raw = |text: &str| {
        serde_json::value::RawValue::from_string(text.to_owned()).unwrap_or_else(|_| {
            serde_json::value::RawValue::from_string("null".to_owned()).expect("null is JSON")
        })
    };
    if template.kind.as_str() == WEBHOOK_KIND
        && let Ok(envelope) = Envelope::parse(template.payload.as_str())
    {
        let target = &envelope.webhook;
        let webhook = WebhookSpec {
            url: target.url.clone(),
            method: Some(target.method.as_str().to_owned()),
            headers: Some(target.headers.clone()),
            timeout_ms: Some(target.timeout_ms),
        };
        return (None, Some(webhook), raw(envelope.payload.get()));
    }
    (
        Some(template.kind.to_string()),
        None,
        raw(template.payload.as_str()),
    )
}

fn created(location: String, body: &impl serde::Serialize) -> Response {
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Create a schedule. Its first occurrence is the first after now (or after `start_at`).
#[utoipa::path(
    post, path = "/v1/schedules", tag = "schedules",
    request_body = CreateSchedule,
    responses(
        (status = 201, description = "Stored", body = ScheduleView),
        (status = 400, body = Problem),
        (status = 409, description = "A schedule has this name", body = Problem),
        (status = 422, body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = ["write"]))
)]
pub async fn create_schedule(
    State(app): State<Arc<App>>,
    _: Authorized<Write>,
    Json(spec): Json<CreateSchedule, JOB_BODY_BYTES_MAX>,
) -> Result<Response, ApiError> {
    let name = match spec.name.as_deref() {
        Some(name) => schedule_name(name, "name")?,
        None => return Err(invalid("name", &"a schedule needs a name")),
    };
    let definition = definition(&app, spec, name, app.now()).await?;
    let schedule = app.scheduler.schedules().create(definition).await?;
    Ok(created(
        format!("/v1/schedules/{}", schedule.id),
        &ScheduleView::from_schedule(&schedule),
    ))
}

/// Create the schedule with this name, or replace its definition (keeping its id, state and
/// history; occurrences already decided stay decided). The same definition again is
/// `unchanged`, and nothing is written: a deploy can upsert its schedules every time.
#[utoipa::path(
    put, path = "/v1/schedules/{key}", tag = "schedules",
    params(("key" = String, Path, description = "The schedule's name")),
    request_body = CreateSchedule,
    responses(
        (status = 201, description = "Created", body = UpsertedSchedule),
        (status = 200, description = "Updated, or unchanged", body = UpsertedSchedule),
        (status = 400, body = Problem),
        (status = 422, body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = ["write"]))
)]
pub async fn upsert_schedule(
    State(app): State<Arc<App>>,
    _: Authorized<Write>,
    PathParam(key): PathParam,
    Json(spec): Json<CreateSchedule, JOB_BODY_BYTES_MAX>,
) -> Result<Response, ApiError> {
    if key.parse::<ScheduleId>().is_ok() {
        return Err(invalid(
            "key",
            &"PUT takes a schedule's name, not its id; change a schedule by id with PATCH",
        ));
    }
    let name = schedule_name(&key, "key")?;
    if let Some(given) = &spec.name
        && given != &key
    {
        return Err(invalid(
            "name",
            &format!("{given:?} is not the name in the path, {key:?}"),
        ));
    }
    let definition = definition(&app, spec, name, app.now()).await?;
    let (schedule, outcome) = app.scheduler.schedules().upsert(definition).await?;
    let view = ScheduleView::from_schedule(&schedule);
    let (status, outcome) = match outcome {
        Upserted::Created => (StatusCode::CREATED, "created"),
        Upserted::Updated => (StatusCode::OK, "updated"),
        Upserted::Unchanged => (StatusCode::OK, "unchanged"),
    };
    let body = UpsertedSchedule {
        outcome: outcome.to_owned(),
        schedule: view,
    };
    if status == StatusCode::CREATED {
        return Ok(created(format!("/v1/schedules/{}", schedule.id), &body));
    }
    Ok(axum::Json(body).into_response())
}

/// Get a schedule, by id or name.
#[utoipa::path(
    get, path = "/v1/schedules/{key}", tag = "schedules",
    params(("key" = String, Path, description = "The schedule's id or name")),
    responses((status = 200, body = ScheduleView), (status = 404, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = ["read"]))
)]
pub async fn get_schedule(
    State(app): State<Arc<App>>,
    _: Authorized<Read>,
    PathParam(key): PathParam,
) -> Result<axum::Json<ScheduleView>, ApiError> {
    let schedule = stored(&app, &schedule_key(&key)?).await?;
    Ok(axum::Json(ScheduleView::from_schedule(&schedule)))
}

/// A page of a listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// At most this many, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[param(min_length = 1, max_length = 128)]
    cursor: Option<String>,
}

fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(PAGE_SIZE_DEFAULT);
    if !(1..=limits::PAGE_SIZE_MAX).contains(&limit) {
        return Err(invalid(
            "limit",
            &format!("{limit} is outside 1 ..= {}", limits::PAGE_SIZE_MAX),
        ));
    }
    Ok(limit)
}

/// Asks a store for one more than `limit` (stores give at most a full page), so that a page
/// knows whether another follows.
fn fetch_size(limit: usize) -> usize {
    (limit + 1).min(limits::PAGE_SIZE_MAX)
}

/// Whether another page follows a fetch of `fetched` entries for a page of `limit`.
fn has_more(fetched: usize, limit: usize) -> bool {
    fetched > limit || (fetched == limit && limit == limits::PAGE_SIZE_MAX)
}

/// List schedules, a page at a time, in name order.
#[utoipa::path(
    get, path = "/v1/schedules", tag = "schedules",
    params(PageQuery),
    responses((status = 200, body = ScheduleList), (status = 400, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = ["read"]))
)]
pub async fn list_schedules(
    State(app): State<Arc<App>>,
    _: Authorized<Read>,
    uri: Uri,
) -> Result<axum::Json<ScheduleList>, ApiError> {
    let params: PageQuery = query(&uri)?;
    let limit = page_limit(params.limit)?;
    let after = params
        .cursor
        .as_deref()
        .map(ScheduleName::new)
        .transpose()
        .map_err(|_| invalid("cursor", &"is not a cursor this server gave"))?;
    let mut schedules = app
        .scheduler
        .schedules()
        .list(after.as_ref(), fetch_size(limit))
        .await?;
    let more = has_more(schedules.len(), limit);
    schedules.truncate(limit);
    let next_cursor = more
        .then(|| {
            schedules
                .last()
                .map(|last| last.definition.name.to_string())
        })
        .flatten();
    Ok(axum::Json(ScheduleList {
        schedules: schedules.iter().map(ScheduleView::from_schedule).collect(),
        next_cursor,
    }))
}

/// Change a schedule, by id or name: each field given replaces the stored one, each omitted
/// field keeps it (`start_at` and `end_at` are removed by `null`). It keeps its id, state and
/// history; occurrences already decided stay decided. (`PUT /v1/schedules/{key}` replaces a
/// whole definition instead.)
#[utoipa::path(
    patch, path = "/v1/schedules/{key}", tag = "schedules",
    params(("key" = String, Path, description = "The schedule's id or name")),
    request_body = ChangeSchedule,
    responses(
        (status = 200, body = ScheduleView),
        (status = 404, body = Problem),
        (status = 409, description = "Renamed to a name another schedule has", body = Problem),
        (status = 422, body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = ["write"]))
)]
pub async fn change_schedule(
    State(app): State<Arc<App>>,
    _: Authorized<Write>,
    PathParam(key): PathParam,
    Json(change): Json<ChangeSchedule, JOB_BODY_BYTES_MAX>,
) -> Result<axum::Json<ScheduleView>, ApiError> {
    let key = schedule_key(&key)?;
    let schedules = app.scheduler.schedules();
    let current = stored(&app, &key).await?;
    let definition = changed(&app, &current, change, app.now()).await?;
    if definition.name != current.definition.name
        && schedules
            .get(&ScheduleKey::Name(definition.name.clone()))
            .await?
            .is_some()
    {
        return Err(ApiError::exists(format!(
            "a schedule named {} already exists",
            definition.name
        )));
    }
    let schedule = schedules
        .update(&ScheduleKey::Id(current.id), definition)
        .await?;
    Ok(axum::Json(ScheduleView::from_schedule(&schedule)))
}

/// Pause a schedule: its occurrences are skipped, and recorded as skipped (`paused`), until it
/// is resumed. Jobs already inserted ahead of their time still run.
#[utoipa::path(
    post, path = "/v1/schedules/{key}/pause", tag = "schedules",
    params(("key" = String, Path, description = "The schedule's id or name")),
    responses((status = 200, body = ScheduleView), (status = 404, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = ["write"]))
)]
pub async fn pause_schedule(
    State(app): State<Arc<App>>,
    _: Authorized<Write>,
    PathParam(key): PathParam,
) -> Result<axum::Json<ScheduleView>, ApiError> {
    let schedule = app
        .scheduler
        .schedules()
        .pause(&schedule_key(&key)?)
        .await?;
    Ok(axum::Json(ScheduleView::from_schedule(&schedule)))
}

/// Resume a paused schedule: its next occurrences fire again.
#[utoipa::path(
    post, path = "/v1/schedules/{key}/resume", tag = "schedules",
    params(("key" = String, Path, description = "The schedule's id or name")),
    responses((status = 200, body = ScheduleView), (status = 404, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = ["write"]))
)]
pub async fn resume_schedule(
    State(app): State<Arc<App>>,
    _: Authorized<Write>,
    PathParam(key): PathParam,
) -> Result<axum::Json<ScheduleView>, ApiError> {
    let schedule = app
        .scheduler
        .schedules()
        .resume(&schedule_key(&key)?)
        .await?;
    Ok(axum::Json(ScheduleView::from_schedule(&schedule)))
}

/// Fire a schedule now, whatever its state and policies: a job due at once, recorded in the
/// ledger as manual. Its own occurrences go on as before.
#[utoipa::path(
    post, path = "/v1/schedules/{key}/trigger", tag = "schedules",
    params(("key" = String, Path, description = "The schedule's id or name")),
    responses(
        (status = 201, description = "The job is stored, due now", body = TriggeredSchedule),
        (status = 404, body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = ["write"]))
)]
pub async fn trigger_schedule(
    State(app): State<Arc<App>>,
    _: Authorized<Write>,
    PathParam(key): PathParam,
) -> Result<Response, ApiError> {
    let key = schedule_key(&key)?;
    let schedules = app.scheduler.schedules();
    let job = schedules.trigger(&key).await?;
    app.announce(app.now());
    // Read back for its id and name; deleted meanwhile, the key given names it.
    let (schedule_id, name) = match schedules.get(&key).await? {
        Some(schedule) => (
            schedule.id.to_string(),
            schedule.definition.name.to_string(),
        ),
        None => (key_text(&key), key_text(&key)),
    };
    Ok(created(
        format!("/v1/jobs/{job}"),
        &TriggeredSchedule {
            job_id: job.to_string(),
            schedule_id,
            name,
        },
    ))
}

/// Delete a schedule and its ledger; the jobs it made stay. Answers the schedule as it was.
#[utoipa::path(
    delete, path = "/v1/schedules/{key}", tag = "schedules",
    params(("key" = String, Path, description = "The schedule's id or name")),
    responses((status = 200, body = ScheduleView), (status = 404, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = ["write"]))
)]
pub async fn delete_schedule(
    State(app): State<Arc<App>>,
    _: Authorized<Write>,
    PathParam(key): PathParam,
) -> Result<axum::Json<ScheduleView>, ApiError> {
    let key = schedule_key(&key)?;
    let schedule = stored(&app, &key).await?;
    if !app
        .scheduler
        .schedules()
        .delete(&ScheduleKey::Id(schedule.id))
        .await?
    {
        return Err(ApiError::not_found(format!(
            "no schedule {}",
            key_text(&key)
        )));
    }
    Ok(axum::Json(ScheduleView::from_schedule(&schedule)))
}

/// A schedule's occurrence ledger, newest first, a page at a time: what each occurrence
/// became (fired, with its job; skipped, and why; failed). A run of skips for one reason is
/// one entry with a count.
#[utoipa::path(
    get, path = "/v1/schedules/{key}/occurrences", tag = "schedules",
    params(("key" = String, Path, description = "The schedule's id or name"), OccurrenceQuery),
    responses((status = 200, body = OccurrenceList), (status = 404, body = Problem), (status = 400, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = ["read"]))
)]
pub async fn list_occurrences(
    State(app): State<Arc<App>>,
    _: Authorized<Read>,
    PathParam(key): PathParam,
    uri: Uri,
) -> Result<axum::Json<OccurrenceList>, ApiError> {
    let key = schedule_key(&key)?;
    let params: OccurrenceQuery = query(&uri)?;
    let limit = page_limit(params.limit)?;
    let before = params
        .cursor
        .as_deref()
        .map(str::parse::<u64>)
        .transpose()
        .map_err(|_| invalid("cursor", &"is not a cursor this server gave"))?;
    let mut entries = app
        .scheduler
        .schedules()
        .occurrences(&key, before, fetch_size(limit))
        .await?;
    let more = has_more(entries.len(), limit);
    entries.truncate(limit);
    let next_cursor = more
        .then(|| entries.last().map(|last| last.seq.to_string()))
        .flatten();
    Ok(axum::Json(OccurrenceList {
        occurrences: entries.iter().map(OccurrenceView::from_entry).collect(),
        next_cursor,
    }))
}

/// A page of a ledger.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OccurrenceQuery {
    /// At most this many entries, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page: entries older than it.
    #[param(pattern = r"^[0-9]{1,19}$")]
    cursor: Option<String>,
}

/// Explain a recurrence without storing anything: its next firings in local time and UTC,
/// each marked where a clock change moves it (spring forward) or keeps it from repeating (fall
/// back), and the spans of local time a large clock change skips; with `outage`, what
/// recovering from it fires and skips, as the engine's own plan decides. `punctual schedules
/// explain` answers the same without a server.
#[utoipa::path(
    post, path = "/v1/schedules/explain", tag = "schedules",
    request_body = ExplainSchedule,
    responses((status = 200, body = Explanation), (status = 400, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["read"]))
)]
pub async fn explain_schedule(
    State(app): State<Arc<App>>,
    _: Authorized<Read>,
    Json(question): Json<ExplainSchedule>,
) -> Result<axum::Json<Explanation>, ApiError> {
    Ok(axum::Json(explain(&question, app.now())?))
}

/// The answer to `question`, judged at `now` (the start when none is given). Pure: the API and
/// the CLI both answer with it.
pub fn explain(question: &ExplainSchedule, now: Timestamp) -> Result<Explanation, ApiError> {
    let schedule = recurrence(
        question.cron.as_deref(),
        question.time_zone.as_deref(),
        question.interval_ms,
    )?;
    let zone = schedule.time_zone();
    let read = |text: &str, field: &str| {
        explain::parse_start(text, zone).ok_or_else(|| {
            invalid(
                field,
                &format!(
                    "{text:?} is not RFC 3339 (2026-03-29T02:30:00+01:00), a local date \
                     (2026-03-29) or a local date and time (2026-03-29T02:30)"
                ),
            )
        })
    };
    let from = match question.from.as_deref() {
        Some(text) => read(text, "from")?,
        None => now,
    };
    let count = question.count.unwrap_or(EXPLAIN_COUNT_DEFAULT);
    let upcoming = explain::upcoming(&schedule, from, count as usize)
        .map_err(|error| explain_error(error, "count"))?;
    let outage = match &question.outage {
        Some(spec) => Some(Outage {
            from: read(&spec.from, "outage.from")?,
            to: read(&spec.to, "outage.to")?,
            misfire: misfire(question.misfire.as_ref(), Misfire::default(), "misfire")?,
            overlap: overlap(question.overlap.as_deref(), OverlapPolicy::default())?,
            previous_unfinished: spec.previous_unfinished.unwrap_or(false),
        }),
        None => {
            if question.misfire.is_some() || question.overlap.is_some() {
                return Err(invalid(
                    "outage",
                    &"misfire and overlap say what recovering from an outage does: give the outage",
                ));
            }
            None
        }
    };
    let recovery = outage
        .as_ref()
        .map(|outage| explain::recover(&schedule, outage))
        .transpose()
        .map_err(|error| explain_error(error, "outage"))?;
    Ok(Explanation::from_core(
        &schedule,
        from,
        &upcoming,
        outage.as_ref().zip(recovery.as_ref()),
    ))
}

fn explain_error(error: ExplainError, field: &str) -> ApiError {
    let field = match &error {
        ExplainError::CountOutOfRange { .. } => "count",
        ExplainError::OutageWindow { .. } => "outage.to",
        ExplainError::OutageTooLong { .. } => "outage",
        ExplainError::Invalid(ValidationError::CatchUpLimitOutOfRange { .. }) => "misfire.limit",
        ExplainError::Invalid(ValidationError::DurationOutOfRange {
            field: "misfire grace",
            ..
        }) => "misfire.grace_ms",
        ExplainError::Invalid(ValidationError::DurationOutOfRange { .. }) => {
            "misfire.catch_up_window_ms"
        }
        ExplainError::Invalid(_) => field,
    };
    invalid(field, &error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_read_as_ids_or_routes_are_refused() {
        assert!(schedule_name("nightly-report", "name").is_ok());
        assert!(schedule_name("team/nightly", "name").is_ok());
        for bad in [
            "0193f0e4-0000-7000-8000-000000000000",
            "explain",
            ".",
            "..",
            "",
            "with space",
        ] {
            assert!(schedule_name(bad, "name").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_misfire_spec_replaces_only_what_it_gives() {
        let base = Misfire::default();
        let all = MisfireSpec {
            policy: Some("all".to_owned()),
            ..MisfireSpec::default()
        };
        let merged = misfire(Some(&all), base, "misfire").expect("valid");
        assert_eq!(
            merged.action,
            MisfireAction::All {
                limit: limits::CATCH_UP_LIMIT_MAX
            }
        );
        assert_eq!(merged.grace, base.grace);
        let limit = MisfireSpec {
            limit: Some(5),
            ..MisfireSpec::default()
        };
        assert_eq!(
            misfire(Some(&limit), merged, "misfire")
                .expect("valid")
                .action,
            MisfireAction::All { limit: 5 }
        );
        assert!(misfire(Some(&limit), base, "misfire").is_err());
        let skip_limit = MisfireSpec {
            policy: Some("skip".to_owned()),
            limit: Some(5),
            ..MisfireSpec::default()
        };
        assert!(misfire(Some(&skip_limit), base, "misfire").is_err());
        let unknown = MisfireSpec {
            policy: Some("sometimes".to_owned()),
            ..MisfireSpec::default()
        };
        assert!(misfire(Some(&unknown), base, "misfire").is_err());
    }

    #[test]
    fn pages_know_whether_another_follows() {
        assert_eq!(fetch_size(10), 11);
        assert_eq!(fetch_size(limits::PAGE_SIZE_MAX), limits::PAGE_SIZE_MAX);
        assert!(has_more(11, 10));
        assert!(!has_more(10, 10));
        assert!(has_more(limits::PAGE_SIZE_MAX, limits::PAGE_SIZE_MAX));
    }
}
