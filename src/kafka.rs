//! Kafka client settings shared by every producer and consumer: the bootstrap servers plus
//! the pass-through `KAFKA_*` settings (TLS, SASL), logged without their secrets.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;

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
