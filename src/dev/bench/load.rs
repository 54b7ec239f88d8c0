//! The load: reviews written by SQL, as an application would, in the bench's own database.
//! The text is ordinary course talk without links, addresses or shouting, so the fraud model
//! passes nearly all of it and every review's effect reaches course_stats. Reproducible: the
//! same arguments write the same rows.

use tokio_postgres::{Client, Statement};

use crate::error::Result;

/// The row every writer inserts, from a course id and a running number `n`: its columns
/// up to the content, then the content.
const ROW: &str = "SELECT c, 1 + (c * 7919 + n) % 500000,
       (1 + (c * 31 + n) % 10) / 2.0,
       (ARRAY['Solid introduction', 'Worth the time', 'Great labs', 'Clear and practical',
              'Good but long', 'Excellent instructor'])[1 + (c + n) % 6],";
const CONTENT: &str = "
       (ARRAY['The explanations are clear and well paced.',
              'I came in knowing nothing and now I can build small projects.',
              'The instructor clearly knows the material, and the exercises match the lectures.',
              'The first half is great, the second half drags a little.',
              'Good value for the price; I finished it in two weekends.'])[1 + (c * 3 + n) % 5]";

/// One review for each of courses 1..=courses, in transactions of 1,000 rows.
pub async fn seed(client: &Client, courses: u64) -> Result<()> {
    write_series(client, courses, courses, 1000, CONTENT).await
}

/// `changes` reviews over courses 1..=courses, in transactions of 100 rows (as scripts and
/// applications write them), server-side so the client costs nothing.
pub async fn backlog(client: &Client, changes: u64, courses: u64) -> Result<()> {
    write_series(client, changes, courses, 100, CONTENT).await
}

/// Like `backlog`, with `bytes` (a multiple of 32) of content per row: hex digests, which
/// pglz cannot shrink, so a row of 2 KB is moved out of line (TOAST) as a user's long review
/// would be.
pub async fn wide_backlog(client: &Client, changes: u64, courses: u64, bytes: u64) -> Result<()> {
    let content = format!(
        "(SELECT string_agg(md5(n::text || ':' || i), '') FROM generate_series(1, {}) i)",
        bytes.div_ceil(32)
    );
    write_series(client, changes, courses, 100, &content).await
}

async fn write_series(
    client: &Client,
    rows: u64,
    courses: u64,
    per_txn: u64,
    content: &str,
) -> Result<()> {
    let (rows, courses, per_txn) = (rows as i64, courses as i64, per_txn as i64);
    // Separate statements: a DO that commits cannot run inside a multi-statement query.
    client.batch_execute("SET synchronous_commit = off").await?;
    client
        .batch_execute(&format!(
            "DO $$
             DECLARE lo bigint := 0;
             BEGIN
               WHILE lo < {rows} LOOP
                 INSERT INTO reviews (course_id, user_id, rating, title, content)
                 {ROW} {content}
                 FROM (SELECT 1 + (g * 7919) % {courses} AS c, g AS n
                       FROM generate_series(lo, least(lo + {per_txn}, {rows}) - 1) g) s;
                 COMMIT;
                 lo := lo + {per_txn};
               END LOOP;
             END $$"
        ))
        .await?;
    client.batch_execute("RESET synchronous_commit").await?;
    Ok(())
}

/// Inserts one review per given course in one transaction (autocommit).
pub struct Writer {
    client: Client,
    insert: Statement,
}

impl Writer {
    pub async fn new(client: Client) -> Result<Self> {
        let insert = client
            .prepare(&format!(
                "INSERT INTO reviews (course_id, user_id, rating, title, content)
                 {ROW} {CONTENT} FROM unnest($1::int8[]) WITH ORDINALITY AS u(c, n)"
            ))
            .await?;
        Ok(Writer { client, insert })
    }

    /// Returns when the transaction has committed.
    pub async fn write(&mut self, courses: &[i64]) -> Result<()> {
        self.client.execute(&self.insert, &[&courses]).await?;
        Ok(())
    }
}
