//! With API_TOKEN set, writes (ours and the schema registry's) need the bearer token and a
//! refused write stores nothing; reads stay open.

mod common;

use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, StatusCode};
use reviewflow::api::{self, ApiToken, AppState};
use serde_json::{json, Value};

const TOKEN: &str = "t0ken-for-tests";
const COURSE: i64 = 21;

#[tokio::test]
async fn writes_need_the_token_and_reads_do_not() {
    let url = common::fresh_database("auth").await;
    let pool = reviewflow::db::pool(&url, 4).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let token: ApiToken = TOKEN.parse().unwrap();
    let state = AppState::new(pool, &url);
    tokio::spawn(
        async move { axum::serve(listener, api::router_with_token(state, Some(token))).await },
    );
    let db = reviewflow::db::connect(&url).await.unwrap();
    let http = reqwest::Client::new();
    let review = json!({"course_id": COURSE, "user_id": 3, "rating": 4.5});
    let post = || http.post(format!("{base}/reviews")).json(&review);

    // Refused: no header, another token, another scheme, the token as a prefix, and a body
    // too large to read (refused before it is read, so 401 rather than 413).
    let oversized = http
        .post(format!("{base}/reviews"))
        .header("content-type", "application/json")
        .body(vec![b' '; api::MAX_BODY_BYTES + 1]);
    for (what, request) in [
        ("no token", post()),
        ("wrong token", post().bearer_auth("t0ken-for-test")),
        ("longer token", post().bearer_auth(format!("{TOKEN}x"))),
        ("basic scheme", post().basic_auth("user", Some(TOKEN))),
        ("oversized", oversized),
    ] {
        let (status, challenge, body) = send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
        assert!(body["error"].is_string(), "{what}: {body}");
        assert!(body.get("field").is_none(), "{what}: {body}");
    }
    assert_eq!(stored(&db).await, 0, "a refused POST stored a row");

    // The right token, in either case of the scheme.
    let (status, _, created) = send(post().bearer_auth(TOKEN)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, _, _) = send(post().header(AUTHORIZATION, format!("bearer {TOKEN}"))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(stored(&db).await, 2);

    // Reads need no token.
    let id = created["id"].as_i64().unwrap();
    for path in [
        format!("/reviews/{id}"),
        "/healthz".into(),
        "/openapi.json".into(),
        "/subjects".into(),
        "/config".into(),
    ] {
        let (status, _, body) = send(http.get(format!("{base}{path}"))).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    }

    // The registry's writes: refused in Confluent's error shape without the token, done with it.
    let schema =
        json!({"schema": r#"{"type":"record","name":"T","fields":[{"name":"a","type":"long"}]}"#});
    let register = || {
        http.post(format!("{base}/subjects/auth-test-value/versions"))
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(schema.to_string())
    };
    let level = || {
        http.put(format!("{base}/config"))
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(r#"{"compatibility":"FULL"}"#)
    };
    let delete = || http.delete(format!("{base}/subjects/auth-test-value"));
    for (what, request) in [
        ("register", register()),
        ("set level", level()),
        ("delete", delete()),
        ("register, wrong token", register().bearer_auth("nope")),
    ] {
        let (status, challenge, body) = send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
        assert_eq!(body["error_code"], json!(401), "{what}: {body}");
    }
    let (_, _, subjects) = send(http.get(format!("{base}/subjects"))).await;
    assert_eq!(subjects, json!([]), "a refused registration registered");
    let (_, _, config) = send(http.get(format!("{base}/config"))).await;
    assert_ne!(config["compatibilityLevel"], json!("FULL"));

    let (status, _, body) = send(register().bearer_auth(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = send(level().bearer_auth(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, _, subjects) = send(http.get(format!("{base}/subjects"))).await;
    assert_eq!(subjects, json!(["auth-test-value"]));
}

async fn send(request: RequestBuilder) -> (StatusCode, String, Value) {
    let response = request.send().await.expect("the api answers");
    let status = response.status();
    let challenge = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        status,
        challenge,
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn stored(db: &tokio_postgres::Client) -> i64 {
    db.query_one(
        "SELECT count(*) FROM reviews WHERE course_id = $1",
        &[&COURSE],
    )
    .await
    .unwrap()
    .get(0)
}
