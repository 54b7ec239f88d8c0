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

use chrono::{DateTime, NaiveDate, Utc};
use rdkafka::message::{Message, OwnedMessage};
use tokio_postgres::Transaction;
use tokio_util::sync::CancellationToken;

use super::offsets::Applied;
use super::{Destination, Written};
use crate::avro::envelope::ChangeReaders;
use crate::change::{ChangeEvent, Op};
use crate::config::{Settings, TopicSettings, WorkerSettings};
use crate::error::Result;
use crate::failpoint::Point;
use crate::image::ReviewRow;
use crate::lsn::SourcePosition;
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
        super::run(&self, &self.settings, &self.topics, &self.worker, shutdown).await
    }

    /// Today as the 90-day window sees it (UTC), shifted when a test asks.
    fn today(&self) -> NaiveDate {
        (chrono::Utc::now() + chrono::TimeDelta::days(self.config.clock_shift_days)).date_naive()
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
        let mut state = figures::lock_state(tx).await?;
        let today = self
            .today()
            .max(state.rolled_through.unwrap_or(NaiveDate::MIN));
        figures::roll_days(tx, &mut state, today).await?;
        let mut fold = Fold::new(applied);
        let mut committed = Vec::with_capacity(records.len());
        for (m, event) in &records {
            let before = fold.changes;
            fold.push(tx, &mut state, today, m.partition(), event)
                .await?;
            if fold.changes > before {
                committed.push(event.event.source.commit_time);
            }
        }
        // Delivered to the api's listeners only if this transaction commits.
        notify::notify(tx, &fold.touched()).await?;
        let positions = fold.finish(tx, today).await?;
        Ok(Written {
            positions,
            applied: committed.len() as u64,
            receipt: committed,
        })
    }

    /// Midnight passes whether or not reviews arrive.
    fn timer(&self) -> Option<Duration> {
        Some(Duration::from_secs(30))
    }

    async fn tick(&self, pool: &deadpool_postgres::Pool) -> Result<()> {
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
        if last.is_some_and(|l| SourcePosition::from(id) <= l) || state.voids(id) {
            self.skipped += 1;
            return Ok(());
        }
        *last = Some(id.into());
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
