//! The stats worker: reviews.valid folded into course_stats and course_daily_stats.
//!
//! Guarantee: exactly-once. A batch's figures and its input offsets (with the source position
//! of the last change applied from each partition) commit in one PostgreSQL transaction,
//! under the partition epochs it was read with, so a worker that lost its partitions cannot
//! commit over the new owner. A change the CDC reader sent twice (same commit LSN and
//! position) is applied once; a TRUNCATE voids every change committed before it, whichever
//! partition still carries one. Days leave the 90-day window at each UTC midnight even when
//! no review arrives.
//!
//! All stats writers serialize on the `stats_state` row (see `figures`): scaling out adds
//! consumers and decoding, not concurrent writes.

pub mod figures;
pub mod fold;
pub mod notify;

use std::time::Duration;

use chrono::NaiveDate;
use rdkafka::message::{Message, OwnedMessage};
use tokio_util::sync::CancellationToken;

use super::dead_letters::DeadLetters;
use super::feed::{self, Batch};
use super::offsets::{self, Advance};
use crate::avro::envelope::ChangeReaders;
use crate::config::{Settings, StatsConfig, TopicSettings, WorkerSettings};
use crate::error::Result;
use crate::metrics;
use crate::registry::Registry;
pub use fold::ValidChange;
use fold::{Fold, Step};
use notify::Touched;

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
        let topic = (&*self.topics.valid, &*self.config.group, CONSUMER);
        let parts = super::Parts::new(&self.settings, &self.topics, &self.worker, topic).await?;
        let (registry, pool, dead_letters) = (&parts.registry, &parts.pool, &parts.dead_letters);
        crate::retry::sessions("stats", &shutdown, || async {
            let stop = shutdown.child_token();
            let _stop_feed = stop.clone().drop_guard();
            let mut batches = feed::start(parts.feed.clone(), pool.clone(), stop);
            let mut readers = ChangeReaders::default();
            // Midnight passes whether or not reviews arrive.
            let mut clock = tokio::time::interval(Duration::from_secs(30));
            loop {
                tokio::select! {
                    batch = batches.next() => match batch {
                        Some(batch) => {
                            let input = Input { registry, readers: &mut readers, dead_letters };
                            self.apply(pool, input, batch?).await?
                        }
                        None => return Ok(()),
                    },
                    _ = clock.tick() => self.roll(pool).await?,
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
        })
        .await
    }

    fn today(&self) -> NaiveDate {
        figures::today(self.config.clock_shift_days)
    }

    async fn roll(&self, pool: &deadpool_postgres::Pool) -> Result<()> {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        let mut state = figures::lock_state(&tx).await?;
        let refreshed = figures::roll_days(&tx, &mut state, self.today()).await?;
        tx.commit().await?;
        if refreshed > 0 {
            tracing::info!(courses = refreshed, today = %self.today(), "day rollover");
        }
        Ok(())
    }

    async fn apply(
        &self,
        pool: &deadpool_postgres::Pool,
        input: Input<'_>,
        batch: Batch,
    ) -> Result<()> {
        let mut events = Vec::with_capacity(batch.records.len());
        let mut dead = Vec::new();
        for m in &batch.records {
            match read(input.registry, input.readers, m).await? {
                Ok(event) => events.push((m, event)),
                Err(reason) => dead.push((m, reason)),
            }
        }
        input.dead_letters.send(&dead).await?;
        let topic = &self.topics.valid;
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        let applied = offsets::hold(&tx, CONSUMER, topic, &batch.epochs).await?;
        let mut state = figures::lock_state(&tx).await?;
        let today = self
            .today()
            .max(state.rolled_through.unwrap_or(NaiveDate::MIN));
        figures::roll_days(&tx, &mut state, today).await?;
        let applied = applied.into_iter().map(|(p, a)| (p, a.map(Into::into)));
        let mut fold = Fold::new(applied, state.truncated());
        // Source commit times of the changes applied (not skipped), for the latency histogram.
        let mut committed = Vec::with_capacity(events.len());
        let mut reset = false;
        for (m, event) in &events {
            match fold.push(m.partition(), event) {
                Step::Duplicate | Step::Void => continue,
                Step::Folded => {}
                Step::Reset(voided) => {
                    // What came before it is void: apply it first, then start from nothing.
                    figures::apply(&tx, &voided, today).await?;
                    reset |= figures::reset(&tx, &mut state, event.event.source.id()).await?;
                }
            }
            committed.push(event.event.source.commit_time);
        }
        let deltas = fold.take_deltas();
        let touched = if reset {
            Touched::All
        } else {
            Touched::Courses(deltas.touched().collect())
        };
        // Delivered to the api's listeners only if this transaction commits.
        notify::notify(&tx, &touched).await?;
        figures::apply(&tx, &deltas, today).await?;
        let applied = fold.applied();
        let progress: Vec<Advance> = offsets::progress(&batch.records)
            .into_iter()
            .map(|a| Advance {
                applied: applied.get(&a.partition).copied().flatten().map(Into::into),
                ..a
            })
            .collect();
        offsets::advance(&tx, CONSUMER, topic, &progress).await?;
        // The crash that hurts most: figures written, offsets written, nothing committed.
        crate::failpoint::hit(crate::failpoint::STATS_BEFORE_COMMIT);
        tx.commit().await?;
        let now = chrono::Utc::now();
        for commit_time in &committed {
            let latency = (now - *commit_time).to_std().unwrap_or_default();
            metrics::metrics()
                .commit_to_stats
                .observe(latency.as_secs_f64());
        }
        metrics::events_in(CONSUMER).inc_by(batch.records.len() as u64);
        metrics::events_out(CONSUMER, "applied").inc_by(committed.len() as u64);
        metrics::dead_letters(CONSUMER).inc_by(dead.len() as u64);
        metrics::transactions(CONSUMER).inc();
        Ok(())
    }
}

/// How a batch's records are read, and where those that cannot be go.
struct Input<'a> {
    registry: &'a Registry,
    readers: &'a mut ChangeReaders,
    dead_letters: &'a DeadLetters,
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
