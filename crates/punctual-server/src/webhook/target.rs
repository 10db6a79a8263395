//! A webhook target (URL, method, extra headers, timeout), how it is checked, and how it is
//! stored with its job.
//!
//! A webhook job is a job of the reserved kind `WEBHOOK_KIND` whose stored payload is an
//! envelope, `{"webhook": <target>, "payload": <the caller's payload>}`: the store and the
//! engine need nothing new to keep, claim, lease and retry it, and the executor (this node's
//! handler for that kind) finds everything it needs in the job. The API shows the two parts
//! separately; callers never see the envelope.
//!
//! Owns the target's limits and checks. Must not send anything (that is `executor`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use punctual_core::{Payload, limits};
use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::guard::GuardedResolver;

/// The kind of every webhook job. Kinds starting `punctual.` are reserved: the API refuses them
/// for remote workers' jobs and claims.
pub const WEBHOOK_KIND: &str = "punctual.webhook";
/// The prefix of reserved kinds.
pub const RESERVED_KIND_PREFIX: &str = "punctual.";

/// Longest target URL, in bytes.
pub const URL_BYTES_MAX: usize = 2_048;
/// Most extra headers on one target.
pub const HEADERS_MAX: usize = 32;
/// Longest header value, in bytes.
pub const HEADER_VALUE_BYTES_MAX: usize = 4_096;
/// Most bytes of all extra header names and values together.
pub const HEADERS_BYTES_MAX: usize = 16 * 1_024;
/// The envelope's own bytes at most (the target, keys and punctuation), so the caller's payload
/// may use the rest of the core's payload limit.
pub const ENVELOPE_OVERHEAD_MAX: usize =
    URL_BYTES_MAX + HEADERS_BYTES_MAX + 2 * HEADERS_MAX * 8 + 256;
/// Largest payload of a webhook job, in bytes of JSON text.
pub const WEBHOOK_PAYLOAD_BYTES_MAX: usize = limits::PAYLOAD_BYTES_MAX - ENVELOPE_OVERHEAD_MAX;
/// The request timeout when a target names none.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Shortest and longest request timeout a target may set.
pub const TIMEOUT_MIN: Duration = Duration::from_millis(100);
pub const TIMEOUT_MAX: Duration = Duration::from_secs(300);

/// Headers a target may not set: punctual sets them itself, or they belong to the connection.
const RESERVED_HEADERS: [&str; 11] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "user-agent",
];
/// Header name prefixes a target may not use.
const RESERVED_HEADER_PREFIXES: [&str; 3] = ["webhook-", "punctual-", "proxy-"];

/// Why a target was refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("webhook.{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The SSRF guard refused the address.
    #[error("webhook.url: {0}")]
    Refused(String),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> TargetError {
    TargetError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The HTTP methods a webhook may use; each sends the payload as its body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WebhookMethod {
    #[default]
    Post,
    Put,
    Patch,
}

impl WebhookMethod {
    pub fn parse(text: &str) -> Result<WebhookMethod, TargetError> {
        match text.to_ascii_uppercase().as_str() {
            "POST" => Ok(WebhookMethod::Post),
            "PUT" => Ok(WebhookMethod::Put),
            "PATCH" => Ok(WebhookMethod::Patch),
            _ => Err(invalid(
                "method",
                format!("{text:?} is not one of POST, PUT, PATCH"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookMethod::Post => "POST",
            WebhookMethod::Put => "PUT",
            WebhookMethod::Patch => "PATCH",
        }
    }

    pub fn to_reqwest(self) -> reqwest::Method {
        match self {
            WebhookMethod::Post => reqwest::Method::POST,
            WebhookMethod::Put => reqwest::Method::PUT,
            WebhookMethod::Patch => reqwest::Method::PATCH,
        }
    }
}

/// A checked target, as stored in the envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub url: String,
    pub method: WebhookMethod,
    /// Lower-case names, in order.
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: u64,
}

impl Target {
    /// Checks a target's parts (not its address: see `check_address`).
    pub fn new(
        url: &str,
        method: Option<&str>,
        headers: Option<&BTreeMap<String, String>>,
        timeout_ms: Option<u64>,
    ) -> Result<Target, TargetError> {
        let parsed = parse_url(url)?;
        let method = method
            .map(WebhookMethod::parse)
            .transpose()?
            .unwrap_or_default();
        let headers = check_headers(headers.cloned().unwrap_or_default())?;
        let timeout = timeout_ms.map_or(TIMEOUT_DEFAULT, Duration::from_millis);
        if !(TIMEOUT_MIN..=TIMEOUT_MAX).contains(&timeout) {
            return Err(invalid(
                "timeout_ms",
                format!(
                    "{} is outside {} ..= {}",
                    timeout.as_millis(),
                    TIMEOUT_MIN.as_millis(),
                    TIMEOUT_MAX.as_millis()
                ),
            ));
        }
        Ok(Target {
            url: parsed.to_string(),
            method,
            headers,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        })
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn parsed_url(&self) -> Result<Url, TargetError> {
        parse_url(&self.url)
    }

    /// The headers as the API shows them: values of headers that usually carry credentials
    /// are replaced by `***`.
    pub fn redacted_headers(&self) -> BTreeMap<String, String> {
        self.headers
            .iter()
            .map(|(name, value)| {
                let sensitive = [
                    "authorization",
                    "cookie",
                    "token",
                    "secret",
                    "key",
                    "password",
                    "signature",
                ]
                .iter()
                .any(|word| name.contains(word));
                let shown = if sensitive {
                    "***".to_owned()
                } else {
                    value.clone()
                };
                (name.clone(), shown)
            })
            .collect()
    }

    /// The SSRF check at creation: an address literal must be permitted, and a name must not
    /// resolve only to refused addresses now. A name that does not resolve now is accepted: it
    /// is checked again, on the addresses actually dialled, every time the webhook is sent.
    pub async fn check_address(&self, guard: &GuardedResolver) -> Result<(), TargetError> {
        let url = self.parsed_url()?;
        match url.host() {
            Some(url::Host::Ipv4(ip)) => check_literal(guard, IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => check_literal(guard, IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => {
                let lookup = tokio::time::timeout(Duration::from_secs(2), guard.permitted(name));
                match lookup.await {
                    Ok(Err(error)) if error.is::<super::guard::Refused>() => {
                        Err(TargetError::Refused(error.to_string()))
                    }
                    _ => Ok(()),
                }
            }
            None => Err(invalid("url", "has no host")),
        }
    }
}

fn check_literal(guard: &GuardedResolver, ip: IpAddr) -> Result<(), TargetError> {
    if guard.policy.permits(ip) {
        Ok(())
    } else {
        Err(TargetError::Refused(format!(
            "{ip} is an address webhooks may not reach (loopback, private, link-local or \
             similar); an operator may allow a range with webhooks.allow_networks"
        )))
    }
}

fn parse_url(text: &str) -> Result<Url, TargetError> {
    if text.len() > URL_BYTES_MAX {
        return Err(invalid(
            "url",
            format!("is {} bytes; the limit is {URL_BYTES_MAX}", text.len()),
        ));
    }
    let url = Url::parse(text)
        .map_err(|error| invalid("url", format!("{text:?} is not a URL: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            "url",
            format!("the scheme must be http or https, not {:?}", url.scheme()),
        ));
    }
    if url.host().is_none() {
        return Err(invalid("url", "has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "url",
            "must not carry credentials; send them in a header",
        ));
    }
    Ok(url)
}

fn check_headers(
    headers: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, TargetError> {
    if headers.len() > HEADERS_MAX {
        return Err(invalid(
            "headers",
            format!("{} headers; the limit is {HEADERS_MAX}", headers.len()),
        ));
    }
    let mut checked = BTreeMap::new();
    let mut bytes = 0;
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if HeaderName::from_bytes(lower.as_bytes()).is_err() {
            return Err(invalid("headers", format!("{name:?} is not a header name")));
        }
        let reserved = RESERVED_HEADERS.contains(&lower.as_str())
            || RESERVED_HEADER_PREFIXES
                .iter()
                .any(|prefix| lower.starts_with(prefix));
        if reserved {
            return Err(invalid(
                "headers",
                format!("{name:?} is set by punctual or the connection"),
            ));
        }
        if value.len() > HEADER_VALUE_BYTES_MAX {
            return Err(invalid(
                "headers",
                format!(
                    "the value of {name:?} is {} bytes; the limit is {HEADER_VALUE_BYTES_MAX}",
                    value.len()
                ),
            ));
        }
        if HeaderValue::from_str(&value).is_err() {
            return Err(invalid(
                "headers",
                format!("the value of {name:?} has characters a header cannot hold"),
            ));
        }
        bytes += lower.len() + value.len();
        if checked.insert(lower, value).is_some() {
            return Err(invalid("headers", format!("{name:?} is given twice")));
        }
    }
    if bytes > HEADERS_BYTES_MAX {
        return Err(invalid(
            "headers",
            format!("{bytes} bytes in all; the limit is {HEADERS_BYTES_MAX}"),
        ));
    }
    Ok(checked)
}

/// The stored payload of a webhook job, borrowed from its text for sending.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<'a> {
    pub webhook: Target,
    #[serde(borrow)]
    pub payload: &'a RawValue,
}

impl<'a> Envelope<'a> {
    /// Reads a webhook job's stored payload.
    pub fn parse(stored: &'a str) -> Result<Envelope<'a>, serde_json::Error> {
        serde_json::from_str(stored)
    }
}

/// Wraps the caller's payload (JSON text, already within `WEBHOOK_PAYLOAD_BYTES_MAX`) with its
/// target into a job's stored payload.
pub fn envelope(target: &Target, payload: &str) -> Result<Payload, TargetError> {
    if payload.len() > WEBHOOK_PAYLOAD_BYTES_MAX {
        return Err(invalid(
            "payload",
            format!(
                "is {} bytes; a webhook job's payload may be at most {WEBHOOK_PAYLOAD_BYTES_MAX}",
                payload.len()
            ),
        ));
    }
    #[derive(Serialize)]
    struct Wrapped<'a> {
        webhook: &'a Target,
        payload: &'a RawValue,
    }
    let raw: &RawValue =
        serde_json::from_str(payload).map_err(|error| invalid("payload", error.to_string()))?;
    let text = serde_json::to_string(&Wrapped {
        webhook: target,
        payload: raw,
    })
    .map_err(|error| invalid("payload", error.to_string()))?;
    Payload::from_json_text(&text).map_err(|error| invalid("payload", error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::guard::{AddressPolicy, NameResolver};
    use std::sync::Arc;

    fn target(url: &str) -> Result<Target, TargetError> {
        Target::new(url, None, None, None)
    }

    #[test]
    fn urls_are_checked() {
        assert!(target("https://example.com/hook").is_ok());
        assert!(target("http://93.184.216.34:8080/hook?x=1").is_ok());
        for bad in [
            "ftp://example.com/",
            "not a url",
            "https://user:pw@example.com/",
            "file:///etc/passwd",
        ] {
            assert!(target(bad).is_err(), "{bad} should be refused");
        }
        let long = format!("https://example.com/{}", "a".repeat(URL_BYTES_MAX));
        assert!(target(&long).is_err());
    }

    #[test]
    fn methods_headers_and_timeouts_are_checked() {
        assert!(Target::new("https://example.com", Some("DELETE"), None, None).is_err());
        assert_eq!(
            Target::new("https://example.com", Some("put"), None, None)
                .expect("valid")
                .method,
            WebhookMethod::Put
        );
        let headers = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect()
        };
        for bad in [
            headers(&[("Host", "evil")]),
            headers(&[("webhook-id", "x")]),
            headers(&[("bad name", "x")]),
            headers(&[("x-a", "line\nbreak")]),
        ] {
            assert!(
                Target::new("https://example.com", None, Some(&bad), None).is_err(),
                "{bad:?}"
            );
        }
        let good = Target::new(
            "https://example.com",
            None,
            Some(&headers(&[
                ("X-Tenant", "7"),
                ("Authorization", "Bearer s"),
            ])),
            None,
        )
        .expect("valid");
        assert_eq!(good.headers.get("x-tenant").map(String::as_str), Some("7"));
        assert_eq!(
            good.redacted_headers()
                .get("authorization")
                .map(String::as_str),
            Some("***")
        );
        assert!(Target::new("https://example.com", None, None, Some(50)).is_err());
        assert!(Target::new("https://example.com", None, None, Some(300_001)).is_err());
        assert_eq!(
            target("https://example.com").expect("valid").timeout(),
            TIMEOUT_DEFAULT
        );
    }

    #[test]
    fn the_envelope_round_trips_and_keeps_the_payload_as_sent() {
        let target = target("https://example.com/hook").expect("valid");
        let stored = envelope(&target, r#"{"b": 1,  "a": [2]}"#).expect("fits");
        let read = Envelope::parse(stored.as_str()).expect("parses");
        assert_eq!(read.webhook, target);
        assert_eq!(read.payload.get(), r#"{"b": 1,  "a": [2]}"#);
        let big = format!("\"{}\"", "x".repeat(WEBHOOK_PAYLOAD_BYTES_MAX));
        assert!(envelope(&target, &big).is_err());
        // The largest target with the largest payload still fits the core's limit.
        let headers: BTreeMap<String, String> = (0..HEADERS_MAX)
            .map(|i| {
                (
                    format!("x-h{i:02}"),
                    "v".repeat(HEADERS_BYTES_MAX / HEADERS_MAX - 6),
                )
            })
            .collect();
        let url = format!("https://example.com/{}", "p".repeat(URL_BYTES_MAX - 20));
        let largest = Target::new(&url, None, Some(&headers), Some(1_000)).expect("valid");
        let payload = format!("\"{}\"", "x".repeat(WEBHOOK_PAYLOAD_BYTES_MAX - 2));
        assert!(envelope(&largest, &payload).is_ok());
    }

    struct Fixed(Vec<IpAddr>);

    #[async_trait::async_trait]
    impl NameResolver for Fixed {
        async fn resolve(&self, _host: &str) -> std::io::Result<Vec<IpAddr>> {
            Ok(self.0.clone())
        }
    }

    #[tokio::test]
    async fn refused_addresses_are_refused_at_creation() {
        let guard = |addresses: Vec<IpAddr>| GuardedResolver {
            policy: Arc::new(AddressPolicy::default()),
            resolver: Arc::new(Fixed(addresses)),
        };
        let public = guard(vec!["93.184.216.34".parse().expect("ip")]);
        let local = guard(vec!["127.0.0.1".parse().expect("ip")]);
        let named = target("https://receiver.test/hook").expect("valid");
        assert!(named.check_address(&public).await.is_ok());
        assert!(matches!(
            named.check_address(&local).await,
            Err(TargetError::Refused(_))
        ));
        for literal in [
            "http://127.0.0.1/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.8/",
        ] {
            let literal = target(literal).expect("valid");
            assert!(matches!(
                literal.check_address(&public).await,
                Err(TargetError::Refused(_))
            ));
        }
    }
}
