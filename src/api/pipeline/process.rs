//! What only this process knows of the pipeline: the health of the stages it runs
//! (src/health.rs, as GET /healthz shows it) and what they counted, read back from the
//! exposition GET /metrics serves (`metrics::encode`), so the page and a Prometheus scrape
//! see the same numbers. Rates and the recent latency come from two readings: this one and
//! one a few seconds older, kept here.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::health::StageReport;

/// The older reading a rate is taken against is at least this old, when one is kept.
const RATE_SPAN: Duration = Duration::from_secs(2);
/// Readings older than this are forgotten.
const KEPT: Duration = Duration::from_secs(60);
/// Readings closer together than this are not kept (many pages polling at once).
const MIN_GAP: Duration = Duration::from_millis(500);

/// The counters of one reading of the exposition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    pub stages: BTreeMap<String, Counts>,
    /// Consumer lag per (stage, topic, partition), as the worker last computed it.
    pub lags: Vec<(String, String, i32, i64)>,
    pub latency: Histogram,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    pub events_in: u64,
    pub events_out: BTreeMap<String, u64>,
    pub dead_letters: u64,
}

/// The commit-to-course_stats histogram: cumulative counts by upper bound (seconds).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

/// What the page shows of this process.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessView {
    /// False in a process that runs no stage (`reviewflow api`): health, rates and latency
    /// are then unknown here.
    pub runs_stages: bool,
    pub stages: Vec<StageView>,
    /// Seconds between the two readings the rates and `latency.recent` come from; None on
    /// the first reading.
    pub rate_window_s: Option<f64>,
    pub latency: LatencyView,
}

#[derive(Clone, Debug, Serialize)]
pub struct StageView {
    pub name: String,
    /// None when the stage counts here but does not report its state (the API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<StageReport>,
    pub events_in_total: u64,
    pub events_out_total: u64,
    pub events_out: BTreeMap<String, u64>,
    pub dead_letters_total: u64,
    pub events_in_per_s: Option<f64>,
    pub events_out_per_s: Option<f64>,
    pub consumer_lag: Vec<PartitionLag>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub lag: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LatencyView {
    /// Changes that reached course_stats since this process started.
    pub count: u64,
    pub mean_s: Option<f64>,
    /// Those of the rate window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent: Option<RecentLatency>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RecentLatency {
    pub count: u64,
    pub mean_s: Option<f64>,
    /// Upper bounds of the buckets holding the median and the 99th percentile; None when
    /// past the last bound (over a minute) or nothing arrived.
    pub p50_at_most_s: Option<f64>,
    pub p99_at_most_s: Option<f64>,
}

/// The readings kept for rates, shared by every request of the API.
#[derive(Clone, Default)]
pub struct Readings(Arc<Mutex<VecDeque<(Instant, Reading)>>>);

impl Readings {
    /// This process now, against the newest kept reading at least [`RATE_SPAN`] old (or
    /// the oldest kept).
    pub fn view(&self) -> ProcessView {
        let now = Instant::now();
        let current = parse(&crate::metrics::encode(&[]));
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.retain(|(at, _)| now.duration_since(*at) <= KEPT);
        let before = kept
            .iter()
            .rev()
            .find(|(at, _)| now.duration_since(*at) >= RATE_SPAN)
            .or_else(|| kept.front())
            .filter(|(at, _)| now.duration_since(*at) >= MIN_GAP)
            .cloned();
        if kept
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= MIN_GAP)
        {
            kept.push_back((now, current.clone()));
        }
        drop(kept);
        let before = before.map(|(at, r)| (now.duration_since(at).as_secs_f64(), r));
        view(&crate::health::stages(), &current, before.as_ref())
    }
}

/// The view of `current` with its health, rates against `before` (seconds ago, reading).
pub fn view(
    health: &BTreeMap<String, StageReport>,
    current: &Reading,
    before: Option<&(f64, Reading)>,
) -> ProcessView {
    let mut names: Vec<&String> = health.keys().chain(current.stages.keys()).collect();
    names.sort();
    names.dedup();
    let rate = |now: u64, then: Option<u64>| {
        before
            .zip(then)
            .map(|((secs, _), then)| now.saturating_sub(then) as f64 / secs)
    };
    let stages = names
        .into_iter()
        .map(|name| {
            let counts = current.stages.get(name).cloned().unwrap_or_default();
            let earlier = before.map(|(_, r)| r.stages.get(name).cloned().unwrap_or_default());
            let out_total = counts.events_out.values().sum();
            StageView {
                name: name.clone(),
                health: health.get(name).cloned(),
                events_in_total: counts.events_in,
                events_out_total: out_total,
                events_in_per_s: rate(counts.events_in, earlier.as_ref().map(|e| e.events_in)),
                events_out_per_s: rate(
                    out_total,
                    earlier.as_ref().map(|e| e.events_out.values().sum()),
                ),
                dead_letters_total: counts.dead_letters,
                events_out: counts.events_out,
                consumer_lag: current
                    .lags
                    .iter()
                    .filter(|(stage, ..)| stage == name)
                    .map(|(_, topic, partition, lag)| PartitionLag {
                        topic: topic.clone(),
                        partition: *partition,
                        lag: *lag,
                    })
                    .collect(),
            }
        })
        .collect();
    let h = &current.latency;
    let recent = before.map(|(_, r)| recent(h, &r.latency));
    ProcessView {
        runs_stages: !health.is_empty(),
        stages,
        rate_window_s: before.map(|(secs, _)| (secs * 10.0).round() / 10.0),
        latency: LatencyView {
            count: h.count,
            mean_s: (h.count > 0).then(|| h.sum / h.count as f64),
            recent,
        },
    }
}

/// The changes observed between `then` and `now` (two readings of the same histogram).
fn recent(now: &Histogram, then: &Histogram) -> RecentLatency {
    let count = now.count.saturating_sub(then.count);
    let deltas: Vec<(f64, u64)> = now
        .buckets
        .iter()
        .map(|(le, n)| {
            let before = then
                .buckets
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0, |(_, c)| *c);
            (*le, n.saturating_sub(before))
        })
        .collect();
    // The smallest bound whose cumulative count reaches the quantile's rank.
    let at_most = |q: f64| {
        let rank = (q * count as f64).ceil().max(1.0) as u64;
        deltas
            .iter()
            .find(|(le, n)| *n >= rank && le.is_finite())
            .map(|(le, _)| *le)
    };
    RecentLatency {
        count,
        mean_s: (count > 0).then(|| (now.sum - then.sum).max(0.0) / count as f64),
        p50_at_most_s: (count > 0).then(|| at_most(0.5)).flatten(),
        p99_at_most_s: (count > 0).then(|| at_most(0.99)).flatten(),
    }
}

/// The families of the exposition the page shows; every other line is left alone.
pub fn parse(text: &str) -> Reading {
    let mut reading = Reading::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, labels_of(rest.trim_end_matches('}'))),
            None => (series, BTreeMap::new()),
        };
        let label = |key: &str| labels.get(key).cloned().unwrap_or_default();
        let whole = || value.parse::<f64>().map_or(0, |v| v.max(0.0) as u64);
        match name {
            "reviewflow_events_in_total" => {
                reading.stages.entry(label("stage")).or_default().events_in = whole();
            }
            "reviewflow_events_out_total" => {
                let stage = reading.stages.entry(label("stage")).or_default();
                stage.events_out.insert(label("output"), whole());
            }
            "reviewflow_dead_letters_total" => {
                reading
                    .stages
                    .entry(label("stage"))
                    .or_default()
                    .dead_letters = whole();
            }
            "reviewflow_consumer_lag" => {
                let lag = value.parse().unwrap_or_default();
                let partition = label("partition").parse().unwrap_or_default();
                reading
                    .lags
                    .push((label("stage"), label("topic"), partition, lag));
            }
            "reviewflow_commit_to_stats_seconds_bucket" => {
                let le = match label("le").as_str() {
                    "+Inf" => f64::INFINITY,
                    le => le.parse().unwrap_or(f64::NAN),
                };
                reading.latency.buckets.push((le, whole()));
            }
            "reviewflow_commit_to_stats_seconds_count" => reading.latency.count = whole(),
            "reviewflow_commit_to_stats_seconds_sum" => {
                reading.latency.sum = value.parse().unwrap_or_default();
            }
            _ => {}
        }
    }
    reading
}

/// `a="x",b="y"` as a map; the exposition escapes `\`, `"` and newlines in values.
fn labels_of(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), value);
        rest = &after[end..];
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_is_read_back_as_the_page_shows_it() {
        crate::metrics::events_in("unit-page").inc_by(5);
        crate::metrics::events_out("unit-page", "valid").inc_by(3);
        crate::metrics::events_out("unit-page", "fraud").inc();
        crate::metrics::dead_letters("unit-page").inc_by(2);
        crate::metrics::set_consumer_lag("unit-page", &[("t.\"x\"".into(), 1, 9)]);
        let reading = parse(&crate::metrics::encode(&[]));
        let counts = &reading.stages["unit-page"];
        assert_eq!(counts.events_in, 5);
        assert_eq!(counts.events_out["valid"], 3);
        assert_eq!(counts.events_out["fraud"], 1);
        assert_eq!(counts.dead_letters, 2);
        assert!(
            reading
                .lags
                .contains(&("unit-page".into(), "t.\"x\"".into(), 1, 9)),
            "{:?}",
            reading.lags
        );
        assert_eq!(
            reading.latency.buckets.len(),
            crate::metrics::LATENCY_BUCKETS.len() + 1
        );
    }

    #[test]
    fn rates_and_recent_latency_come_from_two_readings() {
        let reading = |events_in: u64, out: u64, buckets: [u64; 3], sum: f64| Reading {
            stages: [(
                "fraud".to_string(),
                Counts {
                    events_in,
                    events_out: [("valid".to_string(), out)].into(),
                    dead_letters: 0,
                },
            )]
            .into(),
            lags: vec![("fraud".into(), "t".into(), 0, 4)],
            latency: Histogram {
                buckets: vec![
                    (0.1, buckets[0]),
                    (1.0, buckets[1]),
                    (f64::INFINITY, buckets[2]),
                ],
                count: buckets[2],
                sum,
            },
        };
        let health: BTreeMap<String, StageReport> = [(
            "fraud".to_string(),
            StageReport {
                state: "running".into(),
                reason: None,
                attempt: None,
                next_in_s: None,
            },
        )]
        .into();
        let then = reading(10, 6, [1, 2, 2], 0.6);
        let now = reading(30, 16, [1, 101, 102], 60.6);
        let shown = view(&health, &now, Some(&(2.0, then)));
        assert!(shown.runs_stages);
        let fraud = &shown.stages[0];
        assert_eq!(fraud.events_in_per_s, Some(10.0));
        assert_eq!(fraud.events_out_per_s, Some(5.0));
        assert_eq!(fraud.consumer_lag[0].lag, 4);
        let recent = shown.latency.recent.unwrap();
        assert_eq!(recent.count, 100);
        assert_eq!(recent.mean_s, Some(0.6));
        assert_eq!(recent.p50_at_most_s, Some(1.0));
        // The 99th of 100 is still under 1 s; the 100th, past every bound, is not it.
        assert_eq!(recent.p99_at_most_s, Some(1.0));
        let first = view(&BTreeMap::new(), &now, None);
        assert!(!first.runs_stages);
        assert_eq!(first.stages[0].events_in_per_s, None);
        assert!(first.latency.recent.is_none());
    }
}
