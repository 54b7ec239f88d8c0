//! The replication slot: how one is created with its exported snapshot (cdc's, and replay's
//! temporary one), how cdc finds its own at the start of a session, and how it lets go of one
//! it replaces.

use std::time::Duration;

use super::replication::{validate_slot_name, ReplicationConnection};
use crate::contract::lsn::Lsn;
use crate::db::quote_ident;
use crate::error::{Error, Result};

/// How long a slot lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotLifetime {
    /// Until it is dropped: cdc's, whose confirmed position outlives the process. With
    /// `failover` (PostgreSQL 17 and later), a standby with `sync_replication_slots` keeps a
    /// copy that a promotion makes usable (see `failover`).
    Permanent { failover: bool },
    /// Until the replication session ends: replay's, wanted only for its snapshot.
    Temporary,
}

/// What `CREATE_REPLICATION_SLOT` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    /// Changes committed after this LSN are streamed; everything before is in the snapshot.
    pub consistent_point: Lsn,
    /// For `SET TRANSACTION SNAPSHOT`, valid until the next command on this connection.
    pub snapshot_name: String,
}

/// Creates logical slot `slot` (pgoutput) on `conn` and exports a snapshot of the database
/// as of its consistent point. The snapshot is only importable until the next command on
/// `conn`: read it elsewhere first (`snapshot::SnapshotReader`), then stream or close.
pub async fn create(
    conn: &mut ReplicationConnection,
    slot: &str,
    lifetime: SlotLifetime,
) -> Result<CreatedSlot> {
    validate_slot_name(slot)?;
    let (temporary, failover) = match lifetime {
        SlotLifetime::Permanent { failover: false } => ("", ""),
        SlotLifetime::Permanent { failover: true } => ("", ", FAILOVER true"),
        SlotLifetime::Temporary => (" TEMPORARY", ""),
    };
    let sql = format!(
        "CREATE_REPLICATION_SLOT {}{temporary} LOGICAL pgoutput (SNAPSHOT 'export'{failover})",
        quote_ident(slot)
    );
    let rows = conn.simple_query(&sql).await?;
    let column = |i: usize| rows.first().and_then(|r| r.get(i)).cloned().flatten();
    let consistent_point = column(1)
        .ok_or_else(|| Error::Replication(format!("{sql}: no consistent_point returned")))?;
    let consistent_point = consistent_point
        .parse::<Lsn>()
        .map_err(|e| Error::Replication(format!("{sql}: consistent_point: {e}")))?;
    let snapshot_name =
        column(2).ok_or_else(|| Error::Replication(format!("{sql}: no snapshot_name returned")))?;
    tracing::info!(slot, ?lifetime, %consistent_point, snapshot = %snapshot_name, "created replication slot");
    Ok(CreatedSlot {
        consistent_point,
        snapshot_name,
    })
}

/// Drops `slot` once its walsender has let go of it (the stream was just closed).
pub(super) async fn drop_slot(pg: &tokio_postgres::Client, slot: &str) -> Result<()> {
    for _ in 0..150 {
        let row = pg
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?;
        match row.map(|r| r.get::<_, bool>(0)) {
            None => return Ok(()),
            Some(false) => {
                pg.execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                    .await?;
                return Ok(());
            }
            Some(true) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    Err(Error::Replication(format!(
        "slot {slot} is still in use 30 s after cdc closed its stream: is another cdc streaming it?"
    )))
}

/// The slot as PostgreSQL reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotState {
    Missing,
    /// wal_status `lost`: PostgreSQL removed WAL the slot still needed, so it can no longer
    /// give the changes after its confirmed position.
    Lost,
    Healthy,
}

impl SlotState {
    pub(super) async fn of(pg: &tokio_postgres::Client, slot: &str) -> Result<SlotState> {
        let row = pg
            .query_opt(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?;
        Ok(match row.map(|r| r.get::<_, Option<String>>(0)) {
            None => SlotState::Missing,
            Some(Some(status)) if status == "lost" => SlotState::Lost,
            Some(Some(status)) if status == "unreserved" => {
                tracing::warn!(
                    slot,
                    "the slot holds more WAL than max_slot_wal_keep_size: PostgreSQL invalidates it at \
                     the next checkpoint unless cdc catches up first"
                );
                SlotState::Healthy
            }
            Some(_) => SlotState::Healthy,
        })
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            SlotState::Missing => "is gone (it was dropped)",
            SlotState::Lost => {
                "was invalidated by PostgreSQL (wal_status lost: it fell more than \
                 max_slot_wal_keep_size behind and the WAL it needed was removed; raise that \
                 setting, or keep cdc running, so it does not happen again)"
            }
            SlotState::Healthy => "is healthy",
        }
    }
}
