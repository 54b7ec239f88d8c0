//! Fraud scorers: pure functions of a review row and a model version.
//!
//! A scorer sees nothing but the row: no clock, no randomness, no state. The same row always
//! gets the same judgement from the same model, so the verdict of an old image can be
//! recomputed at any time, and the model string names the function exactly.

pub mod heuristic;
pub mod seed;

use crate::contract::image::ReviewImage;
use crate::contract::image::ReviewRow;
use crate::contract::lsn::SourcePosition;
use crate::contract::review::{Decision, MODERATOR_REASON};
use crate::contract::verdict::Verdict;
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

impl Judgement {
    /// The verdict it gives on `image`, the version at source position `at`, by `model`:
    /// what the fraud worker sends and replay writes (without the review, which only
    /// reviews.fraud carries). `digest` and `oversize` describe the image judged.
    pub fn verdict(
        &self,
        image: &ReviewImage,
        at: SourcePosition,
        model: &str,
        digest: Option<String>,
        oversize: Vec<String>,
    ) -> Verdict {
        Verdict {
            review_id: image.id,
            course_id: image.course_id,
            version: at.lsn,
            position: at.position,
            fraud: self.fraud,
            score: self.score,
            reasons: self.reasons.clone(),
            model: model.to_string(),
            digest,
            oversize,
            review: None,
        }
    }
}

/// A fraud model: a pure function of the review row (same row -> same judgement, always), so
/// the verdict of an old image can be recomputed.
pub trait Scorer: Send + Sync {
    /// Names the function exactly, including parameters that change results
    /// (e.g. "heuristic-v1@0.5", "seed-murmur2-v1").
    fn model(&self) -> &str;
    fn judge(&self, review: &ReviewRow) -> Judgement;
}

/// The verdict on one image, the one function every judge uses (the fraud worker, `replay
/// --from snapshot`, `verify`): a row that cannot count is fraud with score 1 and the rules it
/// breaks as reasons, whatever the model, so it never reaches a figure; any other row is
/// what `scorer` says, unless a moderator decided it (`reviews.moderation`): then the
/// decision is the verdict, `moderator` leads the reasons, and the model's score and reasons
/// follow, so the page still shows what the model saw. A moderator cannot make a row that
/// cannot count valid: it has no course or rating to count with.
pub fn judge(scorer: &dyn Scorer, image: &ReviewImage) -> Judgement {
    match image.countable() {
        Ok(row) => {
            let mut judgement = scorer.judge(&row);
            if let Some(decision) = image.decision() {
                judgement.fraud = decision == Decision::Fraud;
                judgement.reasons.insert(0, MODERATOR_REASON.to_string());
            }
            judgement
        }
        Err(rules) => Judgement {
            fraud: true,
            score: 1.0,
            reasons: rules.iter().map(|r| r.name().to_string()).collect(),
        },
    }
}

/// The scorer a model string names (what `Scorer::model` returns), or None when no scorer
/// of this build is that function: "seed-murmur2-v1", or "heuristic-v1@T" with T exactly as
/// the worker prints its threshold.
pub fn scorer_for_model(model: &str) -> Option<Box<dyn Scorer>> {
    let scorer: Box<dyn Scorer> = if model == seed::SeedScorer::new().model() {
        Box::new(seed::SeedScorer::new())
    } else {
        let (_, threshold) = model.split_once('@')?;
        let threshold: f64 = threshold.parse().ok()?;
        scorer(ScorerKind::Heuristic, threshold).ok()?
    };
    // "heuristic-v1@0.50" is not a string the worker writes: only an exact name is a model.
    (scorer.model() == model).then_some(scorer)
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
    use super::{judge, scorer, scorer_for_model, ScorerKind};
    use crate::contract::image::{Carried, Decimal, ReviewImage};
    use crate::error::Error;

    #[test]
    fn model_strings_parse_back_to_their_scorer() {
        for (kind, threshold) in [
            (ScorerKind::Seed, 0.5),
            (ScorerKind::Heuristic, 0.5),
            (ScorerKind::Heuristic, 1.0),
            (ScorerKind::Heuristic, 0.35),
            (ScorerKind::Heuristic, 1e-3),
        ] {
            let model = scorer(kind, threshold).unwrap().model().to_string();
            let parsed = scorer_for_model(&model).unwrap_or_else(|| panic!("{model}"));
            assert_eq!(parsed.model(), model);
        }
        for unknown in [
            "",
            "m",
            "heuristic-v1",
            "heuristic-v1@",
            "heuristic-v1@0.50",
            "heuristic-v1@1.0",
            "heuristic-v1@0",
            "heuristic-v1@2",
            "heuristic-v1@NaN",
            "heuristic-v2@0.5",
            "seed-murmur2-v1@0.5",
            "seed-murmur2-v2",
        ] {
            assert!(scorer_for_model(unknown).is_none(), "{unknown:?}");
        }
    }

    fn image(content: &str) -> ReviewImage {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        ReviewImage {
            id: 1,
            course_id: Some(2),
            user_id: Some(3),
            rating: Carried::Value(Decimal {
                unscaled: 35,
                scale: 1,
            }),
            title: None,
            content: Some(content.into()),
            created_at: Carried::Value(at),
            updated_at: Carried::Value(at),
            moderation: None,
        }
    }

    #[test]
    fn a_row_that_cannot_count_is_fraud_by_every_model_with_its_rules() {
        let honest = image("a clear and patient course, well paced");
        let mut lost = honest.clone();
        lost.course_id = None;
        lost.rating = Carried::Text("NaN".into());
        for model in ["heuristic-v1@0.5", "heuristic-v1@1", "seed-murmur2-v1"] {
            let scorer = scorer_for_model(model).unwrap();
            let j = judge(scorer.as_ref(), &lost);
            assert!(j.fraud, "{model}");
            assert_eq!(j.score, 1.0);
            assert_eq!(j.reasons, ["no_course", "rating_off_scale"]);
            // A countable row is the model's to judge.
            let row = honest.countable().unwrap();
            assert_eq!(
                judge(scorer.as_ref(), &honest),
                scorer.judge(&row),
                "{model}"
            );
        }
        let spam = image("buy now at http://spam.example.com");
        let heuristic = scorer_for_model("heuristic-v1@0.5").unwrap();
        let j = judge(heuristic.as_ref(), &spam);
        assert!(j.fraud && j.reasons.contains(&"link".to_string()), "{j:?}");
        let mut late = honest.clone();
        late.created_at = Carried::Text("infinity".into());
        assert_eq!(
            judge(heuristic.as_ref(), &late).reasons,
            ["created_at_out_of_range"]
        );
    }

    #[test]
    fn every_model_honours_the_moderators_decision_on_a_row_that_counts() {
        let spam = image("buy now at http://spam.example.com");
        let honest = image("a clear and patient course, well paced");
        for model in ["heuristic-v1@0.5", "seed-murmur2-v1"] {
            let scorer = scorer_for_model(model).unwrap();
            for (row, decision, fraud) in [
                (&spam, "valid", false),
                (&honest, "fraud", true),
                (&spam, "fraud", true),
            ] {
                let mut decided = row.clone();
                decided.moderation = Some(decision.into());
                let by_model = judge(scorer.as_ref(), row);
                let j = judge(scorer.as_ref(), &decided);
                assert_eq!(j.fraud, fraud, "{model} {decision}");
                assert_eq!(
                    j.score, by_model.score,
                    "{model}: the model's score is kept"
                );
                assert_eq!(j.reasons[0], "moderator", "{model}");
                assert_eq!(j.reasons[1..], by_model.reasons[..], "{model}");
            }
            // Only the two decisions are decisions; the model judges anything else.
            let mut odd = spam.clone();
            odd.moderation = Some("VALID".into());
            assert_eq!(judge(scorer.as_ref(), &odd), judge(scorer.as_ref(), &spam));
            // A row that cannot count stays fraud, by its rules, whatever the moderator says.
            let mut lost = spam.clone();
            lost.course_id = None;
            lost.moderation = Some("valid".into());
            let j = judge(scorer.as_ref(), &lost);
            assert!(j.fraud && j.reasons == ["no_course"], "{model}: {j:?}");
        }
    }

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
