//! The one place configuration is read: command-line flags, each backed by an environment
//! variable. When neither PostgreSQL nor Kafka is configured, the self-managed local stack
//! (see `stack`) provides both.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::stack::{self, StackConfig};

/// Where the pipeline's dependencies live.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Connections {
    /// PostgreSQL connection string; unset means the local stack's.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Kafka bootstrap servers; unset means the local stack's. Other `KAFKA_*` variables are
    /// passed to the Kafka clients as settings (KAFKA_SECURITY_PROTOCOL -> security.protocol).
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", global = true)]
    pub kafka_bootstrap_servers: Option<String>,

    /// A Confluent-compatible schema registry; unset means reviewflow's own.
    #[arg(long, env = "SCHEMA_REGISTRY_URL", global = true)]
    pub schema_registry_url: Option<String>,
}

/// How the pipeline's topics are created when missing.
#[derive(clap::Args, Clone, Debug)]
pub struct TopicSettings {
    /// Partitions of each topic reviewflow creates.
    #[arg(
        long,
        env = "REVIEWFLOW_TOPIC_PARTITIONS",
        default_value_t = 3,
        global = true
    )]
    pub partitions: i32,

    /// Replication factor of each topic reviewflow creates.
    #[arg(
        long,
        env = "REVIEWFLOW_TOPIC_REPLICATION",
        default_value_t = 1,
        global = true
    )]
    pub replication_factor: i32,

    /// Change events of `reviews`, written by cdc; snapshot completion is recorded in
    /// `<topic>.snapshots`.
    #[arg(
        long = "changes-topic",
        env = "REVIEWFLOW_CHANGES_TOPIC",
        default_value = "reviews.changes",
        global = true
    )]
    pub changes: String,

    /// The changelog of the set of valid reviews, written by fraud, read by stats.
    #[arg(
        long = "valid-topic",
        env = "REVIEWFLOW_VALID_TOPIC",
        default_value = "reviews.valid",
        global = true
    )]
    pub valid: String,

    /// Review versions judged fraud, with score and reasons.
    #[arg(
        long = "fraud-topic",
        env = "REVIEWFLOW_FRAUD_TOPIC",
        default_value = "reviews.fraud",
        global = true
    )]
    pub fraud: String,

    /// One verdict per review version, read by the verdict sink.
    #[arg(
        long = "verdicts-topic",
        env = "REVIEWFLOW_VERDICTS_TOPIC",
        default_value = "reviews.verdicts",
        global = true
    )]
    pub verdicts: String,

    /// Records a stage could not read, with the reason in headers.
    #[arg(
        long = "dead-letter-topic",
        env = "REVIEWFLOW_DEAD_LETTER_TOPIC",
        default_value = "reviewflow.dead-letters",
        global = true
    )]
    pub dead_letters: String,
}

/// The CDC reader: which slot and publication it reads, and where the changes go.
#[derive(clap::Args, Clone, Debug)]
pub struct CdcConfig {
    /// Logical replication slot (created when missing, with an initial snapshot).
    #[arg(long, env = "REVIEWFLOW_SLOT", default_value = "reviewflow")]
    pub slot: String,

    /// Publication the slot streams (created by the migrations).
    #[arg(long, env = "REVIEWFLOW_PUBLICATION", default_value = "reviewflow")]
    pub publication: String,

    /// The publication's table (in schema public), read by the initial snapshot. It must have
    /// a course_id column: the record key.
    #[arg(long, env = "REVIEWFLOW_TABLE", default_value = "reviews")]
    pub table: String,

    /// Make the topic compacted (the latest change per course kept) instead of kept whole:
    /// for a table of current state, such as course_stats.
    #[arg(long, env = "REVIEWFLOW_COMPACTED_TOPIC")]
    pub compacted: bool,

    /// Seconds between standby status updates (the slot's confirmed position moves then).
    #[arg(long, env = "REVIEWFLOW_STATUS_INTERVAL", default_value_t = 10)]
    pub status_interval_secs: u64,

    /// When the slot is gone or invalidated after its snapshot was sent: create a new one and
    /// restate the table (a TRUNCATE, then every row), from which the derived tables rebuild
    /// themselves. A healthy slot is resumed as usual, so the flag may stay set.
    #[arg(long)]
    pub new_snapshot: bool,
}

/// The fraud worker: which model judges, and how records are grouped into transactions.
#[derive(clap::Args, Clone, Debug)]
pub struct FraudConfig {
    /// The fraud model: `heuristic` (explainable signals) or `seed` (the original's hash rule).
    #[arg(
        long,
        env = "REVIEWFLOW_SCORER",
        value_enum,
        default_value = "heuristic"
    )]
    pub scorer: crate::transform::score::ScorerKind,

    /// Score at or above which the heuristic model calls a review fraud, in (0, 1].
    #[arg(long, env = "REVIEWFLOW_FRAUD_THRESHOLD", default_value_t = 0.5)]
    pub fraud_threshold: f64,

    /// Consumer group of the fraud workers; instances in one group split the partitions.
    #[arg(
        id = "fraud_group",
        long = "fraud-group",
        env = "REVIEWFLOW_FRAUD_GROUP",
        default_value = "reviewflow-fraud"
    )]
    pub group: String,
}

/// The verdict sink.
#[derive(clap::Args, Clone, Debug)]
pub struct VerdictsConfig {
    /// Consumer group of the verdict sinks; instances in one group split the partitions.
    #[arg(
        id = "verdicts_group",
        long = "verdicts-group",
        env = "REVIEWFLOW_VERDICTS_GROUP",
        default_value = "reviewflow-verdicts"
    )]
    pub group: String,
}

/// The stats worker.
#[derive(clap::Args, Clone, Debug)]
pub struct StatsConfig {
    /// Consumer group of the stats workers; instances in one group split the partitions.
    #[arg(
        id = "stats_group",
        long = "stats-group",
        env = "REVIEWFLOW_STATS_GROUP",
        default_value = "reviewflow-stats"
    )]
    pub group: String,

    /// Compacted topic the figures are offered on to other consumers (`run` streams
    /// course_stats into it with a second CDC reader, slot `<slot>_stats`); empty: none.
    #[arg(
        id = "stats_topic",
        long = "stats-topic",
        env = "REVIEWFLOW_STATS_TOPIC",
        default_value = "course-stats"
    )]
    pub topic: String,

    /// Moves the worker's "today" by this many days: for tests of the 90-day window.
    #[arg(
        long,
        env = "REVIEWFLOW_CLOCK_SHIFT_DAYS",
        default_value_t = 0,
        hide = true
    )]
    pub clock_shift_days: i64,
}

/// `reviewflow import`: which course, from where, in pages of what size.
#[derive(clap::Args, Clone, Debug)]
pub struct ImportConfig {
    /// The course whose reviews are imported; it becomes their course_id.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub course: i64,

    /// Base URL of an API shaped like Udemy's API 2.0 (reviews are read from
    /// `<url>/courses/<course>/reviews/`); http only, `user:password@` for basic authentication.
    #[arg(long, env = "REVIEWFLOW_IMPORT_URL", hide_env_values = true)]
    pub url: String,

    /// Reviews asked for per page.
    #[arg(
        long,
        env = "REVIEWFLOW_IMPORT_PAGE_SIZE",
        default_value_t = 100,
        value_parser = clap::value_parser!(u64).range(1..=1000)
    )]
    pub page_size: u64,

    /// Tries per page before giving up, when the server throttles (429), fails (5xx) or
    /// cannot be reached; pauses between them grow from 0.5 s to 30 s (or as Retry-After says).
    #[arg(
        long,
        env = "REVIEWFLOW_IMPORT_ATTEMPTS",
        default_value_t = 6,
        value_parser = clap::value_parser!(u32).range(1..=100)
    )]
    pub attempts: u32,
}

/// `reviewflow demo`: how much load, over how many courses, for how long.
#[derive(clap::Args, Clone, Debug)]
pub struct DemoConfig {
    /// Changes written per second (inserts, edits and deletes together).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,

    /// Courses the reviews are spread over: course ids 1 to this.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..))]
    pub courses: i64,

    /// Stop after this many seconds; without it, run until Ctrl-C or SIGTERM.
    #[arg(long)]
    pub duration: Option<u64>,

    /// Seed of the generator: a seed always writes the same sequence of changes (default:
    /// taken from the clock, and logged so a run can be repeated).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// What every worker (fraud, stats, the verdict sink) shares: its instance name and how it
/// groups records into transactions (one per batch, closed when either limit is hit).
#[derive(clap::Args, Clone, Debug)]
pub struct WorkerSettings {
    /// This instance's name: unique among the instances of a stage, stable across its
    /// restarts (default: the host name). A restarted fraud worker reuses its transactional
    /// id, which fences its predecessor and aborts the transaction it left open at once,
    /// instead of read_committed consumers waiting for that transaction to time out.
    #[arg(long = "instance", env = "REVIEWFLOW_INSTANCE", global = true)]
    pub instance: Option<String>,

    /// Most records in one transaction.
    #[arg(
        long = "batch-records",
        env = "REVIEWFLOW_BATCH_RECORDS",
        default_value_t = 5000,
        global = true
    )]
    pub max_records: usize,

    /// Longest a batch waits for more records, in milliseconds: the latency it may add.
    #[arg(
        long = "batch-ms",
        env = "REVIEWFLOW_BATCH_MS",
        default_value_t = 50,
        global = true
    )]
    pub max_wait_ms: u64,
}

/// The standalone metrics server, for the workers (`cdc`, `fraud`, `verdicts`, `stats`),
/// which have no HTTP server of their own; `api` and `run` serve GET /metrics on their API
/// address anyway, and on this one too when it is set.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MetricsSettings {
    /// Serve GET /metrics (Prometheus, OpenMetrics text) on this address; off when unset.
    #[arg(
        id = "metrics_listen",
        long = "metrics-listen",
        value_name = "ADDR",
        env = "REVIEWFLOW_METRICS_LISTEN",
        global = true
    )]
    pub listen: Option<std::net::SocketAddr>,
}

impl CdcConfig {
    /// The reader that streams course_stats into the compacted figures topic.
    pub fn for_course_stats(&self) -> CdcConfig {
        CdcConfig {
            slot: format!("{}_stats", self.slot),
            publication: "reviewflow_stats".into(),
            table: "course_stats".into(),
            compacted: true,
            new_snapshot: false,
            ..self.clone()
        }
    }
}

impl WorkerSettings {
    pub fn instance(&self) -> String {
        self.instance
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "localhost".into())
            })
    }
}

/// Resolved connection settings, ready for the stages.
#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: String,
    pub kafka: KafkaSettings,
    pub schema_registry_url: Option<String>,
}

#[derive(Clone, Debug)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    /// librdkafka settings taken from `KAFKA_*` variables.
    pub client: Vec<(String, String)>,
}

impl Connections {
    /// Fills what is missing from the local stack, starting it when it is not up.
    pub async fn resolve(&self, stack: &StackConfig) -> Result<Settings> {
        let (database_url, bootstrap_servers) =
            match (&self.database_url, &self.kafka_bootstrap_servers) {
                (Some(db), Some(kafka)) => (db.clone(), kafka.clone()),
                (db, kafka) => {
                    tracing::info!(home = %stack.home().display(), "using the local stack");
                    let local = stack::up(stack).await?;
                    (
                        db.clone().unwrap_or(local.database_url),
                        kafka.clone().unwrap_or(local.kafka_bootstrap_servers),
                    )
                }
            };
        if database_url.trim().is_empty() {
            return Err(Error::Config("DATABASE_URL is empty".into()));
        }
        Ok(Settings {
            database_url,
            kafka: KafkaSettings {
                bootstrap_servers,
                client: kafka_client_settings(std::env::vars()),
            },
            schema_registry_url: self.schema_registry_url.clone(),
        })
    }
}

/// Variables of Kafka's own shell scripts and JVM, which are not client settings.
const NOT_CLIENT_SETTINGS: &[&str] = &[
    "BOOTSTRAP_SERVERS", // has its own flag
    "HOME",
    "OPTS",
    "HEAP_OPTS",
    "JVM_PERFORMANCE_OPTS",
    "LOG4J_OPTS",
    "JMX_OPTS",
    "GC_LOG_OPTS",
    "DEBUG",
    "VERSION",
    "CLUSTER_ID",
    "NODE_ID",
];

/// `KAFKA_SASL_PASSWORD=x` becomes `sasl.password=x`.
pub fn kafka_client_settings(
    vars: impl Iterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut out: Vec<_> = vars
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("KAFKA_")?;
            (!name.is_empty() && !NOT_CLIENT_SETTINGS.contains(&name))
                .then(|| (name.to_ascii_lowercase().replace('_', "."), v))
        })
        .collect();
    out.sort();
    out
}

/// Settings whose values must never reach a log line.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "key.pem", "private"]
        .iter()
        .any(|s| key.contains(s))
}

/// A URL as logs and errors show it: without its password, and without a trailing slash.
pub fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Only fails for URLs that cannot have credentials, which this one has.
        let _ = shown.set_password(Some("***"));
    }
    shown.as_str().trim_end_matches('/').to_owned()
}

pub fn default_home() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("reviewflow");
    }
    home_dir().join(".local/share/reviewflow")
}

pub fn default_cache() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("reviewflow");
    }
    home_dir().join(".cache/reviewflow")
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_variables_become_client_settings() {
        let vars = [
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9092"),
            ("KAFKA_SASL_PASSWORD", "pw"),
            ("KAFKA_HEAP_OPTS", "-Xmx1g"),
            ("DATABASE_URL", "postgres://x"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let got = kafka_client_settings(vars.into_iter());
        assert_eq!(
            got,
            vec![
                ("sasl.password".to_string(), "pw".to_string()),
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
            ]
        );
        assert!(is_secret("sasl.password"));
        assert!(!is_secret("security.protocol"));
    }
}
