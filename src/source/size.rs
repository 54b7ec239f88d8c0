//! How large a change record may be. The broker refuses a record batch over the topic's
//! `max.message.bytes`, and librdkafka a record over the producer's `message.max.bytes`; a
//! refused change would stop the reader until an operator acts, so a change is made to fit
//! instead (`RowSchema::encode_within`) and the producer never builds a batch over the
//! topic's limit.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

use crate::config::KafkaSettings;
use crate::error::{Error, Result};
use crate::kafka::client_config;

/// librdkafka's default `message.max.bytes`.
const PRODUCER_DEFAULT: usize = 1_000_000;
/// Kafka's default `max.message.bytes`, assumed when the broker will not say.
const TOPIC_DEFAULT: usize = 1_048_588;
/// Below this the producer cannot keep its batches under the limit (librdkafka takes no
/// `message.max.bytes` under 1000) and a change of markers may not fit.
pub const TOPIC_MINIMUM: usize = 4096;

/// The sizes a change record is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLimits {
    /// The producer's `message.max.bytes`: no batch it builds is larger.
    pub batch: usize,
    /// The most an Avro body (the value without its 5-byte wire header) may weigh.
    pub body: usize,
}

impl RecordLimits {
    /// For records that may take `limit` bytes. Compression may make a batch of
    /// incompressible data slightly larger than it was (lz4: 1/255 plus a frame header), and
    /// the key, the record and batch headers come on top of the value.
    pub fn within(limit: usize) -> RecordLimits {
        let batch = limit.saturating_sub(1024 + limit / 128).max(1000);
        RecordLimits {
            batch,
            body: batch.saturating_sub(256 + 5),
        }
    }
}

/// The limits of `topic`: the smaller of its `max.message.bytes` as the broker reports it
/// and the configured producer's `message.max.bytes`.
pub async fn record_limits(kafka: &KafkaSettings, topic: &str) -> Result<RecordLimits> {
    let producer = client_config(kafka)
        .get("message.max.bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(PRODUCER_DEFAULT);
    let admin: AdminClient<DefaultClientContext> = client_config(kafka).create()?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await?;
    let reported = described.into_iter().next().and_then(|r| match r {
        Ok(resource) => resource
            .get("max.message.bytes")
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse::<usize>().ok()),
        Err(code) => {
            tracing::warn!(%topic, error = %code, "cannot read the topic's max.message.bytes (DescribeConfigs refused?); assuming Kafka's default");
            None
        }
    });
    let topic_limit = reported.unwrap_or(TOPIC_DEFAULT);
    let limit = topic_limit.min(producer);
    if limit < TOPIC_MINIMUM {
        // A setting, not a value: the session fails and is tried again, the slot held, until
        // an operator raises it.
        return Err(Error::Delivery(format!(
            "kafka refused a change for topic {topic}: its max.message.bytes ({topic_limit}) or the \
             producer's message.max.bytes ({producer}) is below the {TOPIC_MINIMUM} bytes cdc needs to \
             write a change whose values are all oversize markers; raise it, e.g. kafka-configs.sh \
             --bootstrap-server ... --alter --entity-type topics --entity-name {topic} --add-config \
             max.message.bytes=1048588. The slot does not advance; cdc tries again until then"
        )));
    }
    let limits = RecordLimits::within(limit);
    tracing::info!(%topic, max_message_bytes = topic_limit, producer_message_max_bytes = producer,
        body_limit = limits.body, "changes larger than the limit carry their largest values as oversize markers");
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_within_the_limits_fits_with_its_key_and_headers() {
        let l = RecordLimits::within(1_000_000);
        assert!(l.batch < 1_000_000 - 1_000_000 / 255 - 64);
        assert!(l.body + 5 + 256 <= l.batch);
        assert!(l.body > 980_000, "{l:?}");
        let smallest = RecordLimits::within(TOPIC_MINIMUM);
        assert!(smallest.batch >= 1000, "librdkafka's minimum: {smallest:?}");
        assert!(smallest.body > 16 * 128, "room for markers: {smallest:?}");
    }
}
