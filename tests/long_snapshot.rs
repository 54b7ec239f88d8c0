//! A snapshot that takes longer than a Kafka transaction may stay open: it must complete (cdc
//! commits it in chunks), and while it restates the table (`cdc --new-snapshot`) the website
//! must keep seeing the figures it had, not an emptied table filling up again.
//!
//! The local stack's broker holds transactions to one minute (the test checks it), and the
//! snapshot is paced to about one and a half: half a minute past what one transaction could
//! hold, and short enough for CI.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::pipeline::Pipeline;
use common::Running;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use reviewflow::registry::Registry;
use reviewflow::source::snapshot::{find_marker, SnapshotHistory};

/// Rows in the table; with [`RATE`], the restatement takes about 90 s.
const ROWS: i64 = 2_700;
/// Rows per second the restatement is read at.
const RATE: &str = "30";

/// The figures a website reads, per course.
const FIGURES: &str = "SELECT course_id, concat_ws(' ', review_count, rating_sum, stars_0, stars_1,
    stars_2, stars_3, stars_4, stars_5, recent_review_count, recent_rating_sum, recent_stars_0,
    recent_stars_1, recent_stars_2, recent_stars_3, recent_stars_4, recent_stars_5,
    last_review_at) FROM course_stats";

async fn figures(db: &tokio_postgres::Client) -> BTreeMap<i64, String> {
    db.query(FIGURES, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The broker's `transaction.max.timeout.ms`, in milliseconds.
async fn transaction_limit(p: &Pipeline) -> u64 {
    let admin: AdminClient<DefaultClientContext> =
        reviewflow::kafka::client_config(&p.settings.kafka)
            .create()
            .unwrap();
    let described = admin
        .describe_configs(&[ResourceSpecifier::Broker(1)], &AdminOptions::new())
        .await
        .unwrap();
    let config = described.into_iter().next().unwrap().unwrap();
    config
        .get("transaction.max.timeout.ms")
        .and_then(|e| e.value.as_deref())
        .expect("the broker reports transaction.max.timeout.ms")
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_longer_than_a_kafka_transaction_completes_and_no_figure_moves_while_it_restates(
) {
    let p = Pipeline::new("long_snapshot").await;
    let limit = transaction_limit(&p).await;
    assert!(
        limit <= 60_000,
        "the test needs a broker that holds transactions to a minute, not {limit} ms"
    );
    let db = p.db().await;
    db.batch_execute(&format!(
        "INSERT INTO reviews (course_id, user_id, rating, created_at)
         SELECT 1 + i % 40, 1 + i, 0.5 * (1 + i % 10), now() - (i % 200) * interval '1 day'
         FROM generate_series(1, {ROWS}) AS i"
    ))
    .await
    .unwrap();
    let _workers: Vec<Running> = ["fraud", "verdicts", "stats"]
        .iter()
        .map(|s| p.spawn(s, None, &[]))
        .collect();
    let cdc = p.spawn_cdc(None);
    p.wait_until_caught_up().await;
    p.assert_exact().await;
    let before = figures(&db).await;
    assert_eq!(before.len(), 40);
    let written = "SELECT max(updated_at) FROM course_stats";
    let last_write: chrono::DateTime<chrono::Utc> =
        db.query_one(written, &[]).await.unwrap().get(0);

    // The slot is lost; the operator restates the table, slowly.
    p.stop(cdc).await;
    db.execute("SELECT pg_drop_replication_slot($1)", &[&p.slot()])
        .await
        .unwrap();
    let old = p.snapshot_marker().await.consistent_point;
    let registry = Registry::connect(&p.settings).await.unwrap();
    let started = Instant::now();
    let mut cmd = p.command("cdc");
    cmd.arg("--new-snapshot")
        .env("REVIEWFLOW_SNAPSHOT_RATE", RATE)
        .stdout(std::process::Stdio::null());
    let _cdc = Running(Some(cmd.spawn().unwrap()));

    // A website's reads, every few milliseconds, until the restatement is in place.
    let (mut reads, mut moved, mut halfway) = (0u64, Vec::new(), None);
    let restated = loop {
        let now = figures(&db).await;
        reads += 1;
        if now != before {
            moved.push(format!(
                "{:?} s in: {} courses differ",
                started.elapsed(),
                {
                    before.iter().filter(|(c, f)| now.get(c) != Some(f)).count()
                        + now.keys().filter(|c| !before.contains_key(c)).count()
                }
            ));
        }
        if halfway.is_none() && started.elapsed() > Duration::from_secs(65) {
            // Past the broker's limit, the chunks so far are committed and folded out of sight.
            let row = db
                .query_one(
                    "SELECT restating, (SELECT count(*) FROM reviewflow_restating.course_stats)
                     FROM stats_state",
                    &[],
                )
                .await
                .unwrap();
            halfway = Some((row.get::<_, bool>(0), row.get::<_, i64>(1)));
        }
        if reads % 200 == 0 {
            if let SnapshotHistory::Completed(m) =
                find_marker(&p.settings.kafka, &p.topic, &p.slot(), &registry)
                    .await
                    .unwrap()
            {
                if m.consistent_point > old
                    && !db
                        .query_one("SELECT restating FROM stats_state", &[])
                        .await
                        .unwrap()
                        .get::<_, bool>(0)
                {
                    break m;
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(420),
            "the restatement did not complete in 7 minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let took = started.elapsed();
    eprintln!("restatement of {ROWS} rows took {took:?}, {reads} reads of course_stats");
    assert_eq!(restated.rows, ROWS, "the new snapshot holds every row");
    assert!(
        took > Duration::from_millis(limit + limit / 4),
        "the snapshot ran longer than the broker lets a transaction stay open: {took:?}"
    );
    assert_eq!(
        halfway,
        Some((true, 40)),
        "mid-snapshot, the restated figures were gathering out of sight"
    );
    assert!(
        moved.is_empty(),
        "no course's figures moved while the table was restated: {moved:?}"
    );
    assert_eq!(
        db.query_one(written, &[])
            .await
            .unwrap()
            .get::<_, chrono::DateTime<chrono::Utc>>(0),
        last_write,
        "putting the restated figures in place rewrote no row that did not change (course_stats \
         is streamed to the course-stats topic)"
    );

    // The stream goes on from the new slot.
    let mut rng = common::Rng(7);
    common::write_random(&db, &mut rng, 40).await;
    p.wait_until_caught_up().await;
    p.assert_exact().await;
}
