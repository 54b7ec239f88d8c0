//! Partitions added while the pipeline runs (`kafka-topics --alter --partitions` on
//! reviews.changes and reviews.valid), mid-stream and across cdc crashes: cdc keeps writing
//! across the old count until the workers applied the old partitions, then records the new
//! epoch and writes across the new count. Nothing is lost or doubled, no figure goes
//! negative, and every change sits in the partition its transaction's epoch gives it, so a
//! re-sent change lands beside its first copy. A cdc that dies at the fence leaves its
//! targets in the marker, and the next one waits for those, not for what it re-sent.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::moves::mover;
use common::pipeline::Pipeline;
use common::watch::NegativeWatch;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use reviewflow::contract::lsn::SourcePosition;
use reviewflow::registry::Registry;
use reviewflow::source::epochs::{partition_of, Epochs};

async fn epochs(p: &Pipeline) -> Epochs {
    Epochs::recorded(p.snapshot_marker().await.epochs, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_mid_stream_and_across_cdc_crashes_lose_and_double_nothing() {
    let mut p = Pipeline::new("partitions_added").await;
    let log = std::env::temp_dir().join(format!("rf-partitions-added-{}.log", common::unique()));
    p.log = Some(log.clone());
    let cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    let before = epochs(&p).await;
    assert_eq!(before.list().len(), 1, "the snapshot starts one epoch");
    let old = before.current();
    let courses: Vec<i64> = (1..=16).collect();

    let watch = NegativeWatch::start(&p.url, Duration::from_millis(3));
    let small = [("REVIEWFLOW_BATCH_RECORDS", "20")];
    let _fraud = p.spawn("fraud", None, &[]);
    let _verdicts = p.spawn("verdicts", None, &[]);
    let stats = p.spawn("stats", None, &small);
    let new = old as usize + 2;

    let faults = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The stats worker away over the switch: it comes back to a backlog on the old
        // partitions, which it must apply before any change of a moved course on another
        // partition (without the fence, cdc would write those at once, and the watcher
        // would see the retractions overtake their additions).
        drop(stats);
        // Killed mid-stream: changes it had handed to Kafka are re-sent by the next one.
        // (Before the partitions are added, so that it cannot have planned the switch.)
        drop(cdc);
        p.add_partitions(new).await.unwrap();
        let db = p.db().await;
        let mut id: i64 = 90_000;
        let (away, mut stats) = (std::time::Instant::now(), None);
        // A cdc armed at `point`, run until it crashes there, while transactions keep
        // coming after the newest one in Kafka, whatever the writers are doing.
        let mut crash_at = async |point: String| {
            // Held as `Running`, so that a failure here kills it too.
            let mut crashing = p.spawn_cdc(Some(&point));
            let status = loop {
                if stats.is_none() && away.elapsed() > Duration::from_secs(8) {
                    stats = Some(p.spawn("stats", None, &small));
                }
                if let Some(status) = crashing.0.as_mut().unwrap().try_wait().unwrap() {
                    break status;
                }
                id += 1;
                db.execute(
                    "INSERT INTO reviews (id, course_id, user_id, rating) VALUES ($1, $2, $1, 4.0)",
                    &[&id, &(id % 16 + 1)],
                )
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            assert!(!status.success(), "cdc crashed at {point}");
        };
        // This one plans the switch at its start, reaches it, and dies once it recorded
        // the fence's targets, the stats worker still away.
        crash_at(reviewflow::failpoint::CDC_SWITCH_TARGETS.at(1)).await;
        let pending = p
            .snapshot_marker()
            .await
            .switch
            .expect("the pending switch is recorded");
        assert_eq!(pending.to, new as i32);
        assert_eq!(pending.changes_ends.len(), old as usize, "{pending:?}");
        assert!(
            pending.valid_ends.is_empty(),
            "the fraud group not yet checked: {pending:?}"
        );
        // The next resumes it with those targets, passes the fence once the stats worker is
        // back, and dies right after recording the new epoch.
        crash_at(reviewflow::failpoint::CDC_AFTER_SWITCH.at(1)).await;
        let cdc = p.spawn_cdc(None);
        // Away for 8 s in any case, writes going on.
        for _ in 0..40 {
            if away.elapsed() > Duration::from_secs(8) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (cdc, stats.unwrap_or_else(|| p.spawn("stats", None, &small)))
    };
    let ((_cdc, _stats), (), ()) = tokio::join!(
        faults,
        mover(&p, 0x5eed_0001, 1000..3000, courses.clone()),
        mover(&p, 0x5eed_0002, 5000..7000, courses.clone()),
    );
    // Written across the new count, surely.
    let db = p.db().await;
    db.batch_execute(
        "INSERT INTO reviews (id, course_id, user_id, rating)
         SELECT g, g % 16 + 1, g, 2.5 FROM generate_series(100000, 100199) g;
         UPDATE reviews SET course_id = course_id % 16 + 1 WHERE id BETWEEN 100000 AND 100099",
    )
    .await
    .unwrap();
    p.wait_until_caught_up().await;
    let seen = watch.finish().await;

    seen.assert_often_and_never_negative();
    p.assert_exact().await;

    let epochs = epochs(&p).await;
    assert_eq!(
        epochs
            .list()
            .iter()
            .map(|e| e.partitions)
            .collect::<Vec<_>>(),
        vec![old, new as i32],
        "one switch, to the new count: {epochs:?}"
    );
    let on_new = assert_placed_by_their_epochs(&p, &epochs).await;
    assert!(
        on_new > 100,
        "changes went to the added partitions ({on_new})"
    );
    // No stage stumbled over the new partitions (fraud's producer learns of them when it
    // first writes there): a failed session would have stalled the flow.
    let logged = std::fs::read_to_string(&log).unwrap();
    let taken = |what: &str| logged.lines().filter(|l| l.contains(what)).count();
    assert_eq!(
        taken("the fraud group must read the old partitions up to these offsets"),
        1,
        "the fence's targets are taken once, by the session that first reached the switch"
    );
    assert_eq!(
        taken("the stats worker must apply the old partitions up to these offsets"),
        1
    );
    assert_eq!(taken("resuming the recorded switch"), 1);
    assert_eq!(p.snapshot_marker().await.switch, None, "the switch is made");
    let failed: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("session failed"))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let _ = std::fs::remove_file(&log);
}

/// A switch planned while Kafka's tail holds re-sends of older transactions, as after
/// PostgreSQL crashed and set the slot back: the newer transactions sent before the crash,
/// which sit further back, are sent again with their old count, not across the new one,
/// where their copies would land in other partitions and count twice (the chaos run on three
/// brokers met this: every course of the added partitions doubled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_planned_over_a_tail_of_re_sends_sends_nothing_twice() {
    let p = Pipeline::new("partitions_resent").await;
    let cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    let old = epochs(&p).await.current();
    let _workers = ["fraud", "verdicts", "stats"].map(|s| p.spawn(s, None, &[]));
    p.wait_until_caught_up().await;
    // Where the slot stands now, kept aside, to set the slot back to later as a crash would.
    let db = p.db().await;
    let (slot, saved) = (p.slot(), format!("{}_saved", p.slot()));
    db.execute(
        "SELECT pg_copy_logical_replication_slot($1, $2)",
        &[&slot, &saved],
    )
    .await
    .unwrap();
    // Transactions of five reviews on each of 16 courses: each partition's part of one fills
    // more than the tail that cdc used to read for the newest commit (16 records).
    let on_every_course = |first: i64| {
        format!(
            "INSERT INTO reviews (id, course_id, user_id, rating)
             SELECT g, (g - {first}) % 16 + 1, g, 3.5 FROM generate_series({first}, {first} + 79) g"
        )
    };
    let mut sent = Vec::new();
    for first in [70_000, 70_100] {
        db.batch_execute(&on_every_course(first)).await.unwrap();
        p.wait_until_caught_up().await;
        let newest = p.events().await.iter().map(|e| e.2.source.lsn).max();
        sent.push(newest.unwrap());
    }
    let (first_lsn, second_lsn) = (sent[0], sent[1]);
    assert!(first_lsn < second_lsn, "two transactions sent");

    // The crash: cdc gone, the slot back where it was, and a session that began re-sending
    // the first transaction and died, so that every old partition ends with older copies.
    drop(cdc);
    common::eventually("the slot is released", 30, || async {
        db.execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
            .is_ok()
    })
    .await;
    db.execute(
        "SELECT pg_copy_logical_replication_slot($1, $2)",
        &[&saved, &slot],
    )
    .await
    .unwrap();
    db.execute("SELECT pg_drop_replication_slot($1)", &[&saved])
        .await
        .unwrap();
    let producer: FutureProducer = reviewflow::kafka::client_config(&p.settings.kafka)
        .create()
        .unwrap();
    let registry = Registry::connect(&p.settings).await.unwrap();
    let mut resent = 0;
    for m in common::consume_all(&p.settings.kafka, &p.topic).await {
        let (Some(key), Some(payload)) = (m.key(), m.payload()) else {
            continue;
        };
        let (id, body) = reviewflow::avro::wire::unframe(payload).unwrap();
        let schema = registry.schema(id).await.unwrap();
        let event = reviewflow::avro::decode_change(&schema, body).unwrap();
        if event.source.lsn != first_lsn {
            continue;
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&p.topic)
            .key(key)
            .payload(payload)
            .partition(m.partition());
        if let Some(headers) = m.headers() {
            record = record.headers(headers.clone());
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .unwrap();
        resent += 1;
    }
    assert_eq!(resent, 80, "the first transaction copied to the tails");
    let tails = reviewflow::source::failover::newest_commit(&p.settings.kafka, &p.topic, &registry)
        .await
        .unwrap();
    assert_eq!(
        tails,
        Some(first_lsn),
        "the tails hold only the older copies"
    );

    // Partitions added; the next cdc plans the switch at its start, over that tail, then
    // reads both transactions again from the slot set back.
    let new = old as usize + 2;
    p.add_partitions(new).await.unwrap();
    let _cdc = p.spawn_cdc(None);
    // Transactions until one comes after the point the switch was planned at and goes out
    // across the new count, then one more there.
    let mut first = 70_200;
    loop {
        db.batch_execute(&on_every_course(first)).await.unwrap();
        first += 100;
        p.wait_until_caught_up().await;
        if epochs(&p).await.list().len() == 2 {
            break;
        }
        assert!(first < 72_000, "no switch after 18 transactions");
    }
    db.batch_execute(&on_every_course(first)).await.unwrap();
    p.wait_until_caught_up().await;

    p.assert_exact().await;
    let epochs = epochs(&p).await;
    assert!(
        epochs.list()[1].from > second_lsn,
        "the new count begins after every transaction sent before: {epochs:?}, the second sent at {second_lsn}"
    );
    assert!(assert_placed_by_their_epochs(&p, &epochs).await > 0);
}

/// Every change sits in the partition its transaction's epoch gives its course, and each copy
/// of it (a re-send) beside the first. Returns how many changes are on added partitions.
async fn assert_placed_by_their_epochs(p: &Pipeline, epochs: &Epochs) -> usize {
    let old = epochs.list()[0].partitions;
    let registry = Registry::connect(&p.settings).await.unwrap();
    let key_id = registry
        .register(
            &reviewflow::registry::key_subject(&p.topic),
            &reviewflow::avro::envelope::KEY_SCHEMA,
        )
        .await
        .unwrap();
    let mut partitions_of: BTreeMap<SourcePosition, HashSet<i32>> = BTreeMap::new();
    let mut on_new = 0;
    for (partition, course, event) in p.events().await {
        let course = course.expect("every change here has a course");
        let key = reviewflow::avro::wire::frame(
            key_id,
            &reviewflow::avro::envelope::encode_key(course).unwrap(),
        );
        let count = epochs.at(event.source.lsn);
        assert_eq!(
            partition,
            partition_of(&key, count),
            "course {course} at {} in the epoch of {count}",
            event.source.lsn
        );
        on_new += usize::from(partition >= old);
        partitions_of
            .entry(event.source.id())
            .or_default()
            .insert(partition);
    }
    let spread: Vec<_> = partitions_of.iter().filter(|(_, p)| p.len() > 1).collect();
    assert!(
        spread.is_empty(),
        "copies of one change in several partitions: {spread:?}"
    );
    on_new
}

/// cdc places a course where librdkafka's `murmur2_random` (the partitioner it used before,
/// and the Java client's default) does, so changes written before the upgrade and re-sent
/// after it land beside their first copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_course_lands_where_kafkas_own_partitioner_puts_it() {
    let p = Pipeline::new("partitioner").await;
    let topic = p.output("partitioner");
    let producer: FutureProducer = reviewflow::kafka::client_config(&p.settings.kafka)
        .set("partitioner", "murmur2_random")
        .set("allow.auto.create.topics", "true")
        .create()
        .unwrap();
    let admin: AdminClient<DefaultClientContext> =
        reviewflow::kafka::client_config(&p.settings.kafka)
            .create()
            .unwrap();
    let created = admin
        .create_topics(
            [&rdkafka::admin::NewTopic::new(
                &topic,
                7,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    common::eventually("the topic appears", 30, || {
        common::topic_exists(&p.settings.kafka, &topic)
    })
    .await;
    for course in 0..200i64 {
        let key = reviewflow::avro::wire::frame(
            1 + course as u32 % 3,
            &reviewflow::avro::envelope::encode_key(course * 7919).unwrap(),
        );
        let delivered = producer
            .send(
                FutureRecord::<[u8], [u8]>::to(&topic)
                    .key(&key)
                    .payload(&key),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        assert_eq!(
            delivered.partition,
            partition_of(&key, 7),
            "course {course}"
        );
    }
}
