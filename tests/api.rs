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
    every_date_json_can_spell_is_refused_or_stored_in_range(&s).await;
    ids_up_to_the_64_bit_limit_are_stored(&s).await;
    stats_are_served_from_course_stats(&s).await;
    rows_no_post_could_write_are_served_as_they_are(&s).await;
    rows_written_by_sql_neither_block_nor_break_a_post(&s).await;
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

/// Whatever date a body spells, the answer is 422 naming created_at, or 201 with a time the
/// pipeline can carry ([0001-01-01T00:00:00Z, 10000-01-01T00:00:00Z)): never a 5xx, never a row
/// the reader or the figures cannot hold.
async fn every_date_json_can_spell_is_refused_or_stored_in_range(s: &Server) {
    let course = 13;
    let refused = [
        json!("0000-01-01T00:00:00Z"),
        json!("0000-12-31T23:59:59.999999Z"),
        json!("0001-01-01T00:00:00+00:01"),
        json!("-5000-01-01T00:00:00Z"),
        json!("-0001-01-01T00:00:00Z"),
        json!("-271821-04-20T00:00:00Z"),
        json!("+275760-09-13T00:00:00Z"),
        json!("+10000-01-01T00:00:00Z"),
        json!("10000-01-01T00:00:00Z"),
        json!("9999-12-31T23:59:59-23:59"),
        json!("2999-01-01T00:00:00Z"),
        json!("2020-01-01T00:00:00+24:00"),
        json!("2020-02-30T00:00:00Z"),
        json!("2020-01-01T00:00:61Z"),
        json!("2020-01-01T00:00:00"),
        json!("infinity"),
        json!("-infinity"),
        json!("epoch"),
        json!(""),
        json!("2020-01-01T00:00:00Z\u{0}"),
        json!(1_577_836_800),
        json!(-1e300),
        json!(true),
        json!([]),
        json!({"at": "2020-01-01T00:00:00Z"}),
    ];
    for at in refused {
        let body = json!({"course_id": course, "user_id": 1, "rating": 4, "created_at": at});
        let (status, answer) = post(&s.base, "application/json", body.to_string()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{at} -> {answer}");
        assert_eq!(answer["field"], json!("created_at"), "{at} -> {answer}");
    }
    assert_eq!(
        reviews_of(&s.db, course).await,
        0,
        "a refused date was stored"
    );

    // The range's first instant, a leap second (PostgreSQL reads 23:59:60 as the next
    // minute's start), nanoseconds (PostgreSQL keeps microseconds) and an offset.
    let stored = [
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00+00:00"),
        ("0001-01-01T01:00:00+01:00", "0001-01-01T00:00:00+00:00"),
        ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00+00:00"),
        (
            "2020-01-01T00:00:00.123456789Z",
            "2020-01-01T00:00:00.123456+00:00",
        ),
        ("2020-06-01T12:00:00-09:30", "2020-06-01T21:30:00+00:00"),
    ];
    for (sent, kept) in stored {
        let body = json!({"course_id": course, "user_id": 1, "rating": 4, "created_at": sent});
        let (status, answer) = post(&s.base, "application/json", body.to_string()).await;
        assert_eq!(status, StatusCode::CREATED, "{sent} -> {answer}");
        let id = answer["id"].as_i64().unwrap();
        let text: String =
            s.db.query_one(
                "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') \
                 FROM reviews WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        let expected = kept.trim_end_matches("+00:00");
        let expected = if expected.contains('.') {
            expected.to_string()
        } else {
            format!("{expected}.000000")
        };
        assert_eq!(text, expected, "{sent}");
        let read = reqwest::get(format!("{}/reviews/{id}", s.base))
            .await
            .unwrap();
        assert_eq!(read.status(), StatusCode::OK, "{sent}");
    }
}

async fn ids_up_to_the_64_bit_limit_are_stored(s: &Server) {
    let max = i64::MAX;
    let body = json!({"course_id": max, "user_id": max, "rating": 0.5});
    let (status, answer) = post(&s.base, "application/json", body.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["course_id"], json!(max));
    for (field, value) in [
        ("course_id", json!(-1)),
        ("user_id", json!(0)),
        ("course_id", json!(9.3e18)),
    ] {
        let mut body = json!({"course_id": 14, "user_id": 1, "rating": 1});
        body[field] = value.clone();
        let (status, answer) = post(&s.base, "application/json", body.to_string()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}={value} -> {answer}"
        );
        assert_eq!(answer["field"], json!(field), "{answer}");
    }
}

/// Rows written by SQL with every CHECK and NOT NULL dropped: GET answers 200 with each as
/// the document describes (nulls, PostgreSQL's text for times RFC 3339 cannot spell), never a
/// failure.
async fn rows_no_post_could_write_are_served_as_they_are(s: &Server) {
    s.db.batch_execute(
        "DO $$ DECLARE c record; BEGIN
           FOR c IN SELECT conname FROM pg_constraint
                    WHERE conrelid = 'reviews'::regclass AND contype = 'c' LOOP
             EXECUTE format('ALTER TABLE reviews DROP CONSTRAINT %I', c.conname);
           END LOOP;
         END $$;
         ALTER TABLE reviews ALTER COLUMN course_id DROP NOT NULL,
                             ALTER COLUMN user_id DROP NOT NULL,
                             ALTER COLUMN rating DROP NOT NULL,
                             ALTER COLUMN created_at DROP NOT NULL;
         INSERT INTO reviews (id, course_id, user_id, rating, created_at) VALUES
           (9001, NULL, NULL, NULL, NULL),
           (9002, -5, 0, 'NaN', 'infinity'),
           (9003, 1, 1, 9.5, '-infinity'),
           (9004, 1, 1, 0.0, '0044-03-15 00:00:00+00 BC'),
           (9005, 1, 1, 4.0, '12000-01-01 00:00:00+00'),
           (9006, 1, 1, 4.0, '0001-01-01 00:00:00+00');",
    )
    .await
    .unwrap();
    let expected = [
        (9001, json!(null), json!(null), json!(null)),
        (9002, json!(-5), json!(null), json!("infinity")),
        (9003, json!(1), json!(9.5), json!("-infinity")),
        (
            9004,
            json!(1),
            json!(0.0),
            json!("0044-03-15 00:00:00+00 BC"),
        ),
        (9005, json!(1), json!(4.0), json!("12000-01-01 00:00:00+00")),
        (9006, json!(1), json!(4.0), json!("0001-01-01T00:00:00Z")),
    ];
    for (id, course, rating, created_at) in expected {
        let answer = reqwest::get(format!("{}/reviews/{id}", s.base))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "review {id}");
        let review: Value = answer.json().await.unwrap();
        assert_eq!(review["course_id"], course, "{review}");
        assert_eq!(review["rating"], rating, "{review}");
        assert_eq!(review["created_at"], created_at, "{review}");
        assert!(review["updated_at"].is_string(), "{review}");
    }
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

/// SQL may write ids of its own, and a user may add constraints to reviews: a POST then still
/// gets an id of its own, or a 422 naming what the database refused, never a 500.
async fn rows_written_by_sql_neither_block_nor_break_a_post(s: &Server) {
    let next: i64 =
        s.db.query_one(
            "SELECT last_value + 1 FROM pg_sequences WHERE sequencename = 'reviews_id_seq'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    s.db.batch_execute(&format!(
        "INSERT INTO reviews (id, course_id, user_id, rating)
         SELECT i, 77, 1, 4.0 FROM generate_series({next}, {next} + 40) i"
    ))
    .await
    .unwrap();
    let review = json!({"course_id": 77, "user_id": 2, "rating": 3.5, "content": "fine"});
    let (status, body) = post(&s.base, "application/json", review.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["id"].as_i64().unwrap() > next + 40, "{body}");

    s.db.batch_execute(
        "ALTER TABLE reviews ADD CONSTRAINT content_is_short CHECK (length(content) < 20)",
    )
    .await
    .unwrap();
    let before = reviews_of(&s.db, 78).await;
    let long = json!({"course_id": 78, "user_id": 2, "rating": 3.5, "content": "longer than twenty characters"});
    let (status, body) = post(&s.base, "application/json", long.to_string()).await;
    s.db.batch_execute("ALTER TABLE reviews DROP CONSTRAINT content_is_short")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], json!("content_is_short"), "{body}");
    assert_eq!(reviews_of(&s.db, 78).await, before, "nothing stored");
}
