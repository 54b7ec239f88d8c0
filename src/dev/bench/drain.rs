//! Live reviews during a backlog drain: what a website's reviews suffer while the pipeline
//! catches up after cdc was down. With the rest of the pipeline running, cdc is stopped, a
//! backlog of N inserts is written (the slot keeps it), and cdc is started again; from then on
//! a probe commits one review every 50 ms on a private course (as the website phase does)
//! until every backlog change reached course_stats, and each probe is timed from its COMMIT
//! returning to its course_stats notification. The changes of a partition are applied in
//! order, so a probe waits behind the backlog written before it: its latency is about the
//! drain time left, and the figure says how long a live review is late after an outage.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::latency::{Listener, RatePoint};
use super::load::{self, Writer};
use super::pipeline::reached;
use super::website::{point, probe_while, probes_text, PROBE_EVERY};
use super::{spinner, Run};
use crate::error::{Error, Result};

/// Longest the drain may take before the bench gives up on it.
const LIMIT: Duration = Duration::from_secs(1800);
/// How often the stages' counters are read while the probes run.
const CHECK_EVERY: Duration = Duration::from_millis(500);

#[derive(Clone, Debug, serde::Serialize)]
pub struct DrainPoint {
    /// Changes written while cdc was stopped.
    pub backlog: u64,
    /// Seconds the backlog took to write (cdc stopped).
    pub write_secs: f64,
    /// Seconds from cdc's start until the whole backlog reached course_stats.
    pub drain_secs: f64,
    /// The probes during the drain (`offered` is the probes per second).
    #[serde(flatten)]
    pub probes: RatePoint,
    /// Probes neither visible nor flagged.
    pub missing: u64,
}

impl DrainPoint {
    pub fn rate(&self) -> f64 {
        self.backlog as f64 / self.drain_secs.max(1e-9)
    }

    pub fn line(&self) -> String {
        use super::report::thousands;
        format!(
            "latency during a backlog drain of {} changes (drained in {:.1} s, {}/s; {}",
            thousands(self.backlog as f64),
            self.drain_secs,
            thousands(self.rate()),
            probes_text(&self.probes, self.missing)
        )
    }
}

/// Runs the drain with every stage of the live pipeline up; probes take courses from `probes`.
pub async fn measure(
    run: &mut Run,
    listener: &mut Listener,
    probes: &mut std::ops::RangeFrom<i64>,
    shutdown: &CancellationToken,
) -> Result<DrainPoint> {
    let backlog = run.sizes.backlog;
    let url = run.settings.database_url.clone();
    run.stop("cdc", "pipeline").await?;
    let base = reached(run).await?;
    let bar = spinner(format!(
        "drain: writing a backlog of {backlog} changes while cdc is stopped"
    ));
    let wrote = Instant::now();
    load::backlog(&crate::db::connect(&url).await?, backlog, run.sizes.courses).await?;
    let write_secs = wrote.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let bar = spinner(format!(
        "drain: cdc started on a backlog of {backlog}; a live probe every 50 ms until it is applied"
    ));
    let probe = Writer::new(crate::db::connect(&url).await?).await?;
    run.start("cdc")?;
    let started = Instant::now();
    listener.clear();
    let target = base + backlog;
    let mut next_check = Instant::now();
    let r: &Run = run;
    let probed = probe_while(probe, listener, probes, shutdown, || {
        let check = Instant::now() >= next_check;
        if check {
            next_check = Instant::now() + CHECK_EVERY;
        }
        let elapsed = started.elapsed();
        async move {
            if elapsed > LIMIT {
                return Err(Error::Command {
                    what: "the backlog drain".into(),
                    detail: format!("not applied within {} s", LIMIT.as_secs()),
                });
            }
            Ok(!check || reached(r).await? < target)
        }
    })
    .await;
    bar.finish_and_clear();
    let (mut pending, probing_for) = probed?;
    let drain_secs = started.elapsed().as_secs_f64();
    run.check_stages()?;
    pending.settle(listener, shutdown).await?;
    let (probes, missing) = point(
        &url,
        &pending,
        1_000 / PROBE_EVERY.as_millis() as u64,
        probing_for,
    )
    .await?;
    let drained = DrainPoint {
        backlog,
        write_secs,
        drain_secs,
        probes,
        missing,
    };
    tracing::info!(
        backlog,
        drain_secs,
        p50_ms = drained.probes.p50_ms,
        p99_ms = drained.probes.p99_ms,
        "latency during a backlog drain"
    );
    Ok(drained)
}
