//! `reviewflow status`: where every stage is. The slot (state, WAL held, time lag, pending
//! changes peeked from a copy), then each worker's position and lag per partition: the fraud
//! group's committed offsets on the changes topic, and the sinks' offsets kept in PostgreSQL;
//! then the dead-letter topic. All of that is a [`PipelineReport`], which the pipeline page
//! (GET /pipeline) shows too. Last, the state of each stage of a `reviewflow run`, as its
//! API's GET /healthz tells: the states live in that process (src/health.rs), which alone
//! knows them as they are; a table written by it would still say "running" after the process
//! was killed.
//! Read-only: nothing is consumed, committed or claimed.

pub mod report;

use std::time::Duration;

use crate::config::Settings;
use crate::error::{Error, Result};

pub use report::{PipelineReport, Place};

pub async fn report(settings: &Settings, place: &Place, api_url: &str, peek: i32) -> Result<()> {
    let client = crate::db::connect(&settings.database_url).await?;
    let report = PipelineReport::gather(Some(&client), &settings.kafka, place, peek).await;
    for line in report.lines(peek) {
        println!("{line}");
    }
    for line in stage_lines(api_url).await {
        println!("{line}");
    }
    if report.unknown.is_empty() {
        Ok(())
    } else {
        Err(Error::Command {
            what: "status".into(),
            detail: format!("could not read all of it: {}", report.unknown.join("; ")),
        })
    }
}

impl PipelineReport {
    /// What `status` prints of the report: the slot, `peek` of its waiting changes, the
    /// workers' positions, the dead letters.
    pub fn lines(&self, peek: i32) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(slot) = &self.slot {
            out.extend(slot.lines());
            if peek > 0 && slot.created {
                out.push(format!("pending changes (first {peek}, not consumed):"));
                out.extend(slot.pending.iter().map(|l| format!("  {l}")));
            }
        }
        out.push(
            "workers (position, topic end, records behind; a transaction's commit marker takes an offset):"
                .into(),
        );
        out.extend(self.positions.iter().map(report::Position::line));
        if self.positions.is_empty() {
            out.push("  none has started yet".into());
        }
        out.extend(self.restating.clone());
        if let Some(dead) = &self.dead_letters {
            out.extend(dead.lines());
        }
        out.extend(self.unknown.iter().map(|u| format!("unknown: {u}")));
        out
    }
}

/// The stages of the `run` serving `api_url`, one line each, from its GET /healthz. A run
/// that does not answer is said so, not an error: stages run alone are not in any run.
pub async fn stage_lines(api_url: &str) -> Vec<String> {
    let url = format!("{}/healthz", api_url.trim_end_matches('/'));
    let asked = async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        http.get(&url).send().await?.json::<Health>().await
    };
    match asked.await {
        Ok(health) if health.stages.is_empty() => {
            vec![format!("stages ({url}): {}, runs no stage", health.status)]
        }
        Ok(health) => {
            let mut out = vec![format!("stages ({url}): {}", health.status)];
            out.extend(health.stages.iter().map(|(name, s)| s.line(name)));
            out
        }
        Err(e) => vec![format!(
            "stages: no `reviewflow run` answered at {url} ({}); name its API with --api-url \
             (REVIEWFLOW_API_URL)",
            crate::error::causes(&e)
        )],
    }
}

/// The part of GET /healthz that `status` shows.
#[derive(serde::Deserialize)]
struct Health {
    status: String,
    #[serde(default)]
    stages: std::collections::BTreeMap<String, crate::health::StageReport>,
}
