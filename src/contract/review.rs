//! The review as the domain sees it: a rating is a whole number of half stars, so sums and
//! histograms stay exact and no float ever decides a bucket.

use std::fmt;

use chrono::{DateTime, Duration, Utc};

/// Longest title and content, in characters. Every way in (the API, the importer) applies
/// the same limits, so a stored review never depends on how it arrived.
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_CONTENT_CHARS: usize = 10_000;
/// What a rating must be, as told to whoever supplied a bad one.
pub const RATING_RULE: &str = "rating must be one of 0.5, 1.0, 1.5, ... 5.0 (half stars)";
/// Clock skew tolerated for a supplied created_at.
pub const MAX_FUTURE: Duration = Duration::minutes(5);

/// A rating of 0.5 to 5.0 stars in half-star steps, kept as the number of half stars (1..=10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rating(u8);

impl Rating {
    pub const MIN_HALVES: u8 = 1;
    pub const MAX_HALVES: u8 = 10;

    pub fn from_halves(halves: u8) -> Option<Self> {
        (Self::MIN_HALVES..=Self::MAX_HALVES)
            .contains(&halves)
            .then_some(Rating(halves))
    }

    /// Accepts exactly the half-star values 0.5, 1.0, ... 5.0.
    pub fn from_stars(stars: f64) -> Option<Self> {
        let halves = stars * 2.0;
        (halves.fract() == 0.0 && (1.0..=10.0).contains(&halves)).then_some(Rating(halves as u8))
    }

    pub fn halves(self) -> u8 {
        self.0
    }

    pub fn stars(self) -> f64 {
        f64::from(self.0) / 2.0
    }

    /// The histogram bucket: half stars rounded down, as the original design did
    /// (0.5 is zero stars, 1.0 and 1.5 are one star, ... 5.0 is five).
    pub fn star_bucket(self) -> usize {
        usize::from(self.0 / 2)
    }
}

impl fmt::Display for Rating {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0 / 2, if self.0 % 2 == 1 { 5 } else { 0 })
    }
}

/// A moderator's decision on a review: the `moderation` column of `reviews` (migration V11).
/// It is part of the row, so a verdict that honours it is still a pure function of the row
/// (DESIGN.md), and an overturn flows through CDC like any edit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Valid,
    Fraud,
}

/// The reason, first in a verdict's reasons, that says a moderator decided it.
pub const MODERATOR_REASON: &str = "moderator";

impl Decision {
    /// Exactly `valid` or `fraud`, as the column's CHECK allows. Anything else (possible only
    /// once the CHECK is dropped) is no decision: the model judges the row.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "valid" => Some(Decision::Valid),
            "fraud" => Some(Decision::Fraud),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Valid => "valid",
            Decision::Fraud => "fraud",
        }
    }
}

/// Why a title or content (`field`) cannot be stored, or None when it can.
pub fn text_fault(field: &str, text: &str, max_chars: usize) -> Option<String> {
    if text.chars().count() > max_chars {
        return Some(format!("{field} must be at most {max_chars} characters"));
    }
    // PostgreSQL's text cannot hold NUL: the insert would fail for the whole batch.
    if text.contains('\0') {
        return Some(format!("{field} must not contain NUL characters"));
    }
    None
}

/// A created_at later than `now` (beyond clock skew) would count in figures before it happens.
pub fn created_at_is_future(created_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    created_at > now + MAX_FUTURE
}

/// The documented range of a created_at that counts, [0001-01-01T00:00:00Z,
/// 10000-01-01T00:00:00Z): the years every reader's timestamp type holds. A row outside it
/// is judged fraud (rule `created_at_out_of_range`), so no way in stores one.
pub const CREATED_AT_RANGE: &str = "0001-01-01T00:00:00Z (inclusive) to 10000-01-01T00:00:00Z";

/// Whether `created_at` lies in [`CREATED_AT_RANGE`].
pub fn created_at_in_range(created_at: DateTime<Utc>) -> bool {
    use chrono::Datelike;
    (1..=9999).contains(&created_at.year())
}

/// Why a supplied created_at cannot be stored, or None when it can: outside the documented
/// range, or in the future.
pub fn created_at_fault(
    field: &str,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<String> {
    if !created_at_in_range(created_at) {
        return Some(format!(
            "{field} must be from {CREATED_AT_RANGE} (UTC), not {}",
            created_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        ));
    }
    if created_at_is_future(created_at, now) {
        return Some(format!("{field} must not be in the future"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::Rating;

    #[test]
    fn only_half_stars_between_half_and_five_are_ratings() {
        for ok in [0.5, 1.0, 1.5, 2.5, 4.5, 5.0] {
            assert_eq!(Rating::from_stars(ok).map(Rating::stars), Some(ok), "{ok}");
        }
        for bad in [0.0, -0.5, 0.25, 4.75, 5.5, 10.0, f64::NAN, f64::INFINITY] {
            assert_eq!(Rating::from_stars(bad), None, "{bad}");
        }
    }

    #[test]
    fn created_at_counts_from_year_1_to_year_9999_in_utc() {
        use chrono::{DateTime, Utc};
        let now = Utc::now();
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        for ok in [
            "0001-01-01T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "0001-01-01T01:00:00+01:00",
        ] {
            assert_eq!(
                super::created_at_fault("created_at", at(ok), now),
                None,
                "{ok}"
            );
        }
        for bad in ["0000-12-31T23:59:59Z", "0001-01-01T00:00:00+00:01"] {
            let fault = super::created_at_fault("created_at", at(bad), now).unwrap();
            assert!(
                fault.starts_with("created_at must be from 0001-01-01"),
                "{fault}"
            );
        }
        // Past 9999 is also in the future: the range is what it says first.
        let far = DateTime::<Utc>::from_timestamp(253_402_300_800, 0).unwrap();
        assert!(super::created_at_fault("created_at", far, now)
            .unwrap()
            .contains("10000-01-01"));
    }

    #[test]
    fn buckets_round_half_stars_down() {
        let bucket = |s| Rating::from_stars(s).unwrap().star_bucket();
        assert_eq!(
            [0.5, 1.0, 1.5, 2.0, 4.5, 5.0].map(bucket),
            [0, 1, 1, 2, 4, 5]
        );
        assert_eq!(Rating::from_stars(4.5).unwrap().to_string(), "4.5");
        assert_eq!(Rating::from_stars(3.0).unwrap().to_string(), "3.0");
    }
}
