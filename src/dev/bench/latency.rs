//! Latency from a review's commit to the course_stats row that reflects it. The stats worker
//! runs `pg_notify('course_stats', <course ids>)` inside its commit (`sink::stats::notify`),
//! and PostgreSQL delivers it only once that commit is visible: a LISTEN connection gives the
//! exact "row visible" instant. Each phase writes at most one review per course, so a
//! notification naming a course maps to exactly one review of the phase.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::load::Writer;
use crate::contract::notify::{self, Touched};
use crate::error::{Error, Result};

/// How long the tail waits for a notification before it calls the rest missing.
pub(super) const QUIET: Duration = Duration::from_secs(60);
/// The largest latency a histogram keeps, in microseconds: an hour, for probes that wait
/// behind a backlog.
const HIGHEST_MICROS: u64 = 3_600_000_000;

/// One offered rate's outcome.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RatePoint {
    /// Which run of the rate (0-based).
    pub round: u64,
    pub offered: u64,
    pub achieved: f64,
    pub samples: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Reviews the fraud model flagged: they never reach course_stats, so have no latency.
    pub flagged: u64,
    /// Where the time goes, per hop: (hop, p50 ms, p99 ms), from the instants a consumer
    /// of the bench first saw each review in the changes topic and in the valid topic.
    pub hops: Vec<(String, f64, f64)>,
}

/// Notifications with the instant each arrived, stamped by the task that reads the socket.
pub struct Listener {
    pub(super) notes: mpsc::UnboundedReceiver<(Instant, String)>,
    _client: tokio_postgres::Client,
    taps: Option<Tap>,
}

/// Which topic a tapped record was seen in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hop {
    Changes,
    Valid,
}

/// A consumer of the changes and valid topics on its own thread, stamping each record (by
/// its course key) as it arrives: the instant each hop's output became readable.
struct Tap {
    seen: mpsc::UnboundedReceiver<(Hop, i64, Instant)>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Listener {
    pub async fn start(database_url: &str) -> Result<Self> {
        let (client, mut connection) = tokio_postgres::connect(database_url, NoTls).await?;
        let (tx, notes) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send((Instant::now(), n.payload().to_string())).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the LISTEN connection closed");
                        break;
                    }
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {}", notify::CHANNEL))
            .await?;
        Ok(Listener {
            notes,
            _client: client,
            taps: None,
        })
    }

    /// Also stamps records of `changes` and `valid` from their current ends on.
    pub fn tap(
        &mut self,
        kafka: &crate::config::KafkaSettings,
        changes: &str,
        valid: &str,
    ) -> Result<()> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::Message;
        let consumer: BaseConsumer = crate::kafka::client_config(kafka)
            .set("group.id", "reviewflow-bench-tap")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "5")
            .create()?;
        let mut list = rdkafka::TopicPartitionList::new();
        for topic in [changes, valid] {
            for p in 0..crate::kafka::partition_count(&consumer, topic)? {
                list.add_partition_offset(topic, p, rdkafka::Offset::End)?;
            }
        }
        consumer.assign(&list)?;
        let (tx, seen) = mpsc::unbounded_channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stopped, changes) = (stop.clone(), changes.to_string());
        std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let at = Instant::now();
                let hop = if m.topic() == changes {
                    Hop::Changes
                } else {
                    Hop::Valid
                };
                if let Some(course) = m.key().and_then(course_key) {
                    if tx.send((hop, course, at)).is_err() {
                        break;
                    }
                }
            }
        });
        self.taps = Some(Tap { seen, stop });
        Ok(())
    }

    /// Forgets what arrived so far (figures of earlier phases).
    pub fn clear(&mut self) {
        while self.notes.try_recv().is_ok() {}
        if let Some(t) = &mut self.taps {
            while t.seen.try_recv().is_ok() {}
        }
    }

    /// Takes every notification and tap stamp that arrived into `pending`.
    pub(super) fn take(&mut self, pending: &mut Pending) {
        while let Ok((at, payload)) = self.notes.try_recv() {
            pending.visible(at, &payload);
        }
        self.drain_taps(pending);
    }

    fn drain_taps(&mut self, pending: &mut Pending) {
        if let Some(t) = &mut self.taps {
            while let Ok((hop, course, at)) = t.seen.try_recv() {
                let stamps = match hop {
                    Hop::Changes => &mut pending.changes_at,
                    Hop::Valid => &mut pending.valid_at,
                };
                stamps.entry(course).or_insert(at);
            }
        }
    }
}

/// The course id of a record key: the Confluent header (5 bytes), then an Avro long.
fn course_key(key: &[u8]) -> Option<i64> {
    let body = key.get(5..)?;
    let (mut value, mut shift) = (0u64, 0);
    for byte in body {
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value >> 1) as i64 ^ -((value & 1) as i64));
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    None
}

/// Commit instants of the phase's reviews not yet seen in course_stats, by course.
pub(super) struct Pending {
    commits: HashMap<i64, Instant>,
    /// Seen before the writer recorded the commit (it raced the notification).
    early: HashMap<i64, Instant>,
    histogram: Histogram<u64>,
    /// Every commit and visible instant of the phase, and the tap's stamps.
    all_commits: HashMap<i64, Instant>,
    visible_at: HashMap<i64, Instant>,
    changes_at: HashMap<i64, Instant>,
    valid_at: HashMap<i64, Instant>,
}

impl Pending {
    pub(super) fn new(capacity: usize) -> Result<Self> {
        Ok(Pending {
            commits: HashMap::with_capacity(capacity),
            early: HashMap::new(),
            histogram: histogram()?,
            all_commits: HashMap::with_capacity(capacity),
            visible_at: HashMap::with_capacity(capacity),
            changes_at: HashMap::with_capacity(capacity),
            valid_at: HashMap::with_capacity(capacity),
        })
    }

    pub(super) fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }

    /// The courses whose review is still not visible.
    pub(super) fn unseen(&self) -> Vec<i64> {
        self.commits.keys().copied().collect()
    }

    /// The tail: waits until every review is visible, or none became visible for QUIET,
    /// then takes the taps' last stamps.
    pub(super) async fn settle(
        &mut self,
        listener: &mut Listener,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        listener.take(self);
        let mut quiet_since = Instant::now();
        while !self.commits.is_empty() && quiet_since.elapsed() < QUIET {
            tokio::select! {
                _ = shutdown.cancelled() => return Err(Error::Config("interrupted".into())),
                note = tokio::time::timeout(Duration::from_millis(500), listener.notes.recv()) => {
                    if let Ok(Some((at, payload))) = note {
                        let before = self.commits.len();
                        self.visible(at, &payload);
                        if self.commits.len() < before {
                            quiet_since = Instant::now();
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        listener.drain_taps(self);
        Ok(())
    }

    pub(super) fn committed(&mut self, courses: &[i64], at: Instant) {
        for c in courses {
            self.all_commits.insert(*c, at);
            match self.early.remove(c) {
                Some(seen) => self.record(seen.saturating_duration_since(at)),
                None => {
                    self.commits.insert(*c, at);
                }
            }
        }
    }

    fn visible(&mut self, at: Instant, payload: &str) {
        let Touched::Courses(courses) = notify::parse(payload) else {
            return;
        };
        for c in courses {
            self.visible_at.entry(c).or_insert(at);
            match self.commits.remove(&c) {
                Some(committed) => self.record(at.saturating_duration_since(committed)),
                None => {
                    self.early.insert(c, at);
                }
            }
        }
    }

    /// p50 and p99 (ms) of each hop over the reviews stamped at every step.
    pub(super) fn hops(&self) -> Vec<(String, f64, f64)> {
        let mut hist: Vec<Histogram<u64>> = (0..3).filter_map(|_| histogram().ok()).collect();
        if hist.len() < 3 {
            return Vec::new();
        }
        for (course, commit) in &self.all_commits {
            let (Some(c), Some(v), Some(s)) = (
                self.changes_at.get(course),
                self.valid_at.get(course),
                self.visible_at.get(course),
            ) else {
                continue;
            };
            let steps = [(*commit, *c), (*c, *v), (*v, *s)];
            for (h, (from, to)) in hist.iter_mut().zip(steps) {
                let micros = to.saturating_duration_since(from).as_micros() as u64;
                h.saturating_record(micros.max(1));
            }
        }
        let names = [
            "commit -> changes topic (cdc)",
            "changes -> valid topic committed (fraud)",
            "valid -> course_stats visible (stats)",
        ];
        names
            .iter()
            .zip(&hist)
            .filter(|(_, h)| !h.is_empty())
            .map(|(n, h)| {
                let ms = |q| h.value_at_quantile(q) as f64 / 1000.0;
                (n.to_string(), ms(0.5), ms(0.99))
            })
            .collect()
    }

    fn record(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, self.histogram.high());
        self.histogram.saturating_record(micros);
    }
}

/// Writes `courses.len()` reviews (one per course) at `rate` per second and measures each
/// one's commit-to-visible latency. `flagged` counts, among the reviews still unseen once
/// the pipeline had time to catch up, those the fraud model flagged.
pub async fn measure<F, Fut>(
    writer: &mut Writer,
    listener: &mut Listener,
    courses: &[i64],
    rate: u64,
    flagged: F,
    shutdown: &CancellationToken,
) -> Result<RatePoint>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    let mut pending = Pending::new(courses.len())?;
    let start = Instant::now();
    let mut written = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while written < courses.len() {
        tokio::select! {
            _ = shutdown.cancelled() => return Err(Error::Config("interrupted".into())),
            _ = tick.tick() => {}
        }
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as usize).min(courses.len());
        if due > written {
            writer.write(&courses[written..due]).await?;
            pending.committed(&courses[written..due], Instant::now());
            written = due;
        }
        listener.take(&mut pending);
    }
    let wrote_for = start.elapsed().as_secs_f64();
    pending.settle(listener, shutdown).await?;
    let unseen = pending.commits.len() as u64;
    let flagged = if unseen > 0 { flagged().await? } else { 0 };
    if unseen > flagged {
        return Err(Error::Command {
            what: format!("latency at {rate} reviews/s"),
            detail: format!(
                "{unseen} of {} reviews never showed in course_stats within {} s of the last \
                 notification ({flagged} were flagged as fraud)",
                courses.len(),
                QUIET.as_secs()
            ),
        });
    }
    let hops = pending.hops();
    let achieved = courses.len() as f64 / wrote_for.max(1e-9);
    Ok(RatePoint::of(
        rate,
        achieved,
        &pending.histogram,
        flagged,
        hops,
    ))
}

fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, 3)
        .map_err(|e| Error::Config(format!("latency histogram: {e}")))
}

impl RatePoint {
    /// A rate's figures from its histogram of latencies (microseconds), round 0.
    pub(super) fn of(
        offered: u64,
        achieved: f64,
        h: &Histogram<u64>,
        flagged: u64,
        hops: Vec<(String, f64, f64)>,
    ) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        RatePoint {
            round: 0,
            offered,
            achieved,
            samples: h.len(),
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: h.max() as f64 / 1000.0,
            flagged,
            hops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_course_keys() {
        for id in [0i64, 1, 63, 64, 100_000, -5, i64::MAX] {
            let body = crate::avro::envelope::encode_key(id).unwrap();
            let key = crate::avro::wire::frame(7, &body);
            assert_eq!(course_key(&key), Some(id));
        }
    }

    #[test]
    fn a_notification_maps_to_its_courses_commit_in_either_order() {
        let mut p = Pending::new(4).unwrap();
        let t0 = Instant::now();
        p.committed(&[1, 2], t0);
        p.visible(t0 + Duration::from_millis(40), "1");
        p.visible(t0 + Duration::from_millis(50), "3");
        p.committed(&[3], t0 + Duration::from_millis(45));
        assert_eq!(p.histogram.len(), 2);
        assert_eq!(p.commits.len(), 1, "course 2 is still pending");
        let max_ms = p.histogram.max() / 1000;
        assert!((39..=41).contains(&max_ms), "{max_ms}");
    }
}
