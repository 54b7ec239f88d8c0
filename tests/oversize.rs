//! A change too large for the topic against the real PostgreSQL and Kafka, when the topic's
//! max.message.bytes is lowered while cdc runs: the broker refuses the change once (the
//! session's limit is stale), and the next session reads the new limit and carries the
//! change's largest value as an oversize marker (docs/values.md), so cdc goes on by itself.
//! (A 3 MB text and one just over the producer's limit: tests/values.rs.)

mod common;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use common::pipeline::Pipeline;
use rdkafka::Message;
use reviewflow::avro::{oversize_marker, wire};
use reviewflow::registry::Registry;

/// Each insert's (id, content, oversize list).
async fn inserts(p: &Pipeline) -> Vec<(i64, Value, Vec<String>)> {
    let registry = Registry::connect(&p.settings).await.unwrap();
    let mut out = Vec::new();
    for m in common::consume_rows(&p.settings, &p.topic).await {
        let (id, body) = wire::unframe(m.payload().unwrap()).unwrap();
        let schema = registry.schema(id).await.unwrap();
        let value = GenericDatumReader::builder(&schema)
            .build()
            .unwrap()
            .read_value(&mut &body[..])
            .unwrap();
        let Value::Record(fields) = value else {
            panic!("an envelope is a record");
        };
        let get = |name: &str| fields.iter().find(|(n, _)| n == name).unwrap().1.clone();
        if get("op") != Value::String("c".into()) {
            continue;
        }
        let Value::Union(1, after) = get("after") else {
            panic!("an insert has an after image");
        };
        let Value::Record(row) = *after else {
            panic!("a row is a record");
        };
        let column = |name: &str| row.iter().find(|(n, _)| n == name).unwrap().1.clone();
        let Value::Union(1, review) = column("id") else {
            panic!("an id");
        };
        let Value::Long(review) = *review else {
            panic!("a long id");
        };
        let Value::Array(listed) = get("oversize") else {
            panic!("an oversize list");
        };
        let listed = listed
            .into_iter()
            .map(|v| match v {
                Value::String(s) => s,
                other => panic!("{other:?}"),
            })
            .collect();
        out.push((review, column("content"), listed));
    }
    out
}

fn text(s: &str) -> Value {
    Value::Union(1, Box::new(Value::String(s.into())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_limit_lowered_while_cdc_runs_is_met_by_the_next_session_with_markers() {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    let mut p = Pipeline::new("values_limit").await;
    let log = std::env::temp_dir().join(format!("rf-values-limit-{}.log", common::unique()));
    p.log = Some(log.clone());
    let db = p.db().await;
    let cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    // Hex digests barely compress: the broker sees about the size written.
    let insert = |id: i64| {
        format!(
            "INSERT INTO reviews (id, course_id, user_id, rating, content)
             SELECT {id}, 7, 7, 4.5, string_agg(md5(i::text), '') FROM generate_series(1, 3000) AS i"
        )
    };
    db.batch_execute(&insert(1)).await.unwrap();
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        reviewflow::kafka::client_config(&p.settings.kafka)
            .create()
            .unwrap();
    // AlterConfigs replaces what it does not name.
    let config = AlterConfig::new(ResourceSpecifier::Topic(&p.topic))
        .set("retention.ms", "-1")
        .set("max.message.bytes", "20000");
    for result in admin
        .alter_configs([&config], &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
    db.batch_execute(&insert(2)).await.unwrap();
    db.batch_execute("INSERT INTO reviews (id, course_id, user_id, rating) VALUES (3, 7, 7, 1.0)")
        .await
        .unwrap();
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;
    p.stop(cdc).await;

    let content: String = db
        .query_one(
            "SELECT string_agg(md5(i::text), '') FROM generate_series(1, 3000) AS i",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let contents = inserts(&p).await;
    let null = Value::Union(0, Box::new(Value::Null));
    assert_eq!(
        contents,
        [
            (1, text(&content), vec![]),
            (
                2,
                text(&oversize_marker(content.as_bytes())),
                vec!["after.content".to_string()]
            ),
            (3, null, vec![]),
        ],
        "the change the lowered limit refused is carried with a marker, once"
    );
    let output = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        output.matches("session failed").count(),
        1,
        "one refusal, then the next session fits the change: {output}"
    );
}
