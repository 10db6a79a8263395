//! Idempotency keys (the IETF httpapi draft's `Idempotency-Key`): a record of the first request
//! made under a key, kept with the jobs it created, so that a retried request is answered with
//! the first response instead of creating the jobs again.
//!
//! The store keeps the record and inserts the jobs in one atomic step (`Store::insert_idempotent`),
//! so a crash can leave jobs without their record or a record without its jobs never. What the
//! fingerprint digests and what the response holds is the caller's business: both are opaque
//! text to the store.

use std::fmt;
use std::sync::Arc;

use crate::job::{JobId, ValidationError};
use crate::limits;
use crate::time::Timestamp;

/// A key under which a request may be retried. Printable ASCII (space to `~`), 1 ..=
/// `limits::IDEMPOTENCY_KEY_BYTES_MAX` bytes. The caller scopes it (the server puts the token's
/// id in front), so two clients' keys never meet.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdempotencyKey(Arc<str>);

impl IdempotencyKey {
    pub fn new(value: &str) -> Result<IdempotencyKey, ValidationError> {
        check_printable("idempotency key", value, limits::IDEMPOTENCY_KEY_BYTES_MAX)?;
        Ok(IdempotencyKey(Arc::from(value)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_printable(field: &'static str, value: &str, limit: usize) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    if value.len() > limit {
        return Err(ValidationError::TooLong {
            field,
            bytes: value.len(),
            limit,
        });
    }
    if !value.bytes().all(|byte| (0x20..=0x7e).contains(&byte)) {
        return Err(ValidationError::BadCharacters {
            field,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// The first request made under a key, and what it was answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub key: IdempotencyKey,
    /// A digest of the first request (printable ASCII, 1 ..= `limits::FINGERPRINT_BYTES_MAX`
    /// bytes): a later request under the key with another fingerprint is a different request.
    pub fingerprint: String,
    /// The first response, to answer replays with (at most
    /// `limits::IDEMPOTENCY_RESPONSE_BYTES_MAX` bytes).
    pub response: String,
    pub created_at: Timestamp,
    /// After this instant the key is free again; at most `limits::IDEMPOTENCY_TTL_MAX` after
    /// `created_at`.
    pub expires_at: Timestamp,
}

impl IdempotencyRecord {
    /// Checks what the field types cannot carry. Every store's `insert_idempotent` calls it.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_printable(
            "fingerprint",
            &self.fingerprint,
            limits::FINGERPRINT_BYTES_MAX,
        )?;
        if self.response.len() > limits::IDEMPOTENCY_RESPONSE_BYTES_MAX {
            return Err(ValidationError::TooLong {
                field: "response",
                bytes: self.response.len(),
                limit: limits::IDEMPOTENCY_RESPONSE_BYTES_MAX,
            });
        }
        let ttl_ok = self.expires_at > self.created_at
            && self.expires_at <= self.created_at.add(limits::IDEMPOTENCY_TTL_MAX);
        if !ttl_ok {
            return Err(ValidationError::RunAtOutOfRange {
                run_at: self.expires_at,
                earliest: self.created_at,
                latest: self.created_at.add(limits::IDEMPOTENCY_TTL_MAX),
            });
        }
        Ok(())
    }

    /// Whether the key is still held at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }
}

/// What `Store::insert_idempotent` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Idempotent {
    /// The key was free: the jobs were inserted and the record kept.
    Inserted(Vec<JobId>),
    /// The key is held by an earlier request: nothing was inserted; here is its record.
    Replayed(IdempotencyRecord),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record() -> IdempotencyRecord {
        let created_at = Timestamp::from_millis(1_000_000);
        IdempotencyRecord {
            key: IdempotencyKey::new("tok:8e03978e-40d5-43e8-bc93-6894a57f9324").expect("valid"),
            fingerprint: "sha256:ab12".to_owned(),
            response: "{}".to_owned(),
            created_at,
            expires_at: created_at.add(Duration::from_secs(86_400)),
        }
    }

    #[test]
    fn keys_and_records_are_checked() {
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new("tab\there").is_err());
        assert!(IdempotencyKey::new("é").is_err());
        assert!(IdempotencyKey::new(&"k".repeat(limits::IDEMPOTENCY_KEY_BYTES_MAX + 1)).is_err());
        assert_eq!(record().validate(), Ok(()));
        let forever = IdempotencyRecord {
            expires_at: record()
                .created_at
                .add(limits::IDEMPOTENCY_TTL_MAX)
                .add(Duration::from_secs(1)),
            ..record()
        };
        assert!(forever.validate().is_err());
        let expired = IdempotencyRecord {
            expires_at: record().created_at,
            ..record()
        };
        assert!(expired.validate().is_err());
        let no_fingerprint = IdempotencyRecord {
            fingerprint: String::new(),
            ..record()
        };
        assert!(no_fingerprint.validate().is_err());
    }

    #[test]
    fn a_record_is_live_until_it_expires() {
        let record = record();
        assert!(record.is_live(record.created_at));
        assert!(!record.is_live(record.expires_at));
    }
}
