//! Per-course figures: the arithmetic of the stats worker, done in PostgreSQL.
//!
//! A batch of reviews.valid events is folded into [`Deltas`] (each `after` image added, each
//! `before` image retracted) and applied to three tables: the per-day buckets
//! (course_daily_stats), the multiset of creation times (course_review_times) and the figures
//! websites read (course_stats). Every figure moves by the deltas, the 90-day ones by the
//! deltas of days inside the window; days leaving the window are taken out by [`roll_days`],
//! which recomputes the 90-day figures of the courses that had reviews on them, even when no
//! review arrives. `last_review_at` moves up with the newest creation time added and is looked
//! up in the multiset only when a batch takes back a review at least as new as it.
//!
//! Guarantee: after `apply` (and `roll_days` for the same day) the touched courses hold exactly
//! what sql/truth.sql computes for that day. That rests on two rules the callers keep. The
//! 90-day figures of a course are the sum of its buckets after the floor of the day last
//! rolled to, so `apply` is given that day (`StatsState::today` once `roll_days` ran), and
//! the copies of a snapshot in flight roll with the real tables ([`expire`]). And every
//! writer of these tables first takes the stats lock (`super::state::lock_state`) in the same
//! transaction, so the read-then-write steps here never race another writer of the same
//! course.
//!
//! The statements of a step are pipelined (sent together, run in order, one round trip) and
//! typed rather than prepared, which would cost a round trip each.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Days, NaiveDate, Timelike, Utc};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Transaction;

use super::state::{Hold, StatsState};
use crate::contract::image::ReviewRow;
use crate::contract::lsn::SourcePosition;
use crate::error::Result;

/// The figures of one bucket, or their change: review count, rating sum in half stars (so
/// sums stay integers until PostgreSQL divides them into numeric) and the star histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Figures {
    count: i64,
    halves: i64,
    stars: [i64; 6],
}

impl Figures {
    fn add(&mut self, other: &Figures) {
        self.count += other.count;
        self.halves += other.halves;
        for (s, o) in self.stars.iter_mut().zip(other.stars) {
            *s += o;
        }
    }

    fn is_zero(&self) -> bool {
        *self == Figures::default()
    }
}

/// What one batch changes, per course: additions (the `after` image, sign +1) and retractions
/// (`before`, sign -1). Keys are ordered so rows are always written in one order.
#[derive(Debug, Default)]
pub struct Deltas {
    days: BTreeMap<(i64, NaiveDate), Figures>,
    times: BTreeMap<(i64, DateTime<Utc>), i64>,
    touched: BTreeSet<i64>,
}

impl Deltas {
    /// Adds `other`'s changes to these.
    pub fn absorb(&mut self, other: Deltas) {
        for (key, f) in other.days {
            self.days.entry(key).or_default().add(&f);
        }
        for (key, n) in other.times {
            *self.times.entry(key).or_default() += n;
        }
        self.touched.extend(other.touched);
    }

    /// Adds (`sign` = +1) or retracts (`sign` = -1) one review image.
    pub fn add(&mut self, row: &ReviewRow, sign: i64) {
        debug_assert!(sign == 1 || sign == -1, "sign is +1 or -1, got {sign}");
        let rating = row.rating;
        let mut one = Figures {
            count: sign,
            halves: sign * i64::from(rating.halves()),
            ..Figures::default()
        };
        one.stars[rating.star_bucket()] = sign;
        // The day as PostgreSQL computes it: (created_at AT TIME ZONE 'UTC')::date.
        let day = row.created_at.date_naive();
        self.days.entry((row.course_id, day)).or_default().add(&one);
        // timestamptz keeps microseconds; two instants PostgreSQL cannot tell apart must
        // share one key, or one MERGE would hit the same row twice.
        let created = row.created_at;
        let created =
            created - chrono::TimeDelta::nanoseconds(i64::from(created.nanosecond() % 1000));
        *self.times.entry((row.course_id, created)).or_default() += sign;
        self.touched.insert(row.course_id);
    }

    pub fn is_empty(&self) -> bool {
        self.touched.is_empty()
    }

    /// Distinct courses touched, including those whose changes cancelled out.
    pub fn courses(&self) -> usize {
        self.touched.len()
    }

    /// The distinct courses touched, in order.
    pub fn touched(&self) -> impl Iterator<Item = i64> + '_ {
        self.touched.iter().copied()
    }

    /// What the batch changes per touched course, as of the window whose last day outside
    /// it is `floor`; a course whose changes cancelled has all zeros and no times.
    fn per_course(&self, floor: NaiveDate) -> BTreeMap<i64, CourseChange> {
        let mut courses: BTreeMap<i64, CourseChange> = self
            .touched
            .iter()
            .map(|&c| (c, CourseChange::default()))
            .collect();
        for ((course, day), f) in &self.days {
            let change = courses.entry(*course).or_default();
            change.all.add(f);
            if *day > floor {
                change.recent.add(f);
            }
        }
        // Keys are in time order per course, so the last of each sign is its newest.
        for ((course, at), n) in &self.times {
            let change = courses.entry(*course).or_default();
            match n.signum() {
                1 => change.added = Some(*at),
                -1 => change.retracted = Some(*at),
                _ => {}
            }
        }
        courses
    }
}

/// One course's part of a batch.
#[derive(Debug, Default, PartialEq)]
struct CourseChange {
    all: Figures,
    /// The part on days inside the 90-day window.
    recent: Figures,
    /// The newest creation time the batch adds on balance, and the newest it takes back.
    added: Option<DateTime<Utc>>,
    retracted: Option<DateTime<Utc>>,
}

/// Figures as parallel arrays, the shape `unnest` takes them in.
#[derive(Default)]
struct Columns {
    count: Vec<i64>,
    halves: Vec<i64>,
    stars: [Vec<i64>; 6],
}

impl Columns {
    fn push(&mut self, f: &Figures) {
        self.count.push(f.count);
        self.halves.push(f.halves);
        for (column, s) in self.stars.iter_mut().zip(f.stars) {
            column.push(s);
        }
    }

    /// Count, halves, stars 0..5: eight parameters, in the order the statements number them.
    fn params(&self) -> impl Iterator<Item = Param<'_>> {
        [&self.count, &self.halves]
            .into_iter()
            .chain(&self.stars)
            .map(|c| (c as &(dyn ToSql + Sync), Type::INT8_ARRAY))
    }
}

/// A statement's parameter with its type, as `query_typed` takes it.
type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// Applies the deltas of one batch, in three statements whatever its size, pipelined:
/// buckets, creation times, then course_stats (every figure moved by its delta, the 90-day
/// ones by the days inside the window ending `today`), which sees what the two before it
/// wrote because PostgreSQL runs a pipeline's statements in the order sent.
///
/// `today` must be the day the window was last rolled to (`roll_days`): the 90-day figures
/// are sums over the buckets after its floor, and a delta for another window would bend them.
pub async fn apply(tx: &Transaction<'_>, deltas: &Deltas, today: NaiveDate) -> Result<()> {
    if deltas.is_empty() {
        return Ok(());
    }

    // Cancelled buckets are left out: a zero delta would insert an all-zero row.
    let (mut day_courses, mut days, mut day_figures) = (vec![], vec![], Columns::default());
    for ((course, day), f) in deltas.days.iter().filter(|(_, f)| !f.is_zero()) {
        day_courses.push(*course);
        days.push(*day);
        day_figures.push(f);
    }
    let mut day_params: Vec<Param> =
        vec![(&day_courses, Type::INT8_ARRAY), (&days, Type::DATE_ARRAY)];
    day_params.extend(day_figures.params());

    let (mut time_courses, mut times, mut time_counts) = (vec![], vec![], vec![]);
    for ((course, at), n) in deltas.times.iter().filter(|(_, n)| **n != 0) {
        time_courses.push(*course);
        times.push(*at);
        time_counts.push(*n);
    }
    let time_params: [Param; 3] = [
        (&time_courses, Type::INT8_ARRAY),
        (&times, Type::TIMESTAMPTZ_ARRAY),
        (&time_counts, Type::INT8_ARRAY),
    ];

    let (mut courses, mut all, mut recent) = (vec![], Columns::default(), Columns::default());
    let (mut added, mut retracted) = (vec![], vec![]);
    for (course, change) in deltas.per_course(window_floor(today)) {
        courses.push(course);
        all.push(&change.all);
        recent.push(&change.recent);
        added.push(change.added);
        retracted.push(change.retracted);
    }
    let mut course_params: Vec<Param> = vec![(&courses, Type::INT8_ARRAY)];
    course_params.extend(all.params());
    course_params.extend(recent.params());
    course_params.push((&added, Type::TIMESTAMPTZ_ARRAY));
    course_params.push((&retracted, Type::TIMESTAMPTZ_ARRAY));

    let (by_index, plan_freely) = if deltas.courses() <= PROBE_AT_MOST {
        (BY_INDEX, PLAN_FREELY)
    } else {
        ("SELECT", "SELECT")
    };
    // Empty arrays merge nothing: sending them keeps the pipeline one shape.
    tokio::try_join!(
        tx.query_typed(by_index, &[]),
        tx.query_typed(MERGE_DAYS, &day_params),
        tx.query_typed(MERGE_TIMES, &time_params),
        tx.query_typed(MERGE_COURSES, &course_params),
        tx.query_typed(plan_freely, &[]),
    )?;
    Ok(())
}

/// A batch of at most this many courses has its rows looked up by primary key; a larger one
/// (a rebuild applies a whole history at once) leaves the plan to PostgreSQL.
const PROBE_AT_MOST: usize = 20_000;

/// The merges look their rows up by primary key. Left to choose, PostgreSQL's planner joins a
/// batch to the whole table with a hash join, reading every row of it: measured under
/// saturation with 100,000 courses, about 12 ms per statement whatever the batch's size,
/// most of the stats worker's time in PostgreSQL (BENCHMARKS.md). Probing the index for a
/// worker's batch (at most --batch-records changes) costs a fraction of that. The old
/// settings are kept in the transaction's own variables, for PLAN_FREELY to put back.
const BY_INDEX: &str =
    "SELECT set_config('reviewflow.enable_hashjoin', current_setting('enable_hashjoin'), true),
       set_config('reviewflow.enable_mergejoin', current_setting('enable_mergejoin'), true),
       set_config('enable_hashjoin', 'off', true),
       set_config('enable_mergejoin', 'off', true)";

/// The planner's settings back as they were (pg_settings' reset_val would be a view over
/// every setting: 0.5 ms a batch).
const PLAN_FREELY: &str = "SELECT
       set_config('enable_hashjoin', current_setting('reviewflow.enable_hashjoin'), true),
       set_config('enable_mergejoin', current_setting('reviewflow.enable_mergejoin'), true)";

/// Days that left the window: those after `after` (every day, when unset) up to `floor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Expiry {
    after: Option<NaiveDate>,
    floor: NaiveDate,
}

/// Day rollover: refreshes the 90-day figures of exactly the courses that have a bucket
/// which left the window since `state.rolled_through` (every course with an expired bucket
/// when it is unset), then records `today` and notifies the refreshed courses (see `notify`).
/// Returns the days that expired, with the number of courses refreshed; `None` and no write
/// when `today` was already rolled or the lock is held shared. The copies of a snapshot in
/// flight are the caller's to roll by the same expiry ([`expire`]), once aimed at them.
pub(super) async fn roll_days(
    tx: &Transaction<'_>,
    state: &mut StatsState,
    today: NaiveDate,
) -> Result<Option<(Expiry, u64)>> {
    // A shared holder leaves it to the next exclusive one: midnight passed after its lock
    // was taken, and only a writer alone may touch every course.
    if state.hold == Hold::Shared || state.rolled_through.is_some_and(|r| r >= today) {
        return Ok(None);
    }
    let expiry = Expiry {
        after: state.rolled_through.map(window_floor),
        floor: window_floor(today),
    };
    let refreshed: Vec<i64> = tx
        .query(ROLL_DAYS, &[&expiry.after, &expiry.floor])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Delivered to the api's listeners only if the rollover commits.
    super::notify::notify(
        tx,
        &crate::contract::notify::Touched::Courses(refreshed.clone()),
    )
    .await?;
    tx.execute("UPDATE stats_state SET rolled_through = $1", &[&today])
        .await?;
    state.rolled_through = Some(today);
    Ok(Some((expiry, refreshed.len() as u64)))
}

/// Takes the days of `expiry` out of the 90-day figures of the tables the transaction is
/// aimed at: the copies of a snapshot in flight, which `roll_days` left as they were. Their
/// figures moved by the same deltas, so without it a review of an expired day taken back
/// later would be subtracted from a window that never dropped it.
pub(super) async fn expire(tx: &Transaction<'_>, expiry: &Expiry) -> Result<u64> {
    Ok(tx
        .execute(ROLL_DAYS, &[&expiry.after, &expiry.floor])
        .await?)
}

/// TRUNCATE of reviews at source position `id`: empties the derived tables unless a truncate
/// at or after it was already applied (a re-sent event, or the same truncate seen on another
/// partition). Returns whether it emptied them.
pub async fn reset(
    tx: &Transaction<'_>,
    state: &mut StatsState,
    id: SourcePosition,
) -> Result<bool> {
    debug_assert_eq!(state.hold, Hold::Exclusive, "a TRUNCATE is applied alone");
    if state.voids(id) {
        return Ok(false);
    }
    let SourcePosition { lsn, position } = id;
    // course_stats is streamed to the compacted topic course-stats, where only row deletes
    // (which carry the key) can say a course's figures are gone; the helper tables are not
    // streamed, so TRUNCATE, whose cost does not grow with their size, empties them.
    tx.batch_execute("DELETE FROM course_stats; TRUNCATE course_daily_stats, course_review_times")
        .await?;
    tx.execute(
        "UPDATE stats_state SET truncated_lsn = $1, truncated_position = $2",
        &[&(lsn.0 as i64), &position],
    )
    .await?;
    state.truncated_lsn = lsn;
    state.truncated_position = position;
    Ok(true)
}

/// The last day outside the 90-day window ending `today`: a review is recent when its day is
/// after this one (DESIGN.md: day > today - 90).
fn window_floor(today: NaiveDate) -> NaiveDate {
    today - Days::new(90)
}

/// Buckets += deltas; a bucket that reaches all zeros is deleted so the table only holds days
/// that have reviews (and the rollover only visits courses that lose something).
const MERGE_DAYS: &str = "
MERGE INTO course_daily_stats t
USING (SELECT * FROM unnest($1::int8[], $2::date[], $3::int8[], $4::int8[], $5::int8[],
                            $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[])
                  AS u(course_id, day, n, halves, s0, s1, s2, s3, s4, s5)) d
ON t.course_id = d.course_id AND t.day = d.day
WHEN MATCHED AND t.review_count + d.n = 0 AND t.rating_sum * 2 + d.halves = 0
             AND t.stars_0 + d.s0 = 0 AND t.stars_1 + d.s1 = 0 AND t.stars_2 + d.s2 = 0
             AND t.stars_3 + d.s3 = 0 AND t.stars_4 + d.s4 = 0 AND t.stars_5 + d.s5 = 0 THEN
    DELETE
WHEN MATCHED THEN
    UPDATE SET review_count = t.review_count + d.n,
               rating_sum = t.rating_sum + d.halves / 2.0,
               stars_0 = t.stars_0 + d.s0, stars_1 = t.stars_1 + d.s1,
               stars_2 = t.stars_2 + d.s2, stars_3 = t.stars_3 + d.s3,
               stars_4 = t.stars_4 + d.s4, stars_5 = t.stars_5 + d.s5
WHEN NOT MATCHED THEN
    INSERT (course_id, day, review_count, rating_sum,
            stars_0, stars_1, stars_2, stars_3, stars_4, stars_5)
    VALUES (d.course_id, d.day, d.n, d.halves / 2.0, d.s0, d.s1, d.s2, d.s3, d.s4, d.s5)";

/// The multiset of creation times += deltas, an entry reaching zero deleted, so max() over a
/// course's entries is the newest valid review.
const MERGE_TIMES: &str = "
MERGE INTO course_review_times t
USING (SELECT * FROM unnest($1::int8[], $2::timestamptz[], $3::int8[])
                  AS u(course_id, created_at, n)) d
ON t.course_id = d.course_id AND t.created_at = d.created_at
WHEN MATCHED AND t.review_count + d.n = 0 THEN
    DELETE
WHEN MATCHED THEN
    UPDATE SET review_count = t.review_count + d.n
WHEN NOT MATCHED THEN
    INSERT (course_id, created_at, review_count) VALUES (d.course_id, d.created_at, d.n)";

/// Every figure += its delta (the row created when missing). last_review_at rises to the
/// newest time added, unless a time at least as new was taken back: then it is the newest
/// left in the multiset, which the statement before this one updated. A CASE evaluates only
/// the branch it takes, so that lookup is made for those courses alone. MERGE rather than
/// INSERT .. ON CONFLICT because the update needs the batch's retracted time, which is no
/// column of course_stats; no two writers insert one course (see the module's lock rule).
const MERGE_COURSES: &str = "
MERGE INTO course_stats s
USING (SELECT * FROM unnest($1::int8[],
                            $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[],
                            $7::int8[], $8::int8[], $9::int8[],
                            $10::int8[], $11::int8[], $12::int8[], $13::int8[], $14::int8[],
                            $15::int8[], $16::int8[], $17::int8[],
                            $18::timestamptz[], $19::timestamptz[])
           AS u(course_id, n, halves, s0, s1, s2, s3, s4, s5,
                rn, rhalves, r0, r1, r2, r3, r4, r5, added, retracted)) d
ON s.course_id = d.course_id
WHEN MATCHED THEN
    UPDATE SET
        review_count = s.review_count + d.n,
        rating_sum = s.rating_sum + d.halves / 2.0,
        stars_0 = s.stars_0 + d.s0, stars_1 = s.stars_1 + d.s1, stars_2 = s.stars_2 + d.s2,
        stars_3 = s.stars_3 + d.s3, stars_4 = s.stars_4 + d.s4, stars_5 = s.stars_5 + d.s5,
        last_review_at = CASE WHEN d.retracted >= s.last_review_at
            THEN (SELECT max(t.created_at) FROM course_review_times t
                  WHERE t.course_id = d.course_id)
            ELSE greatest(s.last_review_at, d.added) END,
        recent_review_count = s.recent_review_count + d.rn,
        recent_rating_sum = s.recent_rating_sum + d.rhalves / 2.0,
        recent_stars_0 = s.recent_stars_0 + d.r0, recent_stars_1 = s.recent_stars_1 + d.r1,
        recent_stars_2 = s.recent_stars_2 + d.r2, recent_stars_3 = s.recent_stars_3 + d.r3,
        recent_stars_4 = s.recent_stars_4 + d.r4, recent_stars_5 = s.recent_stars_5 + d.r5,
        updated_at = now()
WHEN NOT MATCHED THEN
    INSERT (course_id, review_count, rating_sum,
            stars_0, stars_1, stars_2, stars_3, stars_4, stars_5,
            last_review_at,
            recent_review_count, recent_rating_sum,
            recent_stars_0, recent_stars_1, recent_stars_2,
            recent_stars_3, recent_stars_4, recent_stars_5,
            updated_at)
    VALUES (d.course_id, d.n, d.halves / 2.0, d.s0, d.s1, d.s2, d.s3, d.s4, d.s5,
            d.added,
            d.rn, d.rhalves / 2.0, d.r0, d.r1, d.r2, d.r3, d.r4, d.r5,
            now())";

/// The courses with a bucket in (previous floor, new floor] (found through
/// course_daily_stats_day_idx, so a day where nothing expires costs one index probe), their
/// 90-day figures recomputed from the buckets still inside the window.
const ROLL_DAYS: &str = "
WITH c AS (
    SELECT DISTINCT course_id FROM course_daily_stats
    WHERE day > coalesce($1::date, '-infinity'::date) AND day <= $2::date
),
recent AS (
    SELECT c.course_id,
           coalesce(sum(w.review_count), 0)::int8 AS review_count,
           coalesce(sum(w.rating_sum), 0) AS rating_sum,
           coalesce(sum(w.stars_0), 0)::int8 AS stars_0,
           coalesce(sum(w.stars_1), 0)::int8 AS stars_1,
           coalesce(sum(w.stars_2), 0)::int8 AS stars_2,
           coalesce(sum(w.stars_3), 0)::int8 AS stars_3,
           coalesce(sum(w.stars_4), 0)::int8 AS stars_4,
           coalesce(sum(w.stars_5), 0)::int8 AS stars_5
    FROM c LEFT JOIN course_daily_stats w ON w.course_id = c.course_id AND w.day > $2::date
    GROUP BY c.course_id
)
UPDATE course_stats s SET
    recent_review_count = r.review_count,
    recent_rating_sum = r.rating_sum,
    recent_stars_0 = r.stars_0, recent_stars_1 = r.stars_1, recent_stars_2 = r.stars_2,
    recent_stars_3 = r.stars_3, recent_stars_4 = r.stars_4, recent_stars_5 = r.stars_5,
    updated_at = now()
FROM recent r
WHERE s.course_id = r.course_id
RETURNING s.course_id";

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::contract::review::Rating;

    fn row(id: i64, course_id: i64, halves: u8, created_at: DateTime<Utc>) -> ReviewRow {
        ReviewRow {
            id,
            course_id,
            user_id: Some(1),
            rating: Rating::from_halves(halves).unwrap(),
            title: None,
            content: None,
            created_at,
            updated_at: Some(created_at),
        }
    }

    #[test]
    fn an_add_and_its_retraction_cancel_but_keep_the_course_touched() {
        let at = Utc.with_ymd_and_hms(2024, 5, 1, 23, 59, 59).unwrap();
        let mut d = Deltas::default();
        assert!(d.is_empty());
        d.add(&row(1, 7, 9, at), 1);
        d.add(&row(2, 8, 1, at), 1);
        d.add(&row(1, 7, 9, at), -1);
        assert_eq!(d.courses(), 2);
        assert!(d.days[&(7, at.date_naive())].is_zero());
        assert_eq!(d.times[&(7, at)], 0);
        let per_course = d.per_course(window_floor(at.date_naive()));
        assert_eq!(per_course[&7], CourseChange::default());
        let one = Figures {
            count: 1,
            halves: 1,
            stars: [1, 0, 0, 0, 0, 0],
        };
        assert_eq!(
            per_course[&8],
            CourseChange {
                all: one,
                recent: one,
                added: Some(at),
                retracted: None,
            }
        );
    }

    #[test]
    fn the_window_takes_only_its_days_and_the_newest_times_are_kept_per_sign() {
        let today = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        let floor = window_floor(today);
        let noon = |day: NaiveDate| day.and_hms_opt(12, 0, 0).unwrap().and_utc();
        let (edge, inside, newest) = (noon(floor), noon(floor + Days::new(1)), noon(today));
        let mut d = Deltas::default();
        d.add(&row(1, 7, 10, edge), 1);
        d.add(&row(2, 7, 4, inside), 1);
        d.add(&row(3, 7, 6, newest), -1);
        d.add(&row(4, 7, 2, inside), -1);
        d.add(&row(5, 7, 2, edge + chrono::TimeDelta::hours(1)), -1);
        let change = &d.per_course(floor)[&7];
        // The reviews on the floor's day are outside the window: all-time only.
        assert_eq!((change.all.count, change.all.halves), (-1, 4));
        assert_eq!((change.recent.count, change.recent.halves), (-1, -4));
        assert_eq!(change.recent.stars, [0, -1, 1, -1, 0, 0]);
        // `inside` cancelled: the newest added is the edge, the newest taken back today's.
        assert_eq!((change.added, change.retracted), (Some(edge), Some(newest)));
    }

    #[test]
    fn instants_are_keyed_at_the_microsecond_postgres_keeps() {
        let at = Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap();
        let mut d = Deltas::default();
        d.add(
            &row(1, 7, 4, at + chrono::TimeDelta::nanoseconds(1_000_400)),
            1,
        );
        d.add(
            &row(2, 7, 4, at + chrono::TimeDelta::nanoseconds(1_000_900)),
            1,
        );
        assert_eq!(
            d.times.into_iter().collect::<Vec<_>>(),
            [((7, at + chrono::TimeDelta::microseconds(1000)), 2)]
        );
    }

    #[test]
    fn the_window_is_the_90_days_ending_today() {
        let today = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        assert_eq!(
            window_floor(today),
            NaiveDate::from_ymd_opt(2023, 12, 2).unwrap()
        );
    }
}
