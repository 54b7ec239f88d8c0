//! Fraud scorers: pure functions of a review row and a model version.
//!
//! A scorer sees nothing but the row: no clock, no randomness, no state. The same row always
//! gets the same judgement from the same model, so the verdict of an old image can be
//! recomputed at any time, and the model string names the function exactly.

pub mod heuristic;
pub mod seed;

use crate::change::ReviewRow;
use crate::error::{Error, Result};

/// What a scorer says about one version of a review.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    pub fraud: bool,
    /// 0..=1; higher is more suspicious.
    pub score: f64,
    /// Stable snake_case names of what made the score, strongest first.
    pub reasons: Vec<String>,
}

/// A fraud model: a pure function of the review row (same row -> same judgement, always), so
/// the verdict of an old image can be recomputed.
pub trait Scorer: Send + Sync {
    /// Names the function exactly, including parameters that change results
    /// (e.g. "heuristic-v1@0.5", "seed-murmur2-v1").
    fn model(&self) -> &str;
    fn judge(&self, review: &ReviewRow) -> Judgement;
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScorerKind {
    Seed,
    Heuristic,
}

/// The scorer configured; threshold applies to the heuristic scorer and must be in (0, 1],
/// else Error::Config naming REVIEWFLOW_FRAUD_THRESHOLD.
///
/// The threshold is checked whichever scorer is chosen: a bad setting should fail now, not
/// on the day someone switches to the heuristic scorer.
pub fn scorer(kind: ScorerKind, threshold: f64) -> Result<Box<dyn Scorer>> {
    // Written so that NaN fails too.
    if !(threshold > 0.0 && threshold <= 1.0) {
        return Err(Error::Config(format!(
            "REVIEWFLOW_FRAUD_THRESHOLD must be in (0, 1], got {threshold}"
        )));
    }
    Ok(match kind {
        ScorerKind::Seed => Box::new(seed::SeedScorer::new()),
        ScorerKind::Heuristic => Box::new(heuristic::HeuristicScorer::new(threshold)),
    })
}

#[cfg(test)]
mod tests {
    use super::{scorer, ScorerKind};
    use crate::error::Error;

    #[test]
    fn threshold_outside_zero_to_one_is_a_config_error() {
        for bad in [0.0, -0.1, 1.000001, f64::NAN, f64::INFINITY] {
            for kind in [ScorerKind::Seed, ScorerKind::Heuristic] {
                match scorer(kind, bad) {
                    Err(Error::Config(msg)) => {
                        assert!(msg.contains("REVIEWFLOW_FRAUD_THRESHOLD"), "{msg}")
                    }
                    Err(other) => panic!("{bad}: unexpected error {other}"),
                    Ok(s) => panic!("{bad}: accepted as {}", s.model()),
                }
            }
        }
    }

    #[test]
    fn model_strings_name_the_function() {
        assert_eq!(
            scorer(ScorerKind::Heuristic, 0.5).unwrap().model(),
            "heuristic-v1@0.5"
        );
        assert_eq!(
            scorer(ScorerKind::Heuristic, 1.0).unwrap().model(),
            "heuristic-v1@1"
        );
        assert_eq!(
            scorer(ScorerKind::Seed, 0.5).unwrap().model(),
            "seed-murmur2-v1"
        );
    }
}
