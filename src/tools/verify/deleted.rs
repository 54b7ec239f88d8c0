//! The check of the reviews that are gone: review_verdicts keeps a deleted review's verdicts
//! (history), so a review id with verdicts and no row in `reviews` is a delete the pipeline
//! either saw or lost. It saw it when review_deletions holds a delete of that id newer than
//! its newest verdict, or verdicts_state a truncate (or snapshot replay) newer than it;
//! otherwise it is a difference, named by the review and the course its newest verdict
//! judged. One set-based query: an anti-join of the verdicts with the table, so only the
//! gone reviews are ordered and compared.

use tokio_postgres::Client;

use super::Difference;
use crate::error::Result;
use crate::source::snapshot::TABLE_SCHEMA;

/// Appends a difference for every lost delete (in the caller's transaction); returns how
/// many gone reviews it looked at.
pub async fn check(client: &Client, differences: &mut Vec<Difference>) -> Result<i64> {
    let rows = client
        .query(
            &format!(
                "WITH gone AS (
                     SELECT DISTINCT ON (v.review_id) v.review_id, v.course_id, v.version, v.position
                     FROM review_verdicts v
                     WHERE NOT EXISTS (SELECT FROM {TABLE_SCHEMA}.reviews r WHERE r.id = v.review_id)
                     ORDER BY v.review_id, v.version DESC, v.position DESC)
                 SELECT g.review_id, g.course_id, g.version::text,
                        d.version::text, d.position,
                        (d.version, d.position) > (g.version, g.position)
                            OR (s.deleted_before_lsn, s.deleted_before_position)
                               > (g.version, g.position) AS seen
                 FROM gone g
                 LEFT JOIN review_deletions d ON d.review_id = g.review_id
                 LEFT JOIN verdicts_state s ON true
                 ORDER BY g.review_id"
            ),
            &[],
        )
        .await?;
    for r in &rows {
        if r.get::<_, Option<bool>>(5) == Some(true) {
            continue;
        }
        let version: String = r.get(2);
        let deleted: Option<String> = r.get(3);
        let actual = match deleted {
            None => format!(
                "no row, and no delete seen since its newest verdict (at {version}): \
                 deleted but the pipeline did not see the delete"
            ),
            Some(at) => format!(
                "no row, and the last delete seen (at {at}, position {}) is older than its \
                 newest verdict (at {version}): deleted again but the pipeline did not see it",
                r.get::<_, i64>(4)
            ),
        };
        differences.push(Difference {
            review_id: Some(r.get(0)),
            course_id: r.get(1),
            figure: "delete".into(),
            expected: "a delete the pipeline saw".into(),
            actual,
        });
    }
    Ok(rows.len() as i64)
}
