//! Reading the retained valid changelog: every partition read_committed from its low to its
//! high watermark as of the start, each record decoded as the stats worker decodes it and
//! folded by the stats worker's fold.

use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::interrupted;
use crate::avro::envelope::ChangeReaders;
use crate::config::KafkaSettings;
use crate::error::{Error, Result};
use crate::kafka::{client_config, partition_count};
use crate::registry::Registry;
use crate::sink::stats::fold::Fold;

/// Longest a partition may go without the read position moving.
const STALL: Duration = Duration::from_secs(60);

/// One partition's offsets to read: [low, high).
#[derive(Clone, Debug)]
pub(super) struct Range {
    pub(super) partition: i32,
    pub(super) low: i64,
    pub(super) high: i64,
}

/// The watermarks of every partition of `topic` (read_committed: the high one is the last
/// stable offset); None when the topic does not exist. Blocking.
pub(super) fn watermarks(kafka: &KafkaSettings, topic: &str) -> Result<Option<Vec<Range>>> {
    let consumer: BaseConsumer = reader_config(kafka).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    match metadata.topics().first().and_then(|t| t.error()) {
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => return Ok(None),
        Some(e) => {
            return Err(Error::Config(format!(
                "cannot read the metadata of topic {topic}: {e:?}"
            )))
        }
        None => {}
    }
    let mut ranges = Vec::new();
    for partition in 0..partition_count(&consumer, topic)? {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
        ranges.push(Range {
            partition,
            low,
            high,
        });
    }
    Ok(Some(ranges))
}

fn reader_config(kafka: &KafkaSettings) -> rdkafka::ClientConfig {
    let mut config = client_config(kafka);
    config
        .set("group.id", "reviewflow-replay")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        // Records deleted under the reader must fail the replay, not be skipped.
        .set("auto.offset.reset", "error");
    config
}

/// What folding some partitions gave.
pub(super) struct KafkaRead {
    pub(super) fold: Fold,
    pub(super) records: u64,
    pub(super) undecodable: u64,
}

/// Reads `ranges` of `topic` into `fold`, partition after partition.
pub(super) async fn fold_ranges(
    kafka: &KafkaSettings,
    topic: &str,
    ranges: &[Range],
    fold: Fold,
    registry: &Registry,
    bar: &ProgressBar,
    stop: &CancellationToken,
) -> Result<KafkaRead> {
    let (tx, mut rx) = mpsc::channel(1024);
    let reader = {
        let (kafka, topic, ranges) = (kafka.clone(), topic.to_string(), ranges.to_vec());
        let (bar, stop) = (bar.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = read_ranges(&kafka, &topic, &ranges, &bar, &stop, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        })
    };
    let mut readers = ChangeReaders::default();
    let mut read = KafkaRead {
        fold,
        records: 0,
        undecodable: 0,
    };
    loop {
        let next = tokio::select! {
            m = rx.recv() => m,
            _ = stop.cancelled() => return Err(interrupted()),
        };
        let Some(m) = next else { break };
        let m = m?;
        read.records += 1;
        match crate::sink::stats::read(registry, &mut readers, &m).await? {
            Ok(change) => {
                read.fold.push(m.partition(), &change);
            }
            Err(reason) => {
                read.undecodable += 1;
                tracing::debug!(partition = m.partition(), offset = m.offset(), %reason, "undecodable record skipped");
            }
        }
    }
    reader.await?;
    Ok(read)
}

/// Reads every committed record of `ranges` into `out`, partition by partition. Blocking.
fn read_ranges(
    kafka: &KafkaSettings,
    topic: &str,
    ranges: &[Range],
    bar: &ProgressBar,
    stop: &CancellationToken,
    out: &mpsc::Sender<Result<OwnedMessage>>,
) -> Result<()> {
    let consumer: BaseConsumer = reader_config(kafka).create()?;
    for range in ranges {
        let Range {
            partition,
            low,
            high,
        } = *range;
        let base = bar.position();
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
        consumer.assign(&assignment)?;
        let (mut seen, mut moved) = (low, Instant::now());
        loop {
            if stop.is_cancelled() {
                return Err(interrupted());
            }
            let position = crate::kafka::read_position(&consumer, topic, partition, low)?;
            bar.set_position(base + (position.min(high) - low) as u64);
            if position >= high {
                break;
            }
            if position != seen {
                (seen, moved) = (position, Instant::now());
            } else if moved.elapsed() > STALL {
                return Err(Error::Config(format!(
                    "reading {topic}/{partition}: stuck at offset {position} of {high} for {STALL:?}"
                )));
            }
            let record = match consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Ok(m)) => m,
                Some(Err(e @ KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    return Err(Error::Config(format!(
                        "reading {topic}/{partition} from offset {low}: {e} (records deleted while reading?)"
                    )))
                }
                // librdkafka retries broker trouble itself; a stall is caught above.
                Some(Err(e)) => {
                    tracing::warn!(%topic, partition, error = %e, "consumer error");
                    continue;
                }
            };
            // Past the high watermark is the next replay's business.
            if record.offset() < high && out.blocking_send(Ok(record.detach())).is_err() {
                return Ok(()); // the folding side has stopped
            }
        }
    }
    Ok(())
}
