//! The snapshot's completion markers (topic `<changes>.snapshots`, key = slot name): how cdc
//! tells, at the start of a session, whether its slot's snapshot completed, was withdrawn for
//! a restatement, or never was; and the server the slot lives on (see `failover`).

use std::time::Duration;

use apache_avro::schema::Schema;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use chrono::Utc;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use crate::avro::wire;
use crate::config::KafkaSettings;
use crate::contract::lsn::Lsn;
use crate::error::Result;
use crate::kafka::produce::send as send_record;
use crate::kafka::{client_config, read_committed_to_end};
use crate::registry::{key_subject, value_subject, Registry};
use crate::source::epochs::{Epoch, PendingSwitch};
use crate::source::failover::Server;

/// What the marker of a completed snapshot records.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotMarker {
    pub slot: String,
    pub consistent_point: Lsn,
    pub rows: i64,
    /// The server the slot lives on (None in markers written before it was recorded); a
    /// followed failover records the new timeline in a marker of its own.
    pub server: Option<Server>,
    /// The partition epochs of the slot's changes (empty in markers written before they
    /// were recorded): a snapshot starts the list, each switch to more partitions appends.
    pub epochs: Vec<Epoch>,
    /// A switch to more partitions whose first transaction a session reached, with the
    /// fence's targets (None once made, and in markers written before it was recorded).
    pub switch: Option<PendingSwitch>,
}

fn marker_schema() -> Schema {
    Schema::parse_str(
        r#"{"type": "record", "name": "SnapshotMarker", "namespace": "reviewflow.cdc", "fields": [
            {"name": "slot", "type": "string"},
            {"name": "consistent_point", "type": "long"},
            {"name": "rows", "type": "long"},
            {"name": "completed_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "system_id", "type": ["null", "string"], "default": null},
            {"name": "timeline", "type": ["null", "long"], "default": null},
            {"name": "epochs", "default": [], "type": {"type": "array", "items": {
                "type": "record", "name": "PartitionEpoch", "fields": [
                    {"name": "from_lsn", "type": "long"},
                    {"name": "partitions", "type": "int"}]}}},
            {"name": "switch", "default": null, "type": ["null", {
                "type": "record", "name": "PendingSwitch", "fields": [
                    {"name": "partitions", "type": "int"},
                    {"name": "after_lsn", "type": ["null", "long"], "default": null},
                    {"name": "changes_ends", "type": {"type": "array", "items": "long"}},
                    {"name": "valid_ends", "type": {"type": "array", "items": "long"}}]}]}]}"#,
    )
    .expect("the marker schema is valid Avro")
}

/// What the markers topic says about a slot's snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotHistory {
    /// No snapshot was ever sent from this slot name.
    Never,
    /// The newest snapshot completed.
    Completed(SnapshotMarker),
    /// A snapshot completed once, then a restatement started and has not completed.
    Restating,
}

/// The marker's record on the markers topic of `changes_topic`: key and value.
pub(super) async fn marker_record(
    registry: &Registry,
    changes_topic: &str,
    marker: &SnapshotMarker,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let schema = marker_schema();
    let topic = marker_topic(changes_topic);
    let id = registry.register(&value_subject(&topic), &schema).await?;
    let key = marker_key(registry, &topic, &marker.slot).await?;
    let optional = |v: Option<Value>| match v {
        Some(v) => Value::Union(1, Box::new(v)),
        None => Value::Union(0, Box::new(Value::Null)),
    };
    let server = marker.server.as_ref();
    let value = wire::frame(
        id,
        &GenericDatumWriter::builder(&schema)
            .build()?
            .write_value_to_vec(Value::Record(vec![
                ("slot".into(), Value::String(marker.slot.clone())),
                (
                    "consistent_point".into(),
                    Value::Long(marker.consistent_point.0 as i64),
                ),
                ("rows".into(), Value::Long(marker.rows)),
                (
                    "completed_at".into(),
                    Value::TimestampMicros(Utc::now().timestamp_micros()),
                ),
                (
                    "system_id".into(),
                    optional(server.map(|s| Value::String(s.system_id.clone()))),
                ),
                (
                    "timeline".into(),
                    optional(server.map(|s| Value::Long(i64::from(s.timeline)))),
                ),
                (
                    "epochs".into(),
                    Value::Array(
                        marker
                            .epochs
                            .iter()
                            .map(|e| {
                                Value::Record(vec![
                                    ("from_lsn".into(), Value::Long(e.from.0 as i64)),
                                    ("partitions".into(), Value::Int(e.partitions)),
                                ])
                            })
                            .collect(),
                    ),
                ),
                (
                    "switch".into(),
                    optional(marker.switch.as_ref().map(|s| {
                        let longs =
                            |v: &[i64]| Value::Array(v.iter().map(|o| Value::Long(*o)).collect());
                        Value::Record(vec![
                            ("partitions".into(), Value::Int(s.to)),
                            (
                                "after_lsn".into(),
                                optional(s.after.map(|l| Value::Long(l.0 as i64))),
                            ),
                            ("changes_ends".into(), longs(&s.changes_ends)),
                            ("valid_ends".into(), longs(&s.valid_ends)),
                        ])
                    })),
                ),
            ]))?,
    );
    Ok((key, value))
}

/// Records `marker` in place of the slot's last one: after a followed failover, the timeline
/// the slot now streams.
pub async fn record_marker(
    kafka: &KafkaSettings,
    changes_topic: &str,
    registry: &Registry,
    marker: &SnapshotMarker,
) -> Result<()> {
    let (key, value) = marker_record(registry, changes_topic, marker).await?;
    put_marker(kafka, &marker_topic(changes_topic), &key, Some(&value)).await
}

/// Withdraws the slot's snapshot marker (a tombstone under its key) before a restatement, so
/// that a crash before the new snapshot commits finds no marker and starts the snapshot over.
pub async fn withdraw_marker(
    kafka: &KafkaSettings,
    changes_topic: &str,
    slot: &str,
    registry: &Registry,
) -> Result<()> {
    let topic = marker_topic(changes_topic);
    let key = marker_key(registry, &topic, slot).await?;
    put_marker(kafka, &topic, &key, None).await?;
    tracing::info!(%topic, slot, "the lost slot's snapshot marker withdrawn");
    Ok(())
}

/// Writes one marker record (None: a tombstone) outside any snapshot, acknowledged by every
/// in-sync replica before this returns.
async fn put_marker(
    kafka: &KafkaSettings,
    topic: &str,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<()> {
    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        client_config(kafka)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
    let record = BaseRecord::<[u8], [u8], ()>::to(topic).key(key);
    let record = match value {
        Some(value) => record.payload(value),
        None => record,
    };
    send_record(&producer, record).await?;
    tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(60))).await??;
    Ok(())
}

/// The markers' key: the slot name, an Avro string in the wire format.
async fn marker_key(registry: &Registry, marker_topic: &str, slot: &str) -> Result<Vec<u8>> {
    let id = registry
        .register(&key_subject(marker_topic), &Schema::String)
        .await?;
    Ok(wire::frame(
        id,
        &GenericDatumWriter::builder(&Schema::String)
            .build()?
            .write_value_to_vec(Value::String(slot.into()))?,
    ))
}

pub fn marker_topic(changes_topic: &str) -> String {
    format!("{changes_topic}.snapshots")
}

/// What the markers topic says about `slot`: its newest committed record decides.
pub async fn find_marker(
    kafka: &KafkaSettings,
    changes_topic: &str,
    slot: &str,
    registry: &Registry,
) -> Result<SnapshotHistory> {
    let topic = marker_topic(changes_topic);
    let kafka = kafka.clone();
    let records = tokio::task::spawn_blocking(move || {
        read_committed_to_end(&kafka, &topic, Duration::from_secs(60))
    })
    .await??;
    let mut history = SnapshotHistory::Never;
    // Markers of every slot share the topic; the value names its slot, a tombstone's key.
    for record in records {
        let Some(payload) = record.payload() else {
            let (id, body) = wire::unframe(record.key().unwrap_or_default())?;
            let schema = registry.schema(id).await?;
            let key = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
                .build()?
                .read_value(&mut &body[..])?;
            if key == Value::String(slot.into()) {
                history = SnapshotHistory::Restating;
            }
            continue;
        };
        let (id, body) = wire::unframe(payload)?;
        let schema = registry.schema(id).await?;
        let value = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()?
            .read_value(&mut &body[..])?;
        if let Value::Record(fields) = value {
            let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            if let (Some(Value::String(s)), Some(Value::Long(lsn)), Some(Value::Long(rows))) =
                (get("slot"), get("consistent_point"), get("rows"))
            {
                let unwrap = |v: Option<Value>| match v {
                    Some(Value::Union(_, v)) => Some(*v),
                    other => other,
                };
                let server = match (unwrap(get("system_id")), unwrap(get("timeline"))) {
                    (Some(Value::String(system_id)), Some(Value::Long(timeline))) => Some(Server {
                        system_id,
                        timeline: timeline as u32,
                    }),
                    _ => None,
                };
                if s == slot {
                    history = SnapshotHistory::Completed(SnapshotMarker {
                        slot: s,
                        consistent_point: Lsn(lsn as u64),
                        rows,
                        server,
                        epochs: epochs(get("epochs")),
                        switch: unwrap(get("switch")).and_then(pending_switch),
                    });
                }
            }
        }
    }
    Ok(history)
}

/// A marker's epochs field, as written by `marker_record`; none in an older marker.
fn epochs(field: Option<Value>) -> Vec<Epoch> {
    let Some(Value::Array(items)) = field else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Record(fields) = item else {
                return None;
            };
            let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v);
            match (get("from_lsn"), get("partitions")) {
                (Some(Value::Long(from)), Some(Value::Int(partitions))) => Some(Epoch {
                    from: Lsn(*from as u64),
                    partitions: *partitions,
                }),
                _ => None,
            }
        })
        .collect()
}

/// A marker's switch field, as written by `marker_record`.
fn pending_switch(field: Value) -> Option<PendingSwitch> {
    let Value::Record(fields) = field else {
        return None;
    };
    let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let longs = |v: Option<Value>| match v {
        Some(Value::Array(items)) => items
            .into_iter()
            .filter_map(|i| match i {
                Value::Long(o) => Some(o),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let after = match get("after_lsn") {
        Some(Value::Union(_, v)) => match *v {
            Value::Long(l) => Some(Lsn(l as u64)),
            _ => None,
        },
        _ => None,
    };
    match get("partitions") {
        Some(Value::Int(to)) => Some(PendingSwitch {
            to,
            after,
            changes_ends: longs(get("changes_ends")),
            valid_ends: longs(get("valid_ends")),
        }),
        _ => None,
    }
}
