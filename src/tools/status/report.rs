//! What `reviewflow status` and the pipeline page (GET /pipeline) both show of the pipeline
//! from outside any stage: the slot as PostgreSQL reports it, each worker's position per
//! partition (the fraud group's committed offsets in Kafka, the sinks' offsets in
//! PostgreSQL), and the dead-letter topic. Read from the database and Kafka alone, so it is
//! the same whichever process asks, and true even when no stage runs. Read-only.
//!
//! A part that cannot be read is left out and named in `unknown` with the cause, so one
//! broker out of reach still leaves the slot on the page.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::config::{KafkaSettings, TopicSettings};
use crate::error::Result;
use crate::sink::offsets::Stored;
use crate::source::failover::SlotFacts;
use crate::source::status::{pending, slot_status};

/// How long a Kafka read of the report waits for the broker.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(3);

/// How many of the latest dead letters the report reads back (their reasons).
pub const LATEST_DEAD_LETTERS: usize = 10;

/// Which pipeline `status` and `reviewflow api`'s page report on (`run`'s page: the one it
/// runs).
#[derive(clap::Args, Clone, Debug)]
pub struct Watched {
    /// The slot to report on.
    #[arg(long, env = "REVIEWFLOW_SLOT", default_value = crate::source::args::DEFAULT_SLOT)]
    pub slot: String,
    /// The publication the slot streams.
    #[arg(long, env = "REVIEWFLOW_PUBLICATION", default_value = crate::source::args::DEFAULT_PUBLICATION)]
    pub publication: String,
    /// The fraud workers' consumer group, whose committed offsets are its position.
    #[arg(
        long = "fraud-group",
        env = "REVIEWFLOW_FRAUD_GROUP",
        default_value = crate::transform::args::DEFAULT_GROUP
    )]
    pub fraud_group: String,
}

impl Watched {
    pub fn place(self, topics: TopicSettings) -> Place {
        Place {
            topics,
            slot: self.slot,
            publication: self.publication,
            fraud_group: self.fraud_group,
        }
    }
}

/// Which pipeline to report on.
#[derive(Clone, Debug)]
pub struct Place {
    pub topics: TopicSettings,
    pub slot: String,
    pub publication: String,
    pub fraud_group: String,
}

/// The pipeline as the database and Kafka show it now.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineReport {
    pub read_at: DateTime<Utc>,
    /// None when it could not be read (the cause is in `unknown`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<SlotReport>,
    /// Every worker partition: the fraud group's, then the sinks'.
    pub positions: Vec<Position>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letters: Option<DeadLetterReport>,
    /// Set while the stats worker gathers a snapshot's figures beside the live ones.
    pub restating: Option<String>,
    /// What this reading could not know, and why.
    pub unknown: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SlotReport {
    pub name: String,
    /// False until cdc first starts; every other field is then empty.
    pub created: bool,
    /// A reader (cdc) is connected.
    pub active: bool,
    pub confirmed_flush: Option<String>,
    pub restart: Option<String>,
    /// WAL written since the confirmed position: what the slot holds back.
    pub wal_held_bytes: Option<i64>,
    pub wal_status: Option<String>,
    /// PostgreSQL 17 and later; None before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<SlotFacts>,
    /// Seconds since the oldest change waiting in the slot was committed; 0 when none waits.
    pub time_lag_s: Option<f64>,
    pub oldest_waiting_commit: Option<DateTime<Utc>>,
    /// The first waiting changes, when asked for (`status --peek`).
    pub pending: Vec<String>,
}

/// A worker's place in one partition of its input topic.
#[derive(Clone, Debug, Serialize)]
pub struct Position {
    /// `fraud`, or the sink's consumer name (`stats`, `verdicts`).
    pub stage: String,
    pub topic: String,
    pub partition: i32,
    /// The next offset it reads; None when nothing is committed yet.
    pub at: Option<i64>,
    /// The topic's end; None when the broker did not say.
    pub end: Option<i64>,
    /// Records behind (a transaction's commit marker takes an offset).
    pub behind: Option<i64>,
    /// The sink instance that claimed the partition last.
    pub owner: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeadLetterReport {
    pub topic: String,
    /// False until a stage first sends one (the topic is created then).
    pub exists: bool,
    /// Offsets the topic retains; a fraud transaction's commit marker takes one too.
    pub offsets: i64,
    /// The latest, newest first.
    pub latest: Vec<DeadLetter>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeadLetter {
    pub at: Option<DateTime<Utc>>,
    pub stage: Option<String>,
    pub reason: Option<String>,
    /// Where the record came from: topic/partition@offset.
    pub source: Option<String>,
}

impl PipelineReport {
    /// A report of nothing read, for `reason`.
    pub fn unknown(reason: &str) -> PipelineReport {
        PipelineReport {
            read_at: Utc::now(),
            slot: None,
            positions: Vec::new(),
            dead_letters: None,
            restating: None,
            unknown: vec![reason.to_string()],
        }
    }

    /// Reads everything but the stages' own state; `peek` waiting changes are listed. With
    /// no database (`pg` None, the caller names why), Kafka is still read.
    pub async fn gather(
        pg: Option<&tokio_postgres::Client>,
        kafka: &KafkaSettings,
        place: &Place,
        peek: i32,
    ) -> PipelineReport {
        let mut unknown = Vec::new();
        let (mut slot, mut sinks, mut restating) = (None, Vec::new(), None);
        if let Some(pg) = pg {
            match read_slot(pg, place, peek).await {
                Ok(s) => slot = Some(s),
                Err(e) => unknown.push(format!("slot {}: {e}", place.slot)),
            }
            match crate::sink::offsets::stored(pg).await {
                Ok(s) => sinks = s,
                Err(e) => unknown.push(format!("sink offsets: {e}")),
            }
            match crate::sink::stats::restating::status_line(pg).await {
                Ok(r) => restating = r,
                Err(e) => unknown.push(format!("stats state: {e}")),
            }
        }
        let (kafka, place2) = (kafka.clone(), place.clone());
        let read = tokio::task::spawn_blocking(move || {
            let probe = probe(&kafka, &place2.fraud_group)?;
            let positions = positions(&probe, &place2, &sinks);
            let dead = dead_letters(&kafka, &probe, &place2.topics.dead_letters);
            Ok::<_, crate::Error>((positions, dead))
        })
        .await
        .map_err(crate::Error::from)
        .and_then(|r| r);
        let (positions, dead_letters) = match read {
            Ok((positions, dead)) => {
                let dead = dead
                    .map_err(|e| unknown.push(format!("dead letters: {e}")))
                    .ok();
                (positions, dead)
            }
            Err(e) => {
                unknown.push(format!("kafka: {e}"));
                (Vec::new(), None)
            }
        };
        PipelineReport {
            read_at: Utc::now(),
            slot,
            positions,
            dead_letters,
            restating,
            unknown,
        }
    }
}

async fn read_slot(pg: &tokio_postgres::Client, place: &Place, peek: i32) -> Result<SlotReport> {
    let Some(s) = slot_status(pg, &place.slot).await? else {
        return Ok(SlotReport {
            name: place.slot.clone(),
            created: false,
            active: false,
            confirmed_flush: None,
            restart: None,
            wal_held_bytes: None,
            wal_status: None,
            failover: None,
            time_lag_s: None,
            oldest_waiting_commit: None,
            pending: Vec::new(),
        });
    };
    let waiting = pending(pg, &place.slot, &place.publication, peek.max(1)).await?;
    let time_lag_s = Some(waiting.oldest_commit.map_or(0.0, |t| {
        ((Utc::now() - t).num_milliseconds().max(0) as f64) / 1000.0
    }));
    let mut shown = waiting.changes;
    shown.truncate(peek.max(0) as usize);
    Ok(SlotReport {
        name: s.slot,
        created: true,
        active: s.active,
        confirmed_flush: s.confirmed_flush,
        restart: s.restart,
        wal_held_bytes: s.lag_bytes,
        wal_status: s.wal_status,
        failover: s.failover,
        time_lag_s,
        oldest_waiting_commit: waiting.oldest_commit,
        pending: shown,
    })
}

/// A consumer that joins nothing: it reads the group's committed offsets and the topics'
/// ends. Blocking to create.
fn probe(kafka: &KafkaSettings, group: &str) -> Result<BaseConsumer> {
    Ok(crate::kafka::client_config(kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        // Committed offsets of a group in the middle of a transaction are still readable.
        .set("isolation.level", "read_uncommitted")
        .create()?)
}

/// The fraud group's committed offsets on the changes topic, then each sink's. Blocking.
fn positions(probe: &BaseConsumer, place: &Place, sinks: &[Stored]) -> Vec<Position> {
    let end = |topic: &str, partition: i32| {
        probe
            .fetch_watermarks(topic, partition, KAFKA_TIMEOUT)
            .map(|(_, high)| high)
            .ok()
    };
    let position = |stage: &str, topic: &str, partition: i32, at: Option<i64>, owner| {
        let end = at.and_then(|_| end(topic, partition));
        Position {
            stage: stage.into(),
            topic: topic.into(),
            partition,
            at,
            end,
            behind: at.zip(end).map(|(at, end)| (end - at).max(0)),
            owner,
        }
    };
    let changes = &place.topics.changes;
    let mut out = Vec::new();
    if let Ok(count) = crate::kafka::partition_count(probe, changes) {
        let mut tpl = TopicPartitionList::new();
        for p in 0..count {
            tpl.add_partition(changes, p);
        }
        if let Ok(committed) = probe.committed_offsets(tpl, KAFKA_TIMEOUT) {
            for e in committed.elements() {
                let at = e.offset().to_raw().filter(|o| *o >= 0);
                out.push(position("fraud", changes, e.partition(), at, None));
            }
        }
    }
    for s in sinks {
        out.push(position(
            &s.consumer,
            &s.topic,
            s.partition,
            Some(s.next_offset),
            s.owner.clone(),
        ));
    }
    out
}

/// How many offsets the dead-letter topic holds, and the latest letters' reasons (from the
/// headers every stage writes, `kafka::dead_letter_headers`). Blocking.
fn dead_letters(
    kafka: &KafkaSettings,
    probe: &BaseConsumer,
    topic: &str,
) -> Result<DeadLetterReport> {
    let metadata = probe.fetch_metadata(Some(topic), KAFKA_TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let mut report = DeadLetterReport {
        topic: topic.into(),
        exists: !partitions.is_empty(),
        offsets: 0,
        latest: Vec::new(),
    };
    let reader: BaseConsumer = crate::kafka::client_config(kafka)
        .set("group.id", "reviewflow-status")
        .set("enable.auto.commit", "false")
        // A fraud transaction that aborted sent no dead letter.
        .set("isolation.level", "read_committed")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in partitions {
        let (low, high) = probe.fetch_watermarks(topic, p, KAFKA_TIMEOUT)?;
        report.offsets += high - low;
        if high > low {
            let from = (high - LATEST_DEAD_LETTERS as i64).max(low);
            tpl.add_partition_offset(topic, p, Offset::Offset(from))?;
            ends.push((p, high));
        }
    }
    if ends.is_empty() {
        return Ok(report);
    }
    reader.assign(&tpl)?;
    // Short: a partition whose last transaction is still open is read to its end only when
    // that commits, and the page waits for this.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut letters = Vec::new();
    while std::time::Instant::now() < deadline {
        if let Some(m) = reader.poll(Duration::from_millis(100)) {
            let m = m?;
            let header = |key: &str| {
                m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == key)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            };
            let source = match (
                header("reviewflow.dlq.topic"),
                header("reviewflow.dlq.partition"),
                header("reviewflow.dlq.offset"),
            ) {
                (Some(t), Some(p), Some(o)) => Some(format!("{t}/{p}@{o}")),
                _ => None,
            };
            letters.push(DeadLetter {
                at: m
                    .timestamp()
                    .to_millis()
                    .and_then(DateTime::from_timestamp_millis),
                stage: header("reviewflow.dlq.stage"),
                reason: header("reviewflow.dlq.reason"),
                source,
            });
        }
        // Done once every partition is read to its end (past a last commit marker too).
        let done = reader.position().is_ok_and(|at| {
            ends.iter().all(|(p, high)| {
                at.find_partition(topic, *p)
                    .and_then(|e| e.offset().to_raw())
                    .is_some_and(|o| o >= *high)
            })
        });
        if done {
            break;
        }
    }
    letters.sort_by_key(|l| std::cmp::Reverse(l.at));
    letters.truncate(LATEST_DEAD_LETTERS);
    report.latest = letters;
    Ok(report)
}

impl SlotReport {
    /// The lines `status` prints for the slot.
    pub fn lines(&self) -> Vec<String> {
        let slot = &self.name;
        if !self.created {
            return vec![format!(
                "slot {slot}: not created yet (cdc creates it on first start)"
            )];
        }
        let state = if self.active {
            "active (cdc connected)"
        } else {
            "inactive"
        };
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let held = self.wal_held_bytes.map_or("-".into(), |b| b.to_string());
        let mut out = vec![
            format!("slot {slot}: {state}"),
            format!("  confirmed flush: {}", or_dash(&self.confirmed_flush)),
            format!("  restart:         {}", or_dash(&self.restart)),
            format!("  lag:             {held} bytes of WAL held"),
            format!("  wal status:      {}", or_dash(&self.wal_status)),
        ];
        out.push(match self.failover {
            None => "  failover:        no (PostgreSQL before 17: a promoted standby has no copy \
                     of the slot; cdc then stops and names --new-snapshot)"
                .into(),
            Some(f) => format!(
                "  failover:        {} (synced from a primary: {}{})",
                if f.failover { "yes" } else { "no" },
                if f.synced { "yes" } else { "no" },
                if f.conflicting {
                    "; conflicting: invalidated"
                } else {
                    ""
                }
            ),
        });
        out.push(match self.oldest_waiting_commit {
            None => "  time lag:        0 s (no change waiting)".into(),
            Some(t) => format!(
                "  time lag:        {} s (oldest waiting change committed {t})",
                self.time_lag_s.unwrap_or_default().floor()
            ),
        });
        out
    }
}

impl Position {
    /// The line `status` prints for the partition.
    pub fn line(&self) -> String {
        let (who, topic, partition) = (&self.stage, &self.topic, self.partition);
        let owner = self
            .owner
            .as_deref()
            .map(|o| format!(" (owner {o})"))
            .unwrap_or_default();
        match (self.at, self.end, self.behind) {
            (None, _, _) => format!("  {who:<9} {topic}/{partition}: nothing committed yet"),
            (Some(at), Some(high), Some(behind)) => {
                format!("  {who:<9} {topic}/{partition}: at {at} of {high}, {behind} behind{owner}")
            }
            (Some(at), _, _) => {
                format!("  {who:<9} {topic}/{partition}: at {at} (topic end unknown){owner}")
            }
        }
    }
}

impl DeadLetterReport {
    /// The lines `status` prints for the dead-letter topic.
    pub fn lines(&self) -> Vec<String> {
        if !self.exists {
            return vec![format!(
                "dead letters ({}): none (the topic is created with the first)",
                self.topic
            )];
        }
        let mut out = vec![format!(
            "dead letters ({}): {} offsets retained (a transaction's commit marker takes one)",
            self.topic, self.offsets
        )];
        for l in &self.latest {
            let at = l.at.map_or("-".into(), |t| t.to_rfc3339());
            out.push(format!(
                "  - {at} {} {}: {}",
                l.stage.as_deref().unwrap_or("?"),
                l.source.as_deref().unwrap_or("?"),
                l.reason.as_deref().unwrap_or("(no reason header)")
            ));
        }
        out
    }
}
