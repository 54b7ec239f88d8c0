//! The review as the domain sees it: a rating is a whole number of half stars, so sums and
//! histograms stay exact and no float ever decides a bucket.

use std::fmt;

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
