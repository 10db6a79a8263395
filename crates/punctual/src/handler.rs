//! Handlers: the async Rust functions that do a job's work, registered by kind.

use std::future::Future;

use async_trait::async_trait;
use std::fmt;
use std::time::Duration;

use punctual_core::{FailDirective, JobId, Kind, LeaseToken, Payload, Queue, Timestamp};
use tokio_util::sync::CancellationToken;

/// The error a handler returns; any error type converts into it with `?`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error a handler returns to steer what becomes of the failed attempt. Any other error is
/// retried after the job's backoff; this one can ask for a time (`JobError::retry_after`) or for
/// no retry at all (`JobError::permanent`). Either way the job's `attempt_max` is a hard bound.
///
/// ```
/// # use std::time::Duration;
/// # use punctual::{BoxError, JobError};
/// fn judge(status: u16) -> Result<(), BoxError> {
///     match status {
///         200..=299 => Ok(()),
///         410 => Err(JobError::permanent("the receiver is gone (410)").into()),
///         429 => Err(JobError::retry_after(Duration::from_secs(30), "rate limited (429)").into()),
///         other => Err(format!("status {other}").into()),
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    message: String,
    directive: FailDirective,
}

impl JobError {
    /// Fail for good: the job is dead at once, with `message` kept as its error.
    pub fn permanent(message: impl Into<String>) -> JobError {
        JobError {
            message: message.into(),
            directive: FailDirective::Permanent,
        }
    }

    /// Retry no sooner than `delay` from now (at most `limits::RETRY_AFTER_MAX`), without jitter.
    pub fn retry_after(delay: Duration, message: impl Into<String>) -> JobError {
        JobError {
            message: message.into(),
            directive: FailDirective::After(delay),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn directive(&self) -> FailDirective {
        self.directive
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JobError {}

/// Everything a handler learns about the attempt it runs.
#[derive(Clone, Debug)]
pub struct JobContext {
    pub id: JobId,
    pub kind: Kind,
    pub queue: Queue,
    /// This attempt's number, from 1.
    pub attempt: u32,
    pub attempt_max: u32,
    /// Identifies this claim. `(id, attempt, lease_token)` is an idempotency key for effects
    /// outside the store: a job may run again only after its lease provably expired.
    pub lease_token: LeaseToken,
    /// When the lease runs out as the store last confirmed it when the handler started. The
    /// engine renews it every heartbeat while the handler runs; no other holder can start the
    /// job before it has run out.
    pub lease_expires_at: Timestamp,
    /// When the job was due.
    pub run_at: Timestamp,
    pub payload: Payload,
    /// Fires when the handler should stop: its lease was lost, the job was cancelled, or the
    /// node is shutting down past its grace period.
    pub cancellation: CancellationToken,
}

impl JobContext {
    /// The payload decoded into `T`.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, BoxError> {
        Ok(serde_json::from_str(self.payload.as_str())?)
    }
}

/// A job's handler. Closures `Fn(JobContext) -> impl Future<Output = Result<(), BoxError>>`
/// implement it.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn run(&self, job: JobContext) -> Result<(), BoxError>;
}

#[async_trait]
impl<F, Fut> Handler for F
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    async fn run(&self, job: JobContext) -> Result<(), BoxError> {
        (self)(job).await
    }
}
