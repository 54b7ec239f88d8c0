//! Where a change goes: its course key's murmur2 hash modulo the partition count of the epoch
//! its transaction belongs to. cdc picks the partition itself instead of leaving it to the
//! producer, whose partitioner follows the topic's *current* count: after `kafka-topics
//! --alter --partitions` it would move courses at its next metadata refresh, with no barrier,
//! and a re-sent change could land in another partition than its first copy.
//!
//! An epoch is a count and the commit LSN from which it holds. The list is kept in the
//! slot's snapshot marker (see `snapshot::markers`): a snapshot starts it with one epoch, and
//! each switch to more partitions appends one. A transaction re-read after a crash is placed
//! by the epoch of its own commit LSN, so all its copies share one partition, whatever the
//! count has become since (see `Switch` in `stream` for how a switch is fenced).

use crate::contract::lsn::Lsn;

/// From which commit LSN on, across how many partitions, the changes topic is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epoch {
    pub from: Lsn,
    pub partitions: i32,
}

/// The epochs of a slot's changes, oldest first; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Epochs(Vec<Epoch>);

impl Epochs {
    /// One count for every change.
    pub fn single(partitions: i32) -> Epochs {
        Epochs(vec![Epoch {
            from: Lsn::ZERO,
            partitions,
        }])
    }

    /// The recorded list; a marker written before epochs were recorded has none, and its
    /// changes were all written across `legacy` partitions (cdc then refused any other count).
    pub fn recorded(mut list: Vec<Epoch>, legacy: i32) -> Epochs {
        if list.is_empty() {
            return Epochs::single(legacy);
        }
        list.sort_by_key(|e| e.from);
        Epochs(list)
    }

    pub fn list(&self) -> &[Epoch] {
        &self.0
    }

    /// The count new changes are written across.
    pub fn current(&self) -> i32 {
        self.0.last().map_or(1, |e| e.partitions)
    }

    /// The count of the epoch that holds the transaction committed at `lsn`.
    pub fn at(&self, lsn: Lsn) -> i32 {
        self.0
            .iter()
            .rev()
            .find(|e| e.from <= lsn)
            .or(self.0.first())
            .map_or(1, |e| e.partitions)
    }

    /// A new epoch of `partitions`, for the transactions committed at `from` or later.
    pub fn begin(&mut self, from: Lsn, partitions: i32) {
        self.0.push(Epoch { from, partitions });
    }
}

/// A switch to more partitions that cdc has planned and not yet made. Once a session reached
/// the switch's first transaction it is kept in the slot's marker with the fence's targets,
/// so a session after a crash waits for the same offsets: records re-sent since (a crash
/// of PostgreSQL sets the slot back) land beyond them, and the stats worker skips them as
/// re-sends in their partition, so they need no waiting for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingSwitch {
    /// The count the switch goes to.
    pub to: i32,
    /// The newest commit LSN in Kafka when it was planned (None: the topic held no change);
    /// the first transaction committed after it is the new epoch's first.
    pub after: Option<Lsn>,
    /// The end offsets of the changes topic's old partitions once every change before the
    /// switch was delivered (empty until taken): the fraud group must read up to them.
    pub changes_ends: Vec<i64>,
    /// The valid changelog's end offsets once the fraud group read up to `changes_ends`
    /// (empty until taken): the stats worker must apply up to them.
    pub valid_ends: Vec<i64>,
}

/// Kafka's partition for a keyed record (the Java client's default partitioner, and
/// librdkafka's `murmur2_random`, which cdc used before it chose partitions itself): the
/// key's murmur2 hash, made positive, modulo the count.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    let hash = murmur2::murmur2(key, murmur2::KAFKA_SEED) & 0x7fff_ffff;
    (hash % partitions.max(1) as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_kafkas() {
        // Kafka's own test vectors (UtilsTest.testMurmur2), as the Java client signs them.
        for (key, hash) in [
            (&b"21"[..], -973_932_308i32),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ] {
            assert_eq!(
                murmur2::murmur2(key, murmur2::KAFKA_SEED) as i32,
                hash,
                "{key:?}"
            );
        }
        assert_eq!(
            partition_of(b"21", 3),
            ((-973_932_308i32 & 0x7fff_ffff) % 3)
        );
    }

    #[test]
    fn a_transaction_is_placed_by_the_epoch_of_its_commit() {
        let mut epochs = Epochs::recorded(vec![], 3);
        assert_eq!((epochs.at(Lsn(5)), epochs.current()), (3, 3));
        epochs.begin(Lsn(100), 5);
        assert_eq!(
            epochs.at(Lsn(99)),
            3,
            "a re-sent transaction keeps its first count"
        );
        assert_eq!(epochs.at(Lsn(100)), 5);
        assert_eq!(epochs.current(), 5);
        let reread = Epochs::recorded(epochs.list().iter().rev().copied().collect(), 7);
        assert_eq!(
            reread, epochs,
            "the recorded list is read back in LSN order"
        );
    }
}
