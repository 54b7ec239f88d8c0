//! The fence of a switch to more partitions: before cdc writes the first change across the
//! new count, the workers must have applied every change of the old partitions. A course
//! that moves to a new partition then has no older change left anywhere that a worker could
//! apply after its newer ones, so per-course order, and the stats worker's per-partition
//! de-duplication, hold across the switch.
//!
//! The targets are end offsets taken once: changes' when a session first reached the
//! switch with every change before it delivered, valid's when the fraud group had read up
//! to those. They are kept in the slot's marker beside the pending switch (see `switch`), so
//! a session after a crash waits for the same offsets. Copies re-sent after them (a crash of
//! PostgreSQL sets the slot back) land in the same old partitions as their first copies,
//! which the targets cover, and the stats worker skips them as re-sends of their partition:
//! waiting for them too would let every crash move the fence, which under steady faults
//! it never reached.
//!
//! This is the one place the source looks down the flow: it reads where the fraud group
//! stands on `reviews.changes` (its committed offsets) and where the stats worker stands on
//! `reviews.valid` (its rows of `sink_offsets`), and waits; it never changes either.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{KafkaSettings, TopicSettings};
use crate::error::Result;
use crate::kafka::{client_config, read_position};

const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the workers' progress is read.
#[derive(Clone, Debug)]
pub(super) struct Fence {
    pub kafka: KafkaSettings,
    pub topics: TopicSettings,
    pub fraud_group: String,
    pub database_url: String,
}

impl Fence {
    /// The clients one switch's wait reads through, made once for it.
    pub(super) fn open(&self) -> Result<FenceWatch> {
        Ok(FenceWatch {
            fence: self.clone(),
            readers: Arc::new(Readers::new(&self.kafka, &self.fraud_group)?),
            pg: None,
        })
    }
}

/// The fence's reads during one switch's wait.
pub(super) struct FenceWatch {
    fence: Fence,
    readers: Arc<Readers>,
    /// The database connection, made again after it failed.
    pg: Option<tokio_postgres::Client>,
}

impl FenceWatch {
    /// The end offsets of the first `old` partitions of the changes topic, or of the valid
    /// changelog: every record there, committed or not, lies below them.
    pub(super) async fn ends(&self, valid: bool, old: i32) -> Result<Vec<i64>> {
        let topics = &self.fence.topics;
        let topic = if valid {
            &topics.valid
        } else {
            &topics.changes
        }
        .clone();
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            (0..old)
                .map(|p| Ok(readers.all.fetch_watermarks(&topic, p, KAFKA_TIMEOUT)?.1))
                .collect()
        })
        .await?
    }

    /// The old partition of the changes topic the fraud group has not yet read up to its
    /// end in `ends`, if any.
    pub(super) async fn fraud_waiting(&self, ends: &[i64]) -> Result<Option<String>> {
        let (readers, topic) = (self.readers.clone(), self.fence.topics.changes.clone());
        let targets = ends.to_vec();
        let unread = tokio::task::spawn_blocking(move || {
            let committed = readers.committed(&topic, targets.len() as i32)?;
            readers.first_unread(&topic, &committed, &targets)
        })
        .await??;
        Ok(unread.map(|p| {
            format!(
                "the fraud group {} has not yet read {} partition {p} up to offset {}",
                self.fence.fraud_group, self.fence.topics.changes, ends[p as usize]
            )
        }))
    }

    /// The old partition of the valid changelog the stats worker has not yet applied up to
    /// its end in `ends`, if any. None too when no stats worker ever applied anything of
    /// this changelog: one that starts later reads the partitions side by side, and without
    /// that a deployment that runs no stats worker would hold cdc for ever.
    pub(super) async fn stats_waiting(&mut self, ends: &[i64]) -> Result<Option<String>> {
        let pg = match self.pg.take() {
            Some(pg) if !pg.is_closed() => pg,
            _ => crate::db::connect(&self.fence.database_url).await?,
        };
        let topic = self.fence.topics.valid.clone();
        let stored: Vec<(i32, i64)> = crate::sink::offsets::stored(&pg)
            .await?
            .into_iter()
            .filter(|s| s.consumer == crate::sink::stats::CONSUMER && s.topic == topic)
            .map(|s| (s.partition, s.next_offset))
            .collect();
        self.pg = Some(pg);
        if stored.is_empty() {
            return Ok(None);
        }
        let (readers, ends) = (self.readers.clone(), ends.to_vec());
        tokio::task::spawn_blocking(move || {
            let at: Vec<(i32, i64)> = (0..ends.len() as i32)
                .map(|p| (p, stored.iter().find(|s| s.0 == p).map_or(0, |s| s.1)))
                .collect();
            let Some(p) = readers.first_unread(&topic, &at, &ends)? else {
                return Ok(None);
            };
            let stable = readers
                .committed
                .fetch_watermarks(&topic, p, KAFKA_TIMEOUT)?
                .1;
            let open = if stable < ends[p as usize] {
                " (a transaction is open there: a fraud instance that died holds it until \
                 the broker's transaction timeout)"
            } else {
                ""
            };
            Ok(Some(format!(
                "the stats worker has not yet applied {topic} partition {p} up to offset {}{open}",
                ends[p as usize]
            )))
        })
        .await?
    }
}

/// A read_committed reader and a read_uncommitted one, both in no group's membership.
struct Readers {
    committed: BaseConsumer,
    all: BaseConsumer,
}

impl Readers {
    fn new(kafka: &KafkaSettings, group: &str) -> Result<Readers> {
        let client = |isolation: &str| {
            client_config(kafka)
                .set("group.id", group)
                .set("enable.auto.commit", "false")
                .set("isolation.level", isolation)
                .create()
        };
        Ok(Readers {
            committed: client("read_committed")?,
            all: client("read_uncommitted")?,
        })
    }

    /// The group's committed offsets on the first `count` partitions (0 where none is).
    fn committed(&self, topic: &str, count: i32) -> Result<Vec<(i32, i64)>> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..count {
            tpl.add_partition(topic, p);
        }
        let committed = self.committed.committed_offsets(tpl, KAFKA_TIMEOUT)?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| {
                (
                    e.partition(),
                    e.offset().to_raw().filter(|o| *o >= 0).unwrap_or(0),
                )
            })
            .collect())
    }

    /// The first partition that holds a committed record at or after its reader's offset
    /// and below its end in `ends`. The offsets between may all be transaction markers or
    /// aborted records, which are never delivered, so the range is read, not compared.
    fn first_unread(&self, topic: &str, at: &[(i32, i64)], ends: &[i64]) -> Result<Option<i32>> {
        for &(p, from) in at {
            let end = ends[p as usize];
            if from < end && self.holds_record(topic, p, from, end)? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    fn holds_record(&self, topic: &str, partition: i32, from: i64, end: i64) -> Result<bool> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))?;
        self.committed.assign(&tpl)?;
        let deadline = std::time::Instant::now() + KAFKA_TIMEOUT;
        while std::time::Instant::now() < deadline {
            // A consumer error (a broker away for a moment) is librdkafka's to recover from;
            // the read goes on until its deadline.
            if let Some(Ok(record)) = self.committed.poll(Duration::from_millis(100)) {
                // One fetched for an earlier assignment of this reader is no answer.
                if record.partition() == partition && record.offset() >= from {
                    return Ok(record.offset() < end);
                }
                continue;
            }
            if read_position(&self.committed, topic, partition, from)? >= end {
                return Ok(false);
            }
        }
        // Not read to its end in time: the caller asks again.
        Ok(true)
    }
}
