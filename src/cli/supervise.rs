//! `run` supervises its stages: a stage that fails does not stop the others, and above all
//! not the API, whose writes wait in the replication slot until cdc reads them again.
//!
//! Each worker stage (cdc, fraud, the sinks, the stats topic's reader) runs as a task of its
//! own, in the shared restart loop (`retry::sessions`): a failure a new session may cure
//! (including a panic, which the task turns into an error) restarts the stage after the
//! shared backoff; one that needs a person (a refused setting, a lost slot) leaves it
//! stopped, its error's message, which names the fix, logged and shown by GET /healthz. The
//! stages' own sessions report to the same place, so a stage restarting a session against a
//! broker that went away shows as restarting too.
//!
//! The API and the metrics server are not supervised: they are how the process is seen, so
//! their failure ends `run`, as before, for the orchestrator to restart it. SIGTERM and
//! Ctrl-C cancel the one token: the API stops, and every stage drains its batch and returns.

use std::future::Future;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::{Settings, TopicSettings, WorkerSettings};
use crate::error::Result;

use super::stages::{self, Running, Stage};
use super::Context;

/// Runs `stages` (the API among them) until shutdown or until the API fails; see the module.
pub(super) async fn run(cx: &Context, stages: Vec<Stage>) -> Result<ExitCode> {
    let prepared = stages::prepare(cx, stages).await?;
    let shutdown = &cx.shutdown;
    let mut faces: Vec<(&str, Running<'_>)> = Vec::new();
    faces.extend(prepared.metrics_server(cx)?);
    let mut workers = Vec::new();
    for (stage, settings) in prepared.stages {
        let (topics, worker) = (cx.topics.clone(), cx.workers.clone());
        if stage.is_api() {
            let api = stage.run(settings, topics, worker, shutdown.clone());
            faces.push(("api", Box::pin(api)));
        } else {
            let supervised = supervise(stage, settings, topics, worker, shutdown.clone());
            workers.push(tokio::spawn(supervised));
        }
    }
    let result = stages::run_together(shutdown, faces).await;
    // The API ended (shutdown, or its failure): the stages drain and stop with it.
    shutdown.cancel();
    for worker in workers {
        if let Err(e) = worker.await {
            tracing::error!(error = %e, "a stage's supervisor failed");
        }
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// One stage, restarted after failures a new session may cure, until shutdown or until one
/// needs a person.
async fn supervise(
    stage: Stage,
    settings: Settings,
    topics: TopicSettings,
    worker: WorkerSettings,
    shutdown: CancellationToken,
) {
    let name = stage.name();
    restarted(name, &shutdown, || {
        let attempt = stage.clone();
        attempt.run(
            settings.clone(),
            topics.clone(),
            worker.clone(),
            shutdown.clone(),
        )
    })
    .await;
}

/// Runs `start()`'s stage in the shared restart loop, each attempt a task of its own: a
/// panic in a stage is then its failure, restarted like any other, not the process's.
async fn restarted<F, Fut>(name: &str, shutdown: &CancellationToken, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let result = crate::retry::sessions(name, shutdown, || {
        let attempt = tokio::spawn(start());
        async move { attempt.await? }
    })
    .await;
    if let Err(e) = result {
        tracing::error!(
            stage = name,
            error = %e,
            "stage failed and stays stopped until the fix is made and run restarted; \
             the API and the other stages keep running"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A stage that panics is restarted; when it then fails on a refused setting it stays
    /// stopped, the setting's message as the reason.
    #[tokio::test]
    async fn a_panicking_stage_restarts_and_a_refused_one_stays_stopped() {
        let attempts = Arc::new(AtomicU32::new(0));
        let counted = attempts.clone();
        restarted("unit-supervised", &CancellationToken::new(), move || {
            let attempt = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if attempt == 1 {
                    panic!("a bug in the stage");
                }
                Err(crate::Error::Config("refused: set X".into()))
            }
        })
        .await;
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        let report = &crate::health::stages()["unit-supervised"];
        assert_eq!(report.state, "stopped");
        assert_eq!(
            report.reason.as_deref(),
            Some("configuration: refused: set X")
        );
        let text = crate::metrics::encode(&[]);
        assert!(
            text.contains("reviewflow_stage_restarts_total{stage=\"unit-supervised\"} 1\n"),
            "{text}"
        );
    }
}
