//! The REST face of [`LocalRegistry`]: the subset of Confluent Schema Registry's API that Avro
//! serialisers and deserialisers (Java, Python confluent-kafka, Rust) and people with curl
//! use. Paths, bodies, status codes and `error_code`s are Confluent's, so those clients
//! cannot tell the difference; query parameters this subset does not know are ignored.

use std::collections::HashMap;

use apache_avro::Schema;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::compat::Level;
use super::normalised;
use super::store::{Deletion, LocalRegistry, SubjectVersion, VersionRef};
use crate::error::Error;

/// What Confluent's server answers with, and what its clients send.
pub(crate) const MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Schemas of wide tables run to tens of kilobytes; well above that is a mistake or abuse.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The registry's routes, to be mounted at the root of an HTTP server. It has no fallback, so
/// it can be merged into a router that has one.
pub fn router(registry: LocalRegistry) -> Router {
    Router::new()
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/versions", get(schema_uses))
        .route(
            "/schemas/types",
            get(|| async { Reply::ok(json!(["AVRO"])) }),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_latest),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check),
        )
        .route("/config", get(global_level).put(set_global_level))
        .route(
            "/config/{subject}",
            get(subject_level)
                .put(set_subject_level)
                .delete(clear_subject_level),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_control_characters))
        .with_state(registry)
}

/// A subject (or any path segment) with a control character: PostgreSQL's text cannot store
/// a NUL, so without this check the store failed with a 500. Refused up front, as Confluent's
/// registry refuses an invalid subject.
async fn refuse_control_characters(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let decoded = percent_decoded(request.uri().path().as_bytes());
    if decoded.iter().any(|b| b.is_ascii_control()) {
        return Failure::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42208,
            "The specified subject is not a valid subject: it must not contain control \
             characters"
                .into(),
        )
        .into_response();
    }
    next.run(request).await
}

/// `%XX` sequences as the bytes they stand for; anything else as it is.
fn percent_decoded(path: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let pair = (path[i] == b'%')
            .then(|| Some((hex(*path.get(i + 1)?)?, hex(*path.get(i + 2)?)?)))
            .flatten();
        match pair {
            Some((high, low)) => {
                out.push(high << 4 | low);
                i += 3;
            }
            None => {
                out.push(path[i]);
                i += 1;
            }
        }
    }
    out
}

type Answer = Result<Reply, Failure>;
type Params = Query<HashMap<String, String>>;

async fn register(
    State(registry): State<LocalRegistry>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let (schema, text) = avro(body_of(&headers, &body, Failure::invalid_schema)?)?;
    let registered = registry
        .register_normalised(&subject, &schema, &text)
        .await?;
    Ok(Reply::ok(json!({ "id": registered.id })))
}

/// Whether a schema is registered under the subject, and as which version.
async fn lookup(
    State(registry): State<LocalRegistry>,
    Path(subject): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let (_, text) = avro(body_of(&headers, &body, Failure::invalid_schema)?)?;
    let deleted = flag(&params, "deleted");
    match registry.find(&subject, &text, deleted).await? {
        Some(found) => Ok(Reply::ok(version_json(&found))),
        None if registry.versions(&subject, deleted).await?.is_empty() => {
            Err(Failure::subject_not_found(&subject))
        }
        None => Err(Failure::schema_not_found()),
    }
}

async fn subjects(State(registry): State<LocalRegistry>, Query(params): Params) -> Answer {
    let subjects = registry.subjects(flag(&params, "deleted")).await?;
    Ok(Reply::ok(json!(subjects)))
}

async fn versions(
    State(registry): State<LocalRegistry>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Answer {
    let versions = registry
        .versions(&subject, flag(&params, "deleted"))
        .await?;
    if versions.is_empty() {
        return Err(Failure::subject_not_found(&subject));
    }
    Ok(Reply::ok(json!(versions)))
}

async fn version(
    State(registry): State<LocalRegistry>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> Answer {
    let which = version_ref(&version)?;
    let deleted = flag(&params, "deleted");
    match registry.version(&subject, which, deleted).await? {
        Some(found) => Ok(Reply::ok(version_json(&found))),
        None => Err(missing_version(&registry, &subject, &version).await),
    }
}

async fn delete_subject(
    State(registry): State<LocalRegistry>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Answer {
    match registry
        .delete_subject(&subject, flag(&params, "permanent"))
        .await?
    {
        Deletion::Deleted(versions) => Ok(Reply::ok(json!(versions))),
        Deletion::NoSubject => Err(Failure::subject_not_found(&subject)),
        Deletion::AlreadySoftDeleted => Err(Failure::new(
            StatusCode::NOT_FOUND,
            40404,
            format!(
                "Subject '{subject}' was soft deleted. Set permanent=true to delete permanently"
            ),
        )),
        Deletion::NotSoftDeleted => Err(Failure::new(
            StatusCode::NOT_FOUND,
            40405,
            format!("Subject '{subject}' was not deleted first before being permanently deleted"),
        )),
    }
}

async fn schema_by_id(State(registry): State<LocalRegistry>, Path(id): Path<String>) -> Answer {
    let Ok(id) = id.parse::<u32>() else {
        return Err(Failure::schema_not_found());
    };
    match registry.schema_text(id).await? {
        // AVRO is the type clients assume when "schemaType" is absent, as Confluent sends it.
        Some(text) => Ok(Reply::ok(json!({ "schema": text }))),
        None => Err(Failure::schema_not_found()),
    }
}

async fn schema_uses(State(registry): State<LocalRegistry>, Path(id): Path<String>) -> Answer {
    let Ok(id) = id.parse::<u32>() else {
        return Err(Failure::schema_not_found());
    };
    if registry.schema_text(id).await?.is_none() {
        return Err(Failure::schema_not_found());
    }
    let uses: Vec<Value> = registry
        .uses_of(id)
        .await?
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    Ok(Reply::ok(json!(uses)))
}

async fn check(
    State(registry): State<LocalRegistry>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let which = version_ref(&version)?;
    let (schema, _) = avro(body_of(&headers, &body, Failure::invalid_schema)?)?;
    match registry
        .compatibility_problems(&subject, which, &schema)
        .await?
    {
        Some(problems) => Ok(compatibility_json(problems, flag(&params, "verbose"))),
        None => Err(missing_version(&registry, &subject, &version).await),
    }
}

/// The newer form without a version: the check a registration would make.
async fn check_latest(
    State(registry): State<LocalRegistry>,
    Path(subject): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let (schema, _) = avro(body_of(&headers, &body, Failure::invalid_schema)?)?;
    let problems = registry
        .compatibility_problems(&subject, VersionRef::Latest, &schema)
        .await?
        .unwrap_or_default();
    Ok(compatibility_json(problems, flag(&params, "verbose")))
}

fn compatibility_json(problems: Vec<String>, verbose: bool) -> Reply {
    let mut answer = json!({ "is_compatible": problems.is_empty() });
    if verbose || !problems.is_empty() {
        answer["messages"] = json!(problems);
    }
    Reply::ok(answer)
}

async fn global_level(State(registry): State<LocalRegistry>) -> Answer {
    let level = registry.level(None).await?.unwrap_or_default();
    Ok(Reply::ok(json!({ "compatibilityLevel": level.as_str() })))
}

async fn subject_level(
    State(registry): State<LocalRegistry>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Answer {
    if let Some(level) = registry.level(Some(&subject)).await? {
        return Ok(Reply::ok(json!({ "compatibilityLevel": level.as_str() })));
    }
    if flag(&params, "defaultToGlobal") {
        return global_level(State(registry)).await;
    }
    Err(Failure::new(
        StatusCode::NOT_FOUND,
        40408,
        format!("Subject '{subject}' does not have subject-level compatibility configured"),
    ))
}

#[derive(Deserialize)]
struct LevelRequest {
    compatibility: String,
}

async fn set_global_level(
    State(registry): State<LocalRegistry>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    set_level(registry, None, &headers, &body).await
}

async fn set_subject_level(
    State(registry): State<LocalRegistry>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    set_level(registry, Some(&subject), &headers, &body).await
}

async fn set_level(
    registry: LocalRegistry,
    subject: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Answer {
    let request: LevelRequest = body_of(headers, body, Failure::invalid_level)?;
    let level: Level = request
        .compatibility
        .parse()
        .map_err(Failure::invalid_level)?;
    registry.set_compatibility(subject, level).await?;
    tracing::info!(subject = subject.unwrap_or("(global)"), %level, "compatibility level set");
    Ok(Reply::ok(json!({ "compatibility": level.as_str() })))
}

async fn clear_subject_level(
    State(registry): State<LocalRegistry>,
    Path(subject): Path<String>,
) -> Answer {
    match registry.clear_level(&subject).await? {
        Some(level) => Ok(Reply::ok(json!({ "compatibilityLevel": level.as_str() }))),
        None => Err(Failure::subject_not_found(&subject)),
    }
}

/// The body of a request that names a schema.
#[derive(Deserialize)]
struct SchemaRequest {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

/// The parsed schema and its normalised text.
fn avro(request: SchemaRequest) -> Result<(Schema, String), Failure> {
    if let Some(other) = request
        .schema_type
        .as_deref()
        .filter(|t| !t.eq_ignore_ascii_case("AVRO"))
    {
        return Err(Failure::invalid_schema(format!(
            "schema type {other} is not supported: this registry holds AVRO schemas only"
        )));
    }
    if !request.references.is_empty() {
        return Err(Failure::invalid_schema(
            "schema references are not supported by this registry: send the schema with \
             every named type it uses defined inline"
                .into(),
        ));
    }
    if request.schema.contains('\0') {
        // PostgreSQL's text, where schemas are kept, cannot hold it.
        return Err(Failure::invalid_schema(
            "Invalid Avro schema: it contains a NUL character".into(),
        ));
    }
    let schema = Schema::parse_str(&request.schema)
        .map_err(|e| Failure::invalid_schema(format!("Invalid Avro schema: {e}")))?;
    let text = normalised(&schema)?;
    Ok((schema, text))
}

/// A JSON body sent as Confluent's clients send it, as plain JSON, or with no content type
/// (curl users); `invalid` says what a well-formed body of the wrong shape is.
fn body_of<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
    invalid: fn(String) -> Failure,
) -> Result<T, Failure> {
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let essence = content_type
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let accepted = essence == "application/json"
            || essence == "application/octet-stream"
            || (essence.starts_with("application/") && essence.ends_with("+json"));
        if !accepted {
            return Err(Failure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                415,
                format!("HTTP 415 Unsupported Media Type: send {MEDIA_TYPE} or application/json"),
            ));
        }
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            invalid(e.to_string())
        } else {
            Failure::new(
                StatusCode::BAD_REQUEST,
                400,
                format!("the request body is not JSON: {e}"),
            )
        }
    })
}

fn version_ref(version: &str) -> Result<VersionRef, Failure> {
    match version {
        "latest" | "-1" => Ok(VersionRef::Latest),
        n => n
            .parse::<i32>()
            .ok()
            .filter(|n| *n > 0)
            .and_then(|n| u32::try_from(n).ok())
            .map(VersionRef::Number)
            .ok_or_else(|| {
                Failure::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    42202,
                    format!(
                        "The specified version '{version}' is not a valid version id. Allowed \
                         values are between [1, 2^31-1] and the string \"latest\""
                    ),
                )
            }),
    }
}

/// Subject not found, or the subject exists and the version does not.
async fn missing_version(registry: &LocalRegistry, subject: &str, version: &str) -> Failure {
    match registry.versions(subject, false).await {
        Ok(versions) if versions.is_empty() => Failure::subject_not_found(subject),
        Ok(_) => Failure::new(
            StatusCode::NOT_FOUND,
            40402,
            format!("Version {version} not found."),
        ),
        Err(e) => e.into(),
    }
}

fn version_json(v: &SubjectVersion) -> Value {
    json!({ "subject": v.subject, "version": v.version, "id": v.id, "schema": v.schema })
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// A successful answer, in Confluent's media type.
struct Reply(Value);

impl Reply {
    fn ok(body: Value) -> Self {
        Reply(body)
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        json_response(StatusCode::OK, &self.0)
    }
}

/// An error answer: `{"error_code": ..., "message": ...}` with the status Confluent uses.
struct Failure {
    status: StatusCode,
    code: u32,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, code: u32, message: String) -> Self {
        Failure {
            status,
            code,
            message,
        }
    }

    fn subject_not_found(subject: &str) -> Self {
        Failure::new(
            StatusCode::NOT_FOUND,
            40401,
            format!("Subject '{subject}' not found."),
        )
    }

    fn schema_not_found() -> Self {
        Failure::new(StatusCode::NOT_FOUND, 40403, "Schema not found".into())
    }

    fn invalid_schema(message: String) -> Self {
        Failure::new(StatusCode::UNPROCESSABLE_ENTITY, 42201, message)
    }

    fn invalid_level(message: String) -> Self {
        Failure::new(StatusCode::UNPROCESSABLE_ENTITY, 42203, message)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::IncompatibleSchema { subject, detail } => Failure::new(
                StatusCode::CONFLICT,
                409,
                format!(
                    "Schema being registered is incompatible with an earlier schema for \
                     subject \"{subject}\", details: {detail}"
                ),
            ),
            other => {
                tracing::error!(error = %other, "schema registry request failed");
                Failure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    50001,
                    format!("Error in the backend data store: {other}"),
                )
            }
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = json!({ "error_code": self.code, "message": self.message });
        json_response(self.status, &body)
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE))],
        body.to_string(),
    )
        .into_response()
}
