//! The source stage, head of the flow: the `reviews` table's rows (initial snapshot) and
//! changes (logical replication, pgoutput) into Kafka as Avro change events. Nothing here
//! reads from Kafka topics downstream of `reviews.changes`.

mod acks;
pub mod args;
pub mod cdc;
mod columns;
pub mod failover;
pub mod pgoutput;
mod produce;
pub mod refusals;
pub mod replication;
pub mod size;
pub mod slot;
pub mod snapshot;
pub mod status;
mod stream;

pub use args::CdcConfig;
pub use cdc::Cdc;
