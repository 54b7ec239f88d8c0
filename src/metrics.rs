//! Prometheus metrics, served at GET /metrics in the OpenMetrics text format: by the api
//! (so `run` shows every stage), and by a standalone worker given `--metrics-listen`.
//!
//! One process-wide registry holds what the stages count as they go; the replication
//! slots' lag and state are read from PostgreSQL when /metrics is asked for, so a scrape
//! sees them as they are, and never a value left over from a slot that was dropped. The
//! time lag of a slot this process reads (its oldest waiting change's age) is peeked then
//! too, as `reviewflow status` does, so it keeps growing while cdc is stopped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use deadpool_postgres::Pool;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

mod slot_lag;
pub use slot_lag::{slot_read, slot_samples, SlotSample};

/// What prometheus-client encodes, and what GET /metrics answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the commit-to-stats latency buckets, in seconds: 5 ms to 60 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Longest a scrape waits for PostgreSQL before answering without the slot gauges.
const SLOT_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HoldLabel {
    hold: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutputLabels {
    pub stage: String,
    pub output: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub stage: String,
    pub topic: String,
    pub partition: String,
}

/// The families every stage writes to.
pub struct Metrics {
    registry: Registry,
    pub events_in: Family<StageLabel, Counter>,
    pub events_out: Family<OutputLabels, Counter>,
    pub dead_letters: Family<StageLabel, Counter>,
    pub transactions: Family<StageLabel, Counter>,
    pub discarded_batches: Family<StageLabel, Counter>,
    pub session_failures: Family<StageLabel, Counter>,
    pub oversize_values: Family<StageLabel, Counter>,
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    pub stage_up: Family<StageLabel, Gauge>,
    pub stage_restarts: Family<StageLabel, Counter>,
    pub commit_to_stats: Histogram,
    stats_lock_wait: Family<HoldLabel, Counter<f64, AtomicU64>>,
    fraud_transaction_phases: Family<PhaseLabel, Counter<f64, AtomicU64>>,
}

/// The process's metrics, registered on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("reviewflow");
        let m = Metrics {
            events_in: Family::default(),
            events_out: Family::default(),
            dead_letters: Family::default(),
            transactions: Family::default(),
            discarded_batches: Family::default(),
            session_failures: Family::default(),
            oversize_values: Family::default(),
            consumer_lag: Family::default(),
            stage_up: Family::default(),
            stage_restarts: Family::default(),
            commit_to_stats: Histogram::new(LATENCY_BUCKETS),
            stats_lock_wait: Family::default(),
            fraud_transaction_phases: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "events_in",
            "Records a stage took in: changes read from the slot (cdc), records consumed (fraud, sinks)",
            m.events_in.clone(),
        );
        registry.register(
            "events_out",
            "Records a stage put out, by output: changes acknowledged by Kafka (cdc); valid, fraud and \
             verdict records (verdicts, deletes, truncates) committed (fraud); changes or verdict \
             records applied in PostgreSQL (sinks)",
            m.events_out.clone(),
        );
        registry.register(
            "dead_letters",
            "Records a stage could not read and sent to the dead-letter topic",
            m.dead_letters.clone(),
        );
        registry.register(
            "transactions",
            "Transactions committed: source transactions read (cdc), Kafka transactions (fraud), \
             PostgreSQL transactions (sinks)",
            m.transactions.clone(),
        );
        registry.register(
            "discarded_batches",
            "Batches dropped because a rebalance took their partitions while they were collected",
            m.discarded_batches.clone(),
        );
        registry.register(
            "session_failures",
            "Sessions of a stage that failed and were started again after a backoff (a broker or \
             database that went away, a fenced transaction); a value never causes one",
            m.session_failures.clone(),
        );
        registry.register(
            "cdc_oversize_values",
            "Column values cdc carried as an oversize marker (length and sha256) because the change \
             would not fit the topic's max.message.bytes (docs/values.md)",
            m.oversize_values.clone(),
        );
        registry.register(
            "consumer_lag",
            "Records in a partition past the consumer's position, as the worker last computed it",
            m.consumer_lag.clone(),
        );
        registry.register(
            "stage_up",
            "1 while the stage runs a session; 0 while it waits to restart after a failure, or \
             after it stopped (GET /healthz says why)",
            m.stage_up.clone(),
        );
        registry.register(
            "stage_restarts",
            "Times the stage failed and was started again after a backoff (src/retry.rs)",
            m.stage_restarts.clone(),
        );
        registry.register_with_unit(
            "commit_to_stats",
            "From a change's commit in the source to its stats transaction's commit",
            Unit::Seconds,
            m.commit_to_stats.clone(),
        );
        registry.register_with_unit(
            "stats_lock_wait",
            "Time stats transactions spent taking the stats lock, by how they hold it (shared: a \
             batch; exclusive: the day rollover, a TRUNCATE, a snapshot's start or end)",
            Unit::Seconds,
            m.stats_lock_wait.clone(),
        );
        registry.register_with_unit(
            "fraud_transaction_phase",
            "Time fraud's Kafka transactions spent in each phase (produce: scoring and handing \
             the records over; offsets: send_offsets_to_transaction; deliveries: waiting for the \
             broker's acks; commit: commit_transaction). Divided by reviewflow_transactions_total \
             {stage=\"fraud\"}, the mean per transaction",
            Unit::Seconds,
            m.fraud_transaction_phases.clone(),
        );
        Metrics { registry, ..m }
    }
}

/// Seconds stats transactions waited for the stats lock, held `hold` (shared, exclusive).
pub fn stats_lock_wait(hold: &str) -> Counter<f64, AtomicU64> {
    metrics()
        .stats_lock_wait
        .get_or_create_owned(&HoldLabel { hold: hold.into() })
}

/// Seconds fraud's transactions spent in `phase` (produce, offsets, deliveries, commit).
pub fn fraud_transaction_phase(phase: &str) -> Counter<f64, AtomicU64> {
    metrics()
        .fraud_transaction_phases
        .get_or_create_owned(&PhaseLabel {
            phase: phase.into(),
        })
}

/// A stage's counter of records in.
pub fn events_in(stage: &str) -> Counter {
    metrics().events_in.get_or_create_owned(&stage_label(stage))
}

/// A stage's counter of records out to one output.
pub fn events_out(stage: &str, output: &str) -> Counter {
    metrics().events_out.get_or_create_owned(&OutputLabels {
        stage: stage.into(),
        output: output.into(),
    })
}

pub fn dead_letters(stage: &str) -> Counter {
    metrics()
        .dead_letters
        .get_or_create_owned(&stage_label(stage))
}

pub fn transactions(stage: &str) -> Counter {
    metrics()
        .transactions
        .get_or_create_owned(&stage_label(stage))
}

pub fn discarded_batches(stage: &str) -> Counter {
    metrics()
        .discarded_batches
        .get_or_create_owned(&stage_label(stage))
}

pub fn session_failures(stage: &str) -> Counter {
    metrics()
        .session_failures
        .get_or_create_owned(&stage_label(stage))
}

/// 1 while a stage runs, 0 while it restarts or after it stopped (src/health.rs sets it).
pub fn stage_up(stage: &str) -> Gauge {
    metrics().stage_up.get_or_create_owned(&stage_label(stage))
}

pub fn stage_restarts(stage: &str) -> Counter {
    metrics()
        .stage_restarts
        .get_or_create_owned(&stage_label(stage))
}

/// Values a reader replaced by an oversize marker.
pub fn oversize_values(stage: &str) -> Counter {
    metrics()
        .oversize_values
        .get_or_create_owned(&stage_label(stage))
}

fn stage_label(stage: &str) -> StageLabel {
    StageLabel {
        stage: stage.into(),
    }
}

/// A stage's consumer lag per partition, as the worker computes it. Partitions the stage
/// no longer reported (a rebalance took them) are removed, so no stale series stays behind.
pub fn set_consumer_lag(stage: &str, lags: &[(String, i32, i64)]) {
    static SHOWN: Mutex<BTreeMap<String, Vec<PartitionLabels>>> = Mutex::new(BTreeMap::new());
    let family = &metrics().consumer_lag;
    let now: Vec<PartitionLabels> = lags
        .iter()
        .map(|(topic, partition, _)| PartitionLabels {
            stage: stage.into(),
            topic: topic.clone(),
            partition: partition.to_string(),
        })
        .collect();
    let mut shown = SHOWN.lock().unwrap_or_else(PoisonError::into_inner);
    let before = shown.entry(stage.into()).or_default();
    for gone in before.iter().filter(|l| !now.contains(l)) {
        family.remove(gone);
    }
    for (labels, (_, _, lag)) in now.iter().zip(lags) {
        family.get_or_create(labels).set(*lag);
    }
    *before = now;
}

/// The exposition: the process's metrics, then the slots' gauges, then `# EOF`.
pub fn encode(slots: &[SlotSample]) -> String {
    let mut scrape = Registry::with_prefix("reviewflow");
    slot_lag::register(&mut scrape, slots);
    let mut text = String::new();
    // Writing to a String cannot fail, nor can the encoders of these metric types.
    let _ = encode_registry(&mut text, &metrics().registry);
    let _ = encode_registry(&mut text, &scrape);
    let _ = encode_eof(&mut text);
    text
}

/// GET /metrics: with a pool, the slots' gauges too. A database out of reach only leaves
/// them out (and says so in the log): the rest is this process's and still true.
pub async fn scrape(pool: Option<&Pool>) -> Response {
    let slots = match pool {
        None => Vec::new(),
        Some(pool) => {
            let read = async {
                let client = pool.get().await?;
                slot_samples(&client).await
            };
            match tokio::time::timeout(SLOT_QUERY_TIMEOUT, read).await {
                Ok(Ok(mut slots)) => {
                    slot_lag::add_time_lags(&mut slots).await;
                    slots
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "metrics: slot gauges left out");
                    Vec::new()
                }
                Err(_) => {
                    tracing::warn!(
                        "metrics: slot gauges left out (PostgreSQL did not answer in time)"
                    );
                    Vec::new()
                }
            }
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        encode(&slots),
    )
        .into_response()
}

/// The standalone metrics server of a worker: GET /metrics only.
pub fn router(pool: Option<Pool>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let pool = pool.clone();
            async move { scrape(pool.as_ref()).await }
        }),
    )
}

/// Serves [`router`] until `shutdown`.
pub async fn serve(
    listen: SocketAddr,
    pool: Option<Pool>,
    shutdown: CancellationToken,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Error::io(
            format!("listen on {listen} (choose another with --metrics-listen or REVIEWFLOW_METRICS_LISTEN)"),
            e,
        )
    })?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::io("local address", e))?;
    tracing::info!(%address, "metrics listening");
    axum::serve(listener, router(pool))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|e| Error::io("serve metrics", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_shows_up_with_its_labels() {
        events_in("unit-in").inc_by(3);
        events_out("unit-out", "valid").inc();
        dead_letters("unit-dead").inc();
        fraud_transaction_phase("unit-phase").inc_by(0.5);
        let text = encode(&[]);
        assert!(
            text.contains(
                "reviewflow_fraud_transaction_phase_seconds_total{phase=\"unit-phase\"} 0.5\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("reviewflow_events_in_total{stage=\"unit-in\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("reviewflow_events_out_total{stage=\"unit-out\",output=\"valid\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("reviewflow_dead_letters_total{stage=\"unit-dead\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE reviewflow_events_in counter\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    }

    #[test]
    fn the_latency_histogram_has_its_buckets() {
        metrics().commit_to_stats.observe(0.007);
        let text = encode(&[]);
        assert!(
            text.contains("# TYPE reviewflow_commit_to_stats_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("# UNIT reviewflow_commit_to_stats_seconds seconds\n"),
            "{text}"
        );
        assert!(
            text.contains("reviewflow_commit_to_stats_seconds_bucket{le=\"0.005\"}"),
            "{text}"
        );
        assert!(
            text.contains("reviewflow_commit_to_stats_seconds_bucket{le=\"60.0\"}"),
            "{text}"
        );
        assert!(
            text.contains("reviewflow_commit_to_stats_seconds_bucket{le=\"+Inf\"}"),
            "{text}"
        );
    }

    #[test]
    fn slots_are_gauges_of_the_scrape() {
        let slots = [
            SlotSample {
                slot: "a".into(),
                active: true,
                lag_bytes: Some(1234),
                time_lag_seconds: Some(2.5),
            },
            SlotSample {
                slot: "b".into(),
                active: false,
                lag_bytes: None,
                time_lag_seconds: None,
            },
        ];
        let text = encode(&slots);
        assert!(
            text.contains("reviewflow_slot_lag_bytes{slot=\"a\"} 1234\n"),
            "{text}"
        );
        assert!(
            !text.contains("reviewflow_slot_lag_bytes{slot=\"b\"}"),
            "{text}"
        );
        assert!(
            text.contains("reviewflow_slot_active{slot=\"a\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("reviewflow_slot_active{slot=\"b\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("reviewflow_slot_time_lag_seconds{slot=\"a\"} 2.5\n"),
            "{text}"
        );
        assert!(
            !text.contains("reviewflow_slot_time_lag_seconds{slot=\"b\"}"),
            "{text}"
        );
        // Not kept: the next scrape shows only the slots it read.
        assert!(!encode(&[]).contains("slot=\"a\""));
    }

    #[test]
    fn lag_gauges_drop_partitions_no_longer_held() {
        set_consumer_lag("unit-lag", &[("t".into(), 0, 5), ("t".into(), 1, 7)]);
        let text = encode(&[]);
        assert!(
            text.contains(
                "reviewflow_consumer_lag{stage=\"unit-lag\",topic=\"t\",partition=\"1\"} 7\n"
            ),
            "{text}"
        );
        set_consumer_lag("unit-lag", &[("t".into(), 0, 2)]);
        let text = encode(&[]);
        assert!(
            text.contains(
                "reviewflow_consumer_lag{stage=\"unit-lag\",topic=\"t\",partition=\"0\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            !text.contains("stage=\"unit-lag\",topic=\"t\",partition=\"1\""),
            "{text}"
        );
    }
}
