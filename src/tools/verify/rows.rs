//! The check of `reviews` itself: every current row has exactly one verdict for its current
//! image, and it is the verdict the model gives that row.
//!
//! The row's newest verdict (highest version, then position) must carry the digest of the
//! row as it is now (`avro::digest` over `SELECT col::text` under `db::TEXT_OUTPUT_SETTINGS`,
//! the text cdc reads from the replication stream). A row with no verdict is a lost insert;
//! a different digest is a lost edit, whatever the edit changed (`updated_at` moves on every
//! UPDATE). Then the row is judged again, from its text through the same Avro mapping and
//! judging function as the fraud worker (`transform::from_text`), by the scorer the verdict's
//! `model` names, with the columns the verdict lists as oversize replaced by their marker.
//!
//! A verdict without a digest was written before migration V6: nothing says which image it
//! judged, so it is a difference (the fix, `replay --from snapshot`, judges every row again)
//! rather than a blind spot.
//!
//! One pass over the table, streamed (a portal, never all rows in memory).

use std::collections::HashMap;

use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::{Client, Row};

use super::Difference;
use crate::avro::RowSchema;
use crate::db::quote_ident;
use crate::error::Result;
use crate::source::snapshot::{table_columns, TABLE_SCHEMA};
use crate::transform::from_text::{cells_of, TextJudge};
use crate::transform::score::{self, Judgement, Scorer};

const TABLE: &str = "reviews";

/// The verdict columns selected before the row's own.
const VERDICT_COLUMNS: usize = 8;

/// Checks every row of `reviews` (in the caller's transaction); returns how many it read.
/// Checks every row of `reviews` (in the caller's transaction); returns how many it read.
/// The rows are judged on a thread of their own while the next ones stream in, so the
/// server's work and ours overlap.
pub async fn check(client: &Client, differences: &mut Vec<Difference>) -> Result<i64> {
    let columns = table_columns(client, TABLE).await?;
    let names: Vec<String> = columns.iter().map(|(n, _, _)| n.clone()).collect();
    let query = format!(
        "WITH newest AS (
             SELECT DISTINCT ON (review_id) review_id, version, verdict, score, reasons, model,
                    digest, oversize
             FROM review_verdicts
             ORDER BY review_id, version DESC, position DESC)
         SELECT v.review_id IS NOT NULL, v.version::text, v.verdict, v.score, v.reasons,
                v.model, v.digest, v.oversize, {}
         FROM {TABLE_SCHEMA}.{TABLE} r LEFT JOIN newest v ON v.review_id = r.id",
        names
            .iter()
            .map(|n| format!("r.{}::text", quote_ident(n)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut checker = RowCheck {
        judge: TextJudge::new(RowSchema::new(TABLE_SCHEMA, TABLE, columns)?),
        id_at: names.iter().position(|n| n == "id"),
        course_at: names.iter().position(|n| n == "course_id"),
        names,
        scorers: HashMap::new(),
    };
    let (batches, mut inbox) = tokio::sync::mpsc::channel::<Vec<Row>>(BATCHES_AHEAD);
    let worker = tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        let mut read = 0i64;
        while let Some(batch) = inbox.blocking_recv() {
            for row in &batch {
                checker.row(row, &mut found)?;
                read += 1;
            }
        }
        Ok::<_, crate::Error>((read, found))
    });
    let rows = client.query_raw(&query, std::iter::empty::<i32>()).await?;
    pin_mut!(rows);
    let mut batch = Vec::with_capacity(BATCH);
    let streamed = async {
        while let Some(row) = rows.try_next().await? {
            batch.push(row);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if batches.send(full).await.is_err() {
                    // The worker stopped on an error, which it returns.
                    return Ok(());
                }
            }
        }
        let _ = batches.send(batch).await;
        Ok::<_, crate::Error>(())
    }
    .await;
    drop(batches);
    let (read, found) = worker.await??;
    streamed?;
    differences.extend(found);
    Ok(read)
}

/// Rows per batch handed to the judging thread, and batches it may fall behind.
const BATCH: usize = 1000;
const BATCHES_AHEAD: usize = 32;

/// What judging one row needs: the table's columns, their Avro mapping, the scorers met.
struct RowCheck {
    names: Vec<String>,
    judge: TextJudge,
    id_at: Option<usize>,
    course_at: Option<usize>,
    scorers: HashMap<String, Option<Box<dyn Scorer>>>,
}

impl RowCheck {
    /// One row of the query of `check`: its verdict columns, then the row's own as text.
    fn row(&mut self, row: &Row, differences: &mut Vec<Difference>) -> Result<()> {
        let texts: Vec<Option<&str>> = (0..self.names.len())
            .map(|i| row.try_get(VERDICT_COLUMNS + i))
            .collect::<std::result::Result<_, _>>()?;
        let cells = cells_of(&texts);
        let whole = |at: Option<usize>| at.and_then(|i| texts[i]).and_then(|t| t.parse().ok());
        let review_id: Option<i64> = whole(self.id_at);
        let differ = |figure: &str, expected: String, actual: String| Difference {
            review_id,
            course_id: whole(self.course_at),
            figure: figure.into(),
            expected,
            actual,
        };
        let digest = self.judge.schema.digest(&cells);
        if !row.try_get::<_, bool>(0)? {
            differences.push(differ(
                "verdict",
                format!("a verdict of its image {}", short(&digest)),
                "none: the pipeline never judged this row (a lost insert)".into(),
            ));
            return Ok(());
        }
        let version: String = row.try_get(1)?;
        let judged: Option<&str> = row.try_get(6)?;
        match judged {
            None => {
                differences.push(differ(
                    "digest",
                    short(&digest).into(),
                    format!(
                        "none: its verdict at {version} was judged before digests existed; \
                     `reviewflow replay --from snapshot` judges every row again"
                    ),
                ));
                return Ok(());
            }
            Some(judged) if judged != digest => {
                differences.push(differ(
                    "digest",
                    short(&digest).into(),
                    format!(
                        "{}: its newest verdict (at {version}) judged another image (a lost edit)",
                        short(judged)
                    ),
                ));
                return Ok(());
            }
            Some(_) => {}
        }
        let model: String = row.try_get(5)?;
        let scorer = self
            .scorers
            .entry(model.clone())
            .or_insert_with(|| score::scorer_for_model(&model));
        let Some(scorer) = scorer else {
            differences.push(differ(
                "model",
                "a model this build can run (seed-murmur2-v1, heuristic-v1@<threshold>)".into(),
                format!("{model:?} (verdict at {version})"),
            ));
            return Ok(());
        };
        let oversize: Vec<String> = row.try_get(7)?;
        let mut marked = Vec::with_capacity(oversize.len());
        for column in &oversize {
            match self.names.iter().position(|n| n == column) {
                Some(i) => marked.push(i),
                None => differences.push(differ(
                    "oversize",
                    "columns of the table".into(),
                    format!("{column:?}, which reviews has no longer (verdict at {version})"),
                )),
            }
        }
        let given = Judgement {
            fraud: row.try_get::<_, &str>(2)? == "fraud",
            score: row.try_get(3)?,
            reasons: row.try_get(4)?,
        };
        match self.judge.judge(&cells, &marked, scorer.as_ref()) {
            Ok((_, expected)) if expected == given => {}
            Ok((_, expected)) => differences.push(differ(
                "verdict",
                format!("{} by {model}", describe(&expected)),
                format!("{} (verdict at {version})", describe(&given)),
            )),
            Err(e) => differences.push(differ(
                "verdict",
                format!("the row judged by {model}"),
                format!("its image cannot be carried: {e}"),
            )),
        }
        Ok(())
    }
}

fn describe(j: &Judgement) -> String {
    format!(
        "{} {} [{}]",
        if j.fraud { "fraud" } else { "valid" },
        j.score,
        j.reasons.join(", ")
    )
}

/// Enough of a digest to tell two apart in a report.
fn short(digest: &str) -> &str {
    digest.get(..16).unwrap_or(digest)
}
