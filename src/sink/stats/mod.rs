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
pub mod notify;

use std::collections::HashMap;
use std::time::Duration;

use chrono::NaiveDate;
use rdkafka::message::{Message, OwnedMessage};
use tokio_postgres::Transaction;
use tokio_util::sync::CancellationToken;

use super::dead_letters::DeadLetters;
use super::feed::{self, Batch};
use super::offsets::{self, Advance, Applied};
use crate::avro::envelope::ChangeReaders;
use crate::change::{ChangeEvent, Op, ReviewRow};
use crate::config::{Settings, TopicSettings, WorkerSettings};
use crate::error::Result;
use crate::metrics;
use crate::registry::Registry;
use crate::sink::StatsConfig;
use figures::{Deltas, StatsState};
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

    /// Today as the 90-day window sees it (UTC), shifted when a test asks.
    fn today(&self) -> NaiveDate {
        (chrono::Utc::now() + chrono::TimeDelta::days(self.config.clock_shift_days)).date_naive()
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
        let mut fold = Fold::new(applied);
        // Source commit times of the changes applied (not skipped), for the latency histogram.
        let mut committed = Vec::with_capacity(events.len());
        for (m, event) in &events {
            let before = fold.changes;
            fold.push(&tx, &mut state, today, m.partition(), event)
                .await?;
            if fold.changes > before {
                committed.push(event.event.source.commit_time);
            }
        }
        // Delivered to the api's listeners only if this transaction commits.
        notify::notify(&tx, &fold.touched()).await?;
        let applied = fold.finish(&tx, today).await?;
        let progress: Vec<Advance> = offsets::progress(&batch.records)
            .into_iter()
            .map(|a| Advance {
                applied: applied.get(&a.partition).copied().flatten(),
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

/// Changes folded into deltas in stream order, skipping what was applied before (per
/// partition, by source position) and what a TRUNCATE voided. Shared with `replay`.
pub struct Fold {
    applied: HashMap<i32, Applied>,
    deltas: Deltas,
    /// A TRUNCATE was applied: every course changed.
    reset: bool,
    pub changes: u64,
    pub skipped: u64,
}

impl Fold {
    pub fn new(applied: HashMap<i32, Applied>) -> Self {
        Fold {
            applied,
            deltas: Deltas::default(),
            reset: false,
            changes: 0,
            skipped: 0,
        }
    }

    pub async fn push(
        &mut self,
        tx: &Transaction<'_>,
        state: &mut StatsState,
        today: NaiveDate,
        partition: i32,
        change: &ValidChange,
    ) -> Result<()> {
        let event = &change.event;
        let id = event.source.id();
        let last = self.applied.entry(partition).or_default();
        if last.is_some_and(|l| id <= l) || state.voids(id) {
            self.skipped += 1;
            return Ok(());
        }
        *last = Some(id);
        self.changes += 1;
        if event.op == Op::Truncate {
            // What came before it is void: apply it first, then start from nothing.
            figures::apply(tx, &std::mem::take(&mut self.deltas), today).await?;
            self.reset |= figures::reset(tx, state, id).await?;
            return Ok(());
        }
        if let Some(before) = &change.before {
            self.deltas.add(before, -1);
        }
        if let Some(after) = &change.after {
            self.deltas.add(after, 1);
        }
        Ok(())
    }

    /// The courses whose figures this fold changes (so far), for the notification.
    pub fn touched(&self) -> Touched {
        if self.reset {
            Touched::All
        } else {
            Touched::Courses(self.deltas.touched().collect())
        }
    }

    /// Applies what is left; returns the last source position applied per partition.
    pub async fn finish(
        self,
        tx: &Transaction<'_>,
        today: NaiveDate,
    ) -> Result<HashMap<i32, Applied>> {
        figures::apply(tx, &self.deltas, today).await?;
        Ok(self.applied)
    }
}

/// How a batch's records are read, and where those that cannot be go.
struct Input<'a> {
    registry: &'a Registry,
    readers: &'a mut ChangeReaders,
    dead_letters: &'a DeadLetters,
}

/// A change of the valid set, with its images as the rows that count.
pub struct ValidChange {
    pub event: ChangeEvent,
    pub before: Option<ReviewRow>,
    pub after: Option<ReviewRow>,
}

impl ValidChange {
    /// The change, or why it cannot be one: the fraud worker judges every row that cannot
    /// count fraud, so such an image on the valid changelog is a bug upstream, which goes to
    /// the dead-letter topic with the rules it breaks rather than stop this worker.
    pub fn of(event: ChangeEvent) -> std::result::Result<ValidChange, String> {
        let count = |image: &Option<crate::image::ReviewImage>, which: &str| {
            image
                .as_ref()
                .map(|i| i.countable())
                .transpose()
                .map_err(|rules| {
                    let names: Vec<&str> = rules.iter().map(|r| r.name()).collect();
                    format!(
                        "the {which} image of review {} cannot count ({}), yet it is on the \
                         valid changelog",
                        image.as_ref().map_or(0, |i| i.id),
                        names.join(", ")
                    )
                })
        };
        Ok(ValidChange {
            before: count(&event.before, "before")?,
            after: count(&event.after, "after")?,
            event,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Source;
    use crate::image::{Carried, Decimal, ReviewImage};
    use crate::lsn::Lsn;

    fn change(after: ReviewImage) -> ChangeEvent {
        ChangeEvent {
            op: Op::Create,
            before: None,
            after: Some(after),
            source: Source {
                schema: "public".into(),
                table: "reviews".into(),
                lsn: Lsn(16),
                position: 0,
                txid: None,
                commit_time: chrono::DateTime::default(),
                snapshot: false,
            },
            digest: None,
            oversize: Vec::new(),
        }
    }

    #[test]
    fn an_image_that_cannot_count_is_a_dead_letter_naming_its_rules_not_a_panic() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let good = ReviewImage {
            id: 4,
            course_id: Some(2),
            user_id: None,
            rating: Carried::Value(Decimal {
                unscaled: 30,
                scale: 1,
            }),
            title: None,
            content: None,
            created_at: Carried::Value(at),
            updated_at: Carried::Null,
        };
        let valid = ValidChange::of(change(good.clone())).unwrap();
        assert_eq!(valid.after.unwrap().rating.stars(), 3.0);
        let mut bad = good;
        bad.course_id = None;
        bad.rating = Carried::Text("NaN".into());
        let reason = ValidChange::of(change(bad)).err().unwrap();
        assert!(
            reason.contains("review 4") && reason.contains("no_course, rating_off_scale"),
            "{reason}"
        );
    }
}
