//! The course page with the real pipeline behind it (cdc, fraud, verdicts, stats as their own
//! processes) and the API in this test: the course's title, figures, chart and valid reviews
//! are served; the index searches and sorts by title; the caching headers and the CORS
//! answers are what an embedding website relies on. Then headless Chromium (driven by
//! tests/browser/course.js through puppeteer-core) sees an INSERT by SQL change the page
//! without a reload, its chart gain a point for today, and the page pass axe-core at 1280 and
//! 375 px without scrolling sideways at 375. Screenshots: target/screenshots/course-page-*.png.

mod common;

use common::browser::{self, Script};
use common::pipeline::Pipeline;
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_REQUEST_METHOD,
    CACHE_CONTROL, ETAG, IF_NONE_MATCH, ORIGIN,
};
use reqwest::{Method, StatusCode};
use reviewflow::api::{self, AppState};
use serde_json::Value;

const COURSE: i64 = 77;
/// A course with reviews and no row in reviewflow_catalog.courses.
const UNNAMED: i64 = 78;
const TITLE: &str = "Rust <&> Kafka in Practice";
const SITE: &str = "https://site.example";
/// Valid reviews written before the page is opened, three days ago: a page and a bit.
const EARLIER: i64 = 12;

async fn get(url: &str) -> (StatusCode, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_course_page_follows_the_pipeline_live_in_a_browser() {
    let p = Pipeline::new("course_page").await;
    let db = p.db().await;
    let mut sql = format!(
        "INSERT INTO reviewflow_catalog.courses (id, title, url)
         VALUES ({COURSE}, '{TITLE}', 'https://courses.example.com/rust');
         INSERT INTO reviews (course_id, user_id, rating, content, created_at)
         VALUES ({UNNAMED}, 1, 3.0, 'A fair overview of the basics', now() - interval '3 days');
         INSERT INTO reviews (course_id, user_id, rating, title, content, created_at)
         VALUES ({COURSE}, 500, 5.0, 'Bargain', 'Get it cheaper at http://spam.example.com/deal', now() - interval '3 days');"
    );
    for i in 1..=EARLIER {
        sql.push_str(&format!(
            "INSERT INTO reviews (course_id, user_id, rating, title, content, created_at)
             VALUES ({COURSE}, {i}, 4.0, 'Helpful part {i}', 'Clear explanations in part {i} with practical exercises',
                     now() - interval '3 days' - {i} * interval '1 minute');"
        ));
    }
    db.batch_execute(&sql).await.unwrap();
    let _cdc = p.spawn_cdc(None);
    let _fraud = p.spawn("fraud", None, &[]);
    let _verdicts = p.spawn("verdicts", None, &[]);
    let _stats = p.spawn("stats", None, &[]);
    p.wait_until_caught_up().await;

    let pool = reviewflow::db::pool(&p.url, 4).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::new(pool, &p.url).with_cors(&[SITE.to_string()]);
    tokio::spawn(async move { axum::serve(listener, api::router(state)).await });

    // The figures carry the title, null for a course without one.
    let http = reqwest::Client::new();
    let stats = http
        .get(format!("{base}/courses/{COURSE}/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), StatusCode::OK);
    assert_eq!(stats.headers()[CACHE_CONTROL], "public, max-age=5");
    let tag = stats.headers()[ETAG].clone();
    let row: Value = stats.json().await.unwrap();
    assert_eq!(
        (row["title"].as_str(), row["review_count"].as_i64()),
        (Some(TITLE), Some(EARLIER))
    );
    let unnamed: Value = http
        .get(format!("{base}/courses/{UNNAMED}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(unnamed["title"], Value::Null);
    // Revalidation: the same figures are a 304 without a body, and a changed tag a 200.
    let again = http
        .get(format!("{base}/courses/{COURSE}/stats"))
        .header(IF_NONE_MATCH, tag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()[ETAG], tag);
    assert!(again.text().await.unwrap().is_empty());
    let other = http
        .get(format!("{base}/courses/{COURSE}/stats"))
        .header(IF_NONE_MATCH, "\"0000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);

    // CORS: the configured origin may read, another may not, and no origin may write.
    let from = |origin: &str| {
        http.get(format!("{base}/courses/{COURSE}/stats"))
            .header(ORIGIN, origin)
    };
    let allowed = from(SITE).send().await.unwrap();
    assert_eq!(allowed.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], SITE);
    let refused = from("https://elsewhere.example").send().await.unwrap();
    assert!(refused.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    let preflight = http
        .request(Method::OPTIONS, format!("{base}/reviews"))
        .header(ORIGIN, SITE)
        .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .send()
        .await
        .unwrap();
    let methods = preflight.headers()[ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        methods.contains("GET") && !methods.contains("POST"),
        "{methods}"
    );

    // The page: title escaped, valid reviews only, ten a page; cached only with revalidation.
    let page = http
        .get(format!("{base}/courses/{COURSE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.headers()[CACHE_CONTROL], "no-cache");
    assert!(page.headers().contains_key(ETAG));
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<h1 id=\"title\">Rust &lt;&amp;&gt; Kafka in Practice</h1>"),
        "{html}"
    );
    assert!(html.contains("Helpful part 1<") && !html.contains("spam.example.com"));
    assert_eq!(html.matches("<article").count(), 10);
    assert!(html.contains("?page=2#reviews"));
    let (_, second) = get(&format!("{base}/courses/{COURSE}?page=2")).await;
    assert_eq!(second.matches("<article").count(), 2, "{second}");
    assert!(second.contains("Helpful part 12<"));
    let (status, _) = get(&format!("{base}/courses/{COURSE}?page=0")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, unnamed) = get(&format!("{base}/courses/{UNNAMED}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(unnamed.contains(&format!("<h1 id=\"title\">Course {UNNAMED}</h1>")));

    // The index by title: searched (what it shows, "Course N" too) and sorted.
    let link = |id: i64, name: &str| format!("<a href=\"/courses/{id}\">{name}</a>");
    let named = link(COURSE, "Rust &lt;&amp;&gt; Kafka in Practice");
    let plain = link(UNNAMED, &format!("Course {UNNAMED}"));
    let (_, index) = get(&format!("{base}/courses?sort=title")).await;
    let (a, b) = (index.find(&named), index.find(&plain));
    assert!(a.is_some() && b.is_some() && a < b, "titled first: {index}");
    let (_, found) = get(&format!("{base}/courses?q=KAFKA")).await;
    assert!(found.contains(&named) && !found.contains(&plain), "{found}");
    let (_, found) = get(&format!("{base}/courses?q=course+{UNNAMED}&sort=rating")).await;
    assert!(found.contains(&plain) && !found.contains(&named), "{found}");
    let (status, _) = get(&format!("{base}/courses?sort=price")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Live, in a browser: a review inserted by SQL reaches the figures, the list and the
    // chart's today without a reload.
    let today: String = db
        .query_one("SELECT reviewflow_today()::text", &[])
        .await
        .unwrap()
        .get(0);
    // Plain words: a long number could read as a phone number to the fraud model.
    let marker = "Written while the page was open".to_string();
    let shots = [
        browser::screenshot("course-page-desktop"),
        browser::screenshot("course-page-phone"),
    ];
    let url = format!("{base}/courses/{COURSE}");
    let mut script = Script::start(
        "course.js",
        &[
            &url,
            shots[0].to_str().unwrap(),
            shots[1].to_str().unwrap(),
            &today,
            &marker,
        ],
    );
    assert_eq!(script.next_line(60).await, format!("loaded {EARLIER}"));
    db.execute(
        "INSERT INTO reviews (course_id, user_id, rating, title, content) VALUES ($1, 900, 4.5, 'Fresh', $2)",
        &[&COURSE, &marker],
    )
    .await
    .unwrap();
    assert_eq!(
        script.next_line(40).await,
        format!("changed {}", EARLIER + 1)
    );
    assert_eq!(script.next_line(30).await, "narrow");
    script.finish().await;
    for shot in &shots {
        assert!(shot.exists(), "{} was saved", shot.display());
    }
    // The index, searched and sorted, passes the same checks.
    let index = [
        format!("{base}/courses"),
        format!("{base}/courses?sort=title&q=course"),
    ];
    let mut script = Script::start("axe.js", &[&index[0], &index[1]]);
    for url in &index {
        assert_eq!(script.next_line(60).await, format!("ok {url}"));
    }
    script.finish().await;

    p.wait_until_caught_up().await;
    p.assert_exact().await;
}
