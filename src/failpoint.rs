//! Crash points for tests: `REVIEWFLOW_FAILPOINT=cdc.after_produce:3` makes the third pass
//! through that point abort the process on the spot, like a kill -9 there, so exactly-once
//! is shown where a crash hurts most rather than at random.
//!
//! Every point that exists is a constant below, with the crash it simulates; stages pass
//! the constant to `hit`, and tests arm it with `Point::at`, so a point cannot be misspelt
//! on either side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// A named place where a test may crash the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point(&'static str);

/// cdc: a change handed to the producer, its acknowledgement not yet counted.
pub const CDC_AFTER_PRODUCE: Point = Point("cdc.after_produce");
/// cdc: a transaction's Commit read, its changes maybe not all acknowledged.
pub const CDC_BEFORE_COMMIT_READ: Point = Point("cdc.before_commit_read");
/// cdc: everything up to a position acknowledged by Kafka, the slot not yet told.
pub const CDC_BEFORE_STATUS: Point = Point("cdc.before_status");
/// cdc: every snapshot row produced in the Kafka transaction, which is not committed.
pub const CDC_SNAPSHOT_BEFORE_COMMIT: Point = Point("cdc.snapshot_before_commit");
/// fraud: a batch's outputs and offsets sent in its Kafka transaction, not committed.
pub const FRAUD_BEFORE_COMMIT: Point = Point("fraud.before_commit");
/// fraud: a transaction committed, the next batch not begun.
pub const FRAUD_AFTER_COMMIT: Point = Point("fraud.after_commit");
/// stats: a batch's figures and offsets written in PostgreSQL, not committed.
pub const STATS_BEFORE_COMMIT: Point = Point("stats.before_commit");
/// verdicts: a batch's verdicts and offsets written in PostgreSQL, not committed.
pub const VERDICTS_BEFORE_COMMIT: Point = Point("verdicts.before_commit");

/// Every point, for checking what a test armed.
pub const ALL: [Point; 8] = [
    CDC_AFTER_PRODUCE,
    CDC_BEFORE_COMMIT_READ,
    CDC_BEFORE_STATUS,
    CDC_SNAPSHOT_BEFORE_COMMIT,
    FRAUD_BEFORE_COMMIT,
    FRAUD_AFTER_COMMIT,
    STATS_BEFORE_COMMIT,
    VERDICTS_BEFORE_COMMIT,
];

impl Point {
    pub fn name(self) -> &'static str {
        self.0
    }

    /// The `REVIEWFLOW_FAILPOINT` value that aborts at the `pass`-th pass through this point.
    pub fn at(self, pass: u64) -> String {
        format!("{}:{pass}", self.0)
    }
}

static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
static PASSES: AtomicU64 = AtomicU64::new(0);

/// Aborts the process when `point` is the armed one and this is the armed pass.
pub fn hit(point: Point) {
    let armed = ARMED.get_or_init(|| {
        let spec = std::env::var("REVIEWFLOW_FAILPOINT").ok()?;
        let (name, count) = spec.split_once(':').unwrap_or((&spec, "1"));
        if !ALL.iter().any(|p| p.0 == name) {
            eprintln!("REVIEWFLOW_FAILPOINT names no failpoint: {name:?} (see src/failpoint.rs)");
        }
        Some((name.to_string(), count.parse().unwrap_or(1)))
    });
    if let Some((name, count)) = armed {
        if name == point.0 && PASSES.fetch_add(1, Ordering::SeqCst) + 1 == *count {
            eprintln!("failpoint {name} reached: aborting");
            std::process::abort();
        }
    }
}
