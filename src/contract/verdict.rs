//! A verdict: what the fraud worker said about one version of a review, and, on
//! `reviews.verdicts`, when a review stopped existing. `version` is the commit LSN of the
//! change judged, so the newest verdict of a review is the one with the highest (version,
//! position). Its Avro form is `avro::verdict`.

use crate::contract::image::ReviewImage;
use crate::contract::lsn::Lsn;

/// One verdict. On `reviews.fraud` it carries the review as judged; on `reviews.verdicts`
/// it does not (the sink needs only the figures, and the review is in `reviews.changes`).
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub review_id: i64,
    /// None: the row has no course (a row that cannot count, judged fraud for it).
    pub course_id: Option<i64>,
    pub version: Lsn,
    pub position: i64,
    pub fraud: bool,
    pub score: f64,
    pub reasons: Vec<String>,
    pub model: String,
    /// `avro::digest` of the image judged, from the change envelope (None: the change was
    /// written before digests existed).
    pub digest: Option<String>,
    /// Columns of the image judged that were carried as oversize markers (names without the
    /// envelope's `after.` prefix): the model judged the marker, not the text.
    pub oversize: Vec<String>,
    pub review: Option<ReviewImage>,
}

/// What one record of `reviews.verdicts` says.
// Nearly every record is a verdict, unpacked at once into the sink's batch: boxing it would
// cost an allocation per record to save stack on the rare deletion.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A version of a review was judged (`op` = "judged", every record before deletions).
    Judged(Verdict),
    /// The review was deleted (or its id changed) at (version, position).
    Deleted(Deletion),
    /// Every review was deleted at (version, position): a TRUNCATE of `reviews`, or the
    /// restatement a new snapshot begins with.
    Truncated { version: Lsn, position: i64 },
}

/// A review deleted at (version, position); course_id from its last image.
#[derive(Clone, Debug, PartialEq)]
pub struct Deletion {
    pub review_id: i64,
    pub course_id: Option<i64>,
    pub version: Lsn,
    pub position: i64,
}

impl Record {
    /// The verdict, when the record is one.
    pub fn judged(self) -> Option<Verdict> {
        match self {
            Record::Judged(v) => Some(v),
            _ => None,
        }
    }
}
