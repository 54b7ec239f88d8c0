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
//! - The rebuilt 90-day figures are those of the database's day (`reviewflow_today()`, never
//!   before the day the rollover reached), the day the stats worker and `verify` read.
//! - The fraud worker and the verdict sink are not disturbed.

mod kafka;
mod rebuild;
mod snapshot;
mod summary;

use std::collections::{BTreeSet, HashMap};

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::config::{Settings, TopicSettings};
use crate::contract::lsn::SourcePosition;
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::sink::offsets::{self, Advance};
use crate::sink::stats::fold::Fold;
use crate::sink::stats::CONSUMER;
use crate::sink::stats::{figures, state};
use crate::transform::score;
use crate::transform::FraudConfig;
use kafka::{fold_ranges, watermarks, Range};
use rebuild::{course_count, rebuild_start};
use snapshot::{read_snapshot, verdict_position};
pub use summary::{KafkaSummary, SnapshotSummary, Summary};

/// The table whose derived state is rebuilt.
const TABLE: &str = "reviews";

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

        let fold = Fold::default();
        let mut read = fold_ranges(&kafka, &topic, &ranges, fold, &registry, &bar, stop).await?;
        // The last TRUNCATE voids what came before it in every partition. Where the fold had
        // to take back changes after it (a partition read to its end before the truncate was
        // read elsewhere, and that does not carry it), read the partition again above it:
        // folded figures cannot be split after the fact.
        let cut = read.fold.truncated();
        if let Some(cut) = cut {
            let again: Vec<Range> = ranges
                .iter()
                .filter(|r| {
                    read.fold
                        .partition(r.partition)
                        .is_some_and(|p| p.newer_than(cut))
                })
                .cloned()
                .collect();
            if !again.is_empty() {
                tracing::info!(
                    partitions = ?again.iter().map(|r| r.partition).collect::<Vec<_>>(),
                    truncate = %cut,
                    "partitions without the last TRUNCATE were folded past it: reading them again above it"
                );
                bar.inc_length(again.iter().map(|r| (r.high - r.low) as u64).sum());
                let fold = Fold::new([], Some(cut));
                let second =
                    fold_ranges(&kafka, &topic, &again, fold, &registry, &bar, stop).await?;
                read.fold.replace(second.fold);
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
            truncated_at: cut.map(|c| c.lsn),
            ..KafkaSummary::default()
        };
        for (_, p) in read.fold.partitions() {
            summary.changes += p.changes;
            summary.folded += p.folded;
            summary.duplicates += p.duplicates;
        }

        let mut client = crate::db::connect(&self.settings.database_url).await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            .await?;
        let partitions: Vec<i32> = ranges.iter().map(|r| r.partition).collect();
        // Fences running stats workers: their batch in flight rolls back, they claim again.
        offsets::claim(&tx, CONSUMER, &topic, &partitions, &self.owner).await?;
        let state = state::lock_state(&tx, state::Hold::Exclusive).await?;
        let today = state.today();
        rebuild_start(&tx, cut.unwrap_or_default(), today).await?;
        figures::apply(&tx, &read.fold.take_deltas(), today).await?;
        offsets::forget_applied(&tx, CONSUMER, &topic, &partitions).await?;
        let progress: Vec<Advance> = ranges
            .iter()
            .map(|r| Advance {
                partition: r.partition,
                next_offset: r.high,
                // The last read, void or not: the worker goes on after it.
                applied: read.fold.partition(r.partition).and_then(|p| p.seen),
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
            let reading = read_snapshot(&self.settings.database_url, scorer.as_ref());
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
        let before_snapshot = SourcePosition::last_before(cp);
        let mut client = crate::db::connect(&self.settings.database_url).await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            .await?;
        for chunk in read.verdicts.chunks(VERDICT_CHUNK) {
            crate::sink::verdicts::upsert(&tx, chunk).await?;
        }
        // Every row the snapshot held now has a verdict at verdict_position(cp); a review
        // whose newest verdict is older and has no row was gone by the consistent point, so
        // its delete is accounted for, whether the fraud worker saw it or not.
        crate::sink::verdicts::deleted_before(&tx, verdict_position(cp)).await?;
        // Every partition a worker may hold: those Kafka knew before the slot, and those
        // claimed in sink_offsets (a topic created since). A partition Kafka did not report
        // resumes from its start; the changes the snapshot holds are skipped there too.
        let mut partitions: BTreeSet<i32> = before.keys().copied().collect();
        partitions.extend(offsets::partitions(&tx, CONSUMER, &topic).await?);
        let partitions: Vec<i32> = partitions.into_iter().collect();
        let claims = if partitions.is_empty() {
            HashMap::new()
        } else {
            offsets::claim(&tx, CONSUMER, &topic, &partitions, &self.owner).await?
        };
        let state = state::lock_state(&tx, state::Hold::Exclusive).await?;
        let today = state.today();
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
                applied: Some(before_snapshot),
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
