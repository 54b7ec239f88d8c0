//! The stats worker: reviews.valid folded into course_stats and course_daily_stats.
//!
//! Guarantee: exactly-once. A batch's figures and its input offsets (with the source position
//! of the last change applied from each partition) commit in one PostgreSQL transaction,
//! under the partition epochs it was read with, so a worker that lost its partitions cannot
//! commit over the new owner. A change the CDC reader sent twice (same commit LSN and
//! position) is applied once; a TRUNCATE voids every change committed before it, whichever
//! partition still carries one. A snapshot in flight is folded out of sight and put in place
//! whole (see `restating`): no figure drops while cdc restates the table. Days leave the
//! 90-day window at each UTC midnight of the database's clock, the one `verify` reads, even
//! when no review arrives: a timer aims at that boundary (see `clock`), and every batch
//! writes the figures of the database's day.
//!
//! Scaling out: workers of one group share the partitions, and their batches commit side by
//! side under the stats lock held shared; only a batch with a TRUNCATE or a snapshot's end,
//! and the day rollover, hold it alone (see `state`).

pub mod clock;
pub mod figures;
pub mod fold;
pub mod notify;
pub mod restating;
pub mod state;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rdkafka::message::{Headers, Message, OwnedMessage};
use tokio::time::Instant;
use tokio_postgres::Transaction;
use tokio_util::sync::CancellationToken;

use super::offsets::Applied;
use super::{Destination, Written};
use crate::avro::envelope::ChangeReaders;
use crate::config::{Settings, TopicSettings, WorkerSettings};
use crate::contract::change::{Op, PARTITIONS_HEADER};
use crate::contract::notify::Touched;
use crate::error::Result;
use crate::failpoint::Point;
use crate::metrics;
use crate::registry::Registry;
use crate::sink::StatsConfig;
pub use fold::ValidChange;
use fold::{Fold, Step};
use state::Hold;

/// Its rows in sink_offsets.
pub const CONSUMER: &str = "stats";

pub struct StatsWorker {
    pub settings: Settings,
    pub topics: TopicSettings,
    pub worker: WorkerSettings,
    pub config: StatsConfig,
}

impl StatsWorker {
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        super::run(&self, &self.settings, &self.topics, &self.worker, shutdown).await
    }
}

impl StatsWorker {
    /// How many ends make the snapshot of `end` whole: the count its end says it was written
    /// across; an end from before that was said, one on every partition of the changelog.
    async fn partitions(&self, end: &OwnedMessage) -> Result<i32> {
        let said = end.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == PARTITIONS_HEADER)
                .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
        });
        if let Some(count) = said {
            return Ok(count);
        }
        let (kafka, topic) = (self.settings.kafka.clone(), self.topics.valid.clone());
        tokio::task::spawn_blocking(move || crate::kafka::topic_partitions(&kafka, &topic)).await?
    }
}

impl Destination for StatsWorker {
    const CONSUMER: &'static str = CONSUMER;
    const BEFORE_COMMIT: Point = crate::failpoint::STATS_BEFORE_COMMIT;
    type Record = ValidChange;
    type Decoder = ChangeReaders;
    /// Source commit times of the changes applied (not skipped), for the latency histogram.
    type Receipt = Vec<DateTime<Utc>>;

    fn topic(&self) -> &str {
        &self.topics.valid
    }

    fn group(&self) -> &str {
        &self.config.group
    }

    async fn decode(
        &self,
        registry: &Registry,
        readers: &mut ChangeReaders,
        m: &OwnedMessage,
    ) -> Result<Result<ValidChange, String>> {
        read(registry, readers, m).await
    }

    async fn write(
        &self,
        tx: &Transaction<'_>,
        applied: HashMap<i32, Applied>,
        records: Vec<(&OwnedMessage, ValidChange)>,
    ) -> Result<Written<Self::Receipt>> {
        // The marks that reach every course need the lock alone; a batch with none shares it.
        let alone = records
            .iter()
            .any(|(_, c)| matches!(c.event.op, Op::Truncate | Op::SnapshotEnd));
        let hold = if alone { Hold::Exclusive } else { Hold::Shared };
        let (mut state, _) = begin(tx, hold).await?;
        let today = state.today();
        let mut fold = Fold::new(applied, state.truncated());
        let mut committed = Vec::with_capacity(records.len());
        let (mut every_course, mut swapped) = (false, Vec::new());
        for (m, event) in &records {
            match fold.push(m.partition(), event) {
                Step::Duplicate | Step::Void => continue,
                Step::Folded => {}
                Step::Reset(voided) => {
                    // What came before it is void: apply it first, then start from nothing.
                    figures::apply(tx, &voided, today).await?;
                    if event.event.source.snapshot {
                        restating::begin(tx, &mut state, event.event.source.lsn).await?;
                    }
                    every_course |= figures::reset(tx, &mut state, event.event.source.id()).await?
                        && !state.restating;
                }
                Step::SnapshotEnd => {
                    // What was folded before the end belongs to the copies.
                    figures::apply(tx, &fold.take_deltas(), today).await?;
                    let partitions = self.partitions(m).await?;
                    match restating::partition_done(
                        tx,
                        &mut state,
                        m.partition(),
                        partitions,
                        event.event.source.lsn,
                    )
                    .await?
                    {
                        Touched::Courses(courses) => swapped.extend(courses),
                        // Too many courses to name: the website re-reads them all.
                        Touched::All => every_course = true,
                    }
                }
            }
            // A change applied; the marks around a snapshot are no change of a review.
            if !event.event.is_snapshot_mark() {
                committed.push(event.event.source.commit_time);
            }
        }
        let deltas = fold.take_deltas();
        // Delivered to the api's listeners only if this transaction commits. The copies of a
        // snapshot in flight have none: its courses are told when it is put in place.
        let touched = if every_course {
            Touched::All
        } else if state.restating {
            Touched::Courses(swapped)
        } else {
            Touched::Courses(deltas.touched().chain(swapped).collect())
        };
        // One round trip for both.
        tokio::try_join!(
            notify::notify(tx, &touched),
            figures::apply(tx, &deltas, today)
        )?;
        let positions = fold.applied();
        Ok(Written {
            positions,
            applied: committed.len() as u64,
            receipt: committed,
        })
    }

    /// Midnight passes whether or not reviews arrive: rolls the window to the database's day,
    /// then aims at its next midnight.
    async fn tick(&self, pool: &deadpool_postgres::Pool) -> Result<Option<Instant>> {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        let (state, refreshed) = begin(&tx, Hold::Exclusive).await?;
        tx.commit().await?;
        if refreshed > 0 {
            tracing::info!(courses = refreshed, today = %state.today(), "day rollover");
        }
        Ok(Some(clock::next_look(&client).await?))
    }

    fn committed(&self, commit_times: Vec<DateTime<Utc>>) {
        let now = Utc::now();
        for commit_time in &commit_times {
            let latency = (now - *commit_time).to_std().unwrap_or_default();
            metrics::metrics()
                .commit_to_stats
                .observe(latency.as_secs_f64());
        }
    }
}

/// What every stats transaction does first: takes the stats lock as `want` asks (see
/// `state::lock_state`), rolls the window to the database's day when it holds the lock
/// alone, and aims the figure tables where the state says: at the copies while a snapshot is
/// in flight, rolled by the same days. `state.today()` is then the day to apply figures for.
/// Returns the state and the number of real courses the rollover refreshed.
pub async fn begin(tx: &Transaction<'_>, want: Hold) -> Result<(state::StatsState, u64)> {
    let mut state = state::lock_state(tx, want).await?;
    let today = state.today();
    let rolled = figures::roll_days(tx, &mut state, today).await?;
    if state.restating {
        restating::aim(tx, &state).await?;
        if let Some((expiry, _)) = &rolled {
            figures::expire(tx, expiry).await?;
        }
    }
    Ok((state, rolled.map_or(0, |(_, refreshed)| refreshed)))
}

/// A record of the valid changelog decoded, or why it cannot be (a dead letter); an `Err`
/// is only registry trouble. Shared with `replay`.
pub(crate) async fn read(
    registry: &Registry,
    readers: &mut ChangeReaders,
    m: &OwnedMessage,
) -> Result<Result<ValidChange, String>> {
    Ok(match registry.resolve(m.payload()).await? {
        Err(reason) => Err(reason),
        Ok(framed) => readers
            .read(framed.id, &framed.schema, framed.body)
            .map_err(|e| format!("not a change event of reviews: {e}"))
            .and_then(ValidChange::of),
    })
}
