//! The schema registry over HTTP against the real PostgreSQL: what Confluent's clients expect
//! of the REST API (ids, versions, compatibility, errors), that the local and the remote
//! client agree, and that concurrent registrations never duplicate a version.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use apache_avro::Schema;
use reqwest::StatusCode;
use reviewflow::registry::{self, LocalRegistry, Registry, RemoteRegistry};
use reviewflow::Error;
use serde_json::{json, Value};

const MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";
const SUBJECT: &str = "reviews.changes-value";
const OTHER: &str = "other.topic-value";

struct Server {
    base: String,
    database_url: String,
}

async fn server(name: &str) -> Server {
    let database_url = common::fresh_database(name).await;
    let local = LocalRegistry::connect(&database_url).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, registry::router(local)).await });
    Server { base, database_url }
}

fn review(extra_fields: &str) -> Schema {
    Schema::parse_str(&format!(
        r#"{{"type": "record", "name": "Review", "namespace": "reviewflow",
            "fields": [{{"name": "id", "type": "long"}}{extra_fields}]}}"#
    ))
    .unwrap()
}

fn v1() -> Schema {
    review(r#", {"name": "course_id", "type": "long"}"#)
}

/// v1 plus a nullable title defaulting to null: BACKWARD compatible.
fn v2() -> Schema {
    review(
        r#", {"name": "course_id", "type": "long"},
             {"name": "title", "type": ["null", "string"], "default": null}"#,
    )
}

/// course_id turned from long into string: not BACKWARD compatible.
fn incompatible() -> Schema {
    review(
        r#", {"name": "course_id", "type": "string"},
             {"name": "title", "type": ["null", "string"], "default": null}"#,
    )
}

/// A request as Confluent's clients send it; answers the status and the JSON body, and
/// checks the answer's media type.
async fn call(
    method: reqwest::Method,
    url: String,
    content_type: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.expect("the registry answers");
    let status = response.status();
    let media = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(media.as_deref(), Some(MEDIA_TYPE), "{status} {body}");
    (status, body)
}

async fn get(base: &str, path: &str) -> (StatusCode, Value) {
    call(reqwest::Method::GET, format!("{base}{path}"), None, None).await
}

async fn post(base: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let url = format!("{base}{path}");
    call(reqwest::Method::POST, url, Some(MEDIA_TYPE), Some(body)).await
}

async fn put(base: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let url = format!("{base}{path}");
    call(reqwest::Method::PUT, url, Some(MEDIA_TYPE), Some(body)).await
}

fn schema_body(schema: &Schema) -> Value {
    json!({ "schema": registry::normalised(schema).unwrap() })
}

#[tokio::test]
async fn registry_over_http() {
    let s = server("registry_http").await;
    let remote = RemoteRegistry::new(&s.base).unwrap();

    // Registration, and its idempotence however the same schema is spelled and sent.
    let id1 = remote.register(SUBJECT, &v1()).await.unwrap();
    let spaced = json!({"schema": r#"{ "name": "Review", "type": "record", "namespace": "reviewflow",
        "fields": [ {"type": "long", "name": "id"}, {"name": "course_id", "type": "long"} ] }"#});
    let path = format!("/subjects/{SUBJECT}/versions");
    for content_type in [Some(MEDIA_TYPE), Some("application/json"), None] {
        let url = format!("{}{path}", s.base);
        let (status, body) = call(
            reqwest::Method::POST,
            url,
            content_type,
            Some(spaced.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!({ "id": id1 }), "sent as {content_type:?}");
    }
    assert_eq!(get(&s.base, &path).await, (StatusCode::OK, json!([1])));

    // The same schema under another subject has the same id.
    let (status, body) = post(&s.base, &format!("/subjects/{OTHER}/versions"), spaced).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "id": id1 })));

    // A compatible evolution is version 2.
    let id2 = remote.register(SUBJECT, &v2()).await.unwrap();
    assert_ne!(id2, id1);
    assert_eq!(get(&s.base, &path).await, (StatusCode::OK, json!([1, 2])));
    let (status, latest) = get(&s.base, &format!("{path}/latest")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(latest["version"], 2);
    assert_eq!(latest["id"], id2);
    assert_eq!(latest["subject"], SUBJECT);
    let (_, first) = get(&s.base, &format!("{path}/1")).await;
    assert_eq!(first["id"], id1);

    // An incompatible one is refused, over HTTP and through the client, and adds nothing.
    let (status, body) = post(&s.base, &path, schema_body(&incompatible())).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error_code"], 409);
    assert!(
        body["message"].as_str().unwrap().contains("course_id"),
        "{body}"
    );
    match remote.register(SUBJECT, &incompatible()).await {
        Err(Error::IncompatibleSchema { subject, detail }) => {
            assert_eq!(subject, SUBJECT);
            assert!(detail.contains("course_id"), "{detail}");
        }
        other => panic!("expected IncompatibleSchema, got {other:?}"),
    }
    assert_eq!(get(&s.base, &path).await, (StatusCode::OK, json!([1, 2])));
    let check = format!("/compatibility/subjects/{SUBJECT}/versions/latest");
    let (status, body) = post(&s.base, &check, schema_body(&incompatible())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["is_compatible"], false);
    assert!(!body["messages"].as_array().unwrap().is_empty(), "{body}");
    let (_, body) = post(&s.base, &check, schema_body(&v2())).await;
    assert_eq!(body["is_compatible"], true);

    // With the subject's level at NONE it registers; the global level stays BACKWARD.
    let config = format!("/config/{SUBJECT}");
    let (status, body) = get(&s.base, &config).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (StatusCode::NOT_FOUND, json!(40408))
    );
    let (_, body) = get(&s.base, &format!("{config}?defaultToGlobal=true")).await;
    assert_eq!(body, json!({ "compatibilityLevel": "BACKWARD" }));
    let (status, body) = put(&s.base, &config, json!({ "compatibility": "NONE" })).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "compatibility": "NONE" }))
    );
    assert_eq!(
        get(&s.base, &config).await,
        (StatusCode::OK, json!({ "compatibilityLevel": "NONE" }))
    );
    assert_eq!(
        get(&s.base, "/config").await,
        (StatusCode::OK, json!({ "compatibilityLevel": "BACKWARD" }))
    );
    let (status, body) = put(&s.base, &config, json!({ "compatibility": "SIDEWAYS" })).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!(42203))
    );
    let id3 = remote.register(SUBJECT, &incompatible()).await.unwrap();
    assert_eq!(
        get(&s.base, &path).await,
        (StatusCode::OK, json!([1, 2, 3]))
    );

    // A schema by id parses to what was registered.
    let (status, body) = get(&s.base, &format!("/schemas/ids/{id2}?subject={SUBJECT}")).await;
    assert_eq!(status, StatusCode::OK);
    let served = Schema::parse_str(body["schema"].as_str().unwrap()).unwrap();
    assert_eq!(served.canonical_form(), v2().canonical_form());
    assert_eq!(
        registry::normalised(&served).unwrap(),
        registry::normalised(&v2()).unwrap(),
        "defaults and all survive the round trip"
    );
    let fetched = remote.schema(id3).await.unwrap();
    assert_eq!(fetched.canonical_form(), incompatible().canonical_form());
    let (_, uses) = get(&s.base, &format!("/schemas/ids/{id1}/versions")).await;
    assert_eq!(
        uses,
        json!([{"subject": OTHER, "version": 1}, {"subject": SUBJECT, "version": 1}])
    );

    assert_eq!(
        get(&s.base, "/subjects").await,
        (StatusCode::OK, json!([OTHER, SUBJECT]))
    );

    // Lookup of a schema under a subject.
    let (status, body) = post(&s.base, &format!("/subjects/{SUBJECT}"), schema_body(&v1())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["id"].clone(), body["version"].clone()),
        (json!(id1), json!(1))
    );
    assert_eq!(body["subject"], SUBJECT);
    let unknown = review(r#", {"name": "other", "type": "int"}"#);
    let (status, body) = post(
        &s.base,
        &format!("/subjects/{SUBJECT}"),
        schema_body(&unknown),
    )
    .await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (StatusCode::NOT_FOUND, json!(40403))
    );
    let (_, body) = post(&s.base, "/subjects/nobody-value", schema_body(&v1())).await;
    assert_eq!(body["error_code"], 40401);

    confluent_errors(&s.base, &path).await;
    local_and_remote_agree(&s, &remote, [id1, id2, id3]).await;

    // Deleting a subject keeps its schema ids readable.
    let other = format!("/subjects/{OTHER}");
    let url = format!("{}{other}", s.base);
    let (status, body) = call(reqwest::Method::DELETE, url.clone(), None, None).await;
    assert_eq!((status, body), (StatusCode::OK, json!([1])));
    let (_, body) = call(reqwest::Method::DELETE, url, None, None).await;
    assert_eq!(body["error_code"], 40404);
    assert_eq!(get(&s.base, "/subjects").await.1, json!([SUBJECT]));
    assert_eq!(
        get(&s.base, &format!("/schemas/ids/{id1}")).await.0,
        StatusCode::OK
    );
    // Registering again after the delete starts a new version, with the same id.
    let (_, body) = post(&s.base, &format!("{other}/versions"), schema_body(&v1())).await;
    assert_eq!(body, json!({ "id": id1 }));
    assert_eq!(
        get(&s.base, &format!("{other}/versions")).await.1,
        json!([2])
    );
}

/// Not-found, invalid and unsupported requests answer as Confluent does.
async fn confluent_errors(base: &str, path: &str) {
    let cases = [
        (
            get(base, "/schemas/ids/999999").await,
            StatusCode::NOT_FOUND,
            40403,
        ),
        (
            get(base, "/schemas/ids/abc").await,
            StatusCode::NOT_FOUND,
            40403,
        ),
        (
            get(base, "/subjects/nobody-value/versions").await,
            StatusCode::NOT_FOUND,
            40401,
        ),
        (
            get(base, "/subjects/nobody-value/versions/1").await,
            StatusCode::NOT_FOUND,
            40401,
        ),
        (
            get(base, &format!("{path}/9")).await,
            StatusCode::NOT_FOUND,
            40402,
        ),
        (
            get(base, &format!("{path}/zero")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
        ),
        (
            post(base, path, json!({"schema": "{\"type\": \"recrod\"}"})).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
        ),
        (
            post(
                base,
                path,
                json!({"schema": "\"string\"", "schemaType": "PROTOBUF"}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
        ),
        (
            call(
                reqwest::Method::POST,
                format!("{base}{path}"),
                Some("text/plain"),
                Some(json!({"schema": "\"string\""})),
            )
            .await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
        ),
        // PostgreSQL's text cannot hold a NUL: refused, not a 500 from the store.
        (
            post(base, "/subjects/a%00b/versions", json!({"schema": "\"long\""})).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            42208,
        ),
        (
            put(base, "/config/x%1F", json!({"compatibility": "NONE"})).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            42208,
        ),
        (
            post(
                base,
                path,
                json!({"schema": "{\"type\": \"enum\", \"name\": \"E\", \"symbols\": [\"A\"], \"doc\": \"a\u{0}b\"}"}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
        ),
    ];
    for ((status, body), want_status, want_code) in cases {
        assert_eq!(status, want_status, "{body}");
        assert_eq!(body["error_code"], want_code, "{body}");
        assert!(body["message"].is_string(), "{body}");
    }
}

/// The same database gives the same ids whichever way it is reached, and
/// `Registry::connect` picks the implementation from the settings.
async fn local_and_remote_agree(s: &Server, remote: &RemoteRegistry, ids: [u32; 3]) {
    let mut settings = common::settings().await;
    settings.database_url = s.database_url.clone();
    settings.schema_registry_url = None;
    let local = Registry::connect(&settings).await.unwrap();
    assert!(matches!(local, Registry::Local(_)));
    settings.schema_registry_url = Some(s.base.clone());
    let via_http = Registry::connect(&settings).await.unwrap();
    assert!(matches!(via_http, Registry::Remote(_)));

    assert_eq!(local.register(SUBJECT, &v1()).await.unwrap(), ids[0]);
    assert_eq!(local.register(OTHER, &v1()).await.unwrap(), ids[0]);
    assert_eq!(local.register(SUBJECT, &v2()).await.unwrap(), ids[1]);
    for id in ids {
        let a = local.schema(id).await.unwrap();
        let b = remote.schema(id).await.unwrap();
        assert_eq!(
            registry::normalised(&a).unwrap(),
            registry::normalised(&b).unwrap()
        );
    }
    // A schema registered locally is served over HTTP under the same id, and the other way.
    let fresh = review(
        r#", {"name": "course_id", "type": "long"}, {"name": "n", "type": "int", "default": 0}"#,
    );
    let id = local.register(SUBJECT, &fresh).await.unwrap();
    assert_eq!(via_http.register(SUBJECT, &fresh).await.unwrap(), id);
    assert_eq!(
        via_http.schema(id).await.unwrap().canonical_form(),
        fresh.canonical_form()
    );
    assert!(local.schema(999_999).await.is_err());
    assert!(via_http.schema(999_999).await.is_err());
}

/// Several processes (each its own pool) registering at once add each schema once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_add_one_version_per_schema() {
    const WRITERS: usize = 8;
    const ROUNDS: usize = 5;
    let url = common::fresh_database("registry_concurrent").await;
    let start = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for n in 0..WRITERS {
        let registry = LocalRegistry::connect(&url).await.unwrap();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            // Errors are returned, not panicked on, so no writer leaves the others waiting
            // at the barrier.
            for round in 0..ROUNDS {
                start.wait().await;
                let schema = if n % 2 == 0 { v1() } else { v2() };
                let own = registry
                    .register(&format!("same{round}-value"), &schema)
                    .await;
                // The same new schema under many subjects at once still gets one id.
                start.wait().await;
                let shared = registry
                    .register(&format!("subject{n}.{round}-value"), &incompatible())
                    .await;
                ids.push(own.and_then(|own| Ok((n % 2, own, shared?))));
            }
            ids
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        for result in task.await.unwrap() {
            results.push(result.expect("concurrent registrations all succeed"));
        }
    }
    let distinct = |ids: &mut Vec<u32>| {
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    };
    for parity in [0, 1] {
        let mut ids: Vec<u32> = results
            .iter()
            .filter(|r| r.0 == parity)
            .map(|r| r.1)
            .collect();
        assert_eq!(distinct(&mut ids), 1, "{results:?}");
    }
    let mut shared: Vec<u32> = results.iter().map(|r| r.2).collect();
    assert_eq!(distinct(&mut shared), 1, "{results:?}");

    let db = reviewflow::db::connect(&url).await.unwrap();
    let per_subject: Vec<(String, i64, i32)> = db
        .query(
            "SELECT subject, count(*), max(version) FROM registry_subject_versions \
             WHERE subject LIKE 'same%' GROUP BY subject ORDER BY subject",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(per_subject.len(), ROUNDS);
    for (subject, count, max) in per_subject {
        assert_eq!((count, max), (2, 2), "{subject}");
    }
    let schemas: i64 = db
        .query_one("SELECT count(*) FROM registry_schemas", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 3);
}

/// A stand-in registry that fails `failures` times with `status`, then answers id 7.
async fn flaky_registry(status: u16, failures: u32) -> (String, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().route(
        "/subjects/{subject}/versions",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let status = if n < failures {
                    axum::http::StatusCode::from_u16(status).unwrap()
                } else {
                    axum::http::StatusCode::OK
                };
                let body = if n < failures {
                    json!({"error_code": u32::from(status.as_u16()) * 100 + 1, "message": "not now"})
                } else {
                    json!({"id": 7})
                };
                (status, body.to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, calls)
}

#[tokio::test]
async fn the_remote_client_retries_server_errors_but_not_refusals() {
    let (base, calls) = flaky_registry(503, 2).await;
    let remote = RemoteRegistry::new(&base).unwrap();
    assert_eq!(remote.register("t-value", &v1()).await.unwrap(), 7);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Remembered: no further call.
    assert_eq!(remote.register("t-value", &v1()).await.unwrap(), 7);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let (base, calls) = flaky_registry(422, 1).await;
    let err = RemoteRegistry::new(&base)
        .unwrap()
        .register("t-value", &v1())
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "a 4xx is not retried");
    assert!(err.to_string().contains("not now"), "{err}");

    let (base, calls) = flaky_registry(500, 100).await;
    let err = RemoteRegistry::new(&base)
        .unwrap()
        .register("t-value", &v1())
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 4, "retries are bounded");
    assert!(err.to_string().contains(&base), "{err}");
}

#[tokio::test]
async fn an_unreachable_registry_is_named_in_the_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let remote = RemoteRegistry::new(&format!("http://user:secret@{address}")).unwrap();
    let err = remote.schema(1).await.unwrap_err().to_string();
    assert!(err.contains(&address.to_string()), "{err}");
    assert!(err.contains("4 attempts"), "{err}");
    assert!(!err.contains("secret"), "{err}");
}
