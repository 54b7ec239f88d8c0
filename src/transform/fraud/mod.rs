//! The fraud worker: reviews.changes in; reviews.valid (the changelog of the set of valid
//! reviews), reviews.fraud (flagged versions) and reviews.verdicts (one verdict per version,
//! and a record of each delete and TRUNCATE, so `verify` can tell a seen delete from a lost
//! one) out; undecodable records to the dead-letter topic.
//!
//! Guarantee: exactly-once. A batch's outputs and its input offsets commit in one Kafka
//! transaction, so read_committed consumers see every input's outputs once, or not at all.
//! The transaction is committed with the consumer group's metadata, so an instance that lost
//! its partitions in a rebalance is fenced by the broker rather than committing over the new
//! owner. A crash leaves an open transaction that the restarted instance (same transactional
//! id) aborts; its records are re-read from the committed offsets.
//!
//! Ordering: the valid changelog keeps the input's partition, so a course's changes stay in
//! order and a TRUNCATE (sent to every partition) stays in place.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::FraudConfig;
use crate::avro::{envelope, verdict};
use crate::config::{Settings, TopicSettings, WorkerSettings};
use crate::error::{Error, Result};
use crate::kafka;
use crate::metrics;
use crate::registry::{key_subject, value_subject, Registry};
use crate::transform::score::{self, Scorer};

mod outputs;

use outputs::{Kind, Output};

pub struct Fraud {
    pub settings: Settings,
    pub topics: TopicSettings,
    pub config: FraudConfig,
    pub worker: WorkerSettings,
}

/// Its label in the metrics.
const STAGE: &str = "fraud";

/// What the workers of this process have done since it started: the process's metrics
/// (see `metrics`), also logged with the lag every few seconds.
struct Counters {
    consumed: Counter,
    valid: Counter,
    fraud: Counter,
    verdicts: Counter,
    dead_letters: Counter,
    transactions: Counter,
    /// Batches that lost records because a rebalance moved their partitions while they were
    /// collected.
    discarded: Counter,
    /// Seconds the transactions spent in each phase: where a record's time in fraud goes.
    produce: PhaseSeconds,
    offsets: PhaseSeconds,
    deliveries: PhaseSeconds,
    commit: PhaseSeconds,
}

type PhaseSeconds = prometheus_client::metrics::counter::Counter<f64, std::sync::atomic::AtomicU64>;

/// The clock of a transaction's phases: each `ended` adds the time since the previous one.
struct Phases(Instant);

impl Phases {
    fn start() -> Self {
        Phases(Instant::now())
    }

    fn ended(&mut self, phase: &PhaseSeconds) {
        let now = Instant::now();
        phase.inc_by((now - self.0).as_secs_f64());
        self.0 = now;
    }
}

impl Counters {
    fn new() -> Self {
        Counters {
            consumed: metrics::events_in(STAGE),
            valid: metrics::events_out(STAGE, "valid"),
            fraud: metrics::events_out(STAGE, "fraud"),
            verdicts: metrics::events_out(STAGE, "verdict"),
            dead_letters: metrics::dead_letters(STAGE),
            transactions: metrics::transactions(STAGE),
            discarded: metrics::discarded_batches(STAGE),
            produce: metrics::fraud_transaction_phase("produce"),
            offsets: metrics::fraud_transaction_phase("offsets"),
            deliveries: metrics::fraud_transaction_phase("deliveries"),
            commit: metrics::fraud_transaction_phase("commit"),
        }
    }
}

/// Registry ids of the output schemas that do not depend on the input's.
#[derive(Clone, Copy)]
struct OutputIds {
    /// Where a truncate's record goes: the changes partition it came in, modulo this.
    verdict_partitions: i32,
    valid_key: u32,
    review_key: u32,
    verdict_value: u32,
    fraud_value: u32,
}

impl Fraud {
    /// Runs until `shutdown`; a failed session (broker gone, fenced) starts over from the
    /// committed offsets after a backoff.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let scorer: Arc<dyn Scorer> =
            score::scorer(self.config.scorer, self.config.fraud_threshold)?.into();
        kafka::check_group_settings(&self.settings.kafka)?;
        // Held until the worker stops: a second live process with this transactional id
        // would fence this one at every session.
        let _instance = crate::instance::claim(&self.config.group, &self.worker.instance())?;
        let prepare = || self.prepare();
        let Some((registry, ids)) = crate::retry::setup("fraud", &shutdown, prepare).await? else {
            return Ok(());
        };
        let counters = Arc::new(Counters::new());
        let this = Arc::new(self);
        tracing::info!(model = scorer.model(), input = %this.topics.changes, "fraud worker starting");
        crate::retry::sessions("fraud", &shutdown, || {
            let session = Session {
                fraud: this.clone(),
                scorer: scorer.clone(),
                registry: registry.clone(),
                runtime: Handle::current(),
                ids,
                valid_ids: HashMap::new(),
                readers: envelope::ChangeReaders::default(),
                counters: counters.clone(),
            };
            let shutdown = shutdown.clone();
            async move { tokio::task::spawn_blocking(move || session.run(&shutdown)).await? }
        })
        .await
    }

    /// Its topics checked or made, their partition counts compared, and its output schemas
    /// registered.
    async fn prepare(&self) -> Result<(Registry, OutputIds)> {
        let registry = Registry::connect(&self.settings).await?;
        let (kafka, topics) = (&self.settings.kafka, &self.topics);
        let replication = topics.replication_factor;
        kafka::ensure_history_topic(kafka, &topics.changes, topics.partitions, replication).await?;
        let partitions = kafka::topic_partitions(kafka, &topics.changes)?;
        // The valid changelog keeps each change in its input partition.
        kafka::ensure_history_topic(kafka, &topics.valid, partitions, replication).await?;
        for t in [&topics.fraud, &topics.verdicts] {
            kafka::ensure_history_topic(kafka, t, topics.partitions, replication).await?;
        }
        kafka::ensure_topic(
            kafka,
            &topics.dead_letters,
            topics.partitions,
            topics.replication_factor,
            &[],
        )
        .await?;
        let valid_partitions = kafka::topic_partitions(kafka, &topics.valid)?;
        if valid_partitions < partitions {
            // cdc writes across no more partitions than the valid changelog has (see
            // `source::switch`), so the partitions beyond stay empty meanwhile.
            tracing::warn!(valid = %topics.valid, changes = %topics.changes, valid_partitions, partitions,
                "the valid changelog has fewer partitions than the changes topic: add partitions to it \
                 (kafka-topics.sh --alter --partitions); until then cdc keeps to the old count");
        }
        let verdict_partitions = kafka::topic_partitions(kafka, &topics.verdicts)?;
        let key = &envelope::KEY_SCHEMA;
        let ids = OutputIds {
            verdict_partitions,
            valid_key: registry.register(&key_subject(&topics.valid), key).await?,
            review_key: registry
                .register(&key_subject(&topics.verdicts), key)
                .await?,
            verdict_value: registry
                .register(&value_subject(&topics.verdicts), &verdict::SCHEMA)
                .await?,
            fraud_value: registry
                .register(&value_subject(&topics.fraud), &verdict::SCHEMA)
                .await?,
        };
        registry.register(&key_subject(&topics.fraud), key).await?;
        Ok((registry, ids))
    }

    fn transactional_id(&self) -> String {
        format!("{}-{}", self.config.group, self.worker.instance())
    }
}

/// Which assignment of each partition this consumer is in. Under eager rebalancing every
/// rebalance revokes everything and re-reads it from the committed offsets; under
/// cooperative-sticky and the consumer group protocol (KIP-848) a rebalance moves only some
/// partitions, and the kept ones are neither revoked nor re-sought. So a record read before a
/// rebalance is still good exactly when its partition has been ours, without a break, since:
/// its tenure is unchanged.
#[derive(Default)]
struct RebalanceWatch {
    tenures: Mutex<HashMap<i32, u64>>,
    /// Tenures handed out so far: a partition assigned again gets a new one.
    assignments: AtomicU64,
    /// A failed rebalance: what it left assigned is not known, so the session starts over.
    failure: Mutex<Option<KafkaError>>,
}

impl RebalanceWatch {
    /// The partition's current tenure; `None` once it is not ours.
    fn tenure(&self, partition: i32) -> Option<u64> {
        let tenures = self.tenures.lock().unwrap_or_else(PoisonError::into_inner);
        tenures.get(&partition).copied()
    }
}

impl ClientContext for RebalanceWatch {}

impl ConsumerContext for RebalanceWatch {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut tenures = self.tenures.lock().unwrap_or_else(PoisonError::into_inner);
        match rebalance {
            Rebalance::Revoke(tpl) => {
                for p in partition_numbers(tpl) {
                    tenures.remove(&p);
                }
                tracing::info!(partitions = ?partition_numbers(tpl), "fraud: partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                for p in partition_numbers(tpl) {
                    tenures.insert(p, self.assignments.fetch_add(1, Ordering::SeqCst));
                }
                tracing::info!(partitions = ?partition_numbers(tpl), "fraud: partitions assigned")
            }
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "fraud: rebalance failed; starting a new session");
                *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.clone());
            }
        }
    }
}

fn partition_numbers(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// One consumer and one transactional producer, on a blocking thread: a batch is collected,
/// then produced and committed, before the consumer is polled again, so no transaction is
/// ever open while a rebalance runs, and a partition given up in one was committed up to
/// what this instance read of it.
struct Session {
    fraud: Arc<Fraud>,
    scorer: Arc<dyn Scorer>,
    registry: Registry,
    runtime: Handle,
    ids: OutputIds,
    /// reviews.valid reuses the input's envelope schema, registered under its own subject.
    valid_ids: HashMap<u32, u32>,
    readers: envelope::ChangeReaders,
    counters: Arc<Counters>,
}

impl Session {
    fn run(mut self, shutdown: &CancellationToken) -> Result<()> {
        let f = self.fraud.clone();
        let consumer: BaseConsumer<RebalanceWatch> = kafka::worker_consumer_config(
            &f.settings.kafka,
            &f.config.group,
            &f.worker.batch_limits(),
        )
        .create_with_context(RebalanceWatch::default())?;
        // No linger: a batch is whole when it is handed over, so lingering only delayed its
        // acks (about 6 ms of a 17 ms transaction at 1,000 reviews/s). A/B of 2026-12-04
        // (BENCHMARKS.md): p50 at 1,000/s 28.8 against 32.4 ms, saturation not lower.
        let tunable = [
            ("linger.ms", "0"),
            ("compression.type", "lz4"),
            ("queue.buffering.max.messages", "500000"),
        ];
        let producer: BaseProducer = kafka::producer_config(&f.settings.kafka, &tunable)
            .set("transactional.id", f.transactional_id())
            .set("enable.idempotence", "true")
            // Java clients' partitioner, so every client agrees where a key lives.
            .set("partitioner", "murmur2_random")
            // Bounds how long a crashed instance that never comes back holds up read_committed
            // readers; a restarted one aborts its predecessor's transaction at once.
            .set("transaction.timeout.ms", "30000")
            // Back-to-back transactions meet the previous one's markers still being written
            // (CONCURRENT_TRANSACTIONS); librdkafka retries after this backoff, 100 ms by
            // default, which became most of a record's latency under light load.
            .set("retry.backoff.ms", "5")
            .create()?;
        producer.init_transactions(Duration::from_secs(60))?;
        consumer.subscribe(&[&f.topics.changes])?;
        tracing::info!(transactional_id = %f.transactional_id(), "fraud session started");
        let mut last_report = Instant::now();
        while !shutdown.is_cancelled() {
            let polled = kafka::poll_batch(
                &consumer,
                &f.worker.batch_limits(),
                "fraud",
                RebalanceWatch::tenure,
            );
            // A record whose partition moved while the batch was collected is dropped: its
            // partition is another's now, or was assigned again and re-read from the committed
            // offset. The rest of each kept partition follows on from its committed offset,
            // so the offsets this transaction commits pass only records it produces.
            let polled_count = polled.len();
            let watch = consumer.context();
            if let Some(e) = watch
                .failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                return Err(e.into());
            }
            let batch: Vec<OwnedMessage> = polled
                .into_iter()
                .filter(|(tenure, m)| tenure.is_some() && *tenure == watch.tenure(m.partition()))
                .map(|(_, m)| m)
                .collect();
            if batch.len() < polled_count {
                self.counters.discarded.inc();
            }
            if !batch.is_empty() {
                self.transact(&consumer, &producer, &batch)?;
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                last_report = Instant::now();
                self.report(&consumer);
            }
        }
        self.report(&consumer);
        Ok(())
    }

    fn transact(
        &mut self,
        consumer: &BaseConsumer<RebalanceWatch>,
        producer: &BaseProducer,
        batch: &[OwnedMessage],
    ) -> Result<()> {
        producer.begin_transaction()?;
        let produced = match self.produce_batch(consumer, producer, batch) {
            Ok(produced) => produced,
            Err(e) => {
                tracing::warn!(error = %e, "fraud: aborting the transaction");
                if let Err(abort) = producer.abort_transaction(Duration::from_secs(30)) {
                    tracing::warn!(error = %abort, "fraud: abort failed; the broker times it out");
                }
                return Err(e);
            }
        };
        let c = &self.counters;
        for (kind, n) in produced {
            let counter = match kind {
                Kind::Valid => &c.valid,
                Kind::Fraud => &c.fraud,
                Kind::Verdict => &c.verdicts,
                Kind::DeadLetter => &c.dead_letters,
            };
            counter.inc_by(n);
        }
        c.consumed.inc_by(batch.len() as u64);
        c.transactions.inc();
        Ok(())
    }

    fn produce_batch(
        &mut self,
        consumer: &BaseConsumer<RebalanceWatch>,
        producer: &BaseProducer,
        batch: &[OwnedMessage],
    ) -> Result<HashMap<Kind, u64>> {
        let mut produced = HashMap::new();
        let mut next_offsets = BTreeMap::new();
        let mut phase = Phases::start();
        for m in batch {
            for out in self.outputs(m)? {
                send(producer, &out)?;
                *produced.entry(out.kind).or_default() += 1;
            }
            next_offsets.insert(m.partition(), m.offset() + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, next) in next_offsets {
            offsets.add_partition_offset(
                &self.fraud.topics.changes,
                partition,
                Offset::Offset(next),
            )?;
        }
        let group = consumer
            .group_metadata()
            .ok_or_else(|| Error::Config("the fraud consumer has no group metadata".into()))?;
        phase.ended(&self.counters.produce);
        producer.send_offsets_to_transaction(&offsets, &group, Duration::from_secs(30))?;
        phase.ended(&self.counters.offsets);
        // The crash that hurts most: everything produced, nothing committed.
        crate::failpoint::hit(crate::failpoint::FRAUD_BEFORE_COMMIT)?;
        await_deliveries(producer, Duration::from_secs(60))?;
        phase.ended(&self.counters.deliveries);
        producer.commit_transaction(Duration::from_secs(60))?;
        phase.ended(&self.counters.commit);
        crate::failpoint::hit(crate::failpoint::FRAUD_AFTER_COMMIT)?;
        Ok(produced)
    }

    fn report(&self, consumer: &BaseConsumer<RebalanceWatch>) {
        let c = &self.counters;
        let lags = kafka::partition_lags(consumer);
        metrics::set_consumer_lag(STAGE, &lags);
        tracing::info!(
            consumed = c.consumed.get(),
            valid = c.valid.get(),
            fraud = c.fraud.get(),
            verdicts = c.verdicts.get(),
            dead_letters = c.dead_letters.get(),
            transactions = c.transactions.get(),
            discarded_batches = c.discarded.get(),
            lag = lags.iter().map(|(_, _, lag)| lag).sum::<i64>(),
            "fraud progress"
        );
    }
}

/// Waits until the broker has acknowledged every record of the transaction. rdkafka's
/// `commit_transaction` flushes by itself, but its BaseProducer flush polls in 100 ms steps
/// that always run to the end: every transaction paid 100 ms (measured by `reviewflow bench`).
/// Polling in 1 ms steps here leaves it nothing to wait for.
fn await_deliveries(producer: &BaseProducer, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while producer.in_flight_count() > 0 {
        if Instant::now() > deadline {
            // A new session aborts the transaction and starts over from the committed offsets.
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut).into());
        }
        producer.poll(Duration::from_millis(1));
    }
    Ok(())
}

/// Produces one record, waiting while the producer's queue is full.
fn send(producer: &BaseProducer, out: &Output) -> Result<()> {
    let mut record = BaseRecord::<[u8], [u8]>::to(&out.topic).payload(&out.value[..]);
    if let Some(key) = &out.key {
        record = record.key(&key[..]);
    }
    if let Some(p) = out.partition {
        record = record.partition(p);
    }
    if let Some(h) = &out.headers {
        record = record.headers(h.clone());
    }
    kafka::produce::send_polling(producer, record)
}
