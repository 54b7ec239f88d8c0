//! The pipeline's stages as the command line runs them: `run` is the list of all of them,
//! `cdc`, `fraud`, `verdicts`, `stats` and `api` a list of one. Each stage is built here and
//! only here, from its own arguments and the shared settings.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiArgs};
use crate::config::{DbRole, Settings, TopicSettings};
use crate::error::Result;
use crate::sink::{StatsConfig, VerdictsConfig};
use crate::source::CdcConfig;
use crate::transform::FraudConfig;
use crate::{db, sink, source, transform};

use super::{connect, Context};

/// One stage of the pipeline, with its own arguments.
#[derive(Debug)]
pub(super) enum Stage {
    /// The REST API.
    Api(ApiArgs),
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
        cdc: CdcConfig,
        fraud: FraudConfig,
        stats: StatsConfig,
        verdicts: VerdictsConfig,
    ) -> Vec<Stage> {
        let course_stats = (!stats.topic.is_empty()).then(|| Stage::CourseStats {
            cdc: cdc.clone(),
            topic: stats.topic.clone(),
        });
        let mut stages = vec![
            Stage::Api(api),
            Stage::Cdc(cdc),
            Stage::Fraud(fraud),
            Stage::Verdicts(verdicts),
            Stage::Stats(stats),
        ];
        stages.extend(course_stats);
        stages
    }

    fn name(&self) -> &'static str {
        match self {
            Stage::Api(_) => "api",
            Stage::Cdc(_) => "cdc",
            Stage::Fraud(_) => "fraud",
            Stage::Verdicts(_) => "verdicts",
            Stage::Stats(_) => "stats",
            Stage::CourseStats { .. } => "course-stats",
        }
    }

    /// As whom the stage connects to PostgreSQL.
    fn role(&self) -> DbRole {
        match self {
            Stage::Api(_) => DbRole::Api,
            Stage::Cdc(_) | Stage::CourseStats { .. } => DbRole::Cdc,
            Stage::Fraud(_) | Stage::Verdicts(_) | Stage::Stats(_) => DbRole::Worker,
        }
    }

    /// Runs the stage until `shutdown` (or until it fails).
    async fn run(
        self,
        settings: Settings,
        cx: &Context,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let (topics, worker) = (cx.topics.clone(), cx.workers.clone());
        match self {
            Stage::Api(args) => {
                let pool = db::pool(&settings.database_url, 16)?;
                let state = api::AppState::new(pool, &settings.database_url);
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

type Running<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// Runs `stages` side by side in this process, beside the metrics server when
/// `--metrics-listen` is set. The migrations come first, as the first stage's role; every
/// stage's connection is resolved before any starts, so a missing one starts nothing.
pub(super) async fn run(cx: &Context, stages: Vec<Stage>) -> Result<ExitCode> {
    let first = stages.first().map_or(DbRole::Owner, Stage::role);
    let deployment = connect::prepare(cx, first).await?;
    let shutdown = &cx.shutdown;
    let mut running: Vec<(&str, Running<'_>)> = Vec::new();
    for stage in stages {
        let settings = deployment.settings(stage.role())?;
        let name = stage.name();
        running.push((name, Box::pin(stage.run(settings, cx, shutdown.clone()))));
    }
    if let Some(listen) = cx.metrics.listen {
        // One connection at most, opened by a scrape: for the slots' gauges.
        let pool = db::pool(deployment.url(first)?, 1)?;
        let server = crate::metrics::serve(listen, Some(pool), shutdown.clone());
        running.push(("metrics", Box::pin(server)));
    }
    if running.len() == 1 {
        // A stage alone is simply awaited.
        running.pop().expect("one stage").1.await?;
    } else {
        run_together(shutdown, running).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One stage ending (failing, or its work done) stops the others: a half-running pipeline
/// would look healthy. The first failure is returned.
async fn run_together(
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
