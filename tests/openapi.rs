//! GET /openapi.json is kept true here: the routes it documents are exactly the routes the
//! router serves (the schema registry's excluded), every answer to a real request against the
//! real database has a status the document lists for that operation and a body its schema
//! accepts, and the request schema's limits are the ones validation enforces.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, StatusCode};
use reviewflow::api::{self, AppState};
use serde_json::{json, Value};

const WRITE_COURSE: i64 = 31;
const REJECT_COURSE: i64 = 32;

struct Server {
    base: String,
    db: tokio_postgres::Client,
    doc: Value,
    http: reqwest::Client,
    /// Operations ("GET /reviews/{id}") answered with a 2xx, each checked against the document.
    succeeded: BTreeSet<String>,
}

#[tokio::test]
async fn the_document_describes_the_api_as_it_behaves() {
    let url = common::fresh_database("openapi").await;
    let pool = reviewflow::db::pool(&url, 4).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::new(pool, &url);
    tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
    let mut s = Server {
        base,
        db: reviewflow::db::connect(&url).await.unwrap(),
        doc: serde_json::from_str(api::OPENAPI).expect("the document is JSON"),
        http: reqwest::Client::new(),
        succeeded: BTreeSet::new(),
    };

    let served = s
        .call(Method::GET, "/openapi.json", "/openapi.json", None)
        .await;
    assert_eq!(served.1, s.doc, "GET /openapi.json serves api::OPENAPI");
    assert_eq!(s.doc["openapi"], json!("3.1.0"));

    documented_routes_are_the_served_routes(&s).await;
    every_operation_answers_as_documented(&mut s).await;
    the_request_schema_is_what_validation_enforces(&mut s).await;
    writes_and_only_writes_need_the_token(&s);
    without_a_database_the_answers_are_still_documented(&mut s).await;

    let documented: BTreeSet<String> = operations(&s.doc)
        .into_iter()
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert_eq!(
        s.succeeded, documented,
        "every documented operation was called with a valid request and answered 2xx"
    );
}

/// The security requirement and the 401 are documented on every write and on every
/// operation of the moderation view (which also takes Basic), and on nothing else
/// (tests/auth.rs and tests/moderation.rs check the behaviour).
fn writes_and_only_writes_need_the_token(s: &Server) {
    assert_eq!(
        s.doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer",
               "description": s.doc["components"]["securitySchemes"]["bearer"]["description"]})
    );
    for (method, path) in operations(&s.doc) {
        let operation = &s.doc["paths"][&path][method.to_lowercase()];
        let write = !["GET", "HEAD", "OPTIONS"].contains(&method.as_str());
        let moderated = api::MODERATION_ROUTES.contains(&path.as_str());
        let security = if moderated {
            Some(json!([{"bearer": []}, {"basic": []}]))
        } else {
            write.then(|| json!([{"bearer": []}]))
        };
        assert_eq!(
            operation.get("security"),
            security.as_ref(),
            "{method} {path}"
        );
        assert_eq!(
            operation["responses"].get("401").is_some(),
            write || moderated,
            "{method} {path}"
        );
    }
}

/// With the database out of reach, every database-backed operation answers a documented 503.
async fn without_a_database_the_answers_are_still_documented(s: &mut Server) {
    let unused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = unused.local_addr().unwrap().port();
    drop(unused);
    let nowhere = format!("postgres://nobody@127.0.0.1:{port}/none");
    let pool = reviewflow::db::pool(&nowhere, 1).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = std::mem::replace(
        &mut s.base,
        format!("http://{}", listener.local_addr().unwrap()),
    );
    let state = AppState::new(pool, &nowhere);
    tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
    let (status, health) = s.call(Method::GET, "/healthz", "/healthz", None).await;
    assert_eq!(
        (status, &health["status"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("unavailable"))
    );
    for (template, path) in [
        ("/reviews/{id}", "/reviews/1"),
        ("/courses/{id}/stats", "/courses/1/stats"),
        ("/courses/{id}/events", "/courses/1/events"),
        ("/courses/{id}", "/courses/1"),
        ("/courses", "/courses"),
        ("/moderation", "/moderation"),
        ("/reviews/{id}/history", "/reviews/1/history"),
        ("/reviews/{id}/verdicts", "/reviews/1/verdicts"),
    ] {
        let (status, _) = s.call(Method::GET, template, path, None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
    }
    let (status, _) = s
        .call(
            Method::POST,
            "/reviews/{id}/moderation",
            "/reviews/1/moderation",
            Some(&json!({"decision": null})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, _) = s
        .post_review(&json!({"course_id": 1, "user_id": 1, "rating": 1}))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // The metrics are the process's own: they are served without the slots' gauges.
    let (status, _) = s.call(Method::GET, "/metrics", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    s.base = base;
}

/// (method, path) of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if [
                "get", "put", "post", "delete", "patch", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

async fn documented_routes_are_the_served_routes(s: &Server) {
    let routes: BTreeSet<(String, String)> = api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(routes.len(), api::ROUTES.len(), "ROUTES has no duplicates");
    assert_eq!(
        operations(&s.doc),
        routes,
        "the document's operations are api::ROUTES, from which the router is built"
    );
    for (_, path) in &routes {
        for registry in ["/subjects", "/schemas", "/compatibility", "/config"] {
            assert!(
                !path.starts_with(registry),
                "{path}: the registry's API is Confluent's, not documented as ours"
            );
        }
    }
    // Ask the router itself: a documented operation reaches a handler (not 405, not the
    // fallback's 404), and any other method on a documented path is 405.
    for (_, path) in &routes {
        let concrete = path.replace("{id}", "1");
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ] {
            let response = s
                .http
                .request(method.clone(), format!("{}{concrete}", s.base))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if routes.contains(&(method.to_string(), path.clone())) {
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert_ne!(
                    body["error"],
                    json!("no such endpoint"),
                    "{method} {path} is documented but not served"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not documented"
                );
            }
        }
    }
    // Paths the document does not name are not ours: the fallback answers (or the registry).
    let unknown = s
        .http
        .get(format!("{}/reviews", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::METHOD_NOT_ALLOWED);
    let unknown = s.http.get(format!("{}/nope", s.base)).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let error: Value = unknown.json().await.unwrap();
    let mut faults = Vec::new();
    check(
        &s.doc,
        &s.doc["components"]["schemas"]["Error"],
        &error,
        "fallback",
        &mut faults,
    );
    assert!(faults.is_empty(), "{faults:?}");
}

async fn every_operation_answers_as_documented(s: &mut Server) {
    let body = json!({"course_id": WRITE_COURSE, "user_id": 4, "rating": 3.5, "title": "Solid",
                      "content": "Good pace", "created_at": "2026-01-02T03:04:05Z"});
    let (status, stored, location) = s.post_review(&body).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let id = stored["id"].as_i64().unwrap();
    assert_eq!(location.as_deref(), Some(format!("/reviews/{id}").as_str()));
    let (status, read) = s
        .call(Method::GET, "/reviews/{id}", &location.unwrap(), None)
        .await;
    assert_eq!((status, &read), (StatusCode::OK, &stored));
    // Optional fields left out are stored as null, and still match the schema.
    let (status, bare, _) = s
        .post_review(&json!({"course_id": WRITE_COURSE, "user_id": 4, "rating": 5}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bare}");
    assert_eq!(bare["title"], Value::Null);

    let (status, _) = s
        .call(Method::GET, "/reviews/{id}", "/reviews/999999", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, bad) = s
        .call(Method::GET, "/reviews/{id}", "/reviews/x", None)
        .await;
    assert_eq!(
        (status, &bad["field"]),
        (StatusCode::BAD_REQUEST, &json!("id"))
    );

    // A course with reviews (every column set) and one whose reviews were all retracted
    // (averages and last_review_at null).
    s.db.batch_execute(
        "INSERT INTO course_stats (course_id, review_count, rating_sum, stars_3, stars_5, last_review_at,
                                   recent_review_count, recent_rating_sum, recent_stars_5)
         VALUES (41, 2, 8.5, 1, 1, '2026-01-02T03:04:05.123456Z', 1, 5.0, 1);
         INSERT INTO course_stats (course_id) VALUES (42);",
    )
    .await
    .unwrap();
    let (status, stats) = s
        .call(
            Method::GET,
            "/courses/{id}/stats",
            "/courses/41/stats",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["rating_avg"], json!(4.25));
    let (status, empty) = s
        .call(
            Method::GET,
            "/courses/{id}/stats",
            "/courses/42/stats",
            None,
        )
        .await;
    assert_eq!(
        (status, &empty["rating_avg"]),
        (StatusCode::OK, &Value::Null)
    );
    let (status, _) = s
        .call(
            Method::GET,
            "/courses/{id}/stats",
            "/courses/43/stats",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s
        .call(Method::GET, "/courses/{id}/stats", "/courses/x/stats", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The live figures, the course page and the index (tests/page.rs checks them in a browser).
    let (status, _) = s
        .call(
            Method::GET,
            "/courses/{id}/events",
            "/courses/41/events",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for (path, expected) in [
        ("/courses/43/events", StatusCode::NOT_FOUND),
        ("/courses/x/events", StatusCode::BAD_REQUEST),
    ] {
        let (status, _) = s
            .call(Method::GET, "/courses/{id}/events", path, None)
            .await;
        assert_eq!(status, expected, "{path}");
    }
    for (path, expected) in [
        ("/courses/41", StatusCode::OK),
        ("/courses/43", StatusCode::NOT_FOUND),
        ("/courses/x", StatusCode::BAD_REQUEST),
    ] {
        let (status, _) = s.call(Method::GET, "/courses/{id}", path, None).await;
        assert_eq!(status, expected, "{path}");
    }
    let (status, _) = s.call(Method::GET, "/courses", "/courses", None).await;
    assert_eq!(status, StatusCode::OK);

    moderation_answers_as_documented(s, id).await;
    // The pipeline page, and its JSON from an API told of no pipeline (tests/pipeline_page.rs
    // reads a real one): still 200, the cause named.
    let (status, _) = s.call(Method::GET, "/pipeline", "/pipeline", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, view) = s
        .call(Method::GET, "/pipeline.json", "/pipeline.json", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        view["unknown"][0].as_str().unwrap().contains("not told"),
        "{view}"
    );

    let (status, health) = s.call(Method::GET, "/healthz", "/healthz", None).await;
    assert_eq!(
        (status, health),
        (StatusCode::OK, json!({"status": "ok", "database": "ok"}))
    );

    let (status, _) = s.call(Method::GET, "/metrics", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// The moderation view, a review's history and the decision (tests/moderation.rs runs them
/// with the pipeline and a browser), on review `id` with a fraud verdict written here.
async fn moderation_answers_as_documented(s: &mut Server, id: i64) {
    s.db.execute(
        "INSERT INTO review_verdicts (review_id, version, verdict, score, reasons, model, course_id)
         VALUES ($1, '0/10', 'fraud', 0.7, '{link}', 'heuristic-v1@0.5', $2)",
        &[&id, &WRITE_COURSE],
    )
    .await
    .unwrap();
    for (path, expected) in [
        ("/moderation".to_string(), StatusCode::OK),
        (
            format!("/moderation?course={WRITE_COURSE}&reason=link&page=1"),
            StatusCode::OK,
        ),
        ("/moderation?course=&reason=".into(), StatusCode::OK),
        ("/moderation?course=x".into(), StatusCode::BAD_REQUEST),
        ("/moderation?page=0".into(), StatusCode::BAD_REQUEST),
    ] {
        let (status, _) = s.call(Method::GET, "/moderation", &path, None).await;
        assert_eq!(status, expected, "{path}");
    }
    for template in ["/reviews/{id}/history", "/reviews/{id}/verdicts"] {
        for (path, expected) in [
            (id.to_string(), StatusCode::OK),
            ("999999".into(), StatusCode::NOT_FOUND),
            ("x".into(), StatusCode::BAD_REQUEST),
        ] {
            let concrete = template.replace("{id}", &path);
            let (status, body) = s.call(Method::GET, template, &concrete, None).await;
            assert_eq!(status, expected, "{concrete}");
            if template.ends_with("verdicts") && status == StatusCode::OK {
                assert_eq!(body["verdicts"][0]["reasons"], json!(["link"]), "{body}");
            }
        }
    }
    let template = "/reviews/{id}/moderation";
    let decide = format!("/reviews/{id}/moderation");
    for (path, body, expected) in [
        (&decide, json!({"decision": "valid"}), StatusCode::OK),
        (&decide, json!({"decision": null}), StatusCode::OK),
        (
            &decide,
            json!({"decision": "maybe"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &decide,
            json!({"verdict": "valid"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (&decide, json!(["valid"]), StatusCode::BAD_REQUEST),
        (
            &"/reviews/999999/moderation".to_string(),
            json!({"decision": "fraud"}),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (status, answer) = s.call(Method::POST, template, path, Some(&body)).await;
        assert_eq!(status, expected, "{path} {body}: {answer}");
    }
}

/// The limits are read from the document and tried at and beyond each edge.
async fn the_request_schema_is_what_validation_enforces(s: &mut Server) {
    let schema = resolve(
        &s.doc,
        &s.doc["paths"]["/reviews"]["post"]["requestBody"]["content"]["application/json"]["schema"],
    )
    .clone();
    assert_eq!(schema["additionalProperties"], json!(false));
    let properties = schema["properties"].as_object().unwrap().clone();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let good = json!({"course_id": REJECT_COURSE, "user_id": 1, "rating": 4.0});
    let good_elsewhere = json!({"course_id": WRITE_COURSE, "user_id": 1, "rating": 4.0});
    let with = |base: &Value, field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    // Rejected bodies are for REJECT_COURSE (unless course_id is what is wrong), accepted ones
    // for another, so the count of REJECT_COURSE's rows at the end tells whether any stuck.
    let mut rejected: Vec<(Value, &str)> = Vec::new();
    let mut accepted: Vec<Value> = Vec::new();

    for field in &required {
        let mut body = good.clone();
        body.as_object_mut().unwrap().remove(*field);
        rejected.push((body, field));
    }
    rejected.push((with(&good, "stars", json!(4)), "stars"));
    for (field, property) in &properties {
        let field = field.as_str();
        let types = types_of(property);
        let bad = |value| (with(&good, field, value), field);
        let ok = |value| with(&good_elsewhere, field, value);
        // Values of types the schema does not allow.
        rejected.push(bad(if types.contains(&"string") {
            json!(7)
        } else {
            json!("7")
        }));
        rejected.push(bad(json!({"nested": 1})));
        if types.contains(&"integer") {
            rejected.push(bad(json!(1.5)));
        }
        if types.contains(&"null") {
            accepted.push(ok(Value::Null));
        } else {
            rejected.push(bad(Value::Null));
        }
        if let Some(min) = property["minimum"].as_f64() {
            let step = property["multipleOf"].as_f64().unwrap_or(1.0);
            rejected.push(bad(number(min - step, &types)));
            accepted.push(ok(number(min, &types)));
        }
        if let Some(step) = property["multipleOf"].as_f64() {
            let (min, max) = (
                property["minimum"].as_f64().unwrap(),
                property["maximum"].as_f64().unwrap(),
            );
            let mut v = min;
            while v <= max {
                accepted.push(ok(json!(v)));
                rejected.push(bad(json!(v + step / 2.0)));
                v += step;
            }
            rejected.push(bad(json!(max + step)));
        }
        if let Some(max) = property["maxLength"].as_u64() {
            // Characters, not bytes: a multi-byte character counts once.
            accepted.push(ok(json!("é".repeat(max as usize))));
            rejected.push(bad(json!("é".repeat(max as usize + 1))));
        }
        if property["format"] == "date-time" {
            let soon = chrono::Utc::now() + chrono::Duration::minutes(1);
            let later = chrono::Utc::now() + chrono::Duration::hours(1);
            accepted.push(ok(json!(soon.to_rfc3339())));
            accepted.push(ok(json!("2025-06-30T23:59:59+02:00")));
            rejected.push(bad(json!(later.to_rfc3339())));
            rejected.push(bad(json!("2025-06-30")));
            rejected.push(bad(json!("yesterday")));
        }
    }
    assert!(accepted.len() > 10 && rejected.len() > 20);

    for body in accepted {
        let (status, answer, _) = s.post_review(&body).await;
        assert_eq!(status, StatusCode::CREATED, "{body} -> {answer}");
    }
    for (body, field) in rejected {
        let (status, answer, _) = s.post_review(&body).await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{body} -> {answer}"
        );
    }
    // Not JSON, not declared JSON, too large.
    let good_text = good.to_string().into_bytes();
    assert_eq!(
        s.post_raw("application/json", b"{\"course_id\":".to_vec())
            .await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        s.post_raw("text/plain", good_text).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let mut big = good.clone();
    big["content"] = json!("a".repeat(api::MAX_BODY_BYTES));
    assert_eq!(
        s.post_raw("application/json", big.to_string().into_bytes())
            .await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let limit = s.doc["paths"]["/reviews"]["post"]["responses"]["413"]["description"]
        .as_str()
        .unwrap();
    assert!(
        limit.contains(&api::MAX_BODY_BYTES.to_string()),
        "the 413 description names the limit: {limit}"
    );

    let stored: i64 =
        s.db.query_one(
            "SELECT count(*) FROM reviews WHERE course_id = $1",
            &[&REJECT_COURSE],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0, "a rejected POST stored a row");
}

fn number(v: f64, types: &[&str]) -> Value {
    if types.contains(&"integer") {
        json!(v as i64)
    } else {
        json!(v)
    }
}

impl Server {
    async fn post_review(&mut self, body: &Value) -> (StatusCode, Value, Option<String>) {
        let request = self.http.post(format!("{}/reviews", self.base)).json(body);
        let (status, answer, headers) = self.send("POST", "/reviews", request).await;
        let location = headers
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        (status, answer, location)
    }

    async fn post_raw(&mut self, content_type: &str, body: Vec<u8>) -> StatusCode {
        let request = self
            .http
            .post(format!("{}/reviews", self.base))
            .header("content-type", content_type)
            .body(body);
        self.send("POST", "/reviews", request).await.0
    }

    async fn call(
        &mut self,
        method: Method,
        template: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let (status, answer, _) = self.send(method.as_str(), template, request).await;
        (status, answer)
    }

    /// Sends, and checks the answer against the document's operation `method template`.
    async fn send(
        &mut self,
        method: &str,
        template: &str,
        request: reqwest::RequestBuilder,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut response = request.send().await.expect("the api answers");
        let status = response.status();
        let headers = response.headers().clone();
        let text = if headers
            .get("content-type")
            .is_some_and(|t| t == "text/event-stream")
        {
            // An event stream does not end: its first event is the body checked here.
            let first = tokio::time::timeout(std::time::Duration::from_secs(10), response.chunk())
                .await
                .expect("an event stream sends its first event at once")
                .unwrap()
                .unwrap_or_default();
            String::from_utf8(first.to_vec()).unwrap()
        } else {
            response.text().await.unwrap()
        };
        let operation = format!("{method} {template}");
        let documented =
            &self.doc["paths"][template][method.to_lowercase()]["responses"][status.as_str()];
        assert!(
            documented.is_object(),
            "{operation} answered {status}, which the document does not list: {text}"
        );
        let documented = resolve(&self.doc, documented);
        if let Some(media) = documented.get("content").and_then(Value::as_object) {
            // The answer's content type is one the document lists, exactly.
            let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
            let schema = content_type
                .and_then(|t| media.get(t))
                .map(|m| &m["schema"])
                .unwrap_or_else(|| {
                    panic!(
                        "{operation} {status} answered {content_type:?}; documented: {:?}",
                        media.keys().collect::<Vec<_>>()
                    )
                });
            if content_type == Some("text/event-stream") {
                // The schema is that of one event: its fields as an object.
                let mut event = serde_json::Map::new();
                for line in text
                    .lines()
                    .filter(|l| !l.is_empty() && !l.starts_with(':'))
                {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    event.insert(field.to_string(), json!(value));
                }
                let body = Value::Object(event);
                let mut faults = Vec::new();
                check(&self.doc, schema, &body, "event", &mut faults);
                assert!(
                    faults.is_empty(),
                    "{operation} {status}: its first event does not match the schema: {faults:?}\n{text}"
                );
            } else if content_type == Some("application/json") {
                let body: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{operation} {status}: not JSON ({e}): {text}"));
                let mut faults = Vec::new();
                check(&self.doc, schema, &body, "body", &mut faults);
                assert!(
                    faults.is_empty(),
                    "{operation} {status} does not match its schema: {faults:?}\n{body}"
                );
            } else {
                // A text format: all a schema can say of it here is that it is a string.
                assert_eq!(
                    schema,
                    &json!({"type": "string"}),
                    "{operation} {status}: a non-JSON body's schema is a plain string"
                );
                assert!(!text.is_empty(), "{operation} {status}: an empty body");
            }
        }
        if let Some(required) = documented.get("headers").and_then(Value::as_object) {
            for (name, header) in required {
                if header["required"] == json!(true) {
                    assert!(
                        headers.contains_key(name.as_str()),
                        "{operation} {status} lacks {name}"
                    );
                }
            }
        }
        if status.is_success() {
            self.succeeded.insert(operation);
        }
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, body, headers)
    }
}

fn resolve<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local $ref");
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {reference}")),
            )
        }
        None => node,
    }
}

fn types_of(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
}

/// The subset of JSON Schema the document uses. A keyword this does not know fails the test,
/// so the document cannot say more than is checked.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, faults: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    let known = [
        "type",
        "format",
        "enum",
        "minimum",
        "maximum",
        "multipleOf",
        "maxLength",
        "required",
        "properties",
        "additionalProperties",
        "description",
        "contentMediaType",
        "items",
        "maxItems",
        "anyOf",
    ];
    for keyword in schema.as_object().expect("a schema object").keys() {
        assert!(
            known.contains(&keyword.as_str()),
            "{at}: unchecked keyword {keyword}"
        );
    }
    if let Some(branches) = schema.get("anyOf").and_then(Value::as_array) {
        let fits = branches.iter().any(|branch| {
            let mut branch_faults = Vec::new();
            check(doc, branch, value, at, &mut branch_faults);
            branch_faults.is_empty()
        });
        if !fits {
            faults.push(format!("{at}: {value} matches none of anyOf"));
        }
    }
    let types = types_of(schema);
    let type_ok = types.is_empty()
        || types.iter().any(|t| match *t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            other => panic!("{at}: unknown type {other}"),
        });
    if !type_ok {
        faults.push(format!("{at}: {value} is not of type {types:?}"));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            faults.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(v) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64() {
            if v < min {
                faults.push(format!("{at}: {v} < minimum {min}"));
            }
        }
        if let Some(max) = schema["maximum"].as_f64() {
            if v > max {
                faults.push(format!("{at}: {v} > maximum {max}"));
            }
        }
        if let Some(step) = schema["multipleOf"].as_f64() {
            if (v / step).fract() != 0.0 {
                faults.push(format!("{at}: {v} is not a multiple of {step}"));
            }
        }
    }
    if let Some(text) = value.as_str() {
        if let Some(max) = schema["maxLength"].as_u64() {
            if text.chars().count() as u64 > max {
                faults.push(format!("{at}: longer than {max} characters"));
            }
        }
        if schema["contentMediaType"] == "application/json"
            && serde_json::from_str::<Value>(text).is_err()
        {
            faults.push(format!("{at}: {text:?} is not JSON"));
        }
        if schema["format"] == "date-time" && chrono::DateTime::parse_from_rfc3339(text).is_err() {
            faults.push(format!("{at}: {text:?} is not an RFC 3339 date-time"));
        }
    }
    if let Some(elements) = value.as_array() {
        if let Some(max) = schema["maxItems"].as_u64() {
            if elements.len() as u64 > max {
                faults.push(format!("{at}: more than {max} items"));
            }
        }
        if let Some(items) = schema.get("items") {
            for (i, element) in elements.iter().enumerate() {
                check(doc, items, element, &format!("{at}[{i}]"), faults);
            }
        }
    }
    if let Some(object) = value.as_object() {
        for name in schema["required"].as_array().into_iter().flatten() {
            if !object.contains_key(name.as_str().unwrap()) {
                faults.push(format!("{at}: lacks required {name}"));
            }
        }
        let properties: BTreeMap<String, Value> = schema["properties"]
            .as_object()
            .map(|p| p.clone().into_iter().collect())
            .unwrap_or_default();
        for (name, v) in object {
            match properties.get(name) {
                Some(property) => check(doc, property, v, &format!("{at}.{name}"), faults),
                None if schema["additionalProperties"] == json!(false) => {
                    faults.push(format!("{at}: unexpected property {name}"))
                }
                None => {}
            }
        }
    }
}
