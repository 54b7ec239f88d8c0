//! What a replay did, as the command prints it.

use std::fmt;

use super::TABLE;
use crate::lsn::Lsn;

/// What a Kafka replay did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KafkaSummary {
    pub topic: String,
    pub partitions: usize,
    /// Records read (committed data records, control records not included).
    pub records: u64,
    /// Records that could not be decoded, skipped (they are in the dead-letter topic).
    pub undecodable: u64,
    /// Changes read once each (a re-send counted once), truncates not included.
    pub changes: u64,
    /// Changes folded into the figures: those after the last TRUNCATE.
    pub folded: u64,
    /// Re-sent changes skipped.
    pub duplicates: u64,
    /// Commit LSN of the last TRUNCATE, when there was one.
    pub truncated_at: Option<Lsn>,
    /// Rows of course_stats after the rebuild.
    pub courses: i64,
}

/// What a snapshot replay did.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotSummary {
    pub consistent_point: Lsn,
    pub rows: u64,
    pub valid: u64,
    pub fraud: u64,
    pub model: String,
    pub courses: i64,
    /// Partitions of the valid topic whose stats worker positions were set.
    pub partitions: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Summary {
    Kafka(KafkaSummary),
    Snapshot(SnapshotSummary),
}

impl fmt::Display for KafkaSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replayed {} ({} partitions, {} records): {} of {} changes folded into {} courses",
            self.topic, self.partitions, self.records, self.folded, self.changes, self.courses
        )?;
        if let Some(lsn) = self.truncated_at {
            write!(
                f,
                ", {} voided by the TRUNCATE at {lsn}",
                self.changes - self.folded
            )?;
        }
        write!(
            f,
            "; {} re-sent duplicates skipped; {} undecodable records skipped (already in the dead-letter topic)",
            self.duplicates, self.undecodable
        )
    }
}

impl fmt::Display for SnapshotSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replayed a snapshot of {TABLE} at {}: {} rows judged by {} ({} valid, {} fraud), \
             {} courses; stats workers apply the changes from {} on ({} partitions)",
            self.consistent_point,
            self.rows,
            self.model,
            self.valid,
            self.fraud,
            self.courses,
            self.consistent_point,
            self.partitions
        )
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Summary::Kafka(s) => s.fmt(f),
            Summary::Snapshot(s) => s.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_say_what_was_skipped() {
        let s = KafkaSummary {
            topic: "reviews.valid".into(),
            partitions: 3,
            records: 12,
            undecodable: 1,
            changes: 10,
            folded: 7,
            duplicates: 1,
            truncated_at: Some(Lsn(0x1_0000_0010)),
            courses: 4,
        };
        assert_eq!(
            s.to_string(),
            "replayed reviews.valid (3 partitions, 12 records): 7 of 10 changes folded into 4 \
             courses, 3 voided by the TRUNCATE at 1/10; 1 re-sent duplicates skipped; 1 \
             undecodable records skipped (already in the dead-letter topic)"
        );
    }
}
