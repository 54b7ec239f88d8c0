"""Reads a reviewflow change topic the way any other team would: Confluent's own Python
client, its schema registry client and Avro deserializer, pointed at reviewflow's registry.
Prints one JSON line per record, then exits once every partition is read to its end.

usage: read_changes.py BOOTSTRAP TOPIC REGISTRY_URL
"""
import json
import sys

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main(bootstrap, topic, registry_url):
    registry = SchemaRegistryClient({"url": registry_url})
    values = AvroDeserializer(registry)
    keys = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "python-reader",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
    })
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    remaining = set(partitions)
    while remaining:
        msg = consumer.poll(30)
        if msg is None:
            sys.exit("no record within 30 s")
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                remaining.discard(msg.partition())
                continue
            sys.exit(str(msg.error()))
        key = keys(msg.key(), SerializationContext(topic, MessageField.KEY)) if msg.key() else None
        value = values(msg.value(), SerializationContext(topic, MessageField.VALUE))
        row = value["after"] or value["before"]
        print(json.dumps({
            "partition": msg.partition(),
            "key": key,
            "op": value["op"],
            "id": row["id"] if row else None,
            "rating": str(row["rating"]) if row else None,
            "lsn": value["source"]["lsn"],
            "position": value["source"]["position"],
        }))
    consumer.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
