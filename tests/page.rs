//! The course page in a real browser: headless Chromium (driven by tests/browser/page.js
//! through puppeteer-core) loads GET /courses/{id}, and a stats transaction that notifies
//! `course_stats` exactly as the stats worker does (`sink::stats::notify`) changes the count
//! shown, without a reload; axe-core finds no accessibility violation on it. The screenshot is
//! left in target/screenshots/course-page.png.

mod common;

use common::browser::{self, Script};
use reqwest::StatusCode;
use reviewflow::api::{self, AppState};
use reviewflow::contract::notify::Touched;
use reviewflow::sink::stats::notify;

const COURSE: i64 = 77;

#[tokio::test]
async fn the_course_page_updates_live_in_a_browser() {
    let url = common::fresh_database("page").await;
    let pool = reviewflow::db::pool(&url, 4).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::new(pool, &url);
    tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
    let mut db = reviewflow::db::connect(&url).await.unwrap();
    db.batch_execute(&format!(
        "INSERT INTO course_stats (course_id, review_count, rating_sum, stars_4, last_review_at,
                                   recent_review_count, recent_rating_sum, recent_stars_4)
         VALUES ({COURSE}, 3, 12.0, 3, '2026-01-02T03:04:05Z', 3, 12.0, 3)"
    ))
    .await
    .unwrap();

    // The index lists the course, linked; an unknown course is a 404 page.
    let index = reqwest::get(format!("{base}/courses")).await.unwrap();
    assert_eq!(index.status(), StatusCode::OK);
    let index = index.text().await.unwrap();
    assert!(
        index.contains(&format!(
            "<a href=\"/courses/{COURSE}\">Course {COURSE}</a>"
        )),
        "{index}"
    );
    let unknown = reqwest::get(format!("{base}/courses/999999"))
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let unknown = unknown.text().await.unwrap();
    assert!(
        unknown.starts_with("<!DOCTYPE html>") && unknown.contains("999999"),
        "{unknown}"
    );

    let screenshot = browser::screenshot("course-page");
    let page = format!("{base}/courses/{COURSE}");
    let mut script = Script::start("page.js", &[&page, screenshot.to_str().unwrap()]);
    assert_eq!(script.next_line(60).await, "loaded 3");

    // One review more, committed with the worker's notification.
    let tx = db.transaction().await.unwrap();
    tx.execute(
        "UPDATE course_stats SET review_count = review_count + 1, rating_sum = rating_sum + 5,
                stars_5 = stars_5 + 1, recent_review_count = recent_review_count + 1,
                recent_rating_sum = recent_rating_sum + 5, recent_stars_5 = recent_stars_5 + 1,
                last_review_at = now(), updated_at = now()
         WHERE course_id = $1",
        &[&COURSE],
    )
    .await
    .unwrap();
    notify::notify(&tx, &Touched::Courses(vec![COURSE]))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(script.next_line(40).await, "changed 4");
    script.finish().await;
    assert!(screenshot.exists(), "{} was saved", screenshot.display());
}
