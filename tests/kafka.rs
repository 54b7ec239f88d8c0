//! A record goes through the real local Kafka broker and comes back intact.

mod common;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test]
async fn a_record_round_trips_through_the_broker() {
    let settings = common::settings().await;
    let topic = format!("test.roundtrip.{}", common::unique());
    let base = reviewflow::kafka::client_config(&settings.kafka);

    let admin: AdminClient<_> = base.create().unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let producer: FutureProducer = base
        .clone()
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let delivery = producer
        .send(
            FutureRecord::to(&topic)
                .key("42")
                .payload(b"\x00review bytes\xff".as_slice())
                .headers(OwnedHeaders::new().insert(Header {
                    key: "reason",
                    value: Some("test"),
                })),
            Duration::from_secs(30),
        )
        .await
        .expect("the broker acknowledges");
    assert_eq!(delivery.partition, 0);

    let consumer: StreamConsumer = base
        .clone()
        .set("group.id", format!("test-{}", common::unique()))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .expect("a record arrives within a minute")
        .unwrap();
    assert_eq!(message.key(), Some(b"42".as_slice()));
    assert_eq!(message.payload(), Some(b"\x00review bytes\xff".as_slice()));
    assert_eq!(message.offset(), delivery.offset);
    let header = message.headers().unwrap().get(0);
    assert_eq!(
        (header.key, header.value),
        ("reason", Some(b"test".as_slice()))
    );

    admin
        .delete_topics(&[&topic], &AdminOptions::new())
        .await
        .unwrap();
}
