//! The pipeline's stages as the command line runs them: `run` is the list of all of them
//! (supervised: see `supervise`), `cdc`, `fraud`, `verdicts`, `stats` and `api` a list of
//! one. Each stage is built here and only here, from its own arguments and the shared
//! settings.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiArgs};
use crate::config::{DbRole, Deployment, Settings, TopicSettings, WorkerSettings};
use crate::error::Result;
use crate::sink::{StatsConfig, VerdictsConfig};
use crate::source::CdcConfig;
use crate::tools::status::report::Watched;
use crate::transform::FraudConfig;
use crate::{db, sink, source, transform};

use super::{connect, Context};

/// One stage of the pipeline, with its own arguments.
#[derive(Debug, Clone)]
pub(super) enum Stage {
    /// The REST API, and the pipeline its GET /pipeline shows.
    Api(ApiArgs, Watched),
    /// The CDC reader of `reviews`.
    Cdc(CdcConfig),
    /// The fraud stage: judges every review version.
    Fraud(FraudConfig),
    /// The verdict sink.
    Verdicts(VerdictsConfig),
    /// The stats worker.
    Stats(StatsConfig),
    /// The second CDC reader of `run`: course_stats into the compacted stats topic.
    CourseStats { cdc: CdcConfig, topic: String },
}

impl Stage {
    /// Every stage, as `run` starts them; the stats topic's reader only when it is named.
    pub(super) fn pipeline(
        api: ApiArgs,
        mut cdc: CdcConfig,
        fraud: FraudConfig,
        stats: StatsConfig,
        verdicts: VerdictsConfig,
    ) -> Vec<Stage> {
        cdc.fraud_group = fraud.group.clone();
        let course_stats = (!stats.topic.is_empty()).then(|| Stage::CourseStats {
            cdc: cdc.clone(),
            topic: stats.topic.clone(),
        });
        // The page of `run` shows the pipeline it runs.
        let watched = Watched {
            slot: cdc.slot.clone(),
            publication: cdc.publication.clone(),
            fraud_group: fraud.group.clone(),
        };
        let mut stages = vec![
            Stage::Api(api, watched),
            Stage::Cdc(cdc),
            Stage::Fraud(fraud),
            Stage::Verdicts(verdicts),
            Stage::Stats(stats),
        ];
        stages.extend(course_stats);
        stages
    }

    /// Its name in the logs, in GET /healthz and in the metrics' `stage` label: the name its
    /// own restart loop reports under (`Cdc::stage`, the sinks' consumer names).
    pub(super) fn name(&self) -> &'static str {
        match self {
            Stage::Api(..) => "api",
            Stage::Cdc(_) => "cdc",
            Stage::Fraud(_) => "fraud",
            Stage::Verdicts(_) => "verdicts",
            Stage::Stats(_) => "stats",
            Stage::CourseStats { .. } => "cdc-course_stats",
        }
    }

    /// The API is what `run` is reached through: without it nothing could even say that a
    /// stage stopped, so it is not supervised, and its failure ends `run`.
    pub(super) fn is_api(&self) -> bool {
        matches!(self, Stage::Api(..))
    }

    /// As whom the stage connects to PostgreSQL.
    fn role(&self) -> DbRole {
        match self {
            Stage::Api(..) => DbRole::Api,
            Stage::Cdc(_) | Stage::CourseStats { .. } => DbRole::Cdc,
            Stage::Fraud(_) | Stage::Verdicts(_) | Stage::Stats(_) => DbRole::Worker,
        }
    }

    /// Runs the stage until `shutdown` (or until it fails). Owns all it uses, so that `run`
    /// can start it as a task of its own, again after a failure.
    pub(super) async fn run(
        self,
        settings: Settings,
        topics: TopicSettings,
        worker: WorkerSettings,
        shutdown: CancellationToken,
    ) -> Result<()> {
        match self {
            Stage::Api(args, watched) => {
                let pool = db::pool(&settings.database_url, 16)?;
                let state = api::AppState::new(pool, &settings.database_url)
                    .with_cors(&args.cors_origins)
                    .watching(watched.place(topics), settings.kafka.clone());
                api::serve(args.listen, state, args.api_token, shutdown).await
            }
            Stage::Cdc(config) => {
                let reader = source::Cdc {
                    settings,
                    config,
                    topics,
                };
                reader.run(shutdown).await
            }
            Stage::CourseStats { cdc, topic } => {
                let reader = source::Cdc {
                    settings,
                    config: cdc.for_course_stats(),
                    topics: TopicSettings {
                        changes: topic,
                        ..topics
                    },
                };
                reader.run(shutdown).await
            }
            Stage::Fraud(config) => {
                let fraud = transform::Fraud {
                    settings,
                    topics,
                    config,
                    worker,
                };
                fraud.run(shutdown).await
            }
            Stage::Verdicts(config) => {
                let sink = sink::VerdictSink {
                    settings,
                    topics,
                    worker,
                    config,
                };
                sink.run(shutdown).await
            }
            Stage::Stats(config) => {
                let stats = sink::stats::StatsWorker {
                    settings,
                    topics,
                    worker,
                    config,
                };
                stats.run(shutdown).await
            }
        }
    }
}

pub(super) type Running<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// The connections of a list of stages, resolved before any starts, so a missing one starts
/// nothing. The migrations come first, as the first stage's role.
pub(super) struct Prepared {
    pub deployment: Deployment,
    /// The first stage's role: the metrics server's connection.
    pub first: DbRole,
    /// Each stage with its own role's settings.
    pub stages: Vec<(Stage, Settings)>,
}

pub(super) async fn prepare(cx: &Context, stages: Vec<Stage>) -> Result<Prepared> {
    let first = stages.first().map_or(DbRole::Owner, Stage::role);
    let deployment = connect::prepare(cx, first).await?;
    let mut ready = Vec::with_capacity(stages.len());
    for stage in stages {
        let settings = deployment.settings(stage.role())?;
        ready.push((stage, settings));
    }
    Ok(Prepared {
        deployment,
        first,
        stages: ready,
    })
}

impl Prepared {
    /// The metrics server, when `--metrics-listen` is set.
    pub(super) fn metrics_server(
        &self,
        cx: &Context,
    ) -> Result<Option<(&'static str, Running<'static>)>> {
        let Some(listen) = cx.metrics.listen else {
            return Ok(None);
        };
        // One connection at most, opened by a scrape: for the slots' gauges.
        let pool = db::pool(self.deployment.url(self.first)?, 1)?;
        let server = crate::metrics::serve(listen, Some(pool), cx.shutdown.clone());
        Ok(Some(("metrics", Box::pin(server))))
    }
}

/// Runs `stages` side by side in this process, beside the metrics server when
/// `--metrics-listen` is set: how a single-stage command runs, whose exit code is its stage's.
pub(super) async fn run(cx: &Context, stages: Vec<Stage>) -> Result<ExitCode> {
    let prepared = prepare(cx, stages).await?;
    let shutdown = &cx.shutdown;
    let mut running: Vec<(&str, Running<'_>)> = Vec::new();
    running.extend(prepared.metrics_server(cx)?);
    for (stage, settings) in prepared.stages {
        let name = stage.name();
        let future = stage.run(
            settings,
            cx.topics.clone(),
            cx.workers.clone(),
            shutdown.clone(),
        );
        running.push((name, Box::pin(future)));
    }
    if running.len() == 1 {
        // A stage alone is simply awaited.
        running.pop().expect("one stage").1.await?;
    } else {
        run_together(shutdown, running).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One stage ending (failing, or its work done) stops the others: a half-running set of
/// them would look healthy. The first failure is returned.
pub(super) async fn run_together(
    shutdown: &CancellationToken,
    stages: Vec<(&str, Running<'_>)>,
) -> Result<()> {
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
