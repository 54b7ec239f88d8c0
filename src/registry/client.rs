//! A client for any registry that speaks Confluent's REST API (SCHEMA_REGISTRY_URL): register a
//! schema under a subject, fetch a schema by id. Both calls are idempotent, so connection
//! failures, timeouts and 5xx answers are retried a few times with growing pauses before the
//! error (naming the registry's URL, without its password) reaches the caller.

use std::sync::Arc;
use std::time::Duration;

use apache_avro::Schema;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};

use super::http::MEDIA_TYPE;
use super::{normalised, parse_stored, Memo};
use crate::error::{causes, Error, Result};
use crate::secret::shown_url as shown;

/// Tries per call; with the pauses below a registry that stays down costs about 1.4 s.
const ATTEMPTS: u32 = 4;
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A Confluent-compatible registry reached over HTTP; cheap to clone.
#[derive(Clone)]
pub struct RemoteRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    base: Url,
    /// The URL as logs and errors show it: without a password.
    shown: String,
    http: reqwest::Client,
    memo: Memo,
}

impl RemoteRegistry {
    /// A client for the registry at `url` (`http://host:port`, optionally with a path prefix
    /// and `user:password@` for basic authentication). Nothing is sent yet.
    pub fn new(url: &str) -> Result<Self> {
        let url = url.trim();
        if url.contains(',') {
            return Err(Error::Config(
                "SCHEMA_REGISTRY_URL names several registries; reviewflow talks to one: give one URL"
                    .into(),
            ));
        }
        // The parse error is shown without the text, which may hold a password.
        let base = Url::parse(url)
            .map_err(|e| Error::Config(format!("SCHEMA_REGISTRY_URL is not a URL: {e}")))?;
        let shown = shown(&base);
        match base.scheme() {
            "http" => {}
            // reqwest is built without a TLS stack (see Cargo.toml), so https cannot work.
            "https" => {
                return Err(Error::Config(format!(
                    "SCHEMA_REGISTRY_URL {shown}: https is not supported by this build of \
                     reviewflow (it has no TLS); use an http:// URL, e.g. through a local TLS proxy"
                )))
            }
            other => {
                return Err(Error::Config(format!(
                    "SCHEMA_REGISTRY_URL {shown}: scheme {other} is not http"
                )))
            }
        }
        if base.cannot_be_a_base() {
            return Err(Error::Config(format!(
                "SCHEMA_REGISTRY_URL {shown} is not a base URL"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| Error::Config(format!("schema registry client: {e}")))?;
        Ok(RemoteRegistry {
            inner: Arc::new(Inner {
                base,
                shown,
                http,
                memo: Memo::default(),
            }),
        })
    }

    /// The registry's URL, without a password.
    pub fn url(&self) -> &str {
        &self.inner.shown
    }

    /// See [`super::Registry::register`].
    pub async fn register(&self, subject: &str, schema: &Schema) -> Result<u32> {
        let text = normalised(schema)?;
        if let Some(id) = self.inner.memo.registered(subject, &text) {
            return Ok(id);
        }
        let url = self.endpoint(&["subjects", subject, "versions"])?;
        let body = json!({ "schema": text, "schemaType": "AVRO" });
        let (status, answer) = self.call(Method::POST, url, Some(&body)).await?;
        match status {
            StatusCode::OK => {
                let id = answer["id"]
                    .as_u64()
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(|| {
                        Error::Registry(format!(
                            "{} answered a registration under {subject} without an id: {answer}",
                            self.url()
                        ))
                    })?;
                self.inner.memo.remember_registered(subject, text, id);
                Ok(id)
            }
            StatusCode::CONFLICT => Err(Error::IncompatibleSchema {
                subject: subject.to_owned(),
                detail: message(&answer),
            }),
            _ => Err(Error::Registry(format!(
                "{} refused to register a schema under {subject} ({status}): {}",
                self.url(),
                message(&answer)
            ))),
        }
    }

    /// See [`super::Registry::schema`].
    pub async fn schema(&self, id: u32) -> Result<Arc<Schema>> {
        if let Some(schema) = self.inner.memo.schema(id) {
            return Ok(schema);
        }
        let url = self.endpoint(&["schemas", "ids", &id.to_string()])?;
        let (status, answer) = self.call(Method::GET, url, None).await?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(Error::UnknownSchema {
                    id,
                    registry: self.url().to_string(),
                })
            }
            _ => {
                return Err(Error::Registry(format!(
                    "{} answered {status} for schema id {id}: {}",
                    self.url(),
                    message(&answer)
                )))
            }
        }
        if let Some(kind) = answer["schemaType"]
            .as_str()
            .filter(|t| !t.eq_ignore_ascii_case("AVRO"))
        {
            return Err(Error::Registry(format!(
                "schema id {id} at {} is a {kind} schema, not Avro",
                self.url()
            )));
        }
        if answer["references"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            return Err(Error::Registry(format!(
                "schema id {id} at {} uses schema references, which reviewflow does not resolve",
                self.url()
            )));
        }
        let text = answer["schema"].as_str().ok_or_else(|| {
            Error::Registry(format!(
                "{} answered for schema id {id} without a schema",
                self.url()
            ))
        })?;
        Ok(self.inner.memo.remember_schema(id, parse_stored(id, text)?))
    }

    fn endpoint(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.inner.base.clone();
        // Segments are percent-encoded here, so any subject name is safe in the path.
        url.path_segments_mut()
            .map_err(|()| Error::Config(format!("{} is not a base URL", self.url())))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Sends one request, retrying transport failures and 5xx/429 answers; returns the first
    /// other answer with its JSON body (`Null` when the body is not JSON).
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value)> {
        let mut pause = FIRST_PAUSE;
        let mut attempt = 1;
        loop {
            let mut request = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .header(ACCEPT, MEDIA_TYPE);
            if let Some(body) = body {
                request = request
                    .header(CONTENT_TYPE, MEDIA_TYPE)
                    .body(body.to_string());
            }
            // Whether it could not be reached at all, or answered with a failure.
            let (unreachable, failure) = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    match response.text().await {
                        Ok(text) if !retryable(status) => {
                            return Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
                        }
                        Ok(text) => (
                            false,
                            format!("{status}: {}", text.chars().take(300).collect::<String>()),
                        ),
                        Err(e) => (true, causes(&e)),
                    }
                }
                Err(e) if e.is_builder() => {
                    return Err(Error::Registry(format!("{}: {}", self.url(), causes(&e))))
                }
                Err(e) => (true, causes(&e)),
            };
            if attempt >= ATTEMPTS {
                let (state, check) = if unreachable {
                    (
                        "is unreachable",
                        "is it running, and is SCHEMA_REGISTRY_URL right?",
                    )
                } else {
                    ("keeps failing", "see the registry's own log")
                };
                return Err(Error::Registry(format!(
                    "the schema registry at {} {state} ({method} {}, {ATTEMPTS} attempts): \
                     {failure}; {check}",
                    self.url(),
                    url.path()
                )));
            }
            tracing::warn!(registry = %self.url(), attempt, %failure, "schema registry call failed; retrying");
            tokio::time::sleep(pause).await;
            pause *= 2;
            attempt += 1;
        }
    }
}

/// Worth another try: the registry is overloaded, restarting, or failing for now.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// Confluent's error message, or the whole body when it is not one.
fn message(answer: &Value) -> String {
    match (&answer["message"], &answer["error_code"]) {
        (Value::String(m), Value::Null) => m.clone(),
        (Value::String(m), code) => format!("{m} (error code {code})"),
        _ => answer.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_password_and_checked() {
        let r = RemoteRegistry::new("http://user:secret@registry:8081/").unwrap();
        assert_eq!(r.url(), "http://user:***@registry:8081");
        assert!(RemoteRegistry::new("not a url").is_err());
        assert!(RemoteRegistry::new("ftp://registry").is_err());
        assert!(RemoteRegistry::new("http://a:8081,http://b:8081").is_err());
    }

    #[test]
    fn subjects_are_percent_encoded_in_paths() {
        let r = RemoteRegistry::new("http://registry:8081/prefix").unwrap();
        let url = r
            .endpoint(&["subjects", "a/b c-value", "versions"])
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://registry:8081/prefix/subjects/a%2Fb%20c-value/versions"
        );
    }
}
