//! Sinks: the end of the flow, where Kafka topics land in PostgreSQL tables that websites
//! read. Each sink commits its table changes and its input offsets in one PostgreSQL
//! transaction, so a crash at any instant neither loses nor applies a record twice; offsets
//! live in PostgreSQL (`offsets`), read by a consumer that seeks to them (`feed`).

pub mod args;
pub mod dead_letters;
pub mod feed;
pub mod offsets;
pub mod stats;
pub mod verdicts;

pub use args::{StatsConfig, VerdictsConfig};
pub use verdicts::VerdictSink;

use crate::config::{Settings, TopicSettings, WorkerSettings};
use crate::error::Result;
use crate::registry::Registry;

/// What every PostgreSQL sink starts with: its input topic (created when missing), the
/// registry, a connection pool, its dead-letter producer and its feed's configuration.
pub struct Parts {
    pub registry: Registry,
    pub pool: deadpool_postgres::Pool,
    pub dead_letters: dead_letters::DeadLetters,
    pub feed: feed::FeedConfig,
}

impl Parts {
    pub async fn new(
        settings: &Settings,
        topics: &TopicSettings,
        worker: &WorkerSettings,
        (topic, group, consumer): (&str, &str, &'static str),
    ) -> Result<Parts> {
        let kafka = &settings.kafka;
        crate::kafka::ensure_history_topic(
            kafka,
            topic,
            topics.partitions,
            topics.replication_factor,
        )
        .await?;
        // Its own dead letters' topic too: a sink started before fraud must not wait for it.
        let (partitions, replication) = (topics.partitions, topics.replication_factor);
        crate::kafka::ensure_topic(kafka, &topics.dead_letters, partitions, replication, &[])
            .await?;
        Ok(Parts {
            registry: Registry::connect(settings).await?,
            pool: crate::db::pool(&settings.database_url, 4)?,
            dead_letters: dead_letters::DeadLetters::new(kafka, &topics.dead_letters, consumer)?,
            feed: feed::FeedConfig {
                kafka: kafka.clone(),
                group: group.into(),
                topic: topic.into(),
                consumer: consumer.into(),
                owner: worker.instance(),
                limits: worker.clone(),
            },
        })
    }
}
