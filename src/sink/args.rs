//! The command-line arguments of the sinks (`reviewflow stats`, `reviewflow verdicts`).

use chrono::{NaiveDate, Utc};

use super::stats::figures::StatsState;

/// The verdict sink.
#[derive(clap::Args, Clone, Debug)]
pub struct VerdictsConfig {
    /// Consumer group of the verdict sinks; instances in one group split the partitions.
    #[arg(
        id = "verdicts_group",
        long = "verdicts-group",
        env = "REVIEWFLOW_VERDICTS_GROUP",
        default_value = "reviewflow-verdicts"
    )]
    pub group: String,
}

/// The stats worker.
#[derive(clap::Args, Clone, Debug)]
pub struct StatsConfig {
    /// Consumer group of the stats workers; instances in one group split the partitions.
    #[arg(
        id = "stats_group",
        long = "stats-group",
        env = "REVIEWFLOW_STATS_GROUP",
        default_value = "reviewflow-stats"
    )]
    pub group: String,

    /// Compacted topic the figures are offered on to other consumers (`run` streams
    /// course_stats into it with a second CDC reader, slot `<slot>_stats`); empty: none.
    #[arg(
        id = "stats_topic",
        long = "stats-topic",
        env = "REVIEWFLOW_STATS_TOPIC",
        default_value = "course-stats"
    )]
    pub topic: String,

    #[command(flatten)]
    pub clock: StatsClock,
}

/// The 90-day window's clock: the stats worker's, and `replay`'s, which must rebuild the
/// figures of the day the worker lives in.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct StatsClock {
    /// Moves the worker's "today" by this many days: for tests of the 90-day window.
    #[arg(
        long,
        env = "REVIEWFLOW_CLOCK_SHIFT_DAYS",
        default_value_t = 0,
        hide = true
    )]
    pub clock_shift_days: i64,
}

impl StatsClock {
    /// Today as the 90-day window sees it (UTC), moved by `clock_shift_days` when a test asks.
    pub fn today(&self) -> NaiveDate {
        (Utc::now() + chrono::TimeDelta::days(self.clock_shift_days)).date_naive()
    }

    /// The day figures are written for: today, but never before the day the rollover already
    /// reached, so a clock that went back cannot roll the window back.
    pub fn today_for(&self, state: &StatsState) -> NaiveDate {
        self.today()
            .max(state.rolled_through.unwrap_or(NaiveDate::MIN))
    }
}
