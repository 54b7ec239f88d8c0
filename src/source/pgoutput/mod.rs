//! Decoder of the pgoutput logical replication protocol, version 1: the payload of each
//! XLogData message a `START_REPLICATION ... (proto_version '1')` stream carries.
//!
//! Guarantees: decoding is pure (no I/O, no state between messages) and total: any input,
//! however truncated or garbled, yields either a message or `Error::Decode` naming what was
//! wrong, never a panic. A message must be consumed exactly; trailing bytes are an error,
//! because they mean the stream and this decoder disagree about the format. Text values are
//! zero-copy slices of the input.
//!
//! Relation ('R') messages describe a table before its first change in a session (and again
//! after its schema changes); tuples are positional, so a consumer keeps the latest Relation
//! per relation id to name the columns.

use bytes::Bytes;

use crate::contract::lsn::Lsn;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum PgOutput {
    Begin(Begin),
    Commit(Commit),
    /// The transaction was replayed from another node (set up by replication origins).
    Origin {
        commit_lsn: Lsn,
        name: String,
    },
    Relation(Relation),
    /// A non-builtin type used by a following Relation.
    Type {
        id: u32,
        namespace: String,
        name: String,
    },
    Insert {
        relation_id: u32,
        new: Tuple,
    },
    /// `old` is present when the table's replica identity changed or is FULL ('O', whole
    /// row, `key_only` false) or the key columns changed ('K', only key columns are non-null,
    /// `key_only` true).
    Update {
        relation_id: u32,
        old: Option<Tuple>,
        key_only: bool,
        new: Tuple,
    },
    Delete {
        relation_id: u32,
        old: Tuple,
        key_only: bool,
    },
    Truncate {
        relation_ids: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    /// `pg_logical_emit_message` output (only sent when the `messages` option is on).
    Message {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the transaction's commit record: equal to the following Commit's
    /// `commit_lsn`.
    pub final_lsn: Lsn,
    /// Microseconds since 2000-01-01 UTC.
    pub commit_time_micros: i64,
    pub xid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub flags: u8,
    pub commit_lsn: Lsn,
    /// Just past the commit record: the position to confirm once the transaction is safe.
    pub end_lsn: Lsn,
    /// Microseconds since 2000-01-01 UTC.
    pub commit_time_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    /// Empty for `pg_catalog`.
    pub namespace: String,
    pub name: String,
    /// `pg_class.relreplident`: b'd' default, b'n' nothing, b'f' full, b'i' index.
    pub replica_identity: u8,
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Part of the replica identity (every column when the identity is FULL).
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value the change did not touch: the server did not send it, the consumer
    /// must take it from the row's previous image.
    UnchangedToast,
    /// The column's text output, in the connection's client_encoding.
    Text(Bytes),
}

pub type Tuple = Vec<Value>;

const KEY_COLUMN_FLAG: u8 = 1;
const TRUNCATE_CASCADE: u8 = 1;
const TRUNCATE_RESTART_IDENTITY: u8 = 2;
const MESSAGE_TRANSACTIONAL: u8 = 1;

/// Decodes one pgoutput message.
pub fn decode(data: Bytes) -> Result<PgOutput> {
    let mut r = Reader::new(data);
    let tag = r.u8("message tag")?;
    let message = match tag {
        b'B' => PgOutput::Begin(Begin {
            final_lsn: r.lsn("Begin final LSN")?,
            commit_time_micros: r.i64("Begin commit time")?,
            xid: r.u32("Begin xid")?,
        }),
        b'C' => PgOutput::Commit(Commit {
            flags: r.u8("Commit flags")?,
            commit_lsn: r.lsn("Commit LSN")?,
            end_lsn: r.lsn("Commit end LSN")?,
            commit_time_micros: r.i64("Commit time")?,
        }),
        b'O' => PgOutput::Origin {
            commit_lsn: r.lsn("Origin commit LSN")?,
            name: r.string("Origin name")?,
        },
        b'R' => PgOutput::Relation(relation(&mut r)?),
        b'Y' => PgOutput::Type {
            id: r.u32("Type OID")?,
            namespace: r.string("Type namespace")?,
            name: r.string("Type name")?,
        },
        b'I' => {
            let relation_id = r.u32("Insert relation id")?;
            match r.u8("Insert tuple kind")? {
                b'N' => PgOutput::Insert {
                    relation_id,
                    new: tuple(&mut r, "Insert new tuple")?,
                },
                other => return Err(unexpected("Insert", "'N'", other)),
            }
        }
        b'U' => {
            let relation_id = r.u32("Update relation id")?;
            let (old, key_only, marker) = match r.u8("Update tuple kind")? {
                kind @ (b'K' | b'O') => {
                    let old = tuple(&mut r, "Update old tuple")?;
                    (Some(old), kind == b'K', r.u8("Update new tuple kind")?)
                }
                marker => (None, false, marker),
            };
            if marker != b'N' {
                return Err(unexpected("Update", "'K', 'O' or 'N'", marker));
            }
            PgOutput::Update {
                relation_id,
                old,
                key_only,
                new: tuple(&mut r, "Update new tuple")?,
            }
        }
        b'D' => {
            let relation_id = r.u32("Delete relation id")?;
            match r.u8("Delete tuple kind")? {
                kind @ (b'K' | b'O') => PgOutput::Delete {
                    relation_id,
                    old: tuple(&mut r, "Delete old tuple")?,
                    key_only: kind == b'K',
                },
                other => return Err(unexpected("Delete", "'K' or 'O'", other)),
            }
        }
        b'T' => {
            let count = r.i32("Truncate relation count")?;
            let count = usize::try_from(count)
                .map_err(|_| Error::Decode(format!("Truncate: negative relation count {count}")))?;
            let options = r.u8("Truncate options")?;
            // The count comes from the wire: never reserve more than the bytes can hold.
            let mut relation_ids = Vec::with_capacity(count.min(r.remaining() / 4));
            for _ in 0..count {
                relation_ids.push(r.u32("Truncate relation id")?);
            }
            PgOutput::Truncate {
                relation_ids,
                cascade: options & TRUNCATE_CASCADE != 0,
                restart_identity: options & TRUNCATE_RESTART_IDENTITY != 0,
            }
        }
        b'M' => {
            let flags = r.u8("Message flags")?;
            let lsn = r.lsn("Message LSN")?;
            let prefix = r.string("Message prefix")?;
            let len = r.len("Message content length")?;
            PgOutput::Message {
                transactional: flags & MESSAGE_TRANSACTIONAL != 0,
                lsn,
                prefix,
                content: r.bytes(len, "Message content")?,
            }
        }
        other => {
            return Err(Error::Decode(format!(
                "unknown message tag {} (protocol version 1 expected)",
                describe_byte(other)
            )))
        }
    };
    if r.remaining() != 0 {
        return Err(Error::Decode(format!(
            "{} trailing bytes after a {} message",
            r.remaining(),
            describe_byte(tag)
        )));
    }
    Ok(message)
}

fn relation(r: &mut Reader) -> Result<Relation> {
    let id = r.u32("Relation id")?;
    let namespace = r.string("Relation namespace")?;
    let name = r.string("Relation name")?;
    let replica_identity = r.u8("Relation replica identity")?;
    let count = r.u16("Relation column count")?;
    let mut columns = Vec::with_capacity(usize::from(count).min(r.remaining()));
    for _ in 0..count {
        columns.push(Column {
            key: r.u8("Relation column flags")? & KEY_COLUMN_FLAG != 0,
            name: r.string("Relation column name")?,
            type_oid: r.u32("Relation column type")?,
            type_modifier: r.i32("Relation column type modifier")?,
        });
    }
    Ok(Relation {
        id,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn tuple(r: &mut Reader, what: &str) -> Result<Tuple> {
    let count = r.u16(what)?;
    let mut values = Vec::with_capacity(usize::from(count).min(r.remaining()));
    for _ in 0..count {
        let value = match r.u8(what)? {
            b'n' => Value::Null,
            b'u' => Value::UnchangedToast,
            b't' => {
                let len = r.len(what)?;
                Value::Text(r.bytes(len, what)?)
            }
            // Binary values only come with the `binary` option, which this client never sets.
            other => return Err(unexpected(what, "a column kind 'n', 'u' or 't'", other)),
        };
        values.push(value);
    }
    Ok(values)
}

fn unexpected(what: &str, expected: &str, got: u8) -> Error {
    Error::Decode(format!(
        "{what}: expected {expected}, got {}",
        describe_byte(got)
    ))
}

fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", char::from(b))
    } else {
        format!("0x{b:02x}")
    }
}

/// Big-endian reads that report truncation instead of panicking.
struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn new(buf: Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let bytes = self
            .buf
            .get(self.pos..self.pos.saturating_add(N))
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or_else(|| self.truncated(what, N))?;
        self.pos += N;
        Ok(bytes)
    }

    fn truncated(&self, what: &str, needed: usize) -> Error {
        Error::Decode(format!(
            "truncated message: {what} needs {needed} bytes at offset {}, {} left",
            self.pos,
            self.remaining()
        ))
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.take(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take(what)?))
    }

    fn i32(&mut self, what: &str) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take(what)?))
    }

    fn i64(&mut self, what: &str) -> Result<i64> {
        Ok(i64::from_be_bytes(self.take(what)?))
    }

    fn lsn(&mut self, what: &str) -> Result<Lsn> {
        Ok(Lsn(u64::from_be_bytes(self.take(what)?)))
    }

    /// An Int32 length that must not be negative.
    fn len(&mut self, what: &str) -> Result<usize> {
        let len = self.i32(what)?;
        usize::try_from(len).map_err(|_| Error::Decode(format!("{what}: negative length {len}")))
    }

    fn bytes(&mut self, len: usize, what: &str) -> Result<Bytes> {
        if self.remaining() < len {
            return Err(self.truncated(what, len));
        }
        let bytes = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(bytes)
    }

    /// A NUL-terminated UTF-8 string.
    fn string(&mut self, what: &str) -> Result<String> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| Error::Decode(format!("truncated message: {what} has no terminator")))?;
        let s = std::str::from_utf8(rest.get(..end).unwrap_or_default())
            .map_err(|e| Error::Decode(format!("{what} is not UTF-8: {e}")))?
            .to_owned();
        self.pos += end + 1;
        Ok(s)
    }
}

#[cfg(test)]
mod tests;
