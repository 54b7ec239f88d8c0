//! The command-line arguments of the sinks (`reviewflow stats`, `reviewflow verdicts`).

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
}
