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
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::FraudConfig;
use crate::avro::{envelope, verdict, wire};
use crate::config::{Settings, TopicSettings, WorkerSettings};
use crate::contract::change::{ChangeEvent, Op};
use crate::contract::image::ReviewImage;
use crate::contract::verdict::{Deletion, Record};
use crate::error::{Error, Result};
use crate::kafka::{self, client_config};
use crate::metrics;
use crate::registry::{key_subject, value_subject, Registry};
use crate::transform::score::{self, Judgement, Scorer};

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
    /// Batches dropped because a rebalance took partitions while they were collected.
    discarded: Counter,
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
            return Err(Error::Config(format!(
                "{} has {valid_partitions} partitions but {} has {partitions}: the valid changelog \
                 needs at least as many (add partitions to it, or recreate it)",
                topics.valid, topics.changes
            )));
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

    fn transactional_id(&self) -> String {
        format!("{}-{}", self.config.group, self.worker.instance())
    }
}

/// Counts revocations, so a batch collected across a rebalance is recognised and dropped.
#[derive(Default)]
struct RebalanceWatch {
    revocations: AtomicU64,
}

impl ClientContext for RebalanceWatch {}

impl ConsumerContext for RebalanceWatch {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                self.revocations.fetch_add(1, Ordering::SeqCst);
                tracing::info!(partitions = tpl.count(), "fraud: partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = ?partition_numbers(tpl), "fraud: partitions assigned")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "fraud: rebalance failed"),
        }
    }
}

fn partition_numbers(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// One consumer and one transactional producer, on a blocking thread: a batch is collected,
/// then produced and committed, before the consumer is polled again, so no transaction is
/// ever open while a rebalance runs.
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

/// A record's way out: to a topic, keyed, in a given partition or by key.
struct Output {
    kind: Kind,
    topic: String,
    partition: Option<i32>,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Option<OwnedHeaders>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Valid,
    Fraud,
    Verdict,
    DeadLetter,
}

/// Why a record cannot be read: it goes to the dead-letter topic with this reason.
struct Poison(String);

impl Session {
    fn run(mut self, shutdown: &CancellationToken) -> Result<()> {
        let f = self.fraud.clone();
        let consumer: BaseConsumer<RebalanceWatch> = kafka::worker_consumer_config(
            &f.settings.kafka,
            &f.config.group,
            &f.worker.batch_limits(),
        )
        .create_with_context(RebalanceWatch::default())?;
        let producer: BaseProducer = client_config(&f.settings.kafka)
            .set("transactional.id", f.transactional_id())
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "500000")
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
            let generation = consumer.context().revocations.load(Ordering::SeqCst);
            let batch = kafka::poll_batch(&consumer, &f.worker.batch_limits(), "fraud");
            if consumer.context().revocations.load(Ordering::SeqCst) != generation {
                // The partitions were reassigned from their committed offsets: whatever of
                // this batch is still ours will be read again.
                self.counters.discarded.inc();
                continue;
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
        producer.send_offsets_to_transaction(&offsets, &group, Duration::from_secs(30))?;
        // The crash that hurts most: everything produced, nothing committed.
        crate::failpoint::hit(crate::failpoint::FRAUD_BEFORE_COMMIT)?;
        await_deliveries(producer, Duration::from_secs(60))?;
        producer.commit_transaction(Duration::from_secs(60))?;
        crate::failpoint::hit(crate::failpoint::FRAUD_AFTER_COMMIT)?;
        Ok(produced)
    }

    /// Everything one input record becomes; a record that cannot be read becomes a
    /// dead letter. Errors are only what a new session may cure (registry, broker).
    fn outputs(&mut self, m: &OwnedMessage) -> Result<Vec<Output>> {
        let read = match self.read(m)? {
            Ok(read) => read,
            Err(Poison(reason)) => {
                tracing::warn!(partition = m.partition(), offset = m.offset(), %reason, "fraud: dead letter");
                let topics = &self.fraud.topics;
                return Ok(vec![Output {
                    kind: Kind::DeadLetter,
                    topic: topics.dead_letters.clone(),
                    partition: None,
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers: Some(kafka::dead_letter_headers(
                        "fraud",
                        &reason,
                        &topics.changes,
                        m.partition(),
                        m.offset(),
                    )),
                }]);
            }
        };
        let Read {
            event,
            schema_id,
            body,
            key,
        } = read;
        let mut out = Vec::new();
        let judge = |image: &Option<ReviewImage>| {
            image
                .as_ref()
                .map(|i| score::judge(self.scorer.as_ref(), i))
        };
        let (before, after) = (judge(&event.before), judge(&event.after));
        if let (Some(row), Some(j)) = (&event.after, &after) {
            out.extend(self.verdict_records(&event, row, j)?);
        }
        if let Some(gone) = deletion(&event) {
            out.push(self.deletion_record(&gone, m.partition())?);
        }
        if let Some(value) = self.valid_change(&event, schema_id, body, &before, &after)? {
            out.push(Output {
                kind: Kind::Valid,
                topic: self.fraud.topics.valid.clone(),
                partition: Some(m.partition()),
                key: key.map(|k| wire::frame(self.ids.valid_key, k)),
                value,
                headers: None,
            });
        }
        Ok(out)
    }

    /// The change as the valid changelog states it, when it changes the valid set.
    fn valid_change(
        &mut self,
        event: &ChangeEvent,
        schema_id: u32,
        body: &[u8],
        before: &Option<Judgement>,
        after: &Option<Judgement>,
    ) -> Result<Option<Vec<u8>>> {
        let keep_before = before.as_ref().is_some_and(|j| !j.fraud);
        let keep_after = after.as_ref().is_some_and(|j| !j.fraud);
        let writer = self.writer(schema_id)?;
        let valid_id = self.valid_schema_id(schema_id, &writer)?;
        let restated = |op| envelope::restate(&writer, body, op, keep_before, keep_after);
        let value = match (event.op, keep_before, keep_after) {
            (Op::Truncate, _, _) => body.to_vec(),
            (_, false, false) => return Ok(None),
            // Both images valid, or the only image valid: the change as it came.
            (_, true, true) => body.to_vec(),
            (_, false, true) if before.is_none() => body.to_vec(),
            (_, true, false) if after.is_none() => body.to_vec(),
            // An edit flipped the verdict: the review enters or leaves the set.
            (_, false, true) => restated(Op::Create)?,
            (_, true, false) => restated(Op::Delete)?,
        };
        Ok(Some(wire::frame(valid_id, &value)))
    }

    fn verdict_records(
        &self,
        event: &ChangeEvent,
        row: &ReviewImage,
        j: &Judgement,
    ) -> Result<Vec<Output>> {
        let mut v = j.verdict(
            row,
            event.source.id(),
            self.scorer.model(),
            event.digest.clone(),
            judged_oversize(event),
        );
        let key = wire::frame(self.ids.review_key, &envelope::encode_key(row.id)?);
        let topics = &self.fraud.topics;
        let mut out = vec![Output {
            kind: Kind::Verdict,
            topic: topics.verdicts.clone(),
            partition: None,
            key: Some(key.clone()),
            value: wire::frame(self.ids.verdict_value, &verdict::encode(&v)?),
            headers: None,
        }];
        if j.fraud {
            v.review = Some(row.clone());
            out.push(Output {
                kind: Kind::Fraud,
                topic: topics.fraud.clone(),
                partition: None,
                key: Some(key),
                value: wire::frame(self.ids.fraud_value, &verdict::encode(&v)?),
                headers: None,
            });
        }
        Ok(out)
    }

    /// The verdicts topic's record of a deletion: keyed by the review like its verdicts, so
    /// it follows them in their partition. A truncate comes in on every changes partition;
    /// the sink keeps the newest, so each copy may go to any partition (to the one it came
    /// in on, modulo the verdict topic's).
    fn deletion_record(&self, gone: &Record, partition: i32) -> Result<Output> {
        let (key, partition) = match gone {
            Record::Deleted(d) => (
                Some(wire::frame(
                    self.ids.review_key,
                    &envelope::encode_key(d.review_id)?,
                )),
                None,
            ),
            _ => (None, Some(partition % self.ids.verdict_partitions.max(1))),
        };
        Ok(Output {
            kind: Kind::Verdict,
            topic: self.fraud.topics.verdicts.clone(),
            partition,
            key,
            value: wire::frame(self.ids.verdict_value, &verdict::encode_record(gone)?),
            headers: None,
        })
    }

    /// The record decoded, or why it is poison. Only registry or broker trouble is an error.
    fn read<'m>(&mut self, m: &'m OwnedMessage) -> Result<Result<Read<'m>, Poison>> {
        let framed = match self.runtime.block_on(self.registry.resolve(m.payload()))? {
            Ok(framed) => framed,
            Err(reason) => return Ok(Err(Poison(format!("value: {reason}")))),
        };
        let key = match m.key().map(wire::unframe).transpose() {
            Ok(key) => key.map(|(_, k)| k),
            Err(e) => return Ok(Err(Poison(format!("key: {e}")))),
        };
        match self.readers.read(framed.id, &framed.schema, framed.body) {
            Ok(event) => Ok(Ok(Read {
                event,
                schema_id: framed.id,
                body: framed.body,
                key,
            })),
            Err(e) => Ok(Err(Poison(format!("not a change event of reviews: {e}")))),
        }
    }

    fn writer(&self, schema_id: u32) -> Result<Arc<apache_avro::Schema>> {
        self.runtime.block_on(self.registry.schema(schema_id))
    }

    fn valid_schema_id(&mut self, input_id: u32, writer: &apache_avro::Schema) -> Result<u32> {
        if let Some(id) = self.valid_ids.get(&input_id) {
            return Ok(*id);
        }
        let subject = value_subject(&self.fraud.topics.valid);
        let id = self
            .runtime
            .block_on(self.registry.register(&subject, writer))?;
        self.valid_ids.insert(input_id, id);
        Ok(id)
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

/// What a change ends: a review deleted, or whose id an UPDATE changed (the old id is gone
/// as surely), or every review (a TRUNCATE).
fn deletion(event: &ChangeEvent) -> Option<Record> {
    let (version, position) = (event.source.lsn, event.source.position);
    let gone = match (event.op, &event.before, &event.after) {
        (Op::Truncate, _, _) => return Some(Record::Truncated { version, position }),
        (Op::Delete, Some(before), _) => before,
        (Op::Update, Some(before), Some(after)) if before.id != after.id => before,
        _ => return None,
    };
    Some(Record::Deleted(Deletion {
        review_id: gone.id,
        course_id: gone.course_id,
        version,
        position,
    }))
}

/// The after image's columns carried as oversize markers, by name: what the verdict judged.
pub fn judged_oversize(event: &ChangeEvent) -> Vec<String> {
    event
        .oversize
        .iter()
        .filter_map(|c| c.strip_prefix("after."))
        .map(str::to_string)
        .collect()
}

struct Read<'m> {
    event: ChangeEvent,
    schema_id: u32,
    body: &'m [u8],
    key: Option<&'m [u8]>,
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
