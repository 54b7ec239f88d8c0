//! Handing a record to librdkafka. One rule for every producer of the pipeline: a full
//! producer queue is back-pressure, not a failure, so the record is handed again once the
//! queue has drained, and a slow broker slows the stage down instead of stopping it. So is a
//! partition the producer does not know yet (partitions just added, see `source::switch`):
//! its metadata is asked for again and the record handed again, for up to
//! [`NEW_PARTITION_WAIT`]. Any other refusal is the caller's error.
//!
//! Two functions, because two kinds of producer drain their queue differently:
//! - [`send`], for a `ThreadedProducer` (cdc's stream, the snapshot): its own thread serves
//!   the queue, so waiting is an async sleep that leaves the runtime free. Deliveries are
//!   reported to the producer's context (cdc's ack ledger) or confirmed by the transaction's
//!   commit (the snapshot).
//! - [`send_polling`], for a `BaseProducer` (fraud's transactional producer, driven from a
//!   blocking thread): nothing else serves its queue, so waiting is polling it, which is also
//!   what runs its delivery callbacks.
//!
//! The sinks' dead letters use neither: each must be acknowledged before the batch's
//! transaction commits, so they go through a `FutureProducer` that awaits every delivery (and
//! itself waits out a full queue, up to its queue timeout).

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext, ThreadedProducer};

use crate::error::Result;

/// How long a record for a partition the producer's metadata does not list yet is handed
/// again, the metadata asked for each time, before it is refused.
pub const NEW_PARTITION_WAIT: Duration = Duration::from_secs(30);

/// What became of a record handed to librdkafka: taken (None), back to the caller to hand
/// again because only the queue was full (Some), or refused (the error).
fn again_when_full<R>(sent: std::result::Result<(), (KafkaError, R)>) -> Result<Option<R>> {
    match sent {
        Ok(()) => Ok(None),
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
            Ok(Some(record))
        }
        Err((e, _)) => Err(e.into()),
    }
}

/// Hands `record` to a threaded producer, waiting (without blocking the runtime) while its
/// queue is full.
pub async fn send<'a, C: ProducerContext + 'static>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'a, [u8], [u8], C::DeliveryOpaque>,
) -> Result<()> {
    while let Some(back) = again_when_full(producer.send(record))? {
        record = back;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Hands `record` to a base producer, polling it (which drains the queue) while it is full.
/// Blocking.
pub fn send_polling<'a, C: ProducerContext + 'static>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'a, [u8], [u8], C::DeliveryOpaque>,
) -> Result<()> {
    let topic = record.topic.to_string();
    let deadline = std::time::Instant::now() + NEW_PARTITION_WAIT;
    loop {
        match producer.send(record) {
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::UnknownPartition), back))
                if std::time::Instant::now() < deadline =>
            {
                // Asking for the topic's metadata refreshes what the producer knows of it.
                let _ = producer
                    .client()
                    .fetch_metadata(Some(&topic), Duration::from_secs(5));
                record = back;
            }
            sent => match again_when_full(sent)? {
                Some(back) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                None => return Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_full_queue_is_tried_again() {
        assert_eq!(again_when_full::<i32>(Ok(())).unwrap(), None);
        let full = KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
        assert_eq!(again_when_full(Err((full, 7))).unwrap(), Some(7));
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(again_when_full(Err((too_large, 7))).is_err());
    }
}
