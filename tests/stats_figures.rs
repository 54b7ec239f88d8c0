//! The stats worker's arithmetic against the from-scratch truth: reviews and verdicts are
//! written to a private database while the matching reviews.valid images go through
//! Deltas/apply, as the worker will do, and `verify`'s check of the figures must then find no difference.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Days, NaiveDate, TimeDelta, Utc};
use tokio_postgres::types::PgLsn;
use tokio_postgres::Client;

use reviewflow::contract::image::ReviewRow;
use reviewflow::contract::lsn::{Lsn, SourcePosition};
use reviewflow::contract::notify::Touched;
use reviewflow::contract::review::Rating;
use reviewflow::sink::stats::figures::{apply, reset, Deltas};
use reviewflow::sink::stats::state::{lock_state, Hold};
use reviewflow::sink::stats::{begin, restating};
use reviewflow::tools::verify::figures;

/// The source table, its verdicts and the valid-set changelog, kept in step.
struct Sim {
    db: Client,
    /// Every review in `reviews`, with whether its current verdict is valid.
    reviews: BTreeMap<i64, (ReviewRow, bool)>,
    next_id: i64,
    next_version: u64,
    batch: Deltas,
}

impl Sim {
    async fn new(name: &str) -> Sim {
        let url = common::fresh_database(name).await;
        Sim {
            db: reviewflow::db::connect(&url).await.unwrap(),
            reviews: BTreeMap::new(),
            next_id: 1,
            next_version: 0,
            batch: Deltas::default(),
        }
    }

    async fn judge_version(&mut self, id: i64, valid: bool) {
        self.next_version += 0x10;
        let version = PgLsn::from(Lsn(self.next_version));
        let verdict = if valid { "valid" } else { "fraud" };
        self.db
            .execute(
                "INSERT INTO review_verdicts (review_id, version, verdict, score, model)
                 VALUES ($1, $2, $3, 0, 'test')",
                &[&id, &version, &verdict],
            )
            .await
            .unwrap();
    }

    async fn insert(&mut self, course: i64, halves: u8, at: DateTime<Utc>, valid: bool) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        let row = ReviewRow {
            id,
            course_id: course,
            user_id: Some(1),
            rating: Rating::from_halves(halves).unwrap(),
            title: None,
            content: None,
            created_at: at,
            updated_at: Some(at),
        };
        self.db
            .execute(
                "INSERT INTO reviews (id, course_id, user_id, rating, created_at)
                 VALUES ($1, $2, 1, $3::int4 / 2.0, $4)",
                &[&id, &course, &i32::from(halves), &at],
            )
            .await
            .unwrap();
        self.judge_version(id, valid).await;
        if valid {
            self.batch.add(&row, 1);
        }
        self.reviews.insert(id, (row, valid));
        id
    }

    /// An update of the row, judged anew: the valid set loses the old image if it held it
    /// and gains the new one if that is valid.
    async fn edit(&mut self, id: i64, change: impl FnOnce(&mut ReviewRow), valid: bool) {
        let (before, was_valid) = self.reviews[&id].clone();
        let mut after = before.clone();
        change(&mut after);
        self.db
            .execute(
                "UPDATE reviews SET course_id = $2, rating = $3::int4 / 2.0, created_at = $4
                 WHERE id = $1",
                &[
                    &id,
                    &after.course_id,
                    &i32::from(after.rating.halves()),
                    &after.created_at,
                ],
            )
            .await
            .unwrap();
        self.judge_version(id, valid).await;
        if was_valid {
            self.batch.add(&before, -1);
        }
        if valid {
            self.batch.add(&after, 1);
        }
        self.reviews.insert(id, (after, valid));
    }

    /// A new verdict for an unchanged row (a rebuild with a new model, say).
    async fn rejudge(&mut self, id: i64, valid: bool) {
        let row = self.reviews[&id].0.clone();
        self.edit(id, |_| {}, valid).await;
        assert_eq!(self.reviews[&id].0, row);
    }

    async fn delete(&mut self, id: i64) {
        let (row, valid) = self.reviews.remove(&id).unwrap();
        self.db
            .execute("DELETE FROM reviews WHERE id = $1", &[&id])
            .await
            .unwrap();
        if valid {
            self.batch.add(&row, -1);
        }
    }

    /// Moves the database's clock, the one the worker and verify read, to noon of `day`.
    async fn set_day(&self, day: NaiveDate) {
        self.db
            .query_one("SELECT reviewflow_set_clock($1)", &[&at(day, 43_200)])
            .await
            .unwrap();
    }

    /// One batch of the worker on `today`: lock, roll the days, apply, commit. Returns the
    /// courses the rollover refreshed.
    async fn commit(&mut self, today: NaiveDate) -> u64 {
        self.set_day(today).await;
        let batch = std::mem::take(&mut self.batch);
        let tx = self.db.transaction().await.unwrap();
        let (state, rolled) = begin(&tx, Hold::Exclusive).await.unwrap();
        apply(&tx, &batch, state.today()).await.unwrap();
        tx.commit().await.unwrap();
        rolled
    }

    /// The worker's timer on `today`.
    async fn roll(&mut self, today: NaiveDate) -> u64 {
        self.set_day(today).await;
        let tx = self.db.transaction().await.unwrap();
        let (_, rolled) = begin(&tx, Hold::Exclusive).await.unwrap();
        tx.commit().await.unwrap();
        rolled
    }

    async fn assert_true_at(&self, today: NaiveDate) {
        self.set_day(today).await;
        let report = figures(&self.db).await.unwrap();
        assert!(
            report.differences.is_empty(),
            "as of {today}: {:#?}",
            report.differences
        );
    }

    /// (review_count, rating_sum, recent_review_count, recent_rating_sum, recent_rating_avg)
    /// of a course, sums as text so they compare exactly.
    async fn figures(&self, course: i64) -> (i64, String, i64, String, Option<String>) {
        let r = self
            .db
            .query_one(
                "SELECT review_count, rating_sum::text, recent_review_count,
                        recent_rating_sum::text, recent_rating_avg::text
                 FROM course_stats WHERE course_id = $1",
                &[&course],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
    }

    async fn last_review_at(&self, course: i64) -> Option<DateTime<Utc>> {
        self.db
            .query_one(
                "SELECT last_review_at FROM course_stats WHERE course_id = $1",
                &[&course],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn count(&self, table: &str) -> i64 {
        self.db
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }
}

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn plus(day: NaiveDate, days: i64) -> NaiveDate {
    if days >= 0 {
        day + Days::new(days as u64)
    } else {
        day - Days::new(days.unsigned_abs())
    }
}

/// `seconds` into the UTC day `day`.
fn at(day: NaiveDate, seconds: i64) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap().and_utc() + TimeDelta::seconds(seconds)
}

/// splitmix64: enough randomness for a workload, and the same one on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn halves(&mut self) -> u8 {
        1 + self.below(10) as u8
    }
}

/// A creation time as of `today`: mostly inside the window, often on either side of its
/// edge, sometimes long ago or in the future, and sometimes an instant already used, so the
/// multiset of creation times holds counts above one.
fn created_at(rng: &mut Rng, today: NaiveDate, used: &[DateTime<Utc>]) -> DateTime<Utc> {
    if !used.is_empty() && rng.chance(15) {
        return used[rng.below(used.len() as u64) as usize];
    }
    let offset = match rng.below(10) {
        0..=3 => -(rng.below(90) as i64),
        4..=6 => [-91, -90, -89, -88][rng.below(4) as usize],
        7 | 8 => -91 - rng.below(400) as i64,
        _ => 1 + rng.below(3) as i64,
    };
    at(plus(today, offset), rng.below(86_400) as i64)
}

/// Enough courses that a batch leaves some untouched, so only the rollover refreshes them.
const COURSES: u64 = 25;

async fn random_workload(seed: u64) {
    let mut sim = Sim::new(&format!("figures_random_{seed}")).await;
    let mut rng = Rng(seed);
    let start = day(2025, 1, 15);
    // Batches on the same day, the next day, and far enough apart that whole windows pass;
    // between batches far apart, days roll with no review arriving.
    let schedule = [0, 0, 1, 2, 40, 40, 89, 95, 200, 300];
    for (batch, pair) in schedule.windows(2).enumerate() {
        let (today, next) = (plus(start, pair[0]), plus(start, pair[1]));
        for _ in 0..30 {
            let ids: Vec<i64> = sim.reviews.keys().copied().collect();
            let used: Vec<DateTime<Utc>> =
                sim.reviews.values().map(|(r, _)| r.created_at).collect();
            let pick = |rng: &mut Rng| ids[rng.below(ids.len() as u64) as usize];
            let valid = rng.chance(85);
            match rng.below(100) {
                _ if ids.is_empty() => {}
                // Some steps only insert (below), so the set grows.
                0..=29 => {}
                30..=44 => {
                    let h = rng.halves();
                    sim.edit(
                        pick(&mut rng),
                        |r| r.rating = Rating::from_halves(h).unwrap(),
                        valid,
                    )
                    .await
                }
                45..=59 => {
                    let t = created_at(&mut rng, today, &used);
                    sim.edit(pick(&mut rng), |r| r.created_at = t, valid).await
                }
                60..=69 => {
                    let (c, h) = (1 + rng.below(COURSES) as i64, rng.halves());
                    let t = created_at(&mut rng, today, &used);
                    let change = |r: &mut ReviewRow| {
                        r.course_id = c;
                        r.rating = Rating::from_halves(h).unwrap();
                        r.created_at = t;
                    };
                    sim.edit(pick(&mut rng), change, valid).await
                }
                70..=81 => sim.delete(pick(&mut rng)).await,
                _ => {
                    let id = pick(&mut rng);
                    let flipped = !sim.reviews[&id].1;
                    sim.rejudge(id, flipped).await
                }
            }
            if sim.reviews.is_empty() || rng.chance(40) {
                let (c, h) = (1 + rng.below(COURSES) as i64, rng.halves());
                let t = created_at(&mut rng, today, &used);
                sim.insert(c, h, t, valid).await;
            }
        }
        sim.commit(today).await;
        sim.assert_true_at(today).await;
        if pair[1] - pair[0] >= 2 {
            let quiet = plus(today, (pair[1] - pair[0]) / 2);
            sim.roll(quiet).await;
            sim.assert_true_at(quiet).await;
        }
        sim.roll(next).await;
        sim.assert_true_at(next).await;
        eprintln!(
            "seed {seed} batch {batch} ({today}): {} reviews, {} buckets, {} creation times",
            sim.reviews.len(),
            sim.count("course_daily_stats").await,
            sim.count("course_review_times").await
        );
    }
    // No bucket or time entry outlives its last review.
    let leftovers: i64 = sim
        .db
        .query_one(
            "SELECT (SELECT count(*) FROM course_daily_stats WHERE review_count = 0)
                  + (SELECT count(*) FROM course_review_times WHERE review_count <= 0)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leftovers, 0);
}

#[tokio::test]
async fn a_random_workload_keeps_the_figures_true() {
    for seed in [1, 2, 3] {
        random_workload(seed).await;
    }
}

#[tokio::test]
async fn last_review_at_falls_back_and_an_emptied_course_reads_zero_and_null() {
    let mut sim = Sim::new("figures_last_review").await;
    let today: NaiveDate = sim
        .db
        .query_one("SELECT (now() AT TIME ZONE 'UTC')::date", &[])
        .await
        .unwrap()
        .get(0);
    let yesterday = plus(today, -1);
    let (t1, t2, t3) = (at(yesterday, 10), at(yesterday, 20), at(yesterday, 30));
    let old = sim.insert(5, 4, t1, true).await;
    let middle = sim.insert(5, 9, t2, true).await;
    let newest = sim.insert(5, 10, t3, true).await;
    let twin = sim.insert(5, 3, t3, true).await;
    sim.commit(today).await;
    assert_eq!(sim.last_review_at(5).await, Some(t3));

    // Two reviews share the newest instant: one going leaves the other as the newest.
    sim.delete(newest).await;
    sim.commit(today).await;
    assert_eq!(sim.last_review_at(5).await, Some(t3));
    sim.delete(twin).await;
    sim.commit(today).await;
    assert_eq!(sim.last_review_at(5).await, Some(t2));
    sim.assert_true_at(today).await;

    // Fraud retracts as a delete does.
    sim.rejudge(middle, false).await;
    sim.commit(today).await;
    assert_eq!(sim.last_review_at(5).await, Some(t1));

    sim.delete(old).await;
    sim.commit(today).await;
    assert_eq!(sim.last_review_at(5).await, None);
    let r = sim
        .db
        .query_one(
            "SELECT review_count, rating_sum::text, rating_avg IS NULL,
                    recent_review_count, recent_rating_sum::text, recent_rating_avg IS NULL,
                    stars_0 + stars_1 + stars_2 + stars_3 + stars_4 + stars_5
             FROM course_stats WHERE course_id = 5",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 0);
    assert_eq!(r.get::<_, String>(1), "0.0");
    assert!(r.get::<_, bool>(2), "rating_avg of no review is NULL");
    assert_eq!(r.get::<_, i64>(3), 0);
    assert_eq!(r.get::<_, String>(4), "0.0");
    assert!(
        r.get::<_, bool>(5),
        "recent_rating_avg of no review is NULL"
    );
    assert_eq!(r.get::<_, i64>(6), 0);
    assert_eq!(sim.count("course_daily_stats").await, 0);
    assert_eq!(sim.count("course_review_times").await, 0);
    // The truth as of the database's day, through the command's code path.
    sim.set_day(today).await;
    let report = figures(&sim.db).await.unwrap();
    assert!(report.differences.is_empty(), "{:#?}", report.differences);
    assert_eq!(report.courses, 1);

    // Changes that cancel inside a batch leave nothing behind.
    let id = sim.insert(6, 7, t2, true).await;
    sim.edit(id, |r| r.course_id = 7, true).await;
    sim.delete(id).await;
    sim.commit(today).await;
    assert_eq!(sim.count("course_daily_stats").await, 0);
    assert_eq!(sim.count("course_review_times").await, 0);
    sim.assert_true_at(today).await;
}

#[tokio::test]
async fn days_passing_retire_reviews_from_the_window() {
    let mut sim = Sim::new("figures_clock").await;
    let d = day(2024, 3, 1);
    // Course 1 spreads over the window; course 2 has today's review and one from the
    // future; course 3 only one long past.
    for (offset, halves) in [(0, 8), (-10, 7), (-60, 4), (-89, 10), (-95, 2)] {
        sim.insert(1, halves, at(plus(d, offset), 3600), true).await;
    }
    sim.insert(2, 1, at(d, 0), true).await;
    sim.insert(2, 6, at(plus(d, 5), 0), true).await;
    sim.insert(3, 6, at(plus(d, -200), 0), true).await;
    assert_eq!(sim.commit(d).await, 0, "nothing to retire in empty tables");
    sim.assert_true_at(d).await;
    assert_eq!(
        sim.figures(1).await,
        (5, "15.5".into(), 4, "14.5".into(), Some("3.6250".into()))
    );
    assert_eq!(sim.figures(2).await.2, 2);
    assert_eq!(sim.figures(3).await.2, 0);

    // Days D-89 and D-60 leave the window; only course 1 had reviews on them.
    let d30 = plus(d, 30);
    assert_eq!(sim.roll(d30).await, 1);
    assert_eq!(
        sim.figures(1).await,
        (5, "15.5".into(), 2, "7.5".into(), Some("3.7500".into()))
    );
    assert_eq!(sim.figures(2).await.2, 2);
    sim.assert_true_at(d30).await;
    assert_eq!(sim.roll(d30).await, 0, "a day is rolled once");
    assert_eq!(sim.roll(plus(d, 29)).await, 0, "the clock never rolls back");

    // D-10 and D leave too: course 1 keeps no recent review, course 2 its future one.
    let d91 = plus(d, 91);
    assert_eq!(sim.roll(d91).await, 2);
    assert_eq!(
        sim.figures(1).await,
        (5, "15.5".into(), 0, "0.0".into(), None)
    );
    assert_eq!(
        sim.figures(2).await,
        (2, "3.5".into(), 1, "3.0".into(), Some("3.0000".into()))
    );
    sim.assert_true_at(d91).await;

    // Never rolled: every course with a bucket outside the window is refreshed.
    sim.db
        .batch_execute("UPDATE stats_state SET rolled_through = NULL")
        .await
        .unwrap();
    assert_eq!(sim.roll(d91).await, 3);
    sim.assert_true_at(d91).await;

    // A review arriving later is counted as of the day it is applied on.
    sim.insert(1, 5, at(d91, 60), true).await;
    sim.commit(d91).await;
    assert_eq!(sim.figures(1).await.2, 1);
    let d100 = plus(d, 100);
    assert_eq!(
        sim.commit(d100).await,
        1,
        "the future review of course 2 expires"
    );
    assert_eq!(sim.figures(2).await.2, 0);
    sim.assert_true_at(d100).await;
}

#[tokio::test]
async fn a_truncate_empties_the_figures_once() {
    let mut sim = Sim::new("figures_reset").await;
    let today = day(2024, 6, 1);
    for course in 1..=3 {
        sim.insert(course, 7, at(today, course), true).await;
    }
    sim.commit(today).await;

    let tx = sim.db.transaction().await.unwrap();
    let mut state = lock_state(&tx, Hold::Exclusive).await.unwrap();
    assert_eq!(state.truncated_lsn, Lsn::ZERO);
    assert!(
        reset(&tx, &mut state, SourcePosition::new(Lsn(0x1_0000_0100), 3))
            .await
            .unwrap()
    );
    assert_eq!(
        (state.truncated_lsn, state.truncated_position),
        (Lsn(0x1_0000_0100), 3)
    );
    tx.commit().await.unwrap();
    sim.db.batch_execute("TRUNCATE reviews").await.unwrap();
    sim.reviews.clear();
    for table in ["course_stats", "course_daily_stats", "course_review_times"] {
        assert_eq!(sim.count(table).await, 0, "{table}");
    }
    sim.assert_true_at(today).await;

    sim.insert(4, 2, at(today, 0), true).await;
    sim.commit(today).await;
    let tx = sim.db.transaction().await.unwrap();
    let mut state = lock_state(&tx, Hold::Exclusive).await.unwrap();
    assert_eq!(
        (state.truncated_lsn, state.truncated_position),
        (Lsn(0x1_0000_0100), 3),
        "the truncate's source position is stored"
    );
    for older_or_same in [
        SourcePosition::new(Lsn(0x50), 9),
        SourcePosition::new(Lsn(0x1_0000_0100), 2),
        SourcePosition::new(Lsn(0x1_0000_0100), 3),
    ] {
        assert!(!reset(&tx, &mut state, older_or_same).await.unwrap());
    }
    // A change later in the truncating transaction counts; an earlier one is void.
    assert!(!state.voids(SourcePosition::new(Lsn(0x1_0000_0100), 4)));
    assert!(state.voids(SourcePosition::new(Lsn(0x1_0000_0100), 2)));
    tx.commit().await.unwrap();
    assert_eq!(sim.count("course_stats").await, 1);
    sim.assert_true_at(today).await;
}

/// A snapshot in flight across midnight: its copies move by the same deltas as the real
/// tables, so they must lose the day that left the window too. Otherwise a review of that day
/// taken back after midnight would come off a 90-day window that still held it, and the
/// bucket, now empty, would be gone before anything could recompute the course.
#[tokio::test]
async fn a_snapshot_in_flight_rolls_its_copies_at_midnight() {
    let mut sim = Sim::new("figures_restating_midnight").await;
    let d = day(2024, 9, 10);
    // On the window's oldest day as of d, and a day newer.
    let oldest = sim.insert(1, 8, at(plus(d, -89), 60), true).await;
    sim.insert(1, 3, at(plus(d, -10), 60), true).await;
    sim.insert(2, 6, at(plus(d, -89), 90), true).await;
    sim.commit(d).await;

    // The snapshot opens: its rows are folded into the copies.
    sim.set_day(d).await;
    let tx = sim.db.transaction().await.unwrap();
    let (mut state, _) = begin(&tx, Hold::Exclusive).await.unwrap();
    let snapshot = Lsn(0x2_0000_0000);
    restating::begin(&tx, &mut state, snapshot).await.unwrap();
    let mut copy = Deltas::default();
    for (row, valid) in sim.reviews.values() {
        if *valid {
            copy.add(row, 1);
        }
    }
    apply(&tx, &copy, state.today()).await.unwrap();
    tx.commit().await.unwrap();

    // Midnight: the oldest day leaves the window; then its review of course 1 is deleted.
    let d1 = plus(d, 1);
    assert_eq!(
        sim.roll(d1).await,
        2,
        "both real courses had a review on it"
    );
    sim.delete(oldest).await;
    sim.commit(d1).await;

    // The snapshot ends on its only partition: the copies take the real tables' place.
    let tx = sim.db.transaction().await.unwrap();
    let (mut state, _) = begin(&tx, Hold::Exclusive).await.unwrap();
    assert!(state.restating);
    let changed = restating::partition_done(&tx, &mut state, 0, 1, snapshot)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        changed,
        Touched::Courses(vec![1]),
        "only course 1 lost a review"
    );
    assert_eq!(
        sim.figures(1).await,
        (1, "1.5".into(), 1, "1.5".into(), Some("1.5000".into()))
    );
    assert_eq!(sim.figures(2).await.2, 0);
    sim.assert_true_at(d1).await;
}

/// A restatement names the courses it changed up to a bound, and past it tells the website
/// "every course" (as a TRUNCATE does) rather than read a million ids into the worker; either
/// way every course is put in place.
#[tokio::test]
async fn a_snapshot_changing_many_courses_tells_every_course() {
    let mut sim = Sim::new("figures_restating_many").await;
    let d = day(2024, 9, 10);
    sim.set_day(d).await;
    let bound = restating::NAMED_AT_MOST;

    // Each round: the table holds a review on each of `courses` courses, all with `halves`,
    // and a snapshot of it (every row valid) ends on the only partition.
    async fn snapshot(sim: &mut Sim, courses: i64, halves: i32, lsn: u64, d: NaiveDate) -> Touched {
        let created = at(d, 60);
        sim.db
            .execute(
                "INSERT INTO reviews (id, course_id, user_id, rating, created_at)
                 SELECT g, g, 1, $1::int4 / 2.0, $2 FROM generate_series(1, $3::int8) g
                 ON CONFLICT (id) DO UPDATE SET rating = EXCLUDED.rating",
                &[&halves, &created, &courses],
            )
            .await
            .unwrap();
        let version = PgLsn::from(Lsn(lsn));
        sim.db
            .execute(
                "INSERT INTO review_verdicts (review_id, version, verdict, score, model)
                 SELECT g, $1, 'valid', 0, 'test' FROM generate_series(1, $2::int8) g",
                &[&version, &courses],
            )
            .await
            .unwrap();
        let tx = sim.db.transaction().await.unwrap();
        let (mut state, _) = begin(&tx, Hold::Exclusive).await.unwrap();
        restating::begin(&tx, &mut state, Lsn(lsn)).await.unwrap();
        let mut copy = Deltas::default();
        for id in 1..=courses {
            let row = ReviewRow {
                id,
                course_id: id,
                user_id: Some(1),
                rating: Rating::from_halves(halves as u8).unwrap(),
                title: None,
                content: None,
                created_at: created,
                updated_at: Some(created),
            };
            copy.add(&row, 1);
        }
        apply(&tx, &copy, state.today()).await.unwrap();
        let changed = restating::partition_done(&tx, &mut state, 0, 1, Lsn(lsn))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        changed
    }

    // At the bound, every course is named.
    let Touched::Courses(mut named) = snapshot(&mut sim, bound, 8, 0x2_0000_0000, d).await else {
        panic!("{bound} changed courses are named");
    };
    named.sort_unstable();
    assert_eq!(named, (1..=bound).collect::<Vec<_>>());
    sim.assert_true_at(d).await;

    // One more course, and every rating changed: past the bound.
    assert_eq!(
        snapshot(&mut sim, bound + 1, 4, 0x3_0000_0000, d).await,
        Touched::All
    );
    assert_eq!(sim.count("course_stats").await, bound + 1);
    assert_eq!(sim.figures(bound + 1).await.0, 1);
    sim.assert_true_at(d).await;
}
