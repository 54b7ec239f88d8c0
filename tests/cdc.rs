//! The CDC reader against the real PostgreSQL and Kafka: what the table went through is what
//! reviews.changes says, across the snapshot boundary, crashes and schema changes.

mod common;

use common::pipeline::Pipeline;

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::time::Duration;

use rdkafka::Message;
use reviewflow::avro::wire;
use reviewflow::contract::change::{ChangeEvent, Op};
use reviewflow::contract::image::ReviewImage;
use reviewflow::contract::lsn::SourcePosition;
use reviewflow::registry::Registry;

/// course_id, user_id, rating, title, content, created_at (µs): what a row is compared by.
type RowFigures = (
    Option<i64>,
    Option<i64>,
    String,
    Option<String>,
    Option<String>,
    i64,
);

/// The table as the events describe it: replaying them from nothing.
fn replay(events: &[(i32, Option<i64>, ChangeEvent)]) -> BTreeMap<i64, ReviewImage> {
    let mut ordered: Vec<&ChangeEvent> = Vec::new();
    let mut seen = HashSet::new();
    let mut all: Vec<&ChangeEvent> = events.iter().map(|(_, _, e)| e).collect();
    all.sort_by_key(|e| e.source.id());
    for e in all {
        if seen.insert(e.source.id()) {
            ordered.push(e);
        }
    }
    let mut table = BTreeMap::new();
    for e in ordered {
        match e.op {
            Op::Create | Op::Read | Op::Update => {
                let row = e.after.clone().unwrap();
                table.insert(row.id, row);
            }
            Op::Delete => {
                table.remove(&e.before.as_ref().unwrap().id);
            }
            Op::Truncate => table.clear(),
            Op::SnapshotEnd => {}
        }
    }
    table
}

async fn table(db: &tokio_postgres::Client) -> BTreeMap<i64, RowFigures> {
    db.query("SELECT id, course_id, user_id, rating::text, title, content, (extract(epoch FROM created_at) * 1000000)::bigint FROM reviews", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6))))
        .collect()
}

fn as_table(rows: &BTreeMap<i64, ReviewImage>) -> BTreeMap<i64, RowFigures> {
    rows.iter()
        .map(|(id, r)| {
            (
                *id,
                (
                    r.course_id,
                    r.user_id,
                    r.rating.to_string(),
                    r.title.clone(),
                    r.content.clone(),
                    r.created_at.value().unwrap().timestamp_micros(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_updates_deletes_and_truncates_round_trip() {
    let p = Pipeline::new("cdc_roundtrip").await;
    let db = p.db().await;
    db.batch_execute(
        "INSERT INTO reviews (id, course_id, user_id, rating, title, content) VALUES
           (1, 100, 7, 4.5, 'before the slot', 'snapshot me'), (2, 200, 8, 1.0, NULL, NULL)",
    )
    .await
    .unwrap();
    let cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;

    db.batch_execute("INSERT INTO reviews (id, course_id, user_id, rating, title) VALUES (3, 100, 9, 3.0, 'new')").await.unwrap();
    db.batch_execute("UPDATE reviews SET rating = 2.5, title = 'edited' WHERE id = 3")
        .await
        .unwrap();
    db.batch_execute("BEGIN; DELETE FROM reviews WHERE id = 1; INSERT INTO reviews (id, course_id, user_id, rating) VALUES (4, 300, 1, 5.0); COMMIT").await.unwrap();
    db.batch_execute("TRUNCATE reviews").await.unwrap();
    db.batch_execute(
        "INSERT INTO reviews (id, course_id, user_id, rating) VALUES (5, 100, 2, 0.5)",
    )
    .await
    .unwrap();
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;
    p.stop(cdc).await;

    let events = p.marked_events().await;
    // A truncate, and a snapshot's end, is in every partition; count it once.
    let mut by_id: Vec<&(i32, Option<i64>, ChangeEvent)> = events
        .iter()
        .filter(|(partition, _, e)| {
            !matches!(e.op, Op::Truncate | Op::SnapshotEnd) || *partition == 0
        })
        .collect();
    by_id.sort_by_key(|(_, _, e)| e.source.id());
    let ops: Vec<(Op, Option<i64>)> = by_id
        .iter()
        .map(|(_, _, e)| (e.op, e.after.as_ref().or(e.before.as_ref()).map(|r| r.id)))
        .collect();
    assert_eq!(
        ops,
        vec![
            // The snapshot opens with a TRUNCATE (voiding whatever an attempt that died left)
            // and closes with its end.
            (Op::Truncate, None),
            (Op::Read, Some(1)),
            (Op::Read, Some(2)),
            (Op::SnapshotEnd, None),
            (Op::Create, Some(3)),
            (Op::Update, Some(3)),
            (Op::Delete, Some(1)),
            (Op::Create, Some(4)),
            (Op::Truncate, None),
            (Op::Create, Some(5)),
        ]
    );
    let partitions: HashSet<i32> = events
        .iter()
        .filter(|(_, _, e)| e.op == Op::Truncate)
        .map(|(p, _, _)| *p)
        .collect();
    assert_eq!(partitions.len(), 3, "a truncate reaches every partition");
    let ends: HashSet<i32> = events
        .iter()
        .filter(|(_, _, e)| e.op == Op::SnapshotEnd)
        .map(|(p, _, _)| *p)
        .collect();
    assert_eq!(ends.len(), 3, "the snapshot's end reaches every partition");

    // Keys are the course ids, and a course lives in one partition.
    let mut course_partition = BTreeMap::new();
    for (partition, key, e) in &events {
        if let Some(course) = e.course_id() {
            assert_eq!(*key, Some(course));
            assert_eq!(
                *course_partition.entry(course).or_insert(*partition),
                *partition,
                "course {course}"
            );
        }
    }

    let update = &by_id.iter().find(|(_, _, e)| e.op == Op::Update).unwrap().2;
    let (before, after) = (
        update.before.as_ref().unwrap(),
        update.after.as_ref().unwrap(),
    );
    assert_eq!(
        (before.rating.to_string(), before.title.as_deref()),
        ("3.0".into(), Some("new"))
    );
    assert_eq!(
        (after.rating.to_string(), after.title.as_deref()),
        ("2.5".into(), Some("edited"))
    );
    let delete = &by_id.iter().find(|(_, _, e)| e.op == Op::Delete).unwrap().2;
    assert_eq!(
        delete.before.as_ref().unwrap().content.as_deref(),
        Some("snapshot me"),
        "the old row is whole"
    );

    // The snapshot's records carry the consistent point: the TRUNCATE first, then the rows,
    // then the end at -1. Streamed changes carry their commit LSN (from the consistent point
    // on), with positions counting up from 0 inside a transaction.
    let snapshot_lsn = by_id[0].2.source.lsn;
    assert!(by_id[..4].iter().all(|(_, _, e)| e.source.snapshot
        && e.source.lsn == snapshot_lsn
        && e.source.txid.is_none()));
    let positions: Vec<i64> = by_id[..4]
        .iter()
        .map(|(_, _, e)| e.source.position)
        .collect();
    assert_eq!(positions, vec![-4, -3, -2, -1]);
    let streamed: Vec<&ChangeEvent> = by_id[4..].iter().map(|(_, _, e)| e).collect();
    assert!(streamed
        .iter()
        .all(|e| !e.source.snapshot && e.source.lsn > snapshot_lsn && e.source.txid.is_some()));
    let (del, ins) = (streamed[2], streamed[3]);
    assert_eq!(
        del.source.lsn, ins.source.lsn,
        "one transaction, one commit LSN"
    );
    assert_eq!((del.source.position, ins.source.position), (0, 1));
    assert!(streamed
        .windows(2)
        .all(|w| w[0].source.id() < w[1].source.id()));

    assert_eq!(as_table(&replay(&events)), table(&db).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_stream_meet_with_every_row_exactly_once_under_concurrent_writes() {
    let p = Pipeline::new("cdc_boundary").await;
    let db = p.db().await;
    db.batch_execute(
        "INSERT INTO reviews (course_id, user_id, rating, content)
         SELECT 1 + g % 50, g, 0.5 + (g % 10) / 2.0, repeat('x', g % 300) FROM generate_series(1, 20000) g",
    )
    .await
    .unwrap();
    let writer = {
        let url = p.url.clone();
        tokio::spawn(async move {
            let db = reviewflow::db::connect(&url).await.unwrap();
            for i in 0..400 {
                db.batch_execute(&format!(
                    "INSERT INTO reviews (course_id, user_id, rating) VALUES ({c}, {i} + 1, 4.0);
                     UPDATE reviews SET rating = 1.5 WHERE id = {u};
                     DELETE FROM reviews WHERE id = {d};",
                    c = 1 + i % 50,
                    u = 1 + (i * 37) % 20000,
                    d = 20000 - i
                ))
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cdc = p.spawn_cdc(None);
    writer.await.unwrap();
    common::wait_until_slot_exists(&p.url, &p.slot()).await;
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;
    p.stop(cdc).await;

    let events = p.events().await;
    let ids: Vec<SourcePosition> = events.iter().map(|(_, _, e)| e.source.id()).collect();
    assert_eq!(
        ids.len(),
        ids.iter().collect::<HashSet<_>>().len(),
        "no event twice in a clean run"
    );
    assert!(
        events.iter().any(|(_, _, e)| e.op == Op::Read)
            && events.iter().any(|(_, _, e)| e.op != Op::Read)
    );
    assert_eq!(
        as_table(&replay(&events)),
        table(&db).await,
        "the events rebuild the table exactly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_acknowledgement_and_confirm_loses_nothing_and_resends_known_positions() {
    let p = Pipeline::new("cdc_crash").await;
    let db = p.db().await;
    db.batch_execute("INSERT INTO reviews (course_id, user_id, rating) SELECT g % 7 + 1, g, 3.5 FROM generate_series(1, 50) g")
        .await
        .unwrap();
    // First run: snapshot, stream, then abort once Kafka acknowledged events the slot has not
    // been told about (the second status update; the first is sent at start).
    let crashing = p.spawn_cdc(Some(&reviewflow::failpoint::CDC_BEFORE_STATUS.at(2)));
    common::wait_until_slot_exists(&p.url, &p.slot()).await;
    for i in 0..60 {
        db.batch_execute(&format!(
            "INSERT INTO reviews (course_id, user_id, rating) VALUES ({}, {i} + 1, 2.0)",
            i % 7 + 1
        ))
        .await
        .unwrap();
    }
    let status = tokio::task::spawn_blocking(move || {
        let mut c = crashing.take();
        c.wait()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(!status.success(), "the failpoint aborted the reader");

    // Changes made while it is down wait in the slot.
    db.batch_execute(
        "UPDATE reviews SET rating = 5.0 WHERE id % 3 = 0; DELETE FROM reviews WHERE id % 10 = 0",
    )
    .await
    .unwrap();
    let cdc = p.spawn_cdc(None);
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;
    // And a hard kill at an arbitrary moment of a busy stream.
    let writer = {
        let url = p.url.clone();
        tokio::spawn(async move {
            let db = reviewflow::db::connect(&url).await.unwrap();
            for i in 0..200 {
                db.batch_execute(&format!(
                    "UPDATE reviews SET rating = {}.5 WHERE id = {}",
                    i % 5,
                    1 + i % 100
                ))
                .await
                .unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(cdc); // SIGKILL
    writer.await.unwrap();
    let cdc = p.spawn_cdc(None);
    // The slot confirmed everything before this cdc started: wait for it to stream first, so
    // the SIGTERM below meets a running stage, not a process still starting.
    common::wait_until_slot_active(&p.url, &p.slot()).await;
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;
    p.stop(cdc).await;

    let events = p.events().await;
    let mut first_seen: BTreeMap<SourcePosition, &ChangeEvent> = BTreeMap::new();
    let mut duplicates = 0;
    for (_, _, e) in &events {
        if let Some(earlier) = first_seen.insert(e.source.id(), e) {
            duplicates += 1;
            assert_eq!(earlier, e, "a re-sent event is the same event");
        }
    }
    assert!(
        duplicates > 0,
        "the crash after acknowledgement, before confirm, makes the restart re-send"
    );
    assert_eq!(
        as_table(&replay(&events)),
        table(&db).await,
        "nothing lost across the crashes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_column_is_a_new_schema_version_and_an_incompatible_change_stops_the_reader() {
    let mut p = Pipeline::new("cdc_schema").await;
    p.log = Some(std::env::temp_dir().join(format!("rf-cdc-schema-{}.log", common::unique())));
    let db = p.db().await;
    let cdc = p.spawn_cdc(None);
    // Not merely the slot: its creation waits for running transactions, and what commits
    // before its consistent point is snapshot, not streamed.
    p.wait_for_snapshot().await;
    db.batch_execute("INSERT INTO reviews (course_id, user_id, rating) VALUES (1, 1, 4.0)")
        .await
        .unwrap();
    db.batch_execute("ALTER TABLE reviews ADD COLUMN language integer")
        .await
        .unwrap();
    db.batch_execute(
        "INSERT INTO reviews (course_id, user_id, rating, language) VALUES (1, 2, 3.0, 33)",
    )
    .await
    .unwrap();
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;

    let records = common::consume_rows(&p.settings, &p.topic).await;
    let ids: Vec<u32> = records
        .iter()
        .map(|m| wire::unframe(m.payload().unwrap()).unwrap().0)
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1], "the added column is a new schema version");
    let registry = Registry::connect(&p.settings).await.unwrap();
    let newer = registry.schema(ids[1]).await.unwrap();
    assert!(newer.canonical_form().contains("language"));
    let events = p.events().await;
    assert_eq!(events.len(), 2);

    let before_change: tokio_postgres::types::PgLsn = db
        .query_one(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
            &[&p.slot()],
        )
        .await
        .unwrap()
        .get(0);
    // Avro does not promote an int to a string: data written before cannot be read after.
    db.batch_execute("ALTER TABLE reviews ALTER COLUMN language TYPE text")
        .await
        .unwrap();
    db.batch_execute(
        "INSERT INTO reviews (course_id, user_id, rating, language) VALUES (1, 3, 2.0, 'fr')",
    )
    .await
    .unwrap();
    let output = tokio::task::spawn_blocking(move || cdc.take().wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !output.status.success(),
        "the reader stops on an incompatible schema"
    );
    let stderr = std::fs::read_to_string(p.log.as_ref().unwrap()).unwrap();
    assert!(stderr.contains("not compatible"), "and says why: {stderr}");
    let after: tokio_postgres::types::PgLsn = db
        .query_one(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
            &[&p.slot()],
        )
        .await
        .unwrap()
        .get(0);
    let pending: i64 = db
        .query_one("SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, 'proto_version', '1', 'publication_names', 'reviewflow')", &[&p.slot()])
        .await
        .unwrap()
        .get(0);
    assert!(
        after >= before_change && pending > 0,
        "the incompatible change still waits in the slot"
    );
    assert_eq!(p.events().await.len(), 2, "nothing of it reached Kafka");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_outside_reviewflow_decodes_the_changes_with_the_registry() {
    let p = Pipeline::new("cdc_python").await;
    let db = p.db().await;
    db.batch_execute("INSERT INTO reviews (id, course_id, user_id, rating) VALUES (1, 10, 1, 4.5), (2, 20, 2, 0.5)").await.unwrap();
    let cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    db.batch_execute(
        "UPDATE reviews SET rating = 3.0 WHERE id = 1; DELETE FROM reviews WHERE id = 2",
    )
    .await
    .unwrap();
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;
    p.stop(cdc).await;

    // The api serves the registry that the reader registered its schemas in.
    let pool = reviewflow::db::pool(&p.url, 2).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry_url = format!("http://{}", listener.local_addr().unwrap());
    let state = reviewflow::api::AppState::new(pool, &p.url);
    tokio::spawn(async move { axum::serve(listener, reviewflow::api::router(state)).await });

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/read_changes.py");
    let (bootstrap, topic) = (p.settings.kafka.bootstrap_servers.clone(), p.topic.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args([&bootstrap, &topic, &registry_url])
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs (scripts/install-deps installs confluent-kafka)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut seen: Vec<(String, i64, String, i64, i64)> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| (l, serde_json::from_str::<serde_json::Value>(l).unwrap()))
        // The snapshot's marks (a TRUNCATE and an end on every partition) carry no row.
        .filter(|(_, v)| !matches!(v["op"].as_str(), Some("t" | "e")))
        .map(|(l, v)| {
            assert_eq!(
                v["key"],
                serde_json::json!(if v["id"] == 1 { 10 } else { 20 }),
                "{l}"
            );
            (
                v["op"].as_str().unwrap().into(),
                v["id"].as_i64().unwrap(),
                v["rating"].as_str().unwrap().into(),
                v["lsn"].as_i64().unwrap(),
                v["position"].as_i64().unwrap(),
            )
        })
        .collect();
    seen.sort_by_key(|s| (s.3, s.4));
    let ours: Vec<(String, i64, String, i64, i64)> = {
        let mut events = p.events().await;
        events.sort_by_key(|(_, _, e)| e.source.id());
        events
            .iter()
            .map(|(_, _, e)| {
                let row = e.after.as_ref().or(e.before.as_ref()).unwrap();
                (
                    e.op.code().to_string(),
                    row.id,
                    row.rating.to_string(),
                    e.source.lsn.0 as i64,
                    e.source.position,
                )
            })
            .collect()
    };
    assert_eq!(
        seen.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ["r", "r", "u", "d"]
    );
    assert_eq!(
        seen, ours,
        "Confluent's Python client reads what reviewflow wrote"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_lag_and_peeks_pending_changes_without_consuming_them() {
    let p = Pipeline::new("cdc_status").await;
    let db = p.db().await;
    let cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;
    p.stop(cdc).await;
    db.batch_execute(
        "INSERT INTO reviews (course_id, user_id, rating, title) VALUES (3, 4, 2.5, 'waiting')",
    )
    .await
    .unwrap();
    let slot = p.slot();
    let confirmed = || async {
        let sql = "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1";
        db.query_one(sql, &[&slot])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    let before = confirmed().await;
    for _ in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_reviewflow"))
            .args(["status", "--peek", "5", "--slot", &p.slot()])
            .env("DATABASE_URL", &p.url)
            .env(
                "KAFKA_BOOTSTRAP_SERVERS",
                &p.settings.kafka.bootstrap_servers,
            )
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("inactive") && text.contains("bytes of WAL held"),
            "{text}"
        );
        assert!(text.contains("oldest waiting change committed"), "{text}");
        assert!(
            text.contains(" c id=") && text.contains("title=waiting"),
            "the pending insert is shown: {text}"
        );
    }
    assert_eq!(confirmed().await, before, "peeking consumed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_follows_failovers_where_postgres_can_and_the_marker_names_its_server() {
    let p = Pipeline::new("cdc_failover_slot").await;
    let cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    p.stop(cdc).await;
    let db = p.db().await;
    let version: i32 = db
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    if version >= 170_000 {
        let failover: bool = db
            .query_one(
                "SELECT failover FROM pg_replication_slots WHERE slot_name = $1",
                &[&p.slot()],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            failover,
            "on PostgreSQL {version} the slot is a failover slot"
        );
    }
    let row = db
        .query_one(
            "SELECT system_identifier::text, (SELECT timeline_id FROM pg_control_checkpoint())
             FROM pg_control_system()",
            &[],
        )
        .await
        .unwrap();
    let marker = p.snapshot_marker().await;
    assert_eq!(
        marker.server,
        Some(reviewflow::source::failover::Server {
            system_id: row.get(0),
            timeline: row.get::<_, i32>(1) as u32,
        }),
        "the marker names the server the slot lives on"
    );
    db.execute("SELECT pg_drop_replication_slot($1)", &[&p.slot()])
        .await
        .unwrap();
}
