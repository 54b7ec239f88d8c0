//! The Kafka side of a PostgreSQL sink: a consumer in a group that resumes each partition it
//! is assigned at the offset kept in PostgreSQL (not Kafka's committed offset), and hands
//! batches, tagged with the epochs they were read under, to the sink's transaction.
//!
//! The consumer runs on a blocking thread; the claim of an assignment happens inside the
//! rebalance callback, so no record of a partition is read before it is claimed and sought.
//! Eager and incremental rebalancing (cooperative-sticky, the consumer group protocol) are
//! both followed: each record waiting to be handed over carries the epoch its partition was
//! claimed under when it was read, and is dropped if that is no longer the partition's epoch
//! here (revoked, or claimed again and re-sought). A kept partition's records stay: under
//! incremental rebalancing it is neither revoked nor re-sought, so they are its next ones.
//!
//! Batches are pulled: records gather while the sink applies the previous batch, and the
//! sink gets all of them when it asks for the next. So a record waits for at most one
//! transaction before its own, and batches grow with the load by themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
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
    // Each with the epoch its partition was held under when it was read.
    let mut pending: Vec<(Option<i64>, OwnedMessage)> = Vec::new();
    let mut first_at = Instant::now();
    while !stop.is_cancelled() && !out.is_closed() {
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
                    // Read now, after any rebalance this poll ran: the epoch it is read under.
                    let epoch = consumer.context().epoch(m.partition());
                    pending.push((epoch, m.detach()));
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
        let held = consumer.context().epochs();
        pending.retain(|(epoch, m)| epoch.is_some() && *epoch == held.get(&m.partition()).copied());
        let lingered = first_at.elapsed() >= Duration::from_millis(limits.max_wait_ms);
        let full = pending.len() >= limits.max_records;
        if pending.is_empty() || !(full || (lingered && wanted.load(Ordering::SeqCst))) {
            continue;
        }
        wanted.store(false, Ordering::SeqCst);
        let (tags, records): (Vec<_>, Vec<_>) = std::mem::take(&mut pending).into_iter().unzip();
        let epochs = records
            .iter()
            .zip(tags)
            .filter_map(|(m, epoch)| epoch.map(|e| (m.partition(), e)))
            .collect();
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
    /// The partitions held, with the epoch each was claimed under.
    epochs: Mutex<HashMap<i32, i64>>,
    failure: Mutex<Option<Error>>,
}

impl Claims {
    fn epochs(&self) -> HashMap<i32, i64> {
        self.epochs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn epoch(&self, partition: i32) -> Option<i64> {
        let held = self.epochs.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(&partition).copied()
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
    /// Eager rebalancing revokes and assigns everything; incremental rebalancing only what
    /// moves, so the epochs of the partitions kept stay as they are.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let incremental = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let mut held = self.epochs.lock().unwrap_or_else(PoisonError::into_inner);
        if !incremental {
            held.clear();
        }
        let outcome = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.claim(tpl).and_then(|epochs| {
                    if incremental {
                        consumer.incremental_assign(tpl)?;
                    } else {
                        consumer.assign(tpl)?;
                    }
                    held.extend(epochs);
                    Ok(())
                })
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                for e in tpl.elements() {
                    held.remove(&e.partition());
                }
                if incremental {
                    consumer.incremental_unassign(tpl).map_err(Into::into)
                } else {
                    consumer.unassign().map_err(Into::into)
                }
            }
            _ => {
                // What stays assigned after a failed rebalance is not known: start over.
                held.clear();
                tracing::warn!(sink = %self.config.consumer, ?err, "rebalance failed");
                Err(KafkaError::Rebalance(err.into()).into())
            }
        };
        if let Err(e) = outcome {
            // Reading unclaimed partitions would apply records twice: nothing more is handed
            // over, and the session stops.
            held.clear();
            if !incremental {
                let _ = consumer.unassign();
            }
            *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
        }
    }
}
