//! Kafka client settings shared by every producer and consumer: the bootstrap servers plus
//! the pass-through `KAFKA_*` settings (TLS, SASL), logged without their secrets.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::{is_secret, KafkaSettings};
use crate::error::{Error, Result};

pub fn client_config(kafka: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.bootstrap_servers);
    for (key, value) in &kafka.client {
        let shown = if is_secret(key) {
            "***"
        } else {
            value.as_str()
        };
        tracing::debug!(%key, value = shown, "kafka client setting from the environment");
        config.set(key, value);
    }
    config
}

/// Creates the topic when it does not exist; an existing topic is left as it is.
pub async fn ensure_topic(
    kafka: &KafkaSettings,
    name: &str,
    partitions: i32,
    replication_factor: i32,
    settings: &[(&str, &str)],
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(kafka).create()?;
    let mut topic = NewTopic::new(
        name,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    for (k, v) in settings {
        topic = topic.set(k, v);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&topic], &options).await? {
        match result {
            Ok(_) => tracing::info!(topic = name, partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(Error::Config(format!("cannot create topic {t}: {code}")));
            }
        }
    }
    Ok(())
}

/// How many partitions a topic has, from the broker's metadata.
pub fn partition_count(consumer: &impl Consumer, topic: &str) -> Result<i32> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let count = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if count == 0 {
        return Err(Error::Config(format!(
            "topic {topic} has no partitions (does it exist?)"
        )));
    }
    Ok(count as i32)
}

/// Every committed record of `topic`, partition by partition, up to the high watermarks as
/// they were when it started. Blocking: call it from `spawn_blocking`.
///
/// With transactions the last offsets may be control records, which are never delivered, so
/// a partition is done when the read position reaches the high watermark, not when the last
/// record arrives.
pub fn read_committed_to_end(
    kafka: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<OwnedMessage>> {
    let consumer: BaseConsumer = client_config(kafka)
        .set("group.id", "reviewflow-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    for partition in 0..partition_count(&consumer, topic)? {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
        consumer.assign(&assignment)?;
        loop {
            // Before the first fetch the position is "invalid" (negative): not at the end yet.
            let position = consumer
                .position()?
                .find_partition(topic, partition)
                .and_then(|p| p.offset().to_raw())
                .unwrap_or(low)
                .max(low);
            if position >= high {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Config(format!(
                    "reading {topic}/{partition} to offset {high} took over {timeout:?} (stuck at {position})"
                )));
            }
            if let Some(record) = consumer.poll(Duration::from_millis(200)) {
                out.push(record?.detach());
            }
        }
    }
    Ok(out)
}
