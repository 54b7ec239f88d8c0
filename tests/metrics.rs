//! GET /metrics against the real PostgreSQL and Kafka: the stages run as their own processes,
//! each serving its metrics on `--metrics-listen`; after a few writes every stage's counters
//! match what the topics hold, the stats worker observed the commit-to-stats latency, and
//! the api's /metrics reads the test database's replication slot.

mod common;

use common::pipeline::Pipeline;
use reviewflow::api::{self, AppState};

/// A port nothing listens on now (bound, then let go).
fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The exposition at `address`, after checking its content type.
async fn scrape(address: &str) -> Option<String> {
    let response = reqwest::get(format!("http://{address}/metrics"))
        .await
        .ok()?;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some(reviewflow::metrics::CONTENT_TYPE)
    );
    let text = response.text().await.ok()?;
    assert!(text.ends_with("# EOF\n"), "{text}");
    Some(text)
}

/// The value of one series (name and labels exactly as encoded), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{series}: {v}")))
}

#[tokio::test]
async fn every_stage_counts_what_it_did() {
    let p = Pipeline::new("metrics").await;
    let ports: Vec<(&str, String)> = ["cdc", "fraud", "verdicts", "stats"]
        .into_iter()
        .map(|stage| (stage, free_port()))
        .collect();
    let _stages: Vec<_> = ports
        .iter()
        .map(|(stage, address)| {
            p.spawn(
                stage,
                None,
                &[("REVIEWFLOW_METRICS_LISTEN", address.as_str())],
            )
        })
        .collect();
    let address = |stage: &str| ports.iter().find(|(s, _)| *s == stage).unwrap().1.clone();
    p.wait_for_snapshot().await;

    let db = p.db().await;
    for i in 1..=5 {
        db.execute(
            "INSERT INTO reviews (id, course_id, user_id, rating, content) VALUES ($1, 7, $1, 4.5, 'Clear and well paced')",
            &[&i64::from(i)],
        )
        .await
        .unwrap();
    }
    db.batch_execute(
        "UPDATE reviews SET rating = 3.0 WHERE id = 2; DELETE FROM reviews WHERE id = 3;",
    )
    .await
    .unwrap();
    p.wait_until_caught_up().await;

    let changes = p.events().await.len() as f64;
    // The workers count the snapshot's marks (a TRUNCATE and an end on every partition) as
    // the records they are; cdc's stream counters count only the stream.
    let records = p.marked_events().await.len() as f64;
    let valid_records = p.marked_events_of(&p.output("valid")).await.len() as f64;
    let valid = p.events_of(&p.output("valid")).await.len() as f64;
    let verdicts = common::consume_all(&p.settings.kafka, &p.output("verdicts"))
        .await
        .len() as f64;
    assert_eq!(changes, 7.0, "5 inserts, 1 update, 1 delete");
    let expected = [
        ("cdc", "reviewflow_events_in_total{stage=\"cdc\"}", changes),
        (
            "cdc",
            "reviewflow_events_out_total{stage=\"cdc\",output=\"changes\"}",
            changes,
        ),
        (
            "fraud",
            "reviewflow_events_in_total{stage=\"fraud\"}",
            records,
        ),
        (
            "fraud",
            "reviewflow_events_out_total{stage=\"fraud\",output=\"valid\"}",
            valid_records,
        ),
        (
            "fraud",
            "reviewflow_events_out_total{stage=\"fraud\",output=\"verdict\"}",
            verdicts,
        ),
        (
            "verdicts",
            "reviewflow_events_in_total{stage=\"verdicts\"}",
            verdicts,
        ),
        (
            "verdicts",
            "reviewflow_events_out_total{stage=\"verdicts\",output=\"applied\"}",
            verdicts,
        ),
        (
            "stats",
            "reviewflow_events_in_total{stage=\"stats\"}",
            valid_records,
        ),
        (
            "stats",
            "reviewflow_events_out_total{stage=\"stats\",output=\"applied\"}",
            valid,
        ),
        ("stats", "reviewflow_commit_to_stats_seconds_count", valid),
    ];
    // The counters move right after each commit, which is what caught up waited for.
    common::eventually(
        "every stage's counters reach the topics' counts",
        20,
        || async {
            let mut all = true;
            for (stage, series, want) in &expected {
                let text = scrape(&address(stage)).await.unwrap_or_default();
                all &= value(&text, series) == Some(*want);
            }
            all
        },
    )
    .await;
    let fraud = scrape(&address("fraud")).await.unwrap();
    assert!(
        value(&fraud, "reviewflow_transactions_total{stage=\"fraud\"}").unwrap() >= 1.0,
        "{fraud}"
    );
    assert_eq!(
        value(&fraud, "reviewflow_dead_letters_total{stage=\"fraud\"}"),
        Some(0.0),
        "{fraud}"
    );
    let stats = scrape(&address("stats")).await.unwrap();
    assert!(
        value(&stats, "reviewflow_commit_to_stats_seconds_sum").unwrap() > 0.0,
        "{stats}"
    );
    assert_eq!(
        value(
            &stats,
            "reviewflow_commit_to_stats_seconds_bucket{le=\"+Inf\"}"
        ),
        Some(valid),
        "{stats}"
    );
    // Lag is computed with the progress log, every 10 s; caught up, it is 0.
    let lag_series = format!(
        "reviewflow_consumer_lag{{stage=\"fraud\",topic=\"{}\",partition=",
        p.topic
    );
    common::eventually("fraud reports its consumer lag", 20, || async {
        let text = scrape(&address("fraud")).await.unwrap_or_default();
        let lags: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&lag_series))
            .collect();
        !lags.is_empty() && lags.iter().all(|l| l.ends_with("} 0"))
    })
    .await;
    // Each process shows only its own stages.
    assert!(!stats.contains("stage=\"fraud\""), "{stats}");

    // The api's /metrics reads the test database's slot, which cdc holds open.
    let pool = reviewflow::db::pool(&p.url, 2).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_address = listener.local_addr().unwrap().to_string();
    let state = AppState::new(pool, &p.url);
    tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
    let text = scrape(&api_address).await.unwrap();
    let slot = p.slot();
    assert_eq!(
        value(&text, &format!("reviewflow_slot_active{{slot=\"{slot}\"}}")),
        Some(1.0),
        "{text}"
    );
    let lag = value(
        &text,
        &format!("reviewflow_slot_lag_bytes{{slot=\"{slot}\"}}"),
    );
    assert!(lag.is_some_and(|b| b >= 0.0), "{text}");
    assert!(
        text.contains("# TYPE reviewflow_slot_lag_bytes gauge"),
        "{text}"
    );
}
