//! Sinks: the end of the flow, where Kafka topics land in PostgreSQL tables that websites
//! read. Each sink commits its table changes and its input offsets in one PostgreSQL
//! transaction, so a crash at any instant neither loses nor applies a record twice; offsets
//! live in PostgreSQL (`offsets`), read by a consumer that seeks to them (`feed`).
//!
//! One loop drives every sink (`destination::run`); a sink states how to decode a record
//! and how to write a batch (`Destination`): `stats` into the course figures, `verdicts`
//! into the verdict tables.

pub mod args;
pub mod dead_letters;
pub mod destination;
pub mod feed;
pub mod offsets;
pub mod stats;
pub mod verdicts;

pub use args::{StatsConfig, VerdictsConfig};
pub use destination::{run, Destination, Written};
pub use verdicts::VerdictSink;
