//! Sinks: the end of the flow, where Kafka topics land in PostgreSQL tables that websites
//! read. Each sink commits its table changes and its input offsets in one PostgreSQL
//! transaction, so a crash at any instant neither loses nor applies a record twice; offsets
//! live in PostgreSQL (`offsets`), read by a consumer that seeks to them (`feed`).

pub mod dead_letters;
pub mod feed;
pub mod offsets;
pub mod stats;
pub mod verdicts;

pub use verdicts::VerdictSink;
