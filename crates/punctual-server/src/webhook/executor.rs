//! The webhook executor: this node's handler for `WEBHOOK_KIND`. At `run_at` it sends the job's
//! payload to its target, signed, and turns the answer into the attempt's outcome:
//!
//! | answer | outcome |
//! | --- | --- |
//! | 2xx | success |
//! | 410 Gone | permanent failure: dead at once |
//! | 429, 503 with `Retry-After` | retry no sooner than it says |
//! | any other status (3xx included: redirects are not followed), a timeout, a connection error | failure, retried with the job's backoff |
//!
//! Webhooks are I/O: the engine keeps many in flight (`Config::concurrency`), over one pooled
//! keep-alive client, and a response body is read to at most `RESPONSE_BYTES_MAX` bytes. The
//! client dials only addresses the SSRF guard permits (it is the client's resolver), and an
//! address literal is checked here before each send.
//!
//! Headers on every request: `webhook-id` (the job id, the same on every retry of one
//! occurrence, for receivers to deduplicate), `webhook-timestamp`, `webhook-signature` (when
//! secrets are configured), `punctual-attempt`, `punctual-lease-token` (a fencing token that grows
//! with each claim) and `punctual-scheduled-at`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use punctual::{BoxError, Clock, Handler, JobContext, JobError};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};

use super::guard::GuardedResolver;
use super::sign::{Secret, signature_header};
use super::target::Envelope;
use crate::metrics::{Metrics, WebhookClass};

/// Most bytes of a response body read (and kept in the job's error when it failed).
pub const RESPONSE_BYTES_MAX: usize = 4 * 1024;
/// How long idle keep-alive connections are kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest time to set up a connection, whatever the target's timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the executor needs, shared by every send.
pub struct WebhookExecutor {
    client: reqwest::Client,
    guard: GuardedResolver,
    secrets: Arc<Vec<Secret>>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    user_agent: HeaderValue,
}

impl WebhookExecutor {
    /// A client with `pool_size` idle connections per receiver kept alive, redirects off, no
    /// proxy, and `guard` as its resolver.
    pub fn new(
        guard: GuardedResolver,
        secrets: Vec<Secret>,
        pool_size: usize,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Result<WebhookExecutor, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(guard.clone()))
            .pool_max_idle_per_host(pool_size)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http1_only()
            .build()?;
        let user_agent = HeaderValue::from_static(concat!("punctual/", env!("CARGO_PKG_VERSION")));
        Ok(WebhookExecutor {
            client,
            guard,
            secrets: Arc::new(secrets),
            metrics,
            clock,
            user_agent,
        })
    }

    async fn send(&self, job: &JobContext) -> Result<(), BoxError> {
        let envelope = Envelope::parse(job.payload.as_str()).map_err(|error| {
            JobError::permanent(format!("the stored webhook is unreadable: {error}"))
        })?;
        let target = &envelope.webhook;
        let url = target
            .parsed_url()
            .map_err(|error| JobError::permanent(error.to_string()))?;
        // A literal is not resolved, so the resolver never sees it: judge it here.
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal
            && !self.guard.policy.permits(ip)
        {
            self.metrics
                .webhook_response(WebhookClass::Refused, Duration::ZERO);
            return Err(JobError::permanent(format!(
                "refused: {ip} is an address webhooks may not reach"
            ))
            .into());
        }

        let body = envelope.payload.get().as_bytes().to_vec();
        let id = job.id.to_string();
        let timestamp = self.clock.now().as_millis().div_euclid(1_000);
        let mut headers = HeaderMap::with_capacity(target.headers.len() + 8);
        for (name, value) in &target.headers {
            // Checked when the target was made; a stored one that fails now is skipped.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, self.user_agent.clone());
        insert(&mut headers, "webhook-id", &id);
        insert(&mut headers, "webhook-timestamp", &timestamp.to_string());
        if !self.secrets.is_empty() {
            insert(
                &mut headers,
                "webhook-signature",
                &signature_header(&self.secrets, &id, timestamp, &body),
            );
        }
        insert(&mut headers, "punctual-attempt", &job.attempt.to_string());
        insert(
            &mut headers,
            "punctual-lease-token",
            &job.lease_token.0.to_string(),
        );
        insert(
            &mut headers,
            "punctual-scheduled-at",
            &job.run_at.to_rfc3339_exact(),
        );
        insert(
            &mut headers,
            "punctual-lease-expires-at",
            &job.lease_expires_at.to_rfc3339_exact(),
        );

        let started = Instant::now();
        let request = self
            .client
            .request(target.method.to_reqwest(), url)
            .headers(headers)
            .timeout(target.timeout())
            .body(body);
        let answered = tokio::select! {
            answered = request.send() => answered,
            () = job.cancellation.cancelled() => {
                return Err("cancelled before the receiver answered (the job was cancelled, its lease lost, or the node is stopping)".into());
            }
        };
        let response = match answered {
            Ok(response) => response,
            Err(error) => {
                let class = if error.is_timeout() {
                    WebhookClass::Timeout
                } else {
                    WebhookClass::ConnectionError
                };
                self.metrics.webhook_response(class, started.elapsed());
                return Err(describe_send_error(&error, target.timeout()).into());
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_retry_after);
        let snippet = read_bounded(response).await;
        self.metrics
            .webhook_response(WebhookClass::of(status.as_u16()), started.elapsed());
        judge(status.as_u16(), retry_after, &snippet)
    }
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// The outcome of an answer with `status`.
pub(crate) fn judge(
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
) -> Result<(), BoxError> {
    let message = || {
        if body.is_empty() {
            format!("the receiver answered {status}")
        } else {
            format!("the receiver answered {status}: {body}")
        }
    };
    match status {
        200..=299 => Ok(()),
        410 => Err(JobError::permanent(message()).into()),
        429 | 503 => match retry_after {
            Some(after) => Err(JobError::retry_after(after, message()).into()),
            None => Err(message().into()),
        },
        300..=399 => Err(format!("{} (redirects are not followed)", message()).into()),
        _ => Err(message().into()),
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let now = chrono::Utc::now();
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

fn describe_send_error(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("no answer within {} ms", timeout.as_millis());
    }
    // The chain holds the useful part (a refused address, a reset connection).
    let mut message = String::from("could not reach the receiver");
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// At most `RESPONSE_BYTES_MAX` bytes of the body, as text. A longer body is cut off and its
/// connection not reused, which bounds what a receiver can make this node read.
async fn read_bounded(mut response: reqwest::Response) -> String {
    let mut kept = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = RESPONSE_BYTES_MAX - kept.len();
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if kept.len() == RESPONSE_BYTES_MAX {
            break;
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

#[async_trait]
impl Handler for WebhookExecutor {
    async fn run(&self, job: JobContext) -> Result<(), BoxError> {
        self.send(&job).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directive(result: Result<(), BoxError>) -> Option<punctual::FailDirective> {
        result.err().map(|error| {
            error
                .downcast_ref::<JobError>()
                .map_or(punctual::FailDirective::Backoff, JobError::directive)
        })
    }

    #[test]
    fn answers_become_outcomes() {
        assert!(judge(200, None, "").is_ok());
        assert!(judge(204, None, "").is_ok());
        assert_eq!(
            directive(judge(410, None, "gone")),
            Some(punctual::FailDirective::Permanent)
        );
        let after = Duration::from_secs(30);
        assert_eq!(
            directive(judge(429, Some(after), "")),
            Some(punctual::FailDirective::After(after))
        );
        assert_eq!(
            directive(judge(503, Some(after), "")),
            Some(punctual::FailDirective::After(after))
        );
        assert_eq!(
            directive(judge(503, None, "")),
            Some(punctual::FailDirective::Backoff)
        );
        assert_eq!(
            directive(judge(500, Some(after), "")),
            Some(punctual::FailDirective::Backoff)
        );
        let redirect = judge(302, None, "").expect_err("a failure");
        assert!(redirect.to_string().contains("redirects are not followed"));
        let failed = judge(500, None, "boom").expect_err("a failure");
        assert_eq!(failed.to_string(), "the receiver answered 500: boom");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = chrono::Utc::now() + chrono::Duration::seconds(100);
        let parsed = parse_retry_after(&later.to_rfc2822()).expect("a date");
        assert!(parsed > Duration::from_secs(90) && parsed <= Duration::from_secs(100));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
