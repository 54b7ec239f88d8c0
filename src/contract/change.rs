//! The change event every stage passes on: one insert, update, delete, snapshot read or
//! truncate of `reviews`, with the source position that orders and de-duplicates it.

use chrono::{DateTime, Utc};

use crate::contract::image::ReviewImage;
use crate::contract::lsn::{Lsn, SourcePosition};

/// Header on the delete half of a course move: the record key (the course) the review moves
/// to, serialized like the record key itself (Confluent wire format, Avro long), or a null
/// value for a move to no course. Debezium names its header for a key change
/// `__debezium.newkey`; this is reviewflow's. A delete carrying it retracts the review from
/// its old course; the review itself lives on (the create half follows).
pub const NEW_KEY_HEADER: &str = "reviewflow.newkey";

/// Header on the create half of a course move: the record key the review moved from, as
/// [`NEW_KEY_HEADER`] is written (Debezium's `__debezium.oldkey`).
pub const OLD_KEY_HEADER: &str = "reviewflow.oldkey";

/// Header on a snapshot's end: how many partitions the snapshot was written across (a
/// decimal number), so the stats worker knows how many ends make it whole even after
/// partitions were added. An end without it was written across all of the topic's then
/// partitions.
pub const PARTITIONS_HEADER: &str = "reviewflow.partitions";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Create,
    Update,
    Delete,
    /// A row read by the initial snapshot.
    Read,
    Truncate,
    /// The end of a snapshot in one partition: every row the snapshot put in this partition
    /// came before it. A snapshot commits in chunks (a Kafka transaction has a time limit), so
    /// readers see it grow; this mark, sent to every partition after the last row, says when
    /// a partition's part is whole. It carries no image.
    SnapshotEnd,
}

impl Op {
    /// The one-letter code of the Avro envelope, as Debezium spells it.
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
            // Not a Debezium code: Debezium marks only the last snapshot record (source.snapshot
            // = "last"), which says nothing about the other partitions.
            Op::SnapshotEnd => "e",
        }
    }

    pub fn from_code(code: &str) -> Option<Op> {
        Some(match code {
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            "t" => Op::Truncate,
            "e" => Op::SnapshotEnd,
            _ => return None,
        })
    }
}

/// Where a change came from. Its `id` is unique per change and increases along the stream,
/// so a consumer drops any event at or below the last one it applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    pub schema: String,
    pub table: String,
    /// Commit LSN of the transaction; for snapshot reads, the slot's consistent point.
    pub lsn: Lsn,
    /// Index of the change inside its transaction (or of the row inside the snapshot).
    pub position: i64,
    pub txid: Option<i64>,
    pub commit_time: DateTime<Utc>,
    pub snapshot: bool,
}

impl ChangeEvent {
    /// A snapshot's TRUNCATE or end: a mark every partition carries, not a change of a row.
    pub fn is_snapshot_mark(&self) -> bool {
        self.source.snapshot && matches!(self.op, Op::Truncate | Op::SnapshotEnd)
    }
}

impl Source {
    pub fn id(&self) -> SourcePosition {
        SourcePosition::new(self.lsn, self.position)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChangeEvent {
    pub op: Op,
    pub before: Option<ReviewImage>,
    pub after: Option<ReviewImage>,
    pub source: Source,
    /// `avro::digest` of the after image as the source read it; None for an envelope written
    /// before digests existed, or without an after image.
    pub digest: Option<String>,
    /// Columns carried as an oversize marker, as `before.NAME` or `after.NAME`.
    pub oversize: Vec<String>,
}

impl ChangeEvent {
    /// The Kafka key: every change of a course lands in one partition, in order (None: no
    /// image, or an image without a course).
    pub fn course_id(&self) -> Option<i64> {
        self.after
            .as_ref()
            .or(self.before.as_ref())
            .and_then(|r| r.course_id)
    }
}
