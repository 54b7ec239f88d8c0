//! Avro for the topics: the change envelope of DESIGN.md (op, before, after, source), built
//! from the table's columns as the replication stream describes them, so an added column
//! becomes a new, backward-compatible schema version; and the Confluent wire format.

mod carried;
pub mod digest;
pub mod envelope;
mod pgtext;
mod pgtime;
mod row;
mod row_writer;
pub mod verdict;
pub mod wire;

pub use envelope::{decode_change, restate, Cell, RowSchema};
pub use row::{oversize_marker, ColumnType, Encoded};
