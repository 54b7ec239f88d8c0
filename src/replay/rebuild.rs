//! The statements of the rebuild transaction that are replay's own: the derived tables
//! emptied, and the stats consumer's rows in sink_offsets read and cleared.

use chrono::NaiveDate;
use tokio_postgres::Transaction;

use crate::error::Result;
use crate::lsn::SourcePosition;
use crate::sink::stats::CONSUMER;

/// The derived tables emptied and the state reset, in the rebuild transaction (which holds
/// the state lock).
pub(super) async fn rebuild_start(
    tx: &Transaction<'_>,
    truncated: SourcePosition,
    today: NaiveDate,
) -> Result<()> {
    // Row deletes for course_stats, so the compacted course-stats topic hears of courses that
    // are gone (see figures::reset).
    tx.batch_execute("DELETE FROM course_stats; TRUNCATE course_daily_stats, course_review_times")
        .await?;
    // bigint holds any real WAL position, as in figures::lock_state.
    tx.execute(
        "UPDATE stats_state SET truncated_lsn = $1, truncated_position = $2, rolled_through = $3",
        &[&(truncated.lsn.0 as i64), &truncated.position, &today],
    )
    .await?;
    Ok(())
}

/// Clears the last applied position of `partitions`, so that one where the replay read
/// nothing keeps none (offsets::advance leaves a position it is not given as it was).
pub(super) async fn forget_applied(
    tx: &Transaction<'_>,
    topic: &str,
    partitions: &[i32],
) -> Result<()> {
    tx.execute(
        "UPDATE sink_offsets SET last_lsn = NULL, last_position = NULL
         WHERE consumer = $1 AND topic = $2 AND partition = ANY($3)",
        &[&CONSUMER, &topic, &partitions],
    )
    .await?;
    Ok(())
}

/// Partitions of `topic` the stats consumer has rows for.
pub(super) async fn claimed_partitions(tx: &Transaction<'_>, topic: &str) -> Result<Vec<i32>> {
    Ok(tx
        .query(
            "SELECT partition FROM sink_offsets WHERE consumer = $1 AND topic = $2",
            &[&CONSUMER, &topic],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

pub(super) async fn course_count(tx: &Transaction<'_>) -> Result<i64> {
    Ok(tx
        .query_one("SELECT count(*) FROM course_stats", &[])
        .await?
        .get(0))
}
