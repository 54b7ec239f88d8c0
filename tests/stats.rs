//! The whole pipeline against the invariant of DESIGN.md: after a seeded random workload,
//! crashes, re-sent changes and days passing, course_stats equals the from-scratch truth.

mod common;

use chrono::NaiveDate;
use common::pipeline::Pipeline;
use reviewflow::contract::notify::{self, Touched};
use reviewflow::tools::verify;

/// Once the pipeline caught up, `verify` (as of the database's today) must report no
/// difference at all.
async fn assert_truth(p: &Pipeline) {
    p.wait_until_caught_up().await;
    let report = verify::verify(&p.db().await).await.unwrap();
    assert!(report.courses > 0, "the workload touched some course");
    assert!(
        report.differences.is_empty(),
        "{} differences from the truth; the first: {:?}",
        report.differences.len(),
        &report.differences[..report.differences.len().min(10)]
    );
}

/// One random statement against `reviews`: inserts (some backdated past the window), edits
/// of rating, created_at or course, edits that flip the fraud verdict, deletes.
fn statement(rng: &mut common::Rng, next_id: &mut i64) -> String {
    let id = 1 + rng.next((*next_id).max(1) as u64) as i64;
    let course = 1 + rng.next(12);
    let rating = (1 + rng.next(10)) as f64 / 2.0;
    let days_ago = [0, 1, 5, 45, 88, 89, 90, 91, 200][rng.next(9) as usize];
    match rng.next(10) {
        0..=3 => {
            *next_id += 1;
            format!(
                "INSERT INTO reviews (id, course_id, user_id, rating, content, created_at)
                 VALUES ({next_id}, {course}, {}, {rating}, 'honest review {next_id}',
                         now() - interval '{days_ago} days' - interval '{} minutes')",
                1 + rng.next(50),
                rng.next(600)
            )
        }
        4 => format!("UPDATE reviews SET rating = {rating} WHERE id = {id}"),
        5 => format!("UPDATE reviews SET created_at = now() - interval '{days_ago} days' WHERE id = {id}"),
        6 => format!("UPDATE reviews SET course_id = {course} WHERE id = {id}"),
        7 => format!("UPDATE reviews SET content = 'cheaper at http://spam.example.com/{id}' WHERE id = {id}"),
        8 => format!("UPDATE reviews SET content = 'honest again {id}' WHERE id = {id}"),
        _ => format!("DELETE FROM reviews WHERE id = {id}"),
    }
}

async fn run_workload(p: &Pipeline, seed: u64, statements: usize, next_id: &mut i64) {
    let mut rng = common::Rng(seed);
    let db = p.db().await;
    let mut done = 0;
    while done < statements {
        // A few statements per transaction, so changes share commit LSNs.
        let n = 1 + rng.next(4) as usize;
        let sql: Vec<String> = (0..n).map(|_| statement(&mut rng, next_id)).collect();
        db.batch_execute(&format!("BEGIN; {}; COMMIT", sql.join("; ")))
            .await
            .unwrap();
        done += n;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_workload_with_crashes_and_a_truncate_matches_the_truth() {
    let p = Pipeline::new("stats_random").await;
    let mut next_id = 0;
    run_workload(&p, 0x5eed_0001, 300, &mut next_id).await;
    // The reader dies after producing, before confirming: its changes come again.
    let crashing = p.spawn_cdc(Some(&reviewflow::failpoint::CDC_BEFORE_STATUS.at(3)));
    let _fraud = p.spawn("fraud", None, &[]);
    let _verdicts = p.spawn("verdicts", None, &[]);
    let _stats = p.spawn("stats", None, &[("REVIEWFLOW_BATCH_RECORDS", "100")]);
    let figures_topic = p.output("course-stats");
    let figures_slot = format!("{}_stats", p.slot());
    let _figures = p.spawn(
        "cdc",
        None,
        &[
            ("REVIEWFLOW_TABLE", "course_stats"),
            ("REVIEWFLOW_PUBLICATION", "reviewflow_stats"),
            ("REVIEWFLOW_SLOT", &figures_slot),
            ("REVIEWFLOW_CHANGES_TOPIC", &figures_topic),
            ("REVIEWFLOW_COMPACTED_TOPIC", "true"),
        ],
    );
    run_workload(&p, 0x5eed_0002, 300, &mut next_id).await;
    let status = tokio::task::spawn_blocking(move || crashing.take().wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "the failpoint killed the reader");
    let _cdc = p.spawn_cdc(None);
    run_workload(&p, 0x5eed_0003, 300, &mut next_id).await;
    assert_truth(&p).await;

    // TRUNCATE resets everything; what comes after counts from zero.
    p.db()
        .await
        .batch_execute("TRUNCATE reviews")
        .await
        .unwrap();
    run_workload(&p, 0x5eed_0004, 200, &mut next_id).await;
    assert_truth(&p).await;
    let recent: i64 = p
        .db()
        .await
        .query_one(
            "SELECT coalesce(sum(recent_review_count), 0)::bigint FROM course_stats",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(recent > 0, "the 90-day figures are exercised, not all zero");

    // Other consumers read the same figures from the compacted topic: the latest record per
    // course says what course_stats says, courses emptied by the TRUNCATE included.
    common::wait_until_slot_confirms_all(&p.url, &figures_slot).await;
    let table: std::collections::BTreeMap<i64, i64> = p
        .db()
        .await
        .query("SELECT course_id, review_count FROM course_stats", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(latest_counts(&p, &figures_topic).await, table);
}

/// course_id -> review_count of the latest record per course on the figures topic (a delete
/// removes the course).
async fn latest_counts(p: &Pipeline, topic: &str) -> std::collections::BTreeMap<i64, i64> {
    use apache_avro::types::Value;
    use rdkafka::Message;
    let registry = reviewflow::registry::Registry::connect(&p.settings)
        .await
        .unwrap();
    let mut latest = std::collections::BTreeMap::new();
    for m in common::consume_all(&p.settings.kafka, topic).await {
        let (id, body) = reviewflow::avro::wire::unframe(m.payload().unwrap()).unwrap();
        let schema = registry.schema(id).await.unwrap();
        let value = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .unwrap()
            .read_value(&mut &body[..])
            .unwrap();
        let Value::Record(fields) = value else {
            panic!("not a record")
        };
        let field = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let image = |v: Option<Value>| match v {
            Some(Value::Union(_, inner)) => match *inner {
                Value::Record(row) => Some(row),
                _ => None,
            },
            _ => None,
        };
        let long = |row: &[(String, Value)], name: &str| {
            row.iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| match v {
                    Value::Union(_, inner) => match **inner {
                        Value::Long(x) => Some(x),
                        _ => None,
                    },
                    _ => None,
                })
                .unwrap()
        };
        match (image(field("before")), image(field("after"))) {
            (_, Some(after)) => {
                latest.insert(long(&after, "course_id"), long(&after, "review_count"));
            }
            (Some(before), None) => {
                latest.remove(&long(&before, "course_id"));
            }
            (None, None) => panic!("a figures record without an image"),
        }
    }
    latest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_batch_the_stats_worker_counts_nothing_twice() {
    let p = Pipeline::new("stats_kill").await;
    let mut next_id = 0;
    let _cdc = p.spawn_cdc(None);
    let _fraud = p.spawn("fraud", None, &[]);
    let _verdicts = p.spawn("verdicts", None, &[]);
    run_workload(&p, 0x5eed_0005, 600, &mut next_id).await;
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;
    let small = [("REVIEWFLOW_BATCH_RECORDS", "40")];
    let crashing = p.spawn(
        "stats",
        Some(&reviewflow::failpoint::STATS_BEFORE_COMMIT.at(4)),
        &small,
    );
    let status = tokio::task::spawn_blocking(move || crashing.take().wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !status.success(),
        "the failpoint killed the worker mid-batch"
    );
    let _stats = p.spawn("stats", None, &small);
    assert_truth(&p).await;

    // `status` names every worker partition with its position; caught up, none is further
    // behind than a transaction's commit marker.
    let out = p.command("status").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for who in ["fraud", "verdicts", "stats"] {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with(who))
            .collect();
        assert!(!lines.is_empty(), "{who} in:\n{text}");
        for l in lines {
            let behind: i64 = l
                .split(", ")
                .nth(1)
                .and_then(|b| b.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no lag in {l:?}"));
            assert!(behind <= 1, "{l}");
        }
    }
}

/// The courses named on the `course_stats` channel since LISTEN (`*` as -1), and the client
/// that keeps the listening connection open.
type Heard = std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<i64>>>;

async fn listen(url: &str) -> (tokio_postgres::Client, Heard) {
    use futures_util::StreamExt;
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let heard = Heard::default();
    let into = heard.clone();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let mut heard = into.lock().unwrap();
                match notify::parse(n.payload()) {
                    Touched::All => {
                        heard.insert(-1);
                    }
                    Touched::Courses(courses) => heard.extend(courses),
                }
            }
        }
    });
    client.batch_execute("LISTEN course_stats").await.unwrap();
    (client, heard)
}

async fn assert_heard(heard: &Heard, courses: &[i64]) {
    common::eventually(
        "the stats commits notified the courses they changed",
        30,
        || async {
            let heard = heard.lock().unwrap();
            courses.iter().all(|c| heard.contains(c))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_90_day_figures_drop_reviews_as_days_pass_without_new_ones() {
    let p = Pipeline::new("stats_clock").await;
    p.db()
        .await
        .batch_execute(
            "INSERT INTO reviews (course_id, user_id, rating, content, created_at) VALUES
               (1, 1, 5.0, 'fine', now() - interval '80 days'),
               (1, 2, 3.0, 'fine', now() - interval '10 days'),
               (2, 3, 4.0, 'fine', now() - interval '85 days')",
        )
        .await
        .unwrap();
    let _cdc = p.spawn_cdc(None);
    let _fraud = p.spawn("fraud", None, &[]);
    let _verdicts = p.spawn("verdicts", None, &[]);
    let (_listening, heard) = listen(&p.url).await;
    let stats = p.spawn("stats", None, &[]);
    assert_truth(&p).await;
    // Each batch's commit notified its courses (the api's event streams listen for this).
    assert_heard(&heard, &[1, 2]).await;
    let recent = |db: tokio_postgres::Client| async move {
        db.query(
            "SELECT recent_review_count, recent_rating_avg::text FROM course_stats ORDER BY course_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, Option<String>>(1)))
        .collect::<Vec<_>>()
    };
    assert_eq!(
        recent(p.db().await).await,
        vec![(2, Some("4.0000".into())), (1, Some("4.0000".into()))]
    );
    p.stop(stats).await;
    heard.lock().unwrap().clear();

    // Fifteen days later on the database's clock, the one verify reads too, with no new
    // review: the 80- and 85-day-old ones left the window.
    let db = p.db().await;
    db.execute(
        "SELECT reviewflow_set_clock(now() + interval '15 days')",
        &[],
    )
    .await
    .unwrap();
    let clock = db
        .query_one(
            "SELECT reviewflow_today(), (now() AT TIME ZONE 'UTC')::date + 15",
            &[],
        )
        .await
        .unwrap();
    let later: NaiveDate = clock.get(0);
    assert_eq!(
        later,
        clock.get::<_, NaiveDate>(1),
        "the clock moved 15 days"
    );
    let _stats = p.spawn("stats", None, &[]);
    common::eventually("the worker rolled its clock forward", 60, || async {
        let rolled: Option<NaiveDate> = p
            .db()
            .await
            .query_one("SELECT rolled_through FROM stats_state", &[])
            .await
            .unwrap()
            .get(0);
        rolled == Some(later)
    })
    .await;
    assert_truth(&p).await;
    // The rollover's commit notified both courses whose 90-day figures it refreshed.
    assert_heard(&heard, &[1, 2]).await;
    assert_eq!(
        recent(p.db().await).await,
        vec![(1, Some("3.0000".into())), (0, None)]
    );
}
