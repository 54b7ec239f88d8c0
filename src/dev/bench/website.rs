//! The website-shaped latency phase: the load a review site makes, beside the bench's own
//! latency phase (kept for continuity). A background task writes demo's mix (inserts, edits,
//! deletes, a little spam) open-loop at the offered rate on the bench's courses, while a probe
//! commits one review per transaction every 50 ms, each on a course of a private range that
//! nothing else writes. A probe is timed from its COMMIT returning until the stats worker's
//! notification naming its course arrives (see `latency::Listener`): exact, and no polling.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use super::latency::{Listener, RatePoint, QUIET};
use super::load::Writer;
use crate::contract::notify::{self, Touched};
use crate::dev::demo::Generator;
use crate::error::{Error, Result};

/// How often a probe commits, as a website commits single reviews.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// One offered rate's probes: their figures (`offered` is the background's rate, `achieved`
/// the probes' own, no hops), the background's achieved rate and the missing probes.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProbePoint {
    #[serde(flatten)]
    pub probes: RatePoint,
    pub background_achieved: f64,
    /// Probes neither visible within the QUIET wait nor flagged: reported, never dropped.
    pub missing: u64,
}

/// Probes on courses `probes` (each used once) for `secs` over a background at `rate`.
pub async fn measure(
    database_url: &str,
    listener: &mut Listener,
    courses: i64,
    probes: &mut std::ops::RangeFrom<i64>,
    rate: u64,
    secs: u64,
    shutdown: &CancellationToken,
) -> Result<ProbePoint> {
    let mut probe = Writer::new(crate::db::connect(database_url).await?).await?;
    let background_db = crate::db::connect(database_url).await?;
    let stop = CancellationToken::new();
    let background = tokio::spawn(background(
        background_db,
        courses,
        rate,
        stop.clone(),
        rate ^ 0x5eb5,
    ));
    listener.clear();
    let mut commits: HashMap<i64, Instant> = HashMap::new();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)
        .map_err(|e| Error::Config(format!("latency histogram: {e}")))?;
    let started = Instant::now();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::select! {
            _ = shutdown.cancelled() => { stop.cancel(); return Err(Error::Config("interrupted".into())) }
            _ = tick.tick() => {}
        }
        let course = probes.next().unwrap_or(i64::MAX);
        probe.write(&[course]).await?;
        commits.insert(course, Instant::now());
        while let Ok((at, payload)) = listener.notes.try_recv() {
            seen(&payload, at, &mut commits, &mut histogram);
        }
    }
    let probing_for = started.elapsed().as_secs_f64();
    stop.cancel();
    let (written, wrote_for) = background.await.map_err(|e| Error::Command {
        what: "the website background writer".into(),
        detail: e.to_string(),
    })??;
    let mut quiet_since = Instant::now();
    while !commits.is_empty() && quiet_since.elapsed() < QUIET {
        tokio::select! {
            _ = shutdown.cancelled() => return Err(Error::Config("interrupted".into())),
            note = tokio::time::timeout(Duration::from_millis(500), listener.notes.recv()) => {
                if let Ok(Some((at, payload))) = note {
                    let before = commits.len();
                    seen(&payload, at, &mut commits, &mut histogram);
                    if commits.len() < before {
                        quiet_since = Instant::now();
                    }
                }
            }
        }
    }
    let unseen: Vec<i64> = commits.keys().copied().collect();
    let flagged = if unseen.is_empty() {
        0
    } else {
        flagged(database_url, &unseen).await?
    };
    Ok(ProbePoint {
        probes: RatePoint::of(
            rate,
            histogram.len() as f64 / probing_for.max(1e-9),
            &histogram,
            flagged,
            Vec::new(),
        ),
        background_achieved: written as f64 / wrote_for.max(1e-9),
        missing: unseen.len() as u64 - flagged,
    })
}

/// Records the probes a notification names.
fn seen(payload: &str, at: Instant, commits: &mut HashMap<i64, Instant>, h: &mut Histogram<u64>) {
    let Touched::Courses(courses) = notify::parse(payload) else {
        return;
    };
    for c in courses {
        if let Some(committed) = commits.remove(&c) {
            let micros = at.saturating_duration_since(committed).as_micros() as u64;
            h.saturating_record(micros.clamp(1, h.high()));
        }
    }
}

/// Demo's mix at `rate` changes per second, open-loop: each 10 ms tick writes what the clock
/// says is due, whatever the probes or the pipeline do. Returns changes written and seconds.
async fn background(
    mut db: tokio_postgres::Client,
    courses: i64,
    rate: u64,
    stop: CancellationToken,
    seed: u64,
) -> Result<(u64, f64)> {
    let mut generator = Generator::new(seed, courses);
    let mut live = Vec::new();
    let mut written = 0u64;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        if due > written {
            let counts =
                crate::dev::demo::write(&mut db, &mut generator, &mut live, due - written).await?;
            written += counts.total();
        }
    }
    Ok((written, started.elapsed().as_secs_f64()))
}

/// Among the unseen probes' courses, those whose review the fraud model flagged.
async fn flagged(database_url: &str, courses: &[i64]) -> Result<u64> {
    let client = crate::db::connect(database_url).await?;
    let n: i64 = client
        .query_one(
            "SELECT count(DISTINCT r.course_id) FROM review_verdicts v
             JOIN reviews r ON r.id = v.review_id
             WHERE r.course_id = ANY($1) AND v.verdict = 'fraud'",
            &[&courses],
        )
        .await?
        .get(0);
    Ok(n as u64)
}

impl ProbePoint {
    /// The summary's line, and the report's table row, of one rate.
    pub fn line(&self) -> String {
        use super::report::thousands;
        format!(
            "website latency over demo's mix at {}/s (background achieved {}/s, {} probes, {} flagged, {} missing): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            thousands(self.probes.offered as f64),
            thousands(self.background_achieved),
            self.probes.samples,
            self.probes.flagged,
            self.missing,
            self.probes.p50_ms,
            self.probes.p95_ms,
            self.probes.p99_ms,
            self.probes.max_ms
        )
    }
}
