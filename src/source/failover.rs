//! Whether the slot cdc finds is the one its snapshot came from. After a primary failover the
//! server cdc reaches is the promoted standby: a new timeline, and, before PostgreSQL 17 or
//! without failover slots, either no slot or one somebody made by hand that holds none of the
//! changes the old slot had not delivered. Resuming on such a slot would skip them silently,
//! and resuming where Kafka holds changes the new primary never had (written on the old
//! timeline after the fork) would keep phantoms. So the snapshot's marker records the server
//! (system identifier, timeline), and every session compares it with the server it reaches.
//!
//! Guarantee: cdc resumes on a slot only when it is the snapshot's own: the same server and
//! timeline, or, after a promotion, a slot PostgreSQL 17 synchronized to the standby
//! (`synced`, not `conflicting`) on a server of the same system, with nothing in Kafka beyond
//! the point where the new timeline forked. Otherwise it stops, saying why and naming
//! `--new-snapshot`.

use super::replication::ReplicationConnection;
use crate::contract::lsn::Lsn;
use crate::error::{Error, Result};

/// The server a session reaches, as `IDENTIFY_SYSTEM` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub system_id: String,
    pub timeline: u32,
}

impl Server {
    pub async fn identify(conn: &mut ReplicationConnection) -> Result<Server> {
        let rows = conn.simple_query("IDENTIFY_SYSTEM").await?;
        let column = |i: usize| rows.first().and_then(|r| r.get(i)).cloned().flatten();
        let (Some(system_id), Some(timeline)) = (column(0), column(1)) else {
            return Err(Error::Replication(
                "IDENTIFY_SYSTEM returned no system identifier and timeline".into(),
            ));
        };
        let timeline = timeline
            .parse()
            .map_err(|e| Error::Replication(format!("IDENTIFY_SYSTEM timeline {timeline}: {e}")))?;
        Ok(Server {
            system_id,
            timeline,
        })
    }
}

/// What PostgreSQL says of the slot on the server reached (PostgreSQL 17's columns; false
/// before it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SlotFacts {
    /// Created to follow a failover (`FAILOVER true`).
    pub failover: bool,
    /// Synchronized from a primary by the standby this server was.
    pub synced: bool,
    /// Invalidated for logical decoding (rows it needs removed, wal_level lowered).
    pub conflicting: bool,
}

impl SlotFacts {
    pub async fn of(pg: &tokio_postgres::Client, slot: &str) -> Result<SlotFacts> {
        if !failover_slots(pg).await? {
            return Ok(SlotFacts::default());
        }
        let row = pg
            .query_opt(
                "SELECT failover, synced, coalesce(conflicting, false)
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?;
        Ok(row.map_or_else(SlotFacts::default, |r| SlotFacts {
            failover: r.get(0),
            synced: r.get(1),
            conflicting: r.get(2),
        }))
    }
}

/// Whether the server has failover slots (PostgreSQL 17 and later).
pub async fn failover_slots(pg: &tokio_postgres::Client) -> Result<bool> {
    let version: i32 = pg
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    Ok(version >= 170_000)
}

/// What to do with the slot found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// The snapshot's own server and timeline, or a marker from before servers were recorded.
    Resume,
    /// A promoted standby carried the slot over: resume, and record the new timeline.
    Followed { fork: Lsn },
    /// Not the snapshot's slot: why, for the operator (it completes "replication slot X ...").
    Refuse(String),
}

/// Judges the slot on `here` against the server the snapshot recorded (`recorded`, None for
/// a marker written before servers were recorded). `history` is the new timeline's history
/// file (TIMELINE_HISTORY), `kafka_high` the newest commit LSN the changes topic holds.
pub fn judge(
    recorded: Option<&Server>,
    here: &Server,
    slot: SlotFacts,
    history: Option<&str>,
    kafka_high: Option<Lsn>,
) -> Judgement {
    let Some(recorded) = recorded else {
        return Judgement::Resume;
    };
    if recorded.system_id != here.system_id {
        return Judgement::Refuse(format!(
            "is on another database cluster (system identifier {}) than the one its snapshot \
             was read from ({}): it holds none of the changes Kafka's history leads up to",
            here.system_id, recorded.system_id
        ));
    }
    if recorded.timeline == here.timeline {
        return Judgement::Resume;
    }
    let promoted = format!(
        "is on a promoted standby (timeline {}, the snapshot was read on timeline {})",
        here.timeline, recorded.timeline
    );
    if !slot.synced {
        return Judgement::Refuse(format!(
            "{promoted}, and was not synchronized from the old primary (a failover slot needs \
             PostgreSQL 17, `FAILOVER true` and `sync_replication_slots` on the standby): it \
             holds none of the changes the old slot had not delivered"
        ));
    }
    if slot.conflicting {
        return Judgement::Refuse(format!(
            "{promoted} and is invalidated there (pg_replication_slots.conflicting)"
        ));
    }
    let Some(fork) = history.and_then(|h| fork_point(h, recorded.timeline)) else {
        return Judgement::Refuse(format!(
            "{promoted} whose timeline history does not go back to timeline {}",
            recorded.timeline
        ));
    };
    match kafka_high {
        Some(high) if high > fork => Judgement::Refuse(format!(
            "{promoted} that forked at {fork}, but Kafka holds changes committed up to {high} \
             on the old timeline, which the new primary never had"
        )),
        _ => Judgement::Followed { fork },
    }
}

/// Where timeline `from` ended, from a timeline history file: its lines are
/// `<parent timeline> <switch point> <reason>`; comments start with `#`.
pub fn fork_point(history: &str, from: u32) -> Option<Lsn> {
    history
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .find_map(|l| {
            let mut fields = l.split_whitespace();
            let parent: u32 = fields.next()?.parse().ok()?;
            let switch: Lsn = fields.next()?.parse().ok()?;
            (parent == from).then_some(switch)
        })
}

/// The newest commit LSN among the changes on `topic`: the tail of each partition, where
/// the newest change of its courses is (a partition's changes are in commit order).
pub async fn newest_commit(
    kafka: &crate::config::KafkaSettings,
    topic: &str,
    registry: &crate::registry::Registry,
) -> Result<Option<Lsn>> {
    use rdkafka::Message;
    let (kafka, name) = (kafka.clone(), topic.to_string());
    // The tail holds a few records besides the newest change: transaction markers, a
    // snapshot's ends.
    let tail = tokio::task::spawn_blocking(move || {
        crate::kafka::read_committed_tail(
            &kafka,
            &name,
            Some(16),
            std::time::Duration::from_secs(60),
        )
    })
    .await??;
    let mut newest = None;
    for m in tail {
        let Ok(framed) = registry.resolve(m.payload()).await? else {
            continue;
        };
        if let Ok(event) = crate::avro::decode_change(&framed.schema, framed.body) {
            newest = newest.max(Some(event.source.lsn));
        }
    }
    Ok(newest)
}

/// The history file of `timeline` (TIMELINE_HISTORY), or None on timeline 1, which has none.
pub async fn history(conn: &mut ReplicationConnection, timeline: u32) -> Result<Option<String>> {
    if timeline <= 1 {
        return Ok(None);
    }
    let rows = conn
        .simple_query(&format!("TIMELINE_HISTORY {timeline}"))
        .await?;
    Ok(rows.first().and_then(|r| r.get(1)).cloned().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(system_id: &str, timeline: u32) -> Server {
        Server {
            system_id: system_id.into(),
            timeline,
        }
    }

    const HISTORY: &str = "1\t0/3000060\tno recovery target specified\n\n2\t0/5000000\tpromoted\n";

    #[test]
    fn the_fork_point_is_where_the_recorded_timeline_ended() {
        assert_eq!(fork_point(HISTORY, 1), Some(Lsn(0x3000060)));
        assert_eq!(fork_point(HISTORY, 2), Some(Lsn(0x5000000)));
        assert_eq!(fork_point(HISTORY, 3), None);
    }

    #[test]
    fn the_same_server_and_timeline_resume_and_another_cluster_is_refused() {
        let here = server("7", 1);
        let none = SlotFacts::default();
        assert_eq!(judge(None, &here, none, None, None), Judgement::Resume);
        assert_eq!(
            judge(Some(&server("7", 1)), &here, none, None, None),
            Judgement::Resume
        );
        let Judgement::Refuse(why) = judge(Some(&server("8", 1)), &here, none, None, None) else {
            panic!("another cluster is refused");
        };
        assert!(
            why.contains("system identifier 7") && why.contains("(8)"),
            "{why}"
        );
    }

    #[test]
    fn a_promotion_is_followed_only_on_a_synced_slot_with_nothing_in_kafka_past_the_fork() {
        let (was, here) = (server("7", 1), server("7", 2));
        let synced = SlotFacts {
            failover: true,
            synced: true,
            conflicting: false,
        };
        assert_eq!(
            judge(
                Some(&was),
                &here,
                synced,
                Some(HISTORY),
                Some(Lsn(0x3000000))
            ),
            Judgement::Followed {
                fork: Lsn(0x3000060)
            }
        );
        let refused = |slot, history, high| match judge(Some(&was), &here, slot, history, high) {
            Judgement::Refuse(why) => why,
            other => panic!("refused, not {other:?}"),
        };
        assert!(refused(SlotFacts::default(), Some(HISTORY), None).contains("not synchronized"));
        let conflicting = SlotFacts {
            conflicting: true,
            ..synced
        };
        assert!(refused(conflicting, Some(HISTORY), None).contains("invalidated"));
        assert!(refused(synced, Some(HISTORY), Some(Lsn(0x3000061))).contains("never had"));
        assert!(refused(synced, None, None).contains("does not go back"));
    }
}
