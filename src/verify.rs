//! `reviewflow verify`: the invariant of DESIGN.md as a check. Runs the from-scratch truth
//! query (sql/truth.sql) and compares it, figure by figure, with what the stats sink wrote.
//! A course missing on one side counts as a course with no review on that side.

use tokio_postgres::Client;

use crate::error::Result;

pub const TRUTH_SQL: &str = include_str!("../sql/truth.sql");

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

pub async fn verify(client: &Client) -> Result<Report> {
    let query = format!(
        "WITH truth AS ({TRUTH_SQL}),
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
    let rows = client.query(&query, &[]).await?;
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
            &format!("SELECT count(*) FROM (SELECT course_id FROM ({TRUTH_SQL}) t UNION SELECT course_id FROM course_stats) c"),
            &[],
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
