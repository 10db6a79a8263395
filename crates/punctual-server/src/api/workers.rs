//! Remote workers, in any language: claim due jobs of given kinds (with a bounded long poll that
//! answers as soon as a job falls due), extend leases, complete and fail, one job or a batch per
//! request. Every call after the claim carries the lease token and is fenced on it: a worker
//! whose lease was lost (expired and rescued, or the job cancelled) is refused with 409
//! `lease_lost` and changes nothing. A worker that vanishes has its jobs rescued by the leader
//! when their leases end, as an in-process handler's are.
//!
//! The fate of a failed attempt is decided by the job's `RetryPolicy` (`decide_directed`), as for
//! in-process handlers; a worker may only ask for a time or for no retry.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use punctual_core::{
    ClaimRequest, FailDirective, Job, JobId, JobState, Kind, LeaseToken, NodeId, Queue, StoreError,
};

use crate::api::PathParam;
use crate::app::{App, Authorized, Worker};
use crate::body::Json;
use crate::dto::{
    BatchOutcome, ClaimJobs, ClaimedJobView, ClaimedJobs, CompleteJobs, ExtendLeases, FailJobs,
    FailOne, FailedAttempt, HeldLease, ItemOutcome,
};
use crate::error::{ApiError, Problem};
use crate::webhook::target::RESERVED_KIND_PREFIX;

/// Most kinds one claim may name.
const CLAIM_KINDS_MAX: usize = 100;
/// Most queues one claim may name.
const CLAIM_QUEUES_MAX: usize = 100;
/// Most jobs one claim hands out.
const CLAIM_LIMIT_MAX: u32 = 1_000;
/// Most items in one batch of extensions, completions or failures.
pub const WORKER_BATCH_MAX: usize = 1_000;
/// The lease a claim grants when none is asked for, and its bounds.
const LEASE_DEFAULT: Duration = Duration::from_secs(30);
const LEASE_MIN: Duration = Duration::from_secs(1);
const LEASE_MAX: Duration = Duration::from_secs(3_600);
/// Longest long poll.
const WAIT_MAX: Duration = Duration::from_secs(30);
/// A long poll looks again at least this often, for a job it was not told of.
const WAIT_LOOK_MAX: Duration = Duration::from_secs(1);

fn lease_of(lease_ms: Option<u64>) -> Result<Duration, ApiError> {
    let lease = lease_ms.map_or(LEASE_DEFAULT, Duration::from_millis);
    if !(LEASE_MIN..=LEASE_MAX).contains(&lease) {
        return Err(ApiError::validation(format!(
            "lease_ms: {} is outside {} ..= {}",
            lease.as_millis(),
            LEASE_MIN.as_millis(),
            LEASE_MAX.as_millis()
        )));
    }
    Ok(lease)
}

/// Claim due jobs of the given kinds.
#[utoipa::path(
    post, path = "/v1/workers/claim", tag = "workers",
    request_body = ClaimJobs,
    responses(
        (status = 200, description = "The jobs claimed (none if nothing fell due within wait_ms)", body = ClaimedJobs),
        (status = 400, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = ["worker"]))
)]
pub async fn claim(
    State(app): State<Arc<App>>,
    _: Authorized<Worker>,
    Json(spec): Json<ClaimJobs>,
) -> Result<axum::Json<ClaimedJobs>, ApiError> {
    let invalid = |name: &str, error: &dyn std::fmt::Display| {
        ApiError::validation(format!("{name}: {error}"))
    };
    let holder = NodeId::new(&spec.worker).map_err(|error| invalid("worker", &error))?;
    if spec.kinds.is_empty() || spec.kinds.len() > CLAIM_KINDS_MAX {
        return Err(invalid(
            "kinds",
            &format!(
                "name 1 to {CLAIM_KINDS_MAX} kinds, not {}",
                spec.kinds.len()
            ),
        ));
    }
    let mut kinds = Vec::with_capacity(spec.kinds.len());
    for (index, kind) in spec.kinds.iter().enumerate() {
        let kind = Kind::new(kind).map_err(|error| invalid(&format!("kinds[{index}]"), &error))?;
        if kind.as_str().starts_with(RESERVED_KIND_PREFIX) {
            return Err(invalid(
                &format!("kinds[{index}]"),
                &format!("{kind:?} is reserved for punctual's own executors"),
            ));
        }
        kinds.push(kind);
    }
    let queues = match &spec.queues {
        None => None,
        Some(queues) if queues.is_empty() || queues.len() > CLAIM_QUEUES_MAX => {
            return Err(invalid(
                "queues",
                &format!("name 1 to {CLAIM_QUEUES_MAX} queues, or leave it out for all"),
            ));
        }
        Some(queues) => Some(
            queues
                .iter()
                .enumerate()
                .map(|(index, queue)| {
                    Queue::new(queue).map_err(|error| invalid(&format!("queues[{index}]"), &error))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let limit = spec.limit.unwrap_or(1);
    if !(1..=CLAIM_LIMIT_MAX).contains(&limit) {
        return Err(invalid(
            "limit",
            &format!("{limit} is outside 1 ..= {CLAIM_LIMIT_MAX}"),
        ));
    }
    let lease = lease_of(spec.lease_ms)?;
    let wait = Duration::from_millis(spec.wait_ms.unwrap_or(0));
    if wait > WAIT_MAX {
        return Err(invalid(
            "wait_ms",
            &format!("{} is more than {}", wait.as_millis(), WAIT_MAX.as_millis()),
        ));
    }

    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Registered before the claim, so an arrival between the claim and the wait is not missed.
        let arrival = app.arrivals.notified();
        tokio::pin!(arrival);
        arrival.as_mut().enable();
        let now = app.now();
        let request = ClaimRequest {
            holder: holder.clone(),
            queues: queues.clone(),
            kinds: Some(kinds.clone()),
            limit: usize::try_from(limit).unwrap_or(1),
            due_by: now,
            lease,
        };
        let claimed = app.store.claim(request, now).await?;
        if !claimed.is_empty() {
            for job in &claimed {
                app.metrics.lateness(job.run_at, now);
            }
            return Ok(axum::Json(ClaimedJobs {
                jobs: claimed.iter().map(ClaimedJobView::from_job).collect(),
            }));
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() || app.stopping.is_cancelled() {
            return Ok(axum::Json(ClaimedJobs { jobs: Vec::new() }));
        }
        let next_due = app.store.next_due(queues.as_deref(), Some(&kinds)).await?;
        let until_due = next_due.map_or(WAIT_LOOK_MAX, |due| due.duration_since(app.now()));
        let sleep = left.min(until_due).min(WAIT_LOOK_MAX);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = &mut arrival => {}
            () = app.stopping.cancelled() => {}
        }
    }
}

fn parse_id(text: &str) -> Result<JobId, ApiError> {
    text.parse::<JobId>()
        .map_err(|_| ApiError::not_found(format!("no job {text:?} (job ids are UUIDs)")))
}

fn check_batch<T>(items: &[T], name: &str) -> Result<(), ApiError> {
    if items.is_empty() || items.len() > WORKER_BATCH_MAX {
        return Err(ApiError::validation(format!(
            "{name}: a batch holds 1 to {WORKER_BATCH_MAX} items, not {}",
            items.len()
        )));
    }
    Ok(())
}

fn outcome(id: &str, result: Result<ItemOutcome, ApiError>) -> ItemOutcome {
    result.unwrap_or_else(|error| ItemOutcome {
        id: id.to_owned(),
        ok: false,
        state: None,
        lease_expires_at: None,
        error: Some(error.problem()),
    })
}

async fn extend_one(
    app: &App,
    id: &str,
    token: u64,
    lease: Duration,
) -> Result<ItemOutcome, ApiError> {
    let job_id = parse_id(id)?;
    let now = app.now();
    let expires_at = now.add(lease);
    app.store
        .extend_lease(job_id, LeaseToken(token), expires_at, now)
        .await?;
    Ok(ItemOutcome {
        id: id.to_owned(),
        ok: true,
        state: Some(JobState::Running.as_str().to_owned()),
        lease_expires_at: Some(expires_at.to_rfc3339_exact()),
        error: None,
    })
}

async fn complete_one(app: &App, id: &str, token: u64) -> Result<ItemOutcome, ApiError> {
    let job_id = parse_id(id)?;
    let held = held(app, job_id, LeaseToken(token)).await;
    app.store
        .complete(job_id, LeaseToken(token), app.now())
        .await?;
    if let Ok(job) = held {
        app.metrics.outcome(job.kind.as_str(), "succeeded");
    }
    Ok(ItemOutcome {
        id: id.to_owned(),
        ok: true,
        state: Some(JobState::Succeeded.as_str().to_owned()),
        lease_expires_at: None,
        error: None,
    })
}

/// The job `id`, if it is running under `token`; `LeaseLost` otherwise (as the store would say).
async fn held(app: &App, id: JobId, token: LeaseToken) -> Result<Job, ApiError> {
    let job = app.store.get(id).await?.ok_or(StoreError::NotFound(id))?;
    let current = job.state == JobState::Running
        && job.lease.as_ref().is_some_and(|lease| lease.token == token);
    if !current {
        return Err(StoreError::LeaseLost { id, token }.into());
    }
    Ok(job)
}

async fn fail_one(app: &App, attempt: &FailedAttempt) -> Result<ItemOutcome, ApiError> {
    let id = parse_id(&attempt.id)?;
    let token = LeaseToken(attempt.lease_token);
    let job = held(app, id, token).await?;
    let directive = match (attempt.permanent.unwrap_or(false), attempt.retry_after_ms) {
        (true, Some(_)) => {
            return Err(ApiError::validation(
                "give either permanent or retry_after_ms, not both",
            ));
        }
        (true, None) => FailDirective::Permanent,
        (false, Some(after)) => FailDirective::After(Duration::from_millis(after)),
        (false, None) => FailDirective::Backoff,
    };
    let now = app.now();
    // The one decision of a failure's fate; the store then applies it, fenced on the token.
    let decision =
        job.retry
            .decide_with_random_jitter(job.attempt, job.attempt_max, now, directive);
    let state = app
        .store
        .fail(id, token, &attempt.error, decision, now)
        .await?;
    app.metrics.outcome(
        job.kind.as_str(),
        if state == JobState::Dead {
            "dead"
        } else {
            "retried"
        },
    );
    if let punctual_core::FailOutcome::Retry { at } = decision {
        app.announce(at);
    }
    Ok(ItemOutcome {
        id: attempt.id.clone(),
        ok: true,
        state: Some(state.as_str().to_owned()),
        lease_expires_at: None,
        error: None,
    })
}

/// Extend the leases of held jobs.
#[utoipa::path(
    post, path = "/v1/workers/extend", tag = "workers",
    request_body = ExtendLeases,
    responses((status = 200, description = "Each lease's outcome; a lost one is `lease_lost` and unchanged", body = BatchOutcome), (status = 400, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["worker"]))
)]
pub async fn extend_batch(
    State(app): State<Arc<App>>,
    _: Authorized<Worker>,
    Json(spec): Json<ExtendLeases>,
) -> Result<axum::Json<BatchOutcome>, ApiError> {
    check_batch(&spec.leases, "leases")?;
    let lease = lease_of(spec.lease_ms)?;
    let mut results = Vec::with_capacity(spec.leases.len());
    for item in &spec.leases {
        results.push(outcome(
            &item.id,
            extend_one(&app, &item.id, item.lease_token, lease).await,
        ));
    }
    Ok(axum::Json(BatchOutcome { results }))
}

/// Complete held jobs.
#[utoipa::path(
    post, path = "/v1/workers/complete", tag = "workers",
    request_body = CompleteJobs,
    responses((status = 200, description = "Each completion's outcome; a lost lease is `lease_lost` and unchanged", body = BatchOutcome), (status = 400, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["worker"]))
)]
pub async fn complete_batch(
    State(app): State<Arc<App>>,
    _: Authorized<Worker>,
    Json(spec): Json<CompleteJobs>,
) -> Result<axum::Json<BatchOutcome>, ApiError> {
    check_batch(&spec.jobs, "jobs")?;
    // Completions run concurrently so the store commits them together.
    let mut tasks = tokio::task::JoinSet::new();
    for (index, item) in spec.jobs.iter().enumerate() {
        let app = app.clone();
        let item = item.clone();
        tasks.spawn(async move {
            (
                index,
                outcome(
                    &item.id,
                    complete_one(&app, &item.id, item.lease_token).await,
                ),
            )
        });
    }
    let mut results: Vec<Option<ItemOutcome>> = (0..spec.jobs.len()).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (index, result) = joined
            .map_err(|error| ApiError::unavailable(format!("a completion failed: {error}")))?;
        results[index] = Some(result);
    }
    Ok(axum::Json(BatchOutcome {
        results: results.into_iter().flatten().collect(),
    }))
}

/// Fail held jobs: retried after the job's backoff (or `retry_after_ms`), or dead when
/// `permanent` or out of attempts.
#[utoipa::path(
    post, path = "/v1/workers/fail", tag = "workers",
    request_body = FailJobs,
    responses((status = 200, description = "Each failure's outcome; a lost lease is `lease_lost` and unchanged", body = BatchOutcome), (status = 400, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["worker"]))
)]
pub async fn fail_batch(
    State(app): State<Arc<App>>,
    _: Authorized<Worker>,
    Json(spec): Json<FailJobs>,
) -> Result<axum::Json<BatchOutcome>, ApiError> {
    check_batch(&spec.jobs, "jobs")?;
    let mut results = Vec::with_capacity(spec.jobs.len());
    for item in &spec.jobs {
        results.push(outcome(&item.id, fail_one(&app, item).await));
    }
    Ok(axum::Json(BatchOutcome { results }))
}

/// Extend the lease of one held job.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/lease", tag = "workers",
    params(("id" = String, Path, description = "The job's id")),
    request_body = HeldLease,
    responses((status = 200, body = ItemOutcome), (status = 404, body = Problem), (status = 409, description = "The lease is lost; nothing changed", body = Problem)),
    security(("bearer" = ["worker"]))
)]
pub async fn extend_lease(
    State(app): State<Arc<App>>,
    _: Authorized<Worker>,
    PathParam(id): PathParam,
    Json(spec): Json<HeldLease>,
) -> Result<axum::Json<ItemOutcome>, ApiError> {
    let lease = lease_of(spec.lease_ms)?;
    Ok(axum::Json(
        extend_one(&app, &id, spec.lease_token, lease).await?,
    ))
}

/// Complete one held job.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/complete", tag = "workers",
    params(("id" = String, Path, description = "The job's id")),
    request_body = HeldLease,
    responses((status = 200, body = ItemOutcome), (status = 404, body = Problem), (status = 409, description = "The lease is lost; nothing changed", body = Problem)),
    security(("bearer" = ["worker"]))
)]
pub async fn complete_job(
    State(app): State<Arc<App>>,
    _: Authorized<Worker>,
    PathParam(id): PathParam,
    Json(spec): Json<HeldLease>,
) -> Result<axum::Json<ItemOutcome>, ApiError> {
    if spec.lease_ms.is_some() {
        return Err(ApiError::validation(
            "lease_ms applies only to an extension",
        ));
    }
    Ok(axum::Json(complete_one(&app, &id, spec.lease_token).await?))
}

/// Fail one held job.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/fail", tag = "workers",
    params(("id" = String, Path, description = "The job's id")),
    request_body = FailOne,
    responses((status = 200, body = ItemOutcome), (status = 404, body = Problem), (status = 409, description = "The lease is lost; nothing changed", body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["worker"]))
)]
pub async fn fail_job(
    State(app): State<Arc<App>>,
    _: Authorized<Worker>,
    PathParam(id): PathParam,
    Json(spec): Json<FailOne>,
) -> Result<axum::Json<ItemOutcome>, ApiError> {
    let attempt = FailedAttempt {
        id,
        lease_token: spec.lease_token,
        error: spec.error,
        retry_after_ms: spec.retry_after_ms,
        permanent: spec.permanent,
    };
    Ok(axum::Json(fail_one(&app, &attempt).await?))
}
