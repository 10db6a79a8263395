//! API tokens as the store keeps them: an id, a label, scopes, and the SHA-256 digest of the
//! secret. The secret itself is never stored, so a copy of the store grants no access.
//!
//! What a scope allows is the server's business; the store keeps scope names and nothing more.

use std::fmt;
use std::sync::Arc;

use crate::job::ValidationError;
use crate::limits;
use crate::time::Timestamp;

/// The public half of an API token: names it in listings, logs and revocations, and finds its
/// record. Letters, digits, `_` and `-`, at most `limits::TOKEN_ID_BYTES_MAX` bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenId(Arc<str>);

impl TokenId {
    pub fn new(value: &str) -> Result<TokenId, ValidationError> {
        check_word("token id", value, limits::TOKEN_ID_BYTES_MAX)?;
        Ok(TokenId(Arc::from(value)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_word(field: &'static str, value: &str, limit: usize) -> Result<(), ValidationError> {
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
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    {
        return Err(ValidationError::BadCharacters {
            field,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// An API token's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    pub id: TokenId,
    /// What the token is for, for people ("deploy bot"): 1 ..= `limits::TOKEN_LABEL_BYTES_MAX`
    /// bytes, no control characters.
    pub label: String,
    /// Scope names (words, at most `limits::TOKEN_SCOPES_MAX`), sorted and without repeats.
    pub scopes: Vec<String>,
    /// SHA-256 of the secret half of the token.
    pub secret_sha256: [u8; 32],
    pub created_at: Timestamp,
    /// When the token stops working by itself, if ever.
    pub expires_at: Option<Timestamp>,
    /// When the token was revoked; a revoked token never works again.
    pub revoked_at: Option<Timestamp>,
}

impl ApiToken {
    /// Checks what the field types cannot carry. Every store's `insert_token` calls it.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.label.is_empty() {
            return Err(ValidationError::Empty { field: "label" });
        }
        if self.label.len() > limits::TOKEN_LABEL_BYTES_MAX {
            return Err(ValidationError::TooLong {
                field: "label",
                bytes: self.label.len(),
                limit: limits::TOKEN_LABEL_BYTES_MAX,
            });
        }
        if self.label.chars().any(char::is_control) {
            return Err(ValidationError::BadCharacters {
                field: "label",
                value: self.label.clone(),
            });
        }
        if self.scopes.len() > limits::TOKEN_SCOPES_MAX {
            return Err(ValidationError::TooLong {
                field: "scopes",
                bytes: self.scopes.len(),
                limit: limits::TOKEN_SCOPES_MAX,
            });
        }
        for scope in &self.scopes {
            check_word("scope", scope, limits::TOKEN_SCOPE_BYTES_MAX)?;
        }
        if !self.scopes.windows(2).all(|pair| pair[0] < pair[1]) {
            return Err(ValidationError::BadCharacters {
                field: "scopes",
                value: self.scopes.join(" "),
            });
        }
        Ok(())
    }

    /// Whether the token grants access at `now`: not revoked and not expired.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expires_at| now < expires_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> ApiToken {
        ApiToken {
            id: TokenId::new("a1B2-c_3").expect("valid"),
            label: "deploy bot".to_owned(),
            scopes: vec!["read".to_owned(), "write".to_owned()],
            secret_sha256: [7; 32],
            created_at: Timestamp::from_millis(1_000),
            expires_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn ids_and_records_are_checked() {
        assert!(TokenId::new("").is_err());
        assert!(TokenId::new("has space").is_err());
        assert!(TokenId::new(&"x".repeat(limits::TOKEN_ID_BYTES_MAX + 1)).is_err());
        assert_eq!(token().validate(), Ok(()));
        let unsorted = ApiToken {
            scopes: vec!["write".to_owned(), "read".to_owned()],
            ..token()
        };
        assert!(unsorted.validate().is_err());
        let repeated = ApiToken {
            scopes: vec!["read".to_owned(), "read".to_owned()],
            ..token()
        };
        assert!(repeated.validate().is_err());
        let control = ApiToken {
            label: "bell\u{7}".to_owned(),
            ..token()
        };
        assert!(control.validate().is_err());
        let empty = ApiToken {
            label: String::new(),
            ..token()
        };
        assert!(empty.validate().is_err());
    }

    #[test]
    fn a_token_is_active_until_revoked_or_expired() {
        let now = Timestamp::from_millis(5_000);
        assert!(token().is_active(now));
        let revoked = ApiToken {
            revoked_at: Some(now),
            ..token()
        };
        assert!(!revoked.is_active(now));
        let expiring = ApiToken {
            expires_at: Some(now),
            ..token()
        };
        assert!(expiring.is_active(Timestamp::from_millis(4_999)));
        assert!(!expiring.is_active(now));
    }
}
