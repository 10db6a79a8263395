//! The HTTP client behind `--url`: one request per call to a punctual server's `/v1` API, with
//! the bearer token, bounded timeouts and a bounded read of every answer; an error answer is
//! read as the server's problem document and carried out as a `Failure`.
//!
//! Moves the wire types of `punctual_server::dto` and nothing else; must not interpret jobs
//! (the commands in `jobs` and `queues` do).

use std::time::Duration;

use anyhow::Context as _;
use punctual_server::{ApiError, Problem};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::failure::Failure;

/// How long to wait for a connection: a server that does not accept in this time is as good as
/// down, and saying so promptly beats hanging a script.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take in all. The longest the API works on one is a redrive of
/// 10,000 jobs, which takes seconds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read. A page of 1000 jobs holds at most 8 MiB of payload (the server ends
/// a page early past that); escaping and the other fields stay well within four times that.
const RESPONSE_BYTES_MAX: usize = 32 * 1024 * 1024;
/// How much of an answer that is not a problem document an error message quotes.
const QUOTE_CHARS_MAX: usize = 200;

/// A client of one server.
pub struct Client {
    http: reqwest::Client,
    /// The server's address, ending in `/`, so that `v1/...` joins below any path prefix a
    /// proxy serves it under.
    base: Url,
    /// `Bearer pct_...`, marked sensitive so that it never appears in a debug print.
    authorization: Option<HeaderValue>,
}

/// Parses `--url`: an `http` or `https` address, like `http://127.0.0.1:7272`.
pub fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| format!("{text:?} is not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{text:?} is not an http:// or https:// URL of a punctual server"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{text:?} has a query or fragment; give the server's address only"
        ));
    }
    Ok(url)
}

impl Client {
    pub fn new(mut base: Url, token: Option<&str>) -> anyhow::Result<Client> {
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let authorization = token
            .map(|token| {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                    .map_err(|_| Failure::invalid("--token holds characters a header cannot"))?;
                value.set_sensitive(true);
                Ok::<_, anyhow::Error>(value)
            })
            .transpose()?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("punctual-cli/", env!("CARGO_PKG_VERSION")))
            // The API never redirects; following one could carry the token somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("starting the HTTP client")?;
        Ok(Client {
            http,
            base,
            authorization,
        })
    }

    /// For messages: `server http://...`.
    pub fn describe(&self) -> String {
        format!("server {}", self.base)
    }

    /// `GET path?query`, answered with a `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let mut url = self.url(path)?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        self.send(Method::GET, url, None, HeaderMap::new()).await
    }

    /// `POST path` with `body` as JSON and extra `headers`, answered with a `T`.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        headers: HeaderMap,
    ) -> anyhow::Result<T> {
        let url = self.url(path)?;
        let body = serde_json::to_vec(body).context("encoding the request")?;
        self.send(Method::POST, url, Some(body), headers).await
    }

    /// `POST path` without a body (`cancel`, `retry`), answered with a `T`.
    pub async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = self.url(path)?;
        self.send(Method::POST, url, None, HeaderMap::new()).await
    }

    /// `method path`, with `body` as JSON when there is one (`PUT`, `PATCH`, `DELETE`),
    /// answered with a `T`.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        let url = self.url(path)?;
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .context("encoding the request")?;
        self.send(method, url, body, HeaderMap::new()).await
    }

    fn url(&self, path: &str) -> anyhow::Result<Url> {
        self.base
            .join(path)
            .with_context(|| format!("joining {path:?} to {}", self.base))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        mut headers: HeaderMap,
    ) -> anyhow::Result<T> {
        let what = format!("{method} {}", url.path());
        if let Some(authorization) = &self.authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        let mut request = self.http.request(method, url).headers(headers);
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| self.unreachable(error))?;
        let status = response.status();
        let body = read_bounded(response).await.map_err(|error| match error {
            Read::TooLarge => anyhow::anyhow!(
                "the answer to {what} is over the {RESPONSE_BYTES_MAX} bytes this client reads"
            ),
            Read::Transport(error) => self.unreachable(error),
        })?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .with_context(|| format!("reading the server's answer to {what}"));
        }
        Err(problem(status, &body, &what))
    }

    /// A request that got no (complete) answer: the server cannot be reached, or is too slow.
    fn unreachable(&self, error: reqwest::Error) -> anyhow::Error {
        // reqwest's own message is terse ("error sending request") and names the URL, which
        // `describe` already does; its sources say why.
        let timeout = error.is_timeout();
        let error = error.without_url();
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            reason = format!("{reason}: {cause}");
            source = cause.source();
        }
        if timeout {
            reason = format!("no answer in time ({reason})");
        }
        Failure::unavailable(format!("cannot reach the {}: {reason}", self.describe()))
    }
}

enum Read {
    TooLarge,
    Transport(reqwest::Error),
}

/// The whole body, refused past `RESPONSE_BYTES_MAX` without reading further.
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, Read> {
    if response
        .content_length()
        .is_some_and(|length| length > RESPONSE_BYTES_MAX as u64)
    {
        return Err(Read::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Read::Transport)? {
        if body.len() + chunk.len() > RESPONSE_BYTES_MAX {
            return Err(Read::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error answer as a `Failure`: the server's problem document, or, from something in front
/// of it that sends none (a proxy), the problem its status stands for.
fn problem(status: StatusCode, body: &[u8], what: &str) -> anyhow::Error {
    if let Ok(problem) = serde_json::from_slice::<Problem>(body) {
        return Failure::Problem(problem).into();
    }
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .take(QUOTE_CHARS_MAX)
        .collect();
    let detail = format!("{what} was answered {status} without a problem document: {text:?}");
    let api = match status {
        StatusCode::UNAUTHORIZED => ApiError::unauthorized(detail),
        StatusCode::FORBIDDEN => ApiError::forbidden(detail),
        StatusCode::NOT_FOUND => ApiError::not_found(detail),
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
            ApiError::unavailable(detail)
        }
        _ => return anyhow::anyhow!(detail),
    };
    Failure::from_api(api).into()
}

/// The `Idempotency-Key` header, when a key is given.
pub fn idempotency_header(key: Option<&str>) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    if let Some(key) = key {
        let value = HeaderValue::from_str(key).map_err(|_| {
            Failure::invalid("invalid --idempotency-key: it must be printable ASCII")
        })?;
        headers.insert(HeaderName::from_static("idempotency-key"), value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_addresses_joined_below_their_path() {
        assert!(parse_url("ftp://example.com").is_err());
        assert!(parse_url("127.0.0.1:7272").is_err());
        assert!(parse_url("http://example.com/?x=1").is_err());
        let client = Client::new(
            parse_url("http://example.com/punctual").expect("a URL"),
            None,
        )
        .expect("a client");
        assert_eq!(
            client.url("v1/jobs").expect("joined").as_str(),
            "http://example.com/punctual/v1/jobs"
        );
        let client = Client::new(parse_url("http://127.0.0.1:7272").expect("a URL"), None)
            .expect("a client");
        assert_eq!(
            client.url("v1/queues").expect("joined").as_str(),
            "http://127.0.0.1:7272/v1/queues"
        );
    }

    #[test]
    fn an_answer_without_a_problem_document_is_coded_by_its_status() {
        let error = problem(StatusCode::BAD_GATEWAY, b"<html>", "GET /v1/jobs");
        match Failure::find(&error) {
            Some(Failure::Problem(problem)) => assert_eq!(problem.code, "unavailable"),
            other => panic!("expected a problem, found {other:?}"),
        }
        let error = problem(StatusCode::IM_A_TEAPOT, b"", "GET /v1/jobs");
        assert!(Failure::find(&error).is_none());
    }
}
