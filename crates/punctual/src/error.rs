//! The engine's error type: what a caller of `Scheduler` can act on.

use punctual_core::{StoreError, ValidationError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("payload could not be encoded as JSON: {0}")]
    Payload(String),
    #[error("no handler is registered for kind {0:?}")]
    UnknownKind(String),
    #[error("the scheduler is already started")]
    AlreadyStarted,
    #[error("start must be called from within a tokio runtime")]
    NoRuntime,
    #[error(transparent)]
    Store(#[from] StoreError),
}
