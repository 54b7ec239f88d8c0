//! `reviewflow verify`: the invariant of DESIGN.md as a check against the tables themselves,
//! in one read-only snapshot, never against a topic:
//!
//! - the figures: the from-scratch truth query (sql/truth.sql) compared, figure by figure,
//!   with what the stats sink wrote (a course missing on one side counts as a course with no
//!   review on that side), as of the database's UTC day (`reviewflow_today()`, migration V8:
//!   the clock the stats worker rolls the 90-day window by, and the one tests move);
//! - the rows (`rows`): every current row of `reviews` has exactly one verdict for its current
//!   image, the one the model gives it, so a lost insert or edit fails even when no figure
//!   moved (a row judged fraud, a text-only edit);
//! - the reviews that are gone (`deleted`): a review with verdicts but no row was deleted,
//!   and the pipeline must have seen that delete, so a lost delete fails even when no
//!   figure moved (a review judged fraud).
//!
//! Every difference names the review (for a row) and its course.

mod deleted;
mod rows;

use std::fmt;

use tokio_postgres::Client;

use crate::error::Result;

pub const TRUTH_SQL: &str = include_str!("../../../sql/truth.sql");

/// One thing that differs from the truth: a figure of a course (values as JSON text), or
/// what a review's verdict should be (`verdict`, `digest`, `model`, `oversize`).
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// The review whose verdict differs; None for a figure of a course.
    pub review_id: Option<i64>,
    /// The figure's course, or the review's (None: a review without a course).
    pub course_id: Option<i64>,
    pub figure: String,
    pub expected: String,
    pub actual: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let course = self
            .course_id
            .map_or_else(|| "(none)".to_string(), |c| c.to_string());
        match self.review_id {
            Some(review) => write!(f, "review {review:>8} course {course:>8}  ")?,
            None => write!(f, "course {course:>8}  ")?,
        }
        write!(
            f,
            "{:<20} expected {:<24} actual {}",
            self.figure, self.expected, self.actual
        )
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub courses: i64,
    /// Rows of `reviews` checked (0 for a check of the figures alone).
    pub reviews: i64,
    /// Reviews with verdicts but no row (deleted) that were checked for a seen delete.
    pub gone: i64,
    /// Figures first (by course, then figure), then reviews by id.
    pub differences: Vec<Difference>,
}

/// The whole check, the figures as of the database's UTC day (`reviewflow_today()`), in one
/// read-only snapshot under the session settings cdc reads values with (set here as well as
/// at connection start: `client` may come from a caller that did not connect through `db`).
pub async fn verify(client: &Client) -> Result<Report> {
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {}",
            crate::db::text_output_sql(true)
        ))
        .await?;
    let checked = async {
        let mut report = figures(client).await?;
        let mut reviews = Vec::new();
        report.reviews = rows::check(client, &mut reviews).await?;
        report.gone = deleted::check(client, &mut reviews).await?;
        reviews.sort_by_key(|d| d.review_id);
        report.differences.extend(reviews);
        Ok::<_, crate::Error>(report)
    }
    .await;
    let end = if checked.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    client.batch_execute(end).await?;
    checked
}

/// The figures alone: course_stats against the truth as of the database's day. For tests
/// that drive the stats worker without the fraud worker's verdicts.
pub async fn figures(client: &Client) -> Result<Report> {
    // One evaluation of the truth for both the differences and the count of courses: the
    // first row carries the count (its course_id NULL), the others a difference each.
    let query = format!(
        "WITH truth AS ({TRUTH_SQL}),
         expected AS (SELECT course_id, to_jsonb(t) - 'course_id' AS f FROM truth t),
         actual AS (SELECT course_id, to_jsonb(s) - 'course_id' - 'updated_at' AS f FROM course_stats s),
         pairs AS MATERIALIZED (
             SELECT course_id, coalesce(e.f, {ZERO}) AS ef, coalesce(a.f, {ZERO}) AS af
             FROM expected e FULL JOIN actual a USING (course_id))
         SELECT NULL::bigint, NULL::text, NULL::text, count(*)::text, 0 AS kind FROM pairs
         UNION ALL
         (SELECT course_id, key, ev::text, (af -> key)::text, 1
          FROM pairs, LATERAL jsonb_each(ef) AS x(key, ev)
          WHERE ev IS DISTINCT FROM af -> key
          ORDER BY course_id, key)"
    );
    let rows = client.query(&query, &[]).await?;
    let mut courses = 0;
    let mut differences = Vec::new();
    for r in &rows {
        if r.get::<_, i32>(4) == 0 {
            courses = r
                .get::<_, Option<String>>(3)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            continue;
        }
        differences.push(Difference {
            review_id: None,
            course_id: Some(r.get(0)),
            figure: r.get(1),
            expected: r.get(2),
            actual: r
                .get::<_, Option<String>>(3)
                .unwrap_or_else(|| "(missing)".into()),
        });
    }
    Ok(Report {
        courses,
        reviews: 0,
        gone: 0,
        differences,
    })
}

/// The figures of a course without a single valid review.
const ZERO: &str = "jsonb_build_object(
    'review_count', 0, 'rating_sum', 0, 'rating_avg', null,
    'stars_0', 0, 'stars_1', 0, 'stars_2', 0, 'stars_3', 0, 'stars_4', 0, 'stars_5', 0,
    'last_review_at', null,
    'recent_review_count', 0, 'recent_rating_sum', 0, 'recent_rating_avg', null,
    'recent_stars_0', 0, 'recent_stars_1', 0, 'recent_stars_2', 0, 'recent_stars_3', 0,
    'recent_stars_4', 0, 'recent_stars_5', 0)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_truth_reads_the_day_from_the_databases_clock_alone() {
        assert!(
            TRUTH_SQL.contains("> reviewflow_today() - 90"),
            "{TRUTH_SQL}"
        );
        let lower = TRUTH_SQL.to_lowercase();
        for other in [
            "now()",
            "current_date",
            "current_timestamp",
            "localtimestamp",
        ] {
            assert!(!lower.contains(other), "truth.sql reads {other}");
        }
    }
}
