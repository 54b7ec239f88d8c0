//! Partitions added to the changes topic: when cdc notices (at a session's start, then every
//! [`CHECK_EVERY`]) that `reviews.changes` has more partitions than its current epoch, and
//! `reviews.valid` has at least as many, it plans a switch. The switch waits for the first
//! transaction committed after the newest change Kafka holds: every transaction before it
//! keeps its epoch, so a re-sent change lands beside its first copy. Before that transaction
//! is written, the fence waits until the workers applied every change of the old partitions
//! (see `fence`), then the new epoch is recorded in the slot's marker and the transaction
//! goes out across the new count.
//!
//! Restart: a crash before the marker is written plans the same switch again; a crash after
//! it finds the new epoch in the marker, and re-reads the transactions before it with the old
//! count. A compacted topic keeps its epoch: its readers keep only the latest row per key.

use std::time::{Duration, Instant};

use super::epochs::Epochs;
use super::fence::Fence;
use super::snapshot::{self, SnapshotMarker};
use crate::contract::lsn::Lsn;
use crate::error::Result;
use crate::registry::Registry;

/// How often a running cdc looks for added partitions.
pub const CHECK_EVERY: Duration = Duration::from_secs(15);

/// A switch waiting for its first transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Planned {
    pub to: i32,
    /// The newest commit LSN in Kafka when it was planned (None: the topic holds no change).
    pub after: Option<Lsn>,
}

pub(super) struct Partitioning {
    pub epochs: Epochs,
    /// The slot's marker, rewritten with each new epoch.
    marker: SnapshotMarker,
    pub fence: Fence,
    compacted: bool,
    pub planned: Option<Planned>,
    checked: Option<Instant>,
    /// The count of valid already warned about, so the warning is not repeated each check.
    warned: i32,
}

impl Partitioning {
    pub(super) fn new(marker: SnapshotMarker, legacy: i32, fence: Fence, compacted: bool) -> Self {
        Partitioning {
            epochs: Epochs::recorded(marker.epochs.clone(), legacy),
            marker,
            fence,
            compacted,
            planned: None,
            checked: None,
            warned: 0,
        }
    }

    /// Looks for added partitions when a check is due, and plans the switch to them.
    pub(super) async fn check(&mut self, registry: &Registry) -> Result<()> {
        if self.compacted
            || self.planned.is_some()
            || self.checked.is_some_and(|c| c.elapsed() < CHECK_EVERY)
        {
            return Ok(());
        }
        self.checked = Some(Instant::now());
        let (kafka, topics) = (self.fence.kafka.clone(), self.fence.topics.clone());
        let (changes, valid) = tokio::task::spawn_blocking(move || {
            Ok::<_, crate::error::Error>((
                crate::kafka::topic_partitions(&kafka, &topics.changes)?,
                crate::kafka::topic_partitions(&kafka, &topics.valid).unwrap_or(0),
            ))
        })
        .await??;
        let current = self.epochs.current();
        if changes <= current {
            return Ok(());
        }
        let topics = &self.fence.topics;
        if valid < changes {
            if self.warned != valid {
                tracing::warn!(changes = %topics.changes, valid_topic = %topics.valid, partitions = changes, valid,
                    "partitions were added to the changes topic but the valid changelog has fewer: \
                     cdc keeps writing across {current} until it has at least {changes} \
                     (kafka-topics.sh --alter --topic {} --partitions {changes})", topics.valid);
                self.warned = valid;
            }
            return Ok(());
        }
        let after =
            super::failover::newest_commit(&self.fence.kafka, &topics.changes, registry).await?;
        tracing::info!(from = current, to = changes, after = ?after.map(|l| l.to_string()),
            "partitions were added: the first transaction after the newest one in Kafka goes out across the new count, once the workers applied the old partitions");
        self.planned = Some(Planned { to: changes, after });
        Ok(())
    }

    /// Whether the transaction committed at `commit` is the planned switch's first.
    pub(super) fn due(&self, commit: Lsn) -> bool {
        self.planned
            .is_some_and(|p| p.after.is_none_or(|after| commit > after))
    }

    /// Records the new epoch, from `commit` on, in the slot's marker, then makes it current.
    pub(super) async fn begin(&mut self, commit: Lsn, registry: &Registry) -> Result<()> {
        let Some(planned) = self.planned.take() else {
            return Ok(());
        };
        let mut epochs = self.epochs.clone();
        epochs.begin(commit, planned.to);
        let marker = SnapshotMarker {
            epochs: epochs.list().to_vec(),
            ..self.marker.clone()
        };
        snapshot::record_marker(
            &self.fence.kafka,
            &self.fence.topics.changes,
            registry,
            &marker,
        )
        .await?;
        tracing::info!(partitions = planned.to, from = %commit, "switched to the new partition count");
        (self.epochs, self.marker) = (epochs, marker);
        Ok(())
    }
}
