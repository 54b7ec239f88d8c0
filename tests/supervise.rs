//! `reviewflow run` supervises its stages: one that fails does not take the API, nor the
//! other stages, down. A failure a new session cures (here a failpoint armed to fail rather
//! than abort) restarts the stage, and the figures are exact once it caught up; a refused
//! setting stops the stage alone, GET /healthz and `reviewflow status` name it and its fix,
//! and the writes the API took meanwhile reach the figures once the fix is made.

mod common;

use std::path::Path;
use std::time::Duration;

use common::pipeline::Pipeline;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// `reviewflow run` on the pipeline, its API at `address`, its log to the pipeline's log,
/// and the figures' topic its own (the default one is shared, with other runs' markers).
fn spawn_run(p: &Pipeline, address: &str, failpoint: Option<&str>) -> common::Running {
    let figures = p.output("course-stats");
    let env = [
        ("API_LISTEN", address),
        ("REVIEWFLOW_STATS_TOPIC", &figures),
    ];
    p.spawn("run", failpoint, &env)
}

fn logged(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

fn still_running(running: &mut common::Running, log: &Path) {
    let child = running.0.as_mut().unwrap();
    let exited = child.try_wait().unwrap();
    assert!(exited.is_none(), "run exited ({exited:?}): {}", logged(log));
}

async fn healthz(base: &str) -> (StatusCode, Value) {
    let answer = reqwest::get(format!("{base}/healthz")).await.unwrap();
    let status = answer.status();
    (status, answer.json().await.unwrap())
}

/// The answer has only the fields, and the values, GET /openapi.json documents for it (the
/// degraded form is not reached by tests/openapi.rs, which runs no stage).
fn assert_documented(health: &Value) {
    let doc: Value = serde_json::from_str(reviewflow::api::OPENAPI).unwrap();
    let schemas = &doc["components"]["schemas"];
    let allowed = |schema: &str, field: &str, value: &Value| {
        let property = &schemas[schema]["properties"][field];
        assert!(property.is_object(), "{schema} documents {field}: {health}");
        if let Some(values) = property["enum"].as_array() {
            assert!(
                values.contains(value),
                "{schema}.{field} may be {value}: {health}"
            );
        }
    };
    for (field, value) in health.as_object().unwrap() {
        allowed("Health", field, value);
    }
    for stage in health["stages"].as_object().unwrap().values() {
        for (field, value) in stage.as_object().unwrap() {
            allowed("StageState", field, value);
        }
    }
}

async fn metrics(base: &str) -> String {
    let answer = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    answer.text().await.unwrap()
}

async fn post_review(http: &reqwest::Client, base: &str, i: i64) {
    let review = json!({
        "course_id": 1 + i % 4,
        "user_id": 1000 + i,
        "rating": 0.5 * (1 + i % 10) as f64,
        "content": format!("supervised lesson {i}"),
    });
    let answer = http
        .post(format!("{base}/reviews"))
        .json(&review)
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        StatusCode::CREATED,
        "review {i}: {}",
        answer.text().await.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_failing_inside_run_restarts_while_the_api_keeps_answering() {
    let mut p = Pipeline::new("supervise_restart").await;
    let log = std::env::temp_dir().join(format!("rf-supervise-restart-{}.log", common::unique()));
    p.log = Some(log.clone());
    let address = free_address();
    let base = format!("http://{address}");
    // The third fraud transaction fails between sending its outputs and committing them:
    // what a broker lost mid-transaction does to the stage.
    let failpoint = reviewflow::failpoint::FRAUD_BEFORE_COMMIT.erring_at(3);
    let mut running = spawn_run(&p, &address, Some(&failpoint));
    common::wait_healthy(&base, 120).await;
    p.wait_for_snapshot().await;

    let http = reqwest::Client::new();
    let mut posted = 0;
    let mut after_failure = 0;
    while after_failure < 20 {
        post_review(&http, &base, posted).await;
        posted += 1;
        if logged(&log).contains("failpoint fraud.before_commit reached") {
            after_failure += 1;
        }
        assert!(
            posted < 400,
            "the failpoint was never reached: {}",
            logged(&log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    still_running(&mut running, &log);
    assert!(
        logged(&log).contains("failing the session"),
        "the failpoint failed the session rather than aborting: {}",
        logged(&log)
    );

    // The stage came back: it runs again, once restarted, and nothing else restarted.
    common::eventually("fraud runs again, restarted once", 60, || async {
        let text = metrics(&base).await;
        text.contains("reviewflow_stage_restarts_total{stage=\"fraud\"} 1\n")
            && text.contains("reviewflow_stage_up{stage=\"fraud\"} 1\n")
    })
    .await;
    let text = metrics(&base).await;
    for stage in ["cdc", "cdc-course_stats", "verdicts", "stats"] {
        assert!(
            text.contains(&format!("reviewflow_stage_up{{stage=\"{stage}\"}} 1\n")),
            "{stage} is up: {text}"
        );
        assert!(
            text.contains(&format!(
                "reviewflow_stage_restarts_total{{stage=\"{stage}\"}} 0\n"
            )),
            "{stage} never restarted: {text}"
        );
    }
    p.wait_until_caught_up().await;
    p.assert_exact().await;
    let report = reviewflow::tools::verify::verify(&p.db().await)
        .await
        .unwrap();
    assert_eq!(report.courses, 4);
    assert_eq!(report.reviews, posted);
    let (status, health) = healthz(&base).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], json!("ok"), "{health}");
    assert_eq!(
        health["stages"]["fraud"],
        json!({"state": "running"}),
        "{health}"
    );
    p.stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_setting_inside_run_stops_cdc_alone_and_healthz_names_the_fix() {
    let mut p = Pipeline::new("supervise_refused").await;
    let log = std::env::temp_dir().join(format!("rf-supervise-refused-{}.log", common::unique()));
    p.log = Some(log.clone());
    p.db()
        .await
        .batch_execute("ALTER TABLE reviews REPLICA IDENTITY DEFAULT")
        .await
        .unwrap();
    let address = free_address();
    let base = format!("http://{address}");
    let mut running = spawn_run(&p, &address, None);
    common::wait_healthy(&base, 120).await;

    common::eventually("healthz shows cdc stopped", 60, || async {
        healthz(&base).await.1["stages"]["cdc"]["state"] == json!("stopped")
    })
    .await;
    let (status, health) = healthz(&base).await;
    // Writes are still served: a load balancer must keep sending them.
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], json!("degraded"), "{health}");
    assert_eq!(health["database"], json!("ok"), "{health}");
    assert_documented(&health);
    let reason = health["stages"]["cdc"]["reason"]
        .as_str()
        .unwrap_or_default();
    for needle in [
        "REPLICA IDENTITY DEFAULT",
        "ALTER TABLE public.reviews REPLICA IDENTITY FULL",
    ] {
        assert!(
            reason.contains(needle),
            "the reason names {needle:?}: {health}"
        );
    }
    for stage in ["fraud", "verdicts", "stats", "cdc-course_stats"] {
        assert_eq!(
            health["stages"][stage],
            json!({"state": "running"}),
            "{stage}: {health}"
        );
    }
    assert!(
        logged(&log).contains("stage failed and stays stopped"),
        "{}",
        logged(&log)
    );

    // The API keeps answering, and its writes wait for cdc.
    let http = reqwest::Client::new();
    for i in 0..12 {
        post_review(&http, &base, i).await;
    }
    let text = metrics(&base).await;
    assert!(
        text.contains("reviewflow_stage_up{stage=\"cdc\"} 0\n"),
        "{text}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    still_running(&mut running, &log);
    assert_eq!(
        healthz(&base).await.1["stages"]["cdc"]["state"],
        json!("stopped")
    );

    // The pipeline page of `run` shows each stage's health as /healthz does: the same table.
    let view: Value = reqwest::get(format!("{base}/pipeline.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["process"]["runs_stages"], json!(true), "{view}");
    let health = healthz(&base).await.1;
    for stage in ["cdc", "fraud", "verdicts", "stats"] {
        let shown = view["process"]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == stage)
            .unwrap_or_else(|| panic!("{stage} in {view}"));
        assert_eq!(shown["health"], health["stages"][stage], "{stage}: {view}");
    }

    // `status`, another process, shows the same, asked of the run's API.
    let shown = p
        .command("status")
        .env("REVIEWFLOW_API_URL", &base)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("cdc "))
        .unwrap_or_else(|| panic!("status shows cdc: {out}"));
    assert!(line.contains("stopped: "), "{line}");
    assert!(line.contains("REPLICA IDENTITY FULL"), "{line}");
    assert!(out.contains(": degraded"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("fraud ") && l.ends_with("running")),
        "{out}"
    );

    // SIGTERM still drains and stops everything; with the fix made, the next run reads what
    // the API took meanwhile, and the figures are exact.
    p.stop(running).await;
    p.db()
        .await
        .batch_execute("ALTER TABLE reviews REPLICA IDENTITY FULL")
        .await
        .unwrap();
    let running = spawn_run(&p, &address, None);
    common::wait_healthy(&base, 120).await;
    p.wait_for_snapshot().await;
    p.wait_until_caught_up().await;
    p.assert_exact().await;
    let report = reviewflow::tools::verify::verify(&p.db().await)
        .await
        .unwrap();
    assert_eq!((report.courses, report.reviews), (4, 12));
    let (_, health) = healthz(&base).await;
    assert_eq!(health["status"], json!("ok"), "{health}");
    p.stop(running).await;
}
