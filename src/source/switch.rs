//! Partitions added to the changes topic: when cdc notices (at a session's start, then every
//! [`CHECK_EVERY`]) that `reviews.changes` has more partitions than its current epoch, and
//! `reviews.valid` has at least as many, it plans a switch. The switch waits for the first
//! transaction committed after the server's WAL position at planning, which no session can
//! have sent before: every transaction before it keeps its epoch, so a re-sent change lands
//! beside its first copy. Before that transaction is written, the fence waits until the
//! workers applied every change of the old partitions (see `fence`), then the new epoch is
//! recorded in the slot's marker and the transaction goes out across the new count.
//!
//! The fence's targets are taken once, by the first session that reaches the switch, and kept
//! in the marker with the pending switch (see `fence` for why).
//!
//! Restart: a crash before the targets are recorded plans the switch again, after a later
//! point (nothing after the first one was sent, the stream waits at the fence); a crash
//! after it resumes the recorded switch, targets and all; a crash after the new epoch is
//! recorded finds it in the marker, and re-reads the transactions before it with the old
//! count. A compacted topic keeps its epoch: its readers keep only the latest row per key.

use std::time::{Duration, Instant};

use super::epochs::{Epochs, PendingSwitch};
use super::fence::{Fence, FenceWatch};
use super::snapshot::{self, SnapshotMarker};
use crate::contract::lsn::Lsn;
use crate::error::Result;
use crate::registry::Registry;

/// How often a running cdc looks for added partitions.
pub const CHECK_EVERY: Duration = Duration::from_secs(15);

pub(super) struct Partitioning {
    pub epochs: Epochs,
    /// The slot's marker, rewritten with each new epoch.
    marker: SnapshotMarker,
    pub fence: Fence,
    compacted: bool,
    pub planned: Option<PendingSwitch>,
    checked: Option<Instant>,
    /// The count of valid already warned about, so the warning is not repeated each check.
    warned: i32,
}

impl Partitioning {
    pub(super) fn new(marker: SnapshotMarker, legacy: i32, fence: Fence, compacted: bool) -> Self {
        let epochs = Epochs::recorded(marker.epochs.clone(), legacy);
        let planned = marker
            .switch
            .clone()
            .filter(|s| s.to > epochs.current() && !compacted);
        if let Some(s) = &planned {
            tracing::info!(to = s.to, after = ?s.after.map(|l| l.to_string()), changes_ends = ?s.changes_ends,
                valid_ends = ?s.valid_ends, "resuming the recorded switch to more partitions, with its fence's targets");
        }
        Partitioning {
            epochs,
            marker,
            fence,
            compacted,
            planned,
            checked: None,
            warned: 0,
        }
    }

    /// Looks for added partitions when a check is due, and plans the switch to them.
    pub(super) async fn check(&mut self) -> Result<()> {
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
        let after = written_up_to(&self.fence.database_url).await?;
        tracing::info!(from = current, to = changes, %after,
            "partitions were added: the first transaction committed after this point goes out across the new count, once the workers applied the old partitions");
        self.planned = Some(PendingSwitch {
            to: changes,
            after: Some(after),
            changes_ends: Vec::new(),
            valid_ends: Vec::new(),
        });
        Ok(())
    }

    /// Whether the transaction committed at `commit` is the planned switch's first.
    pub(super) fn due(&self, commit: Lsn) -> bool {
        self.planned
            .as_ref()
            .is_some_and(|p| p.after.is_none_or(|after| commit > after))
    }

    /// What the due switch still waits for at its fence, None once passed. Each target is
    /// taken the first time it is needed and recorded in the marker before it is used.
    pub(super) async fn waiting(
        &mut self,
        watch: &mut FenceWatch,
        registry: &Registry,
    ) -> Result<Option<String>> {
        let old = self.epochs.current();
        let Some(mut planned) = self.planned.clone() else {
            return Ok(None);
        };
        if planned.changes_ends.is_empty() {
            planned.changes_ends = watch.ends(false, old).await?;
            self.record(&planned, registry).await?;
            tracing::info!(ends = ?planned.changes_ends, topic = %self.fence.topics.changes,
                "the switch's fence: the fraud group must read the old partitions up to these offsets");
            crate::failpoint::hit(crate::failpoint::CDC_SWITCH_TARGETS)?;
        }
        if let Some(why) = watch.fraud_waiting(&planned.changes_ends).await? {
            return Ok(Some(why));
        }
        if planned.valid_ends.is_empty() {
            planned.valid_ends = watch.ends(true, old).await?;
            self.record(&planned, registry).await?;
            tracing::info!(ends = ?planned.valid_ends, topic = %self.fence.topics.valid,
                "the switch's fence: the stats worker must apply the old partitions up to these offsets");
        }
        watch.stats_waiting(&planned.valid_ends).await
    }

    /// The pending switch, with the targets taken so far, in the slot's marker.
    async fn record(&mut self, planned: &PendingSwitch, registry: &Registry) -> Result<()> {
        let marker = SnapshotMarker {
            switch: Some(planned.clone()),
            ..self.marker.clone()
        };
        snapshot::record_marker(
            &self.fence.kafka,
            &self.fence.topics.changes,
            registry,
            &marker,
        )
        .await?;
        (self.marker, self.planned) = (marker, Some(planned.clone()));
        Ok(())
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
            switch: None,
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

/// How far the server has written its WAL: every transaction any session of cdc can have
/// sent committed below it, and every one committed from now on lies above it. Kafka's tail
/// cannot say as much: after the slot was set back (a crash of PostgreSQL forgets where it
/// was confirmed), the last records of a partition are re-sends of older transactions,
/// while newer ones sent before the crash sit further back. A switch that began after such
/// a tail would send those newer transactions again across the new count, where their
/// copies land in other partitions than their first ones and count twice.
async fn written_up_to(database_url: &str) -> Result<Lsn> {
    let pg = crate::db::connect(database_url).await?;
    // A standby decodes no further than it has replayed.
    let row = pg
        .query_one(
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                         ELSE pg_current_wal_flush_lsn() END",
            &[],
        )
        .await?;
    Ok(row.get::<_, tokio_postgres::types::PgLsn>(0).into())
}
