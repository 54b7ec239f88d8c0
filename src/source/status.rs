//! `reviewflow status`: the slot's state and lag as PostgreSQL reports it.

use crate::error::Result;

#[derive(Debug, Clone)]
pub struct SlotStatus {
    pub slot: String,
    pub active: bool,
    pub confirmed_flush: Option<String>,
    pub restart: Option<String>,
    /// WAL written since the confirmed position: what the slot holds back.
    pub lag_bytes: Option<i64>,
    pub wal_status: Option<String>,
}

pub async fn slot_status(pg: &tokio_postgres::Client, slot: &str) -> Result<Option<SlotStatus>> {
    let row = pg
        .query_opt(
            "SELECT slot_name::text, active, confirmed_flush_lsn::text, restart_lsn::text,
                    (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, wal_status
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row.map(|r| SlotStatus {
        slot: r.get(0),
        active: r.get(1),
        confirmed_flush: r.get(2),
        restart: r.get(3),
        lag_bytes: r.get(4),
        wal_status: r.get(5),
    }))
}
