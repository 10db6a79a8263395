//! `ApiError`: the one mapping from what went wrong to an HTTP status, as an RFC 9457 problem
//! document (`application/problem+json`) with a stable `code` member clients can branch on.
//!
//! Every handler returns `Result<_, ApiError>`; no other code picks a status for an error. Bad
//! input is a 4xx that says which field broke which rule; a store outage is a 503 with
//! `Retry-After`, never a 500. The codes are part of the API: a code, once published, keeps its
//! meaning (docs/api.md lists them).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use punctual_core::{StoreError, ValidationError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// How long a client should wait before retrying after a 503 (the engine's own store retries
/// back off on the same scale).
const RETRY_AFTER_UNAVAILABLE: Duration = Duration::from_secs(1);

/// An RFC 9457 problem document, as sent.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:punctual:problem:` followed by `code`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the kind of problem, the same for every occurrence.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time, for people.
    pub detail: String,
    /// A stable, machine-readable code (`not_found`, `lease_lost`, ...).
    pub code: String,
}

/// An error answered to a client. Built only by the constructors below and the `From`
/// conversions, so each code always comes with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: String,
    retry_after: Option<Duration>,
    /// Sent as `WWW-Authenticate` (401 only).
    challenge: bool,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, title: &'static str, detail: String) -> Self {
        ApiError {
            status,
            code,
            title,
            detail,
            retry_after: None,
            challenge: false,
        }
    }

    /// The request could not be read: not JSON, a field of the wrong type, an unknown field.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "The request could not be read",
            detail.into(),
        )
    }

    /// The request was read but a value breaks a rule (a range, a cron expression, a zone).
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "A value in the request is not acceptable",
            detail.into(),
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "No such resource",
            detail.into(),
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method not allowed",
            "this route does not answer this method".to_owned(),
        )
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        ApiError {
            challenge: true,
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication required",
                detail.into(),
            )
        }
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "The token lacks the scope this route needs",
            detail.into(),
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "The request body is too large",
            format!("the body of this route may be at most {limit} bytes"),
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "The request body must be JSON",
            "send the body with Content-Type: application/json".to_owned(),
        )
    }

    /// A resource with this id (or, for a schedule, this name) already exists.
    pub fn exists(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "already_exists",
            "A resource with this id or name already exists",
            detail.into(),
        )
    }

    /// The SSRF guard refused a webhook's address.
    pub fn target_refused(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "webhook_target_refused",
            "Webhooks may not reach this address",
            detail.into(),
        )
    }

    /// The `Idempotency-Key` was first used with a different request.
    pub fn idempotency_mismatch() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_mismatch",
            "The idempotency key was used with a different request",
            "this Idempotency-Key was first sent with another body; use a new key for a new request"
                .to_owned(),
        )
    }

    /// A request under the same `Idempotency-Key` is still being processed.
    pub fn idempotency_in_progress() -> Self {
        ApiError {
            retry_after: Some(RETRY_AFTER_UNAVAILABLE),
            ..Self::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "A request with this idempotency key is in progress",
                "retry once the first request under this Idempotency-Key has been answered"
                    .to_owned(),
            )
        }
    }

    /// The store cannot be reached or is overloaded; the node retries by itself.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(RETRY_AFTER_UNAVAILABLE),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The service is temporarily unavailable",
                detail.into(),
            )
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The body this error is sent with.
    pub fn problem(&self) -> Problem {
        Problem {
            problem_type: format!("urn:punctual:problem:{}", self.code),
            title: self.title.to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_owned(),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        ApiError::validation(error.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let detail = error.to_string();
        match error {
            StoreError::NotFound(_) | StoreError::TokenNotFound(_) => ApiError::not_found(detail),
            StoreError::LeaseLost { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "lease_lost",
                "The lease on this job is no longer yours",
                format!("{detail}; nothing was changed"),
            ),
            StoreError::Conflict { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "state_conflict",
                "The job is in a state where this does not apply",
                format!("{detail}; nothing was changed"),
            ),
            StoreError::Duplicate(_) | StoreError::TokenExists(_) => ApiError::exists(detail),
            StoreError::Invalid(error) => ApiError::from(error),
            // Leader duties are not reachable through the API; should one surface, the node
            // is between terms, which is transient.
            StoreError::NotLeader { .. } | StoreError::Unavailable(_) => {
                ApiError::unavailable(detail)
            }
            StoreError::Corrupt(_) => {
                tracing::error!(error = %detail, "the store is corrupt or of another version");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_corrupt",
                    "The store holds data this version cannot read",
                    detail,
                )
            }
        }
    }
}

impl From<punctual::EngineError> for ApiError {
    fn from(error: punctual::EngineError) -> Self {
        use punctual::EngineError;
        match error {
            EngineError::Invalid(error) => ApiError::from(error),
            EngineError::Store(error) => ApiError::from(error),
            EngineError::Payload(detail) => ApiError::validation(detail),
            EngineError::UnknownKind(kind) => {
                ApiError::validation(format!("no handler is registered for kind {kind:?}"))
            }
            EngineError::AlreadyStarted | EngineError::NoRuntime => {
                ApiError::unavailable(error.to_string())
            }
        }
    }
}

impl From<punctual::ScheduleError> for ApiError {
    fn from(error: punctual::ScheduleError) -> Self {
        use punctual::ScheduleError;
        let detail = error.to_string();
        match error {
            ScheduleError::NotFound(_) => ApiError::not_found(detail),
            ScheduleError::Exists(_) => ApiError::exists(detail),
            // Other writers kept changing the schedule between a read and a write: nothing
            // was changed, and a retry in a moment is expected to apply.
            ScheduleError::Contended(_) => {
                ApiError::unavailable(format!("{detail}; nothing was changed"))
            }
            ScheduleError::Store(error) => ApiError::from(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, detail = %self.detail, "answering a server error");
        }
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(after) = self.retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(after.as_secs().max(1)),
            );
        }
        if self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"punctual\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punctual_core::{JobId, JobState, LeaseToken};

    #[test]
    fn store_errors_map_to_statuses_and_stable_codes() {
        let id = JobId::from_bytes([1; 16]);
        let cases = [
            (StoreError::NotFound(id), 404, "not_found"),
            (
                StoreError::LeaseLost {
                    id,
                    token: LeaseToken(3),
                },
                409,
                "lease_lost",
            ),
            (
                StoreError::Conflict {
                    id,
                    state: JobState::Succeeded,
                    operation: "cancel",
                },
                409,
                "state_conflict",
            ),
            (StoreError::Duplicate(id), 409, "already_exists"),
            (
                StoreError::Unavailable("down".to_owned()),
                503,
                "unavailable",
            ),
        ];
        for (error, status, code) in cases {
            let api = ApiError::from(error);
            assert_eq!(api.status().as_u16(), status);
            assert_eq!(api.code(), code);
        }
    }

    #[test]
    fn schedule_errors_map_to_statuses_and_stable_codes() {
        use punctual::ScheduleError;
        let name = punctual_core::ScheduleName::new("nightly").expect("a valid name");
        let cases = [
            (
                ScheduleError::NotFound("nightly".to_owned()),
                404,
                "not_found",
            ),
            (ScheduleError::Exists(name), 409, "already_exists"),
            (
                ScheduleError::Contended("nightly".to_owned()),
                503,
                "unavailable",
            ),
            (
                ScheduleError::Store(StoreError::Unavailable("down".to_owned())),
                503,
                "unavailable",
            ),
        ];
        for (error, status, code) in cases {
            let api = ApiError::from(error);
            assert_eq!(api.status().as_u16(), status);
            assert_eq!(api.code(), code);
        }
    }

    #[test]
    fn an_outage_says_when_to_retry() {
        let response = ApiError::unavailable("down").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }
}
