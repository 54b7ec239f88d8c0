//! The statements of the rebuild transaction that are replay's own: the derived tables
//! emptied and the state reset.

use chrono::NaiveDate;
use tokio_postgres::Transaction;

use crate::contract::lsn::SourcePosition;
use crate::error::Result;

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
    // bigint holds any real WAL position, as in stats::state::lock_state.
    tx.execute(
        "UPDATE stats_state SET truncated_lsn = $1, truncated_position = $2, rolled_through = $3",
        &[&(truncated.lsn.0 as i64), &truncated.position, &today],
    )
    .await?;
    // The history folded here includes any snapshot in flight.
    crate::sink::stats::restating::abandon(tx).await?;
    Ok(())
}

pub(super) async fn course_count(tx: &Transaction<'_>) -> Result<i64> {
    Ok(tx
        .query_one("SELECT count(*) FROM course_stats", &[])
        .await?
        .get(0))
}
