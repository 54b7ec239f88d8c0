//! The command-line arguments of the fraud stage (`reviewflow fraud`, and `replay --from
//! snapshot`, which judges with the same model).

use super::score::ScorerKind;

/// The fraud workers' consumer group by default (`status` reports on the same one).
pub const DEFAULT_GROUP: &str = "reviewflow-fraud";

/// The fraud worker: which model judges, and how records are grouped into transactions.
#[derive(clap::Args, Clone, Debug)]
pub struct FraudConfig {
    /// The fraud model: `heuristic` (explainable signals) or `seed` (the original's hash rule).
    #[arg(
        long,
        env = "REVIEWFLOW_SCORER",
        value_enum,
        default_value = "heuristic"
    )]
    pub scorer: ScorerKind,

    /// Score at or above which the heuristic model calls a review fraud, in (0, 1].
    #[arg(long, env = "REVIEWFLOW_FRAUD_THRESHOLD", default_value_t = 0.5)]
    pub fraud_threshold: f64,

    /// Consumer group of the fraud workers; instances in one group split the partitions.
    #[arg(
        id = "fraud_group",
        long = "fraud-group",
        env = "REVIEWFLOW_FRAUD_GROUP",
        default_value = DEFAULT_GROUP
    )]
    pub group: String,
}
