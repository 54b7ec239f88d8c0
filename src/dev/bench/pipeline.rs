//! The whole pipeline live, each stage (api, cdc, fraud, stats, verdicts) its own child
//! process, with the seeded courses and the backlog in the data:
//! - saturation: a writer keeps the pipeline full (a bounded number of reviews written but
//!   not yet in course_stats) and the rate at which reviews reach course_stats is measured
//!   over the window, with each process's CPU time over the same window (the profile) and
//!   the backends' lock waits; then again with two instances of each worker (scale-out);
//! - latency: at fixed offered rates, commit-to-visible percentiles (see `latency`), then
//!   the website-shaped probes (see `website`), then probes during a backlog drain (see
//!   `drain`).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::drain::{self, DrainPoint};
use super::latency::{self, Listener, RatePoint};
use super::load::Writer;
use super::locks::{LockWait, Sampler};
use super::website::{self, ProbePoint};
use super::{spinner, timed, wait_until, Run};
use crate::dev::demo::Rng;
use crate::error::{Error, Result};

pub const STAGES: [&str; 5] = ["api", "cdc", "fraud", "stats", "verdicts"];
/// The stages that scale out: instances in one consumer group.
const WORKERS: [&str; 3] = ["fraud", "stats", "verdicts"];

#[derive(Clone, Debug, serde::Serialize)]
pub struct Saturation {
    /// Instances of each worker (fraud, stats, verdicts).
    pub instances: u32,
    pub secs: f64,
    pub reviews: u64,
    /// The slowest one-second interval of the window, reviews per second.
    pub slowest_second: f64,
    /// The longest time in the window in which no review reached its end (counters read
    /// every 100 ms), and when it began, seconds into the window.
    pub longest_pause_secs: f64,
    pub longest_pause_at_secs: f64,
    /// CPU seconds over the window, by process (the stages, PostgreSQL, Kafka, the writer).
    pub cpu: Vec<(String, f64)>,
    /// The bench database's backends over the window: running, and waiting on a lock.
    pub lock_wait: LockWait,
    /// With more than one instance: how long the worker groups took to take in the new
    /// members (every group Stable with all of them, as its coordinator tells), from their
    /// start; the warm-up and the window follow. None when a coordinator did not tell.
    pub settled_secs: Option<f64>,
}

impl Saturation {
    pub fn rate(&self) -> f64 {
        self.reviews as f64 / self.secs
    }
}

/// What the live pipeline measured.
pub struct Live {
    pub saturation: Saturation,
    /// Saturation with two instances of each worker, when the sizes ask for it.
    pub scale_out: Option<Saturation>,
    pub latency: Vec<RatePoint>,
    pub website: Vec<ProbePoint>,
    pub drain: DrainPoint,
}

pub async fn run(run: &mut Run, shutdown: &CancellationToken) -> Result<Live> {
    for stage in STAGES {
        if !run.stages.contains_key(stage) {
            run.start(stage)?;
        }
    }
    let bar = spinner("pipeline: starting every stage".into());
    // Started when the cdc stage streams and the workers have joined their groups: a first
    // review goes through.
    let client = crate::db::connect(&run.settings.database_url).await?;
    let mut writer = Writer::new(client).await?;
    let mut listener = Listener::start(&run.settings.database_url).await?;
    first_review(&mut writer, &mut listener, shutdown).await?;
    bar.finish_and_clear();

    let warmup = run.sizes.warmup_secs;
    let saturation = saturate(run, &mut writer, 1, warmup, shutdown).await?;
    let scale_out = if run.sizes.scale_out {
        for stage in WORKERS {
            run.start_instance(stage, 2)?;
        }
        // The window measures two instances at work, not the groups taking them in: it opens
        // a warm-up after every group is Stable with both (the time that took is reported).
        // Meanwhile the writer keeps the pipeline full, as it would be in production.
        let settled = settle(run, &mut writer, 2, shutdown).await?;
        let warmup = if settled.is_some() {
            warmup
        } else {
            warmup.max(10)
        };
        let s = saturate(run, &mut writer, 2, warmup, shutdown)
            .await
            .map(|s| Saturation {
                settled_secs: settled.map(|d| d.as_secs_f64()),
                ..s
            });
        for stage in WORKERS {
            run.stop(&format!("{stage}-2"), "pipeline").await?;
        }
        let bar = spinner("pipeline: back to one instance of each worker".into());
        first_review(&mut writer, &mut listener, shutdown).await?;
        bar.finish_and_clear();
        Some(s?)
    } else {
        None
    };

    let (changes, valid) = (run.topic("changes"), run.topic("valid"));
    listener.tap(&run.settings.kafka, &changes, &valid)?;
    let mut points = Vec::new();
    let courses = run.sizes.courses;
    let mut rng = Rng::new(0x5eed);
    let rounds: Vec<(u64, u64)> = (0..run.sizes.rounds)
        .flat_map(|round| run.sizes.rates.iter().map(move |&rate| (round, rate)))
        .collect();
    for &(round, rate) in &rounds {
        let n = (rate * run.sizes.latency_secs).min(courses).max(1);
        // Each course at most once per rate, in a shuffled order.
        let mut order: Vec<i64> = (1..=courses as i64).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        order.truncate(n as usize);
        let bar = timed(
            format!("latency: {n} reviews at {rate}/s"),
            n.div_ceil(rate),
        );
        listener.clear();
        let first_id: i64 = crate::db::connect(&run.settings.database_url)
            .await?
            .query_one("SELECT coalesce(max(id), 0) FROM reviews", &[])
            .await?
            .get(0);
        let url = run.settings.database_url.clone();
        let point = ticking(
            bar,
            latency::measure(
                &mut writer,
                &mut listener,
                &order,
                rate,
                || flagged_since(url, first_id),
                shutdown,
            ),
        )
        .await;
        let point = latency::RatePoint { round, ..point? };
        tracing::info!(
            rate,
            achieved = point.achieved.round(),
            p50_ms = point.p50_ms,
            p95_ms = point.p95_ms,
            p99_ms = point.p99_ms,
            "latency"
        );
        run.check_stages()?;
        points.push(point);
    }
    let mut probes = Vec::new();
    // Probe courses: past every course the bench or the background writes.
    let mut probe_courses = (courses as i64 + 1)..;
    let secs = run.sizes.website_secs;
    for &(round, rate) in &rounds {
        website::caught_up(run, &mut listener, &mut probe_courses, shutdown).await?;
        let bar = timed(
            format!("website latency: demo's mix at {rate}/s, probes every 50 ms"),
            secs,
        );
        let point = ticking(
            bar,
            website::measure(
                &run.settings.database_url,
                &mut listener,
                courses as i64,
                &mut probe_courses,
                rate,
                secs,
                shutdown,
            ),
        )
        .await;
        let mut point = point?;
        point.probes.round = round;
        tracing::info!(
            rate,
            p50_ms = point.probes.p50_ms,
            p99_ms = point.probes.p99_ms,
            "website latency"
        );
        run.check_stages()?;
        probes.push(point);
    }
    website::caught_up(run, &mut listener, &mut probe_courses, shutdown).await?;
    let drain = drain::measure(run, &mut listener, &mut probe_courses, shutdown).await?;
    run.stop_all("pipeline").await?;
    Ok(Live {
        saturation,
        scale_out,
        latency: points,
        website: probes,
        drain,
    })
}

/// One review through the whole pipeline: every stage streams and the workers hold their
/// partitions.
async fn first_review(
    writer: &mut Writer,
    listener: &mut Listener,
    shutdown: &CancellationToken,
) -> Result<()> {
    latency::measure(writer, listener, &[1], 1, || async { Ok(0) }, shutdown)
        .await
        .map(|_| ())
        .map_err(|e| Error::Command {
            what: "the pipeline's first review".into(),
            detail: e.to_string(),
        })
}

/// Waits until every worker group is Stable with `members` members, as their coordinator
/// tells (DescribeGroups), writing to keep the pipeline busy meanwhile. Returns how long that
/// took, or None when a coordinator does not describe the groups (then the caller warms up
/// longer instead).
async fn settle(
    run: &mut Run,
    writer: &mut Writer,
    members: usize,
    shutdown: &CancellationToken,
) -> Result<Option<Duration>> {
    use rdkafka::consumer::BaseConsumer;
    let client: BaseConsumer = crate::kafka::client_config(&run.settings.kafka).create()?;
    let groups: Vec<String> = WORKERS.iter().map(|w| run.group(w)).collect();
    let bar = spinner(format!(
        "saturation: the worker groups taking in {members} instances"
    ));
    let started = Instant::now();
    let mut rng = Rng::new(0x5e77);
    let base = reached(run).await?;
    let mut written = 0u64;
    let settled = 'settle: loop {
        super::check(shutdown)?;
        run.check_stages()?;
        let mut stable = true;
        for group in &groups {
            use rdkafka::consumer::Consumer;
            match client.fetch_group_list(Some(group.as_str()), Duration::from_secs(5)) {
                Ok(list) => {
                    stable &= list
                        .groups()
                        .iter()
                        .any(|g| g.state() == "Stable" && g.members().len() == members)
                }
                Err(e) => {
                    tracing::warn!(%group, error = %e, "bench: the group is not described; warming up longer instead");
                    break 'settle None;
                }
            }
        }
        if stable {
            break Some(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(Error::Command {
                what: "saturation".into(),
                detail: format!(
                    "the worker groups did not take in {members} instances within 120 s"
                ),
            });
        }
        let done = reached(run).await? - base;
        written += top_up(run, writer, &mut rng, written - done).await?;
    };
    bar.finish_and_clear();
    // What was written meanwhile drains first: the window counts from nothing in flight.
    drain(
        run,
        "the reviews written while the groups settled",
        base + written,
        shutdown,
    )
    .await?;
    Ok(settled)
}

async fn saturate(
    run: &mut Run,
    writer: &mut Writer,
    instances: u32,
    warmup: u64,
    shutdown: &CancellationToken,
) -> Result<Saturation> {
    let secs = run.sizes.saturation_secs;
    let bar = timed(
        format!(
            "saturation, {instances} instance(s) of each worker: {warmup} s warm-up, then {secs} s measured"
        ),
        warmup + secs,
    );
    let ticker = tick(bar.clone());
    let mut rng = Rng::new(0xbe7c);
    let started = Instant::now();
    let base = reached(run).await?;
    let mut written = 0u64;
    let mut done = 0u64;
    let mut last_poll = Instant::now();
    // When the window opened, the reviews done then, and each process's CPU then.
    let mut window: Option<(Instant, u64, CpuTimes)> = None;
    let mut sampler: Option<Sampler> = None;
    let mut seconds: Vec<(Instant, u64)> = Vec::new();
    // The last instant progress was seen in the window, and the longest pause (start, length).
    let mut progressed: Option<(Instant, u64)> = None;
    let mut longest = (Duration::ZERO, Duration::ZERO);
    let end = Duration::from_secs(warmup + secs);
    while started.elapsed() < end {
        super::check(shutdown)?;
        if last_poll.elapsed() >= Duration::from_millis(100)
            || written - done >= run.sizes.in_flight
        {
            done = reached(run).await? - base;
            last_poll = Instant::now();
            run.check_stages()?;
            if window.is_none() && started.elapsed() >= Duration::from_secs(warmup) {
                window = Some((Instant::now(), done, cpu(run)));
                let every = Duration::from_millis(100);
                sampler = Some(Sampler::start(&run.settings.database_url, every).await?);
            }
            if let Some((opened, _, _)) = &window {
                match progressed {
                    Some((_, seen)) if seen == done => {}
                    Some((at, _)) => {
                        let pause = at.elapsed();
                        if pause > longest.1 {
                            longest = (at.saturating_duration_since(*opened), pause);
                        }
                        progressed = Some((Instant::now(), done));
                    }
                    None => progressed = Some((Instant::now(), done)),
                }
            }
            if window.is_some()
                && seconds
                    .last()
                    .is_none_or(|(t, _)| t.elapsed() >= Duration::from_secs(1))
            {
                seconds.push((Instant::now(), done));
            }
        }
        written += top_up(run, writer, &mut rng, written - done).await?;
    }
    let finished = reached(run).await? - base;
    if let (Some((at, seen)), Some((opened, _, _))) = (progressed, &window) {
        if seen == finished && at.elapsed() > longest.1 {
            longest = (at.saturating_duration_since(*opened), at.elapsed());
        }
    }
    let after = cpu(run);
    let lock_wait = match sampler {
        Some(s) => s.finish().await?,
        None => LockWait::default(),
    };
    ticker.abort();
    bar.finish_and_clear();
    let (from, at_start, before) = window.ok_or_else(|| Error::Command {
        what: "saturation".into(),
        detail: "the warm-up never ended".into(),
    })?;
    let window_secs = from.elapsed().as_secs_f64();
    let reviews = finished - at_start;
    let slowest_second = seconds
        .windows(2)
        .map(|w| (w[1].1 - w[0].1) as f64 / (w[1].0 - w[0].0).as_secs_f64())
        .fold(f64::INFINITY, f64::min);
    let cpu = after
        .into_iter()
        .map(|(name, secs)| {
            let b = before.iter().find(|(n, _)| *n == name).map_or(0.0, |x| x.1);
            (name, secs - b)
        })
        .collect();
    tracing::info!(instances, reviews, secs = window_secs, lock_wait = ?lock_wait, "saturation");
    // What is still in flight drains before the latency phases.
    drain(run, "the saturation backlog", base + written, shutdown).await?;
    Ok(Saturation {
        instances,
        secs: window_secs,
        reviews,
        slowest_second: if slowest_second.is_finite() {
            slowest_second
        } else {
            reviews as f64 / window_secs
        },
        longest_pause_secs: longest.1.as_secs_f64(),
        longest_pause_at_secs: longest.0.as_secs_f64(),
        cpu,
        lock_wait,
        settled_secs: None,
    })
}

/// Keeps the pipeline full: with `pending` (reviews written but not yet at their end) below
/// the in-flight bound, writes one transaction of reviews on random courses, else waits a
/// moment. Returns how many it wrote.
async fn top_up(run: &Run, writer: &mut Writer, rng: &mut Rng, pending: u64) -> Result<u64> {
    if pending >= run.sizes.in_flight {
        tokio::time::sleep(Duration::from_millis(5)).await;
        return Ok(0);
    }
    let batch = if run.sizes.quick { 200 } else { 500 };
    let picks: Vec<i64> = (0..batch)
        .map(|_| 1 + rng.below(run.sizes.courses) as i64)
        .collect();
    writer.write(&picks).await?;
    Ok(batch)
}

/// Waits until `what` has drained: `target` reviews reached their end ([`reached`]).
async fn drain(run: &mut Run, what: &str, target: u64, shutdown: &CancellationToken) -> Result<()> {
    wait_until(
        run,
        &format!("{what} to drain"),
        Duration::from_millis(200),
        Duration::from_secs(600),
        shutdown,
        move |r| Box::pin(async move { Ok(reached(r).await? >= target) }),
    )
    .await
}

/// Reviews that reached their end: applied to course_stats, or flagged (which never do), by
/// every instance.
pub(super) async fn reached(run: &Run) -> Result<u64> {
    let applied = run
        .counter_sum(
            "stats",
            "reviewflow_events_out",
            &[("stage", "stats"), ("output", "applied")],
        )
        .await?;
    let flagged = run
        .counter_sum(
            "fraud",
            "reviewflow_events_out",
            &[("stage", "fraud"), ("output", "fraud")],
        )
        .await?;
    Ok((applied + flagged) as u64)
}

/// CPU seconds by process.
type CpuTimes = Vec<(String, f64)>;

/// CPU seconds so far of each stage, PostgreSQL, Kafka and this process (the writer).
fn cpu(run: &Run) -> CpuTimes {
    let mut out: Vec<(String, f64)> = run
        .stages
        .iter()
        .map(|(name, s)| (name.clone(), s.cpu_secs()))
        .collect();
    if let Some(pg) = run.postgres_cpu() {
        out.push(("postgresql".into(), pg));
    }
    if let Some(k) = run.kafka_cpu() {
        out.push(("kafka".into(), k));
    }
    let me = std::process::id() as i32;
    out.push((
        "bench (writer)".into(),
        super::procs::cpu_secs(me).unwrap_or(0.0),
    ));
    out
}

async fn flagged_since(url: String, first_id: i64) -> Result<u64> {
    let client = crate::db::connect(&url).await?;
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM review_verdicts v JOIN reviews r ON r.id = v.review_id
             WHERE r.id > $1 AND v.verdict = 'fraud'",
            &[&first_id],
        )
        .await?
        .get(0);
    Ok(n as u64)
}

/// Runs `work` with `bar` moving once a second, then clears the bar.
async fn ticking<T>(bar: indicatif::ProgressBar, work: impl std::future::Future<Output = T>) -> T {
    let ticker = tick(bar.clone());
    let out = work.await;
    ticker.abort();
    bar.finish_and_clear();
    out
}

/// Moves a timed bar once a second.
fn tick(bar: indicatif::ProgressBar) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            bar.inc(1);
        }
    })
}
