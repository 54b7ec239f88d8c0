//! The writing side of the change envelope: the Avro schema of one version of a table's
//! columns, and a change encoded with it. Each row field is a union of null, the column's
//! Avro type and string (see `pgtext`), names its PostgreSQL type in a `pg_type` attribute,
//! and, when the column's name is not a valid Avro name, is renamed with the original kept in
//! `pg_column`: no value and no column name can stop the reader. A change that would not fit
//! the topic is carried with its largest values replaced by a marker (docs/values.md).

use apache_avro::schema::Schema;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use openssl::sha::Sha256;
use serde_json::json;

use super::digest;
use super::pgtext::Kind;
use super::row_writer::{Envelope, Image};
use crate::contract::change::{Op, Source};
use crate::error::{Error, Result};

/// One column's value as the replication stream carries it: NULL, or PostgreSQL's text form.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cell<'a> {
    Null,
    Text(&'a [u8]),
}

/// A column as the table describes it: the Relation message's name, type OID and modifier,
/// and the type's name as `format_type` gives it (e.g. "numeric(2,1)", "public.mood").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnType {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    pub pg_type: String,
}

impl From<(String, u32, i32)> for ColumnType {
    /// A column of a built-in type whose name need not be looked up (tests, tools): the
    /// readers use the catalog's name, which this matches for the types listed.
    fn from((name, type_oid, type_modifier): (String, u32, i32)) -> Self {
        let pg_type = match (type_oid, Kind::of(type_oid, type_modifier)) {
            (1700, Kind::Decimal { precision, scale }) => format!("numeric({precision},{scale})"),
            (16, _) => "boolean".into(),
            (20, _) => "bigint".into(),
            (21, _) => "smallint".into(),
            (23, _) => "integer".into(),
            (25, _) => "text".into(),
            (1184, _) => "timestamp with time zone".into(),
            (oid, _) => format!("oid {oid}"),
        };
        ColumnType {
            name,
            type_oid,
            type_modifier,
            pg_type,
        }
    }
}

/// The marker that replaces a value too large for the topic: the byte length and sha256 of
/// its PostgreSQL text form.
pub fn oversize_marker(text: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(text);
    format!(
        "reviewflow.oversize length={} sha256={}",
        text.len(),
        digest::hex(&hasher.finish())
    )
}

/// Values no longer than a marker are never replaced: it would not make the change smaller.
const MARKER_LEN: usize = 128;

/// An encoded change, and the columns (`before.NAME`, `after.NAME`) it carries as markers.
#[derive(Debug)]
pub struct Encoded {
    pub body: Vec<u8>,
    pub oversize: Vec<String>,
}

struct Column {
    /// Its PostgreSQL name, and the Avro field's.
    name: String,
    field: String,
    kind: Kind,
}

/// How a change's body is written: directly from the cells, or through the value tree.
type Write = fn(&RowSchema, Op, [Option<&[Cell]>; 2], &[Vec<bool>; 2], &Source) -> Result<Vec<u8>>;

/// The envelope schema of one version of a table's columns, and how to fill it.
pub struct RowSchema {
    envelope: &'static Schema,
    writer: GenericDatumWriter<'static>,
    columns: Vec<Column>,
    /// Each column's kind, in table order, as the direct writer takes them.
    kinds: Vec<Kind>,
    /// Index of each of `digest::COLUMNS` among `columns`, if the table has it.
    digested: Vec<Option<usize>>,
}

impl RowSchema {
    /// `columns` in table order.
    pub fn new(
        namespace: &str,
        table: &str,
        columns: impl IntoIterator<Item = impl Into<ColumnType>>,
    ) -> Result<Self> {
        let columns: Vec<ColumnType> = columns.into_iter().map(Into::into).collect();
        let names = field_names(columns.iter().map(|c| c.name.as_str()));
        let mut fields = Vec::with_capacity(columns.len());
        let mut described = Vec::with_capacity(columns.len());
        for (column, field) in columns.into_iter().zip(names) {
            let kind = Kind::of(column.type_oid, column.type_modifier);
            let mut spec = json!({"name": field, "type": kind.union_type(), "default": null,
                                  "pg_type": column.pg_type});
            if field != column.name {
                spec["pg_column"] = json!(column.name);
            }
            fields.push(spec);
            described.push(Column {
                name: column.name,
                field,
                kind,
            });
        }
        let namespace = format!("reviewflow.{}.{}", avro_name(namespace), avro_name(table));
        let envelope = envelope_json(&namespace, fields);
        // A table has a handful of schema versions in a process's life; leaking each lets the
        // writer keep its resolved names instead of resolving them again for every event.
        let envelope: &'static Schema = Box::leak(Box::new(Schema::parse(&envelope)?));
        let writer = GenericDatumWriter::builder(envelope).build()?;
        let digested = digest::COLUMNS
            .iter()
            .map(|c| described.iter().position(|col| col.name == *c))
            .collect();
        Ok(RowSchema {
            envelope,
            writer,
            kinds: described.iter().map(|c| c.kind).collect(),
            columns: described,
            digested,
        })
    }

    pub fn envelope(&self) -> &'static Schema {
        self.envelope
    }

    /// The position of the column named `name` in PostgreSQL.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The Avro body (without the wire-format header) of one change, whatever its size.
    pub fn encode(
        &self,
        op: Op,
        before: Option<&[Cell]>,
        after: Option<&[Cell]>,
        source: &Source,
    ) -> Result<Vec<u8>> {
        Ok(self
            .encode_within(op, before, after, source, usize::MAX)?
            .body)
    }

    /// The Avro body of one change in at most `limit` bytes: while it is larger, the largest
    /// value of either image is replaced by its `oversize_marker`. An error means the cells
    /// do not match the columns, never a value.
    pub fn encode_within(
        &self,
        op: Op,
        before: Option<&[Cell]>,
        after: Option<&[Cell]>,
        source: &Source,
        limit: usize,
    ) -> Result<Encoded> {
        self.encode_with(Self::write, op, [before, after], source, limit)
    }

    fn encode_with(
        &self,
        write: Write,
        op: Op,
        images: [Option<&[Cell]>; 2],
        source: &Source,
        limit: usize,
    ) -> Result<Encoded> {
        for cells in images.iter().flatten() {
            if cells.len() != self.columns.len() {
                return Err(Error::Decode(format!(
                    "row has {} columns, the relation {}",
                    cells.len(),
                    self.columns.len()
                )));
            }
        }
        let mut replaced: [Vec<bool>; 2] = [
            vec![false; self.columns.len()],
            vec![false; self.columns.len()],
        ];
        let mut body = write(self, op, images, &replaced, source)?;
        if body.len() <= limit {
            return Ok(Encoded {
                body,
                oversize: Vec::new(),
            });
        }
        let mut candidates: Vec<(usize, usize, usize)> = Vec::new();
        for (image, cells) in images.iter().enumerate() {
            for (i, cell) in cells.iter().flat_map(|c| c.iter()).enumerate() {
                if let Cell::Text(t) = cell {
                    if t.len() > MARKER_LEN {
                        candidates.push((t.len(), image, i));
                    }
                }
            }
        }
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        // Savings are estimated from the text length, so the change is encoded again only
        // when the estimate says it fits, not after every replacement.
        let mut estimate = body.len();
        for (len, image, i) in candidates {
            replaced[image][i] = true;
            estimate = estimate.saturating_sub(len - MARKER_LEN);
            if estimate <= limit {
                body = write(self, op, images, &replaced, source)?;
                if body.len() <= limit {
                    break;
                }
                estimate = body.len();
            }
        }
        if body.len() > limit {
            body = write(self, op, images, &replaced, source)?;
        }
        let mut oversize = Vec::new();
        for (image, flags) in ["before", "after"].iter().zip(&replaced) {
            for (column, _) in self.columns.iter().zip(flags).filter(|(_, r)| **r) {
                oversize.push(format!("{image}.{}", column.field));
            }
        }
        Ok(Encoded { body, oversize })
    }

    fn write(
        &self,
        op: Op,
        images: [Option<&[Cell]>; 2],
        replaced: &[Vec<bool>; 2],
        source: &Source,
    ) -> Result<Vec<u8>> {
        let image = |i: usize| {
            images[i].map(|cells| Image {
                kinds: &self.kinds,
                cells,
                replaced: &replaced[i],
            })
        };
        let envelope = Envelope {
            op,
            images: [image(0), image(1)],
            source,
            digest: images[1].map(|cells| self.digest(cells)),
            oversize: self.oversize_names(replaced),
        };
        Ok(self.writer.write_ser_to_vec(&envelope)?)
    }

    /// `before.NAME` / `after.NAME` of each value `replaced` marks.
    fn oversize_names(&self, replaced: &[Vec<bool>; 2]) -> Vec<String> {
        ["before", "after"]
            .iter()
            .zip(replaced)
            .flat_map(|(image, flags)| {
                self.columns
                    .iter()
                    .zip(flags)
                    .filter(|(_, r)| **r)
                    .map(move |(c, _)| format!("{image}.{}", c.field))
            })
            .collect()
    }

    /// [`RowSchema::encode_within`] built as apache-avro's generic value tree, as the encoder
    /// did before it wrote from the text values directly: the reference whose bytes the
    /// direct writer must reproduce (its differential tests), slower by the tree it builds.
    pub fn encode_within_by_value_tree(
        &self,
        op: Op,
        before: Option<&[Cell]>,
        after: Option<&[Cell]>,
        source: &Source,
        limit: usize,
    ) -> Result<Encoded> {
        self.encode_with(Self::write_tree, op, [before, after], source, limit)
    }

    fn write_tree(
        &self,
        op: Op,
        images: [Option<&[Cell]>; 2],
        replaced: &[Vec<bool>; 2],
        source: &Source,
    ) -> Result<Vec<u8>> {
        let oversize = self
            .oversize_names(replaced)
            .into_iter()
            .map(Value::String)
            .collect();
        let record = Value::Record(vec![
            ("op".into(), Value::String(op.code().into())),
            ("before".into(), self.row(images[0], &replaced[0])),
            ("after".into(), self.row(images[1], &replaced[1])),
            (
                "source".into(),
                Value::Record(vec![
                    ("schema".into(), Value::String(source.schema.clone())),
                    ("table".into(), Value::String(source.table.clone())),
                    ("lsn".into(), Value::Long(source.lsn.0 as i64)),
                    ("position".into(), Value::Long(source.position)),
                    ("txid".into(), optional(source.txid.map(Value::Long))),
                    (
                        "commit_time".into(),
                        Value::TimestampMicros(source.commit_time.timestamp_micros()),
                    ),
                    ("snapshot".into(), Value::Boolean(source.snapshot)),
                ]),
            ),
            (
                "digest".into(),
                optional(images[1].map(|cells| Value::String(self.digest(cells)))),
            ),
            ("oversize".into(), Value::Array(oversize)),
        ]);
        Ok(self.writer.write_value_to_vec(record)?)
    }

    /// The digest (`digest::image_digest`) of a row image of this table: of the values as
    /// PostgreSQL holds them, whichever the change carries as markers.
    pub fn digest(&self, cells: &[Cell]) -> String {
        digest::image_digest(
            self.digested
                .iter()
                .map(|i| match i.and_then(|i| cells.get(i)) {
                    Some(Cell::Text(t)) => Some(*t),
                    _ => None,
                }),
        )
    }

    fn row(&self, cells: Option<&[Cell]>, replaced: &[bool]) -> Value {
        let Some(cells) = cells else {
            return optional(None);
        };
        let fields = self
            .columns
            .iter()
            .zip(cells)
            .zip(replaced)
            .map(|((column, cell), replaced)| {
                let value = match cell {
                    Cell::Null => optional(None),
                    Cell::Text(t) if *replaced => column.kind.text(oversize_marker(t)),
                    Cell::Text(t) => column.kind.value(t),
                };
                (column.field.clone(), value)
            })
            .collect();
        optional(Some(Value::Record(fields)))
    }
}

/// The change envelope around a table's row record (`fields`): one definition for the
/// schema every reader and the registry see (DESIGN.md's envelope).
pub(crate) fn envelope_json(namespace: &str, fields: Vec<serde_json::Value>) -> serde_json::Value {
    json!({
        "type": "record", "name": "Envelope",
        "namespace": namespace,
        "fields": [
            {"name": "op", "type": "string"},
            {"name": "before", "type": ["null", {"type": "record", "name": "Row", "fields": fields}], "default": null},
            {"name": "after", "type": ["null", "Row"], "default": null},
            {"name": "source", "type": {"type": "record", "name": "Source", "fields": [
                {"name": "schema", "type": "string"},
                {"name": "table", "type": "string"},
                {"name": "lsn", "type": "long"},
                {"name": "position", "type": "long"},
                {"name": "txid", "type": ["null", "long"], "default": null},
                {"name": "commit_time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
                {"name": "snapshot", "type": "boolean"}
            ]}},
            {"name": "digest", "type": ["null", "string"], "default": null,
             "doc": "sha256 of the after image's contract columns as PostgreSQL prints them (docs/guarantees.md)"},
            {"name": "oversize", "type": {"type": "array", "items": "string"}, "default": [],
             "doc": "columns carried as an oversize marker, as before.NAME or after.NAME (docs/values.md)"}
        ]
    })
}

fn optional(value: Option<Value>) -> Value {
    match value {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(v)),
    }
}

/// `name` with every character Avro does not allow in a name replaced by `_`, and a `_` in
/// front when it would start with a digit (or is empty).
fn avro_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

/// The Avro field name of each column: its own when valid; else `avro_name`, with `_2`, `_3`
/// ... appended until it is no other field's. Valid names are kept first, so a column whose
/// name is valid is never renamed because of another's.
fn field_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let names: Vec<&str> = names.into_iter().collect();
    let mut taken: std::collections::HashSet<String> = names
        .iter()
        .filter(|n| avro_name(n) == **n)
        .map(|n| n.to_string())
        .collect();
    names
        .iter()
        .map(|name| {
            let base = avro_name(name);
            if base == *name {
                return base;
            }
            let mut candidate = base.clone();
            let mut n = 2;
            while !taken.insert(candidate.clone()) {
                candidate = format!("{base}_{n}");
                n += 1;
            }
            candidate
        })
        .collect()
}

#[cfg(test)]
#[path = "row_tests.rs"]
pub(crate) mod tests;
