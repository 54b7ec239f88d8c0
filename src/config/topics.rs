//! How the pipeline's topics are named and created: shared by every stage that reads or
//! writes them.

/// How the pipeline's topics are created when missing.
#[derive(clap::Args, Clone, Debug)]
pub struct TopicSettings {
    /// Partitions of each topic reviewflow creates.
    #[arg(
        long,
        env = "REVIEWFLOW_TOPIC_PARTITIONS",
        default_value_t = 3,
        global = true
    )]
    pub partitions: i32,

    /// Replication factor of each topic reviewflow creates; -1 takes the cluster's
    /// (its brokers' default.replication.factor: 3 on the local stack's three-node cluster).
    #[arg(
        long,
        env = "REVIEWFLOW_TOPIC_REPLICATION",
        default_value_t = crate::kafka::CLUSTER_REPLICATION,
        allow_negative_numbers = true,
        value_parser = replication_factor,
        global = true
    )]
    pub replication_factor: i32,

    /// Change events of `reviews`, written by cdc; snapshot completion is recorded in
    /// `<topic>.snapshots`.
    #[arg(
        long = "changes-topic",
        env = "REVIEWFLOW_CHANGES_TOPIC",
        default_value = "reviews.changes",
        global = true
    )]
    pub changes: String,

    /// The changelog of the set of valid reviews, written by fraud, read by stats.
    #[arg(
        long = "valid-topic",
        env = "REVIEWFLOW_VALID_TOPIC",
        default_value = "reviews.valid",
        global = true
    )]
    pub valid: String,

    /// Review versions judged fraud, with score and reasons.
    #[arg(
        long = "fraud-topic",
        env = "REVIEWFLOW_FRAUD_TOPIC",
        default_value = "reviews.fraud",
        global = true
    )]
    pub fraud: String,

    /// One verdict per review version, read by the verdict sink.
    #[arg(
        long = "verdicts-topic",
        env = "REVIEWFLOW_VERDICTS_TOPIC",
        default_value = "reviews.verdicts",
        global = true
    )]
    pub verdicts: String,

    /// Records a stage could not read, with the reason in headers.
    #[arg(
        long = "dead-letter-topic",
        env = "REVIEWFLOW_DEAD_LETTER_TOPIC",
        default_value = "reviewflow.dead-letters",
        global = true
    )]
    pub dead_letters: String,
}

/// -1 (the cluster's default) or a count of copies.
fn replication_factor(text: &str) -> Result<i32, String> {
    match text.trim().parse::<i32>() {
        Ok(n) if n == -1 || n >= 1 => Ok(n),
        _ => Err(format!(
            "{text:?} is not a replication factor: give a number of copies (1 or more), or -1 \
             for the brokers' default.replication.factor"
        )),
    }
}
