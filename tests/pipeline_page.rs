//! The pipeline page in a real browser, served by an API that runs no stage (as `reviewflow
//! api` does) while the stages run as their own processes: with cdc stopped and reviews
//! written, the page shows the slot inactive and its lag rising; with cdc started again, the
//! lag falls. axe-core finds no violation and the page does not scroll sideways at 375 px.
//! The two states are left in target/screenshots/pipeline-{rising,falling}.png. A record
//! that is not a change event shows as a dead letter, with its reason, read from Kafka.

mod common;

use std::time::Duration;

use common::browser::{self, Script};
use common::pipeline::Pipeline;
use reviewflow::api::{self, AppState};
use reviewflow::config::TopicSettings;
use reviewflow::tools::status::Place;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_page_shows_cdc_lag_rising_while_it_is_stopped_and_falling_after() {
    let p = Pipeline::new("pipeline_page").await;
    let cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = reviewflow::kafka::client_config(&p.settings.kafka)
            .create()
            .unwrap();
        producer
            .send(
                FutureRecord::<[u8], [u8]>::to(&p.topic)
                    .partition(0)
                    .payload(b"{\"op\": \"c\"}"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let _fraud = p.spawn("fraud", None, &[]);
    let _verdicts = p.spawn("verdicts", None, &[]);
    let _stats = p.spawn("stats", None, &[]);
    let db = p.db().await;
    let mut rng = common::Rng(19);
    common::write_random(&db, &mut rng, 10).await;
    p.wait_until_caught_up().await;

    let place = Place {
        topics: TopicSettings {
            partitions: 3,
            replication_factor: -1,
            changes: p.topic.clone(),
            valid: p.output("valid"),
            fraud: p.output("fraud"),
            verdicts: p.output("verdicts"),
            dead_letters: p.output("dead-letters"),
        },
        slot: p.slot(),
        publication: "reviewflow".into(),
        fraud_group: format!("{}.fraud", p.topic),
    };
    let pool = reviewflow::db::pool(&p.url, 4).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::new(pool, &p.url).watching(place, p.settings.kafka.clone());
    tokio::spawn(async move { axum::serve(listener, api::router(state)).await });

    // The JSON the page renders: every worker partition caught up, the dead letter with
    // its reason, and what this process cannot know said so.
    let view: Value = reqwest::get(format!("{base}/pipeline.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["slot"]["active"], Value::Bool(true), "{view}");
    assert_eq!(view["slot"]["time_lag_s"], serde_json::json!(0.0), "{view}");
    let positions = view["positions"].as_array().unwrap();
    for stage in ["fraud", "verdicts", "stats"] {
        let mine: Vec<&Value> = positions.iter().filter(|q| q["stage"] == stage).collect();
        assert!(!mine.is_empty(), "{stage} in {view}");
        for q in mine {
            assert!(q["behind"].as_i64().is_some_and(|b| b <= 1), "{q}");
        }
    }
    let dead = &view["dead_letters"];
    assert_eq!(dead["exists"], Value::Bool(true), "{view}");
    let reasons: Vec<&str> = dead["latest"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["reason"].as_str())
        .collect();
    assert!(
        reasons.len() == 1 && reasons[0].contains("magic byte"),
        "{view}"
    );
    assert_eq!(view["process"]["runs_stages"], Value::Bool(false));
    assert!(
        view["unknown"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u.as_str().unwrap().contains("this process runs no stage")),
        "{view}"
    );

    let (rising, falling) = (
        browser::screenshot("pipeline-rising"),
        browser::screenshot("pipeline-falling"),
    );
    let mut script = Script::start(
        "pipeline.js",
        &[
            &format!("{base}/pipeline"),
            rising.to_str().unwrap(),
            falling.to_str().unwrap(),
        ],
    );
    let loaded = script.next_line(60).await;
    assert!(loaded.starts_with("loaded active"), "{loaded}");

    // cdc stops; what is written meanwhile waits in the slot, until the page saw it rise.
    p.stop(cdc).await;
    let shown = {
        let writing = async {
            for _ in 0..300 {
                common::write_random(&db, &mut rng, 2).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        };
        tokio::select! {
            line = script.next_line(120) => line,
            () = writing => panic!("the page did not show the lag rising while reviews were written"),
        }
    };
    assert!(shown.starts_with("rising "), "{shown}");

    let _cdc = p.spawn_cdc(None);
    let shown = script.next_line(120).await;
    assert!(shown.starts_with("falling "), "{shown}");
    script.finish().await;
    assert!(
        rising.exists() && falling.exists(),
        "both screenshots saved"
    );

    p.wait_until_caught_up().await;
    p.assert_exact().await;
}
