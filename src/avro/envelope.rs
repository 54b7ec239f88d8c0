//! The change envelope of `reviews.changes`: `op`, `before`, `after` and `source`, the row
//! record generated from the table's columns (written by `row`). Every row field is optional
//! with default null, so adding a column is always a backward-compatible schema change, and
//! dropping one too. This module reads changes back, and keys them.

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{RecordSchema, Schema};
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use chrono::{DateTime, Utc};

use super::carried;
use crate::contract::change::{ChangeEvent, Op, Source};
use crate::contract::lsn::Lsn;
use crate::error::{Error, Result};

pub use super::row::{Cell, RowSchema};

/// The key of every change record: the course id as an Avro long.
pub static KEY_SCHEMA: Schema = Schema::Long;

/// Built once: a writer resolves its schema's names when it is built, which costs more than
/// writing a key.
static KEY_WRITER: std::sync::LazyLock<GenericDatumWriter<'static>> =
    std::sync::LazyLock::new(|| {
        GenericDatumWriter::builder(&KEY_SCHEMA)
            .build()
            .expect("a long schema needs no name resolution")
    });

pub fn encode_key(course_id: i64) -> Result<Vec<u8>> {
    Ok(KEY_WRITER.write_value_to_vec(Value::Long(course_id))?)
}

/// Reads a change written with `writer` (whichever version of the columns it had).
pub fn decode_change(writer: &Schema, body: &[u8]) -> Result<ChangeEvent> {
    let value = GenericDatumReader::builder(writer)
        .build()?
        .read_value(&mut &body[..])?;
    change_of(value, rating_scale(writer).unwrap_or(1))
}

/// Readers of change events by writer schema id, each built once: building one resolves the
/// schema's names, which costs more than reading an event. A stage sees a handful of schema
/// versions in its life, so each schema is kept for the life of the process.
#[derive(Default)]
pub struct ChangeReaders {
    readers: std::collections::HashMap<u32, (GenericDatumReader<'static>, u32)>,
}

impl ChangeReaders {
    pub fn read(&mut self, id: u32, writer: &Schema, body: &[u8]) -> Result<ChangeEvent> {
        let (reader, scale) = match self.readers.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let schema: &'static Schema = Box::leak(Box::new(writer.clone()));
                let reader = GenericDatumReader::builder(schema).build()?;
                e.insert((reader, rating_scale(schema).unwrap_or(1)))
            }
        };
        change_of(reader.read_value(&mut &body[..])?, *scale)
    }
}

fn change_of(value: Value, rating_scale: u32) -> Result<ChangeEvent> {
    let fields = record(value, "envelope")?;
    let mut op = None;
    let (mut before, mut after, mut source) = (None, None, None);
    let (mut digest, mut oversize) = (None, Vec::new());
    for (name, value) in fields {
        match name.as_str() {
            "op" => op = Some(string(value, "op")?),
            "before" => before = carried::row(unwrap_union(value), rating_scale)?,
            "after" => after = carried::row(unwrap_union(value), rating_scale)?,
            "source" => source = Some(source_of(value)?),
            "digest" => match unwrap_union(value) {
                Value::String(d) => digest = Some(d),
                _ => digest = None,
            },
            "oversize" => {
                if let Value::Array(items) = value {
                    for item in items {
                        oversize.push(string(item, "oversize")?);
                    }
                }
            }
            _ => {}
        }
    }
    let op = op.ok_or_else(|| missing("op"))?;
    Ok(ChangeEvent {
        op: Op::from_code(&op).ok_or_else(|| Error::Decode(format!("unknown op {op:?}")))?,
        before,
        after,
        source: source.ok_or_else(|| missing("source"))?,
        digest,
        oversize,
    })
}

/// The change written with `writer`, re-encoded with the same schema, a new `op` and only
/// the images kept: how the valid-set changelog says a review entered (c) or left (d) the
/// set when an edit flipped its verdict. Everything else, `source` included, is unchanged.
pub fn restate(
    writer: &Schema,
    body: &[u8],
    op: Op,
    keep_before: bool,
    keep_after: bool,
) -> Result<Vec<u8>> {
    let value = GenericDatumReader::builder(writer)
        .build()?
        .read_value(&mut &body[..])?;
    let fields = record(value, "envelope")?
        .into_iter()
        .map(|(name, value)| {
            let value = match name.as_str() {
                "op" => Value::String(op.code().into()),
                "before" if !keep_before => Value::Union(0, Box::new(Value::Null)),
                "after" | "digest" if !keep_after => Value::Union(0, Box::new(Value::Null)),
                _ => value,
            };
            (name, value)
        })
        .collect();
    Ok(GenericDatumWriter::builder(writer)
        .build()?
        .write_value_to_vec(Value::Record(fields))?)
}

fn source_of(value: Value) -> Result<Source> {
    let mut s = Source {
        schema: String::new(),
        table: String::new(),
        lsn: Lsn::ZERO,
        position: 0,
        txid: None,
        commit_time: DateTime::<Utc>::default(),
        snapshot: false,
    };
    for (name, value) in record(value, "source")? {
        match (name.as_str(), unwrap_union(value)) {
            ("schema", v) => s.schema = string(v, "source.schema")?,
            ("table", v) => s.table = string(v, "source.table")?,
            ("lsn", Value::Long(l)) => s.lsn = Lsn(l as u64),
            ("position", Value::Long(p)) => s.position = p,
            ("txid", Value::Long(t)) => s.txid = Some(t),
            ("commit_time", Value::TimestampMicros(t)) => s.commit_time = micros(t)?,
            ("snapshot", Value::Boolean(b)) => s.snapshot = b,
            _ => {}
        }
    }
    Ok(s)
}

/// The scale of Row.rating in this writer schema (numeric(2,1) today, any numeric(p,s)).
fn rating_scale(writer: &Schema) -> Option<u32> {
    let Schema::Record(RecordSchema { fields, .. }) = writer else {
        return None;
    };
    let before = fields.iter().find(|f| f.name == "before")?;
    let Schema::Union(u) = &before.schema else {
        return None;
    };
    let Schema::Record(RecordSchema { fields, .. }) = u.variants().get(1)? else {
        return None;
    };
    // Whichever branch of the union: ["null", decimal] today, ["null", decimal, "string"]
    // with special values.
    match &fields.iter().find(|f| f.name == "rating")?.schema {
        Schema::Union(u) => u.variants().iter().find_map(|v| match v {
            Schema::Decimal(d) => u32::try_from(d.scale).ok(),
            _ => None,
        }),
        Schema::Decimal(d) => u32::try_from(d.scale).ok(),
        _ => None,
    }
}

fn record(value: Value, what: &str) -> Result<Vec<(String, Value)>> {
    match value {
        Value::Record(fields) => Ok(fields),
        other => Err(Error::Decode(format!("{what} is not a record: {other:?}"))),
    }
}

fn string(value: Value, what: &str) -> Result<String> {
    match unwrap_union(value) {
        Value::String(s) => Ok(s),
        other => Err(Error::Decode(format!("{what} is not a string: {other:?}"))),
    }
}

fn unwrap_union(value: Value) -> Value {
    match value {
        Value::Union(_, inner) => *inner,
        v => v,
    }
}

fn micros(t: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(t)
        .ok_or_else(|| Error::Decode(format!("timestamp {t} is out of range")))
}

fn missing(field: &str) -> Error {
    Error::Decode(format!("change event has no {field}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::row::tests::source;
    use crate::contract::review::Rating;

    /// The columns of `reviews` as pgoutput's Relation message describes them.
    pub fn review_columns() -> Vec<(String, u32, i32)> {
        [
            ("id", 20, -1),
            ("course_id", 20, -1),
            ("user_id", 20, -1),
            ("rating", 1700, (2 << 16 | 1) + 4),
        ]
        .into_iter()
        .chain([
            ("title", 25, -1),
            ("content", 25, -1),
            ("created_at", 1184, -1),
            ("updated_at", 1184, -1),
        ])
        .map(|(n, o, m)| (n.to_string(), o, m))
        .collect()
    }

    #[test]
    fn an_update_round_trips_through_avro() {
        let schema = RowSchema::new("public", "reviews", review_columns()).unwrap();
        let t = b"2026-11-25 04:40:17.993809+00";
        let old = [b"7".as_slice(), b"42", b"9", b"4.5", b"Good", b"", t, t].map(Cell::Text);
        let mut new = old;
        new[3] = Cell::Text(b"1.0");
        new[4] = Cell::Null;
        let body = schema
            .encode(Op::Update, Some(&old), Some(&new), &source())
            .unwrap();
        let event = decode_change(schema.envelope(), &body).unwrap();
        assert_eq!(event.op, Op::Update);
        assert_eq!(event.source, source());
        let before = event.before.unwrap();
        let after = event.after.unwrap();
        assert_eq!(
            (before.id, before.course_id, before.user_id),
            (7, Some(42), Some(9))
        );
        let stars = |i: &crate::contract::image::ReviewImage| i.countable().unwrap().rating;
        assert_eq!(stars(&before), Rating::from_stars(4.5).unwrap());
        assert_eq!(stars(&after), Rating::from_stars(1.0).unwrap());
        assert_eq!(
            (before.title.as_deref(), after.title.as_deref()),
            (Some("Good"), None)
        );
        assert_eq!(before.content.as_deref(), Some(""));
        assert_eq!(
            after.created_at.value().map(|t| t.timestamp_micros()),
            Some(1_795_581_617_993_809)
        );
    }

    #[test]
    fn restating_a_flip_keeps_the_source_and_drops_one_image() {
        let schema = RowSchema::new("public", "reviews", review_columns()).unwrap();
        let t = b"2026-11-25 04:40:17.993809+00";
        let old = [b"7".as_slice(), b"42", b"9", b"4.5", b"Good", b"", t, t].map(Cell::Text);
        let mut new = old;
        new[5] = Cell::Text(b"buy now at http://x");
        let body = schema
            .encode(Op::Update, Some(&old), Some(&new), &source())
            .unwrap();
        let left = restate(schema.envelope(), &body, Op::Delete, true, false).unwrap();
        let left = decode_change(schema.envelope(), &left).unwrap();
        assert_eq!((left.op, left.after), (Op::Delete, None));
        assert_eq!(left.before.unwrap().content.as_deref(), Some(""));
        assert_eq!(left.source, source());
        let entered = restate(schema.envelope(), &body, Op::Create, false, true).unwrap();
        let entered = decode_change(schema.envelope(), &entered).unwrap();
        assert_eq!((entered.op, entered.before), (Op::Create, None));
        assert_eq!(
            entered.after.unwrap().content.as_deref(),
            Some("buy now at http://x")
        );
    }

    #[test]
    fn an_added_column_is_a_backward_compatible_version_and_a_type_change_is_not() {
        use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
        // Partial means "some values resolve": for a registry that is not compatible.
        let v1 = RowSchema::new("public", "reviews", review_columns()).unwrap();
        let mut columns = review_columns();
        columns.push(("language".into(), 25, -1));
        let v2 = RowSchema::new("public", "reviews", columns).unwrap();
        assert_eq!(
            SchemaCompatibility::can_read(v1.envelope(), v2.envelope()).ok(),
            Some(Compatibility::Full)
        );
        let mut retyped = review_columns();
        retyped[2] = ("user_id".into(), 25, -1);
        let v3 = RowSchema::new("public", "reviews", retyped).unwrap();
        assert_ne!(
            SchemaCompatibility::can_read(v1.envelope(), v3.envelope()).ok(),
            Some(Compatibility::Full)
        );
    }

    #[test]
    fn bad_values_are_errors_not_panics() {
        let schema = RowSchema::new("public", "reviews", review_columns()).unwrap();
        let short = [Cell::Text(b"1")];
        assert!(schema
            .encode(Op::Create, None, Some(&short), &source())
            .is_err());
        assert!(decode_change(schema.envelope(), b"\x02garbage").is_err());
    }
}
