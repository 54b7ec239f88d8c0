//! A review image as the pipeline carries it, and the rules that decide whether it can count.
//!
//! Every value PostgreSQL can store in `reviews` arrives (the key column included: with every
//! constraint dropped a course_id may be NULL, a rating NaN, a created_at `-infinity`), so the
//! carried image holds each contract column as NULL, a value of its type, or the text form of
//! what that type cannot hold. Only an image that passes the rules becomes a [`ReviewRow`],
//! the countable row figures and models read. One that does not is judged fraud, naming the
//! rules it breaks (DESIGN.md, "Delivery"), by every model: so no figure ever moves for it and
//! the invariant covers every row.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::contract::review::{Decision, Rating};

/// One column's carried value.
#[derive(Clone, Debug, PartialEq)]
pub enum Carried<T> {
    Null,
    Value(T),
    /// What the column's Avro type cannot hold, as PostgreSQL prints it (`NaN`, `infinity`,
    /// a year past what the type counts) or an oversize marker; also a value of a type the
    /// column was changed to that the pipeline cannot read as this column.
    Text(String),
}

impl<T> Carried<T> {
    pub fn value(&self) -> Option<&T> {
        match self {
            Carried::Value(v) => Some(v),
            _ => None,
        }
    }
}

impl<T: fmt::Display> fmt::Display for Carried<T> {
    /// As PostgreSQL prints the value (NULL as `NULL`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Carried::Null => f.write_str("NULL"),
            Carried::Value(v) => v.fmt(f),
            Carried::Text(t) => f.write_str(t),
        }
    }
}

/// An exact decimal: `unscaled` × 10^-`scale` (numeric(p,s) at any scale).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decimal {
    pub unscaled: i128,
    pub scale: u32,
}

impl Decimal {
    /// The whole number of half stars it is, if it is one.
    pub fn halves(self) -> Option<u8> {
        let unit = 10i128.checked_pow(self.scale)?;
        let doubled = self.unscaled.checked_mul(2)?;
        (doubled % unit == 0)
            .then(|| u8::try_from(doubled / unit).ok())
            .flatten()
    }
}

impl fmt::Display for Decimal {
    /// PostgreSQL's text form at this scale: "4.5", "-0.25", "7".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.unscaled.unsigned_abs().to_string();
        let sign = if self.unscaled < 0 { "-" } else { "" };
        let scale = self.scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{whole}.{fraction}")
    }
}

/// The contract columns of one image of a review, every value tolerated.
#[derive(Clone, Debug, PartialEq)]
pub struct ReviewImage {
    pub id: i64,
    /// None: NULL, or not a value an id can be.
    pub course_id: Option<i64>,
    pub user_id: Option<i64>,
    pub rating: Carried<Decimal>,
    /// As carried: an oversize marker stands in for the text it replaced.
    pub title: Option<String>,
    pub content: Option<String>,
    pub created_at: Carried<DateTime<Utc>>,
    pub updated_at: Carried<DateTime<Utc>>,
    /// `moderation` as carried (None: NULL, a table without the column, or not text);
    /// [`ReviewImage::decision`] reads it.
    pub moderation: Option<String>,
}

/// A row that can count ([`ReviewImage::countable`]): the columns figures and models
/// read. Columns added later travel in the Avro record but are not needed here.
#[derive(Clone, Debug, PartialEq)]
pub struct ReviewRow {
    pub id: i64,
    pub course_id: i64,
    /// No rule reads it, so a row without one still counts.
    pub user_id: Option<i64>,
    pub rating: Rating,
    pub title: Option<String>,
    pub content: Option<String>,
    pub created_at: DateTime<Utc>,
    /// None: NULL, or not an instant (infinity, a year past what the type counts).
    pub updated_at: Option<DateTime<Utc>>,
}

/// Why a row cannot count; `name` is the reason a verdict gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// course_id is NULL: there is no course to count it in.
    NoCourse,
    /// rating is NULL, NaN, infinite, or not one of 0.5, 1.0, ... 5.0.
    RatingOffScale,
    /// created_at is NULL, ±infinity, or outside `review::CREATED_AT_RANGE`.
    CreatedAtOutOfRange,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::NoCourse => "no_course",
            Rule::RatingOffScale => "rating_off_scale",
            Rule::CreatedAtOutOfRange => "created_at_out_of_range",
        }
    }
}

impl ReviewImage {
    /// The moderator's decision, if the row carries one.
    pub fn decision(&self) -> Option<Decision> {
        self.moderation.as_deref().and_then(Decision::parse)
    }

    /// The countable row, or every rule this image breaks (in `Rule` order).
    pub fn countable(&self) -> Result<ReviewRow, Vec<Rule>> {
        let mut broken = Vec::new();
        if self.course_id.is_none() {
            broken.push(Rule::NoCourse);
        }
        let rating = self
            .rating
            .value()
            .and_then(|d| d.halves())
            .and_then(Rating::from_halves);
        if rating.is_none() {
            broken.push(Rule::RatingOffScale);
        }
        let created_at = self
            .created_at
            .value()
            .copied()
            .filter(|t| crate::contract::review::created_at_in_range(*t));
        if created_at.is_none() {
            broken.push(Rule::CreatedAtOutOfRange);
        }
        match (self.course_id, rating, created_at) {
            (Some(course_id), Some(rating), Some(created_at)) => Ok(ReviewRow {
                id: self.id,
                course_id,
                user_id: self.user_id,
                rating,
                title: self.title.clone(),
                content: self.content.clone(),
                created_at,
                updated_at: self.updated_at.value().copied(),
            }),
            _ => Err(broken),
        }
    }
}

impl From<&ReviewRow> for ReviewImage {
    fn from(r: &ReviewRow) -> Self {
        ReviewImage {
            id: r.id,
            course_id: Some(r.course_id),
            user_id: r.user_id,
            rating: Carried::Value(Decimal {
                unscaled: i128::from(r.rating.halves()) * 5,
                scale: 1,
            }),
            title: r.title.clone(),
            content: r.content.clone(),
            created_at: Carried::Value(r.created_at),
            updated_at: r.updated_at.map_or(Carried::Null, Carried::Value),
            // The countable row leaves the decision to `score::judge`, which reads the image.
            moderation: None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use chrono::NaiveDate;

    /// The documented edges of `review::CREATED_AT_RANGE`.
    fn day(year: i32) -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(year, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
    }

    fn created_at_min() -> DateTime<Utc> {
        day(1)
    }

    fn created_at_end() -> DateTime<Utc> {
        day(10000)
    }

    /// A review that counts, for tests that need one image to vary.
    pub(crate) fn image() -> ReviewImage {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        ReviewImage {
            id: 7,
            course_id: Some(3),
            user_id: Some(9),
            rating: Carried::Value(Decimal {
                unscaled: 45,
                scale: 1,
            }),
            title: None,
            content: Some("fine".into()),
            created_at: Carried::Value(at),
            updated_at: Carried::Value(at),
            moderation: None,
        }
    }

    fn rating(unscaled: i128, scale: u32) -> Carried<Decimal> {
        Carried::Value(Decimal { unscaled, scale })
    }

    #[test]
    fn a_plain_row_counts_as_it_is() {
        let row = image().countable().unwrap();
        assert_eq!((row.id, row.course_id, row.user_id), (7, 3, Some(9)));
        assert_eq!(row.rating, Rating::from_stars(4.5).unwrap());
        assert_eq!(ReviewImage::from(&row), image());
    }

    #[test]
    fn half_stars_count_at_any_scale() {
        for (unscaled, scale, stars) in [(5, 1, 0.5), (50, 1, 5.0), (450, 2, 4.5), (3, 0, 3.0)] {
            let mut i = image();
            i.rating = rating(unscaled, scale);
            let row = i.countable().unwrap();
            assert_eq!(row.rating.stars(), stars, "{unscaled} at scale {scale}");
        }
    }

    #[test]
    fn each_rule_is_named() {
        let broken = |change: &dyn Fn(&mut ReviewImage)| {
            let mut i = image();
            change(&mut i);
            i.countable().unwrap_err()
        };
        assert_eq!(broken(&|i| i.course_id = None), [Rule::NoCourse]);
        for off in [
            Carried::Null,
            Carried::Text("NaN".into()),
            Carried::Text("Infinity".into()),
            rating(0, 1),
            rating(75, 1),
            rating(-5, 1),
            rating(425, 2),
            rating(55, 1),
        ] {
            assert_eq!(
                broken(&|i| i.rating = off.clone()),
                [Rule::RatingOffScale],
                "{off:?}"
            );
        }
        let bc = NaiveDate::from_ymd_opt(0, 12, 31)
            .unwrap()
            .and_hms_opt(23, 59, 59)
            .unwrap()
            .and_utc();
        for out in [
            Carried::Null,
            Carried::Text("-infinity".into()),
            Carried::Text("infinity".into()),
            Carried::Text("12000-01-01 00:00:00+00".into()),
            Carried::Value(bc),
            Carried::Value(created_at_end()),
        ] {
            assert_eq!(
                broken(&|i| i.created_at = out.clone()),
                [Rule::CreatedAtOutOfRange],
                "{out:?}"
            );
        }
        let mut edge = image();
        edge.created_at = Carried::Value(created_at_min());
        assert!(edge.countable().is_ok(), "the first instant is in range");
        edge.created_at = Carried::Value(created_at_end() - chrono::TimeDelta::microseconds(1));
        assert!(edge.countable().is_ok(), "the last microsecond is in range");
        let all = broken(&|i| {
            i.course_id = None;
            i.rating = Carried::Null;
            i.created_at = Carried::Null;
        });
        assert_eq!(
            all.iter().map(|r| r.name()).collect::<Vec<_>>(),
            ["no_course", "rating_off_scale", "created_at_out_of_range"]
        );
    }

    #[test]
    fn columns_no_rule_reads_may_be_anything() {
        let mut i = image();
        i.user_id = None;
        i.updated_at = Carried::Text("infinity".into());
        i.title = Some("reviewflow.oversize length=9000000 sha256=00".into());
        let row = i.countable().unwrap();
        assert_eq!((row.user_id, row.updated_at), (None, None));
        assert_eq!(row.title, i.title);
    }

    #[test]
    fn decimals_print_as_postgres_does() {
        let text = |unscaled, scale| Decimal { unscaled, scale }.to_string();
        assert_eq!(text(45, 1), "4.5");
        assert_eq!(text(5, 1), "0.5");
        assert_eq!(text(-25, 2), "-0.25");
        assert_eq!(text(7, 0), "7");
        assert_eq!(text(0, 1), "0.0");
    }
}
