//! The stats worker's table-wide state, and the lock every writer of the figures holds.
//!
//! Every writer of the figure tables first takes the stats lock ([`lock_state`]) in its
//! transaction, so the read-then-write steps of `figures` never race another writer of the
//! same course:
//! - A batch takes it shared: batches of different partitions commit side by side. They never
//!   touch one course, because cdc keys every change by its course (a review that moves is a
//!   delete under the old key and a create under the new one), and a partition is held by one
//!   writer at a time (`offsets::hold` locks its row first).
//! - What reaches every course takes it exclusively, alone: the day rollover, a TRUNCATE, a
//!   snapshot's start and end, a rebuild. The lock is PostgreSQL's lock manager's (an
//!   advisory lock), which queues a waiting exclusive request ahead of later shared ones, so
//!   a stream of batches cannot starve midnight.

use chrono::NaiveDate;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Transaction;

use crate::contract::lsn::{Lsn, SourcePosition};
use crate::error::Result;

/// How a stats transaction holds the stats lock ([`lock_state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Figures of the courses of the batch's own partitions, beside other such writers.
    Shared,
    /// The steps that reach every course: alone.
    Exclusive,
}

impl Hold {
    pub fn as_str(self) -> &'static str {
        match self {
            Hold::Shared => "shared",
            Hold::Exclusive => "exclusive",
        }
    }
}

/// The table-wide state of the stats worker, read under the stats lock.
#[derive(Clone, Debug, PartialEq)]
pub struct StatsState {
    /// How this transaction holds the lock: only an exclusive holder may change the state.
    pub hold: Hold,
    pub rolled_through: Option<NaiveDate>,
    pub truncated_lsn: Lsn,
    pub truncated_position: i64,
    /// A snapshot is in flight: the figures go to the copies (see `restating`).
    pub restating: bool,
    /// Its consistent point, which its ends carry.
    pub restating_lsn: Option<Lsn>,
    /// The partitions that delivered its end.
    pub restated_partitions: Vec<i32>,
    /// The database's UTC day as the transaction sees it (`reviewflow_today()`, migration
    /// V8): the clock `verify` computes the truth with.
    pub clock_today: NaiveDate,
}

impl StatsState {
    /// The day figures are written for: the database's today, but never before the day the
    /// rollover already reached, so a clock that went back cannot roll the window back.
    pub fn today(&self) -> NaiveDate {
        self.rolled_through
            .map_or(self.clock_today, |r| r.max(self.clock_today))
    }

    /// The source position of the last TRUNCATE applied, if there was one.
    pub fn truncated(&self) -> Option<SourcePosition> {
        (self.truncated_lsn > Lsn::ZERO)
            .then(|| SourcePosition::new(self.truncated_lsn, self.truncated_position))
    }

    /// Whether the change at `id` is void: at or before the last TRUNCATE applied.
    pub fn voids(&self, id: SourcePosition) -> bool {
        self.truncated().is_some_and(|t| id <= t)
    }
}

/// The two-key advisory lock of the stats writers (the registry's subjects use 7_271_101).
const STATS_LOCK: (i32, i32) = (7_271_102, 1);

/// Takes the lock every stats writer holds until it commits, as `want` asks, and reads the
/// state under it with the database's day. A shared holder is made exclusive when the day
/// needs rolling, so the first batch after midnight rolls it (the timer in `clock` aims there
/// too).
pub async fn lock_state(tx: &Transaction<'_>, want: Hold) -> Result<StatsState> {
    let started = std::time::Instant::now();
    let (a, b) = (&STATS_LOCK.0 as &(dyn ToSql + Sync), &STATS_LOCK.1 as _);
    let key = [(a, Type::INT4), (b, Type::INT4)];
    let state = 'held: {
        if want == Hold::Shared {
            // One round trip: the lock, unless the day needs rolling, and the state read after
            // it (each statement sees what committed before it began).
            let (taken, row) = tokio::try_join!(
                tx.query_typed(
                    "SELECT pg_advisory_xact_lock_shared($1, $2) FROM stats_state
                     WHERE rolled_through >= reviewflow_today()",
                    &key,
                ),
                tx.query_typed_one(READ_STATE, &[]),
            )?;
            if !taken.is_empty() {
                break 'held state_of(&row, Hold::Shared);
            }
        }
        tx.query_typed("SELECT pg_advisory_xact_lock($1, $2)", &key)
            .await?;
        let row = tx
            .query_typed_one(&format!("{READ_STATE} FOR UPDATE"), &[])
            .await?;
        state_of(&row, Hold::Exclusive)
    };
    crate::metrics::stats_lock_wait(state.hold.as_str()).inc_by(started.elapsed().as_secs_f64());
    Ok(state)
}

const READ_STATE: &str = "SELECT rolled_through, truncated_lsn, truncated_position, restating,
        restated_partitions, restating_lsn, reviewflow_today()
    FROM stats_state";

fn state_of(row: &tokio_postgres::Row, hold: Hold) -> StatsState {
    StatsState {
        hold,
        rolled_through: row.get(0),
        // bigint holds any real WAL position: 2^63 bytes of WAL will never be written.
        truncated_lsn: Lsn(row.get::<_, i64>(1) as u64),
        truncated_position: row.get(2),
        restating: row.get(3),
        restated_partitions: row.get(4),
        restating_lsn: row.get::<_, Option<i64>>(5).map(|l| Lsn(l as u64)),
        clock_today: row.get(6),
    }
}
