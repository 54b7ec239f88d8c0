//! The replication slots' part of a scrape: every logical slot's WAL lag and state, read
//! from PostgreSQL when /metrics is asked for, and the time lag of the slots this process's
//! cdc reads, peeked on a temporary copy (as `reviewflow status` does), so it keeps growing
//! while cdc is stopped.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::SLOT_QUERY_TIMEOUT;
use crate::error::Result;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlotLabel {
    slot: String,
}

/// A replication slot as the scrape reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotSample {
    pub slot: String,
    pub active: bool,
    /// WAL written since the slot's confirmed position; None when PostgreSQL has none.
    pub lag_bytes: Option<i64>,
    /// Age of the oldest change waiting in the slot (0 when none waits); None for a slot
    /// this process does not read, or when the peek failed or took too long.
    pub time_lag_seconds: Option<f64>,
}

/// A slot a cdc stage of this process reads: what its time lag is peeked with.
#[derive(Debug, Clone)]
struct ReadSlot {
    publication: String,
    /// cdc's own database URL: peeking copies the slot, which needs REPLICATION, a right
    /// the api's role (whose pool serves the rest of the scrape) may lack.
    database_url: String,
}

static READ_SLOTS: Mutex<BTreeMap<String, ReadSlot>> = Mutex::new(BTreeMap::new());

/// cdc tells which slot it reads (and through which publication), so that the scrape
/// reports that slot's time lag, also while the stage is stopped.
pub fn slot_read(slot: &str, publication: &str, database_url: &str) {
    READ_SLOTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(
            slot.into(),
            ReadSlot {
                publication: publication.into(),
                database_url: database_url.into(),
            },
        );
}

/// The slot's time lag, from a peek at a temporary copy on a connection of its own: when
/// the scrape gives up waiting, dropping the connection ends the session, which drops the
/// copy with it.
async fn time_lag(slot: &str, read: &ReadSlot) -> Result<f64> {
    let client = crate::db::connect(&read.database_url).await?;
    let waiting = crate::source::status::pending(&client, slot, &read.publication, 1).await?;
    Ok(waiting.oldest_commit.map_or(0.0, |t| {
        ((chrono::Utc::now() - t).num_milliseconds().max(0) as f64) / 1000.0
    }))
}

/// The time lag of each slot read here that `samples` holds, filled in within the timeout.
pub(super) async fn add_time_lags(samples: &mut [SlotSample]) {
    let read = READ_SLOTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let peeks = samples.iter().map(|s| {
        let read = read.get(&s.slot).cloned();
        let slot = s.slot.clone();
        async move {
            let read = read?;
            match tokio::time::timeout(SLOT_QUERY_TIMEOUT, time_lag(&slot, &read)).await {
                Ok(Ok(seconds)) => Some(seconds),
                Ok(Err(e)) => {
                    tracing::warn!(%slot, error = %e, "metrics: slot time lag left out");
                    None
                }
                Err(_) => {
                    tracing::warn!(%slot, "metrics: slot time lag left out (the peek took over 2 s)");
                    None
                }
            }
        }
    });
    let lags = futures_util::future::join_all(peeks).await;
    for (sample, lag) in samples.iter_mut().zip(lags) {
        sample.time_lag_seconds = lag;
    }
}

/// Every logical slot of the database, in one query.
pub async fn slot_samples(pg: &tokio_postgres::Client) -> Result<Vec<SlotSample>> {
    let rows = pg
        .query(
            "SELECT slot_name::text, active, (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint
             FROM pg_replication_slots WHERE slot_type = 'logical' AND database = current_database()",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| SlotSample {
            slot: r.get(0),
            active: r.get(1),
            lag_bytes: r.get(2),
            time_lag_seconds: None,
        })
        .collect())
}

/// The slots' gauges, into the scrape's own registry.
pub(super) fn register(scrape: &mut Registry, slots: &[SlotSample]) {
    let lag = Family::<SlotLabel, Gauge>::default();
    let active = Family::<SlotLabel, Gauge>::default();
    let time_lag = Family::<SlotLabel, Gauge<f64, AtomicU64>>::default();
    for s in slots {
        let label = SlotLabel {
            slot: s.slot.clone(),
        };
        if let Some(bytes) = s.lag_bytes {
            lag.get_or_create(&label).set(bytes);
        }
        if let Some(seconds) = s.time_lag_seconds {
            time_lag.get_or_create(&label).set(seconds);
        }
        active.get_or_create(&label).set(i64::from(s.active));
    }
    scrape.register_with_unit(
        "slot_lag",
        "WAL a replication slot holds: written since its confirmed position (read at scrape)",
        Unit::Bytes,
        lag,
    );
    scrape.register(
        "slot_active",
        "1 while a reader is connected to the replication slot (read at scrape)",
        active,
    );
    scrape.register_with_unit(
        "slot_time_lag",
        "Age of the oldest change waiting in a slot this process's cdc reads, 0 when none \
         waits (peeked at scrape)",
        Unit::Seconds,
        time_lag,
    );
}
