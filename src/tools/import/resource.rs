//! The course reviews resource of an API shaped like Udemy's API 2.0, over plain HTTP:
//! `GET <base>/courses/<id>/reviews/?page=P&page_size=S` answering `{count, next, previous,
//! results}`. Reading a page is idempotent, so throttling (429, honouring Retry-After),
//! server errors and broken connections are retried with the project's backoff, a bounded
//! number of times; any other refusal is final at once. Every error names the page and URL.

use std::time::Duration;

use reqwest::header::{ACCEPT, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::error::{causes, Error, Result};
use crate::retry::{self, Backoff};
use crate::secret::shown_url;

const FIRST_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// A Retry-After longer than this is taken as this: an import should not sleep for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One page as answered. `results` stay JSON values so that one bad review is skipped
/// alone instead of failing the page.
#[derive(Debug, Deserialize)]
pub struct Page {
    pub count: Option<u64>,
    pub results: Vec<Value>,
}

pub struct ReviewsResource {
    http: reqwest::Client,
    base: Url,
    course: i64,
    attempts: u32,
}

enum Attempt {
    Answered(Page),
    Retry {
        failure: String,
        after: Option<Duration>,
    },
    Refused(String),
}

impl ReviewsResource {
    /// `attempts`: tries per page (at least one).
    pub fn new(base: &str, course: i64, attempts: u32) -> Result<Self> {
        let base = Url::parse(base.trim())
            .map_err(|e| Error::Config(format!("--url is not a URL: {e}")))?;
        let shown = shown_url(&base);
        match base.scheme() {
            "http" => {}
            // reqwest is built without a TLS stack (see Cargo.toml), so https cannot work.
            "https" => {
                return Err(Error::Config(format!(
                    "--url {shown}: https is not supported by this build of reviewflow (it has \
                     no TLS); use an http:// URL, e.g. through a local TLS proxy"
                )))
            }
            other => {
                return Err(Error::Config(format!(
                    "--url {shown}: scheme {other} is not http"
                )))
            }
        }
        if base.cannot_be_a_base() {
            return Err(Error::Config(format!("--url {shown} is not a base URL")));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| Error::Config(format!("http client: {e}")))?;
        Ok(ReviewsResource {
            http,
            base,
            course,
            attempts: attempts.max(1),
        })
    }

    /// The API's base URL, against which the paths it answers are resolved.
    pub fn base(&self) -> &Url {
        &self.base
    }

    pub fn url(&self, page: u64, page_size: u64) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked to be a base URL")
            .pop_if_empty()
            // The empty last segment is the resource's trailing slash.
            .extend(["courses", &self.course.to_string(), "reviews", ""]);
        url.query_pairs_mut()
            .append_pair("page", &page.to_string())
            .append_pair("page_size", &page_size.to_string());
        url
    }

    /// The page, or None when shutdown came first.
    pub async fn page(
        &self,
        page: u64,
        page_size: u64,
        shutdown: &CancellationToken,
    ) -> Result<Option<Page>> {
        let url = self.url(page, page_size);
        let fail = |detail: String| {
            Error::Import(format!(
                "course {}, page {page} ({}): {detail}",
                self.course,
                shown_url(&url)
            ))
        };
        let mut backoff = Backoff::new(FIRST_PAUSE, MAX_PAUSE);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = tokio::select! {
                outcome = self.attempt(&url) => outcome,
                _ = shutdown.cancelled() => return Ok(None),
            };
            let (failure, after) = match outcome {
                Attempt::Answered(page) => return Ok(Some(page)),
                Attempt::Refused(detail) => return Err(fail(detail)),
                Attempt::Retry { failure, after } => (failure, after),
            };
            if attempt >= self.attempts {
                return Err(fail(format!(
                    "gave up after {attempt} attempts; the last: {failure}"
                )));
            }
            tracing::warn!(course = self.course, page, attempt, %failure, "reading a page failed; retrying");
            let waited = match after {
                Some(delay) => retry::sleep(delay, shutdown).await,
                None => backoff.wait(shutdown).await,
            };
            if !waited {
                return Ok(None);
            }
        }
    }

    async fn attempt(&self, url: &Url) -> Attempt {
        let sent = self
            .http
            .get(url.clone())
            .header(ACCEPT, "application/json")
            .send()
            .await;
        // The URL is left out of reqwest's errors: ours name it already, without a password.
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_builder() => return Attempt::Refused(causes(&e.without_url())),
            Err(e) => {
                return Attempt::Retry {
                    failure: causes(&e.without_url()),
                    after: None,
                }
            }
        };
        let status = response.status();
        let after = retry_after(response.headers());
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => {
                return Attempt::Retry {
                    failure: causes(&e.without_url()),
                    after: None,
                }
            }
        };
        if status.is_success() {
            return match serde_json::from_slice(&body) {
                Ok(page) => Attempt::Answered(page),
                Err(e) => Attempt::Refused(format!(
                    "the answer is not a page of reviews ({e}): {}",
                    snippet(&body)
                )),
            };
        }
        let failure = format!("the server answered {status}: {}", snippet(&body));
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Attempt::Retry { failure, after }
        } else if status == StatusCode::NOT_FOUND {
            Attempt::Refused(format!("{failure} (check --course and --url)"))
        } else {
            Attempt::Refused(failure)
        }
    }
}

/// Retry-After in seconds; the HTTP-date form is left to the backoff.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None if text.is_empty() => "(empty body)".into(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_urls_follow_the_resource_shape() {
        let r = ReviewsResource::new("http://api.local:8000/api-2.0/", 42, 1).unwrap();
        assert_eq!(
            r.url(3, 50).as_str(),
            "http://api.local:8000/api-2.0/courses/42/reviews/?page=3&page_size=50"
        );
        let r = ReviewsResource::new("http://api.local:8000", 42, 1).unwrap();
        assert_eq!(
            r.url(1, 1).as_str(),
            "http://api.local:8000/courses/42/reviews/?page=1&page_size=1"
        );
        assert!(ReviewsResource::new("https://www.udemy.com/api-2.0", 1, 1).is_err());
        assert!(ReviewsResource::new("not a url", 1, 1).is_err());
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(RETRY_AFTER, "86400".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }
}
