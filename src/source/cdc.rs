//! `reviewflow cdc`: the logical replication reader, the head of the flow. It streams every
//! change of `reviews` from the slot (pgoutput) into `reviews.changes`, keyed by course id.
//!
//! Guarantees:
//! - at-least-once into Kafka, in commit order per course: the slot's confirmed position
//!   moves only past transactions whose every event Kafka acknowledged (idempotent producer);
//! - after a crash at any instant the restart resumes from the slot, and a re-sent event
//!   carries the same (commit LSN, position) as before, so consumers drop it;
//! - a new slot starts with a snapshot of any length (committed in chunks between a TRUNCATE
//!   and an end on every partition, see `snapshot`) and then streams from exactly its
//!   consistent point: no row missed or doubled across the boundary;
//! - a slot that is gone or invalidated (wal_status lost) after its snapshot was sent stops
//!   the reader with `Error::SlotLost` (what happened, what to do): it never creates a new
//!   slot on its own, which would skip the changes the old one could not deliver;
//!   `--new-snapshot` then restates the table (see `snapshot`);
//! - a column change registers a new schema version; an incompatible one stops the reader
//!   before anything of it is produced, so the slot is not advanced past it;
//! - partitions added to the changes topic are followed, not refused: each transaction goes
//!   to the partitions of the epoch its commit LSN falls in (recorded in the slot's marker),
//!   and a switch to the new count waits until the workers applied the old partitions (see
//!   `switch` and `fence`), so re-sends stay beside their first copies and per-course order
//!   holds across the switch;
//! - no value stops it (docs/values.md): each has an Avro branch, a change too large for the
//!   topic carries its largest values as oversize markers, and one without a course id goes
//!   keyless to partition 0; a `reviews` whose id may be NULL is refused with the fix named.

use tokio_util::sync::CancellationToken;

use super::columns::TypeCatalog;
use super::failover::{self, Judgement, Server, SlotFacts};
use super::fence::Fence;
use super::refusals;
use super::replication::ReplicationConnection;
use super::size::record_limits;
use super::slot::{self, drop_slot, SlotLifetime, SlotState};
use super::snapshot::{self, Snapshot, SnapshotHistory, SnapshotMarker};
use super::stream::Streamer;
use super::switch::Partitioning;
use super::CdcConfig;
use crate::config::{Settings, TopicSettings};
use crate::contract::lsn::Lsn;
use crate::error::{Error, Result};
use crate::kafka::ensure_topic;
use crate::metrics;
use crate::registry::Registry;

pub struct Cdc {
    pub settings: Settings,
    pub config: CdcConfig,
    pub topics: TopicSettings,
}

impl Cdc {
    /// Runs until `shutdown`; reconnects with backoff after PostgreSQL or Kafka failures.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let stage = self.config.stage();
        let Some(registry) = crate::retry::setup(&stage, &shutdown, || self.prepare()).await?
        else {
            return Ok(());
        };
        crate::metrics::slot_read(
            &self.config.slot,
            &self.config.publication,
            &self.settings.database_url,
        );
        crate::retry::sessions(&stage, &shutdown, || self.session(&registry, &shutdown)).await
    }

    /// Its topics checked or made, and the registry connected.
    async fn prepare(&self) -> Result<Registry> {
        let kafka = &self.settings.kafka;
        let (partitions, replication) = (self.topics.partitions, self.topics.replication_factor);
        // Kept forever: `replay` rebuilds derived state from this history. A table of current
        // state keeps only the latest change per course. A topic that already exists with other
        // settings is refused by ensure_topic.
        let settings: &[(&str, &str)] = if self.config.compacted {
            &[("cleanup.policy", "compact")]
        } else {
            crate::kafka::HISTORY_SETTINGS
        };
        let found = ensure_topic(
            kafka,
            &self.topics.changes,
            partitions,
            replication,
            settings,
        )
        .await?;
        if found != partitions {
            // Where a course lives follows the partition epochs recorded with the snapshot
            // (see `epochs`), not this setting, which only creates topics.
            tracing::info!(topic = %self.topics.changes, partitions = found, configured = partitions,
                "the changes topic has another partition count than configured; the recorded epochs decide");
        }
        let markers = snapshot::marker_topic(&self.topics.changes);
        ensure_topic(
            kafka,
            &markers,
            1,
            replication,
            &[("cleanup.policy", "compact")],
        )
        .await?;
        Registry::connect(&self.settings).await
    }

    async fn session(&self, registry: &Registry, shutdown: &CancellationToken) -> Result<()> {
        let cfg = &self.config;
        // It runs with TimeZone=UTC and DateStyle=ISO: the text forms the Avro mapping parses.
        let mut conn = ReplicationConnection::connect(&self.settings.database_url).await?;
        let pg = crate::db::connect(&self.settings.database_url).await?;
        refusals::check(&pg, &self.config.source(&self.topics.changes)).await?;
        let types = TypeCatalog::connect(&self.settings.database_url).await?;
        types
            .refuse_nullable_id(snapshot::TABLE_SCHEMA, &cfg.table)
            .await?;
        // Read each session: an operator who raised the topic's limit after seeing the
        // oversize counter move only restarts cdc.
        let limits = record_limits(&self.settings.kafka, &self.topics.changes).await?;
        let slot = SlotState::of(&pg, &cfg.slot).await?;
        let history = snapshot::find_marker(
            &self.settings.kafka,
            &self.topics.changes,
            &cfg.slot,
            registry,
        )
        .await?;
        let server = Server::identify(&mut conn).await?;
        let resume = match (&slot, &history) {
            (SlotState::Healthy, SnapshotHistory::Completed(m)) => {
                match self
                    .judge_slot(&mut conn, &pg, registry, m, &server)
                    .await?
                {
                    Judgement::Resume => Some(m.clone()),
                    Judgement::Followed { fork } => {
                        tracing::warn!(slot = %cfg.slot, timeline = server.timeline, %fork,
                            "followed a failover: resuming from the slot the promoted standby kept");
                        // A pending switch's targets were taken on the old timeline: the
                        // switch is planned again, and waits for what Kafka holds then.
                        let followed = SnapshotMarker {
                            server: Some(server.clone()),
                            switch: None,
                            ..m.clone()
                        };
                        snapshot::record_marker(
                            &self.settings.kafka,
                            &self.topics.changes,
                            registry,
                            &followed,
                        )
                        .await?;
                        Some(followed)
                    }
                    Judgement::Refuse(why) if !cfg.new_snapshot => {
                        return Err(Error::SlotLost {
                            slot: cfg.slot.clone(),
                            state: why,
                            snapshot_lsn: m.consistent_point,
                            topic: self.topics.changes.clone(),
                        });
                    }
                    Judgement::Refuse(why) => {
                        tracing::warn!(slot = %cfg.slot, reason = %why,
                            "--new-snapshot: the slot is not the snapshot's own; replacing it and restating the table");
                        None
                    }
                }
            }
            (SlotState::Missing | SlotState::Lost, SnapshotHistory::Completed(m))
                if !cfg.new_snapshot =>
            {
                let promoted = m
                    .server
                    .as_ref()
                    .filter(|r| r.system_id == server.system_id && r.timeline != server.timeline)
                    .map_or(String::new(), |r| {
                        format!(
                            " on a promoted standby (timeline {}, the snapshot was read on \
                             timeline {}): before PostgreSQL 17, or without a failover slot, a \
                             slot does not survive a failover",
                            server.timeline, r.timeline
                        )
                    });
                return Err(Error::SlotLost {
                    slot: cfg.slot.clone(),
                    state: format!("{}{promoted}", slot.describe()),
                    snapshot_lsn: m.consistent_point,
                    topic: self.topics.changes.clone(),
                });
            }
            _ => None,
        };
        let (start, marker) = if let Some(marker) = resume {
            tracing::info!(slot = %cfg.slot, "resuming from the slot");
            (Lsn::ZERO, marker)
        } else {
            {
                // A compacted topic takes no keyless TRUNCATE: its readers keep the latest row
                // per key, which the new snapshot's rows replace (rows deleted while the slot
                // was lost stay there until deleted again). Every other snapshot is marked, the
                // first too: an attempt that died may have left committed chunks.
                let marked = !cfg.compacted;
                if let SnapshotHistory::Completed(m) = &history {
                    tracing::warn!(slot = %cfg.slot, state = slot.describe(), snapshot_lsn = %m.consistent_point,
                        "--new-snapshot: taking a new snapshot that restates the table");
                    snapshot::withdraw_marker(
                        &self.settings.kafka,
                        &self.topics.changes,
                        &cfg.slot,
                        registry,
                    )
                    .await?;
                }
                if slot != SlotState::Missing {
                    tracing::warn!(slot = %cfg.slot, state = slot.describe(), "the slot's snapshot never completed, or the slot is lost or not the snapshot's own; dropping it and starting over");
                    pg.execute("SELECT pg_drop_replication_slot($1)", &[&cfg.slot])
                        .await?;
                }
                let filenode_before = snapshot::table_filenode(&pg, &cfg.table).await?;
                let failover = failover::failover_slots(&pg).await?;
                let created =
                    slot::create(&mut conn, &cfg.slot, SlotLifetime::Permanent { failover })
                        .await?;
                let marker = Snapshot {
                    table: &cfg.table,
                    database_url: &self.settings.database_url,
                    snapshot_name: &created.snapshot_name,
                    consistent_point: created.consistent_point,
                    slot: &cfg.slot,
                    topic: &self.topics.changes,
                    kafka: &self.settings.kafka,
                    registry,
                    types: &types,
                    limits,
                    oversize: metrics::oversize_values(&self.config.stage()),
                    filenode_before,
                    marked,
                    rate: cfg.snapshot_rate,
                    server: &server,
                }
                .run()
                .await?;
                (created.consistent_point, marker)
            }
        };
        let fence = Fence {
            kafka: self.settings.kafka.clone(),
            topics: self.topics.clone(),
            fraud_group: cfg.fraud_group.clone(),
            database_url: self.settings.database_url.clone(),
        };
        let partitioning = Partitioning::new(marker, self.topics.partitions, fence, cfg.compacted);
        let stream = conn.start(&cfg.slot, start, &cfg.publication).await?;
        let mut streamer = Streamer::new(
            (&self.settings, &self.config, &self.topics),
            registry.clone(),
            types,
            limits,
            partitioning,
        )?;
        let result = streamer.run(stream, start, shutdown).await;
        if streamer.identity_refused && cfg.new_snapshot && result.is_err() {
            // The table is FULL now (the session's check passed) but the slot still holds
            // changes written before: replace the slot, and the next session restates the table.
            tracing::warn!(slot = %cfg.slot, "--new-snapshot: the slot holds changes without before images; dropping it to restate the table");
            drop_slot(&pg, &cfg.slot).await?;
            return Err(Error::Replication(format!(
                "slot {} dropped for --new-snapshot: a new session restates the table",
                cfg.slot
            )));
        }
        result
    }

    /// Whether the healthy slot found is the snapshot's own (see `failover`).
    async fn judge_slot(
        &self,
        conn: &mut ReplicationConnection,
        pg: &tokio_postgres::Client,
        registry: &Registry,
        marker: &SnapshotMarker,
        server: &Server,
    ) -> Result<Judgement> {
        let recorded = marker.server.as_ref();
        let promoted = recorded
            .is_some_and(|r| r.system_id == server.system_id && r.timeline != server.timeline);
        let (facts, history, high) = if promoted {
            (
                SlotFacts::of(pg, &self.config.slot).await?,
                failover::history(conn, server.timeline).await?,
                failover::newest_commit(&self.settings.kafka, &self.topics.changes, registry)
                    .await?,
            )
        } else {
            (SlotFacts::default(), None, None)
        };
        Ok(failover::judge(
            recorded,
            server,
            facts,
            history.as_deref(),
            high,
        ))
    }
}
