//! Kafka client settings shared by every producer and consumer: the bootstrap servers plus
//! the pass-through `KAFKA_*` settings (TLS, SASL), logged without their secrets.

use rdkafka::ClientConfig;

use crate::config::{is_secret, KafkaSettings};

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
