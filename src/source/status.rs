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
    /// PostgreSQL 17 and later: whether a failover keeps the slot, and whether it was
    /// synchronized from a primary (see `failover`); None before 17.
    pub failover: Option<super::failover::SlotFacts>,
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
    let Some(r) = row else { return Ok(None) };
    let failover = if super::failover::failover_slots(pg).await? {
        Some(super::failover::SlotFacts::of(pg, slot).await?)
    } else {
        None
    };
    Ok(Some(SlotStatus {
        slot: r.get(0),
        active: r.get(1),
        confirmed_flush: r.get(2),
        restart: r.get(3),
        lag_bytes: r.get(4),
        wal_status: r.get(5),
        failover,
    }))
}

/// Changes waiting in the slot, read from a temporary copy of it so nothing is consumed and
/// a running reader is not disturbed.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    /// Commit time of the oldest waiting transaction: how far behind the reader is.
    pub oldest_commit: Option<chrono::DateTime<chrono::Utc>>,
    /// One line per waiting change: commit LSN, op, and the new (or old) row's text values.
    pub changes: Vec<String>,
}

pub async fn pending(
    pg: &tokio_postgres::Client,
    slot: &str,
    publication: &str,
    limit: i32,
) -> Result<Pending> {
    use super::pgoutput::{decode, PgOutput, Tuple, Value};
    // Unique in the cluster: another process's peek, or this one's /metrics scrape beside
    // another reader of it, may copy the same slot at the same time.
    static PEEKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PEEKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let copy = format!("{slot}_peek_{}_{n}", std::process::id());
    // Temporary: PostgreSQL drops it when this session ends, whatever happens here.
    pg.execute(
        "SELECT pg_copy_logical_replication_slot($1, $2, true)",
        &[&slot, &copy],
    )
    .await?;
    let rows = pg
        .query(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2,
                 'proto_version', '1', 'publication_names', $3)",
            &[&copy, &limit.max(1), &publication],
        )
        .await;
    pg.execute("SELECT pg_drop_replication_slot($1)", &[&copy])
        .await?;
    let mut out = Pending::default();
    let mut columns: std::collections::HashMap<u32, Vec<String>> = Default::default();
    let mut commit_lsn = crate::contract::lsn::Lsn::ZERO;
    let show = |names: Option<&Vec<String>>, tuple: &Tuple| -> String {
        tuple
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let name = names.and_then(|n| n.get(i)).map_or("?", String::as_str);
                match v {
                    Value::Null => format!("{name}=NULL"),
                    Value::UnchangedToast => format!("{name}=(unchanged)"),
                    Value::Text(t) => format!("{name}={}", String::from_utf8_lossy(t)),
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    for row in rows? {
        let message = decode(bytes::Bytes::from(row.get::<_, Vec<u8>>(0)))?;
        let line = match message {
            PgOutput::Begin(b) => {
                commit_lsn = b.final_lsn;
                if out.oldest_commit.is_none() {
                    let micros =
                        super::replication::pg_epoch_micros_to_unix_micros(b.commit_time_micros);
                    out.oldest_commit = chrono::DateTime::from_timestamp_micros(micros);
                }
                None
            }
            PgOutput::Relation(r) => {
                columns.insert(r.id, r.columns.iter().map(|c| c.name.clone()).collect());
                None
            }
            PgOutput::Insert { relation_id, new } => {
                Some(format!("c {}", show(columns.get(&relation_id), &new)))
            }
            PgOutput::Update {
                relation_id, new, ..
            } => Some(format!("u {}", show(columns.get(&relation_id), &new))),
            PgOutput::Delete {
                relation_id, old, ..
            } => Some(format!("d {}", show(columns.get(&relation_id), &old))),
            PgOutput::Truncate { .. } => Some("t".to_string()),
            _ => None,
        };
        if let Some(line) = line {
            if out.changes.len() < limit as usize {
                out.changes.push(format!("{commit_lsn}  {line}"));
            }
        }
    }
    Ok(out)
}
