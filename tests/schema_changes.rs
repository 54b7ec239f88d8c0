//! Table changes the registry's BACKWARD compatibility allows keep cdc streaming, against the
//! real PostgreSQL and Kafka: the change after the ALTER is on the topic under a new schema
//! version, readable with it, and cdc never stopped or started over. (The one refused, an
//! integer column become text, stops cdc with the fix named: tests/cdc.rs.)

mod common;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use common::pipeline::Pipeline;
use rdkafka::Message;
use reviewflow::avro::wire;
use reviewflow::registry::Registry;

/// Each record's schema id and its after image's field `column` (None when the schema has
/// no such field).
async fn column_values(p: &Pipeline, column: &str) -> Vec<(u32, Option<Value>)> {
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
        let after = fields.into_iter().find(|(n, _)| n == "after").unwrap().1;
        let Value::Union(1, after) = after else {
            panic!("an insert has an after image");
        };
        let Value::Record(row) = *after else {
            panic!("a row is a record");
        };
        out.push((
            id,
            row.into_iter().find(|(n, _)| n == column).map(|(_, v)| v),
        ));
    }
    out
}

/// Runs cdc through `statements` (after the snapshot) and returns the values of `column`
/// on the topic, after checking that cdc streamed them in one session.
async fn stream_through(
    name: &str,
    statements: &[&str],
    column: &str,
) -> Vec<(u32, Option<Value>)> {
    let mut p = Pipeline::new(name).await;
    let log = std::env::temp_dir().join(format!("rf-{name}-{}.log", common::unique()));
    p.log = Some(log.clone());
    let db = p.db().await;
    let cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    for sql in statements {
        db.batch_execute(sql).await.unwrap();
    }
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;
    p.stop(cdc).await;
    let output = std::fs::read_to_string(&log).unwrap();
    for trouble in ["session failed", "not compatible", "ERROR"] {
        assert!(!output.contains(trouble), "cdc kept streaming: {output}");
    }
    column_values(&p, column).await
}

fn some(v: Value) -> Option<Value> {
    Some(Value::Union(1, Box::new(v)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_column_keeps_streaming() {
    let values = stream_through(
        "schema_drop",
        &[
            "ALTER TABLE reviews ADD COLUMN language text",
            "INSERT INTO reviews (course_id, user_id, rating, language) VALUES (1, 1, 4.0, 'fr')",
            "ALTER TABLE reviews DROP COLUMN language",
            "INSERT INTO reviews (course_id, user_id, rating) VALUES (1, 2, 3.0)",
        ],
        "language",
    )
    .await;
    assert_eq!(values.len(), 2, "{values:?}");
    assert_eq!(values[0].1, some(Value::String("fr".into())));
    assert_eq!(values[1].1, None, "the new version has no such field");
    assert_ne!(values[0].0, values[1].0, "a new schema version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widening_an_integer_column_to_bigint_keeps_streaming() {
    let values = stream_through(
        "schema_bigint",
        &[
            "ALTER TABLE reviews ADD COLUMN votes integer",
            "INSERT INTO reviews (course_id, user_id, rating, votes) VALUES (1, 1, 4.0, 2147483647)",
            "ALTER TABLE reviews ALTER COLUMN votes TYPE bigint",
            "INSERT INTO reviews (course_id, user_id, rating, votes) VALUES (1, 2, 3.0, 9223372036854775807)",
        ],
        "votes",
    )
    .await;
    assert_eq!(
        values.iter().map(|v| v.1.clone()).collect::<Vec<_>>(),
        [some(Value::Int(i32::MAX)), some(Value::Long(i64::MAX))]
    );
    assert_ne!(values[0].0, values[1].0, "a new schema version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn varchar_become_text_keeps_streaming() {
    let long = "x".repeat(5_000);
    let insert = format!(
        "INSERT INTO reviews (course_id, user_id, rating, label) VALUES (1, 2, 3.0, '{long}')"
    );
    let values = stream_through(
        "schema_text",
        &[
            "ALTER TABLE reviews ADD COLUMN label varchar(10)",
            "INSERT INTO reviews (course_id, user_id, rating, label) VALUES (1, 1, 4.0, 'short')",
            "ALTER TABLE reviews ALTER COLUMN label TYPE text",
            &insert,
        ],
        "label",
    )
    .await;
    assert_eq!(
        values.iter().map(|v| v.1.clone()).collect::<Vec<_>>(),
        [
            some(Value::String("short".into())),
            some(Value::String(long))
        ]
    );
    assert_ne!(
        values[0].0, values[1].0,
        "a new schema version: its pg_type says text"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_that_may_be_null_stops_cdc_with_the_fix_named() {
    let mut p = Pipeline::new("schema_null_id").await;
    let log = std::env::temp_dir().join(format!("rf-schema-null-id-{}.log", common::unique()));
    p.log = Some(log.clone());
    let db = p.db().await;
    let cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    db.batch_execute(
        "ALTER TABLE reviews DROP CONSTRAINT reviews_pkey;
         ALTER TABLE reviews ALTER COLUMN id DROP IDENTITY;
         ALTER TABLE reviews ALTER COLUMN id DROP NOT NULL;
         INSERT INTO reviews (id, course_id, user_id, rating) VALUES (NULL, 1, 1, 4.0)",
    )
    .await
    .unwrap();
    let status = tokio::task::spawn_blocking(move || cdc.take().wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "cdc stops at the change's Relation");
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(
        output.contains("column id of public.reviews may be NULL")
            && output.contains("ALTER COLUMN id SET NOT NULL"),
        "and names the fix: {output}"
    );
    assert!(
        common::consume_rows(&p.settings, &p.topic).await.is_empty(),
        "nothing of the change was produced"
    );

    // At start, too, before any change.
    p.log = Some(log.clone());
    let again = p.spawn_cdc(None);
    let status = tokio::task::spawn_blocking(move || again.take().wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success());
    db.batch_execute(
        "DELETE FROM reviews WHERE id IS NULL; ALTER TABLE reviews ALTER COLUMN id SET NOT NULL",
    )
    .await
    .unwrap();
    let fixed = p.spawn_cdc(None);
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;
    p.stop(fixed).await;
}
