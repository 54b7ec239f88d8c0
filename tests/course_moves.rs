//! Course moves keep per-course order: cdc splits an UPDATE that moves a review to another
//! course into a delete keyed by the old course and a create keyed by the new one (headers
//! `reviewflow.newkey` / `reviewflow.oldkey`), at consecutive positions that a re-send after
//! a crash repeats; and under a load of moves between courses of different partitions, a
//! reader of course_stats never sees a negative figure, and the figures end exact.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::moves::mover;
use common::pipeline::{decode_long, Pipeline};
use common::watch::NegativeWatch;
use rdkafka::message::{Headers, Message};
use reviewflow::avro::{decode_change, wire};
use reviewflow::contract::change::{ChangeEvent, Op, NEW_KEY_HEADER, OLD_KEY_HEADER};
use reviewflow::contract::lsn::SourcePosition;
use reviewflow::registry::Registry;

/// A record of the changes topic as a consumer sees it: partition, key (course), the
/// move headers (name, course; None for a null value), and the event.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    partition: i32,
    key: Option<i64>,
    headers: Vec<(String, Option<i64>)>,
    event: ChangeEvent,
}

/// What a record is checked by: op, review id, key, position, headers.
type Shape = (Op, i64, Option<i64>, i64, Vec<(String, Option<i64>)>);

async fn records(p: &Pipeline) -> Vec<Record> {
    let registry = Registry::connect(&p.settings).await.unwrap();
    let mut out = Vec::new();
    for m in common::consume_rows(&p.settings, &p.topic).await {
        let (id, body) = wire::unframe(m.payload().unwrap()).unwrap();
        let event = decode_change(&registry.schema(id).await.unwrap(), body).unwrap();
        let course = |bytes: &[u8]| decode_long(wire::unframe(bytes).unwrap().1);
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(course)))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            partition: m.partition(),
            key: m.key().map(course),
            headers,
            event,
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_is_a_delete_under_the_old_course_then_a_create_under_the_new() {
    let p = Pipeline::new("moves_split").await;
    let db = p.db().await;
    let cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    p.stop(cdc).await;

    // One transaction: the moves first, then enough rows that what was handed to Kafka
    // before the crash below has surely been sent, while the slot cannot have passed it.
    db.batch_execute(
        "BEGIN;
         INSERT INTO reviews (id, course_id, user_id, rating) VALUES (1, 1, 1, 4.0), (2, 2, 2, 3.0);
         UPDATE reviews SET rating = 2.5 WHERE id = 2;
         UPDATE reviews SET course_id = 3, rating = 5.0 WHERE id = 1;
         UPDATE reviews SET id = 20, course_id = 4 WHERE id = 2;
         INSERT INTO reviews (id, course_id, user_id, rating) VALUES (5, 1, 5, 1.0);
         INSERT INTO reviews (id, course_id, user_id, rating)
             SELECT g, 9, g, 2.0 FROM generate_series(100, 3099) g;
         COMMIT",
    )
    .await
    .unwrap();
    // The reader dies mid-transaction: the next one sends it again, whole.
    let crashing = p.spawn_cdc(Some(&reviewflow::failpoint::CDC_AFTER_PRODUCE.at(2500)));
    let status = tokio::task::spawn_blocking(move || crashing.take().wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "the failpoint killed the reader");
    let cdc = p.spawn_cdc(None);
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;
    p.stop(cdc).await;

    // A re-send is the same record: same partition, key, headers and event.
    let all = records(&p).await;
    let mut unique: BTreeMap<SourcePosition, Record> = BTreeMap::new();
    let mut copies = 0;
    for r in &all {
        match unique.get(&r.event.source.id()) {
            Some(first) => {
                assert_eq!(first, r, "a re-sent change is the change as first sent");
                copies += 1;
            }
            None => {
                unique.insert(r.event.source.id(), r.clone());
            }
        }
    }
    assert!(
        copies >= 100,
        "the crash re-sent the transaction ({copies} copies)"
    );
    assert_eq!(unique.len(), 8 + 3000, "each change once, a move as two");

    let txn: Vec<&Record> = unique.values().take(8).collect();
    let shape: Vec<Shape> = txn
        .iter()
        .map(|r| {
            let image = r.event.after.as_ref().or(r.event.before.as_ref()).unwrap();
            (
                r.event.op,
                image.id,
                r.key,
                r.event.source.position,
                r.headers.clone(),
            )
        })
        .collect();
    let moved = |name: &str, course| vec![(name.to_string(), Some(course))];
    assert_eq!(
        shape,
        vec![
            (Op::Create, 1, Some(1), 0, vec![]),
            (Op::Create, 2, Some(2), 1, vec![]),
            (Op::Update, 2, Some(2), 2, vec![]),
            // The move of review 1 from course 1 to 3: its two halves.
            (Op::Delete, 1, Some(1), 3, moved(NEW_KEY_HEADER, 3)),
            (Op::Create, 1, Some(3), 4, moved(OLD_KEY_HEADER, 1)),
            // A new id as well: one review ends, another begins; no move headers.
            (Op::Delete, 2, Some(2), 5, vec![]),
            (Op::Create, 20, Some(4), 6, vec![]),
            (Op::Create, 5, Some(1), 7, vec![]),
        ]
    );
    assert!(
        txn.iter()
            .all(|r| r.event.source.lsn == txn[0].event.source.lsn),
        "one transaction, one commit LSN"
    );
    // The delete is the old row, whole; the create the new one, with no before image.
    let (delete, create) = (&txn[3].event, &txn[4].event);
    assert!(delete.after.is_none() && create.before.is_none());
    let (old, new) = (
        delete.before.as_ref().unwrap(),
        create.after.as_ref().unwrap(),
    );
    assert_eq!(
        (
            old.course_id,
            old.rating.to_string(),
            new.course_id,
            new.rating.to_string()
        ),
        (Some(1), "4.0".to_string(), Some(3), "5.0".to_string())
    );
    // Every course lives in one partition, a move's halves included.
    let mut course_partition = BTreeMap::new();
    for r in &all {
        let course = r.key.unwrap();
        assert_eq!(
            *course_partition.entry(course).or_insert(r.partition),
            r.partition,
            "course {course}"
        );
    }
}

/// Courses that land in pairwise different partitions, found by writing one review to
/// each of a few courses and reading where cdc put them.
async fn courses_by_partition(p: &Pipeline) -> BTreeMap<i32, Vec<i64>> {
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for r in records(p).await {
        if let Some(course) = r.key {
            let courses = by_partition.entry(r.partition).or_default();
            if !courses.contains(&course) {
                courses.push(course);
            }
        }
    }
    by_partition
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_moved_between_partitions_under_load_never_make_a_figure_negative() {
    let p = Pipeline::new("moves_load").await;
    let _cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    let db = p.db().await;
    db.batch_execute(
        "INSERT INTO reviews (id, course_id, user_id, rating)
         SELECT c, c, c, 3.0 FROM generate_series(1, 12) c",
    )
    .await
    .unwrap();
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;
    let by_partition = courses_by_partition(&p).await;
    assert!(
        by_partition.len() >= 2,
        "the courses span partitions: {by_partition:?}"
    );
    // Two courses of each partition, so moves go both within and across partitions.
    let courses: Vec<i64> = by_partition
        .values()
        .flat_map(|c| c.iter().take(2))
        .copied()
        .collect();

    let watch = NegativeWatch::start(&p.url, Duration::from_millis(3));
    // The stats worker reads in small batches, so partitions interleave finely.
    let small = [("REVIEWFLOW_BATCH_RECORDS", "20")];
    let _fraud = p.spawn("fraud", None, &[]);
    let _verdicts = p.spawn("verdicts", None, &[]);
    let _stats = p.spawn("stats", None, &small);
    let (a, b) = tokio::join!(
        mover(&p, 0x00c0_ffee, 1000..1600, courses.clone()),
        mover(&p, 0x0bad_cafe, 5000..5600, courses.clone()),
    );
    let ((), ()) = (a, b);
    p.wait_until_caught_up().await;
    let seen = watch.finish().await;

    seen.assert_often_and_never_negative();
    p.assert_exact().await;

    // The moves did cross partitions: each delete half's create is in another partition.
    let all = records(&p).await;
    let partition_of: HashMap<SourcePosition, i32> = all
        .iter()
        .map(|r| (r.event.source.id(), r.partition))
        .collect();
    let crossing = all
        .iter()
        .filter(|r| r.headers.iter().any(|(h, _)| h == NEW_KEY_HEADER))
        .filter(|r| {
            let s = r.event.source.id();
            let create = SourcePosition::new(s.lsn, s.position + 1);
            partition_of.get(&create).is_some_and(|p| *p != r.partition)
        })
        .count();
    assert!(crossing > 50, "moves crossed partitions ({crossing})");
    // Only the ids that changed were deleted: a move's delete half records no deletion,
    // an id change's does (verify, above, finds each of those seen).
    let (moved_away, live): (i64, i64) = {
        let r = db
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE EXISTS
                     (SELECT FROM reviews r WHERE r.id = d.review_id))
                 FROM review_deletions d",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(live, 0, "a move records no deletion of the review");
    assert!(
        moved_away > 0,
        "ids changed with their course, and their deletes are recorded"
    );
}
