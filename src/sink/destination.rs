//! The one loop of the PostgreSQL sinks, and the trait a sink implements to be driven by it.
//!
//! The loop owns everything the sinks share: the input topic, the feed of batches, decoding
//! into records or dead letters, the transaction that holds the partitions, advances their
//! offsets and commits, the crash point before that commit, the metrics, and the sessions
//! that restart after a failure. A sink states only what is its own (`Destination`).

use std::collections::HashMap;
use std::future::Future;

use deadpool_postgres::Pool;
use rdkafka::message::OwnedMessage;
use tokio::time::Instant;
use tokio_postgres::Transaction;
use tokio_util::sync::CancellationToken;

use super::dead_letters::DeadLetters;
use super::feed::{self, Batch, FeedConfig};
use super::offsets::{self, Advance, Applied};
use crate::config::{Settings, TopicSettings, WorkerSettings};
use crate::error::Result;
use crate::failpoint::Point;
use crate::metrics;
use crate::registry::Registry;

/// Tables in PostgreSQL fed from one Kafka topic by `run`.
///
/// Delivery guarantee: exactly-once into PostgreSQL, whatever the sink writes.
/// - Each batch is written in one transaction that also advances the batch's partitions in
///   `sink_offsets`, so rows and offsets commit together or not at all. A crash at any instant
///   leaves the tables as of the last commit, and the feed resumes at the offsets committed
///   with them (Kafka's committed offsets are never used), so no record is lost or applied
///   twice by the sink itself.
/// - Fencing by epoch: a partition is claimed when assigned, which bumps its epoch; the
///   transaction first locks the batch's partition rows and checks the epochs the batch was
///   read under (`offsets::hold`). A worker that lost a partition rolls back instead of
///   committing over the new owner, and starts a new session.
/// - Restart and rebalance: a new session (after a failure, with backoff) or a new owner
///   claims the partitions and reads from their committed offsets; a batch read across a
///   rebalance is dropped by the feed before it reaches `write`.
/// - A record `decode` refuses goes to the dead-letter topic, acknowledged before the
///   transaction begins: never lost, maybe sent twice after a crash (at-least-once there).
/// - Copies made upstream (the same change in two records) are the sink's to absorb: by the
///   source positions it returns in `Written::positions`, which commit with the offsets and
///   come back to the next `write`, or by writes that keep a maximum.
pub trait Destination: Sync {
    /// Names its rows in sink_offsets, its `stage` label in the metrics and its sessions.
    const CONSUMER: &'static str;
    /// Where a test crashes it: a batch's rows and offsets written, not committed.
    const BEFORE_COMMIT: Point;
    /// A record decoded, as `write` takes it.
    type Record: Send;
    /// What decoding keeps from record to record in a session (schema readers, say).
    type Decoder: Default + Send;
    /// What `committed` learns of a batch once it is durable.
    type Receipt: Send;

    /// The input topic.
    fn topic(&self) -> &str;
    /// The consumer group its workers share the topic's partitions in.
    fn group(&self) -> &str;

    /// A record read, or why it cannot be (the reason a dead letter carries); an `Err` is
    /// trouble that a new session may cure, such as the registry out of reach.
    fn decode(
        &self,
        registry: &Registry,
        decoder: &mut Self::Decoder,
        m: &OwnedMessage,
    ) -> impl Future<Output = Result<std::result::Result<Self::Record, String>>> + Send;

    /// Writes a batch's records, in stream order per partition, inside the transaction that
    /// holds the partitions; `applied` is the last source position stored for each.
    fn write(
        &self,
        tx: &Transaction<'_>,
        applied: HashMap<i32, Applied>,
        records: Vec<(&OwnedMessage, Self::Record)>,
    ) -> impl Future<Output = Result<Written<Self::Receipt>>> + Send;

    /// Work due with time rather than records, in its own transaction: run as each session
    /// starts, then again at the instant it returns (`None`: not again this session).
    fn tick(&self, _pool: &Pool) -> impl Future<Output = Result<Option<Instant>>> + Send {
        async { Ok(None) }
    }

    /// Called once a batch committed, with what its `write` returned for it.
    fn committed(&self, _receipt: Self::Receipt) {}
}

/// What a `write` did, as the loop needs it.
pub struct Written<R> {
    /// The source position of the last change applied per partition, stored with the
    /// offsets; a partition left out keeps the one it had (all, for a sink that tracks none).
    pub positions: HashMap<i32, Applied>,
    /// How many changes it applied (`events_out` with output "applied").
    pub applied: u64,
    pub receipt: R,
}

/// Runs `sink` until `shutdown`, or a failure a new session cannot cure.
pub async fn run<D: Destination>(
    sink: &D,
    settings: &Settings,
    topics: &TopicSettings,
    worker: &WorkerSettings,
    shutdown: CancellationToken,
) -> Result<()> {
    let setup = || Parts::new::<D>(sink, settings, topics, worker);
    let Some(parts) = crate::retry::setup(D::CONSUMER, &shutdown, setup).await? else {
        return Ok(());
    };
    crate::retry::sessions(D::CONSUMER, &shutdown, || async {
        let stop = shutdown.child_token();
        let _stop_feed = stop.clone().drop_guard();
        let mut batches = feed::start(parts.feed.clone(), parts.pool.clone(), stop);
        let mut decoder = D::Decoder::default();
        let mut due = Some(Instant::now());
        loop {
            tokio::select! {
                batch = batches.next() => match batch {
                    Some(batch) => apply(sink, &parts, &mut decoder, batch?).await?,
                    None => return Ok(()),
                },
                () = wait(due) => due = sink.tick(&parts.pool).await?,
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    })
    .await
}

/// Until `due`; forever when None, so a sink with nothing due never ticks.
async fn wait(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A batch that takes this long is logged with where its time went.
const SLOW_BATCH: std::time::Duration = std::time::Duration::from_secs(1);

/// One batch: decoded, its dead letters sent, then written and its offsets advanced in one
/// transaction under the epochs it was read with.
async fn apply<D: Destination>(
    sink: &D,
    parts: &Parts,
    decoder: &mut D::Decoder,
    batch: Batch,
) -> Result<()> {
    let started = Instant::now();
    let mut records = Vec::with_capacity(batch.records.len());
    let mut dead = Vec::new();
    for m in &batch.records {
        match sink.decode(&parts.registry, decoder, m).await? {
            Ok(record) => records.push((m, record)),
            Err(reason) => dead.push((m, reason)),
        }
    }
    // Before the transaction: a crash after it commits must not leave a letter unsent.
    parts.dead_letters.send(&dead).await?;
    let topic = sink.topic();
    let mut client = parts.pool.get().await?;
    let tx = client.transaction().await?;
    let applied = offsets::hold(&tx, D::CONSUMER, topic, &batch.epochs).await?;
    let writing = Instant::now();
    let written = sink.write(&tx, applied, records).await?;
    let write_took = writing.elapsed();
    let progress: Vec<Advance> = offsets::progress(&batch.records)
        .into_iter()
        .map(|a| Advance {
            applied: written.positions.get(&a.partition).copied().flatten(),
            ..a
        })
        .collect();
    offsets::advance(&tx, D::CONSUMER, topic, &progress).await?;
    // The crash that hurts most: rows written, offsets written, nothing committed.
    crate::failpoint::hit(D::BEFORE_COMMIT)?;
    let committing = Instant::now();
    tx.commit().await?;
    let took = started.elapsed();
    if took >= SLOW_BATCH {
        // Every record of the batch waited that long, and the sink's tables held still.
        tracing::warn!(
            sink = D::CONSUMER,
            records = batch.records.len(),
            ms = took.as_millis() as u64,
            write_ms = write_took.as_millis() as u64,
            commit_ms = committing.elapsed().as_millis() as u64,
            "a batch took over a second"
        );
    }
    sink.committed(written.receipt);
    metrics::events_in(D::CONSUMER).inc_by(batch.records.len() as u64);
    metrics::events_out(D::CONSUMER, "applied").inc_by(written.applied);
    metrics::dead_letters(D::CONSUMER).inc_by(dead.len() as u64);
    metrics::transactions(D::CONSUMER).inc();
    Ok(())
}

/// What the loop keeps for the life of a sink: the registry, a connection pool, the
/// dead-letter producer and the feed's configuration.
struct Parts {
    /// Two live sinks with one owner name would make `sink_offsets` unreadable to a person.
    _instance: Option<crate::instance::InstanceLock>,
    registry: Registry,
    pool: Pool,
    dead_letters: DeadLetters,
    feed: FeedConfig,
}

impl Parts {
    /// Creates the input topic when missing, then connects.
    async fn new<D: Destination>(
        sink: &D,
        settings: &Settings,
        topics: &TopicSettings,
        worker: &WorkerSettings,
    ) -> Result<Parts> {
        let (kafka, topic) = (&settings.kafka, sink.topic());
        crate::kafka::check_group_settings(kafka)?;
        let instance = crate::instance::claim(sink.group(), &worker.instance())?;
        crate::kafka::ensure_history_topic(
            kafka,
            topic,
            topics.partitions,
            topics.replication_factor,
        )
        .await?;
        // Its own dead letters' topic too: a sink started before fraud must not wait for it.
        let (partitions, replication) = (topics.partitions, topics.replication_factor);
        crate::kafka::ensure_topic(kafka, &topics.dead_letters, partitions, replication, &[])
            .await?;
        Ok(Parts {
            _instance: instance,
            registry: Registry::connect(settings).await?,
            pool: crate::db::pool(&settings.database_url, 4)?,
            dead_letters: DeadLetters::new(kafka, &topics.dead_letters, D::CONSUMER)?,
            feed: FeedConfig {
                kafka: kafka.clone(),
                group: sink.group().into(),
                topic: topic.into(),
                consumer: D::CONSUMER.into(),
                owner: worker.instance(),
                limits: worker.clone(),
            },
        })
    }
}
