//! Kafka refusing the changes: the changes topic's max.message.bytes lowered below a record's
//! size, the closest a single broker comes to "the topic is full" without filling the disk.
//! cdc must say which topic and which setting, keep the slot where it is (nothing lost),
//! keep trying, and carry on by itself once the setting is fixed; the pipeline is then exact.

mod common;

use std::time::Duration;

use common::pipeline::Pipeline;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

/// Sets the topic's configuration (all of it: AlterConfigs replaces what is not named).
async fn set_topic_config(p: &Pipeline, max_message_bytes: &str) {
    let admin: AdminClient<DefaultClientContext> =
        reviewflow::kafka::client_config(&p.settings.kafka)
            .create()
            .unwrap();
    let config = AlterConfig::new(ResourceSpecifier::Topic(&p.topic))
        .set("retention.ms", "-1")
        .set("max.message.bytes", max_message_bytes);
    for result in admin
        .alter_configs([&config], &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
}

async fn confirmed(p: &Pipeline) -> u64 {
    let lsn: tokio_postgres::types::PgLsn = p
        .db()
        .await
        .query_one(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
            &[&p.slot()],
        )
        .await
        .unwrap()
        .get(0);
    u64::from(lsn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_refusing_records_holds_the_slot_says_why_and_resumes_when_fixed() {
    let mut p = Pipeline::new("kafka_refusal").await;
    let log = std::env::temp_dir().join(format!("rf-kafka-refusal-{}.log", common::unique()));
    p.log = Some(log.clone());
    let mut cdc = p.spawn_cdc(None);
    p.log = None;
    p.wait_for_snapshot().await;
    let _stages: Vec<_> = ["fraud", "verdicts", "stats"]
        .iter()
        .map(|s| p.spawn(s, None, &[]))
        .collect();
    let db = p.db().await;
    let mut rng = common::Rng(0xf011);
    common::write_random(&db, &mut rng, 50).await;
    p.wait_until_caught_up().await;

    set_topic_config(&p, "600").await;
    // A review far larger than 600 bytes even compressed (hex digests do not compress much).
    db.batch_execute(
        "INSERT INTO reviews (id, course_id, user_id, rating, content)
         SELECT 9001, 7, 7, 4.5, string_agg(md5(i::text), ' ') FROM generate_series(1, 100) AS i",
    )
    .await
    .unwrap();
    let big: tokio_postgres::types::PgLsn = db
        .query_one("SELECT pg_current_wal_lsn()", &[])
        .await
        .unwrap()
        .get(0);
    // Later changes of the same course (so the same partition), each in a batch of its own
    // behind the refused one. Had any of them reached the topic before the refused change is
    // sent again, the sinks would take that re-send for a duplicate (its position is behind
    // what they applied) and the change would be lost.
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        db.execute(
            "INSERT INTO reviews (id, course_id, user_id, rating) VALUES ($1, 7, $1, 2.0)",
            &[&(9002 + i as i64)],
        )
        .await
        .unwrap();
    }
    common::write_random(&db, &mut rng, 30).await;

    common::eventually(
        "cdc says which topic refuses what, and which setting",
        60,
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines().any(|l| {
                l.contains(&format!("kafka refused a change for topic {}", p.topic))
                    && l.contains("max.message.bytes")
            })
        },
    )
    .await;
    // It keeps trying for a while, and the slot stays before the refused change.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        cdc.0.as_mut().unwrap().try_wait().unwrap().is_none(),
        "cdc keeps running while Kafka refuses"
    );
    assert!(
        confirmed(&p).await < u64::from(big),
        "the slot did not move past the refused change"
    );
    let refusals = std::fs::read_to_string(&log)
        .unwrap()
        .matches("kafka refused a change")
        .count();
    assert!(refusals >= 2, "cdc tried again: {refusals} refusals logged");

    set_topic_config(&p, "1048588").await;
    p.wait_until_caught_up().await;
    p.assert_no_change_filled_in_late().await;
    p.assert_exact().await;
    let events = p.events().await;
    assert!(
        events
            .iter()
            .any(|(_, _, e)| e.after.as_ref().is_some_and(|r| r.id == 9001)),
        "the refused change reached the topic once the setting was fixed"
    );
    p.stop(cdc).await;
}
