//! `reviewflow run`: every part in one process. Reviews posted to its API reach course_stats
//! (the invariant holds once the pipeline caught up), and SIGTERM stops every part cleanly.

mod common;

use common::pipeline::Pipeline;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_the_whole_pipeline_and_stops_cleanly_on_sigterm() {
    let p = Pipeline::new("run_all").await;
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let figures_topic = p.output("course-stats");
    let mut cmd = p.command("run");
    cmd.env("API_LISTEN", &address)
        .env("REVIEWFLOW_STATS_TOPIC", &figures_topic)
        .stdout(std::process::Stdio::null());
    let running = common::Running(Some(cmd.spawn().expect("reviewflow run starts")));

    let http = reqwest::Client::new();
    let base = format!("http://{address}");
    common::wait_healthy(&base, 120).await;
    p.wait_for_snapshot().await;
    for i in 0..20 {
        let content = if i == 7 {
            "cheap copies at http://spam.example.com".to_string()
        } else {
            format!("clear lessons, part {i}")
        };
        let review = json!({
            "course_id": 1 + i % 3,
            "user_id": 100 + i,
            "rating": 0.5 * f64::from(1 + i % 10),
            "content": content,
        });
        let answer = http
            .post(format!("{base}/reviews"))
            .json(&review)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), reqwest::StatusCode::CREATED);
    }
    p.wait_until_caught_up().await;
    let report = reviewflow::tools::verify::verify(&p.db().await)
        .await
        .unwrap();
    assert_eq!(report.courses, 3);
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    let stats: serde_json::Value = http
        .get(format!("{base}/courses/2/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Course 2 got reviews 1, 4, 7, 10, 13, 16, 19; review 7 is spam.
    assert_eq!(stats["review_count"], json!(6), "{stats}");

    // SIGTERM: every part drains and the process exits 0.
    p.stop(running).await;
}
