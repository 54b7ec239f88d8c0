//! The change event every stage passes on: one insert, update, delete, snapshot read or
//! truncate of `reviews`, with the source position that orders and de-duplicates it.

use chrono::{DateTime, Utc};

use crate::image::ReviewImage;
use crate::lsn::{Lsn, SourcePosition};
use crate::review::Rating;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Create,
    Update,
    Delete,
    /// A row read by the initial snapshot.
    Read,
    Truncate,
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
        }
    }

    pub fn from_code(code: &str) -> Option<Op> {
        Some(match code {
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            "t" => Op::Truncate,
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

impl Source {
    pub fn id(&self) -> SourcePosition {
        SourcePosition::new(self.lsn, self.position)
    }
}

/// A row that can count (`image::ReviewImage::countable`): the columns figures and models
/// read. Columns added later travel in the Avro record but are not needed here.
#[derive(Clone, Debug, PartialEq)]
pub struct ReviewRow {
    pub id: i64,
    pub course_id: i64,
    /// No rule reads it, so a row without one still counts.
    pub user_id: Option<i64>,
    pub rating: Rating,
    pub title: Option<String>,
    pub content: Option<String>,
    pub created_at: DateTime<Utc>,
    /// None: NULL, or not an instant (infinity, a year past what the type counts).
    pub updated_at: Option<DateTime<Utc>>,
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
