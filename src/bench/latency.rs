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
use crate::error::{Error, Result};
use crate::sink::stats::notify::{self, Touched};

/// How long the tail waits for a notification before it calls the rest missing.
const QUIET: Duration = Duration::from_secs(60);

/// One offered rate's outcome.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RatePoint {
    pub offered: u64,
    pub achieved: f64,
    pub samples: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Reviews the fraud model flagged: they never reach course_stats, so have no latency.
    pub flagged: u64,
}

/// Notifications with the instant each arrived, stamped by the task that reads the socket.
pub struct Listener {
    notes: mpsc::UnboundedReceiver<(Instant, String)>,
    _client: tokio_postgres::Client,
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
        })
    }

    /// Forgets what arrived so far (figures of earlier phases).
    pub fn clear(&mut self) {
        while self.notes.try_recv().is_ok() {}
    }
}

/// Commit instants of the phase's reviews not yet seen in course_stats, by course.
struct Pending {
    commits: HashMap<i64, Instant>,
    /// Seen before the writer recorded the commit (it raced the notification).
    early: HashMap<i64, Instant>,
    histogram: Histogram<u64>,
}

impl Pending {
    fn committed(&mut self, courses: &[i64], at: Instant) {
        for c in courses {
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
            match self.commits.remove(&c) {
                Some(committed) => self.record(at.saturating_duration_since(committed)),
                None => {
                    self.early.insert(c, at);
                }
            }
        }
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
    let mut pending = Pending {
        commits: HashMap::with_capacity(courses.len()),
        early: HashMap::new(),
        histogram: Histogram::new_with_bounds(1, 120_000_000, 3)
            .map_err(|e| Error::Config(format!("latency histogram: {e}")))?,
    };
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
        while let Ok((at, payload)) = listener.notes.try_recv() {
            pending.visible(at, &payload);
        }
    }
    let wrote_for = start.elapsed().as_secs_f64();
    // The tail: until every review is visible, or nothing new arrived for a while.
    let mut quiet_since = Instant::now();
    while !pending.commits.is_empty() && quiet_since.elapsed() < QUIET {
        tokio::select! {
            _ = shutdown.cancelled() => return Err(Error::Config("interrupted".into())),
            note = tokio::time::timeout(Duration::from_millis(500), listener.notes.recv()) => {
                if let Ok(Some((at, payload))) = note {
                    pending.visible(at, &payload);
                    quiet_since = Instant::now();
                }
            }
        }
    }
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
    let h = &pending.histogram;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(RatePoint {
        offered: rate,
        achieved: courses.len() as f64 / wrote_for.max(1e-9),
        samples: h.len(),
        p50_ms: ms(0.50),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        max_ms: h.max() as f64 / 1000.0,
        flagged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_maps_to_its_courses_commit_in_either_order() {
        let mut p = Pending {
            commits: HashMap::new(),
            early: HashMap::new(),
            histogram: Histogram::new_with_bounds(1, 120_000_000, 3).unwrap(),
        };
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
