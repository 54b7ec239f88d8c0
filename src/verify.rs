//! `reviewflow verify`: the invariant of DESIGN.md as a check. Runs the from-scratch truth
//! query (sql/truth.sql) and compares it, figure by figure, with what the stats sink wrote.
//! A course missing on one side counts as a course with no review on that side.

use chrono::NaiveDate;
use tokio_postgres::Client;

use crate::error::Result;

pub const TRUTH_SQL: &str = include_str!("../sql/truth.sql");

/// How truth.sql names "today", kept so the file stays runnable by hand in psql; `verify_at`
/// swaps it for a parameter to compute the truth as of any day.
const TODAY: &str = "(now() AT TIME ZONE 'UTC')::date";

/// truth.sql with every mention of today replaced by the date parameter `$1`.
fn truth_sql_at() -> String {
    TRUTH_SQL.replace(TODAY, "$1::date")
}

/// One figure of one course that differs from the truth; values as JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub course_id: i64,
    pub figure: String,
    pub expected: String,
    pub actual: String,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub courses: i64,
    pub differences: Vec<Difference>,
}

/// Compares course_stats with the truth as of the server's current UTC day.
pub async fn verify(client: &Client) -> Result<Report> {
    verify_at(client, None).await
}

/// Compares course_stats with the truth as of the UTC day `today` (None: the server's).
pub async fn verify_at(client: &Client, today: Option<NaiveDate>) -> Result<Report> {
    let today: NaiveDate = match today {
        Some(day) => day,
        None => client
            .query_one(&format!("SELECT {TODAY}"), &[])
            .await?
            .get(0),
    };
    let truth = truth_sql_at();
    let query = format!(
        "WITH truth AS ({truth}),
         expected AS (SELECT course_id, to_jsonb(t) - 'course_id' AS f FROM truth t),
         actual AS (SELECT course_id, to_jsonb(s) - 'course_id' - 'updated_at' AS f FROM course_stats s),
         pairs AS (
             SELECT course_id, coalesce(e.f, {ZERO}) AS ef, coalesce(a.f, {ZERO}) AS af
             FROM expected e FULL JOIN actual a USING (course_id))
         SELECT course_id, key, ev::text, (af -> key)::text
         FROM pairs, LATERAL jsonb_each(ef) AS x(key, ev)
         WHERE ev IS DISTINCT FROM af -> key
         ORDER BY course_id, key"
    );
    let rows = client.query(&query, &[&today]).await?;
    let differences = rows
        .iter()
        .map(|r| Difference {
            course_id: r.get(0),
            figure: r.get(1),
            expected: r.get(2),
            actual: r
                .get::<_, Option<String>>(3)
                .unwrap_or_else(|| "(missing)".into()),
        })
        .collect();
    let courses: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM (SELECT course_id FROM ({truth}) t UNION SELECT course_id FROM course_stats) c"),
            &[&today],
        )
        .await?
        .get(0);
    Ok(Report {
        courses,
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
    fn the_truth_at_a_day_no_longer_reads_the_clock() {
        assert!(
            TRUTH_SQL.contains(TODAY),
            "truth.sql no longer names today as {TODAY}: update verify.rs with it"
        );
        let at = truth_sql_at();
        assert!(
            !at.contains("now()"),
            "truth.sql reads the clock elsewhere:\n{at}"
        );
        assert!(!at.contains("CURRENT_DATE") && !at.contains("current_date"));
        assert!(at.contains("> $1::date - 90"), "{at}");
    }
}
