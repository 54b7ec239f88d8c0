//! The command line: one binary whose subcommands are the pipeline's parts and tools. The
//! `Command` enum is the table of contents; each group of commands has its file:
//!
//! - `stages`: the pipeline's stages, one `Stage` each, built in one place for `run` and
//!   for the commands that run a single stage;
//! - `supervise`: how `run` keeps the API and the other stages up when one stage fails;
//! - `connect`: resolving the connections (starting the local stack when no URL is given),
//!   the migrations and the Kafka access check every part starts with;
//! - `tools`: the operator's tools (migrate, status, verify, replay, import);
//! - `dev`: the developer's tools (demo, bench);
//! - `stack`: the self-managed local stack.

mod connect;
mod dev;
mod stack;
mod stages;
mod supervise;
mod tools;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::api::ApiArgs;
use crate::config::{Connections, MetricsSettings, TopicSettings, WorkerSettings};
use crate::dev::demo::DemoConfig;
use crate::error::Result;
use crate::sink::{StatsConfig, VerdictsConfig};
use crate::source::CdcConfig;
use crate::stack::StackConfig;
use crate::tools::import::ImportConfig;
use crate::tools::status::report::Watched;
use crate::transform::FraudConfig;

pub use stack::StackAction;
use stages::Stage;

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
    /// The REST API: POST /reviews, GET /courses/{id}/stats, GET /healthz, the pages.
    Api {
        #[command(flatten)]
        api: ApiArgs,
        /// The pipeline its GET /pipeline page shows.
        #[command(flatten)]
        watched: Watched,
    },
    /// Stream changes of `reviews` from the replication slot into Kafka.
    Cdc {
        #[command(flatten)]
        cdc: CdcConfig,
        /// The fraud workers' consumer group: after partitions are added, cdc waits until it
        /// (and the stats worker) applied the old partitions before writing across the new.
        #[arg(
            long = "fraud-group",
            env = "REVIEWFLOW_FRAUD_GROUP",
            default_value = crate::transform::args::DEFAULT_GROUP
        )]
        fraud_group: String,
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
    /// Replication slot, lag, worker positions, and the state of `run`'s stages.
    Status {
        #[command(flatten)]
        watched: Watched,
        /// Also show up to this many pending changes (without consuming them).
        #[arg(long, default_value_t = 0)]
        peek: i32,
        /// The API of a `reviewflow run`, asked (GET /healthz) for the state of each stage
        /// it runs: the states live in that process, which alone knows them now.
        #[arg(
            long,
            env = "REVIEWFLOW_API_URL",
            default_value = "http://127.0.0.1:8080"
        )]
        api_url: String,
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
        from: crate::tools::replay::ReplayFrom,
        #[command(flatten)]
        fraud: FraudConfig,
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
    #[cfg(feature = "bench")]
    Bench {
        #[command(flatten)]
        bench: crate::dev::bench::BenchConfig,
    },
    /// The benchmark, which this build leaves out: build with `--features bench`.
    #[cfg(not(feature = "bench"))]
    #[command(hide = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
}

/// What every command shares: the global flags, and the token that signals stop.
struct Context {
    connections: Connections,
    stack: StackConfig,
    topics: TopicSettings,
    workers: WorkerSettings,
    metrics: MetricsSettings,
    shutdown: CancellationToken,
}

impl Cli {
    pub async fn execute(self) -> Result<ExitCode> {
        let cx = Context {
            connections: self.connections,
            stack: self.stack,
            topics: self.topics,
            workers: self.workers,
            metrics: self.metrics,
            shutdown: crate::shutdown::on_signals(),
        };
        match self.command {
            Command::Run {
                api,
                cdc,
                fraud,
                stats,
                verdicts,
            } => supervise::run(&cx, Stage::pipeline(api, cdc, fraud, stats, verdicts)).await,
            Command::Api { api, watched } => stages::run(&cx, vec![Stage::Api(api, watched)]).await,
            Command::Cdc {
                mut cdc,
                fraud_group,
            } => {
                cdc.fraud_group = fraud_group;
                stages::run(&cx, vec![Stage::Cdc(cdc)]).await
            }
            Command::Fraud { fraud } => stages::run(&cx, vec![Stage::Fraud(fraud)]).await,
            Command::Verdicts { verdicts } => {
                stages::run(&cx, vec![Stage::Verdicts(verdicts)]).await
            }
            Command::Stats { stats } => stages::run(&cx, vec![Stage::Stats(stats)]).await,
            Command::Migrate => tools::migrate(&cx).await,
            Command::Stack { action } => stack::execute(action, &cx.stack).await,
            Command::Status {
                watched,
                peek,
                api_url,
            } => {
                let place = watched.place(cx.topics.clone());
                tools::status(&cx, &place, &api_url, peek).await
            }
            Command::Verify => tools::verify(&cx).await,
            Command::Replay { from, fraud } => tools::replay(&cx, from, fraud).await,
            Command::Import { import } => tools::import(&cx, import).await,
            Command::Demo { demo } => dev::demo(&cx, demo).await,
            #[cfg(feature = "bench")]
            Command::Bench { bench } => dev::bench(&cx, bench).await,
            #[cfg(not(feature = "bench"))]
            Command::Bench { .. } => dev::no_bench(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_token_is_not_printed_with_the_arguments() {
        let cli =
            Cli::try_parse_from(["reviewflow", "api", "--api-token", "hunter2-s3cret"]).unwrap();
        let Command::Api { api, .. } = &cli.command else {
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
