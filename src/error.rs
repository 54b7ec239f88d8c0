//! The library's error type: every failure a stage can report, with enough context to act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),

    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),

    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),

    #[error("migrations: {0}")]
    Migration(#[from] refinery::Error),

    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),

    #[error("local stack: {0}")]
    Stack(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },

    #[error("{0} is not built yet: it is tracked as an open issue; nothing was done")]
    NotBuilt(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn io_path(action: &str, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::io(
            format!("{action} {}", PathBuf::from(path).display()),
            source,
        )
    }
}
