//! The REST API against the real PostgreSQL: what a POST stores is what SQL reads back, and
//! a bad POST stores nothing.

mod common;

use reqwest::StatusCode;
use reviewflow::api::{self, AppState};
use serde_json::{json, Value};

struct Server {
    base: String,
    db: tokio_postgres::Client,
}

async fn server() -> Server {
    let url = common::fresh_database("api").await;
    let pool = reviewflow::db::pool(&url, 4).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::new(pool, &url);
    tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
    Server {
        base,
        db: reviewflow::db::connect(&url).await.unwrap(),
    }
}

async fn post(
    base: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/reviews"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("the api answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn reviews_of(db: &tokio_postgres::Client, course: i64) -> i64 {
    db.query_one(
        "SELECT count(*) FROM reviews WHERE course_id = $1",
        &[&course],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn api_behaviour() {
    let s = server().await;
    a_posted_review_is_stored_as_sent(&s).await;
    bad_posts_name_the_field_and_store_nothing(&s).await;
    stats_are_served_from_course_stats(&s).await;
    let health = reqwest::get(format!("{}/healthz", s.base)).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

async fn a_posted_review_is_stored_as_sent(s: &Server) {
    let body = json!({"course_id": 11, "user_id": 5, "rating": 4.5, "title": "Clear", "content": "Loved it",
                      "created_at": "2026-03-04T05:06:07Z"});
    let (status, stored) = post(&s.base, "application/json", body.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let id = stored["id"].as_i64().expect("the stored row has an id");
    let row = s
        .db
        .query_one(
            "SELECT course_id, user_id, rating::text, title, content, created_at = '2026-03-04T05:06:07Z' \
             FROM reviews WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 11);
    assert_eq!(row.get::<_, i64>(1), 5);
    assert_eq!(row.get::<_, String>(2), "4.5");
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("Clear"));
    assert_eq!(row.get::<_, Option<String>>(4).as_deref(), Some("Loved it"));
    assert!(row.get::<_, bool>(5), "created_at is stored as sent");
    assert_eq!(stored["rating"], json!(4.5));

    let read: Value = reqwest::get(format!("{}/reviews/{id}", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read, stored);
}

async fn bad_posts_name_the_field_and_store_nothing(s: &Server) {
    let course = 12;
    let cases: Vec<(&str, Vec<u8>, StatusCode, Option<&str>)> = vec![
        (
            "application/json",
            br#"{"course_id":12,"user_id":1,"rating":0}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("rating"),
        ),
        (
            "application/json",
            br#"{"course_id":12,"user_id":1,"rating":5.5}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("rating"),
        ),
        (
            "application/json",
            br#"{"course_id":12,"user_id":1,"rating":3.3}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("rating"),
        ),
        (
            "application/json",
            br#"{"course_id":12,"user_id":"me","rating":3}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("user_id"),
        ),
        (
            "application/json",
            br#"{"course_id":12,"rating":3}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("user_id"),
        ),
        (
            "application/json",
            br#"{"course_id":12,"user_id":1,"rating":3,"stars":3}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("stars"),
        ),
        (
            "application/json",
            br#"{"course_id":12,"user_id":1,"rating":3,"created_at":"soon"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("created_at"),
        ),
        (
            "application/json",
            format!(
                r#"{{"course_id":12,"user_id":1,"rating":3,"title":"{}"}}"#,
                "t".repeat(201)
            )
            .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("title"),
        ),
        (
            "application/json",
            b"{\"course_id\":12,\"user_id\":1,\"rating\":3,\"title\":\"\xff\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "application/json",
            b"{\"course_id\":12,".to_vec(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "text/plain",
            br#"{"course_id":12,"user_id":1,"rating":3}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
        ),
        (
            "application/json",
            vec![b' '; api::MAX_BODY_BYTES + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
        ),
    ];
    for (content_type, body, expected, field) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        let (status, answer) = post(&s.base, content_type, body).await;
        assert_eq!(status, expected, "{shown} -> {answer}");
        if let Some(field) = field {
            assert_eq!(answer["field"], json!(field), "{shown} -> {answer}");
            assert!(
                answer["error"].as_str().is_some_and(|e| e.contains(field)),
                "{answer}"
            );
        }
    }
    assert_eq!(
        reviews_of(&s.db, course).await,
        0,
        "a rejected POST stored a row"
    );
}

async fn stats_are_served_from_course_stats(s: &Server) {
    s.db.batch_execute(
        "INSERT INTO course_stats (course_id, review_count, rating_sum, stars_4, stars_5, recent_review_count, recent_rating_sum, recent_stars_5) \
         VALUES (77, 2, 9.5, 1, 1, 1, 5.0, 1)",
    )
    .await
    .unwrap();
    let got: Value = reqwest::get(format!("{}/courses/77/stats", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["review_count"], json!(2));
    assert_eq!(got["rating_avg"], json!(4.75));
    assert_eq!(got["stars_4"], json!(1));
    assert_eq!(got["recent_rating_avg"], json!(5.0));
    let missing = reqwest::get(format!("{}/courses/78/stats", s.base))
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let bad = reqwest::get(format!("{}/courses/x/stats", s.base))
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}
