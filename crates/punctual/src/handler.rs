//! Handlers: the async Rust functions that do a job's work, registered by kind.

use std::future::Future;

use async_trait::async_trait;
use punctual_core::{JobId, Kind, LeaseToken, Payload, Queue, Timestamp};
use tokio_util::sync::CancellationToken;

/// The error a handler returns; any error type converts into it with `?`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
