//! The fraud worker and the verdict sink against the real PostgreSQL and Kafka: every review
//! version judged once, the valid changelog right across verdict flips, exactly-once across
//! a kill -9 inside a transaction and across rebalances, poison records set aside.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::pipeline::Pipeline;
use rdkafka::message::Headers;
use rdkafka::Message;
use reviewflow::avro::{verdict, wire};
use reviewflow::change::{ChangeEvent, Op};
use reviewflow::image::ReviewImage;
use reviewflow::lsn::Lsn;
use reviewflow::registry::Registry;
use reviewflow::transform::score::{self, ScorerKind};

/// Every verdict on the verdicts topic (read_committed); its records of deletes are not
/// verdicts and are left out.
async fn verdicts(p: &Pipeline) -> Vec<verdict::Verdict> {
    let registry = Registry::connect(&p.settings).await.unwrap();
    let mut out = Vec::new();
    for m in common::consume_all(&p.settings.kafka, &p.output("verdicts")).await {
        let (id, body) = wire::unframe(m.payload().unwrap()).unwrap();
        let schema = registry.schema(id).await.unwrap();
        out.extend(verdict::decode(&schema, body).unwrap().judged());
    }
    out
}

/// The review versions the changes topic holds: (review id, commit LSN, position).
fn versions(events: &[(i32, Option<i64>, ChangeEvent)]) -> BTreeSet<(i64, Lsn, i64)> {
    events
        .iter()
        .filter_map(|(_, _, e)| {
            e.after
                .as_ref()
                .map(|r| (r.id, e.source.lsn, e.source.position))
        })
        .collect()
}

/// Asserts each version has exactly one verdict on the topic and one row in review_verdicts.
async fn assert_one_verdict_per_version(p: &Pipeline) {
    let expected = versions(&p.events().await);
    let mut seen: BTreeMap<(i64, Lsn, i64), usize> = BTreeMap::new();
    for v in verdicts(p).await {
        *seen
            .entry((v.review_id, v.version, v.position))
            .or_default() += 1;
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "versions judged twice: {doubled:?}");
    let judged: BTreeSet<_> = seen.into_keys().collect();
    let unjudged: Vec<_> = expected.difference(&judged).take(10).collect();
    let unknown: Vec<_> = judged.difference(&expected).take(10).collect();
    assert!(
        unjudged.is_empty() && unknown.is_empty(),
        "one verdict per review version on the topic; unjudged {unjudged:?}, unknown {unknown:?}"
    );
    // Two changes of a review in one transaction share a version: the sink keeps the last.
    let mut last: BTreeMap<(i64, Lsn), i64> = BTreeMap::new();
    for (id, lsn, pos) in &expected {
        let e = last.entry((*id, *lsn)).or_insert(*pos);
        *e = (*e).max(*pos);
    }
    let expected_rows: BTreeSet<_> = last.into_iter().map(|((i, l), p)| (i, l, p)).collect();
    common::eventually("the verdict sink caught up", 120, || async {
        verdict_rows(p).await >= expected_rows.len() as i64
    })
    .await;
    let rows: BTreeSet<(i64, Lsn, i64)> = p
        .db()
        .await
        .query(
            "SELECT review_id, version::text, position FROM review_verdicts",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get::<_, String>(1).parse().unwrap(), r.get(2)))
        .collect();
    let missing: Vec<_> = expected_rows.difference(&rows).take(10).collect();
    let extra: Vec<_> = rows.difference(&expected_rows).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "review_verdicts holds each version's final verdict; missing {missing:?}, extra {extra:?}"
    );
}

async fn verdict_rows(p: &Pipeline) -> i64 {
    p.db()
        .await
        .query_one("SELECT count(*) FROM review_verdicts", &[])
        .await
        .unwrap()
        .get(0)
}

async fn wait_for_verdicts(p: &Pipeline, n: i64) {
    common::eventually(&format!("{n} rows in review_verdicts"), 180, || async {
        verdict_rows(p).await >= n
    })
    .await;
    assert_eq!(verdict_rows(p).await, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_model_flags_about_five_percent_and_the_same_ones_every_time() {
    let p = Pipeline::new("fraud_seed").await;
    p.db()
        .await
        .batch_execute(
            "INSERT INTO reviews (id, course_id, user_id, rating, title, content, created_at)
             SELECT i, 1 + i % 97, 1 + i % 1013, (1 + i % 10) / 2.0, 'Review ' || i,
                    'What I thought of lesson ' || i, timestamptz '2026-01-01' + i * interval '1 minute'
             FROM generate_series(1, 10000) AS i",
        )
        .await
        .unwrap();
    let seed = [("REVIEWFLOW_SCORER", "seed")];
    let _cdc = p.spawn_cdc(None);
    let _fraud = p.spawn("fraud", None, &seed);
    let _sink = p.spawn("verdicts", None, &[]);
    wait_for_verdicts(&p, 10_000).await;

    let flagged: BTreeSet<i64> = p
        .db()
        .await
        .query(
            "SELECT review_id FROM review_verdicts WHERE verdict = 'fraud' AND model LIKE 'seed%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        (400..=600).contains(&flagged.len()),
        "about 5% of 10,000 flagged, got {}",
        flagged.len()
    );
    // The verdict is a pure function of the row: recomputed here, in another process, from
    // the rows as PostgreSQL holds them, it flags exactly the same reviews.
    let model = score::scorer(ScorerKind::Seed, 0.5).unwrap();
    let recomputed: BTreeSet<i64> = p
        .reviews()
        .await
        .iter()
        .filter(|r| model.judge(r).fraud)
        .map(|r| r.id)
        .collect();
    assert_eq!(flagged, recomputed);
    let on_fraud_topic: BTreeSet<i64> = {
        let registry = Registry::connect(&p.settings).await.unwrap();
        let mut ids = BTreeSet::new();
        for m in common::consume_all(&p.settings.kafka, &p.output("fraud")).await {
            let (id, body) = wire::unframe(m.payload().unwrap()).unwrap();
            let v = verdict::decode(&registry.schema(id).await.unwrap(), body)
                .unwrap()
                .judged()
                .expect("reviews.fraud carries verdicts only");
            ids.insert(v.review_id);
        }
        ids
    };
    assert_eq!(
        on_fraud_topic, flagged,
        "reviews.fraud carries the flagged versions"
    );
    let valid: BTreeSet<i64> = p
        .events_of(&p.output("valid"))
        .await
        .iter()
        .map(|(_, _, e)| e.after.as_ref().unwrap().id)
        .collect();
    assert_eq!(valid.len(), 10_000 - flagged.len());
    assert!(valid.is_disjoint(&flagged));
    assert_one_verdict_per_version(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_that_flips_the_verdict_leaves_or_enters_the_valid_set() {
    let p = Pipeline::new("fraud_flip").await;
    let _cdc = p.spawn_cdc(None);
    let _fraud = p.spawn("fraud", None, &[]);
    let _sink = p.spawn("verdicts", None, &[]);
    p.wait_for_snapshot().await;
    let db = p.db().await;
    let clean = "Clear explanations of ownership and borrowing, good exercises.";
    let spam = "Get it cheaper at http://cheap-courses.example.com, mail deals@example.com";
    for sql in [
        format!("INSERT INTO reviews (id, course_id, user_id, rating, content) VALUES (1, 5, 1, 4.5, '{clean}')"),
        format!("UPDATE reviews SET content = '{spam}' WHERE id = 1"),
        format!("UPDATE reviews SET content = '{clean}', rating = 4.0 WHERE id = 1"),
        format!("INSERT INTO reviews (id, course_id, user_id, rating, content) VALUES (2, 5, 2, 5.0, '{spam}')"),
        "UPDATE reviews SET rating = 1.0 WHERE id = 2".to_string(),
        "DELETE FROM reviews WHERE id = 1".to_string(),
        "DELETE FROM reviews WHERE id = 2".to_string(),
    ] {
        db.batch_execute(&sql).await.unwrap();
    }
    wait_for_verdicts(&p, 5).await;
    let valid = p.events_of(&p.output("valid")).await;
    let story: Vec<(Op, Option<f64>, Option<f64>)> = valid
        .iter()
        .map(|(_, key, e)| {
            assert_eq!(*key, Some(5), "keyed by course");
            let stars =
                |r: &Option<ReviewImage>| r.as_ref().map(|r| r.countable().unwrap().rating.stars());
            (e.op, stars(&e.before), stars(&e.after))
        })
        .collect();
    assert_eq!(
        story,
        vec![
            (Op::Create, None, Some(4.5)),
            // Turned into spam: it leaves the valid set.
            (Op::Delete, Some(4.5), None),
            // Cleaned up: it enters again, as edited.
            (Op::Create, None, Some(4.0)),
            (Op::Delete, Some(4.0), None),
        ],
        "review 2 was never valid, so nothing of it is on reviews.valid"
    );
    let partitions: BTreeSet<i32> = valid.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(partitions.len(), 1, "one course, one partition, in order");
    let reasons: Vec<String> = db
        .query_one(
            "SELECT reasons FROM review_verdicts WHERE review_id = 2 ORDER BY version LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        reasons.contains(&"link".to_string()) && reasons.contains(&"email".to_string()),
        "{reasons:?}"
    );
    assert_one_verdict_per_version(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_inside_a_transaction_every_input_is_judged_exactly_once() {
    let p = Pipeline::new("fraud_kill").await;
    let _cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    let db = p.db().await;
    for batch in 0..20 {
        db.batch_execute(&format!(
            "INSERT INTO reviews (course_id, user_id, rating, content)
             SELECT 1 + i % 13, i, 4.0, 'fine course ' || i FROM generate_series({}, {}) AS i;
             UPDATE reviews SET rating = 3.5 WHERE id % 7 = {}",
            batch * 50 + 1,
            batch * 50 + 50,
            batch % 7
        ))
        .await
        .unwrap();
    }
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;
    let small = [("REVIEWFLOW_BATCH_RECORDS", "100")];
    // Everything produced, nothing committed, when the process dies.
    let crashing = p.spawn(
        "fraud",
        Some(&reviewflow::failpoint::FRAUD_BEFORE_COMMIT.at(3)),
        &small,
    );
    let status = tokio::task::spawn_blocking(move || crashing.take().wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "the failpoint killed the worker");
    let _fraud = p.spawn("fraud", None, &small);
    // The sink dies between its table changes and its commit.
    let crashing = p.spawn(
        "verdicts",
        Some(&reviewflow::failpoint::VERDICTS_BEFORE_COMMIT.at(2)),
        &small,
    );
    let status = tokio::task::spawn_blocking(move || crashing.take().wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "the failpoint killed the sink");
    let _sink = p.spawn("verdicts", None, &small);
    let expected = versions(&p.events().await).len();
    common::eventually("every version judged on the topic", 180, || async {
        verdicts(&p).await.len() >= expected
    })
    .await;
    assert_one_verdict_per_version(&p).await;
    let valid = p.events_of(&p.output("valid")).await;
    let mut per_change: HashMap<reviewflow::lsn::SourcePosition, usize> = HashMap::new();
    for (_, _, e) in &valid {
        *per_change.entry(e.source.id()).or_default() += 1;
    }
    assert!(
        per_change.values().all(|n| *n == 1),
        "a change twice on reviews.valid"
    );
    assert_eq!(
        per_change.len(),
        p.events().await.len(),
        "all valid: every change passes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_the_partitions_and_a_rebalance_loses_and_doubles_nothing() {
    let mut p = Pipeline::new("fraud_group").await;
    let _cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    let small = [("REVIEWFLOW_BATCH_RECORDS", "50")];
    let logs = [1, 2]
        .map(|n| std::env::temp_dir().join(format!("rf-fraud-group-{n}-{}.log", common::unique())));
    p.log = Some(logs[0].clone());
    let first = p.spawn("fraud", None, &[small[0], ("REVIEWFLOW_INSTANCE", "one")]);
    let _sink = p.spawn("verdicts", None, &[]);
    let db = p.db().await;
    let write = |from: i64| {
        let db = &db;
        async move {
            for t in 0..10 {
                let start = from + t * 40;
                db.batch_execute(&format!(
                    "INSERT INTO reviews (course_id, user_id, rating, content)
                     SELECT i, i, 3.0, 'ok ' || i FROM generate_series({start}, {}) AS i",
                    start + 39
                ))
                .await
                .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    write(1).await;
    // A second instance joins mid-stream: the partitions are split between the two.
    p.log = Some(logs[1].clone());
    let second = p.spawn("fraud", None, &[small[0], ("REVIEWFLOW_INSTANCE", "two")]);
    write(1001).await;
    common::eventually("the second instance is assigned partitions", 60, || async {
        assignments(&logs[1]).iter().any(|a| !a.is_empty())
    })
    .await;
    write(2001).await;
    // The first leaves mid-stream: the second takes everything over.
    p.stop(first).await;
    write(3001).await;
    let expected = versions(&p.events().await).len();
    assert_eq!(expected, 1600);
    common::eventually("every version judged", 180, || async {
        verdicts(&p).await.len() >= expected
    })
    .await;
    assert_one_verdict_per_version(&p).await;
    let (first_had, second_had) = (assignments(&logs[0]), assignments(&logs[1]));
    assert!(
        first_had.iter().any(|a| !a.is_empty() && a.len() < 3),
        "the partitions were split while both ran: {first_had:?} / {second_had:?}"
    );
    assert_eq!(
        second_had.last().map(Vec::len),
        Some(3),
        "the second took over everything"
    );
    p.stop(second).await;
}

/// Every set of partitions a fraud instance was assigned, in order, from its log.
fn assignments(log: &std::path::Path) -> Vec<Vec<i32>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("fraud: partitions assigned"))
        .filter_map(|l| l.split("partitions=[").nth(1)?.split(']').next())
        .map(|list| {
            list.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dead_letter_topic_and_the_rest_flows() {
    let p = Pipeline::new("fraud_poison").await;
    let _cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    let registry = Registry::connect(&p.settings).await.unwrap();
    let string_id = registry
        .register("fraud-poison-test-value", &apache_avro::Schema::String)
        .await
        .unwrap();
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("not wire format", b"{\"op\": \"c\"}".to_vec()),
        ("unknown schema id", wire::frame(987_654_321, b"\x02c")),
        ("wrong schema", wire::frame(string_id, b"\x06abc")),
    ];
    {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = reviewflow::kafka::client_config(&p.settings.kafka)
            .create()
            .unwrap();
        for (_, value) in &poison {
            producer
                .send(
                    FutureRecord::<[u8], [u8]>::to(&p.topic)
                        .partition(0)
                        .payload(value),
                    std::time::Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    }
    let _fraud = p.spawn("fraud", None, &[]);
    let _sink = p.spawn("verdicts", None, &[]);
    p.db()
        .await
        .batch_execute(
            "INSERT INTO reviews (course_id, user_id, rating, content)
             SELECT i, i, 5.0, 'great ' || i FROM generate_series(1, 30) AS i",
        )
        .await
        .unwrap();
    wait_for_verdicts(&p, 30).await;
    let letters = common::consume_all(&p.settings.kafka, &p.output("dead-letters")).await;
    assert_eq!(letters.len(), poison.len());
    // Keyless dead letters spread over the partitions: match them by content.
    for (what, value, reason) in [
        (poison[0].0, &poison[0].1, "magic byte"),
        (poison[1].0, &poison[1].1, "987654321"),
        (poison[2].0, &poison[2].1, "not a change event"),
    ] {
        let m = letters
            .iter()
            .find(|m| m.payload() == Some(&value[..]))
            .unwrap_or_else(|| panic!("{what}: kept as it was"));
        let headers: HashMap<&str, String> = m
            .headers()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h.key,
                    String::from_utf8_lossy(h.value.unwrap()).into_owned(),
                )
            })
            .collect();
        assert_eq!(headers["reviewflow.dlq.stage"], "fraud");
        assert_eq!(headers["reviewflow.dlq.topic"], p.topic);
        assert_eq!(headers["reviewflow.dlq.partition"], "0");
        assert!(
            headers["reviewflow.dlq.reason"].contains(reason),
            "{what}: {headers:?}"
        );
    }
}
