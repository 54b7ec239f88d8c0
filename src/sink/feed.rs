//! The Kafka side of a PostgreSQL sink: a consumer in a group that resumes each partition it
//! is assigned at the offset kept in PostgreSQL (not Kafka's committed offset), and hands
//! batches, tagged with the epochs they were read under, to the sink's transaction.
//!
//! The consumer runs on a blocking thread; the claim of an assignment happens inside the
//! rebalance callback, so no record of a partition is read before it is claimed and sought.
//! A batch collected across a rebalance is dropped: its partitions were re-sought.
//!
//! Batches are pulled: records gather while the sink applies the previous batch, and the
//! sink gets all of them when it asks for the next. So a record waits for at most one
//! transaction before its own, and batches grow with the load by themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::offsets;
use crate::config::{KafkaSettings, WorkerSettings};
use crate::error::{Error, Result};
use crate::kafka;

/// Records of one or more partitions, with the epoch each partition was claimed under.
pub struct Batch {
    pub records: Vec<OwnedMessage>,
    pub epochs: HashMap<i32, i64>,
}

/// Who consumes what: `consumer` names the sink's rows in sink_offsets.
#[derive(Clone)]
pub struct FeedConfig {
    pub kafka: KafkaSettings,
    pub group: String,
    pub topic: String,
    pub consumer: String,
    pub owner: String,
    pub limits: WorkerSettings,
}

/// The sink's end of the feed.
pub struct Batches {
    rx: mpsc::Receiver<Result<Batch>>,
    wanted: Arc<AtomicBool>,
}

impl Batches {
    /// Everything read since the last batch (waiting for at least one record); `None` once
    /// the feed stopped; a failure is the last item.
    pub async fn next(&mut self) -> Option<Result<Batch>> {
        self.wanted.store(true, Ordering::SeqCst);
        self.rx.recv().await
    }
}

/// Starts the consumer thread, which reads until `stop` or a failure.
pub fn start(config: FeedConfig, pool: Pool, stop: CancellationToken) -> Batches {
    let (tx, rx) = mpsc::channel(1);
    let wanted = Arc::new(AtomicBool::new(false));
    let runtime = Handle::current();
    let asked = wanted.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = consume(&config, pool, runtime, &tx, &asked, &stop) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Batches { rx, wanted }
}

fn consume(
    config: &FeedConfig,
    pool: Pool,
    runtime: Handle,
    out: &mpsc::Sender<Result<Batch>>,
    wanted: &AtomicBool,
    stop: &CancellationToken,
) -> Result<()> {
    let context = Claims {
        config: config.clone(),
        pool,
        runtime,
        epochs: Mutex::default(),
        generation: AtomicU64::new(0),
        failure: Mutex::default(),
    };
    let consumer: BaseConsumer<Claims> =
        kafka::worker_consumer_config(&config.kafka, &config.group, &config.limits.batch_limits())
            // A read_committed fetch whose new records are still in an open transaction waits
            // at the broker for up to this long, even after the commit makes them readable:
            // librdkafka's 500 ms default put up to half a second on the stats hop's tail
            // (`reviewflow bench`: p99 at 5,000 reviews/s from 883 ms to 203 ms at 50 ms).
            .set("fetch.wait.max.ms", "10")
            .create_with_context(context)?;
    consumer.subscribe(&[&config.topic])?;
    let limits = &config.limits;
    let mut report = Instant::now();
    let mut pending: Vec<OwnedMessage> = Vec::new();
    let mut first_at = Instant::now();
    let mut generation = consumer.context().generation.load(Ordering::SeqCst);
    while !stop.is_cancelled() && !out.is_closed() {
        if pending.is_empty() {
            generation = consumer.context().generation.load(Ordering::SeqCst);
        }
        // Blocks while there is nothing to hand over; a short wait once there is, so a sink
        // that asks gets its batch at once.
        let mut wait = Duration::from_millis(if pending.is_empty() { 500 } else { 1 });
        while pending.len() < limits.max_records {
            match consumer.poll(wait) {
                None => break,
                Some(Ok(m)) => {
                    if pending.is_empty() {
                        first_at = Instant::now();
                    }
                    pending.push(m.detach());
                }
                Some(Err(e)) => kafka::report_consumer_error(&config.consumer, &e),
            }
            wait = Duration::ZERO;
        }
        if let Some(e) = consumer.context().take_failure() {
            return Err(e);
        }
        // Idle or not, so the lag gauge does not keep a value from before it caught up.
        if report.elapsed() > Duration::from_secs(10) {
            report = Instant::now();
            let lags = kafka::partition_lags(&consumer);
            crate::metrics::set_consumer_lag(&config.consumer, &lags);
            let lag: i64 = lags.iter().map(|(_, _, lag)| lag).sum();
            tracing::info!(sink = %config.consumer, lag, "sink lag");
        }
        if consumer.context().generation.load(Ordering::SeqCst) != generation {
            // Read across a rebalance: the partitions still ours were sought back.
            pending.clear();
            continue;
        }
        let lingered = first_at.elapsed() >= Duration::from_millis(limits.max_wait_ms);
        let full = pending.len() >= limits.max_records;
        if pending.is_empty() || !(full || (lingered && wanted.load(Ordering::SeqCst))) {
            continue;
        }
        let epochs = {
            let held = consumer.context().epochs();
            pending
                .iter()
                .filter_map(|m| held.get(&m.partition()).map(|e| (m.partition(), *e)))
                .collect()
        };
        wanted.store(false, Ordering::SeqCst);
        let records = std::mem::take(&mut pending);
        if out.blocking_send(Ok(Batch { records, epochs })).is_err() {
            break;
        }
    }
    Ok(())
}

/// The consumer's context: claims partitions in PostgreSQL as they are assigned.
struct Claims {
    config: FeedConfig,
    pool: Pool,
    runtime: Handle,
    epochs: Mutex<HashMap<i32, i64>>,
    /// Bumped by every assignment and revocation.
    generation: AtomicU64,
    failure: Mutex<Option<Error>>,
}

impl Claims {
    fn epochs(&self) -> HashMap<i32, i64> {
        self.epochs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn take_failure(&self) -> Option<Error> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn claim(&self, tpl: &mut TopicPartitionList) -> Result<HashMap<i32, i64>> {
        let c = &self.config;
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let claims = self.runtime.block_on(async {
            let client = self.pool.get().await?;
            offsets::claim(&**client, &c.consumer, &c.topic, &partitions, &c.owner).await
        })?;
        let mut epochs = HashMap::new();
        for (partition, claim) in &claims {
            tpl.set_partition_offset(&c.topic, *partition, Offset::Offset(claim.next_offset))?;
            epochs.insert(*partition, claim.epoch);
        }
        tracing::info!(sink = %c.consumer, claims = ?claims, "partitions assigned and claimed");
        Ok(epochs)
    }
}

impl ClientContext for Claims {}

impl ConsumerContext for Claims {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.epochs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let assigned = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.claim(tpl).and_then(|epochs| {
                    consumer.assign(tpl)?;
                    Ok(epochs)
                })
            }
            _ => {
                if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    tracing::warn!(sink = %self.config.consumer, ?err, "rebalance failed");
                }
                consumer
                    .unassign()
                    .map(|()| HashMap::new())
                    .map_err(Into::into)
            }
        };
        match assigned {
            Ok(epochs) => {
                *self.epochs.lock().unwrap_or_else(PoisonError::into_inner) = epochs;
            }
            Err(e) => {
                // Reading unclaimed partitions would apply records twice: stop this session.
                let _ = consumer.unassign();
                *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
            }
        }
    }
}
