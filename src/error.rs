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

    /// Built through `From`, which keeps secret setting values out of configuration errors.
    #[error("kafka: {0}")]
    Kafka(rdkafka::error::KafkaError),

    /// Kafka did not acknowledge a record; the message says which topic and why.
    #[error("{0}")]
    Delivery(String),

    #[error("replication: {0}")]
    Replication(String),

    #[error("cannot decode: {0}")]
    Decode(String),

    #[error("avro: {0}")]
    Avro(#[from] apache_avro::Error),

    #[error("schema registry: {0}")]
    Registry(String),

    #[error("schema registry: schema id {id} is not registered at {registry}")]
    UnknownSchema { id: u32, registry: String },

    #[error(
        "schema for {subject} is not compatible with the registered versions: {detail}. \
         Revert the table change, or relax the subject's compatibility in the registry, then restart"
    )]
    IncompatibleSchema { subject: String, detail: String },

    #[error(
        "{consumer} lost {topic}/{partition} to {owner} (a rebalance moved it): the batch was rolled back"
    )]
    Fenced {
        consumer: String,
        topic: String,
        partition: i32,
        owner: String,
    },

    #[error(
        "replication slot {slot:?} {state}, after its snapshot (at {snapshot_lsn}) was sent to {topic}: \
         the changes made since cdc last confirmed cannot be read from it any more, so cdc stops \
         instead of skipping them. To recover, start cdc once with --new-snapshot \
         (`reviewflow cdc --new-snapshot`, with the same settings): it drops the lost slot, creates \
         a new one and restates the table on {topic} (a TRUNCATE, then every current row), from \
         which the fraud worker, the verdict sink and the stats worker rebuild review_verdicts and \
         course_stats by themselves; `reviewflow verify` then reports no difference"
    )]
    SlotLost {
        slot: String,
        /// What happened to it, for the operator.
        state: String,
        snapshot_lsn: crate::contract::lsn::Lsn,
        topic: String,
    },

    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),

    #[error("local stack: {0}")]
    Stack(String),

    #[error(
        "local stack: its PostgreSQL data folder {} was made by PostgreSQL {found}, and PostgreSQL \
         {wanted} cannot open it: start the stack with --pg-version {found} \
         (REVIEWFLOW_PG_VERSION={found}), or delete its data with `reviewflow stack down --purge` \
         to start afresh on {wanted}",
        data.display()
    )]
    PgVersionMismatch {
        data: std::path::PathBuf,
        found: String,
        wanted: u8,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },

    #[error("import: {0}")]
    Import(String),

    #[error(
        "another process on this host already runs {group} as instance {instance} (pid {holder}, \
         lock {}): two processes with one name fence each other's Kafka transactions for ever. \
         Give each process its own name with --instance (REVIEWFLOW_INSTANCE), the same one at \
         every restart",
        lock.display()
    )]
    InstanceClash {
        group: String,
        instance: String,
        holder: String,
        lock: PathBuf,
    },

    /// A test's simulated failure (src/failpoint.rs): one a new session cures.
    #[error("failpoint {0} reached (REVIEWFLOW_FAILPOINT): a simulated failure")]
    Failpoint(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Errors a new session cannot cure: they need a person (a fix to configuration, the
    /// table or the registry), so the stage stops and says why.
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            Error::IncompatibleSchema { .. }
                | Error::SlotLost { .. }
                | Error::Config(_)
                | Error::InstanceClash { .. }
                | Error::Decode(_)
                | Error::Avro(_)
        )
    }

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

impl From<rdkafka::error::KafkaError> for Error {
    /// librdkafka's configuration errors quote the value they refused, which may be a
    /// password: those become configuration errors with the value hidden.
    fn from(e: rdkafka::error::KafkaError) -> Self {
        match e {
            rdkafka::error::KafkaError::ClientConfig(_, desc, key, value) => {
                let shown = crate::secret::shown_setting(&key, &value);
                let desc = if shown != value && !value.is_empty() {
                    desc.replace(&value, shown)
                } else {
                    desc
                };
                Error::Config(format!("Kafka client setting {key}={shown}: {desc}"))
            }
            other => Error::Kafka(other),
        }
    }
}

/// An error with its causes: reqwest's own message rarely says what went wrong.
pub fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
