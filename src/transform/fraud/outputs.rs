//! What one record of reviews.changes becomes inside a fraud transaction: its verdict (on
//! reviews.verdicts, and reviews.fraud when flagged), its change of the valid set (on
//! reviews.valid), the record of a delete or TRUNCATE, or a dead letter with its reason. Pure
//! of transactions: the session (`fraud`) commits whatever this returns, or none of it.

use std::sync::Arc;

use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};

use super::Session;
use crate::avro::{envelope, verdict, wire};
use crate::contract::change::{ChangeEvent, Op, NEW_KEY_HEADER, OLD_KEY_HEADER, PARTITIONS_HEADER};
use crate::contract::image::ReviewImage;
use crate::contract::verdict::{Deletion, Record};
use crate::error::Result;
use crate::kafka;
use crate::registry::value_subject;
use crate::transform::score::{self, Judgement};

/// A record's way out: to a topic, keyed, in a given partition or by key.
pub(super) struct Output {
    pub(super) kind: Kind,
    pub(super) topic: String,
    pub(super) partition: Option<i32>,
    pub(super) key: Option<Vec<u8>>,
    pub(super) value: Vec<u8>,
    pub(super) headers: Option<OwnedHeaders>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) enum Kind {
    Valid,
    Fraud,
    Verdict,
    DeadLetter,
}

/// Why a record cannot be read: it goes to the dead-letter topic with this reason.
pub(super) struct Poison(String);

impl Session {
    /// Everything one input record becomes; a record that cannot be read becomes a
    /// dead letter. Errors are only what a new session may cure (registry, broker).
    pub(super) fn outputs(&mut self, m: &OwnedMessage) -> Result<Vec<Output>> {
        let read = match self.read(m)? {
            Ok(read) => read,
            Err(Poison(reason)) => {
                tracing::warn!(partition = m.partition(), offset = m.offset(), %reason, "fraud: dead letter");
                let topics = &self.fraud.topics;
                return Ok(vec![Output {
                    kind: Kind::DeadLetter,
                    topic: topics.dead_letters.clone(),
                    partition: None,
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers: Some(kafka::dead_letter_headers(
                        "fraud",
                        &reason,
                        &topics.changes,
                        m.partition(),
                        m.offset(),
                    )),
                }]);
            }
        };
        let Read {
            event,
            schema_id,
            body,
            key,
        } = read;
        let mut out = Vec::new();
        let judge = |image: &Option<ReviewImage>| {
            image
                .as_ref()
                .map(|i| score::judge(self.scorer.as_ref(), i))
        };
        let (before, after) = (judge(&event.before), judge(&event.after));
        if let (Some(row), Some(j)) = (&event.after, &after) {
            out.extend(self.verdict_records(&event, row, j)?);
        }
        // The delete half of a course move retracts the review from its old course; the
        // review lives on (its create half follows, judged), so no deletion is recorded:
        // reviews.verdicts would say the review is gone, which it is not.
        let passed = passed_headers(m);
        let lives_on = event.op == Op::Delete
            && m.headers()
                .is_some_and(|h| h.iter().any(|h| h.key == NEW_KEY_HEADER));
        if let Some(gone) = deletion(&event).filter(|_| !lives_on) {
            out.push(self.deletion_record(&gone, m.partition())?);
        }
        if let Some(value) = self.valid_change(&event, schema_id, body, &before, &after)? {
            out.push(Output {
                kind: Kind::Valid,
                topic: self.fraud.topics.valid.clone(),
                partition: Some(m.partition()),
                key: key.map(|k| wire::frame(self.ids.valid_key, k)),
                value,
                // The valid changelog marks a move's halves, and says a snapshot end's
                // count, as reviews.changes does.
                headers: passed,
            });
        }
        Ok(out)
    }

    /// The change as the valid changelog states it, when it changes the valid set.
    fn valid_change(
        &mut self,
        event: &ChangeEvent,
        schema_id: u32,
        body: &[u8],
        before: &Option<Judgement>,
        after: &Option<Judgement>,
    ) -> Result<Option<Vec<u8>>> {
        let keep_before = before.as_ref().is_some_and(|j| !j.fraud);
        let keep_after = after.as_ref().is_some_and(|j| !j.fraud);
        let writer = self.writer(schema_id)?;
        let valid_id = self.valid_schema_id(schema_id, &writer)?;
        let restated = |op| envelope::restate(&writer, body, op, keep_before, keep_after);
        let value = match (event.op, keep_before, keep_after) {
            // Marks of the whole table or of a snapshot's end, passed on as they came.
            (Op::Truncate | Op::SnapshotEnd, _, _) => body.to_vec(),
            (_, false, false) => return Ok(None),
            // Both images valid, or the only image valid: the change as it came.
            (_, true, true) => body.to_vec(),
            (_, false, true) if before.is_none() => body.to_vec(),
            (_, true, false) if after.is_none() => body.to_vec(),
            // An edit flipped the verdict: the review enters or leaves the set.
            (_, false, true) => restated(Op::Create)?,
            (_, true, false) => restated(Op::Delete)?,
        };
        Ok(Some(wire::frame(valid_id, &value)))
    }

    fn verdict_records(
        &self,
        event: &ChangeEvent,
        row: &ReviewImage,
        j: &Judgement,
    ) -> Result<Vec<Output>> {
        let mut v = j.verdict(
            row,
            event.source.id(),
            self.scorer.model(),
            event.digest.clone(),
            judged_oversize(event),
        );
        let key = wire::frame(self.ids.review_key, &envelope::encode_key(row.id)?);
        let topics = &self.fraud.topics;
        let mut out = vec![Output {
            kind: Kind::Verdict,
            topic: topics.verdicts.clone(),
            partition: None,
            key: Some(key.clone()),
            value: wire::frame(self.ids.verdict_value, &verdict::encode(&v)?),
            headers: None,
        }];
        if j.fraud {
            v.review = Some(row.clone());
            out.push(Output {
                kind: Kind::Fraud,
                topic: topics.fraud.clone(),
                partition: None,
                key: Some(key),
                value: wire::frame(self.ids.fraud_value, &verdict::encode(&v)?),
                headers: None,
            });
        }
        Ok(out)
    }

    /// The verdicts topic's record of a deletion: keyed by the review like its verdicts, so
    /// it follows them in their partition. A truncate comes in on every changes partition;
    /// the sink keeps the newest, so each copy may go to any partition (to the one it came
    /// in on, modulo the verdict topic's).
    fn deletion_record(&self, gone: &Record, partition: i32) -> Result<Output> {
        let (key, partition) = match gone {
            Record::Deleted(d) => (
                Some(wire::frame(
                    self.ids.review_key,
                    &envelope::encode_key(d.review_id)?,
                )),
                None,
            ),
            _ => (None, Some(partition % self.ids.verdict_partitions.max(1))),
        };
        Ok(Output {
            kind: Kind::Verdict,
            topic: self.fraud.topics.verdicts.clone(),
            partition,
            key,
            value: wire::frame(self.ids.verdict_value, &verdict::encode_record(gone)?),
            headers: None,
        })
    }

    /// The record decoded, or why it is poison. Only registry or broker trouble is an error.
    fn read<'m>(&mut self, m: &'m OwnedMessage) -> Result<Result<Read<'m>, Poison>> {
        let framed = match self.runtime.block_on(self.registry.resolve(m.payload()))? {
            Ok(framed) => framed,
            Err(reason) => return Ok(Err(Poison(format!("value: {reason}")))),
        };
        let key = match m.key().map(wire::unframe).transpose() {
            Ok(key) => key.map(|(_, k)| k),
            Err(e) => return Ok(Err(Poison(format!("key: {e}")))),
        };
        match self.readers.read(framed.id, &framed.schema, framed.body) {
            Ok(event) => Ok(Ok(Read {
                event,
                schema_id: framed.id,
                body: framed.body,
                key,
            })),
            Err(e) => Ok(Err(Poison(format!("not a change event of reviews: {e}")))),
        }
    }

    fn writer(&self, schema_id: u32) -> Result<Arc<apache_avro::Schema>> {
        self.runtime.block_on(self.registry.schema(schema_id))
    }

    fn valid_schema_id(&mut self, input_id: u32, writer: &apache_avro::Schema) -> Result<u32> {
        if let Some(id) = self.valid_ids.get(&input_id) {
            return Ok(*id);
        }
        let subject = value_subject(&self.fraud.topics.valid);
        let id = self
            .runtime
            .block_on(self.registry.register(&subject, writer))?;
        self.valid_ids.insert(input_id, id);
        Ok(id)
    }
}

/// What a change ends: a review deleted, or whose id an UPDATE changed (the old id is gone
/// as surely), or every review (a TRUNCATE).
fn deletion(event: &ChangeEvent) -> Option<Record> {
    let (version, position) = (event.source.lsn, event.source.position);
    let gone = match (event.op, &event.before, &event.after) {
        (Op::Truncate, _, _) => return Some(Record::Truncated { version, position }),
        (Op::Delete, Some(before), _) => before,
        (Op::Update, Some(before), Some(after)) if before.id != after.id => before,
        _ => return None,
    };
    Some(Record::Deleted(Deletion {
        review_id: gone.id,
        course_id: gone.course_id,
        version,
        position,
    }))
}

/// The headers the valid changelog passes on: those that mark a record as half of a course
/// move, and a snapshot end's partition count.
fn passed_headers(m: &OwnedMessage) -> Option<OwnedHeaders> {
    let headers = m.headers()?;
    let mut moved = None;
    for h in headers.iter() {
        if [NEW_KEY_HEADER, OLD_KEY_HEADER, PARTITIONS_HEADER].contains(&h.key) {
            moved = Some(moved.unwrap_or_else(OwnedHeaders::new).insert(Header {
                key: h.key,
                value: h.value,
            }));
        }
    }
    moved
}

/// The after image's columns carried as oversize markers, by name: what the verdict judged.
pub fn judged_oversize(event: &ChangeEvent) -> Vec<String> {
    event
        .oversize
        .iter()
        .filter_map(|c| c.strip_prefix("after."))
        .map(str::to_string)
        .collect()
}

struct Read<'m> {
    event: ChangeEvent,
    schema_id: u32,
    body: &'m [u8],
    key: Option<&'m [u8]>,
}
