//! Crash points for tests: `REVIEWFLOW_FAILPOINT=cdc.after_produce:3` makes the third pass
//! through that point abort the process on the spot, like a kill -9 there, so exactly-once
//! is shown where a crash hurts most rather than at random.
//!
//! `REVIEWFLOW_FAILPOINT=cdc.after_produce:3:error` makes that pass fail the stage's session
//! with an error instead: inside `run` an abort would kill every stage, the API included,
//! whereas an error is what a stage that lost its broker or database returns, so it shows
//! the stage restarting beside the others that keep running.
//!
//! Every point that exists is a constant below, with the crash it simulates; stages pass
//! the constant to `hit`, and tests arm it with `Point::at`, so a point cannot be misspelt
//! on either side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::error::{Error, Result};

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
/// cdc: a switch's fence targets recorded in the slot's marker, the fence not yet passed.
pub const CDC_SWITCH_TARGETS: Point = Point("cdc.switch_targets");
/// cdc: a switch to more partitions recorded in the slot's marker, nothing written across
/// the new count yet.
pub const CDC_AFTER_SWITCH: Point = Point("cdc.after_switch");
/// fraud: a batch's outputs and offsets sent in its Kafka transaction, not committed.
pub const FRAUD_BEFORE_COMMIT: Point = Point("fraud.before_commit");
/// fraud: a transaction committed, the next batch not begun.
pub const FRAUD_AFTER_COMMIT: Point = Point("fraud.after_commit");
/// stats: a batch's figures and offsets written in PostgreSQL, not committed.
pub const STATS_BEFORE_COMMIT: Point = Point("stats.before_commit");
/// verdicts: a batch's verdicts and offsets written in PostgreSQL, not committed.
pub const VERDICTS_BEFORE_COMMIT: Point = Point("verdicts.before_commit");

/// Any stage: its setup (topics checked or made, schemas registered) about to ask Kafka and
/// the registry, as when an admin request times out on a loaded cluster.
pub const STAGE_SETUP: Point = Point("stage.setup");

/// Every point, for checking what a test armed.
pub const ALL: [Point; 11] = [
    CDC_AFTER_PRODUCE,
    CDC_AFTER_SWITCH,
    CDC_SWITCH_TARGETS,
    CDC_BEFORE_COMMIT_READ,
    CDC_BEFORE_STATUS,
    CDC_SNAPSHOT_BEFORE_COMMIT,
    FRAUD_BEFORE_COMMIT,
    FRAUD_AFTER_COMMIT,
    STATS_BEFORE_COMMIT,
    VERDICTS_BEFORE_COMMIT,
    STAGE_SETUP,
];

impl Point {
    pub fn name(self) -> &'static str {
        self.0
    }

    /// The `REVIEWFLOW_FAILPOINT` value that aborts at the `pass`-th pass through this point.
    pub fn at(self, pass: u64) -> String {
        format!("{}:{pass}", self.0)
    }

    /// The `REVIEWFLOW_FAILPOINT` value that fails the stage's session with an error (which
    /// a new session cures) at the `pass`-th pass through this point.
    pub fn erring_at(self, pass: u64) -> String {
        format!("{}:{pass}:error", self.0)
    }
}

/// What the armed pass does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Abort,
    Error,
}

/// The armed point, pass and mode, as `REVIEWFLOW_FAILPOINT` spells them.
fn parse(spec: &str) -> (String, u64, Mode) {
    let mut parts = spec.splitn(3, ':');
    let name = parts.next().unwrap_or_default().to_string();
    let count = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1);
    let mode = match parts.next() {
        Some("error") => Mode::Error,
        _ => Mode::Abort,
    };
    (name, count, mode)
}

static ARMED: OnceLock<Option<(String, u64, Mode)>> = OnceLock::new();
static PASSES: AtomicU64 = AtomicU64::new(0);

/// When `point` is the armed one and this is the armed pass: aborts the process, or, armed
/// with `:error`, returns the error a failed session would.
pub fn hit(point: Point) -> Result<()> {
    let armed = ARMED.get_or_init(|| {
        let spec = std::env::var("REVIEWFLOW_FAILPOINT").ok()?;
        let armed = parse(&spec);
        if !ALL.iter().any(|p| p.0 == armed.0) {
            let name = &armed.0;
            eprintln!("REVIEWFLOW_FAILPOINT names no failpoint: {name:?} (see src/failpoint.rs)");
        }
        Some(armed)
    });
    if let Some((name, count, mode)) = armed {
        if name == point.0 && PASSES.fetch_add(1, Ordering::SeqCst) + 1 == *count {
            if *mode == Mode::Error {
                eprintln!("failpoint {name} reached: failing the session");
                return Err(Error::Failpoint(point.0));
            }
            eprintln!("failpoint {name} reached: aborting");
            std::process::abort();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_names_its_point_pass_and_mode() {
        let spec = FRAUD_BEFORE_COMMIT.erring_at(3);
        assert_eq!(parse(&spec), ("fraud.before_commit".into(), 3, Mode::Error));
        let spec = FRAUD_BEFORE_COMMIT.at(2);
        assert_eq!(parse(&spec), ("fraud.before_commit".into(), 2, Mode::Abort));
        assert_eq!(
            parse("cdc.after_produce"),
            ("cdc.after_produce".into(), 1, Mode::Abort)
        );
    }
}
