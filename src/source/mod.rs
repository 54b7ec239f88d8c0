//! The source stage, head of the flow: the `reviews` table's rows (initial snapshot) and
//! changes (logical replication, pgoutput) into Kafka as Avro change events. Nothing here
//! reads from Kafka topics downstream of `reviews.changes`, but for the fence of a switch to
//! added partitions (`fence`), which waits for the workers' progress.

mod acks;
pub mod args;
pub mod cdc;
mod columns;
pub mod epochs;
pub mod failover;
mod fence;
pub mod pgoutput;
mod produce;
pub mod refusals;
pub mod replication;
pub mod size;
pub mod slot;
pub mod snapshot;
pub mod status;
mod stream;
mod switch;

pub use args::CdcConfig;
pub use cdc::Cdc;
pub use switch::CHECK_EVERY as PARTITIONS_CHECK_EVERY;
