//! GET /pipeline, the operator's page, and GET /pipeline.json, what it polls to stay live.
//! One view, two parts: what the database and Kafka show (the slot, each worker's position
//! per partition, the dead letters), the same [`PipelineReport`] `reviewflow status`
//! prints; and what only this process knows (the health of the stages it runs, their counts
//! and rates, the commit-to-course_stats latency), read back from the registry /metrics
//! serves. A process that runs no stage (`reviewflow api`) says so instead of guessing.

mod page;
pub mod process;

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::Json;
use serde::Serialize;

use crate::config::KafkaSettings;
use crate::tools::status::{PipelineReport, Place};

use super::AppState;

/// Which pipeline the page watches, and the readings its rates come from.
#[derive(Clone, Default)]
pub struct Watch {
    place: Option<Arc<(Place, KafkaSettings)>>,
    readings: process::Readings,
}

impl Watch {
    pub fn new(place: Place, kafka: KafkaSettings) -> Self {
        Watch {
            place: Some(Arc::new((place, kafka))),
            readings: process::Readings::default(),
        }
    }
}

/// The body of GET /pipeline.json.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineView {
    #[serde(flatten)]
    pub report: PipelineReport,
    pub process: process::ProcessView,
}

/// The view now. Never an error: what cannot be read is named in `unknown`.
pub async fn read(state: &AppState) -> PipelineView {
    let process = state.pipeline.readings.view();
    let report = match &state.pipeline.place {
        None => PipelineReport::unknown(
            "this API was not told which pipeline to watch (`reviewflow api` and `run` tell it)",
        ),
        Some(place) => {
            let client = state.pool.get().await;
            let pg = client.as_ref().ok().map(|c| &***c);
            let mut report = PipelineReport::gather(pg, &place.1, &place.0, 0).await;
            if let Err(e) = &client {
                report
                    .unknown
                    .insert(0, format!("the slot and the sinks' offsets: database: {e}"));
            }
            report
        }
    };
    let mut view = PipelineView { report, process };
    if !view.process.runs_stages {
        view.report.unknown.push(
            "stage health, events per second and latency: this process runs no stage; they are \
             known to the process that runs each (`reviewflow run` shows them on its own \
             /pipeline; a stage run alone serves them at /metrics with --metrics-listen)"
                .into(),
        );
    }
    view
}

/// GET /pipeline.json.
pub async fn json(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(read(&state).await),
    )
}

/// GET /pipeline: the page; its script renders /pipeline.json, then polls it.
pub async fn html() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(page::page()))
}
