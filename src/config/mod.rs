//! The shared configuration, as plain values and the flags (each backed by an environment
//! variable) that fill them: where PostgreSQL, Kafka and the schema registry are and as whom
//! each part connects (`connections`), the Kafka clients' settings (`kafka`), the topics
//! (`topics`), and what every worker shares (`workers`). Reading it starts nothing: the
//! command line starts the local stack when no URL is given. Each stage's own arguments
//! live beside the stage (`source::args`, `transform::args`, `sink::args`, ...).

mod connections;
mod kafka;
mod topics;
mod workers;

pub use crate::db::roles::DbRole;
pub use connections::{Connections, DbUrls, Deployment, LocalStack, Settings};
pub use kafka::{kafka_client_settings, read_properties, ClientSetting, KafkaSettings};
pub use topics::TopicSettings;
pub use workers::{BatchLimits, MetricsSettings, WorkerSettings};
