//! Reading `reviews` for `replay --from snapshot`: a temporary slot exports a snapshot, read
//! by the reader cdc's initial snapshot uses, and every row is judged by the configured model.

use crate::avro::verdict::Verdict;
use crate::avro::RowSchema;
use crate::error::Result;
use crate::lsn::{Lsn, SourcePosition};
use crate::sink::stats::figures::Deltas;
use crate::source::replication::ReplicationConnection;
use crate::source::slot::{self, SlotLifetime};
use crate::source::snapshot::{table_filenode, SnapshotReader, TABLE_SCHEMA};
use crate::transform::from_text::TextJudge;
use crate::transform::score::Scorer;

use super::TABLE;

/// The judged snapshot.
pub(super) struct SnapshotRead {
    pub(super) consistent_point: Lsn,
    pub(super) rows: u64,
    pub(super) valid: u64,
    pub(super) deltas: Deltas,
    pub(super) verdicts: Vec<Verdict>,
}

/// Where the verdicts of a snapshot's rows stand: at the consistent point, position -1, so
/// that a streamed change committed at the consistent point (positions from 0) wins.
pub(super) fn verdict_position(consistent_point: Lsn) -> SourcePosition {
    SourcePosition::new(consistent_point, -1)
}

/// Creates a temporary slot with an exported snapshot, reads and judges every row in it.
/// The slot goes with the replication session, at the end of this call.
pub(super) async fn read_snapshot(database_url: &str, scorer: &dyn Scorer) -> Result<SnapshotRead> {
    let pg = crate::db::connect(database_url).await?;
    let filenode = table_filenode(&pg, TABLE).await?;
    let mut replication = ReplicationConnection::connect(database_url).await?;
    let name = format!(
        "reviewflow_replay_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let created = slot::create(&mut replication, &name, SlotLifetime::Temporary).await?;
    let consistent_point = created.consistent_point;
    let reader = SnapshotReader::open(pg, TABLE, &created.snapshot_name, filenode).await?;
    tracing::info!(slot = %name, %consistent_point, "reading the temporary slot's snapshot");
    let bar = reader.progress_bar();
    let mut judge = TextJudge::new(RowSchema::new(
        TABLE_SCHEMA,
        TABLE,
        reader.columns.iter().cloned(),
    )?);
    let mut read = SnapshotRead {
        consistent_point,
        rows: 0,
        valid: 0,
        deltas: Deltas::default(),
        verdicts: Vec::with_capacity(usize::try_from(reader.total).unwrap_or(0)),
    };
    let model = scorer.model().to_string();
    let mut rows = reader.rows().await?;
    while let Some(row) = rows.next().await? {
        let cells = row.cells()?;
        let (image, judgement) = judge.judge(&cells, &[], scorer)?;
        if let Ok(review) = image.countable() {
            if !judgement.fraud {
                read.deltas.add(&review, 1);
                read.valid += 1;
            }
        }
        let digest = Some(judge.schema.digest(&cells));
        read.verdicts.push(judgement.verdict(
            &image,
            verdict_position(consistent_point),
            &model,
            digest,
            Vec::new(),
        ));
        read.rows += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    reader.close().await?;
    drop(replication);
    Ok(read)
}
