//! The 90-day window rolls at UTC midnight on the database's clock, the one `verify` reads:
//! just before the boundary the figures are exactly those of the old day, a moment after it
//! exactly those of the new one, with no tick to wait for.

mod common;

use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeDelta, Utc};
use common::pipeline::Pipeline;
use tokio_postgres::Client;

/// How long after midnight the figures may still be the old day's.
const LATE: TimeDelta = TimeDelta::seconds(2);

async fn db_now(db: &Client) -> DateTime<Utc> {
    db.query_one("SELECT reviewflow_now()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Moves the database's clock (every reader's: the worker's, verify's) to read `at` now.
async fn set_clock(db: &Client, at: DateTime<Utc>) {
    db.query_one("SELECT reviewflow_set_clock($1)", &[&at])
        .await
        .unwrap();
}

/// Until the database's clock reads `at` (give or take a round trip).
async fn sleep_until(db: &Client, at: DateTime<Utc>) {
    if let Ok(wait) = (at - db_now(db).await).to_std() {
        tokio::time::sleep(wait).await;
    }
}

/// One `verify`, with the database's clock read just before and just after it: whether it
/// found no difference, and the bounds of the instant it computed the truth for.
async fn verify_between(db: &Client) -> (DateTime<Utc>, bool, DateTime<Utc>) {
    let before = db_now(db).await;
    let report = reviewflow::tools::verify::verify(db).await.unwrap();
    assert!(report.courses > 0, "verify saw the courses");
    (before, report.differences.is_empty(), db_now(db).await)
}

/// Per course: the 90-day review count and average, and the day the rollover reached.
async fn recent(db: &Client) -> (Vec<(i64, Option<String>)>, Option<NaiveDate>) {
    let figures = db
        .query(
            "SELECT recent_review_count, recent_rating_avg::text FROM course_stats ORDER BY course_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let rolled = db
        .query_one("SELECT rolled_through FROM stats_state", &[])
        .await
        .unwrap()
        .get(0);
    (figures, rolled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_90_day_figures_roll_exactly_at_the_databases_midnight() {
    let p = Pipeline::new("midnight_roll").await;
    let db = p.db().await;
    // The midnight crossed: one on the database's clock, set back to the start of the real
    // day, so that every review below is long past on either clock.
    let midnight = Utc::now().date_naive().and_time(NaiveTime::MIN).and_utc();
    let (old_day, new_day) = (midnight.date_naive() - Days::new(1), midnight.date_naive());
    let edge = midnight - TimeDelta::days(90);
    let micro = TimeDelta::microseconds(1);
    // A review is recent while its UTC day is after today - 90. At `edge`, exactly 90 days
    // before midnight, and on the day after it: recent on the old day, not on the new one.
    // Just before `edge`: out on both days; a day after it: in on both.
    let reviews = [
        (1i64, 5.0f64, edge),
        (1, 3.0, edge + TimeDelta::days(1)),
        (1, 2.0, edge - micro),
        (2, 4.0, edge + TimeDelta::days(1) - micro),
    ];
    for (user, (course, rating, created_at)) in reviews.iter().enumerate() {
        db.execute(
            "INSERT INTO reviews (course_id, user_id, rating, content, created_at)
             VALUES ($1, $2, $3::float8::numeric(2,1), 'a clear course', $4)",
            &[course, &(user as i64 + 1), rating, created_at],
        )
        .await
        .unwrap();
    }
    set_clock(&db, midnight - TimeDelta::hours(12)).await;
    let _cdc = p.spawn_cdc(None);
    let _fraud = p.spawn("fraud", None, &[]);
    let _verdicts = p.spawn("verdicts", None, &[]);
    let stats = p.spawn("stats", None, &[]);
    // The rows came before the slot: they travel in its snapshot.
    p.wait_for_snapshot().await;
    p.wait_until_caught_up().await;
    p.assert_exact().await;
    let old_figures = (
        vec![(2, Some("4.0000".into())), (1, Some("4.0000".into()))],
        Some(old_day),
    );
    assert_eq!(recent(&db).await, old_figures, "the old day's window");

    // A worker that connects a few seconds before midnight aims at it from there.
    p.stop(stats).await;
    set_clock(&db, midnight - TimeDelta::seconds(8)).await;
    let _stats = p.spawn("stats", None, &[]);

    // Every check that ended before midnight saw the old day, up to the last moment.
    sleep_until(&db, midnight - TimeDelta::seconds(1)).await;
    assert_eq!(recent(&db).await, old_figures, "still the old day's window");
    let mut last_before = None;
    loop {
        let (before, exact, after) = verify_between(&db).await;
        if after >= midnight {
            break;
        }
        assert!(
            exact,
            "not exact between {before} and {after}, before midnight: the window rolled early"
        );
        last_before = Some(after);
    }
    let last_before = last_before.expect("a check ended before midnight: too slow a machine");
    assert!(
        midnight - last_before < TimeDelta::milliseconds(500),
        "the last check before midnight ended at {last_before}: too slow a machine"
    );

    sleep_until(&db, midnight).await;
    let exact_at = loop {
        let (before, exact, after) = verify_between(&db).await;
        if before >= midnight && exact {
            break after;
        }
        assert!(
            after < midnight + LATE,
            "the figures were not the new day's within {LATE} of midnight"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "exact for the new day {} after midnight",
        exact_at - midnight
    );
    assert_eq!(
        recent(&db).await,
        (vec![(1, Some("3.0000".into())), (0, None)], Some(new_day)),
        "the new day's window: the reviews at the edge left it"
    );
}
