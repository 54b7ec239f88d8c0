//! A first start never races: on a fresh database and fresh topics, `reviewflow run` starts
//! every stage at once, and each creates what it needs or waits for it (a topic just created
//! by another stage may not show its partitions for a moment: fraud once stopped `run` on
//! that). Stages started one by one in the "wrong" order (the consumers before cdc) stay up
//! too. Each start is checked by a canary review reaching course_stats.

mod common;

use std::time::Duration;

use common::pipeline::Pipeline;
use serde_json::json;

/// The log of `running` so far, and whether it is still running.
fn alive(running: &mut common::Running, log: &std::path::Path) -> (bool, String) {
    let child = running.0.as_mut().unwrap();
    let up = child.try_wait().unwrap().is_none();
    (up, std::fs::read_to_string(log).unwrap_or_default())
}

async fn canary_counts(p: &Pipeline, course: i64) {
    let db = p.db().await;
    common::eventually(
        &format!("the canary reaches course_stats of course {course}"),
        120,
        || async {
            db.query_opt(
                "SELECT 1 FROM course_stats WHERE course_id = $1 AND review_count = 1",
                &[&course],
            )
            .await
            .unwrap()
            .is_some()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_on_a_fresh_stack_starts_every_stage_every_time() {
    for attempt in 0..4 {
        let mut p = Pipeline::new(&format!("first_run_{attempt}")).await;
        let log = std::env::temp_dir().join(format!("rf-first-run-{}.log", common::unique()));
        p.log = Some(log.clone());
        let address = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let figures = p.output("course-stats");
        let mut running = p.spawn(
            "run",
            None,
            &[
                ("API_LISTEN", address.as_str()),
                ("REVIEWFLOW_STATS_TOPIC", figures.as_str()),
            ],
        );
        let base = format!("http://{address}");
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let (up, logged) = alive(&mut running, &log);
            assert!(up, "attempt {attempt}: run stopped: {logged}");
            let healthy = reqwest::get(format!("{base}/healthz"))
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no /healthz within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The race, when there was one, stopped `run` within two seconds of the start.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (up, logged) = alive(&mut running, &log);
        assert!(up, "attempt {attempt}: run stopped: {logged}");
        assert!(
            !logged.contains("stage failed") && !logged.contains("session failed"),
            "attempt {attempt}: no stage failed or restarted: {logged}"
        );
        let answer = reqwest::Client::new()
            .post(format!("{base}/reviews"))
            .json(&json!({"course_id": 7, "user_id": 1, "rating": 4.5}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), reqwest::StatusCode::CREATED);
        canary_counts(&p, 7).await;
        let (up, logged) = alive(&mut running, &log);
        assert!(
            up && !logged.contains("stage failed"),
            "attempt {attempt}: {logged}"
        );
        p.stop(running).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_started_before_cdc_wait_for_it_and_stay_up() {
    let mut p = Pipeline::new("first_wrong_order").await;
    let log = std::env::temp_dir().join(format!("rf-first-order-{}.log", common::unique()));
    p.log = Some(log.clone());
    let mut stages = vec![
        p.spawn("stats", None, &[]),
        p.spawn("verdicts", None, &[]),
        p.spawn("fraud", None, &[]),
    ];
    tokio::time::sleep(Duration::from_secs(5)).await;
    stages.push(p.spawn_cdc(None));
    p.wait_for_snapshot().await;
    p.db()
        .await
        .batch_execute("INSERT INTO reviews (course_id, user_id, rating) VALUES (9, 1, 3.0)")
        .await
        .unwrap();
    canary_counts(&p, 9).await;
    for stage in &mut stages {
        let (up, logged) = alive(stage, &log);
        assert!(up, "every stage is still running: {logged}");
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logged.contains("session failed"),
        "no stage failed or restarted: {logged}"
    );
    p.wait_until_caught_up().await;
    p.assert_exact().await;
}

/// A stage whose setup fails for a moment (an admin request to Kafka that timed out, as on a
/// loaded three-node cluster; the failpoint stands in for it) asks again after a backoff
/// instead of exiting before its first session: each stage, started on its own, stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_whose_setup_fails_for_a_moment_tries_again_and_stays_up() {
    let mut p = Pipeline::new("first_setup_fails").await;
    let log = std::env::temp_dir().join(format!("rf-first-setup-{}.log", common::unique()));
    p.log = Some(log.clone());
    let failing = reviewflow::failpoint::STAGE_SETUP.erring_at(1);
    let mut stages: Vec<common::Running> = ["cdc", "fraud", "stats", "verdicts"]
        .iter()
        .map(|s| p.spawn(s, Some(&failing), &[]))
        .collect();
    p.wait_for_snapshot().await;
    p.db()
        .await
        .batch_execute("INSERT INTO reviews (course_id, user_id, rating) VALUES (11, 1, 4.0)")
        .await
        .unwrap();
    canary_counts(&p, 11).await;
    let logged = std::fs::read_to_string(&log).unwrap();
    for (stage, running) in ["cdc", "fraud", "stats", "verdicts"]
        .iter()
        .zip(&mut stages)
    {
        let (up, _) = alive(running, &log);
        assert!(up, "{stage} is still running: {logged}");
        assert!(
            logged
                .lines()
                .any(|l| l.contains("setup failed; trying again")
                    && l.contains(&format!("stage=\"{stage}"))),
            "{stage} logged its failed setup and tried again: {logged}"
        );
    }
    p.wait_until_caught_up().await;
    p.assert_exact().await;
}

/// A stage given only its own role's URL may not migrate: started before `reviewflow migrate`,
/// it waits for the schema, saying so, and starts once the owner applied it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_without_the_owners_url_waits_for_the_migrations() {
    let settings = common::settings().await;
    let (base, _) = settings.database_url.rsplit_once('/').unwrap();
    let admin = reviewflow::db::connect(&format!("{base}/postgres"))
        .await
        .unwrap();
    let db = "rf_test_first_unmigrated";
    for sql in [
        format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        format!("CREATE DATABASE {db}"),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    let url = format!("{base}/{db}");
    let topic = format!("test.first_unmigrated.{}", common::unique());
    let log = std::env::temp_dir().join(format!("rf-first-unmigrated-{}.log", common::unique()));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_reviewflow"));
    cmd.arg("verdicts")
        .env_remove("DATABASE_URL")
        .env_remove("SCHEMA_REGISTRY_URL")
        .env("WORKER_DATABASE_URL", &url)
        .env("KAFKA_BOOTSTRAP_SERVERS", &settings.kafka.bootstrap_servers)
        .env("REVIEWFLOW_VERDICTS_TOPIC", format!("{topic}.verdicts"))
        .env(
            "REVIEWFLOW_DEAD_LETTER_TOPIC",
            format!("{topic}.dead-letters"),
        )
        .env("REVIEWFLOW_VERDICTS_GROUP", format!("{topic}.verdicts"))
        .env("RUST_LOG", "reviewflow=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut stage = common::Running(Some(cmd.spawn().unwrap()));
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    common::eventually("the stage says it waits for the schema", 60, || async {
        logged().contains("waiting for the database schema")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (up, text) = alive(&mut stage, &log);
    assert!(up, "it waits, it does not stop: {text}");
    reviewflow::db::migrate(&url).await.unwrap();
    common::eventually("the stage starts once migrated", 90, || async {
        logged().contains("partitions assigned")
    })
    .await;
    let (up, text) = alive(&mut stage, &log);
    assert!(up && !text.contains("session failed"), "{text}");
}
