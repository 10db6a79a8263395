//! Authentication and authorisation: bearer tokens with scopes.
//!
//! A token reads `pct_<id>_<secret>`. The store keeps the id, a label, the scopes and the SHA-256
//! of the secret (never the secret), so every node of a cluster knows every token and a copy of
//! the store grants nothing. A request's token is found by its id and its secret's digest
//! compared in constant time. Records are cached for `CACHE_TTL`, so a revocation made on
//! another node takes effect there within that time (at once on the node that revoked it).
//!
//! Scopes: `read` (jobs, queues, metrics), `write` (create, cancel, reschedule, retry, redrive;
//! implies `read`), `worker` (claim, extend, complete, fail), `admin` (tokens; implies all).
//!
//! Owns the token format and the scope rules. Must not log a secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use punctual_core::{ApiToken, Clock, Store, StoreError, Timestamp, TokenId};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use crate::error::ApiError;

/// How long a token record is trusted without asking the store again.
pub const CACHE_TTL: Duration = Duration::from_secs(2);
/// Most token records cached; past it the cache starts over (bounds what random tokens cost).
const CACHE_ENTRIES_MAX: usize = 10_000;
/// The prefix of every token.
const PREFIX: &str = "pct_";
/// Longest bearer token read, in bytes.
const TOKEN_BYTES_MAX: usize = 256;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Read,
    Write,
    Worker,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Worker, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Worker => "worker",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == text)
    }

    /// Whether holding `self` allows what `needed` guards.
    pub fn grants(self, needed: Scope) -> bool {
        self == needed || self == Scope::Admin || (self == Scope::Write && needed == Scope::Read)
    }
}

/// Who made a request.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The token's id; `None` when authentication is off (the insecure development mode).
    pub token: Option<TokenId>,
    pub scopes: Vec<Scope>,
}

impl Principal {
    /// The name idempotency keys are scoped by.
    pub fn scope_name(&self) -> &str {
        self.token.as_ref().map_or("anonymous", TokenId::as_str)
    }

    pub fn require(&self, needed: Scope) -> Result<(), ApiError> {
        if self.scopes.iter().any(|held| held.grants(needed)) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this route needs a token with the {} scope",
                needed.as_str()
            )))
        }
    }
}

/// A new token: the text to hand its owner (shown once) and the record to store.
pub fn issue(
    label: &str,
    scopes: &[Scope],
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<(String, ApiToken), ApiError> {
    let id_bytes: [u8; 8] = rand::random();
    let id_text: String = id_bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let secret_bytes: [u8; 32] = rand::random();
    let secret = URL_SAFE_NO_PAD.encode(secret_bytes);
    let mut scope_names: Vec<String> = scopes
        .iter()
        .map(|scope| scope.as_str().to_owned())
        .collect();
    scope_names.sort();
    scope_names.dedup();
    let token = ApiToken {
        id: TokenId::new(&id_text)?,
        label: label.to_owned(),
        scopes: scope_names,
        secret_sha256: digest(&secret),
        created_at: now,
        expires_at,
        revoked_at: None,
    };
    token.validate()?;
    Ok((format!("{PREFIX}{id_text}_{secret}"), token))
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Splits `pct_<id>_<secret>`.
fn parse(text: &str) -> Option<(TokenId, &str)> {
    let rest = text.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if secret.is_empty() {
        return None;
    }
    Some((TokenId::new(id).ok()?, secret))
}

/// The scopes a stored record names; names this version does not know are ignored.
pub fn scopes_of(token: &ApiToken) -> Vec<Scope> {
    token
        .scopes
        .iter()
        .filter_map(|name| Scope::parse(name))
        .collect()
}

/// Checks bearer tokens against the store, with a short-lived cache.
pub struct Authenticator {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Authentication off: every request is the anonymous admin (development only).
    anonymous: bool,
    cache: Mutex<HashMap<TokenId, (Option<ApiToken>, Instant)>>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, anonymous: bool) -> Authenticator {
        Authenticator {
            store,
            clock,
            anonymous,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }

    /// Who sent `headers`, or 401 (no token, a malformed, unknown, revoked or expired one), or
    /// 503 when the store cannot say.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        if self.anonymous {
            return Ok(Principal {
                token: None,
                scopes: vec![Scope::Admin],
            });
        }
        let value = headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("send a token: Authorization: Bearer pct_..."))?;
        let text = value
            .to_str()
            .ok()
            .filter(|text| text.len() <= TOKEN_BYTES_MAX)
            .and_then(|text| {
                let (scheme, token) = text.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be: Bearer pct_...")
            })?;
        let (id, secret) =
            parse(text).ok_or_else(|| ApiError::unauthorized("that is not a punctual token"))?;
        let record = self.record(&id).await?;
        let unknown = || ApiError::unauthorized("unknown token");
        let record = record.ok_or_else(unknown)?;
        // The digest is compared in constant time, so timing tells nothing of the secret.
        let matches: bool = digest(secret).ct_eq(&record.secret_sha256).into();
        if !matches {
            return Err(unknown());
        }
        if !record.is_active(self.clock.now()) {
            return Err(ApiError::unauthorized(
                "this token was revoked or has expired",
            ));
        }
        Ok(Principal {
            token: Some(record.id.clone()),
            scopes: scopes_of(&record),
        })
    }

    /// Drops a cached record, so a revocation holds on this node at once.
    pub fn forget(&self, id: &TokenId) {
        self.lock().remove(id);
    }

    async fn record(&self, id: &TokenId) -> Result<Option<ApiToken>, ApiError> {
        if let Some((record, fetched)) = self.lock().get(id)
            && fetched.elapsed() < CACHE_TTL
        {
            return Ok(record.clone());
        }
        let record = self
            .store
            .get_token(id)
            .await
            .map_err(|error| match error {
                StoreError::Unavailable(_) => ApiError::from(error),
                other => ApiError::unavailable(other.to_string()),
            })?;
        let mut cache = self.lock();
        if cache.len() >= CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(id.clone(), (record.clone(), Instant::now()));
        Ok(record)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenId, (Option<ApiToken>, Instant)>> {
        // Held only for a map operation, which does not panic.
        self.cache
            .lock()
            .expect("the token cache lock is never poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punctual_testkit::{ManualClock, MemoryStore};

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            format!("Bearer {token}").parse().expect("a header value"),
        );
        headers
    }

    #[test]
    fn scopes_imply_what_they_should_and_nothing_more() {
        assert!(Scope::Admin.grants(Scope::Worker));
        assert!(Scope::Write.grants(Scope::Read));
        assert!(!Scope::Read.grants(Scope::Write));
        assert!(!Scope::Worker.grants(Scope::Read));
        assert!(!Scope::Write.grants(Scope::Admin));
    }

    #[tokio::test]
    async fn tokens_are_checked_by_digest_and_revocation() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_764_400_000_000)));
        let auth = Authenticator::new(store.clone(), clock.clone(), false);
        let (text, record) = issue("ci", &[Scope::Write], None, clock.now()).expect("valid");
        assert!(text.starts_with("pct_"));
        store.insert_token(record.clone()).await.expect("stored");

        let principal = auth
            .authenticate(&bearer(&text))
            .await
            .expect("valid token");
        assert_eq!(principal.token.as_ref(), Some(&record.id));
        assert!(principal.require(Scope::Read).is_ok());
        assert_eq!(
            principal
                .require(Scope::Admin)
                .expect_err("not admin")
                .code(),
            "forbidden"
        );

        let wrong_secret = format!("pct_{}_{}", record.id, "A".repeat(43));
        for bad in [wrong_secret.as_str(), "pct_nope", "garbage", ""] {
            let error = auth.authenticate(&bearer(bad)).await.expect_err("refused");
            assert_eq!(error.code(), "unauthorized", "{bad}");
        }
        assert_eq!(
            auth.authenticate(&HeaderMap::new())
                .await
                .expect_err("no header")
                .code(),
            "unauthorized"
        );

        store
            .revoke_token(&record.id, clock.now())
            .await
            .expect("revoked");
        auth.forget(&record.id);
        assert_eq!(
            auth.authenticate(&bearer(&text))
                .await
                .expect_err("revoked")
                .code(),
            "unauthorized"
        );
    }

    #[tokio::test]
    async fn an_expired_token_is_refused() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let now = Timestamp::from_millis(1_764_400_000_000);
        let clock = Arc::new(ManualClock::new(now));
        let auth = Authenticator::new(store.clone(), clock.clone(), false);
        let (text, record) = issue(
            "short",
            &[Scope::Read],
            Some(now.add(Duration::from_secs(60))),
            now,
        )
        .expect("valid");
        store.insert_token(record).await.expect("stored");
        assert!(auth.authenticate(&bearer(&text)).await.is_ok());
        clock.advance(Duration::from_secs(61));
        assert!(auth.authenticate(&bearer(&text)).await.is_err());
    }
}
