//! The website-shaped latency phase: the load a review site makes, beside the bench's own
//! latency phase (kept for continuity). A background task writes demo's mix (inserts, edits,
//! deletes, a little spam) open-loop at the offered rate on the bench's courses, while a probe
//! commits one review per transaction every 50 ms, each on a course of a private range that
//! nothing else writes. A probe is timed from its COMMIT returning until the stats worker's
//! notification naming its course arrives (see `latency::Listener`): exact, and no polling.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::latency::{Listener, Pending, RatePoint};
use super::load::Writer;
use super::{wait_until, Run};
use crate::dev::demo::Generator;
use crate::error::{Error, Result};

/// How often a probe commits, as a website commits single reviews.
pub(super) const PROBE_EVERY: Duration = Duration::from_millis(50);

/// One offered rate's probes: their figures (`offered` is the background's rate, `achieved`
/// the probes' own, hops included), the background's achieved rate and the missing probes.
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
    let probe = Writer::new(crate::db::connect(database_url).await?).await?;
    let background_db = crate::db::connect(database_url).await?;
    let stop = CancellationToken::new();
    // Stopped however this returns.
    let _stop = stop.clone().drop_guard();
    let background = tokio::spawn(background(
        background_db,
        courses,
        rate,
        stop.clone(),
        rate ^ 0x5eb5,
    ));
    listener.clear();
    let started = Instant::now();
    let (mut pending, probing_for) = probe_while(probe, listener, probes, shutdown, || {
        let going = started.elapsed() < Duration::from_secs(secs);
        async move { Ok(going) }
    })
    .await?;
    stop.cancel();
    let (written, wrote_for) = background.await.map_err(|e| Error::Command {
        what: "the website background writer".into(),
        detail: e.to_string(),
    })??;
    pending.settle(listener, shutdown).await?;
    let (probes, missing) = point(database_url, &pending, rate, probing_for).await?;
    Ok(ProbePoint {
        probes,
        background_achieved: written as f64 / wrote_for.max(1e-9),
        missing,
    })
}

/// Courses of the barrier's transaction: enough that every partition gets one.
const BARRIER_COURSES: usize = 32;
/// Longest the barrier waits.
const BARRIER_LIMIT: Duration = Duration::from_secs(1800);

/// Waits until the pipeline has caught up with everything written so far: one transaction
/// of a review on each of 32 fresh courses (so on every partition) is visible in full, or
/// flagged. A point then starts on an idle pipeline, not behind a backlog an earlier,
/// faster point left (after an overloaded rate, the next one's probes measured its drain).
pub(super) async fn caught_up(
    run: &mut Run,
    listener: &mut Listener,
    probes: &mut std::ops::RangeFrom<i64>,
    shutdown: &CancellationToken,
) -> Result<()> {
    let url = run.settings.database_url.clone();
    let courses: Vec<i64> = probes.by_ref().take(BARRIER_COURSES).collect();
    let mut writer = Writer::new(crate::db::connect(&url).await?).await?;
    listener.clear();
    let mut pending = Pending::new(courses.len())?;
    writer.write(&courses).await?;
    pending.committed(&courses, Instant::now());
    // Whether the unseen ones were all flagged is asked every 2 s, not at every look.
    let mut asked = Instant::now();
    wait_until(
        run,
        "the pipeline to catch up (a review on each of 32 fresh courses visible)",
        Duration::from_millis(20),
        BARRIER_LIMIT,
        shutdown,
        |_| {
            listener.take(&mut pending);
            let unseen = pending.unseen();
            let ask = !unseen.is_empty() && asked.elapsed() > Duration::from_secs(2);
            if ask {
                asked = Instant::now();
            }
            let url = url.clone();
            Box::pin(async move {
                Ok(unseen.is_empty()
                    || (ask && flagged(&url, &unseen).await? == unseen.len() as u64))
            })
        },
    )
    .await
}

/// A probe phase's figures from its settled commits: the rate point (hops included), and
/// the probes neither visible nor flagged.
pub(super) async fn point(
    database_url: &str,
    pending: &Pending,
    offered: u64,
    probing_for: f64,
) -> Result<(RatePoint, u64)> {
    let unseen = pending.unseen();
    let flagged = if unseen.is_empty() {
        0
    } else {
        flagged(database_url, &unseen).await?
    };
    let h = pending.histogram();
    let point = RatePoint::of(
        offered,
        h.len() as f64 / probing_for.max(1e-9),
        h,
        flagged,
        pending.hops(),
    );
    Ok((point, unseen.len() as u64 - flagged))
}

/// Commits one review every 50 ms, each on the next course of `probes`, while `going` says
/// so (asked before each probe). Returns the probes' commits, not yet settled, and the
/// seconds probed.
pub(super) async fn probe_while<F, Fut>(
    mut probe: Writer,
    listener: &mut Listener,
    probes: &mut std::ops::RangeFrom<i64>,
    shutdown: &CancellationToken,
    mut going: F,
) -> Result<(Pending, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let mut pending = Pending::new(1024)?;
    let started = Instant::now();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Err(Error::Config("interrupted".into())),
            _ = tick.tick() => {}
        }
        if !going().await? {
            break;
        }
        let course = probes.next().unwrap_or(i64::MAX);
        probe.write(&[course]).await?;
        pending.committed(&[course], Instant::now());
        listener.take(&mut pending);
    }
    Ok((pending, started.elapsed().as_secs_f64()))
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
            "website latency over demo's mix at {}/s (background achieved {}/s, {}",
            thousands(self.probes.offered as f64),
            thousands(self.background_achieved),
            probes_text(&self.probes, self.missing)
        )
    }
}

/// "N probes, N flagged, N missing): p50 .. ms, p95 .., p99 .., max .." of a probe phase.
pub(super) fn probes_text(p: &RatePoint, missing: u64) -> String {
    format!(
        "{} probes, {} flagged, {missing} missing): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p.samples, p.flagged, p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms
    )
}
