//! The fence of a switch to more partitions: before cdc writes the first change across the
//! new count, the workers must have applied every change of the old partitions. A course
//! that moves to a new partition then has no older change left anywhere that a worker could
//! apply after its newer ones, so per-course order, and the stats worker's per-partition
//! de-duplication, hold across the switch.
//!
//! This is the one place the source looks down the flow: it reads where the fraud group
//! stands on `reviews.changes` (its committed offsets) and where the stats worker stands on
//! `reviews.valid` (its rows of `sink_offsets`), and waits; it never changes either.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
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
    /// What the switch still waits for, or None once the fraud group and then the stats
    /// worker (if one ever ran on this changelog) have read past every committed record of
    /// the first `old` partitions.
    pub(super) async fn waiting(&self, old: i32) -> Result<Option<String>> {
        let (kafka, topic, group) = (
            self.kafka.clone(),
            self.topics.changes.clone(),
            self.fraud_group.clone(),
        );
        let fraud = tokio::task::spawn_blocking(move || {
            let readers = Readers::new(&kafka, &group)?;
            let committed = readers.committed(&topic, old)?;
            readers.first_unread(&topic, &committed)
        })
        .await??;
        if let Some(p) = fraud {
            return Ok(Some(format!(
                "the fraud group {} has not yet read all of {} partition {p}",
                self.fraud_group, self.topics.changes
            )));
        }
        let pg = crate::db::connect(&self.database_url).await?;
        let stored: Vec<(i32, i64)> = crate::sink::offsets::stored(&pg)
            .await?
            .into_iter()
            .filter(|s| s.consumer == crate::sink::stats::CONSUMER && s.topic == self.topics.valid)
            .map(|s| (s.partition, s.next_offset))
            .collect();
        if stored.is_empty() {
            // No stats worker ever applied anything of this changelog: none to wait for (one
            // that starts later reads the partitions side by side; without a fence a
            // deployment that runs no stats worker would hold cdc for ever).
            return Ok(None);
        }
        let (kafka, topic) = (self.kafka.clone(), self.topics.valid.clone());
        let stats = tokio::task::spawn_blocking(move || {
            let readers = Readers::new(&kafka, "reviewflow-fence")?;
            if let Some(p) = readers.open_transaction(&topic, old)? {
                return Ok::<_, crate::error::Error>(Some(format!(
                    "a transaction is open on {topic} partition {p} (a fraud instance that \
                     died holds it until the broker's transaction timeout)"
                )));
            }
            let at: Vec<(i32, i64)> = (0..old)
                .map(|p| (p, stored.iter().find(|s| s.0 == p).map_or(0, |s| s.1)))
                .collect();
            Ok(readers.first_unread(&topic, &at)?.map(|p| {
                format!("the stats worker has not yet applied all of {topic} partition {p}")
            }))
        })
        .await??;
        Ok(stats)
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

    /// A partition among the first `count` whose last stable offset is short of its high
    /// watermark: a transaction there is still open.
    fn open_transaction(&self, topic: &str, count: i32) -> Result<Option<i32>> {
        for p in 0..count {
            let stable = self.committed.fetch_watermarks(topic, p, KAFKA_TIMEOUT)?.1;
            let high = self.all.fetch_watermarks(topic, p, KAFKA_TIMEOUT)?.1;
            if stable < high {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// The first partition that holds a committed record at or after its reader's offset.
    /// The offsets between a reader's and the end may all be transaction markers, which
    /// are never delivered, so the range is read rather than compared.
    fn first_unread(&self, topic: &str, at: &[(i32, i64)]) -> Result<Option<i32>> {
        for &(p, from) in at {
            let end = self.committed.fetch_watermarks(topic, p, KAFKA_TIMEOUT)?.1;
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
            if let Some(Ok(_)) = self.committed.poll(Duration::from_millis(100)) {
                return Ok(true);
            }
            if read_position(&self.committed, topic, partition, from)? >= end {
                return Ok(false);
            }
        }
        // Not read to its end in time: the caller asks again.
        Ok(true)
    }
}
