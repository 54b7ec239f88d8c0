//! The demo's changes, as a pure function of a seed: the same seed gives the same sequence
//! of changes, whatever the database or the clock does, so a run can be repeated.

use chrono::Duration;

use super::words::*;
use crate::contract::review::Rating;

/// Half stars 1..=10 with these weights (percent): most reviews are 4 or 5 stars, as on
/// real course sites.
const RATING_WEIGHTS: [u64; 10] = [1, 1, 2, 2, 3, 6, 8, 17, 25, 35];
/// Share of inserts and content edits that are spam, in percent.
const SPAM_PERCENT: u64 = 3;
/// Share of inserts that are backdated (up to BACKDATE_DAYS), in percent: the rest are now.
const BACKDATED_PERCENT: u64 = 20;
const BACKDATE_DAYS: i64 = 120;
const USERS: u64 = 100_000;

/// splitmix64: small, fast and good enough for a workload; no crate needed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// A plausible title for demo course `id` (1-based): a pure function of the id, so every run
/// names the courses alike; past the formats × topics distinct ones, a part number follows.
pub fn course_title(id: i64) -> String {
    let n = (id.max(1) - 1) as usize;
    let topic = TOPICS[n % TOPICS.len()];
    let format = COURSE_FORMATS[(n / TOPICS.len()) % COURSE_FORMATS.len()];
    let title = format.replace("{}", topic);
    match n / (TOPICS.len() * COURSE_FORMATS.len()) {
        0 => title,
        part => format!("{title}, part {}", part + 1),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewReview {
    pub course_id: i64,
    pub user_id: i64,
    pub rating: Rating,
    pub title: Option<String>,
    pub content: String,
    /// How far before now created_at is.
    pub age: Duration,
    pub spam: bool,
}

/// One change. Edits and deletes name the review by its index among those the demo
/// inserted and has not deleted, so the choice does not depend on the ids the table hands out.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Insert(NewReview),
    Rating {
        pick: usize,
        rating: Rating,
    },
    Content {
        pick: usize,
        content: String,
        spam: bool,
    },
    Delete {
        pick: usize,
    },
}

pub struct Generator {
    rng: Rng,
    courses: i64,
}

impl Generator {
    pub fn new(seed: u64, courses: i64) -> Self {
        Generator {
            rng: Rng::new(seed),
            courses: courses.max(1),
        }
    }

    /// The next change, given how many of the demo's reviews exist (edits need one).
    pub fn next(&mut self, live: usize) -> Change {
        let roll = self.rng.below(100);
        if live == 0 || roll < 84 {
            return Change::Insert(self.review());
        }
        let pick = self.rng.below(live as u64) as usize;
        match roll {
            84..=90 => Change::Rating {
                pick,
                rating: self.rating(),
            },
            91..=96 => {
                let spam = self.rng.percent(SPAM_PERCENT);
                let content = if spam {
                    self.spam()
                } else {
                    let rating = self.rating();
                    self.sentences(rating)
                };
                Change::Content {
                    pick,
                    content,
                    spam,
                }
            }
            _ => Change::Delete { pick },
        }
    }

    fn review(&mut self) -> NewReview {
        // Squaring a uniform number favours low course ids: a few popular courses, a long tail.
        let u = self.rng.unit();
        let course_id = 1 + ((u * u) * self.courses as f64) as i64;
        let rating = self.rating();
        let spam = self.rng.percent(SPAM_PERCENT);
        let content = if spam {
            self.spam()
        } else {
            self.sentences(rating)
        };
        let title = self
            .rng
            .percent(80)
            .then(|| self.rng.pick(titles(rating)).to_string());
        let age = if self.rng.percent(BACKDATED_PERCENT) {
            Duration::seconds(self.rng.below((BACKDATE_DAYS * 86_400) as u64) as i64)
        } else {
            Duration::zero()
        };
        NewReview {
            course_id: course_id.min(self.courses),
            user_id: 1 + self.rng.below(USERS) as i64,
            rating,
            title,
            content,
            age,
            spam,
        }
    }

    fn rating(&mut self) -> Rating {
        let mut roll = self.rng.below(RATING_WEIGHTS.iter().sum());
        for (halves, weight) in (1u8..).zip(RATING_WEIGHTS) {
            if roll < weight {
                return Rating::from_halves(halves).expect("1..=10 are ratings");
            }
            roll -= weight;
        }
        unreachable!("the roll is below the sum of the weights")
    }

    fn sentences(&mut self, rating: Rating) -> String {
        let pool = match rating.halves() {
            8..=10 => POSITIVE_SENTENCES,
            6..=7 => MIXED_SENTENCES,
            _ => NEGATIVE_SENTENCES,
        };
        // Consecutive sentences of the pool: a review does not say the same thing twice.
        let start = self.rng.below(pool.len() as u64) as usize;
        let count = 1 + self.rng.below(3) as usize;
        (0..count)
            .map(|k| pool[(start + k) % pool.len()])
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn spam(&mut self) -> String {
        let n = self.rng.below(1000).to_string();
        self.rng.pick(SPAM).replace("{n}", &n)
    }
}

fn titles(rating: Rating) -> &'static [&'static str] {
    match rating.halves() {
        8..=10 => POSITIVE_TITLES,
        6..=7 => MIXED_TITLES,
        _ => NEGATIVE_TITLES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_courses_have_distinct_titles() {
        let titles: std::collections::HashSet<String> = (1..=50).map(course_title).collect();
        assert_eq!(titles.len(), 50);
        assert_eq!(course_title(1), "Rust for Beginners");
        assert_eq!(course_title(51), "Rust for Beginners, part 2");
    }

    fn run(seed: u64, n: usize) -> Vec<Change> {
        let mut g = Generator::new(seed, 50);
        let mut live = 0usize;
        (0..n)
            .map(|_| {
                let change = g.next(live);
                match change {
                    Change::Insert(_) => live += 1,
                    Change::Delete { .. } => live -= 1,
                    _ => {}
                }
                change
            })
            .collect()
    }

    #[test]
    fn a_seed_gives_the_same_changes() {
        assert_eq!(run(7, 500), run(7, 500));
        assert_ne!(run(7, 500), run(8, 500));
    }

    #[test]
    fn the_mix_looks_like_a_review_site() {
        let changes = run(42, 10_000);
        let inserts: Vec<&NewReview> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Insert(r) => Some(r),
                _ => None,
            })
            .collect();
        let share = |n: usize, of: usize| n as f64 / of as f64;
        assert!((0.80..0.88).contains(&share(inserts.len(), changes.len())));
        let deletes = changes
            .iter()
            .filter(|c| matches!(c, Change::Delete { .. }))
            .count();
        assert!(deletes > 0 && share(deletes, changes.len()) < 0.05);
        let spam = inserts.iter().filter(|r| r.spam).count();
        assert!((0.015..0.05).contains(&share(spam, inserts.len())));
        let high = inserts.iter().filter(|r| r.rating.halves() >= 8).count();
        assert!(share(high, inserts.len()) > 0.7);
        let backdated = inserts.iter().filter(|r| r.age > Duration::zero()).count();
        assert!((0.15..0.25).contains(&share(backdated, inserts.len())));
        assert!(inserts
            .iter()
            .all(|r| r.age <= Duration::days(BACKDATE_DAYS)
                && (1..=50).contains(&r.course_id)
                && r.user_id > 0));
        assert!(inserts
            .iter()
            .filter(|r| r.spam)
            .all(|r| r.content.contains("http://")
                || r.content.contains("www.")
                || r.content.contains('@')));
    }

    #[test]
    fn the_heuristic_model_flags_the_spam_and_only_the_spam() {
        use crate::transform::score::heuristic::HeuristicScorer;
        use crate::transform::score::Scorer;
        let model = HeuristicScorer::new(0.5);
        let at = chrono::Utc::now();
        for change in run(3, 3_000) {
            let Change::Insert(r) = change else { continue };
            let row = crate::contract::image::ReviewRow {
                id: 1,
                course_id: r.course_id,
                user_id: Some(r.user_id),
                rating: r.rating,
                title: r.title.clone(),
                content: Some(r.content.clone()),
                created_at: at,
                updated_at: Some(at),
            };
            assert_eq!(model.judge(&row).fraud, r.spam, "{r:?}");
        }
    }
}
