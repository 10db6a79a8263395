//! Signing webhooks by the Standard Webhooks scheme (<https://www.standardwebhooks.com>):
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`,
//! keyed by the bytes of a `whsec_<base64>` secret. Several secrets (a rotation) give several
//! space-separated signatures, and a receiver accepts the message if any one verifies.
//!
//! Owns the secret format and the signature. Must not log or return a secret.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Shortest secret key, in bytes (the scheme asks for 24 to 64).
const SECRET_BYTES_MIN: usize = 24;
/// Longest secret key, in bytes.
const SECRET_BYTES_MAX: usize = 64;
/// Most secrets configured at once: the current one and those being rotated out.
pub const SECRETS_MAX: usize = 8;

/// A signing secret. Its `Debug` shows nothing of the key.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret must start with whsec_")]
    NoPrefix,
    #[error("a webhook secret's key is not base64")]
    NotBase64,
    #[error(
        "a webhook secret's key must be {SECRET_BYTES_MIN} to {SECRET_BYTES_MAX} bytes, not {0}"
    )]
    Length(usize),
}

impl Secret {
    /// Parses `whsec_<base64 key>`.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let encoded = text
            .trim()
            .strip_prefix("whsec_")
            .ok_or(SecretError::NoPrefix)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::NotBase64)?;
        if !(SECRET_BYTES_MIN..=SECRET_BYTES_MAX).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Secret(key))
    }

    /// A fresh random secret, as text (for `punctual` to suggest to an operator).
    pub fn generate() -> String {
        let key: [u8; 32] = rand::random();
        format!("whsec_{}", STANDARD.encode(key))
    }

    fn signature(&self, content: &[u8]) -> String {
        // HMAC takes a key of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key size");
        mac.update(content);
        STANDARD.encode(mac.finalize().into_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The `webhook-signature` header value for a message: one `v1,<signature>` per secret.
pub fn signature_header(secrets: &[Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut content = Vec::with_capacity(id.len() + 24 + body.len());
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    secrets
        .iter()
        .map(|secret| format!("v1,{}", secret.signature(&content)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether any `v1` signature in `header` verifies `body` under `secret`: what a receiver does.
/// In constant time per signature, as a receiver must.
pub fn verify(secret: &Secret, header: &str, id: &str, timestamp: i64, body: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    let expected = signature_header(std::slice::from_ref(secret), id, timestamp, body);
    let expected = expected.as_bytes();
    header
        .split(' ')
        .any(|candidate| candidate.as_bytes().ct_eq(expected).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification's reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_as_the_reference_implementations_do() {
        let secret = Secret::parse(SECRET).expect("valid");
        assert_eq!(
            signature_header(std::slice::from_ref(&secret), ID, TIMESTAMP, BODY),
            EXPECTED
        );
        assert!(verify(&secret, EXPECTED, ID, TIMESTAMP, BODY));
        assert!(!verify(&secret, EXPECTED, ID, TIMESTAMP + 1, BODY));
    }

    #[test]
    fn a_rotation_signs_with_every_secret() {
        let old = Secret::parse(SECRET).expect("valid");
        let new = Secret::parse(&Secret::generate()).expect("generated secrets parse");
        let header = signature_header(&[new.clone(), old.clone()], ID, TIMESTAMP, BODY);
        assert_eq!(header.split(' ').count(), 2);
        assert!(verify(&old, &header, ID, TIMESTAMP, BODY));
        assert!(verify(&new, &header, ID, TIMESTAMP, BODY));
    }

    #[test]
    fn malformed_secrets_are_refused_and_never_shown() {
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").err(),
            Some(SecretError::NoPrefix)
        );
        assert_eq!(
            Secret::parse("whsec_!!!").err(),
            Some(SecretError::NotBase64)
        );
        assert_eq!(
            Secret::parse("whsec_AAAA").err(),
            Some(SecretError::Length(3))
        );
        let secret = Secret::parse(SECRET).expect("valid");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
    }
}
