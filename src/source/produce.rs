//! Producing change records: the record key in the wire format, and a send that waits
//! (without blocking the runtime) while the producer's queue is full, so a slow broker
//! slows the reader down instead of failing it.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};

use crate::avro::{envelope, wire};
use crate::error::Result;

/// The course id as the record key: Avro long, Confluent wire format.
pub fn wire_key(key_schema_id: u32, course_id: i64) -> Result<Vec<u8>> {
    Ok(wire::frame(
        key_schema_id,
        &envelope::encode_key(course_id)?,
    ))
}

pub async fn send_blocking<'a, C: ProducerContext + 'static>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'a, [u8], [u8], C::DeliveryOpaque>,
) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}
