//! The one place configuration is read: command-line flags, each backed by an environment
//! variable. When neither PostgreSQL nor Kafka is configured, the self-managed local stack
//! (see `stack`) provides both.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::stack::{self, StackConfig};

/// Where the pipeline's dependencies live, and as whom each stage connects.
#[derive(clap::Args, Clone, Default)]
pub struct Connections {
    /// PostgreSQL connection string of the database owner, who applies the migrations; the
    /// stages use it too unless given their own below. Unset (with none of those either)
    /// means the local stack's. TLS: `sslmode` (disable, prefer, require, verify-ca,
    /// verify-full), `sslrootcert`, `sslcert`, `sslkey`, as in libpq.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Connection string of `cdc`: a login in group reviewflow_cdc with REPLICATION.
    #[arg(
        id = "cdc_database_url",
        long = "cdc-database-url",
        env = "CDC_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub cdc_database_url: Option<String>,

    /// Connection string of `api`, `import` and `demo`: a login in group reviewflow_api.
    #[arg(
        id = "api_database_url",
        long = "api-database-url",
        env = "API_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub api_database_url: Option<String>,

    /// Connection string of `fraud`, `verdicts` and `stats`: a login in group reviewflow_worker.
    #[arg(
        id = "worker_database_url",
        long = "worker-database-url",
        env = "WORKER_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub worker_database_url: Option<String>,

    /// Kafka bootstrap servers; unset means the local stack's. Other `KAFKA_*` variables are
    /// passed to the Kafka clients as settings (KAFKA_SECURITY_PROTOCOL -> security.protocol).
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", global = true)]
    pub kafka_bootstrap_servers: Option<String>,

    /// A librdkafka properties file (`key=value` lines, `#` comments) for every Kafka client:
    /// security.protocol, sasl.*, ssl.*. KAFKA_* variables and --kafka-option win over it.
    #[arg(
        id = "kafka_properties",
        long = "kafka-properties",
        value_name = "FILE",
        env = "REVIEWFLOW_KAFKA_PROPERTIES",
        global = true
    )]
    pub kafka_properties: Option<PathBuf>,

    /// One librdkafka setting for every Kafka client, as KEY=VALUE (repeatable); wins over
    /// the properties file and KAFKA_* variables. Secret values are never logged.
    #[arg(
        id = "kafka_option",
        long = "kafka-option",
        value_name = "KEY=VALUE",
        global = true,
        value_parser = ClientSettingParser
    )]
    pub kafka_options: Vec<ClientSetting>,

    /// A Confluent-compatible schema registry; unset means reviewflow's own.
    #[arg(long, env = "SCHEMA_REGISTRY_URL", global = true)]
    pub schema_registry_url: Option<String>,
}

/// One Kafka client setting; its value is hidden from Debug output when it is secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSetting {
    pub key: String,
    pub value: String,
}

impl std::fmt::Debug for ClientSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, shown_setting(&self.key, &self.value))
    }
}

/// Parses KEY=VALUE without echoing a bad value: clap's own error would print it, and it may
/// be a password.
#[derive(Clone)]
struct ClientSettingParser;

impl clap::builder::TypedValueParser for ClientSettingParser {
    type Value = ClientSetting;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> std::result::Result<ClientSetting, clap::Error> {
        let parsed = value
            .to_str()
            .and_then(|v| v.split_once('='))
            .and_then(|(k, v)| {
                let key = k.trim();
                (!key.is_empty() && !key.contains(char::is_whitespace)).then(|| ClientSetting {
                    key: key.to_owned(),
                    value: v.to_owned(),
                })
            });
        parsed.ok_or_else(|| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                "invalid --kafka-option: write it as KEY=VALUE, such as \
                 --kafka-option security.protocol=SASL_SSL\n",
            )
            .with_cmd(cmd)
        })
    }
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = |u: &Option<String>| u.as_deref().map(redact_url);
        f.debug_struct("Connections")
            .field("database_url", &url(&self.database_url))
            .field("cdc_database_url", &url(&self.cdc_database_url))
            .field("api_database_url", &url(&self.api_database_url))
            .field("worker_database_url", &url(&self.worker_database_url))
            .field("kafka_bootstrap_servers", &self.kafka_bootstrap_servers)
            .field("kafka_properties", &self.kafka_properties)
            .field("kafka_options", &self.kafka_options)
            .field("schema_registry_url", &url(&self.schema_registry_url))
            .finish()
    }
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

    /// When the slot is gone or invalidated after its snapshot was sent, or holds changes
    /// written without before images (REPLICA IDENTITY was not FULL): create a new one and
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
#[derive(clap::Args, Clone)]
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

impl std::fmt::Debug for ImportConfig {
    /// The URL may carry `user:password@` for basic authentication.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportConfig")
            .field("course", &self.course)
            .field("url", &redact_url(&self.url))
            .field("page_size", &self.page_size)
            .field("attempts", &self.attempts)
            .finish()
    }
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

/// `reviewflow bench`: how big and how long each phase is. Unset sizes take the full run's
/// figures, or the quick form's with `--quick`.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchConfig {
    /// The quick form: small backlog, short phases (a smoke run of every figure, ~1 minute).
    #[arg(id = "bench_quick", long = "quick")]
    pub quick: bool,

    /// Do not run the peers (Debezium, Kafka Streams); their lines say "skipped".
    #[arg(id = "bench_skip_peers", long = "skip-peers")]
    pub skip_peers: bool,

    /// Courses in the data (one review each before the run) [default: 100000; quick: 2000].
    #[arg(id = "bench_courses",
        value_name = "N", long = "courses", value_parser = clap::value_parser!(u64).range(100..=10_000_000))]
    pub courses: Option<u64>,

    /// Changes in the CDC backlog [default: 1000000; quick: 20000]; a multiple of 100.
    #[arg(id = "bench_backlog",
        value_name = "N", long = "backlog", value_parser = clap::value_parser!(u64).range(100..=100_000_000))]
    pub backlog: Option<u64>,

    /// Seconds the saturation phase is measured for [default: 60; quick: 6].
    #[arg(id = "bench_saturation_secs",
        value_name = "SECS", long = "saturation-secs", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub saturation_secs: Option<u64>,

    /// Offered rates of the latency phases, reviews per second [default: 1000,2500,5000,10000;
    /// quick: 500,2000].
    #[arg(id = "bench_rates",
        value_name = "RATES", long = "rates", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub rates: Vec<u64>,

    /// Seconds of load at each latency rate (less when the courses run out: each course gets
    /// one review per rate) [default: 15; quick: 4].
    #[arg(id = "bench_latency_secs",
        value_name = "SECS", long = "latency-secs", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub latency_secs: Option<u64>,

    /// The private database the run creates and drops.
    #[arg(
        id = "bench_database",
        value_name = "NAME",
        long = "bench-database",
        env = "REVIEWFLOW_BENCH_DATABASE",
        default_value = "rf_bench"
    )]
    pub database: String,

    /// Where the report is written (Markdown) [default: BENCHMARKS.md; quick:
    /// target/bench-quick/BENCHMARKS.md, so a smoke run never replaces the real report].
    #[arg(id = "bench_report", value_name = "PATH", long = "report")]
    pub report: Option<PathBuf>,

    /// Where the latency plot is written (PNG) [default: benchmarks-latency.png; quick:
    /// target/bench-quick/benchmarks-latency.png].
    #[arg(id = "bench_plot", value_name = "PATH", long = "plot")]
    pub plot: Option<PathBuf>,

    /// Also write every figure as JSON here (for scripts and tests).
    #[arg(id = "bench_json", value_name = "PATH", long = "json")]
    pub json: Option<PathBuf>,

    /// The peers' runner (`<dir>/run debezium|streams ...`).
    #[arg(
        id = "bench_peers_dir",
        value_name = "DIR",
        long = "peers-dir",
        env = "REVIEWFLOW_BENCH_PEERS",
        default_value = "bench/peers"
    )]
    pub peers_dir: PathBuf,

    /// Longest a peer may take, in seconds.
    #[arg(
        id = "bench_peer_timeout",
        value_name = "SECS",
        long = "peer-timeout-s",
        default_value_t = 600
    )]
    pub peer_timeout_secs: u64,

    /// Changes of the valid topic the Kafka Streams peer consumes (its first ones; the
    /// stats worker consumes all): 91 window updates per change make the peer slow enough
    /// that the whole topic would take most of the run.
    #[arg(
        id = "bench_streams_records",
        value_name = "N",
        long = "streams-records",
        default_value_t = 100_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub streams_records: u64,
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

    /// How long a batch lingers for more records once it has one, in milliseconds: the
    /// latency it may add. 0 takes what has arrived, so a batch is what came in while the
    /// previous one was processed (small under light load, full under a backlog).
    #[arg(
        long = "batch-ms",
        env = "REVIEWFLOW_BATCH_MS",
        default_value_t = 0,
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

/// As whom a part connects to PostgreSQL: the owner (migrations and the operator's tools:
/// migrate, verify, replay, status) or one of the least-privilege roles (see `db::roles`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbRole {
    Owner,
    /// cdc: replication, and reads of the published tables.
    Cdc,
    /// api, import, demo: writes reviews, reads the figures.
    Api,
    /// fraud, verdicts, stats: writes the figures, verdicts and offsets.
    Worker,
}

impl DbRole {
    /// The variable that gives this role's connection string.
    pub fn variable(self) -> &'static str {
        match self {
            DbRole::Owner => "DATABASE_URL",
            DbRole::Cdc => "CDC_DATABASE_URL",
            DbRole::Api => "API_DATABASE_URL",
            DbRole::Worker => "WORKER_DATABASE_URL",
        }
    }
}

/// Resolved connection settings, ready for the stages.
#[derive(Clone)]
pub struct Settings {
    /// The connection string this part uses: after `for_role`, its role's (or the owner's
    /// when the role has none); before, the owner's (empty when only roles are configured).
    pub database_url: String,
    /// The owner's connection string (DATABASE_URL, or the local stack's): migrations run
    /// with it. None when only the stages' own roles are configured.
    pub owner_url: Option<String>,
    pub role_urls: RoleUrls,
    pub kafka: KafkaSettings,
    pub schema_registry_url: Option<String>,
}

/// The stages' own connection strings (None: they use the owner's).
#[derive(Clone, Default)]
pub struct RoleUrls {
    pub cdc: Option<String>,
    pub api: Option<String>,
    pub worker: Option<String>,
}

impl Settings {
    /// These settings as the part of `role` uses them: `database_url` is its role's.
    pub fn for_role(&self, role: DbRole) -> Result<Settings> {
        let own = match role {
            DbRole::Owner => None,
            DbRole::Cdc => self.role_urls.cdc.clone(),
            DbRole::Api => self.role_urls.api.clone(),
            DbRole::Worker => self.role_urls.worker.clone(),
        };
        let url = own.or_else(|| self.owner_url.clone()).ok_or_else(|| {
            Error::Config(match role {
                DbRole::Owner => "this command runs as the tables' owner: set DATABASE_URL".into(),
                _ => format!(
                    "no PostgreSQL connection for this part: set {} (or DATABASE_URL)",
                    role.variable()
                ),
            })
        })?;
        Ok(Settings {
            database_url: url,
            ..self.clone()
        })
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = |u: &Option<String>| u.as_deref().map(redact_url);
        f.debug_struct("Settings")
            .field("database_url", &redact_url(&self.database_url))
            .field("owner_url", &url(&self.owner_url))
            .field("cdc_url", &url(&self.role_urls.cdc))
            .field("api_url", &url(&self.role_urls.api))
            .field("worker_url", &url(&self.role_urls.worker))
            .field("kafka", &self.kafka)
            .field("schema_registry_url", &url(&self.schema_registry_url))
            .finish()
    }
}

#[derive(Clone)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    /// librdkafka settings: the properties file, then `KAFKA_*` variables, then
    /// `--kafka-option`s (a later one of the same key wins).
    pub client: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let client: Vec<String> = self
            .client
            .iter()
            .map(|(k, v)| format!("{k}={}", shown_setting(k, v)))
            .collect();
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("client", &client)
            .finish()
    }
}

impl KafkaSettings {
    /// The value of a client setting, as the clients will see it.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.client
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl Connections {
    /// Fills what is missing from the local stack, starting it when it is not up. The
    /// database counts as configured when DATABASE_URL or any stage's own URL is set.
    pub async fn resolve(&self, stack: &StackConfig) -> Result<Settings> {
        let role_urls = RoleUrls {
            cdc: non_empty(&self.cdc_database_url),
            api: non_empty(&self.api_database_url),
            worker: non_empty(&self.worker_database_url),
        };
        let roles_only =
            role_urls.cdc.is_some() || role_urls.api.is_some() || role_urls.worker.is_some();
        let (owner_url, bootstrap_servers) =
            match (&self.database_url, &self.kafka_bootstrap_servers) {
                (Some(db), Some(kafka)) => (Some(db.clone()), kafka.clone()),
                (None, Some(kafka)) if roles_only => (None, kafka.clone()),
                (db, kafka) => {
                    tracing::info!(home = %stack.home().display(), "using the local stack");
                    let local = stack::up(stack).await?;
                    let owner = match db {
                        Some(db) => Some(db.clone()),
                        None if roles_only => None,
                        None => Some(local.database_url),
                    };
                    (
                        owner,
                        kafka.clone().unwrap_or(local.kafka_bootstrap_servers),
                    )
                }
            };
        if owner_url.as_deref().is_some_and(|u| u.trim().is_empty()) {
            return Err(Error::Config("DATABASE_URL is empty".into()));
        }
        let mut client = match &self.kafka_properties {
            Some(path) => read_properties(path)?,
            None => Vec::new(),
        };
        client.extend(kafka_client_settings(std::env::vars()));
        client.extend(
            self.kafka_options
                .iter()
                .map(|o| (o.key.clone(), o.value.clone())),
        );
        Ok(Settings {
            database_url: owner_url.clone().unwrap_or_default(),
            owner_url,
            role_urls,
            kafka: KafkaSettings {
                bootstrap_servers,
                client,
            },
            schema_registry_url: self.schema_registry_url.clone(),
        })
    }
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.trim().is_empty())
}

/// A librdkafka properties file: `key=value` lines; blank lines and `#` or `!` comments
/// are skipped. Errors name the line, never its value.
pub fn read_properties(path: &std::path::Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io_path("read the Kafka properties file", path, e))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| {
            Error::Config(format!(
                "{} line {}: expected key=value",
                path.display(),
                n + 1
            ))
        })?;
        out.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(out)
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

/// Settings whose values must never reach a log line: sasl.password, ssl.key.password,
/// ssl.key.pem, sasl.oauthbearer.client.secret, ...
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "key.pem",
        "private",
        "jaas",
        "credential",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// A setting's value as logs show it.
pub fn shown_setting<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret(key) {
        "***"
    } else {
        value
    }
}

/// A connection string as logs and errors show it: the password of a URL
/// (`scheme://user:***@host`) or of a key=value string (`password=***`) hidden.
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        // The authority ends at the first '/', '?' or '#'; a password may contain '@'.
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let mut shown = match authority.rfind('@') {
            Some(at) => match authority[..at].find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &authority[..colon],
                    &authority[at..]
                ),
                None => format!("{}{authority}", &url[..scheme_end + 3]),
            },
            None => format!("{}{authority}", &url[..scheme_end + 3]),
        };
        // A password may also be a query parameter.
        let tail = &rest[authority_end..];
        match tail.split_once('?') {
            Some((path, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|p| match p.split_once('=') {
                        Some((k, _)) if is_secret(k) || k == "sslpassword" => format!("{k}=***"),
                        _ => p.to_owned(),
                    })
                    .collect();
                shown.push_str(path);
                shown.push('?');
                shown.push_str(&query.join("&"));
            }
            None => shown.push_str(tail),
        }
        return shown;
    }
    url.split_whitespace()
        .map(|token| match token.split_once('=') {
            Some((k, _)) if is_secret(k) => format!("{k}=***"),
            _ => token.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
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
        assert!(is_secret("ssl.key.password"));
        assert!(is_secret("sasl.oauthbearer.client.secret"));
        assert!(!is_secret("security.protocol"));
        assert!(!is_secret("sasl.username"));
    }

    #[test]
    fn connection_strings_lose_their_passwords() {
        for (url, shown) in [
            (
                "postgres://rf:s3cr@t@127.0.0.1:5432/db?sslmode=require",
                "postgres://rf:***@127.0.0.1:5432/db?sslmode=require",
            ),
            ("postgres://h/db", "postgres://h/db"),
            (
                "postgres://u@h/db?password=s3cr",
                "postgres://u@h/db?password=***",
            ),
            ("host=h user=u password=s3cr", "host=h user=u password=***"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }

    #[test]
    fn debug_output_hides_every_secret() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct Only {
            #[command(flatten)]
            c: Connections,
        }
        let only = Only::parse_from([
            "t",
            "--database-url",
            "postgres://o:owner-s3cret@h/db",
            "--api-database-url",
            "postgres://a:api-s3cret@h/db",
            "--kafka-option",
            "sasl.password=kafka-s3cret",
            "--kafka-option",
            "sasl.username=alice",
        ]);
        let shown = format!("{only:?}");
        for secret in ["owner-s3cret", "api-s3cret", "kafka-s3cret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("sasl.username=alice"), "{shown}");
        let settings = Settings {
            database_url: "postgres://o:owner-s3cret@h/db".into(),
            owner_url: Some("postgres://o:owner-s3cret@h/db".into()),
            role_urls: RoleUrls {
                cdc: Some("host=h password=cdc-s3cret".into()),
                ..RoleUrls::default()
            },
            kafka: KafkaSettings {
                bootstrap_servers: "b:9092".into(),
                client: vec![("ssl.key.password".into(), "key-s3cret".into())],
            },
            schema_registry_url: None,
        };
        let shown = format!("{settings:?}");
        for secret in ["owner-s3cret", "cdc-s3cret", "key-s3cret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn a_bad_kafka_option_is_refused_without_being_echoed() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct Only {
            #[command(flatten)]
            c: Connections,
        }
        let e = Only::try_parse_from(["t", "--kafka-option", "sasl.password:hunter2"]).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn each_role_falls_back_to_the_owner() {
        let settings = Settings {
            database_url: String::new(),
            owner_url: None,
            role_urls: RoleUrls {
                cdc: Some("postgres://cdc@h/db".into()),
                ..RoleUrls::default()
            },
            kafka: KafkaSettings {
                bootstrap_servers: "b".into(),
                client: vec![],
            },
            schema_registry_url: None,
        };
        assert_eq!(
            settings.for_role(DbRole::Cdc).unwrap().database_url,
            "postgres://cdc@h/db"
        );
        let e = settings.for_role(DbRole::Api).unwrap_err().to_string();
        assert!(e.contains("API_DATABASE_URL"), "{e}");
        let owned = Settings {
            owner_url: Some("postgres://o@h/db".into()),
            ..settings
        };
        assert_eq!(
            owned.for_role(DbRole::Worker).unwrap().database_url,
            "postgres://o@h/db"
        );
        assert_eq!(
            owned.for_role(DbRole::Cdc).unwrap().database_url,
            "postgres://cdc@h/db"
        );
    }
}
