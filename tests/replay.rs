//! `reviewflow replay` against the real PostgreSQL and Kafka: the pipeline's stages run as
//! processes, the derived tables are corrupted, and each replay (from the valid changelog,
//! then from a fresh snapshot) must restore what `verify` expects; the stats worker then
//! carries on without counting anything twice.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::pipeline::Pipeline;
use reviewflow::transform::score::{self, ScorerKind};

async fn differences(p: &Pipeline) -> Vec<String> {
    reviewflow::tools::verify::verify(&p.db().await)
        .await
        .unwrap()
        .differences
        .iter()
        .map(|d| d.to_string())
        .collect()
}

/// How many reviews the default model (heuristic at 0.5) calls valid, and the ids of the
/// others: what course_stats must count once the pipeline has caught up.
async fn valid_reviews(p: &Pipeline) -> (i64, Vec<i64>) {
    let scorer = score::scorer(ScorerKind::Heuristic, 0.5).unwrap();
    let (mut valid, mut fraud) = (0, vec![]);
    for review in p.reviews().await {
        if scorer.judge(&review).fraud {
            fraud.push(review.id);
        } else {
            valid += 1;
        }
    }
    (valid, fraud)
}

async fn counted(p: &Pipeline) -> i64 {
    p.db()
        .await
        .query_one(
            "SELECT coalesce(sum(review_count), 0)::int8 FROM course_stats",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Until course_stats counts every valid review and matches the truth exactly.
async fn wait_until_caught_up(p: &Pipeline, what: &str) {
    let (valid, _) = valid_reviews(p).await;
    common::eventually(what, 120, || async {
        counted(p).await == valid && differences(p).await.is_empty()
    })
    .await;
}

/// Until review_verdicts holds a verdict for every review of `course`: the fraud worker has
/// committed their valid-changelog records too (same Kafka transaction).
async fn wait_for_verdicts(p: &Pipeline, course: i64, n: i64) {
    common::eventually(&format!("{n} verdicts for course {course}"), 60, || async {
        let judged: i64 = p
            .db()
            .await
            .query_one(
                "SELECT count(DISTINCT v.review_id) FROM review_verdicts v
                 JOIN reviews r ON r.id = v.review_id WHERE r.course_id = $1",
                &[&course],
            )
            .await
            .unwrap()
            .get(0);
        judged == n
    })
    .await;
}

/// Makes course_stats and course_daily_stats wrong; returns the daily bucket deleted.
async fn corrupt(p: &Pipeline) -> (i64, chrono::NaiveDate) {
    let db = p.db().await;
    let bucket = db
        .query_one(
            "DELETE FROM course_daily_stats
             WHERE (course_id, day) = (SELECT course_id, day FROM course_daily_stats
                                       ORDER BY course_id, day LIMIT 1)
             RETURNING course_id, day",
            &[],
        )
        .await
        .unwrap();
    db.batch_execute(
        "UPDATE course_stats SET review_count = review_count + 5
         WHERE course_id = (SELECT max(course_id) FROM course_stats)",
    )
    .await
    .unwrap();
    assert!(
        !differences(p).await.is_empty(),
        "verify sees the corruption"
    );
    (bucket.get(0), bucket.get(1))
}

async fn bucket_exists(p: &Pipeline, (course, day): (i64, chrono::NaiveDate)) -> bool {
    p.db()
        .await
        .query_opt(
            "SELECT 1 FROM course_daily_stats WHERE course_id = $1 AND day = $2",
            &[&course, &day],
        )
        .await
        .unwrap()
        .is_some()
}

/// `reviewflow replay <args>`: must succeed; returns its stdout.
async fn replay(p: &Pipeline, args: &[&str]) -> String {
    let mut cmd = p.command("replay");
    cmd.args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("reviewflow replay runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("replay {args:?}: {stdout}");
    assert!(
        out.status.success(),
        "replay {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The next offset after the last record of each partition of `topic`.
async fn ends(p: &Pipeline, topic: &str) -> BTreeMap<i32, i64> {
    use rdkafka::Message;
    let mut ends = BTreeMap::new();
    for m in common::consume_all(&p.settings.kafka, topic).await {
        let end = ends.entry(m.partition()).or_insert(0);
        *end = (*end).max(m.offset() + 1);
    }
    ends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_rebuild_the_derived_tables_and_the_worker_carries_on() {
    let mut p = Pipeline::new("replay").await;
    let log = std::env::temp_dir().join(format!("reviewflow-test-replay-{}.log", common::unique()));
    eprintln!("stage logs: {}", log.display());
    p.log = Some(log);
    let group = format!("{}.stats", p.topic);
    let stats_env = [("REVIEWFLOW_STATS_GROUP", group.as_str())];
    let db = p.db().await;

    // Rows the reader's initial snapshot carries, then voided by a TRUNCATE.
    const FIRST_ROWS: &str = "
        INSERT INTO reviews (course_id, user_id, rating, title, content, created_at)
        SELECT 1 + i % 5, 100 + i, (1 + i % 10) / 2.0, 'Review ' || i,
               'What I learned in part ' || i, now() - (i * 3) * interval '1 day'
        FROM generate_series(1, 40) AS i";
    db.batch_execute(FIRST_ROWS).await.unwrap();
    let cdc = p.spawn_cdc(None);
    let fraud = p.spawn("fraud", None, &[]);
    let verdicts = p.spawn("verdicts", None, &[]);
    let stats = p.spawn("stats", None, &stats_env);
    p.wait_for_snapshot().await;

    // Streamed changes: a truncate, inserts (some older than 90 days), rating and created_at
    // edits, deletes, a review turned fraud, two edits of one review in one transaction.
    for sql in [
        "TRUNCATE reviews RESTART IDENTITY",
        FIRST_ROWS,
        "INSERT INTO reviews (course_id, user_id, rating, title, content, created_at)
         SELECT 3 + i % 6, 200 + i, (1 + i % 10) / 2.0, 'Later ' || i, 'Notes on unit ' || i,
                now() - i * interval '5 hours'
         FROM generate_series(1, 30) AS i",
        "UPDATE reviews SET rating = 5.0 - rating + 0.5 WHERE id BETWEEN 1 AND 5",
        "UPDATE reviews SET created_at = now() - interval '200 days' WHERE id = 6",
        "UPDATE reviews SET created_at = now() WHERE id = 35",
        "DELETE FROM reviews WHERE id BETWEEN 10 AND 14",
        "UPDATE reviews SET content = 'cheap certificates at https://cheap-certs.example.com/deal'
         WHERE id = 20",
        "BEGIN; UPDATE reviews SET rating = 0.5 WHERE id = 21;
                UPDATE reviews SET rating = 4.5 WHERE id = 21; COMMIT",
    ] {
        db.batch_execute(sql).await.unwrap();
    }
    let (_, flagged) = valid_reviews(&p).await;
    assert_eq!(flagged, [20], "the review with a link is the one fraud");
    wait_until_caught_up(&p, "the pipeline caught up with the workload").await;

    // --- From Kafka, with the stats worker stopped, changes waiting for it and a poison
    // record on the changelog (the worker sends it to the dead letters; replay skips it).
    p.stop(stats).await;
    let damaged = corrupt(&p).await;
    db.batch_execute(
        "INSERT INTO reviews (course_id, user_id, rating, content)
         SELECT 9, 300 + i, 4.0, 'Waiting for stats ' || i FROM generate_series(1, 5) AS i",
    )
    .await
    .unwrap();
    wait_for_verdicts(&p, 9, 5).await;
    {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = reviewflow::kafka::client_config(&p.settings.kafka)
            .create()
            .unwrap();
        producer
            .send(
                FutureRecord::<[u8], [u8]>::to(&p.output("valid"))
                    .partition(0)
                    .payload(b"not avro"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let out = replay(&p, &[]).await;
    assert!(
        out.contains("1 undecodable records skipped"),
        "the summary reports the skipped record: {out}"
    );
    assert!(
        out.contains("40 voided by the TRUNCATE"),
        "the snapshot's rows are void: {out}"
    );
    assert_eq!(differences(&p).await, Vec::<String>::new(), "{out}");
    assert_eq!(counted(&p).await, valid_reviews(&p).await.0);
    assert!(
        bucket_exists(&p, damaged).await,
        "the deleted bucket is back"
    );

    // --- From a snapshot, again with changes waiting for the stopped worker: the snapshot
    // holds them, so the worker must skip them when it comes back.
    let damaged = corrupt(&p).await;
    db.batch_execute(
        "INSERT INTO reviews (course_id, user_id, rating, content)
         SELECT 10, 400 + i, 3.5, 'Before the snapshot ' || i FROM generate_series(1, 4) AS i",
    )
    .await
    .unwrap();
    wait_for_verdicts(&p, 10, 4).await;
    let out = replay(&p, &["--from", "snapshot"]).await;
    assert!(out.contains("judged by heuristic-v1@0.5"), "{out}");
    assert_eq!(differences(&p).await, Vec::<String>::new(), "{out}");
    assert_eq!(counted(&p).await, valid_reviews(&p).await.0);
    assert!(
        bucket_exists(&p, damaged).await,
        "the deleted bucket is back"
    );
    let snapshot_verdicts: i64 = db
        .query_one(
            "SELECT count(*) FROM review_verdicts
             WHERE version = (SELECT max(version) FROM review_verdicts)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let reviews: i64 = db
        .query_one("SELECT count(*) FROM reviews", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        snapshot_verdicts, reviews,
        "every review judged at the consistent point"
    );

    // --- The worker comes back: it skips what the snapshot holds (course 10's inserts) and
    // applies what follows, including edits and deletes of rows the replays counted.
    let stats = p.spawn("stats", None, &stats_env);
    let valid_topic = p.output("valid");
    let ends = ends(&p, &valid_topic).await;
    common::eventually("the worker read what waited for it", 60, || async {
        let rows = p
            .db()
            .await
            .query(
                "SELECT partition, next_offset FROM sink_offsets
                 WHERE consumer = 'stats' AND topic = $1",
                &[&valid_topic],
            )
            .await
            .unwrap();
        let next: BTreeMap<i32, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        ends.iter()
            .all(|(partition, end)| next.get(partition).is_some_and(|n| n >= end))
    })
    .await;
    assert_eq!(
        differences(&p).await,
        Vec::<String>::new(),
        "nothing counted twice"
    );

    // Replays while the worker runs and reviews keep coming: the worker is fenced, claims
    // its partitions again and resumes exactly where each replay left it.
    let writer = {
        let db = p.db().await;
        tokio::spawn(async move {
            for i in 0..40 {
                db.execute(
                    "INSERT INTO reviews (course_id, user_id, rating, content)
                     VALUES (1 + $1::int8 % 7, 600 + $1::int8, 3.0, 'During the replays')",
                    &[&i64::from(i)],
                )
                .await
                .unwrap();
                if i % 3 == 0 {
                    db.execute(
                        "UPDATE reviews SET rating = 2.0 WHERE user_id = 600 + $1::int8 - 1",
                        &[&i64::from(i)],
                    )
                    .await
                    .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    replay(&p, &[]).await;
    replay(&p, &["--from", "snapshot"]).await;
    replay(&p, &[]).await;
    writer.await.unwrap();
    wait_until_caught_up(&p, "the worker caught up after replays while it ran").await;

    for sql in [
        "INSERT INTO reviews (course_id, user_id, rating, content)
         SELECT 1 + i % 11, 500 + i, 2.5, 'After the replays ' || i
         FROM generate_series(1, 10) AS i",
        "UPDATE reviews SET rating = 1.0 WHERE id IN (2, 30)",
        "DELETE FROM reviews WHERE course_id = 10 AND user_id = 401",
        "UPDATE reviews SET created_at = now() - interval '120 days' WHERE course_id = 9",
    ] {
        db.batch_execute(sql).await.unwrap();
    }
    wait_until_caught_up(&p, "the worker caught up after the replays").await;

    for stage in [stats, verdicts, fraud, cdc] {
        p.stop(stage).await;
    }
    if let Some(log) = &p.log {
        let _ = std::fs::remove_file(log);
    }
}
