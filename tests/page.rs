//! The course page in a real browser: headless Chromium (driven by tests/browser/page.js
//! through puppeteer-core) loads GET /courses/{id}, and a stats transaction that notifies
//! `course_stats` exactly as the stats worker does (`sink::stats::notify`) changes the count
//! shown, without a reload. The screenshot is left in target/page-screenshot.png.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use reviewflow::api::{self, AppState};
use reviewflow::contract::notify::Touched;
use reviewflow::sink::stats::notify;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::ChildStdout;

const COURSE: i64 = 77;

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Fails (never skips) when the browser or the script's packages are missing.
fn require_browser() {
    let missing: Vec<String> = [
        (chromium(), "chromium"),
        (
            browser_dir().join("node_modules/puppeteer-core/package.json"),
            "tests/browser/node_modules (npm ci)",
        ),
    ]
    .into_iter()
    .filter(|(path, _)| !path.exists())
    .map(|(path, what)| format!("{what} at {}", path.display()))
    .collect();
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        missing.is_empty() && node,
        "the browser test needs node, chromium and puppeteer-core; missing: {missing:?}{}; \
         run scripts/install-deps",
        if node { "" } else { ", node" }
    );
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>, secs: u64) -> String {
    tokio::time::timeout(Duration::from_secs(secs), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("the browser script printed nothing within {secs} s"))
        .expect("read the browser script's output")
        .expect("the browser script ended early (its error is above)")
}

#[tokio::test]
async fn the_course_page_updates_live_in_a_browser() {
    require_browser();
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

    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/page-screenshot.png");
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&screenshot);
    let mut script = tokio::process::Command::new("node")
        .arg(browser_dir().join("page.js"))
        .arg(format!("{base}/courses/{COURSE}"))
        .arg(&screenshot)
        .env("CHROMIUM", chromium())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start node");
    let mut lines = BufReader::new(script.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut lines, 60).await, "loaded 3");

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

    assert_eq!(next_line(&mut lines, 40).await, "changed 4");
    let status = tokio::time::timeout(Duration::from_secs(30), script.wait())
        .await
        .expect("the browser script ends")
        .unwrap();
    assert!(status.success(), "the browser script failed: {status}");
    assert!(screenshot.exists(), "{} was saved", screenshot.display());
}
