//! Dead letters of the PostgreSQL sinks: a record they cannot read goes to the dead-letter
//! topic, as it was, with the reason in headers. It is acknowledged by Kafka before the
//! batch's transaction commits, so it is never lost; a crash between the two can send it
//! twice (at-least-once), which a dead-letter reader must tolerate.

use std::time::Duration;

use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::KafkaSettings;
use crate::error::Result;
use crate::kafka::{self, client_config};

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    stage: &'static str,
}

impl DeadLetters {
    pub fn new(kafka: &KafkaSettings, topic: &str, stage: &'static str) -> Result<Self> {
        let producer = client_config(kafka)
            .set("enable.idempotence", "true")
            .create()?;
        Ok(DeadLetters {
            producer,
            topic: topic.into(),
            stage,
        })
    }

    /// Sends each (record, reason) and waits until Kafka has them all.
    pub async fn send(&self, letters: &[(&OwnedMessage, String)]) -> Result<()> {
        for (m, reason) in letters {
            tracing::warn!(stage = self.stage, topic = m.topic(), partition = m.partition(),
                offset = m.offset(), %reason, "dead letter");
            let headers = kafka::dead_letter_headers(
                self.stage,
                reason,
                m.topic(),
                m.partition(),
                m.offset(),
            );
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic)
                .payload(m.payload().unwrap_or_default())
                .headers(headers);
            if let Some(key) = m.key() {
                record = record.key(key);
            }
            // Not kafka::produce: a dead letter must be acknowledged before the batch's
            // transaction commits, so each send awaits its delivery.
            self.producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)?;
        }
        Ok(())
    }
}
