//! `reviewflow import` against a small server shaped like Udemy's API 2.0 reviews resource,
//! which throttles and fails once along the way: every review arrives with its values, the
//! pages are read last to first, and importing again writes nothing. Results without a course
//! object leave the course unnamed; with one, it names the course in
//! reviewflow_catalog.courses.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

const COURSE: i64 = 4242;
const REVIEWS: usize = 250;
const FIRST_ID: i64 = 5_000_001;
const PAGE_SIZE: u64 = 40;

/// The mock resource: reviews newest first, as the real one lists them.
struct Mock {
    base: String,
    reviews: Mutex<Vec<Value>>,
    /// (page, page_size, status answered), in the order asked.
    requests: Mutex<Vec<(u64, u64, u16)>>,
    /// Request numbers (1-based) answered with this status instead of the page.
    failures: Mutex<HashMap<usize, StatusCode>>,
}

fn created(i: usize) -> DateTime<Utc> {
    "2026-03-01T12:00:00Z".parse::<DateTime<Utc>>().unwrap() - Duration::hours(i as i64)
}

fn review(i: usize) -> Value {
    let halves = 1 + (i % 10) as u32;
    let name = format!("Learner {}", i % 97);
    json!({
        "_class": "course_review",
        "id": FIRST_ID + i as i64,
        "content": content(i),
        "rating": f64::from(halves) / 2.0,
        "created": created(i).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "modified": created(i).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "user_modified": created(i).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "user": {"_class": "user", "title": name, "name": "Learner", "display_name": name},
    })
}

fn content(i: usize) -> String {
    // Rating-only reviews come with empty content.
    if i.is_multiple_of(25) {
        String::new()
    } else {
        format!("Review {i}: “clear” and it's practical")
    }
}

async fn serve() -> Arc<Mock> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = Arc::new(Mock {
        base: format!("http://{}/api-2.0", listener.local_addr().unwrap()),
        reviews: Mutex::new((0..REVIEWS).map(review).collect()),
        requests: Mutex::default(),
        failures: Mutex::default(),
    });
    let app = Router::new()
        .route("/api-2.0/courses/{id}/reviews/", get(reviews))
        .with_state(mock.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    mock
}

async fn reviews(
    State(mock): State<Arc<Mock>>,
    Path(course): Path<i64>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let number = |key: &str| query.get(key).and_then(|v| v.parse::<u64>().ok());
    let (page, size) = (
        number("page").unwrap_or(1),
        number("page_size").unwrap_or(10),
    );
    let failure = {
        let mut requests = mock.requests.lock().unwrap();
        let failure = mock.failures.lock().unwrap().remove(&(requests.len() + 1));
        let status = if course != COURSE {
            StatusCode::NOT_FOUND
        } else {
            failure.unwrap_or(StatusCode::OK)
        };
        requests.push((page, size, status.as_u16()));
        status
    };
    match failure {
        StatusCode::OK => {}
        StatusCode::TOO_MANY_REQUESTS => {
            return (
                failure,
                [(header::RETRY_AFTER, "1")],
                Json(json!({"detail": "Request was throttled."})),
            )
                .into_response()
        }
        StatusCode::NOT_FOUND => {
            return (failure, Json(json!({"detail": "Not found."}))).into_response()
        }
        other => return (other, Json(json!({"detail": "Try again later."}))).into_response(),
    }
    let reviews = mock.reviews.lock().unwrap();
    let start = ((page - 1) * size) as usize;
    if start >= reviews.len() && page > 1 {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"detail": "Invalid page."})),
        )
            .into_response();
    }
    let end = (start + size as usize).min(reviews.len());
    let link = |p: u64| {
        format!(
            "{}/courses/{course}/reviews/?page={p}&page_size={size}",
            mock.base
        )
    };
    Json(json!({
        "count": reviews.len(),
        "next": (end < reviews.len()).then(|| link(page + 1)),
        "previous": (page > 1).then(|| link(page - 1)),
        "results": reviews[start..end],
    }))
    .into_response()
}

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

async fn import(url: &str, mock: &Mock, course: i64) -> Run {
    import_with(url, mock, course, &[]).await
}

async fn import_with(url: &str, mock: &Mock, course: i64, extra: &[&str]) -> Run {
    let settings = common::settings().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_reviewflow"))
        .args([
            "import",
            "--course",
            &course.to_string(),
            "--url",
            &mock.base,
        ])
        .args(["--page-size", &PAGE_SIZE.to_string()])
        .args(extra)
        .env("DATABASE_URL", url)
        .env("KAFKA_BOOTSTRAP_SERVERS", &settings.kafka.bootstrap_servers)
        .env("RUST_LOG", "reviewflow=info")
        .env_remove("REVIEWFLOW_IMPORT_URL")
        .env_remove("REVIEWFLOW_IMPORT_PAGE_SIZE")
        .env_remove("REVIEWFLOW_IMPORT_ATTEMPTS")
        .output()
        .await
        .expect("the binary runs");
    let run = Run {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "--- import stdout:\n{}--- stderr:\n{}",
        run.stdout, run.stderr
    );
    run
}

/// Every row's version and last write: equal before and after means nothing was written.
async fn row_versions(db: &tokio_postgres::Client) -> (Option<DateTime<Utc>>, Option<String>) {
    let row = db
        .query_one(
            "SELECT max(updated_at), string_agg(xmin::text, ',' ORDER BY id) FROM reviews",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The course's row in reviewflow_catalog.courses: title, url, when it was written.
async fn course_name(
    db: &tokio_postgres::Client,
) -> Option<(String, Option<String>, DateTime<Utc>)> {
    db.query_opt(
        "SELECT title, url, updated_at FROM reviewflow_catalog.courses WHERE id = $1",
        &[&COURSE],
    )
    .await
    .unwrap()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
}

#[tokio::test]
async fn a_course_is_imported_last_page_first_and_again_without_writes() {
    let url = common::fresh_database("import").await;
    let db = reviewflow::db::connect(&url).await.unwrap();
    let mock = serve().await;
    // Request 1 reads the count; 3 is throttled, 6 meets a server error: both are retried.
    mock.failures.lock().unwrap().extend([
        (3, StatusCode::TOO_MANY_REQUESTS),
        (6, StatusCode::SERVICE_UNAVAILABLE),
    ]);

    let first = import(&url, &mock, COURSE).await;
    assert!(first.success);
    assert!(
        first.stdout.contains(
            "250 fetched (250 announced), 250 inserted, 0 updated, 0 unchanged, 0 skipped"
        ),
        "{}",
        first.stdout
    );
    let requests = mock.requests.lock().unwrap().clone();
    assert_eq!(requests[0], (1, 1, 200), "the count is read first");
    let answered: Vec<u64> = requests[1..]
        .iter()
        .filter(|r| r.2 == 200)
        .map(|r| {
            assert_eq!(r.1, PAGE_SIZE);
            r.0
        })
        .collect();
    assert_eq!(answered, [7, 6, 5, 4, 3, 2, 1], "pages last to first");
    for (failed, retry) in [(2, 3), (5, 6)] {
        assert_ne!(requests[failed].2, 200);
        assert_eq!(
            requests[retry].0, requests[failed].0,
            "a failed page is asked again"
        );
    }

    let rows = db
        .query(
            "SELECT id, course_id, user_id, rating::float8, title, content, created_at
             FROM reviews ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), REVIEWS);
    for (i, row) in rows.iter().enumerate() {
        let expected = review(i);
        assert_eq!(row.get::<_, i64>(0), FIRST_ID + i as i64);
        assert_eq!(row.get::<_, i64>(1), COURSE);
        assert_eq!(
            row.get::<_, i64>(2),
            reviewflow::tools::import::user_id(expected.get("user"))
        );
        assert_eq!(row.get::<_, f64>(3), expected["rating"].as_f64().unwrap());
        assert_eq!(row.get::<_, Option<String>>(4), None);
        assert_eq!(row.get::<_, Option<String>>(5), Some(content(i)));
        assert_eq!(row.get::<_, DateTime<Utc>>(6), created(i));
    }
    let same_name: Vec<i64> = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 97 == 3)
        .map(|(_, r)| r.get(2))
        .collect();
    assert!(same_name.len() > 1 && same_name.iter().all(|u| *u == same_name[0]));
    let local: i64 = db
        .query_one(
            "INSERT INTO reviews (course_id, user_id, rating) VALUES (1, 1, 5) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        local > FIRST_ID + REVIEWS as i64 - 1,
        "new local ids continue above the imported ones, got {local}"
    );
    db.execute("DELETE FROM reviews WHERE id = $1", &[&local])
        .await
        .unwrap();
    assert!(
        first.stdout.contains("no course object"),
        "{}",
        first.stdout
    );
    assert!(
        course_name(&db).await.is_none(),
        "no course object, no name"
    );

    // The source now sends the course object (API 2.0's course shape) with each result.
    for review in mock.reviews.lock().unwrap().iter_mut() {
        review["course"] = json!({"_class": "course", "id": COURSE, "title": "Kafka Streams in Depth",
                                  "url": "/course/kafka-streams/"});
    }
    let before = row_versions(&db).await;
    let again = import(&url, &mock, COURSE).await;
    assert!(again.success);
    assert!(
        again
            .stdout
            .contains("0 inserted, 0 updated, 250 unchanged, 0 skipped"),
        "{}",
        again.stdout
    );
    assert_eq!(
        row_versions(&db).await,
        before,
        "a re-import writes no review"
    );
    assert!(
        again.stdout.contains("titled \"Kafka Streams in Depth\""),
        "{}",
        again.stdout
    );
    let origin = mock.base.trim_end_matches("/api-2.0");
    let named = course_name(&db).await;
    assert_eq!(
        named.as_ref().map(|(t, u, _)| (t.as_str(), u.as_deref())),
        Some((
            "Kafka Streams in Depth",
            Some(format!("{origin}/course/kafka-streams/").as_str())
        )),
        "the relative URL is resolved against --url"
    );

    // The source edits one review and lists a broken one: one update, one skip, no more.
    {
        let mut reviews = mock.reviews.lock().unwrap();
        reviews[10]["rating"] = json!(1.5);
        reviews[10]["content"] = json!("Changed my mind");
        reviews.insert(0, json!({"id": 9_999_999, "rating": 4.25, "content": "?", "created": "2026-03-02T00:00:00Z"}));
    }
    let edited = import(&url, &mock, COURSE).await;
    assert!(edited.success);
    assert!(
        edited.stdout.contains(
            "251 fetched (251 announced), 0 inserted, 1 updated, 249 unchanged, 1 skipped"
        ),
        "{}",
        edited.stdout
    );
    assert!(
        edited.stderr.contains("9999999"),
        "the skipped review is named"
    );
    assert_eq!(
        course_name(&db).await,
        named,
        "an unchanged name is no write"
    );
    let row = db
        .query_one(
            "SELECT rating::float8, content FROM reviews WHERE id = $1",
            &[&(FIRST_ID + 10)],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, f64>(0), row.get::<_, String>(1)),
        (1.5, "Changed my mind".to_string())
    );
}

#[tokio::test]
async fn a_missing_course_fails_clearly_and_stores_nothing() {
    let url = common::fresh_database("import_missing").await;
    let db = reviewflow::db::connect(&url).await.unwrap();
    let mock = serve().await;
    let run = import(&url, &mock, 77).await;
    assert!(!run.success);
    assert!(
        run.stderr.contains("404") && run.stderr.contains("page 1"),
        "{}",
        run.stderr
    );
    assert_eq!(
        mock.requests.lock().unwrap().len(),
        1,
        "a 404 is not retried"
    );
    let stored: i64 = db
        .query_one("SELECT count(*) FROM reviews", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn a_server_that_keeps_failing_is_given_up_on_naming_the_page() {
    let url = common::fresh_database("import_down").await;
    let mock = serve().await;
    // The count is read; then page 7 fails on every one of its three tries.
    mock.failures.lock().unwrap().extend([
        (2, StatusCode::BAD_GATEWAY),
        (3, StatusCode::SERVICE_UNAVAILABLE),
        (4, StatusCode::INTERNAL_SERVER_ERROR),
    ]);
    let run = import_with(&url, &mock, COURSE, &["--attempts", "3"]).await;
    assert!(!run.success);
    assert!(
        run.stderr.contains("page 7") && run.stderr.contains("gave up after 3 attempts"),
        "{}",
        run.stderr
    );
    let pages: Vec<u64> = mock.requests.lock().unwrap().iter().map(|r| r.0).collect();
    assert_eq!(
        pages,
        [1, 7, 7, 7],
        "three tries of the last page, then nothing"
    );
}
