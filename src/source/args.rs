//! The command-line arguments of the CDC reader (`reviewflow cdc`, and the readers of `run`).

/// The slot cdc reads by default (`status` reports on the same one).
pub const DEFAULT_SLOT: &str = "reviewflow";

/// The publication the slot streams by default (created by the migrations).
pub const DEFAULT_PUBLICATION: &str = "reviewflow";

/// The CDC reader: which slot and publication it reads, and where the changes go.
#[derive(clap::Args, Clone, Debug)]
pub struct CdcConfig {
    /// Logical replication slot (created when missing, with an initial snapshot).
    #[arg(long, env = "REVIEWFLOW_SLOT", default_value = DEFAULT_SLOT)]
    pub slot: String,

    /// Publication the slot streams (created by the migrations).
    #[arg(long, env = "REVIEWFLOW_PUBLICATION", default_value = DEFAULT_PUBLICATION)]
    pub publication: String,

    /// The publication's table (in schema public), read by the initial snapshot. It must have
    /// a course_id column: the record key.
    #[arg(long, env = "REVIEWFLOW_TABLE", default_value = "reviews")]
    pub table: String,

    /// Make the topic compacted (the latest change per course kept) instead of kept whole:
    /// for a table of current state, such as course_stats.
    #[arg(long, env = "REVIEWFLOW_COMPACTED_TOPIC")]
    pub compacted: bool,

    /// Seconds between standby status updates (the slot's confirmed position moves then).
    #[arg(long, env = "REVIEWFLOW_STATUS_INTERVAL", default_value_t = 10)]
    pub status_interval_secs: u64,

    /// When the slot is gone or invalidated after its snapshot was sent, or holds changes
    /// written without before images (REPLICA IDENTITY was not FULL): create a new one and
    /// restate the table (a TRUNCATE, then every row), from which the derived tables rebuild
    /// themselves. A healthy slot is resumed as usual, so the flag may stay set.
    #[arg(long)]
    pub new_snapshot: bool,

    /// Read the snapshot at most this many rows per second (0: as fast as the table and Kafka
    /// go), so that snapshotting a large table does not crowd out the database's users.
    #[arg(long, env = "REVIEWFLOW_SNAPSHOT_RATE", default_value_t = 0)]
    pub snapshot_rate: u32,

    /// The fraud workers' group, whose progress a switch to more partitions waits for (see
    /// `source::fence`): `cdc --fraud-group`, or in `run` the group of the fraud stage.
    #[arg(skip)]
    pub fraud_group: String,
}

impl CdcConfig {
    /// Its label in the metrics: `cdc` for the reader of `reviews`, `cdc-<table>` for another
    /// table's (in `run`, course_stats's).
    pub fn stage(&self) -> String {
        if self.table == "reviews" {
            "cdc".into()
        } else {
            format!("cdc-{}", self.table)
        }
    }

    /// What the refusals judge, with `topic` the changes topic named in their advice.
    pub(super) fn source<'a>(&'a self, topic: &'a str) -> super::refusals::Source<'a> {
        super::refusals::Source {
            table: &self.table,
            publication: &self.publication,
            compacted: self.compacted,
            topic,
        }
    }

    /// The reader that streams course_stats into the compacted stats topic (`--stats-topic`).
    pub fn for_course_stats(&self) -> CdcConfig {
        CdcConfig {
            slot: format!("{}_stats", self.slot),
            publication: "reviewflow_stats".into(),
            table: "course_stats".into(),
            compacted: true,
            new_snapshot: false,
            ..self.clone()
        }
    }
}
