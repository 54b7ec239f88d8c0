//! Sinks: the end of the flow, where Kafka topics land in PostgreSQL tables that websites
//! read. Each sink commits its table changes and its input offsets in one PostgreSQL
//! transaction, so a crash at any instant neither loses nor applies a record twice.

pub mod stats;
