//! The stats fold, pure: changes of the valid changelog in, per-course [`Deltas`] and reset
//! points (TRUNCATE) out. It is the one copy of the exactly-once rule of the figures: the
//! stats worker folds each batch with it, `replay --from kafka` the whole retained topic.
//!
//! Guarantee: folding a record again changes nothing, and nothing before a TRUNCATE counts.
//! - A change at or below the last source position taken from its partition is a re-send
//!   and is skipped ([`Step::Duplicate`]).
//! - A change at or before the last TRUNCATE is void, whichever partition carries it
//!   ([`Step::Void`]). A snapshot's end is not: the worker tells by its position which
//!   snapshot it closes ([`Step::SnapshotEnd`]). A TRUNCATE not void itself becomes the truncate point; what the fold had
//!   gathered, from every partition, comes back in its [`Step::Reset`] and the fold goes on
//!   from nothing.
//!
//! A reset takes back a change newer than the TRUNCATE only from a partition that does not
//! carry that truncate and was folded past it first. cdc sends every TRUNCATE to every
//! partition, in order with the rest, so the worker relies on never meeting one. replay,
//! which folds whole partitions one after another and may meet a topic that lacks one, asks
//! the fold ([`Partition::newer_than`]) and folds such a partition again above the truncate
//! point, since folded figures cannot be split afterwards.

use std::collections::{BTreeMap, HashMap};

use super::figures::Deltas;
use crate::contract::change::{ChangeEvent, Op};
use crate::contract::image::ReviewRow;
use crate::contract::lsn::SourcePosition;

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
        let count = |image: &Option<crate::contract::image::ReviewImage>, which: &str| {
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

/// What one change did to the fold.
#[derive(Debug)]
pub enum Step {
    /// A re-send: at or below the last source position taken from its partition.
    Duplicate,
    /// At or before the truncate point.
    Void,
    /// Added to the deltas.
    Folded,
    /// A TRUNCATE, now the truncate point: the deltas gathered before it, which it voids.
    Reset(Deltas),
    /// The end of a snapshot in this partition (its consistent point is the event's LSN):
    /// its rows there are all folded.
    SnapshotEnd,
}

/// One partition's part of the fold.
#[derive(Debug, Default)]
pub struct Partition {
    /// The last source position taken from it, void ones included: a re-send is at or
    /// below it.
    pub seen: Option<SourcePosition>,
    /// The last source position applied from it (folded, or a reset).
    pub applied: Option<SourcePosition>,
    deltas: Deltas,
    /// The newest change in `deltas`.
    folded_through: Option<SourcePosition>,
    /// The newest change a reset took back although it came after the truncate.
    newer: Option<SourcePosition>,
    /// Changes taken once each (void ones included, truncates not), how many of them are in
    /// the deltas now, and the re-sends skipped.
    pub changes: u64,
    pub folded: u64,
    pub duplicates: u64,
}

impl Partition {
    /// Whether a reset took back changes of this partition newer than `point`.
    pub fn newer_than(&self, point: SourcePosition) -> bool {
        self.newer.is_some_and(|n| n > point)
    }
}

/// Changes folded in stream order, per partition.
#[derive(Debug, Default)]
pub struct Fold {
    partitions: BTreeMap<i32, Partition>,
    truncated: Option<SourcePosition>,
    reset: bool,
}

impl Fold {
    /// A fold resuming after `applied` (per partition, the last source position applied)
    /// under the truncate point `truncated`.
    pub fn new(
        applied: impl IntoIterator<Item = (i32, Option<SourcePosition>)>,
        truncated: Option<SourcePosition>,
    ) -> Self {
        let partitions = applied
            .into_iter()
            .map(|(p, applied)| {
                let part = Partition {
                    seen: applied,
                    applied,
                    ..Partition::default()
                };
                (p, part)
            })
            .collect();
        Fold {
            partitions,
            truncated,
            reset: false,
        }
    }

    /// Folds the next change of `partition`.
    pub fn push(&mut self, partition: i32, change: &ValidChange) -> Step {
        let event = &change.event;
        let id = event.source.id();
        let void = self.truncated.is_some_and(|t| id <= t);
        let part = self.partitions.entry(partition).or_default();
        if part.seen.is_some_and(|seen| id <= seen) {
            part.duplicates += 1;
            return Step::Duplicate;
        }
        part.seen = Some(id);
        if !matches!(event.op, Op::Truncate | Op::SnapshotEnd) {
            part.changes += 1;
        }
        // A snapshot's end counts even under a TRUNCATE that came after it: a partition that
        // lags may meet its end after another partition applied a TRUNCATE streamed later,
        // and the snapshot in flight must still be told its part there is whole.
        if event.op == Op::SnapshotEnd {
            part.applied = Some(id);
            return Step::SnapshotEnd;
        }
        if void {
            return Step::Void;
        }
        part.applied = Some(id);
        if event.op == Op::Truncate {
            (self.truncated, self.reset) = (Some(id), true);
            let mut voided = Deltas::default();
            for part in self.partitions.values_mut() {
                if part.folded_through.is_some_and(|f| f > id) {
                    part.newer = part.newer.max(part.folded_through);
                }
                voided.absorb(std::mem::take(&mut part.deltas));
                (part.folded_through, part.folded) = (None, 0);
            }
            return Step::Reset(voided);
        }
        if let Some(before) = &change.before {
            part.deltas.add(before, -1);
        }
        if let Some(after) = &change.after {
            part.deltas.add(after, 1);
        }
        (part.folded_through, part.folded) = (Some(id), part.folded + 1);
        Step::Folded
    }

    /// The last TRUNCATE: every change at or before it is void.
    pub fn truncated(&self) -> Option<SourcePosition> {
        self.truncated
    }

    /// Whether a TRUNCATE reset the fold.
    pub fn was_reset(&self) -> bool {
        self.reset
    }

    pub fn partition(&self, partition: i32) -> Option<&Partition> {
        self.partitions.get(&partition)
    }

    pub fn partitions(&self) -> impl Iterator<Item = (i32, &Partition)> {
        self.partitions.iter().map(|(p, part)| (*p, part))
    }

    /// Puts `other`'s partitions in place of this fold's (a partition folded again).
    pub fn replace(&mut self, other: Fold) {
        self.partitions.extend(other.partitions);
    }

    /// The deltas gathered since the last reset, every partition's together.
    pub fn take_deltas(&mut self) -> Deltas {
        let mut all = Deltas::default();
        for part in self.partitions.values_mut() {
            all.absorb(std::mem::take(&mut part.deltas));
        }
        all
    }

    /// The last source position applied, per partition.
    pub fn applied(&self) -> HashMap<i32, Option<SourcePosition>> {
        self.partitions
            .iter()
            .map(|(p, part)| (*p, part.applied))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::contract::change::{ChangeEvent, Source};
    use crate::contract::image::{Carried, Decimal, ReviewImage};
    use crate::contract::lsn::Lsn;
    use crate::contract::review::Rating;

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
            moderation: None,
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

    fn event(op: Op, lsn: u64, position: i64, course: i64) -> ValidChange {
        let at = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        let row = crate::contract::image::ReviewRow {
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

    fn at(lsn: u64, position: i64) -> SourcePosition {
        SourcePosition::new(Lsn(lsn), position)
    }

    #[test]
    fn re_sent_changes_are_folded_once() {
        let mut f = Fold::default();
        for (lsn, pos) in [(10, 0), (10, 1), (20, 0), (10, 1), (20, 0), (30, 0)] {
            f.push(0, &event(Op::Create, lsn, pos, lsn as i64));
        }
        let p = f.partition(0).unwrap();
        assert_eq!((p.changes, p.folded, p.duplicates), (4, 4, 2));
        assert_eq!(p.seen, Some(at(30, 0)));
        assert_eq!(f.take_deltas().courses(), 3);
    }

    #[test]
    fn a_batch_resumes_after_what_was_applied_and_under_the_truncate_point() {
        let mut f = Fold::new([(0, Some(at(20, 0))), (1, None)], Some(at(15, 0)));
        assert!(matches!(
            f.push(0, &event(Op::Create, 20, 0, 1)),
            Step::Duplicate
        ));
        assert!(matches!(
            f.push(1, &event(Op::Create, 10, 0, 1)),
            Step::Void
        ));
        assert!(matches!(
            f.push(1, &event(Op::Create, 30, 0, 2)),
            Step::Folded
        ));
        assert_eq!(f.applied()[&0], Some(at(20, 0)));
        assert_eq!(f.applied()[&1], Some(at(30, 0)));
        assert!(!f.was_reset());
    }

    #[test]
    fn a_truncate_voids_what_came_before_it_in_the_partition() {
        let mut f = Fold::default();
        f.push(0, &event(Op::Create, 10, 0, 1));
        f.push(0, &event(Op::Create, 20, 0, 2));
        let Step::Reset(voided) = f.push(0, &event(Op::Truncate, 20, 1, 0)) else {
            panic!("a truncate resets the fold")
        };
        assert_eq!(voided.courses(), 2, "courses 1 and 2, handed back");
        f.push(0, &event(Op::Create, 20, 2, 3));
        f.push(0, &event(Op::Delete, 30, 0, 3));
        let p = f.partition(0).unwrap();
        assert_eq!((p.changes, p.folded), (4, 2));
        assert_eq!(f.truncated(), Some(at(20, 1)));
        assert!(!p.newer_than(at(20, 1)));
        assert!(f.was_reset());
        assert_eq!(
            f.take_deltas().courses(),
            1,
            "only course 3, inserted and deleted"
        );
    }

    #[test]
    fn a_truncate_voids_what_every_partition_holds_before_it_and_what_comes_after_it() {
        let mut f = Fold::default();
        f.push(0, &event(Op::Create, 10, 0, 1));
        f.push(1, &event(Op::Truncate, 20, 0, 0));
        // Partition 0 carries the truncate too: its copy is void.
        assert!(matches!(
            f.push(0, &event(Op::Truncate, 20, 0, 0)),
            Step::Void
        ));
        assert!(matches!(
            f.push(2, &event(Op::Create, 15, 0, 2)),
            Step::Void
        ));
        assert_eq!(f.partition(2).unwrap().changes, 1);
        assert!(f.take_deltas().is_empty());
        assert!(f.partitions().all(|(_, p)| !p.newer_than(at(20, 0))));
    }

    #[test]
    fn a_partition_without_the_last_truncate_is_folded_again_above_it() {
        let mut f = Fold::default();
        f.push(0, &event(Op::Create, 10, 0, 1));
        f.push(0, &event(Op::Create, 40, 0, 2));
        // Another partition's truncate, read after partition 0 was folded to its end.
        f.push(1, &event(Op::Truncate, 20, 5, 0));
        let cut = f.truncated().unwrap();
        assert!(f.partition(0).unwrap().newer_than(cut));
        let mut again = Fold::new([], Some(cut));
        again.push(0, &event(Op::Create, 10, 0, 1));
        again.push(0, &event(Op::Create, 40, 0, 2));
        let p = again.partition(0).unwrap();
        assert_eq!((p.changes, p.folded), (2, 1));
        assert!(!p.newer_than(cut));
        assert_eq!(p.seen, f.partition(0).unwrap().seen);
        f.replace(again);
        assert_eq!(f.take_deltas().courses(), 1);
        // A change of the truncating transaction before the truncate is void too.
        let mut same = Fold::new([], Some(cut));
        same.push(0, &event(Op::Create, 20, 4, 1));
        same.push(0, &event(Op::Create, 20, 6, 2));
        assert_eq!(same.partition(0).unwrap().folded, 1);
    }

    #[test]
    fn a_snapshots_end_passes_any_truncate_once() {
        let mut f = Fold::default();
        // A snapshot that died (TRUNCATE at 10) and the one taken again (TRUNCATE at 20): the
        // first one's end is still an end, which the worker tells apart by its position.
        f.push(0, &event(Op::Truncate, 10, -3, 0));
        f.push(0, &event(Op::Read, 10, -2, 1));
        f.push(0, &event(Op::Truncate, 20, -3, 0));
        assert!(matches!(
            f.push(1, &event(Op::SnapshotEnd, 10, -1, 0)),
            Step::SnapshotEnd
        ));
        f.push(0, &event(Op::Read, 20, -2, 1));
        assert!(matches!(
            f.push(0, &event(Op::SnapshotEnd, 20, -1, 0)),
            Step::SnapshotEnd
        ));
        assert!(matches!(
            f.push(0, &event(Op::SnapshotEnd, 20, -1, 0)),
            Step::Duplicate
        ));
        let p = f.partition(0).unwrap();
        assert_eq!((p.changes, p.folded), (2, 1), "the marks are not changes");
        assert_eq!(f.applied()[&0], Some(at(20, -1)));
    }
}
