//! The command line: one binary whose subcommands are the pipeline's parts and tools.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{
    BenchConfig, CdcConfig, Connections, DbRole, DemoConfig, FraudConfig, ImportConfig,
    MetricsSettings, Settings, StatsConfig, TopicSettings, VerdictsConfig, WorkerSettings,
};
use crate::error::Result;
use crate::stack::{self, StackConfig};
use crate::{api, db, verify};

#[derive(Parser, Debug)]
#[command(
    name = "reviewflow",
    version,
    about = "Live, exact course-review statistics: PostgreSQL -> Kafka -> PostgreSQL"
)]
pub struct Cli {
    #[command(flatten)]
    pub connections: Connections,

    #[command(flatten)]
    pub stack: StackConfig,

    #[command(flatten)]
    pub topics: TopicSettings,

    #[command(flatten)]
    pub workers: WorkerSettings,

    #[command(flatten)]
    pub metrics: MetricsSettings,

    /// Log format: text or json.
    #[arg(
        long,
        env = "REVIEWFLOW_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run every part in one process (on the local stack unless configured otherwise).
    Run {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        cdc: CdcConfig,
        #[command(flatten)]
        fraud: FraudConfig,
        #[command(flatten)]
        stats: StatsConfig,
        #[command(flatten)]
        verdicts: VerdictsConfig,
    },
    /// The REST API: POST /reviews, GET /courses/{id}/stats, GET /healthz.
    Api {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Stream changes of `reviews` from the replication slot into Kafka.
    Cdc {
        #[command(flatten)]
        cdc: CdcConfig,
    },
    /// Score every review version for fraud, exactly-once (Kafka transactions).
    Fraud {
        #[command(flatten)]
        fraud: FraudConfig,
    },
    /// Write reviews.verdicts into review_verdicts, exactly-once (offsets kept in PostgreSQL).
    Verdicts {
        #[command(flatten)]
        verdicts: VerdictsConfig,
    },
    /// Keep course_stats and course_daily_stats, exactly-once (offsets kept in PostgreSQL).
    Stats {
        #[command(flatten)]
        stats: StatsConfig,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// The self-managed local PostgreSQL and Kafka.
    Stack {
        #[command(subcommand)]
        action: StackAction,
    },
    /// Replication slot, lag and worker positions.
    Status {
        /// The slot to report on.
        #[arg(long, env = "REVIEWFLOW_SLOT", default_value = "reviewflow")]
        slot: String,
        /// The publication the slot streams.
        #[arg(long, env = "REVIEWFLOW_PUBLICATION", default_value = "reviewflow")]
        publication: String,
        /// Also show up to this many pending changes (without consuming them).
        #[arg(long, default_value_t = 0)]
        peek: i32,
        /// The fraud workers' consumer group, whose committed offsets are its position.
        #[arg(
            long = "fraud-group",
            env = "REVIEWFLOW_FRAUD_GROUP",
            default_value = "reviewflow-fraud"
        )]
        fraud_group: String,
    },
    /// Compare course_stats with the from-scratch truth; exit 1 on any difference.
    Verify,
    /// Rebuild the derived tables (course_stats, course_daily_stats, course_review_times)
    /// from history, atomically for readers; running stats workers resume after it.
    Replay {
        /// `kafka`: the retained valid changelog; `snapshot`: a fresh consistent snapshot of
        /// `reviews`, judged by the fraud model configured below (also rewrites
        /// review_verdicts: how a new model version is rolled out).
        #[arg(long, value_enum, default_value = "kafka")]
        from: crate::replay::ReplayFrom,
        #[command(flatten)]
        fraud: FraudConfig,
        /// The stats worker's clock shift (its `--clock-shift-days`, for tests of the 90-day
        /// window): the rebuilt figures are those of the day the worker lives in.
        #[arg(
            long,
            env = "REVIEWFLOW_CLOCK_SHIFT_DAYS",
            default_value_t = 0,
            hide = true
        )]
        clock_shift_days: i64,
    },
    /// Import a course's reviews from an API shaped like Udemy's API 2.0 (idempotent).
    Import {
        #[command(flatten)]
        import: ImportConfig,
    },
    /// Write realistic reviews at a steady rate, so the figures move.
    Demo {
        #[command(flatten)]
        demo: DemoConfig,
    },
    /// The whole benchmark on the local stack (saturation, latency, CDC backlog, workers,
    /// memory, beside pg_recvlogical, Kafka's ProducerPerformance and the peers): prints the
    /// figures, writes BENCHMARKS.md and a latency plot (PNG).
    Bench {
        #[command(flatten)]
        bench: BenchConfig,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// Address the HTTP server listens on.
    #[arg(
        id = "api_listen",
        long = "listen",
        value_name = "ADDR",
        env = "API_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,

    /// When set, every write (POST /reviews, and the schema registry's POST, PUT, DELETE)
    /// needs `Authorization: Bearer <token>`; reads stay open. Never logged.
    #[arg(long, env = "API_TOKEN", hide_env_values = true, value_parser = TokenParser)]
    pub api_token: Option<api::ApiToken>,
}

/// Parses the API token without echoing it: clap's own error for a bad value would print it.
#[derive(Clone)]
struct TokenParser;

impl clap::builder::TypedValueParser for TokenParser {
    type Value = api::ApiToken;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> std::result::Result<api::ApiToken, clap::Error> {
        value
            .to_str()
            .ok_or_else(|| "the API token must be visible ASCII characters without spaces".into())
            .and_then(str::parse)
            .map_err(|e: String| {
                clap::Error::raw(
                    clap::error::ErrorKind::InvalidValue,
                    format!("invalid --api-token (API_TOKEN): {e}\n"),
                )
                .with_cmd(cmd)
            })
    }
}

#[derive(Subcommand, Debug, Clone, Copy)]
pub enum StackAction {
    /// Start PostgreSQL and Kafka (fetching Kafka once) and wait until both accept connections.
    Up,
    /// Stop exactly the processes `up` started; data is kept unless --purge.
    Down {
        /// Also delete the stack's data (the PostgreSQL cluster and Kafka's log); the jar cache stays.
        #[arg(long)]
        purge: bool,
    },
    /// Show whether each part of the stack is running, and where.
    Status,
    /// Print the connection settings as shell `export` lines: eval "$(reviewflow stack env)".
    Env,
    /// Create (or renew the passwords of) a login user in each least-privilege group and print
    /// their connection strings as `export` lines (CDC_DATABASE_URL, API_DATABASE_URL,
    /// WORKER_DATABASE_URL): eval "$(reviewflow stack roles)".
    Roles,
    /// Fault injection: kill one part with SIGKILL and start it again.
    Crash {
        #[arg(value_enum)]
        part: stack::Part,
    },
}

impl Cli {
    pub async fn execute(self) -> Result<ExitCode> {
        let shutdown = crate::shutdown::on_signals();
        match self.command {
            Command::Stack { action } => stack_command(action, &self.stack).await,
            Command::Migrate => {
                let settings = self
                    .connections
                    .resolve(&self.stack)
                    .await?
                    .for_role(DbRole::Owner)?;
                let applied = db::migrate(&settings.database_url).await?;
                println!(
                    "migrations applied: {}",
                    if applied.is_empty() {
                        "none (up to date)".into()
                    } else {
                        applied.join(", ")
                    }
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::Api { api } => {
                let settings =
                    prepare(&self.connections, &self.stack, DbRole::Api, &shutdown).await?;
                let run = Box::pin(run_api(&settings, api, shutdown.clone()));
                with_metrics(&self.metrics, &settings, &shutdown, "api", run).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Run {
                api,
                cdc,
                fraud,
                stats,
                verdicts,
            } => {
                let base = prepare(&self.connections, &self.stack, DbRole::Api, &shutdown).await?;
                let settings = base.for_role(DbRole::Api)?;
                let worker = base.for_role(DbRole::Worker)?;
                let cdc_settings = base.for_role(DbRole::Cdc)?;
                let scorer = crate::transform::Fraud {
                    settings: worker.clone(),
                    topics: self.topics.clone(),
                    config: fraud,
                    worker: self.workers.clone(),
                };
                let verdicts = crate::sink::VerdictSink {
                    settings: worker.clone(),
                    topics: self.topics.clone(),
                    worker: self.workers.clone(),
                    config: verdicts,
                };
                let figures = (!stats.topic.is_empty()).then(|| crate::source::Cdc {
                    settings: cdc_settings.clone(),
                    config: cdc.for_course_stats(),
                    topics: TopicSettings {
                        changes: stats.topic.clone(),
                        ..self.topics.clone()
                    },
                });
                let reader = crate::source::Cdc {
                    settings: cdc_settings,
                    config: cdc,
                    topics: self.topics.clone(),
                };
                let aggregator = crate::sink::stats::StatsWorker {
                    settings: worker,
                    topics: self.topics.clone(),
                    worker: self.workers.clone(),
                    config: stats,
                };
                let s = &shutdown;
                let mut stages: Vec<(&str, Stage<'_>)> = vec![
                    ("api", Box::pin(run_api(&settings, api, s.clone()))),
                    ("cdc", Box::pin(reader.run(s.clone()))),
                    ("fraud", Box::pin(scorer.run(s.clone()))),
                    ("verdicts", Box::pin(verdicts.run(s.clone()))),
                    ("stats", Box::pin(aggregator.run(s.clone()))),
                ];
                if let Some(figures) = figures {
                    stages.push(("course-stats", Box::pin(figures.run(s.clone()))));
                }
                if let Some(listen) = self.metrics.listen {
                    let pool = db::pool(&settings.database_url, 1)?;
                    let server = crate::metrics::serve(listen, Some(pool), s.clone());
                    stages.push(("metrics", Box::pin(server)));
                }
                run_together(s, stages).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Verify => {
                let settings =
                    prepare(&self.connections, &self.stack, DbRole::Owner, &shutdown).await?;
                let client = db::connect(&settings.database_url).await?;
                let report = verify::verify(&client).await?;
                for d in &report.differences {
                    println!("{d}");
                }
                println!(
                    "{} courses, {} reviews and {} deleted reviews checked, {} differences",
                    report.courses,
                    report.reviews,
                    report.gone,
                    report.differences.len()
                );
                Ok(if report.differences.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            Command::Cdc { cdc } => {
                let settings =
                    prepare(&self.connections, &self.stack, DbRole::Cdc, &shutdown).await?;
                let stage = crate::source::Cdc {
                    settings: settings.clone(),
                    config: cdc,
                    topics: self.topics,
                };
                let run = Box::pin(stage.run(shutdown.clone()));
                with_metrics(&self.metrics, &settings, &shutdown, "cdc", run).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Fraud { fraud } => {
                let settings =
                    prepare(&self.connections, &self.stack, DbRole::Worker, &shutdown).await?;
                let stage = crate::transform::Fraud {
                    settings: settings.clone(),
                    topics: self.topics,
                    config: fraud,
                    worker: self.workers,
                };
                let run = Box::pin(stage.run(shutdown.clone()));
                with_metrics(&self.metrics, &settings, &shutdown, "fraud", run).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Verdicts { verdicts } => {
                let settings =
                    prepare(&self.connections, &self.stack, DbRole::Worker, &shutdown).await?;
                let stage = crate::sink::VerdictSink {
                    settings: settings.clone(),
                    topics: self.topics,
                    worker: self.workers,
                    config: verdicts,
                };
                let run = Box::pin(stage.run(shutdown.clone()));
                with_metrics(&self.metrics, &settings, &shutdown, "verdicts", run).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Stats { stats } => {
                let settings =
                    prepare(&self.connections, &self.stack, DbRole::Worker, &shutdown).await?;
                let stage = crate::sink::stats::StatsWorker {
                    settings: settings.clone(),
                    topics: self.topics,
                    worker: self.workers,
                    config: stats,
                };
                let run = Box::pin(stage.run(shutdown.clone()));
                with_metrics(&self.metrics, &settings, &shutdown, "stats", run).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Status {
                slot,
                publication,
                peek,
                fraud_group,
            } => {
                let settings =
                    prepare(&self.connections, &self.stack, DbRole::Owner, &shutdown).await?;
                let place = crate::status::Place {
                    topics: &self.topics,
                    slot: &slot,
                    publication: &publication,
                    fraud_group: &fraud_group,
                };
                crate::status::report(&settings, &place, peek).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Replay {
                from,
                fraud,
                clock_shift_days,
            } => {
                if from == crate::replay::ReplayFrom::Snapshot {
                    // A bad model setting fails before anything is touched.
                    crate::transform::score::scorer(fraud.scorer, fraud.fraud_threshold)?;
                }
                let settings =
                    prepare(&self.connections, &self.stack, DbRole::Owner, &shutdown).await?;
                let replay = crate::replay::Replay {
                    settings,
                    topics: self.topics,
                    fraud,
                    owner: format!("replay@{}", self.workers.instance()),
                    clock_shift_days,
                };
                let summary = replay.run(from, &shutdown).await?;
                println!("{summary}");
                Ok(ExitCode::SUCCESS)
            }
            Command::Import { import } => {
                let settings =
                    prepare(&self.connections, &self.stack, DbRole::Api, &shutdown).await?;
                let mut client = db::connect(&settings.database_url).await?;
                let mut summary = crate::import::Summary::default();
                let outcome =
                    crate::import::import(&import, &mut client, &mut summary, &shutdown).await;
                // Partial work is reported too: what was stored stays stored.
                println!("{summary}");
                outcome?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench { bench } => {
                // The bench creates databases and slots: the owner's connection.
                let settings = self
                    .connections
                    .resolve(&self.stack)
                    .await?
                    .for_role(DbRole::Owner)?;
                let command = std::iter::once("reviewflow".to_string())
                    .chain(std::env::args().skip(1))
                    .collect::<Vec<_>>()
                    .join(" ");
                crate::bench::Bench {
                    settings,
                    stack: self.stack.clone(),
                    config: bench,
                    topics: self.topics.clone(),
                }
                .execute(command, shutdown)
                .await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Demo { demo } => {
                let settings =
                    prepare(&self.connections, &self.stack, DbRole::Api, &shutdown).await?;
                let mut client = db::connect(&settings.database_url).await?;
                let wrote = crate::demo::run(&demo, &mut client, &shutdown).await?;
                println!(
                    "demo wrote {} changes: {} inserts, {} edits, {} deletes ({} spammy)",
                    wrote.total(),
                    wrote.inserts,
                    wrote.edits,
                    wrote.deletes,
                    wrote.spam
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

type Stage<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>>;

/// Runs the stages of `run` side by side. One stage ending (failing, or its work done) stops
/// the others: a half-running pipeline would look healthy. The first failure is returned.
async fn run_together(shutdown: &CancellationToken, stages: Vec<(&str, Stage<'_>)>) -> Result<()> {
    let results =
        futures_util::future::join_all(stages.into_iter().map(|(name, stage)| async move {
            let result = stage.await;
            if let Err(e) = &result {
                tracing::error!(stage = name, error = %e, "stage failed; stopping the others");
            }
            shutdown.cancel();
            result
        }))
        .await;
    results.into_iter().collect()
}

/// A stage run alone, beside its metrics server when `--metrics-listen` is set (the two
/// stop together, like the stages of `run`).
async fn with_metrics(
    metrics: &MetricsSettings,
    settings: &Settings,
    shutdown: &CancellationToken,
    name: &'static str,
    stage: Stage<'_>,
) -> Result<()> {
    let Some(listen) = metrics.listen else {
        return stage.await;
    };
    // One connection at most, opened by a scrape: for the slots' gauges.
    let pool = db::pool(&settings.database_url, 1)?;
    let server = crate::metrics::serve(listen, Some(pool), shutdown.clone());
    run_together(shutdown, vec![(name, stage), ("metrics", Box::pin(server))]).await
}

/// Every part starts by resolving its connections and applying the migrations (as the
/// owner; a part given only its own role's URL waits until they are applied instead), and,
/// on a secured Kafka, by checking its credentials. Returns the settings as `role` connects.
async fn prepare(
    connections: &Connections,
    stack: &StackConfig,
    role: DbRole,
    shutdown: &CancellationToken,
) -> Result<Settings> {
    let settings = connections.resolve(stack).await?;
    let mine = settings.for_role(role)?;
    match &settings.owner_url {
        Some(owner) => {
            let applied = db::migrate(owner).await?;
            if !applied.is_empty() {
                tracing::info!(?applied, "migrations applied");
            }
        }
        None => db::wait_until_migrated(&mine.database_url, shutdown).await?,
    }
    crate::kafka::check_access(&settings.kafka).await?;
    Ok(mine)
}

async fn run_api(settings: &Settings, args: ApiArgs, shutdown: CancellationToken) -> Result<()> {
    let pool = db::pool(&settings.database_url, 16)?;
    api::serve(
        args.listen,
        api::AppState::new(pool, &settings.database_url),
        args.api_token,
        shutdown,
    )
    .await
}

async fn stack_command(action: StackAction, cfg: &StackConfig) -> Result<ExitCode> {
    match action {
        StackAction::Up => {
            let info = stack::up(cfg).await?;
            println!("local stack is up (data in {})", cfg.home().display());
            println!("  postgres: {}", info.database_url);
            println!("  kafka:    {}", info.kafka_bootstrap_servers);
            if let Ok((address, user, _)) = stack::kafka_sasl(cfg) {
                println!(
                    "  kafka SASL_PLAINTEXT (PLAIN, user {user}, password in {}): {address}",
                    cfg.home().join("kafka/sasl.password").display()
                );
            }
            if let Ok((address, ca)) = stack::kafka_sasl_ssl(cfg) {
                println!(
                    "  kafka SASL_SSL (the same user; ssl.ca.location {}): {address}",
                    ca.display()
                );
            }
            println!("use it from a shell with: eval \"$(reviewflow stack env)\"");
        }
        StackAction::Down { purge } => {
            stack::down(cfg).await?;
            if purge {
                stack::purge(cfg)?;
                println!("local stack is down and its data deleted");
            } else {
                println!(
                    "local stack is down (data kept in {})",
                    cfg.home().display()
                );
            }
        }
        StackAction::Status => {
            let mut all_up = true;
            for (part, state) in stack::status(cfg) {
                match state {
                    Ok(address) => println!("{part:<9} running  {address}"),
                    Err(_) => {
                        all_up = false;
                        println!("{part:<9} stopped");
                    }
                }
            }
            return Ok(if all_up {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            });
        }
        StackAction::Env => print!("{}", stack::info(cfg).await?.exports()),
        StackAction::Roles => {
            for (role, url) in stack::roles(cfg).await? {
                println!("export {}='{url}'", role.variable());
            }
        }
        StackAction::Crash { part } => {
            stack::crash(cfg, part).await?;
            println!("{part:?} was killed and is running again");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_token_is_not_printed_with_the_arguments() {
        let cli =
            Cli::try_parse_from(["reviewflow", "api", "--api-token", "hunter2-s3cret"]).unwrap();
        let Command::Api { api } = &cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert!(api.api_token.is_some());
        let shown = format!("{cli:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn a_bad_api_token_is_refused_without_being_echoed() {
        let e = Cli::try_parse_from(["reviewflow", "api", "--api-token", "hunter2 s3cret"])
            .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        let shown = e.to_string();
        assert!(
            shown.contains("API_TOKEN") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}

#[cfg(test)]
mod command_line_tests {
    /// clap checks a command's arguments only when it is built: every subcommand, `run`
    /// (which flattens every stage's settings) included, must build without a clash.
    #[test]
    fn every_subcommand_builds() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}

#[cfg(test)]
mod listen_tests {
    use clap::Parser;

    /// The api's address and the metrics server's are two settings: one must not fill the
    /// other (they once shared an argument id, and `run` then bound the same port twice).
    #[test]
    fn the_api_address_does_not_become_the_metrics_address() {
        let cli = super::Cli::parse_from(["reviewflow", "run", "--listen", "127.0.0.1:18555"]);
        assert_eq!(cli.metrics.listen, None);
        let super::Command::Run { api, .. } = cli.command else {
            panic!("run parses as run")
        };
        assert_eq!(api.listen.to_string(), "127.0.0.1:18555");
    }
}
