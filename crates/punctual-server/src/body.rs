//! Reading request bodies: a size limit per route, JSON only, unknown fields refused, and every
//! failure an `ApiError` that names the field (`jobs[3].priority: invalid type ...`).
//!
//! Owns the body limits. Must not decide anything about the values it reads: that is the
//! handlers' and punctual-core's validation.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The body limit of most routes (claims, completions, reschedules, tokens).
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// The body limit of a single job's creation: one payload at its limit, escaped, plus options.
pub const JOB_BODY_BYTES_MAX: usize = 2 * punctual_core::limits::PAYLOAD_BYTES_MAX;
/// The body limit of a batch creation.
pub const BATCH_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// A JSON body of at most `LIMIT` bytes, decoded into `T`. `T`'s derive refuses unknown fields.
pub struct Json<T, const LIMIT: usize = BODY_BYTES_MAX>(pub T);

/// A JSON body of at most `LIMIT` bytes, kept as bytes (for an idempotency fingerprint) and
/// decoded on demand with `decode`.
pub struct RawJson<const LIMIT: usize>(pub Bytes);

impl<S: Send + Sync, const LIMIT: usize> FromRequest<S> for RawJson<LIMIT> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        Ok(RawJson(read(request, LIMIT).await?))
    }
}

impl<S: Send + Sync, T: DeserializeOwned, const LIMIT: usize> FromRequest<S> for Json<T, LIMIT> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = read(request, LIMIT).await?;
        Ok(Json(decode(&bytes)?))
    }
}

/// Reads the whole body, refusing a non-JSON content type and anything over `limit` bytes.
async fn read(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(is_json);
    if !json {
        return Err(ApiError::unsupported_media_type());
    }
    axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| ApiError::payload_too_large(limit))
}

/// `application/json`, or any `+json` type, with or without parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Decodes a JSON object into `T`, naming the path of the first field that does not fit.
///
/// Every body of the API is an object: serde would also read a struct from an array of its
/// fields in order (`[null, null]` as a redrive of everything), a form no client means, so
/// anything but an object is refused first.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|byte| !byte.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ApiError::bad_request(
            "the body must be a JSON object ({...})",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." || path.is_empty() {
            ApiError::bad_request(format!("the body is not the expected JSON: {inner}"))
        } else {
            ApiError::bad_request(format!("{path}: {inner}"))
        }
    })?;
    deserializer
        .end()
        .map_err(|error| ApiError::bad_request(format!("trailing data after the JSON: {error}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // Read by the decoder only.
    struct Sample {
        count: u8,
        inner: Option<Inner>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // Read by the decoder only.
    struct Inner {
        name: String,
    }

    #[test]
    fn decode_errors_name_the_field() {
        let error = decode::<Sample>(br#"{"count": "many"}"#).expect_err("wrong type");
        assert_eq!(error.code(), "bad_request");
        assert!(error.detail().starts_with("count:"), "{}", error.detail());
        let error = decode::<Sample>(br#"{"count": 1, "inner": {"nmae": "x"}}"#)
            .expect_err("unknown field");
        assert!(error.detail().contains("inner"), "{}", error.detail());
        assert!(error.detail().contains("nmae"), "{}", error.detail());
        assert!(decode::<Sample>(br#"{"count": 1} {}"#).is_err());
        assert!(decode::<Sample>(b"{").is_err());
        assert!(decode::<Sample>(br#"{"count": 1}"#).is_ok());
        assert!(decode::<Sample>(br#" {"count": 1}"#).is_ok());
        // A struct from an array of its fields, which serde would take.
        let error = decode::<Sample>(b"[1, null]").expect_err("not an object");
        assert!(error.detail().contains("object"), "{}", error.detail());
        assert!(decode::<Sample>(b"").is_err());
    }

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }
}
