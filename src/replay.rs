//! `reviewflow replay`: rebuilds the stats worker's tables (course_stats, course_daily_stats,
//! course_review_times) from history, so that afterwards the invariant of DESIGN.md holds
//! (`reviewflow verify` finds no difference).
//!
//! Two sources of history:
//!
//! - `--from kafka` (the default) reads the retained valid changelog (reviews.valid), every
//!   partition read_committed up to its high watermark as of the start, and folds it in memory
//!   exactly as the stats worker does: per partition, a change at or below the last source
//!   position seen there is a re-send and is skipped; the last TRUNCATE over all partitions
//!   voids every change before it (by commit LSN, then position inside the transaction),
//!   whichever partition carries it. Records that cannot be
//!   decoded are counted and skipped: the stats worker already sent them to the dead-letter
//!   topic the first time it read them, so they are not sent again. review_verdicts is left
//!   to the verdict sink.
//! - `--from snapshot` reads `reviews` itself, in the snapshot a new temporary logical slot
//!   exports, judges every row with the configured fraud model and rebuilds review_verdicts
//!   (one verdict per review at the slot's consistent point, and the consistent point as the
//!   point before which every review without a row is known deleted) together with the figures. This
//!   is how a new model version is rolled out: DESIGN.md asks for a rebuild rather than a mix
//!   of versions. Start the fraud worker with the same model settings, so that later edits
//!   are judged (and their old images retracted) by the model the rebuild used. A
//!   `--from kafka` replay afterwards would bring back the set the changelog holds, judged by
//!   whichever model wrote it.
//!
//! Guarantees:
//!
//! - Atomic for readers. Everything is read and folded first, with no lock held; the tables
//!   are then replaced in one short PostgreSQL transaction (delete course_stats' rows,
//!   truncate the helper tables, apply the folded figures, record the stats worker's
//!   positions), so a reader of course_stats sees either the old figures or the rebuilt ones
//!   (the deletes also reach the compacted course-stats topic).
//!   Nothing is written when the replay fails or is interrupted before it.
//! - Exact, and running workers carry on exactly. The transaction first claims every
//!   partition of the valid topic for the stats consumer in sink_offsets, as a rebalance
//!   would: a running stats worker's batch in flight rolls back, the worker starts a new
//!   session, claims the partitions again and resumes from the positions the replay recorded.
//!   - From Kafka, each partition resumes at the high watermark read, with the last source
//!     position read from it as its last applied change, and the TRUNCATE found as the state's
//!     truncate point: the worker applies exactly the records after the ones folded.
//!   - From a snapshot, each partition's last applied change becomes "everything committed
//!     before the consistent point" ((consistent point - 1, i64::MAX): a commit LSN is
//!     either below the consistent point or not) and the state's truncate point the
//!     consistent point. That is exact because the exported snapshot sees exactly the
//!     transactions whose commit record lies before the slot's consistent point (the end of
//!     the WAL record at which the slot became consistent), and the slot streams exactly the
//!     others, whose commit LSN is at or after it. So a change the snapshot contains has a
//!     commit LSN below the consistent point (a snapshot read of the CDC reader's own, older
//!     slot carries that slot's earlier consistent point) and one it does not contain has
//!     not: the worker skips every change the snapshot already contains and applies every
//!     later one. A worker that had already gone past the consistent point is sent back:
//!     every record below the high watermarks read just before the slot was created was
//!     produced before the slot existed, so each partition resumes at the lower of its
//!     offset and that watermark, and the records in between are skipped or applied by the
//!     rule above.
//! - The fraud worker and the verdict sink are not disturbed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use futures_util::{pin_mut, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_postgres::Transaction;
use tokio_util::sync::CancellationToken;

use crate::avro::envelope::ChangeReaders;
use crate::avro::verdict::Verdict;
use crate::avro::RowSchema;
use crate::change::Op;
use crate::config::{KafkaSettings, Settings, TopicSettings};
use crate::error::{Error, Result};
use crate::kafka::{client_config, partition_count};
use crate::lsn::{Lsn, SourcePosition};
use crate::registry::Registry;
use crate::sink::offsets::{self, Advance, Applied};
use crate::sink::stats::figures::{self, Deltas};
use crate::sink::stats::{ValidChange, CONSUMER};
use crate::source::replication::ReplicationConnection;
use crate::source::snapshot::{table_filenode, TABLE_SCHEMA};
use crate::transform::from_text::{cells_of, text_columns, TextJudge};
use crate::transform::FraudConfig;

/// The table whose derived state is rebuilt.
const TABLE: &str = "reviews";
use crate::transform::score::{self, Scorer};

/// Where the history is read from.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReplayFrom {
    /// The retained valid changelog (reviews.valid).
    #[default]
    Kafka,
    /// A fresh consistent snapshot of `reviews`, judged by the configured fraud model.
    Snapshot,
}

/// A replay: where to connect, which topics, and the fraud model a snapshot is judged with.
pub struct Replay {
    pub settings: Settings,
    pub topics: TopicSettings,
    pub fraud: FraudConfig,
    /// Recorded as the stats partitions' owner in sink_offsets while they are taken over.
    pub owner: String,
}

/// (commit LSN, position): where a change sits in the source's history.
type Id = (Lsn, i64);

/// Longest a partition may go without the read position moving.
const STALL: Duration = Duration::from_secs(60);
/// Longest the rebuild transaction waits for a lock (a reader's long transaction, a batch).
const LOCK_TIMEOUT: &str = "60s";
/// Review verdicts per statement in a snapshot replay.
const VERDICT_CHUNK: usize = 5000;
/// How often a snapshot replay tries again when the table was truncated as it started.
const SNAPSHOT_ATTEMPTS: usize = 3;

impl Replay {
    /// Runs the replay; the result says what it did. `stop` interrupts the reading, before
    /// anything is written; once the rebuild transaction has started it runs to its end.
    pub async fn run(&self, from: ReplayFrom, stop: &CancellationToken) -> Result<Summary> {
        Ok(match from {
            ReplayFrom::Kafka => Summary::Kafka(self.from_kafka(stop).await?),
            ReplayFrom::Snapshot => Summary::Snapshot(self.from_snapshot(stop).await?),
        })
    }

    /// Rebuilds from the retained valid changelog.
    pub async fn from_kafka(&self, stop: &CancellationToken) -> Result<KafkaSummary> {
        let topic = self.topics.valid.clone();
        let kafka = self.settings.kafka.clone();
        let ranges = {
            let (kafka, topic) = (kafka.clone(), topic.clone());
            tokio::task::spawn_blocking(move || watermarks(&kafka, &topic)).await??
        }
        .ok_or_else(|| {
            Error::Config(format!(
                "topic {topic} does not exist: there is no changelog to replay from \
                 (is REVIEWFLOW_VALID_TOPIC right? `replay --from snapshot` needs no topic)"
            ))
        })?;
        let registry = Registry::connect(&self.settings).await?;
        let total: i64 = ranges.iter().map(|r| r.high - r.low).sum();
        tracing::info!(%topic, partitions = ranges.len(), offsets = total, "replay from kafka: reading");
        let bar = progress_bar(
            total,
            "replay {bar:40} {pos}/{len} offsets {per_sec} eta {eta}",
        );

        let mut read = fold_ranges(&kafka, &topic, &ranges, None, &registry, &bar, stop).await?;
        // The last TRUNCATE voids what came before it in every partition. Where a partition
        // folded changes from before it (it did not carry that truncate), read it again
        // without them: folded figures cannot be split after the fact.
        let cut = read.folds.values().filter_map(|f| f.cut).max();
        if let Some(cut) = cut {
            let again: Vec<Range> = ranges
                .iter()
                .filter(|r| {
                    read.folds
                        .get(&r.partition)
                        .is_some_and(|f| f.straddles(cut))
                })
                .cloned()
                .collect();
            if !again.is_empty() {
                tracing::info!(
                    partitions = ?again.iter().map(|r| r.partition).collect::<Vec<_>>(),
                    truncate = %cut.0,
                    "partitions without the last TRUNCATE hold changes before it: reading them again"
                );
                bar.inc_length(again.iter().map(|r| (r.high - r.low) as u64).sum());
                let second =
                    fold_ranges(&kafka, &topic, &again, Some(cut), &registry, &bar, stop).await?;
                read.folds.extend(second.folds);
            }
        }
        bar.finish_and_clear();
        if stop.is_cancelled() {
            return Err(interrupted());
        }

        let mut summary = KafkaSummary {
            topic: topic.clone(),
            partitions: ranges.len(),
            records: read.records,
            undecodable: read.undecodable,
            truncated_at: cut.map(|c| c.0),
            ..KafkaSummary::default()
        };
        for fold in read.folds.values() {
            summary.changes += fold.changes;
            summary.folded += fold.kept;
            summary.duplicates += fold.duplicates;
        }

        let mut client = crate::db::connect(&self.settings.database_url).await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            .await?;
        let partitions: Vec<i32> = ranges.iter().map(|r| r.partition).collect();
        // Fences running stats workers: their batch in flight rolls back, they claim again.
        offsets::claim(&tx, CONSUMER, &topic, &partitions, &self.owner).await?;
        let state = figures::lock_state(&tx).await?;
        let today = today().max(state.rolled_through.unwrap_or(NaiveDate::MIN));
        rebuild_start(&tx, cut.unwrap_or((Lsn::ZERO, 0)), today).await?;
        for fold in read.folds.values() {
            figures::apply(&tx, &fold.deltas, today).await?;
        }
        forget_applied(&tx, &topic, &partitions).await?;
        let progress: Vec<Advance> = ranges
            .iter()
            .map(|r| Advance {
                partition: r.partition,
                next_offset: r.high,
                applied: read.folds.get(&r.partition).and_then(|f| f.last),
            })
            .collect();
        offsets::advance(&tx, CONSUMER, &topic, &progress).await?;
        summary.courses = course_count(&tx).await?;
        tx.commit().await?;
        tracing::info!(?summary, "replay from kafka committed");
        Ok(summary)
    }

    /// Rebuilds from a fresh consistent snapshot of `reviews`, judged by the configured model.
    pub async fn from_snapshot(&self, stop: &CancellationToken) -> Result<SnapshotSummary> {
        let scorer = score::scorer(self.fraud.scorer, self.fraud.fraud_threshold)?;
        let topic = self.topics.valid.clone();
        // Before the slot exists: every record below these was produced before it.
        let ranges = {
            let (kafka, topic) = (self.settings.kafka.clone(), topic.clone());
            tokio::task::spawn_blocking(move || watermarks(&kafka, &topic)).await??
        };
        let before: HashMap<i32, i64> = ranges
            .iter()
            .flatten()
            .map(|r| (r.partition, r.high))
            .collect();

        let mut attempt = 1;
        let read = loop {
            let reading = self.read_snapshot(scorer.as_ref());
            let result = tokio::select! {
                r = reading => r,
                _ = stop.cancelled() => return Err(interrupted()),
            };
            match result {
                Err(Error::Replication(why)) if attempt < SNAPSHOT_ATTEMPTS => {
                    tracing::warn!(attempt, %why, "snapshot abandoned; taking another");
                    attempt += 1;
                }
                other => break other?,
            }
        };
        if stop.is_cancelled() {
            return Err(interrupted());
        }

        let cp = read.consistent_point;
        // The last possible source position of a change the snapshot contains.
        let before_snapshot = (Lsn(cp.0.saturating_sub(1)), i64::MAX);
        let mut client = crate::db::connect(&self.settings.database_url).await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            .await?;
        for chunk in read.verdicts.chunks(VERDICT_CHUNK) {
            crate::sink::verdicts::upsert(&tx, chunk).await?;
        }
        // Every row the snapshot held now has a verdict at (cp, -1); a review whose newest
        // verdict is older and has no row was gone by the consistent point, so its delete
        // is accounted for, whether the fraud worker saw it or not.
        crate::sink::verdicts::deleted_before(&tx, (cp, -1).into()).await?;
        // Every partition a worker may hold: those Kafka knew before the slot, and those
        // claimed in sink_offsets (a topic created since). A partition Kafka did not report
        // resumes from its start; the changes the snapshot holds are skipped there too.
        let mut partitions: BTreeSet<i32> = before.keys().copied().collect();
        partitions.extend(claimed_partitions(&tx, &topic).await?);
        let partitions: Vec<i32> = partitions.into_iter().collect();
        let claims = if partitions.is_empty() {
            HashMap::new()
        } else {
            offsets::claim(&tx, CONSUMER, &topic, &partitions, &self.owner).await?
        };
        let state = figures::lock_state(&tx).await?;
        let today = today().max(state.rolled_through.unwrap_or(NaiveDate::MIN));
        rebuild_start(&tx, before_snapshot, today).await?;
        figures::apply(&tx, &read.deltas, today).await?;
        let progress: Vec<Advance> = partitions
            .iter()
            .map(|p| Advance {
                partition: *p,
                next_offset: claims
                    .get(p)
                    .map_or(0, |c| c.next_offset)
                    .min(before.get(p).copied().unwrap_or(0)),
                applied: Some(before_snapshot.into()),
            })
            .collect();
        offsets::advance(&tx, CONSUMER, &topic, &progress).await?;
        let courses = course_count(&tx).await?;
        tx.commit().await?;
        let summary = SnapshotSummary {
            consistent_point: cp,
            rows: read.rows,
            valid: read.valid,
            fraud: read.verdicts.len() as u64 - read.valid,
            model: scorer.model().to_string(),
            courses,
            partitions: partitions.len(),
        };
        tracing::info!(?summary, "replay from snapshot committed");
        Ok(summary)
    }

    /// Creates a temporary slot with an exported snapshot, reads and judges every row in
    /// it. The slot goes with the replication session, at the end of this call.
    async fn read_snapshot(&self, scorer: &dyn Scorer) -> Result<SnapshotRead> {
        let url = &self.settings.database_url;
        let reader = crate::db::connect(url).await?;
        // TRUNCATE is not MVCC-safe: a snapshot taken before one that commits before our
        // lock would read an empty table. Such a TRUNCATE gives the table a new file node.
        let filenode = table_filenode(&reader, TABLE).await?;
        let mut replication = ReplicationConnection::connect(url).await?;
        let slot = format!(
            "reviewflow_replay_{}_{}",
            std::process::id(),
            chrono::Utc::now().timestamp_millis()
        );
        let created = replication
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {slot} TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')"
            ))
            .await?;
        let column = |i: usize| created.first().and_then(|r| r.get(i)).cloned().flatten();
        let consistent_point: Lsn = column(1)
            .ok_or_else(|| {
                Error::Replication("CREATE_REPLICATION_SLOT returned no consistent point".into())
            })?
            .parse()
            .map_err(|e| Error::Replication(format!("consistent point of slot {slot}: {e}")))?;
        let snapshot = column(2).ok_or_else(|| {
            Error::Replication("CREATE_REPLICATION_SLOT exported no snapshot".into())
        })?;
        tracing::info!(%slot, %consistent_point, "temporary slot created; reading its snapshot");
        reader
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
                 SET TRANSACTION SNAPSHOT '{}';
                 LOCK TABLE {TABLE_SCHEMA}.{TABLE} IN ACCESS SHARE MODE;",
                snapshot.replace('\'', "''")
            ))
            .await?;
        if table_filenode(&reader, TABLE).await? != filenode {
            return Err(Error::Replication(format!(
                "{TABLE_SCHEMA}.{TABLE} was truncated or rewritten while the snapshot was starting"
            )));
        }
        let total: i64 = reader
            .query_one(&format!("SELECT count(*) FROM {TABLE_SCHEMA}.{TABLE}"), &[])
            .await?
            .get(0);
        let bar = progress_bar(
            total,
            "snapshot {bar:40} {pos}/{len} rows {per_sec} eta {eta}",
        );
        let columns = crate::source::snapshot::table_columns(&reader, TABLE).await?;
        let mut judge = TextJudge::new(RowSchema::new(
            TABLE_SCHEMA,
            TABLE,
            columns.iter().cloned(),
        )?);
        let select = text_columns(columns.iter().map(|(name, _, _)| name.as_str()));
        let rows = reader
            .query_raw(
                &format!("SELECT {select} FROM {TABLE_SCHEMA}.{TABLE}"),
                std::iter::empty::<i32>(),
            )
            .await?;
        pin_mut!(rows);
        let mut read = SnapshotRead {
            consistent_point,
            rows: 0,
            valid: 0,
            deltas: Deltas::default(),
            verdicts: Vec::with_capacity(usize::try_from(total).unwrap_or(0)),
        };
        while let Some(row) = rows.try_next().await? {
            let texts: Vec<Option<&str>> = (0..columns.len())
                .map(|i| row.try_get(i))
                .collect::<std::result::Result<_, _>>()?;
            let cells = cells_of(&texts);
            let (image, judgement) = judge.judge(&cells, &[], scorer)?;
            if let Ok(review) = image.countable() {
                if !judgement.fraud {
                    read.deltas.add(&review, 1);
                    read.valid += 1;
                }
            }
            read.verdicts.push(Verdict {
                review_id: image.id,
                course_id: image.course_id,
                version: consistent_point,
                // Position -1: a streamed change committed at the consistent point wins.
                position: -1,
                fraud: judgement.fraud,
                score: judgement.score,
                reasons: judgement.reasons,
                model: scorer.model().to_string(),
                digest: Some(judge.schema.digest(&cells)),
                oversize: Vec::new(),
                review: None,
            });
            read.rows += 1;
            bar.inc(1);
        }
        bar.finish_and_clear();
        reader.batch_execute("COMMIT").await?;
        drop(replication);
        Ok(read)
    }
}

/// What a Kafka replay did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KafkaSummary {
    pub topic: String,
    pub partitions: usize,
    /// Records read (committed data records, control records not included).
    pub records: u64,
    /// Records that could not be decoded, skipped (they are in the dead-letter topic).
    pub undecodable: u64,
    /// Changes read once each (a re-send counted once), truncates not included.
    pub changes: u64,
    /// Changes folded into the figures: those after the last TRUNCATE.
    pub folded: u64,
    /// Re-sent changes skipped.
    pub duplicates: u64,
    /// Commit LSN of the last TRUNCATE, when there was one.
    pub truncated_at: Option<Lsn>,
    /// Rows of course_stats after the rebuild.
    pub courses: i64,
}

/// What a snapshot replay did.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotSummary {
    pub consistent_point: Lsn,
    pub rows: u64,
    pub valid: u64,
    pub fraud: u64,
    pub model: String,
    pub courses: i64,
    /// Partitions of the valid topic whose stats worker positions were set.
    pub partitions: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Summary {
    Kafka(KafkaSummary),
    Snapshot(SnapshotSummary),
}

impl fmt::Display for KafkaSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replayed {} ({} partitions, {} records): {} of {} changes folded into {} courses",
            self.topic, self.partitions, self.records, self.folded, self.changes, self.courses
        )?;
        if let Some(lsn) = self.truncated_at {
            write!(
                f,
                ", {} voided by the TRUNCATE at {lsn}",
                self.changes - self.folded
            )?;
        }
        write!(
            f,
            "; {} re-sent duplicates skipped; {} undecodable records skipped (already in the dead-letter topic)",
            self.duplicates, self.undecodable
        )
    }
}

impl fmt::Display for SnapshotSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replayed a snapshot of {TABLE} at {}: {} rows judged by {} ({} valid, {} fraud), \
             {} courses; stats workers apply the changes from {} on ({} partitions)",
            self.consistent_point,
            self.rows,
            self.model,
            self.valid,
            self.fraud,
            self.courses,
            self.consistent_point,
            self.partitions
        )
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Summary::Kafka(s) => s.fmt(f),
            Summary::Snapshot(s) => s.fmt(f),
        }
    }
}

/// One partition's offsets to read: [low, high).
#[derive(Clone, Debug)]
struct Range {
    partition: i32,
    low: i64,
    high: i64,
}

/// The watermarks of every partition of `topic` (read_committed: the high one is the last
/// stable offset); None when the topic does not exist. Blocking.
fn watermarks(kafka: &KafkaSettings, topic: &str) -> Result<Option<Vec<Range>>> {
    let consumer: BaseConsumer = reader_config(kafka).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    match metadata.topics().first().and_then(|t| t.error()) {
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => return Ok(None),
        Some(e) => {
            return Err(Error::Config(format!(
                "cannot read the metadata of topic {topic}: {e:?}"
            )))
        }
        None => {}
    }
    let mut ranges = Vec::new();
    for partition in 0..partition_count(&consumer, topic)? {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
        ranges.push(Range {
            partition,
            low,
            high,
        });
    }
    Ok(Some(ranges))
}

fn reader_config(kafka: &KafkaSettings) -> rdkafka::ClientConfig {
    let mut config = client_config(kafka);
    config
        .set("group.id", "reviewflow-replay")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        // Records deleted under the reader must fail the replay, not be skipped.
        .set("auto.offset.reset", "error");
    config
}

/// What folding some partitions gave.
#[derive(Default)]
struct KafkaRead {
    folds: BTreeMap<i32, PartitionFold>,
    records: u64,
    undecodable: u64,
}

/// Reads `ranges` of `topic` and folds them per partition, dropping changes below `floor`.
async fn fold_ranges(
    kafka: &KafkaSettings,
    topic: &str,
    ranges: &[Range],
    floor: Option<Id>,
    registry: &Registry,
    bar: &ProgressBar,
    stop: &CancellationToken,
) -> Result<KafkaRead> {
    let (tx, mut rx) = mpsc::channel(1024);
    let reader = {
        let (kafka, topic, ranges) = (kafka.clone(), topic.to_string(), ranges.to_vec());
        let (bar, stop) = (bar.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = read_ranges(&kafka, &topic, &ranges, &bar, &stop, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        })
    };
    let mut readers = ChangeReaders::default();
    let mut read = KafkaRead::default();
    for r in ranges {
        read.folds.insert(r.partition, PartitionFold::default());
    }
    loop {
        let next = tokio::select! {
            m = rx.recv() => m,
            _ = stop.cancelled() => return Err(interrupted()),
        };
        let Some(m) = next else { break };
        let m = m?;
        read.records += 1;
        match crate::sink::stats::read(registry, &mut readers, &m).await? {
            Ok(change) => read
                .folds
                .entry(m.partition())
                .or_default()
                .push(&change, floor),
            Err(reason) => {
                read.undecodable += 1;
                tracing::debug!(partition = m.partition(), offset = m.offset(), %reason, "undecodable record skipped");
            }
        }
    }
    reader.await?;
    Ok(read)
}

/// Reads every committed record of `ranges` into `out`, partition by partition. Blocking.
fn read_ranges(
    kafka: &KafkaSettings,
    topic: &str,
    ranges: &[Range],
    bar: &ProgressBar,
    stop: &CancellationToken,
    out: &mpsc::Sender<Result<OwnedMessage>>,
) -> Result<()> {
    let consumer: BaseConsumer = reader_config(kafka).create()?;
    for range in ranges {
        let Range {
            partition,
            low,
            high,
        } = *range;
        let base = bar.position();
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
        consumer.assign(&assignment)?;
        let (mut seen, mut moved) = (low, Instant::now());
        loop {
            if stop.is_cancelled() {
                return Err(interrupted());
            }
            let position = crate::kafka::read_position(&consumer, topic, partition, low)?;
            bar.set_position(base + (position.min(high) - low) as u64);
            if position >= high {
                break;
            }
            if position != seen {
                (seen, moved) = (position, Instant::now());
            } else if moved.elapsed() > STALL {
                return Err(Error::Config(format!(
                    "reading {topic}/{partition}: stuck at offset {position} of {high} for {STALL:?}"
                )));
            }
            let record = match consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Ok(m)) => m,
                Some(Err(e @ KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    return Err(Error::Config(format!(
                        "reading {topic}/{partition} from offset {low}: {e} (records deleted while reading?)"
                    )))
                }
                // librdkafka retries broker trouble itself; a stall is caught above.
                Some(Err(e)) => {
                    tracing::warn!(%topic, partition, error = %e, "consumer error");
                    continue;
                }
            };
            // Past the high watermark is the next replay's business.
            if record.offset() < high && out.blocking_send(Ok(record.detach())).is_err() {
                return Ok(()); // the folding side has stopped
            }
        }
    }
    Ok(())
}

/// One partition of the changelog folded in stream order: re-sends skipped, everything
/// before the last TRUNCATE it carries dropped.
#[derive(Default)]
struct PartitionFold {
    /// The last source position seen: what the stats worker has applied after the replay.
    last: Applied,
    /// The last TRUNCATE seen here.
    cut: Option<Id>,
    /// The first change folded into `deltas` (after `cut`).
    first: Option<Id>,
    deltas: Deltas,
    /// Changes seen once each (truncates not counted), and how many of them are in `deltas`.
    changes: u64,
    kept: u64,
    duplicates: u64,
}

impl PartitionFold {
    /// Folds one event; changes below `floor` (a TRUNCATE seen elsewhere) are dropped.
    fn push(&mut self, change: &ValidChange, floor: Option<Id>) {
        let event = &change.event;
        let id = event.source.id();
        if self
            .last
            .is_some_and(|last| SourcePosition::from(id) <= last)
        {
            self.duplicates += 1;
            return;
        }
        self.last = Some(id.into());
        if event.op != Op::Truncate {
            self.changes += 1;
        }
        if floor.is_some_and(|f| id < f) {
            return;
        }
        if event.op == Op::Truncate {
            (self.cut, self.first) = (Some(id), None);
            self.deltas = Deltas::default();
            self.kept = 0;
            return;
        }
        self.first.get_or_insert(id);
        if let Some(before) = &change.before {
            self.deltas.add(before, -1);
        }
        if let Some(after) = &change.after {
            self.deltas.add(after, 1);
        }
        self.kept += 1;
    }

    /// Whether changes a TRUNCATE at `cut` voids are folded here.
    fn straddles(&self, cut: Id) -> bool {
        self.first.is_some_and(|first| first < cut)
    }
}

struct SnapshotRead {
    consistent_point: Lsn,
    rows: u64,
    valid: u64,
    deltas: Deltas,
    verdicts: Vec<Verdict>,
}

/// The derived tables emptied and the state reset, in the rebuild transaction (which holds
/// the state lock).
async fn rebuild_start(
    tx: &Transaction<'_>,
    truncated: (Lsn, i64),
    today: NaiveDate,
) -> Result<()> {
    // Row deletes for course_stats, so the compacted course-stats topic hears of courses that
    // are gone (see figures::reset).
    tx.batch_execute("DELETE FROM course_stats; TRUNCATE course_daily_stats, course_review_times")
        .await?;
    // bigint holds any real WAL position, as in figures::lock_state.
    tx.execute(
        "UPDATE stats_state SET truncated_lsn = $1, truncated_position = $2, rolled_through = $3",
        &[&(truncated.0 .0 as i64), &truncated.1, &today],
    )
    .await?;
    Ok(())
}

/// Clears the last applied position of `partitions`, so that one where the replay read
/// nothing keeps none (offsets::advance leaves a position it is not given as it was).
async fn forget_applied(tx: &Transaction<'_>, topic: &str, partitions: &[i32]) -> Result<()> {
    tx.execute(
        "UPDATE sink_offsets SET last_lsn = NULL, last_position = NULL
         WHERE consumer = $1 AND topic = $2 AND partition = ANY($3)",
        &[&CONSUMER, &topic, &partitions],
    )
    .await?;
    Ok(())
}

/// Partitions of `topic` the stats consumer has rows for.
async fn claimed_partitions(tx: &Transaction<'_>, topic: &str) -> Result<Vec<i32>> {
    Ok(tx
        .query(
            "SELECT partition FROM sink_offsets WHERE consumer = $1 AND topic = $2",
            &[&CONSUMER, &topic],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

async fn course_count(tx: &Transaction<'_>) -> Result<i64> {
    Ok(tx
        .query_one("SELECT count(*) FROM course_stats", &[])
        .await?
        .get(0))
}

/// Today as the stats worker sees it (UTC, this machine's clock).
fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

fn interrupted() -> Error {
    Error::Command {
        what: "replay".into(),
        detail: "interrupted before the rebuild; nothing was changed".into(),
    }
}

fn progress_bar(total: i64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(total.max(0) as u64);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::change::{ChangeEvent, Source};
    use crate::image::ReviewImage;
    use crate::image::ReviewRow;
    use crate::review::Rating;

    fn event(op: Op, lsn: u64, position: i64, course: i64) -> ValidChange {
        let at = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        let row = ReviewRow {
            id: course * 100,
            course_id: course,
            user_id: Some(1),
            rating: Rating::from_halves(8).unwrap(),
            title: None,
            content: None,
            created_at: at,
            updated_at: Some(at),
        };
        let image = ReviewImage::from(&row);
        let event = ChangeEvent {
            op,
            before: (op == Op::Delete).then(|| image.clone()),
            after: matches!(op, Op::Create | Op::Read).then_some(image),
            source: Source {
                schema: "public".into(),
                table: "reviews".into(),
                lsn: Lsn(lsn),
                position,
                txid: None,
                commit_time: at,
                snapshot: op == Op::Read,
            },
            digest: None,
            oversize: Vec::new(),
        };
        ValidChange::of(event).unwrap()
    }

    #[test]
    fn re_sent_changes_are_folded_once() {
        let mut f = PartitionFold::default();
        for (lsn, pos) in [(10, 0), (10, 1), (20, 0), (10, 1), (20, 0), (30, 0)] {
            f.push(&event(Op::Create, lsn, pos, lsn as i64), None);
        }
        assert_eq!((f.changes, f.kept, f.duplicates), (4, 4, 2));
        assert_eq!(f.last, Some((Lsn(30), 0).into()));
        assert_eq!(f.deltas.courses(), 3);
    }

    #[test]
    fn a_truncate_voids_what_came_before_it_in_the_partition() {
        let mut f = PartitionFold::default();
        f.push(&event(Op::Create, 10, 0, 1), None);
        f.push(&event(Op::Create, 20, 0, 2), None);
        f.push(&event(Op::Truncate, 20, 1, 0), None);
        f.push(&event(Op::Create, 20, 2, 3), None);
        f.push(&event(Op::Delete, 30, 0, 3), None);
        assert_eq!((f.changes, f.kept), (4, 2));
        assert_eq!(f.cut, Some((Lsn(20), 1)));
        assert_eq!(f.deltas.courses(), 1, "only course 3, inserted and deleted");
        assert!(!f.straddles((Lsn(20), 1)));
    }

    #[test]
    fn a_partition_without_the_last_truncate_is_folded_again_above_it() {
        let mut f = PartitionFold::default();
        f.push(&event(Op::Create, 10, 0, 1), None);
        f.push(&event(Op::Create, 40, 0, 2), None);
        let cut = (Lsn(20), 5);
        assert!(f.straddles(cut));
        let mut again = PartitionFold::default();
        again.push(&event(Op::Create, 10, 0, 1), Some(cut));
        again.push(&event(Op::Create, 40, 0, 2), Some(cut));
        assert_eq!((again.changes, again.kept), (2, 1));
        assert_eq!(again.deltas.courses(), 1);
        assert!(!again.straddles(cut));
        assert_eq!(again.last, f.last);
        // A change of the truncating transaction before the truncate is void too.
        let mut same = PartitionFold::default();
        same.push(&event(Op::Create, 20, 4, 1), Some(cut));
        same.push(&event(Op::Create, 20, 6, 2), Some(cut));
        assert_eq!(same.kept, 1);
    }

    #[test]
    fn summaries_say_what_was_skipped() {
        let s = KafkaSummary {
            topic: "reviews.valid".into(),
            partitions: 3,
            records: 12,
            undecodable: 1,
            changes: 10,
            folded: 7,
            duplicates: 1,
            truncated_at: Some(Lsn(0x1_0000_0010)),
            courses: 4,
        };
        assert_eq!(
            s.to_string(),
            "replayed reviews.valid (3 partitions, 12 records): 7 of 10 changes folded into 4 \
             courses, 3 voided by the TRUNCATE at 1/10; 1 re-sent duplicates skipped; 1 \
             undecodable records skipped (already in the dead-letter topic)"
        );
    }
}
