//! The change envelope written straight from pgoutput's text values: serde's schema-aware
//! Avro writer (apache-avro's `write_ser`) is handed each cell as what its column's type
//! reads it as, so no generic value tree (a `Value` per field, a `String` per name) is built
//! for a change. Records go as tuples, in schema order, so no field is looked up by name, and
//! every union branch is named by its index, as the schema of `row` lays them out: a row
//! field is [null, T, string] (or [null, string]), an image [null, Row]. The bytes are the
//! value tree's, which `RowSchema::encode_by_value_tree` keeps as the reference the tests
//! compare against.

use serde::ser::{Serialize, SerializeTuple, Serializer};

use super::pgtext::{Kind, Parsed};
use super::row::{oversize_marker, Cell};
use crate::contract::change::{Op, Source};

/// One change as the envelope lays it out.
pub(super) struct Envelope<'a> {
    pub op: Op,
    pub images: [Option<Image<'a>>; 2],
    pub source: &'a Source,
    pub digest: Option<String>,
    /// `before.NAME` / `after.NAME` of every value carried as a marker.
    pub oversize: Vec<String>,
}

/// One row image: each column's kind, its cell, and whether it travels as a marker.
pub(super) struct Image<'a> {
    pub kinds: &'a [Kind],
    pub cells: &'a [Cell<'a>],
    pub replaced: &'a [bool],
}

impl Serialize for Envelope<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(6)?;
        t.serialize_element(self.op.code())?;
        t.serialize_element(&self.images[0])?;
        t.serialize_element(&self.images[1])?;
        t.serialize_element(&SourceRecord(self.source))?;
        t.serialize_element(&self.digest)?;
        t.serialize_element(&self.oversize)?;
        t.end()
    }
}

impl Serialize for Image<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.cells.len())?;
        for ((kind, cell), replaced) in self.kinds.iter().zip(self.cells).zip(self.replaced) {
            t.serialize_element(&Field {
                kind: *kind,
                cell: *cell,
                replaced: *replaced,
            })?;
        }
        t.end()
    }
}

struct Field<'a> {
    kind: Kind,
    cell: Cell<'a>,
    replaced: bool,
}

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = match self.cell {
            // serde's none is for two-branch unions only; null is branch 0 of every field.
            Cell::Null => return s.serialize_newtype_variant("", 0, "", &()),
            Cell::Text(t) => t,
        };
        let branch = self.kind.text_branch();
        if self.replaced {
            return s.serialize_newtype_variant("", branch, "", &oversize_marker(text));
        }
        match self.kind.read(text) {
            Some(value) => s.serialize_newtype_variant("", 1, "", &Typed(value)),
            None => s.serialize_newtype_variant("", branch, "", &String::from_utf8_lossy(text)),
        }
    }
}

/// A value of its column's T, written as that T.
struct Typed<'a>(Parsed<'a>);

impl Serialize for Typed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Parsed::Boolean(b) => s.serialize_bool(*b),
            Parsed::Int(n) | Parsed::Date(n) => s.serialize_i32(*n),
            Parsed::Long(n) | Parsed::TimestampMicros(n) | Parsed::LocalTimestampMicros(n) => {
                s.serialize_i64(*n)
            }
            Parsed::Float(f) => s.serialize_f32(*f),
            Parsed::Double(f) => s.serialize_f64(*f),
            Parsed::Decimal(b) | Parsed::Bytes(b) => s.serialize_bytes(b),
            Parsed::String(text) => s.serialize_str(text),
        }
    }
}

struct SourceRecord<'a>(&'a Source);

impl Serialize for SourceRecord<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let source = self.0;
        let mut t = s.serialize_tuple(7)?;
        t.serialize_element(&source.schema)?;
        t.serialize_element(&source.table)?;
        t.serialize_element(&(source.lsn.0 as i64))?;
        t.serialize_element(&source.position)?;
        t.serialize_element(&source.txid)?;
        t.serialize_element(&source.commit_time.timestamp_micros())?;
        t.serialize_element(&source.snapshot)?;
        t.end()
    }
}
