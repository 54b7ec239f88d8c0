//! The logical replication client against the real PostgreSQL: a slot's exported snapshot
//! and its stream meet exactly at the consistent point, every kind of change decodes with
//! the old row REPLICA IDENTITY FULL promises, confirmed positions reach the slot, TOASTed
//! values behave as PostgreSQL 15 sends them, and keepalives keep an idle stream alive.

mod common;

use std::time::Duration;

use bytes::Bytes;
use reviewflow::contract::lsn::Lsn;
use reviewflow::source::pgoutput::{self, Begin, Commit, PgOutput, Relation, Value};
use reviewflow::source::replication::{
    pg_epoch_micros_to_unix_micros, ReplicationConnection, ReplicationMessage, ReplicationStream,
};
use reviewflow::source::slot::{self, SlotLifetime};
use tokio::time::{timeout_at, Instant};
use tokio_postgres::Client;

const PUBLICATION: &str = "reviewflow";

/// A fresh database `rf_test_<name>`, after dropping slots a crashed earlier run left in
/// it (PostgreSQL refuses to drop a database that still has slots).
async fn database(name: &str) -> String {
    let admin = reviewflow::db::connect(&common::settings().await.database_url)
        .await
        .expect("connect");
    admin
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE database = $1 AND NOT active",
            &[&format!("rf_test_{name}")],
        )
        .await
        .expect("drop leftover slots");
    common::fresh_database(name).await
}

fn slot_name(test: &str) -> String {
    format!("rf_test_{test}_{}", common::unique())
}

/// Drops the slot once its walsender has noticed the closed connection.
async fn drop_slot(db: &Client, slot: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let row = db
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .expect("pg_replication_slots");
        match row.map(|r| r.get::<_, bool>(0)) {
            None => return,
            Some(false) => {
                db.execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                    .await
                    .expect("drop slot");
                return;
            }
            Some(true) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Some(true) => panic!("slot {slot} still active after 15 s"),
        }
    }
}

/// The next pgoutput message, answering keepalives that ask for a reply on the way.
async fn next_change(stream: &mut ReplicationStream) -> PgOutput {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let message = timeout_at(deadline, stream.next())
            .await
            .expect("a change within 30 s")
            .expect("the stream works")
            .expect("the stream has not ended");
        match message {
            ReplicationMessage::XLogData { data, .. } => {
                return pgoutput::decode(data).expect("valid pgoutput")
            }
            ReplicationMessage::Keepalive {
                wal_end,
                reply_requested: true,
                ..
            } => stream
                .send_status(wal_end, Lsn::ZERO, Lsn::ZERO, false)
                .await
                .expect("status"),
            ReplicationMessage::Keepalive { .. } => {}
        }
    }
}

/// A transaction's messages. Relation messages are kept apart: pgoutput sends one before a
/// table's first change and again after any relcache invalidation of the table (DDL,
/// TRUNCATE, even autovacuum's statistics updates), so when one shows up is not fixed.
struct Transaction {
    begin: Begin,
    relations: Vec<Relation>,
    changes: Vec<PgOutput>,
    commit: Commit,
}

async fn next_transaction(stream: &mut ReplicationStream) -> Transaction {
    let begin = match next_change(stream).await {
        PgOutput::Begin(b) => b,
        other => panic!("expected Begin, got {other:?}"),
    };
    let mut relations = Vec::new();
    let mut changes = Vec::new();
    loop {
        match next_change(stream).await {
            PgOutput::Commit(commit) => {
                return Transaction {
                    begin,
                    relations,
                    changes,
                    commit,
                }
            }
            PgOutput::Begin(b) => panic!("Begin {b:?} inside a transaction"),
            PgOutput::Relation(r) => relations.push(r),
            change => changes.push(change),
        }
    }
}

fn text(v: &Value) -> &str {
    match v {
        Value::Text(b) => std::str::from_utf8(b).expect("UTF-8"),
        other => panic!("expected a text value, got {other:?}"),
    }
}

fn column(relation: &Relation, name: &str) -> usize {
    relation
        .columns
        .iter()
        .position(|c| c.name == name)
        .unwrap_or_else(|| panic!("column {name} in {relation:?}"))
}

fn text_of(b: &Bytes) -> &str {
    std::str::from_utf8(b).expect("UTF-8")
}

#[tokio::test]
async fn snapshot_and_stream_meet_and_every_change_decodes() {
    let url = database("replication").await;
    let db = reviewflow::db::connect(&url).await.expect("connect");
    let slot = slot_name("replication");
    let in_snapshot: i64 = db
        .query_one(
            "INSERT INTO reviews (course_id, user_id, rating) VALUES (1, 1, 3.0) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    // Connecting exercises SCRAM: the local stack authenticates 127.0.0.1 by password.
    let mut repl = ReplicationConnection::connect(&url)
        .await
        .expect("replication connection");
    let system = repl
        .simple_query("IDENTIFY_SYSTEM")
        .await
        .expect("identify");
    assert_eq!(system.len(), 1);
    assert_eq!(system[0][3].as_deref(), Some("rf_test_replication"));
    let err = repl
        .simple_query("SELECT * FROM no_such_table")
        .await
        .expect_err("an SQL error");
    assert!(
        matches!(&err, reviewflow::Error::Replication(m) if m.contains("42P01") && m.contains("no_such_table")),
        "{err}"
    );
    // A failed query leaves the session usable.
    assert_eq!(
        repl.simple_query("SELECT 1, NULL::text").await.unwrap(),
        vec![vec![Some("1".to_string()), None]]
    );

    let created = slot::create(
        &mut repl,
        &slot,
        SlotLifetime::Permanent { failover: false },
    )
    .await
    .expect("create slot");
    assert!(created.consistent_point > Lsn::ZERO);
    assert!(!created.snapshot_name.is_empty());

    // Committed after the consistent point: in the stream, not in the snapshot.
    let streamed: i64 = db
        .query_one(
            "INSERT INTO reviews (course_id, user_id, rating, title) \
             VALUES (2, 7, 4.5, 'Clear') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let reader = reviewflow::db::connect(&url).await.expect("connect");
    reader
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{}'",
            created.snapshot_name
        ))
        .await
        .expect("the exported snapshot is importable while the slot's connection is idle");
    let ids: Vec<i64> = reader
        .query("SELECT id FROM reviews ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![in_snapshot]);
    reader.batch_execute("COMMIT").await.unwrap();

    let mut stream = repl
        .start(&slot, created.consistent_point, PUBLICATION)
        .await
        .expect("start replication");
    db.execute(
        "UPDATE reviews SET rating = 2.5 WHERE id = $1",
        &[&streamed],
    )
    .await
    .unwrap();
    db.execute("DELETE FROM reviews WHERE id = $1", &[&streamed])
        .await
        .unwrap();
    db.batch_execute("TRUNCATE reviews").await.unwrap();

    let insert = next_transaction(&mut stream).await;
    // A session's first change of a table comes after the table's Relation.
    let ([relation], [PgOutput::Insert { relation_id, new }]) =
        (insert.relations.as_slice(), insert.changes.as_slice())
    else {
        panic!(
            "Relation then Insert, got {:?} {:?}",
            insert.relations, insert.changes
        );
    };
    assert_eq!(
        (relation.namespace.as_str(), relation.name.as_str()),
        ("public", "reviews")
    );
    assert_eq!(relation.replica_identity, b'f');
    // With REPLICA IDENTITY FULL, pgoutput flags every column as part of the key.
    assert!(relation.columns.iter().all(|c| c.key), "{relation:?}");
    assert_eq!(relation.columns[column(relation, "id")].type_oid, 20);
    assert_eq!(*relation_id, relation.id);
    let (id, rating, title, content, created_at) = (
        column(relation, "id"),
        column(relation, "rating"),
        column(relation, "title"),
        column(relation, "content"),
        column(relation, "created_at"),
    );
    assert_eq!(new.len(), relation.columns.len());
    assert_eq!(text(&new[id]), streamed.to_string());
    assert_eq!(text(&new[rating]), "4.5");
    assert_eq!(text(&new[title]), "Clear");
    assert_eq!(new[content], Value::Null);
    // The session's TimeZone=UTC reaches the decoder's output functions.
    assert!(
        text(&new[created_at]).ends_with("+00"),
        "{:?}",
        new[created_at]
    );
    assert!(insert.begin.final_lsn >= created.consistent_point);

    let update = next_transaction(&mut stream).await;
    let [PgOutput::Update {
        relation_id,
        old: Some(old),
        key_only: false,
        new,
    }] = update.changes.as_slice()
    else {
        panic!("an Update with the whole old row, got {:?}", update.changes);
    };
    assert_eq!(*relation_id, relation.id);
    assert_eq!(text(&old[rating]), "4.5");
    assert_eq!(text(&new[rating]), "2.5");
    assert_eq!(text(&old[id]), text(&new[id]));

    let delete = next_transaction(&mut stream).await;
    let [PgOutput::Delete {
        old,
        key_only: false,
        ..
    }] = delete.changes.as_slice()
    else {
        panic!("a Delete with the whole old row, got {:?}", delete.changes);
    };
    assert_eq!(text(&old[id]), streamed.to_string());
    assert_eq!(text(&old[rating]), "2.5");
    assert_eq!(text(&old[title]), "Clear");

    let truncate = next_transaction(&mut stream).await;
    // TRUNCATE gives the table a new file; PostgreSQL 15 sends the Relation again first.
    assert!(truncate.relations.iter().all(|r| r.id == relation.id));
    assert_eq!(
        truncate.changes,
        vec![PgOutput::Truncate {
            relation_ids: vec![relation.id],
            cascade: false,
            restart_identity: false,
        }]
    );

    let transactions = [&insert, &update, &delete, &truncate];
    for t in transactions {
        assert_eq!(t.begin.final_lsn, t.commit.commit_lsn);
        assert!(t.commit.end_lsn > t.commit.commit_lsn);
        let committed = pg_epoch_micros_to_unix_micros(t.commit.commit_time_micros);
        let now = chrono::Utc::now().timestamp_micros();
        assert!(
            (now - committed).abs() < 300_000_000,
            "commit time {committed}"
        );
    }
    for pair in transactions.windows(2) {
        assert!(pair[0].commit.commit_lsn < pair[1].commit.commit_lsn);
    }

    let confirmed = truncate.commit.end_lsn;
    stream
        .send_status(confirmed, confirmed, confirmed, false)
        .await
        .expect("status update");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let flushed: Option<tokio_postgres::types::PgLsn> = db
            .query_one(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap()
            .get(0);
        let flushed = flushed.map(Lsn::from);
        if flushed >= Some(confirmed) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "confirmed_flush_lsn {flushed:?} never reached {confirmed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    drop(stream);
    drop_slot(&db, &slot).await;
}

/// What PostgreSQL 15 sends for an out-of-line TOASTed value: the new row of an update that
/// does not touch it carries 'u' (unchanged, not sent), while REPLICA IDENTITY FULL makes
/// the server log the old row with its TOASTed values inlined, so 'O' carries the full text.
#[tokio::test]
async fn unchanged_toasted_values_come_from_the_old_row() {
    let url = database("replication_toast").await;
    let db = reviewflow::db::connect(&url).await.expect("connect");
    let slot = slot_name("toast");
    let mut repl = ReplicationConnection::connect(&url).await.expect("connect");
    let created = slot::create(
        &mut repl,
        &slot,
        SlotLifetime::Permanent { failover: false },
    )
    .await
    .expect("create slot");
    let mut stream = repl
        .start(&slot, created.consistent_point, PUBLICATION)
        .await
        .expect("start");

    // 100 KiB of md5 hex: too random for pglz, so it is stored out of line, uncompressed.
    let row = db
        .query_one(
            "INSERT INTO reviews (course_id, user_id, rating, content) \
             SELECT 3, 3, 4.0, string_agg(md5(i::text), '' ORDER BY i) \
             FROM generate_series(1, 3200) i \
             RETURNING id, content, pg_column_size(content)",
            &[],
        )
        .await
        .unwrap();
    let (id, content, stored): (i64, String, i32) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(content.len(), 102_400);
    assert!(
        stored > 8_192,
        "stored in {stored} bytes: it was compressed"
    );
    db.execute("UPDATE reviews SET rating = 1.0 WHERE id = $1", &[&id])
        .await
        .unwrap();
    db.execute("DELETE FROM reviews WHERE id = $1", &[&id])
        .await
        .unwrap();

    let insert = next_transaction(&mut stream).await;
    let ([relation], [PgOutput::Insert { new, .. }]) =
        (insert.relations.as_slice(), insert.changes.as_slice())
    else {
        panic!(
            "Relation then Insert, got {:?} {:?}",
            insert.relations, insert.changes
        );
    };
    let (rating, content_at) = (column(relation, "rating"), column(relation, "content"));
    assert_eq!(
        text(&new[content_at]),
        content,
        "an insert carries the full value"
    );

    let update = next_transaction(&mut stream).await;
    let [PgOutput::Update {
        old: Some(old),
        key_only: false,
        new,
        ..
    }] = update.changes.as_slice()
    else {
        panic!("an Update with the old row, got {:?}", update.changes);
    };
    assert_eq!(new[content_at], Value::UnchangedToast);
    assert_eq!(text(&new[rating]), "1.0");
    assert_eq!(text(&old[content_at]), content);
    assert_eq!(text(&old[rating]), "4.0");

    let delete = next_transaction(&mut stream).await;
    let [PgOutput::Delete { old, .. }] = delete.changes.as_slice() else {
        panic!("a Delete, got {:?}", delete.changes);
    };
    assert_eq!(text(&old[content_at]), content);

    drop(stream);
    drop_slot(&db, &slot).await;
}

/// With wal_sender_timeout at 2 s (set for this session only), the server asks for a reply
/// every second; answering them keeps the stream alive well past the timeout.
#[tokio::test]
async fn answered_keepalives_keep_an_idle_stream_alive() {
    let url = database("replication_keepalive").await;
    let db = reviewflow::db::connect(&url).await.expect("connect");
    let slot = slot_name("keepalive");
    let mut setup = ReplicationConnection::connect(&url).await.expect("connect");
    let created = slot::create(
        &mut setup,
        &slot,
        SlotLifetime::Permanent { failover: false },
    )
    .await
    .expect("create slot");
    // START_REPLICATION belongs to start(); sent as a query it is ended at once and the
    // session stays usable for queries.
    let err = setup
        .simple_query(&format!(
            "START_REPLICATION SLOT {slot} LOGICAL 0/0 \
             (proto_version '1', publication_names 'reviewflow')"
        ))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("start()"), "{err}");
    assert_eq!(
        setup.simple_query("IDENTIFY_SYSTEM").await.unwrap().len(),
        1
    );
    drop(setup);

    let stream_url = format!("{url}?options=-c%20wal_sender_timeout%3D2s");
    // The first session's walsender may take a moment to release the slot (55006).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        let mut repl = ReplicationConnection::connect(&stream_url)
            .await
            .expect("connect");
        let timeout = repl.simple_query("SHOW wal_sender_timeout").await.unwrap();
        assert_eq!(timeout, vec![vec![Some("2s".to_string())]]);
        match repl
            .start(&slot, created.consistent_point, PUBLICATION)
            .await
        {
            Ok(stream) => break stream,
            Err(e) if e.to_string().contains("55006") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("start: {e}"),
        }
    };
    let idle_until = Instant::now() + Duration::from_secs(6);
    let mut answered = 0;
    while let Ok(message) = timeout_at(idle_until, stream.next()).await {
        match message.expect("the server keeps the stream open") {
            Some(ReplicationMessage::Keepalive {
                wal_end,
                reply_requested: true,
                server_time_micros,
            }) => {
                assert!(server_time_micros > 0);
                stream
                    .send_status(wal_end, wal_end, wal_end, false)
                    .await
                    .expect("status");
                answered += 1;
            }
            Some(ReplicationMessage::Keepalive { .. }) => {}
            other => panic!("only keepalives while idle, got {other:?}"),
        }
    }
    assert!(answered >= 2, "answered {answered} pings in 6 s");

    // Asking for a reply is accepted and answered with a keepalive.
    stream
        .send_status(Lsn::ZERO, Lsn::ZERO, Lsn::ZERO, true)
        .await
        .expect("status");
    let answer = timeout_at(Instant::now() + Duration::from_secs(5), stream.next())
        .await
        .expect("an answer within 5 s")
        .expect("the stream works");
    assert!(
        matches!(answer, Some(ReplicationMessage::Keepalive { .. })),
        "{answer:?}"
    );

    db.execute(
        "INSERT INTO reviews (course_id, user_id, rating, title) VALUES (9, 9, 5.0, 'still here')",
        &[],
    )
    .await
    .unwrap();
    let insert = next_transaction(&mut stream).await;
    let Some(PgOutput::Insert { new, .. }) = insert.changes.last() else {
        panic!("an Insert, got {:?}", insert.changes);
    };
    assert!(new
        .iter()
        .any(|v| matches!(v, Value::Text(t) if text_of(t) == "still here")));

    drop(stream);
    drop_slot(&db, &slot).await;
}
