//! Writes one page of imported reviews in one transaction, keyed by the source's review id.
//!
//! Guarantee: idempotent. A row is written only when it is new or something in it changed,
//! so importing the same reviews again writes nothing, and the pipeline sees no change
//! event. A row already there under the same id for another course is not overwritten (the
//! id belongs to some other review): it is reported back and left alone.

use tokio_postgres::Client;

use super::record::{Course, Imported};
use crate::error::Result;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// (review id, the course it is stored under) for ids another course already holds.
    pub foreign: Vec<(i64, i64)>,
}

/// The reviews must have distinct ids (one statement may not touch a row twice).
pub async fn write_page(db: &mut Client, course: i64, reviews: &[Imported]) -> Result<Written> {
    let tx = db.transaction().await?;
    let ids: Vec<i64> = reviews.iter().map(|r| r.id).collect();
    let foreign: Vec<(i64, i64)> = tx
        .query(
            "SELECT id, course_id FROM reviews WHERE id = ANY($1) AND course_id <> $2 ORDER BY id",
            &[&ids, &course],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mine: Vec<&Imported> = reviews
        .iter()
        .filter(|r| !foreign.iter().any(|(id, _)| *id == r.id))
        .collect();
    let ids: Vec<i64> = mine.iter().map(|r| r.id).collect();
    let users: Vec<i64> = mine.iter().map(|r| r.user_id).collect();
    let ratings: Vec<f64> = mine.iter().map(|r| r.rating.stars()).collect();
    let titles: Vec<Option<&str>> = mine.iter().map(|r| r.title.as_deref()).collect();
    let contents: Vec<Option<&str>> = mine.iter().map(|r| r.content.as_deref()).collect();
    let created: Vec<_> = mine.iter().map(|r| r.created_at).collect();
    // The WHERE of DO UPDATE makes an unchanged row no write at all (no new row version, no
    // WAL, no change event); the course_id test there also covers a row that moved courses
    // since the SELECT above. xmax = 0 tells a fresh insert from an update.
    let touched = tx
        .query(
            "INSERT INTO reviews AS r (id, course_id, user_id, rating, title, content, created_at)
             SELECT id, $1, user_id, rating::numeric(2,1), title, content, created_at
             FROM unnest($2::bigint[], $3::bigint[], $4::float8[], $5::text[], $6::text[],
                         $7::timestamptz[]) AS t(id, user_id, rating, title, content, created_at)
             ON CONFLICT (id) DO UPDATE SET
                 user_id = excluded.user_id, rating = excluded.rating, title = excluded.title,
                 content = excluded.content, created_at = excluded.created_at
             WHERE r.course_id = excluded.course_id
               AND (r.user_id, r.rating, r.title, r.content, r.created_at)
                   IS DISTINCT FROM (excluded.user_id, excluded.rating, excluded.title,
                                     excluded.content, excluded.created_at)
             RETURNING xmax = 0",
            &[
                &course, &ids, &users, &ratings, &titles, &contents, &created,
            ],
        )
        .await?;
    let inserted = touched.iter().filter(|row| row.get::<_, bool>(0)).count() as u64;
    let updated = touched.len() as u64 - inserted;
    // Explicit ids do not move the identity sequence; without this, the next POST /reviews
    // could be handed an id an imported review already holds.
    if let Some(highest) = ids.iter().max() {
        tx.execute(
            "SELECT setval(seq, $1)
             FROM (SELECT pg_get_serial_sequence('reviews', 'id')::regclass AS seq) s
             WHERE $1 > coalesce(pg_sequence_last_value(seq), 0)",
            &[highest],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Written {
        inserted,
        updated,
        unchanged: mine.len() as u64 - inserted - updated,
        foreign,
    })
}

/// Names the course in reviewflow_catalog.courses; a title and URL already stored as they
/// are is no write. Returns whether it wrote.
pub async fn write_course(db: &Client, course: i64, named: &Course) -> Result<bool> {
    let written = db
        .execute(
            "INSERT INTO reviewflow_catalog.courses AS c (id, title, url) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET title = excluded.title, url = excluded.url,
                                            updated_at = now()
             WHERE (c.title, c.url) IS DISTINCT FROM (excluded.title, excluded.url)",
            &[&course, &named.title, &named.url],
        )
        .await?;
    Ok(written > 0)
}
