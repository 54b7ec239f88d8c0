//! `reviewflow bench`: the whole benchmark in one run on one machine, against the limits of
//! the machine (pg_recvlogical, Kafka's ProducerPerformance) and the peers a user would pick
//! (Debezium, Kafka Streams), on the same data. It prints the figures and writes the report
//! (Markdown) and a latency plot (PNG).
//!
//! Order: a private database with one review per course; the CDC backlog (one slot per
//! consumer, created before the backlog is written, so each drains the same changes); the
//! fraud and stats workers alone on that backlog (then `verify`); then the whole pipeline,
//! every stage a child process, for saturation and latency (a backlog drain last); then the
//! CDC's further rounds, with nothing downstream running.
//!
//! Guarantee: whatever happens (failure, Ctrl-C), the run's processes are stopped, its slots
//! dropped, its database dropped and its topics deleted before it returns.

mod args;
mod cdc;
mod drain;
mod latency;
mod load;
mod locks;
mod machine;
mod peers;
mod pipeline;
mod plot;
mod probe;
mod procs;
mod report;
mod waits;
mod website;
mod workers;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Settings, TopicSettings};
use crate::error::{Error, Result};
use crate::stack::StackConfig;
pub use args::BenchConfig;
use procs::Stage;
use report::Report;
use waits::{check, spinner, timed, wait_until};

pub struct Bench {
    pub settings: Settings,
    pub stack: StackConfig,
    pub config: BenchConfig,
    pub topics: TopicSettings,
}

/// Sizes of the phases, from the flags or the full/quick defaults.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sizes {
    pub quick: bool,
    pub courses: u64,
    pub backlog: u64,
    pub saturation_secs: u64,
    pub warmup_secs: u64,
    pub rates: Vec<u64>,
    pub latency_secs: u64,
    /// Runs of each latency rate.
    pub rounds: u64,
    /// Seconds of probes at each rate of the website-shaped phase.
    pub website_secs: u64,
    /// Reviews written but not yet in course_stats that the saturation writer allows.
    pub in_flight: u64,
    /// Saturation measured again with two instances of each worker.
    pub scale_out: bool,
}

impl Sizes {
    fn from(c: &BenchConfig) -> Result<Self> {
        let q = c.quick;
        let backlog = c.backlog.unwrap_or(if q { 20_000 } else { 1_000_000 });
        let latency_secs = c.latency_secs.unwrap_or(if q { 4 } else { 15 });
        if !backlog.is_multiple_of(100) {
            return Err(Error::Config(format!(
                "--backlog {backlog}: use a multiple of 100 (transactions of 100 rows)"
            )));
        }
        Ok(Sizes {
            quick: q,
            courses: c.courses.unwrap_or(if q { 2_000 } else { 100_000 }),
            backlog,
            saturation_secs: c.saturation_secs.unwrap_or(if q { 6 } else { 60 }),
            warmup_secs: if q { 2 } else { 5 },
            rates: if c.rates.is_empty() {
                if q {
                    vec![500, 2_000]
                } else {
                    vec![1_000, 2_500, 5_000, 10_000]
                }
            } else {
                c.rates.clone()
            },
            latency_secs,
            website_secs: if q { 3 } else { latency_secs },
            rounds: c.rounds.unwrap_or(if q { 1 } else { 3 }),
            in_flight: if q { 5_000 } else { 20_000 },
            scale_out: c.scale_out.unwrap_or(!q),
        })
    }
}

/// What a phase needs: where things are, and what to clean up.
pub(crate) struct Run {
    /// Settings pointing at the bench database.
    settings: Settings,
    stack: StackConfig,
    config: BenchConfig,
    sizes: Sizes,
    partitions: i32,
    admin_url: String,
    db: String,
    /// Prefix of the run's topics and groups, e.g. `bench.1764064000`.
    id: String,
    slot: String,
    dir: PathBuf,
    stages: BTreeMap<String, Stage>,
    /// Slots created by the run (the cdc stage's included).
    slots: Vec<String>,
    http: reqwest::Client,
    /// Peak RSS (KiB) per stage and phase.
    memory: Vec<(String, &'static str, u64)>,
    postgres_pid: Option<i32>,
    kafka_pid: Option<i32>,
}

impl Bench {
    /// Runs the benchmark, writes the report and the plot, and prints the figures.
    pub async fn execute(self, command: String, shutdown: CancellationToken) -> Result<Report> {
        let quick = PathBuf::from("target/bench-quick");
        let (report_path, plot_path) = match self.config.quick {
            false => (
                PathBuf::from("BENCHMARKS.md"),
                PathBuf::from("benchmarks-latency.png"),
            ),
            true => (
                quick.join("BENCHMARKS.md"),
                quick.join("benchmarks-latency.png"),
            ),
        };
        let report_path = self.config.report.clone().unwrap_or(report_path);
        let plot_path = self.config.plot.clone().unwrap_or(plot_path);
        if let Some(dir) = report_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io_path("create", dir, e))?;
        }
        let json_path = self.config.json.clone();
        let mut report = self.run(shutdown).await?;
        report.command = command;
        report.plot = relative_to(&plot_path, &report_path);
        let title = format!(
            "reviewflow: commit to course_stats ({} cores, PostgreSQL {}, Kafka {})",
            report.machine.cores, report.machine.postgres, report.machine.kafka
        );
        plot::latency(&report.latency, &report.website, &title, &plot_path)?;
        std::fs::write(&report_path, report.markdown())
            .map_err(|e| Error::io_path("write", &report_path, e))?;
        if let Some(path) = &json_path {
            let json = serde_json::to_string_pretty(&report)
                .map_err(|e| Error::Config(format!("the report as JSON: {e}")))?;
            std::fs::write(path, json).map_err(|e| Error::io_path("write", path, e))?;
        }
        print!("{}", report.text());
        println!(
            "report: {}; plot: {}",
            report_path.display(),
            plot_path.display()
        );
        Ok(report)
    }

    async fn run(self, shutdown: CancellationToken) -> Result<Report> {
        let sizes = Sizes::from(&self.config)?;
        let stamp = chrono::Utc::now().timestamp();
        let id = format!("bench.{stamp}");
        let (base, _) = self
            .settings
            .database_url
            .rsplit_once('/')
            .ok_or_else(|| Error::Config("DATABASE_URL must end in /<database>".into()))?;
        let db = self.config.database.clone();
        if !db
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(Error::Config(format!(
                "--bench-database {db:?}: use lower-case letters, digits and _"
            )));
        }
        let dir = std::env::temp_dir().join(format!("reviewflow-{}", id.replace('.', "-")));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io_path("create", &dir, e))?;
        let (postgres_pid, kafka_pid) = crate::stack::pids(&self.stack);
        let mut run = Run {
            settings: Settings {
                database_url: format!("{base}/{db}"),
                ..self.settings.clone()
            },
            admin_url: format!("{base}/postgres"),
            stack: self.stack.clone(),
            config: self.config.clone(),
            partitions: self.topics.partitions,
            slot: format!("{db}_cdc"),
            db,
            id,
            dir,
            stages: BTreeMap::new(),
            slots: Vec::new(),
            http: reqwest::Client::new(),
            memory: Vec::new(),
            postgres_pid,
            kafka_pid,
            sizes,
        };
        let mut report = Report::new(
            machine::Machine::read(&run.admin_url, &self.stack).await?,
            run.sizes.clone(),
        );
        let outcome = run.phases(&mut report, &shutdown).await;
        let cleaned = run.cleanup().await;
        match (&outcome, &cleaned) {
            (Err(_), _) => {
                tracing::error!(logs = %run.dir.display(), "bench failed; the stages' logs are kept")
            }
            (Ok(()), Ok(())) => {
                let _ = std::fs::remove_dir_all(&run.dir);
            }
            (Ok(()), Err(_)) => {}
        }
        outcome?;
        cleaned?;
        report.memory = run.memory.clone();
        Ok(report)
    }
}

impl Run {
    async fn phases(&mut self, report: &mut Report, shutdown: &CancellationToken) -> Result<()> {
        self.setup().await?;
        check(shutdown)?;
        let mut cdc = cdc::run(self, shutdown).await?;
        report.cdc = Some(cdc.clone());
        check(shutdown)?;
        let (fraud, stats) = workers::run(self, shutdown).await?;
        report.fraud = Some(fraud);
        report.stats = Some(stats);
        check(shutdown)?;
        let live = pipeline::run(self, shutdown).await?;
        report.saturation = Some(live.saturation);
        report.scale_out = live.scale_out;
        report.latency = live.latency;
        report.website = live.website;
        report.drain = Some(live.drain);
        check(shutdown)?;
        cdc::more_rounds(self, &mut cdc, shutdown).await?;
        report.cdc = Some(cdc);
        Ok(())
    }

    /// A fresh database with the schema and one review per course.
    async fn setup(&mut self) -> Result<()> {
        let admin = crate::db::connect(&self.admin_url).await?;
        drop_slots(&admin, &self.db).await?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db))
            .await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {}", self.db))
            .await?;
        crate::db::migrate(&self.settings.database_url).await?;
        self.create_topics().await?;
        let bar = spinner(format!("seeding {} courses", self.sizes.courses));
        let client = crate::db::connect(&self.settings.database_url).await?;
        load::seed(&client, self.sizes.courses).await?;
        bar.finish_and_clear();
        tracing::info!(database = %self.db, courses = self.sizes.courses, "bench database ready");
        Ok(())
    }

    /// The run's topics, as the stages would create them, created first (ensure_topic waits
    /// until the brokers show their partitions), so no stage's start includes creating one.
    async fn create_topics(&self) -> Result<()> {
        let kafka = &self.settings.kafka;
        let history = crate::kafka::HISTORY_SETTINGS;
        for (name, partitions, settings) in [
            ("changes", self.partitions, history),
            ("changes.snapshots", 1, &[("cleanup.policy", "compact")][..]),
            ("valid", self.partitions, history),
            ("fraud", self.partitions, history),
            ("verdicts", self.partitions, history),
            ("dead-letters", self.partitions, &[][..]),
        ] {
            crate::kafka::ensure_topic(
                kafka,
                &self.topic(name),
                partitions,
                crate::kafka::CLUSTER_REPLICATION,
                settings,
            )
            .await?;
        }
        Ok(())
    }

    /// The environment of every stage: the bench database, the run's topics and groups.
    fn stage_env(&self) -> Vec<(String, String)> {
        let id = &self.id;
        let group = id.replace('.', "-");
        [
            ("DATABASE_URL", self.settings.database_url.clone()),
            (
                "KAFKA_BOOTSTRAP_SERVERS",
                self.settings.kafka.bootstrap_servers.clone(),
            ),
            ("REVIEWFLOW_SLOT", self.slot.clone()),
            ("REVIEWFLOW_CHANGES_TOPIC", format!("{id}.changes")),
            ("REVIEWFLOW_VALID_TOPIC", format!("{id}.valid")),
            ("REVIEWFLOW_FRAUD_TOPIC", format!("{id}.fraud")),
            ("REVIEWFLOW_VERDICTS_TOPIC", format!("{id}.verdicts")),
            ("REVIEWFLOW_DEAD_LETTER_TOPIC", format!("{id}.dead-letters")),
            ("REVIEWFLOW_STATS_TOPIC", String::new()),
            ("REVIEWFLOW_FRAUD_GROUP", format!("{group}-fraud")),
            ("REVIEWFLOW_STATS_GROUP", format!("{group}-stats")),
            ("REVIEWFLOW_VERDICTS_GROUP", format!("{group}-verdicts")),
            ("REVIEWFLOW_INSTANCE", group.clone()),
            ("REVIEWFLOW_TOPIC_PARTITIONS", self.partitions.to_string()),
            ("REVIEWFLOW_STATUS_INTERVAL", "1".into()),
            ("API_LISTEN", self.api_address().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(
            self.settings
                .schema_registry_url
                .iter()
                .map(|u| ("SCHEMA_REGISTRY_URL".to_string(), u.clone())),
        )
        .collect()
    }

    fn api_address(&self) -> std::net::SocketAddr {
        // Fixed per run: chosen once, so the registry URL handed to a peer stays valid.
        static API: std::sync::OnceLock<std::net::SocketAddr> = std::sync::OnceLock::new();
        *API.get_or_init(|| procs::free_address().unwrap_or(([127, 0, 0, 1], 18099).into()))
    }

    fn topic(&self, name: &str) -> String {
        format!("{}.{name}", self.id)
    }

    fn group(&self, stage: &str) -> String {
        format!("{}-{stage}", self.id.replace('.', "-"))
    }

    fn start(&mut self, stage: &str) -> Result<()> {
        let started = procs::start(stage, stage, &self.stage_env(), &self.dir)?;
        self.stages.insert(stage.to_string(), started);
        Ok(())
    }

    /// Starts instance `n` (2, 3, ...) of a worker, in the same group as the first: its own
    /// instance name (so its own transactional id and sink_offsets owner), named `<stage>-<n>`.
    fn start_instance(&mut self, stage: &str, n: u32) -> Result<()> {
        let name = format!("{stage}-{n}");
        let env: Vec<(String, String)> = self
            .stage_env()
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "REVIEWFLOW_INSTANCE" => (k, format!("{v}-{n}")),
                _ => (k, v),
            })
            .collect();
        let started = procs::start(stage, &name, &env, &self.dir)?;
        self.stages.insert(name, started);
        Ok(())
    }

    /// A counter summed over every running instance of `stage` (`stage`, `stage-2`, ...).
    async fn counter_sum(&self, stage: &str, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let instances: Vec<&String> = self
            .stages
            .keys()
            .filter(|k| {
                k.as_str() == stage
                    || k.strip_prefix(stage)
                        .and_then(|rest| rest.strip_prefix('-'))
                        .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .collect();
        let mut sum = 0.0;
        for instance in instances {
            sum += self.counter(instance, name, labels).await?;
        }
        Ok(sum)
    }

    fn stage(&mut self, name: &str) -> Result<&mut Stage> {
        self.stages
            .get_mut(name)
            .ok_or_else(|| Error::Config(format!("bench: stage {name} is not running")))
    }

    /// Fails when any running stage has exited.
    fn check_stages(&mut self) -> Result<()> {
        self.stages.values_mut().try_for_each(Stage::check)
    }

    /// A counter from a running stage's /metrics.
    async fn counter(&self, stage: &str, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let at = self
            .stages
            .get(stage)
            .ok_or_else(|| Error::Config(format!("bench: stage {stage} is not running")))?
            .metrics;
        // A stage just started serves /metrics a moment later.
        let mut tries = 0;
        loop {
            match probe::counter(&self.http, at, name, labels).await {
                Ok(v) => return Ok(v),
                Err(e) if tries >= 100 => return Err(e),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Stops a stage, keeping its peak RSS for the report.
    async fn stop(&mut self, name: &str, phase: &'static str) -> Result<()> {
        if let Some(stage) = self.stages.remove(name) {
            self.memory
                .push((name.to_string(), phase, stage.peak_rss_kb()));
            stage.stop().await?;
        }
        Ok(())
    }

    async fn stop_all(&mut self, phase: &'static str) -> Result<()> {
        let names: Vec<String> = self.stages.keys().cloned().collect();
        let mut first = Ok(());
        for name in names {
            let stopped = self.stop(&name, phase).await;
            if first.is_ok() {
                first = stopped;
            }
        }
        first
    }

    /// PostgreSQL's CPU seconds so far (postmaster and backends), when the stack is ours.
    fn postgres_cpu(&self) -> Option<f64> {
        self.postgres_pid.map(procs::tree_cpu_secs)
    }

    fn kafka_cpu(&self) -> Option<f64> {
        self.kafka_pid.map(procs::tree_cpu_secs)
    }

    async fn create_slot(&mut self, name: &str) -> Result<()> {
        let client = crate::db::connect(&self.settings.database_url).await?;
        self.slots.push(name.to_string());
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&name],
            )
            .await?;
        Ok(())
    }

    async fn drop_slot(&mut self, name: &str) -> Result<()> {
        let client = crate::db::connect(&self.admin_url).await?;
        drop_slot_when_free(&client, name).await?;
        self.slots.retain(|s| s != name);
        Ok(())
    }

    /// Stops everything the run started, drops its slots and database, deletes its topics.
    async fn cleanup(&mut self) -> Result<()> {
        let bar = spinner("cleaning up (processes, slots, database, topics)".into());
        let stopped = self.stop_all("cleanup").await;
        let dropped = async {
            let admin = crate::db::connect(&self.admin_url).await?;
            drop_slots(&admin, &self.db).await?;
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db))
                .await?;
            Ok::<_, Error>(())
        }
        .await;
        let prefixes = vec![
            format!("{}.", self.id),
            format!("{}-", self.id.replace('.', "-")),
        ];
        let topics = probe::delete_topics(&self.settings.kafka, &prefixes).await;
        bar.finish_and_clear();
        if let Err(e) = &topics {
            tracing::warn!(error = %e, "could not delete the run's topics");
        }
        stopped.and(dropped)
    }
}

/// `plot` as the report links it: relative to the report's folder when it is inside it.
fn relative_to(plot: &std::path::Path, report: &std::path::Path) -> String {
    let dir = report.parent().unwrap_or(std::path::Path::new(""));
    plot.strip_prefix(dir)
        .unwrap_or(plot)
        .to_string_lossy()
        .into_owned()
}

/// Drops every replication slot of `db`, waiting for a just-stopped reader to let go.
async fn drop_slots(admin: &tokio_postgres::Client, db: &str) -> Result<()> {
    let rows = admin
        .query(
            "SELECT slot_name::text FROM pg_replication_slots WHERE database = $1",
            &[&db],
        )
        .await?;
    for row in rows {
        let name: String = row.get(0);
        drop_slot_when_free(admin, &name).await?;
    }
    Ok(())
}

async fn drop_slot_when_free(admin: &tokio_postgres::Client, name: &str) -> Result<()> {
    for _ in 0..200 {
        let row = admin
            .query_opt(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await?;
        match row {
            None => return Ok(()),
            Some(r) => {
                let holder: Option<i32> = r.get(0);
                if let Some(pid) = holder {
                    // A reader we started and stopped may take a moment to let go; a
                    // leftover one (an interrupted peer) is ended.
                    admin
                        .execute("SELECT pg_terminate_backend($1)", &[&pid])
                        .await?;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                admin
                    .execute("SELECT pg_drop_replication_slot($1)", &[&name])
                    .await?;
                tracing::debug!(slot = name, "dropped");
                return Ok(());
            }
        }
    }
    Err(Error::Replication(format!(
        "slot {name} stayed in use; drop it with SELECT pg_drop_replication_slot('{name}')"
    )))
}
