//! cdc's producer of the changes topic: its settings (bounded, gapless, never timing out),
//! the delivery reports that move the ack ledger, why Kafka refused a change, and the record
//! key. Handing the records to the producer is `kafka::produce`'s, the one rule every stage
//! follows.

use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::acks::AckLedger;
use super::size::RecordLimits;
use super::CdcConfig;
use crate::avro::{envelope, wire};
use crate::config::Settings;
use crate::error::Result;
use crate::kafka::producer_config;
use crate::metrics;

/// The course id as the record key: Avro long, Confluent wire format.
pub fn wire_key(key_schema_id: u32, course_id: i64) -> Result<Vec<u8>> {
    Ok(wire::frame(
        key_schema_id,
        &envelope::encode_key(course_id)?,
    ))
}

/// The producer of the changes topic, reporting every delivery to `ledger`.
pub(super) fn changes_producer(
    settings: &Settings,
    config: &CdcConfig,
    limits: &RecordLimits,
    ledger: Arc<Mutex<AckLedger>>,
) -> Result<ThreadedProducer<AckContext>> {
    // The slot is read as fast as Kafka takes its records, no faster: a full queue stops
    // the reading (`produce::send` waits) and PostgreSQL holds the rest. With 500,000
    // records queued (librdkafka keeps about 250 bytes of its own per record beside key
    // and payload) a slot that outran a throttled broker piled up here: one transaction
    // of 200,000 inserts took cdc from 34 to 77 MB, and nothing stopped a larger one short
    // of 500,000; with this bound it stayed at 42 MB (BENCHMARKS.md, "Large
    // transaction"). Five full batches still keep every partition's batches in flight.
    let tunable = [
        ("linger.ms", "5"),
        ("batch.num.messages", "10000"),
        ("queue.buffering.max.messages", "50000"),
        ("queue.buffering.max.kbytes", "16384"),
        ("compression.type", "lz4"),
    ];
    Ok(producer_config(&settings.kafka, &tunable)
        .set("enable.idempotence", "true")
        // The sinks skip what is behind the last change they applied, so a partition
        // must never get a change after a newer one. By default librdkafka answers a
        // refused batch by renumbering and sending the batches behind it, and a batch
        // that timed out leaves the same gap; the refused change, sent again by the next
        // session, then lands behind newer ones and is lost. Instead: a refusal stops this
        // producer (the session starts over from the slot), and nothing times out.
        .set("enable.gapless.guarantee", "true")
        .set("message.timeout.ms", "0")
        .set("acks", "all")
        // No batch over the topic's max.message.bytes: the broker would refuse it whole.
        .set("message.max.bytes", limits.batch.to_string())
        .create_with_context(AckContext {
            ledger,
            acked: metrics::events_out(&config.stage(), "changes"),
        })?)
}

/// The delivery reports: Kafka's word on each change, into the ack ledger.
pub(super) struct AckContext {
    ledger: Arc<Mutex<AckLedger>>,
    /// Changes Kafka acknowledged.
    acked: Counter,
}

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: Self::DeliveryOpaque) {
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => {
                ledger.acked(*seq);
                self.acked.inc();
            }
            Err((e, record)) => ledger.failed(refusal(record.topic(), e)),
        }
    }
}

/// Why Kafka did not take a change, saying what to change where the broker refused it by
/// its own settings (the slot stays where it is meanwhile, and cdc tries again).
fn refusal(topic: &str, e: &KafkaError) -> String {
    use RDKafkaErrorCode as Code;
    let fix = match e.rdkafka_error_code() {
        Some(Code::MessageSizeTooLarge) => format!(
            "the record batch is larger than topic {topic}'s max.message.bytes (or the broker's \
             message.max.bytes) allows: was it lowered while cdc ran? The next session reads the \
             limit again and carries the largest values of a change too large as oversize markers \
             (docs/values.md); a limit below {} bytes must be raised, e.g. kafka-configs.sh \
             --bootstrap-server ... --alter --entity-type topics --entity-name {topic} --add-config \
             max.message.bytes=1048588",
            super::size::TOPIC_MINIMUM
        ),
        Some(Code::PolicyViolation | Code::InvalidRecord | Code::InvalidConfig) => {
            format!("the broker's policy or topic {topic}'s configuration refuses the record; fix it")
        }
        Some(Code::TopicAuthorizationFailed | Code::ClusterAuthorizationFailed) => {
            format!("this client may not write to topic {topic}: grant it WRITE (and IDEMPOTENT_WRITE)")
        }
        Some(Code::KafkaStorageError) => {
            format!("the broker cannot store topic {topic}'s records (a full or failed log disk)")
        }
        _ => String::new(),
    };
    let fix = if fix.is_empty() {
        String::new()
    } else {
        format!(": {fix}")
    };
    format!(
        "kafka refused a change for topic {topic} ({e}){fix}. The slot does not advance past it; \
         cdc tries again until Kafka takes it"
    )
}
