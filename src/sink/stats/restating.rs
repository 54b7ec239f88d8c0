//! A snapshot in flight, kept out of sight. cdc commits a snapshot in chunks, between a
//! TRUNCATE and an end on every partition (see `source::snapshot`). Applied as they come,
//! its chunks would show every course emptied and then refilled row by row: a restatement
//! (`cdc --new-snapshot`) would drop every figure the website shows for as long as it runs.
//!
//! So the snapshot's TRUNCATE empties copies of the figures' tables (schema
//! `reviewflow_restating`, made by the migrations `LIKE` the real ones) instead of the real
//! ones, and everything after it is folded into the copies, while readers keep the figures
//! they had. Once every partition has delivered the snapshot's end, one transaction puts the
//! copies in place of the real tables. A snapshot that died and is taken again opens with a
//! newer TRUNCATE, which empties the copies again.
//!
//! Where the figures go is the transaction's `search_path`: the copies' schema first while a
//! snapshot is in flight, so that `figures` writes the same SQL either way. Only the three
//! figure tables have copies; `stats_state` and `sink_offsets` are found where they always
//! are.

use tokio_postgres::Transaction;

use super::state::StatsState;
use crate::contract::lsn::Lsn;
use crate::contract::notify::Touched;
use crate::db::quote_ident;
use crate::error::Result;

/// The schema of the copies.
const SCHEMA: &str = "reviewflow_restating";

/// The tables that have copies.
const TABLES: [&str; 3] = ["course_stats", "course_daily_stats", "course_review_times"];

/// A swap that changed more courses than this tells the website "every course" instead of
/// naming them: a restatement can change millions, and their ids read into the worker (a row
/// each through tokio-postgres) took it past 190 MB at a million courses, while the api's
/// listeners would re-read them one by one.
pub const NAMED_AT_MOST: i64 = 10_000;

/// Points the transaction's unqualified figure tables at the copies while `state` says a
/// snapshot is in flight, at the real tables otherwise: the copies' schema put in front of the
/// session's `search_path`, or taken off it again. A transaction starts at the real tables, so
/// a batch with no snapshot in flight needs no call.
pub async fn aim(tx: &Transaction<'_>, state: &StatsState) -> Result<()> {
    let prefix = format!("{SCHEMA}, ");
    let sql = if state.restating {
        "SELECT set_config('search_path', CASE WHEN starts_with(current_setting('search_path'), $1)
             THEN current_setting('search_path') ELSE $1 || current_setting('search_path') END, true)"
    } else {
        "SELECT set_config('search_path', CASE WHEN starts_with(current_setting('search_path'), $1)
             THEN substr(current_setting('search_path'), length($1) + 1)
             ELSE current_setting('search_path') END, true)"
    };
    tx.execute(sql, &[&prefix]).await?;
    Ok(())
}

/// A TRUNCATE opening the snapshot read at `snapshot`: from now on the figures go to the
/// copies (which the caller then empties, as any TRUNCATE empties the tables in use), and no
/// partition has delivered the snapshot's end yet.
pub async fn begin(tx: &Transaction<'_>, state: &mut StatsState, snapshot: Lsn) -> Result<()> {
    tx.execute(
        "UPDATE stats_state SET restating = true, restating_lsn = $1, restated_partitions = '{}'",
        &[&(snapshot.0 as i64)],
    )
    .await?;
    state.restating = true;
    state.restating_lsn = Some(snapshot);
    state.restated_partitions.clear();
    aim(tx, state).await?;
    tracing::info!("a snapshot began: the figures shown stay as they are until it ends");
    Ok(())
}

/// `partition` delivered the end of the snapshot read at `snapshot`. When that snapshot is the
/// one in flight and this was the last of `partitions`, the copies replace the real tables;
/// they rolled with them (`super::begin`), so their 90-day figures are those of today.
/// Returns the courses whose figures that changed (none when the snapshot is not whole yet;
/// `Touched::All` past [`NAMED_AT_MOST`]). The caller has applied everything folded before
/// the end.
pub async fn partition_done(
    tx: &Transaction<'_>,
    state: &mut StatsState,
    partition: i32,
    partitions: i32,
    snapshot: Lsn,
) -> Result<Touched> {
    let none = Touched::Courses(Vec::new());
    if !state.restating || state.restating_lsn != Some(snapshot) {
        // The end of a snapshot that died and was taken again, or whose start a rebuild
        // (`replay`) already folded in place.
        return Ok(none);
    }
    if !state.restated_partitions.contains(&partition) {
        state.restated_partitions.push(partition);
    }
    tx.execute(
        "UPDATE stats_state SET restated_partitions = $1",
        &[&state.restated_partitions],
    )
    .await?;
    let ended = state.restated_partitions.len();
    if ended < partitions.max(1) as usize {
        tracing::info!(
            partition,
            ended,
            of = partitions,
            "a snapshot ended in a partition"
        );
        return Ok(none);
    }
    state.restating = false;
    aim(tx, state).await?;
    let (changed, touched) = swap(tx).await?;
    tx.execute(
        "UPDATE stats_state SET restating = false, restating_lsn = NULL, restated_partitions = '{}'",
        &[],
    )
    .await?;
    state.restating_lsn = None;
    state.restated_partitions.clear();
    tracing::info!(
        changed,
        "the snapshot ended in every partition: its figures are in place"
    );
    Ok(touched)
}

/// For `status`: a line when a snapshot is in flight, saying how far it got.
pub async fn status_line(pg: &tokio_postgres::Client) -> Result<Option<String>> {
    let row = pg
        .query_one(
            &format!(
                "SELECT restating, cardinality(restated_partitions),
                        (SELECT count(*) FROM {SCHEMA}.course_stats)
                 FROM stats_state"
            ),
            &[],
        )
        .await?;
    Ok(row.get::<_, bool>(0).then(|| {
        format!(
            "stats: a snapshot is in flight ({} partitions delivered its end; {} courses \
             gathered so far); course_stats shows the figures from before it until it is whole",
            row.get::<_, i32>(1),
            row.get::<_, i64>(2)
        )
    }))
}

/// Forgets a snapshot in flight, for a rebuild that writes the real tables from the whole
/// history itself (`replay`): the copies emptied, the figures aimed at the real tables.
pub async fn abandon(tx: &Transaction<'_>) -> Result<()> {
    tx.batch_execute(&format!(
        "UPDATE stats_state SET restating = false, restating_lsn = NULL, \
         restated_partitions = '{{}}'; TRUNCATE {}",
        copies()
    ))
    .await?;
    Ok(())
}

fn copies() -> String {
    TABLES
        .iter()
        .map(|t| format!("{SCHEMA}.{t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Puts the copies in place of the real tables (unqualified, as the transaction's path now
/// finds them) and empties them. course_stats is merged rather than replaced: it is streamed
/// (course-stats topic), so only courses whose figures changed are written, and only courses
/// gone from the copy are deleted. Returns how many courses' figures changed, and which
/// (named up to [`NAMED_AT_MOST`]). Only their count and an aggregated array leave
/// PostgreSQL, never a row per course.
async fn swap(tx: &Transaction<'_>) -> Result<(i64, Touched)> {
    let stats_columns = columns(tx, "course_stats").await?;
    let list = stats_columns.join(", ");
    // updated_at says when a row was written, not what it holds.
    let figures = |side: &str| {
        stats_columns
            .iter()
            .filter(|c| *c != &quote_ident("updated_at"))
            .map(|c| format!("{side}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let set = stats_columns
        .iter()
        .filter(|c| *c != &quote_ident("course_id"))
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let gone = changed(
        tx,
        &format!(
            "DELETE FROM course_stats s WHERE NOT EXISTS
                 (SELECT FROM {SCHEMA}.course_stats r WHERE r.course_id = s.course_id)
             RETURNING course_id"
        ),
    )
    .await?;
    let written = changed(
        tx,
        &format!(
            "INSERT INTO course_stats AS s ({list}) SELECT {list} FROM {SCHEMA}.course_stats
             ON CONFLICT (course_id) DO UPDATE SET {set}
             WHERE ({}) IS DISTINCT FROM ({})
             RETURNING course_id",
            figures("s"),
            figures("EXCLUDED")
        ),
    )
    .await?;
    // The helper tables are not streamed: replaced whole.
    tx.batch_execute("TRUNCATE course_daily_stats, course_review_times")
        .await?;
    for table in &TABLES[1..] {
        let list = columns(tx, table).await?.join(", ");
        tx.batch_execute(&format!(
            "INSERT INTO {table} ({list}) SELECT {list} FROM {SCHEMA}.{table}"
        ))
        .await?;
    }
    tx.batch_execute(&format!("TRUNCATE {}", copies())).await?;
    let count = gone.0 + written.0;
    let touched = match (gone.1, written.1) {
        (Some(gone), Some(written)) if count <= NAMED_AT_MOST => {
            Touched::Courses(gone.into_iter().chain(written).collect())
        }
        _ => Touched::All,
    };
    Ok((count, touched))
}

/// Runs `modifying` (a statement `RETURNING course_id`) and counts the courses it returns,
/// naming them only up to [`NAMED_AT_MOST`].
async fn changed(tx: &Transaction<'_>, modifying: &str) -> Result<(i64, Option<Vec<i64>>)> {
    let row = tx
        .query_one(
            &format!(
                "WITH changed AS ({modifying})
                 SELECT count(*),
                        CASE WHEN count(*) <= $1 THEN coalesce(array_agg(course_id), '{{}}') END
                 FROM changed"
            ),
            &[&NAMED_AT_MOST],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// The real table's columns that take a value (generated ones compute theirs), quoted. The
/// copy must have them all: an INSERT naming one it lacks fails, rather than drop a figure.
async fn columns(tx: &Transaction<'_>, table: &str) -> Result<Vec<String>> {
    let rows = tx
        .query(
            "SELECT attname::text FROM pg_attribute
             WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped
               AND attgenerated = '' ORDER BY attnum",
            &[&table],
        )
        .await?;
    Ok(rows.iter().map(|r| quote_ident(r.get(0))).collect())
}
