//! The replication slot as cdc finds it at the start of a session, and how it lets go of one
//! it replaces.

use std::time::Duration;

use crate::error::{Error, Result};

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
