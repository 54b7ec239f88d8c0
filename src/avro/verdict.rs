//! The verdict record of `reviews.verdicts` and `reviews.fraud`: what the fraud worker said
//! about one version of a review. `version` is the commit LSN of the change judged, so the
//! newest verdict of a review is the one with the highest (version, position).

use std::sync::LazyLock;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use serde_json::json;

use crate::change::ReviewRow;
use crate::error::{Error, Result};
use crate::lsn::Lsn;

/// One verdict. On `reviews.fraud` it carries the review as judged; on `reviews.verdicts`
/// it does not (the sink needs only the figures, and the review is in `reviews.changes`).
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub review_id: i64,
    pub course_id: i64,
    pub version: Lsn,
    pub position: i64,
    pub fraud: bool,
    pub score: f64,
    pub reasons: Vec<String>,
    pub model: String,
    pub review: Option<ReviewRow>,
}

pub static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    Schema::parse(&json!({
        "type": "record", "name": "Verdict", "namespace": "reviewflow",
        "fields": [
            {"name": "review_id", "type": "long"},
            {"name": "course_id", "type": "long"},
            {"name": "version", "type": "long", "doc": "commit LSN of the change judged"},
            {"name": "position", "type": "long", "doc": "index of the change in its transaction"},
            {"name": "verdict", "type": "string", "doc": "valid or fraud"},
            {"name": "score", "type": "double"},
            {"name": "reasons", "type": {"type": "array", "items": "string"}},
            {"name": "model", "type": "string"},
            {"name": "review", "default": null, "type": ["null", {
                "type": "record", "name": "JudgedReview", "fields": [
                    {"name": "user_id", "type": "long"},
                    {"name": "rating", "type": "string", "doc": "stars, e.g. 4.5"},
                    {"name": "title", "type": ["null", "string"], "default": null},
                    {"name": "content", "type": ["null", "string"], "default": null},
                    {"name": "created_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
                    {"name": "updated_at", "type": {"type": "long", "logicalType": "timestamp-micros"}}
                ]}]}
        ]
    }))
    .expect("the verdict schema is valid Avro")
});

/// Built once, like the schema: building resolves the schema's names.
static WRITER: LazyLock<GenericDatumWriter<'static>> = LazyLock::new(|| {
    GenericDatumWriter::builder(&SCHEMA)
        .build()
        .expect("the verdict schema resolves")
});

/// The Avro body of a verdict.
pub fn encode(v: &Verdict) -> Result<Vec<u8>> {
    let review = match &v.review {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(r) => Value::Union(
            1,
            Box::new(Value::Record(vec![
                ("user_id".into(), Value::Long(r.user_id)),
                (
                    "rating".into(),
                    Value::String(format!("{:.1}", r.rating.stars())),
                ),
                ("title".into(), optional_string(&r.title)),
                ("content".into(), optional_string(&r.content)),
                (
                    "created_at".into(),
                    Value::TimestampMicros(r.created_at.timestamp_micros()),
                ),
                (
                    "updated_at".into(),
                    Value::TimestampMicros(r.updated_at.timestamp_micros()),
                ),
            ])),
        ),
    };
    let record = Value::Record(vec![
        ("review_id".into(), Value::Long(v.review_id)),
        ("course_id".into(), Value::Long(v.course_id)),
        ("version".into(), Value::Long(v.version.0 as i64)),
        ("position".into(), Value::Long(v.position)),
        (
            "verdict".into(),
            Value::String(if v.fraud { "fraud" } else { "valid" }.into()),
        ),
        ("score".into(), Value::Double(v.score)),
        (
            "reasons".into(),
            Value::Array(v.reasons.iter().cloned().map(Value::String).collect()),
        ),
        ("model".into(), Value::String(v.model.clone())),
        ("review".into(), review),
    ]);
    Ok(WRITER.write_value_to_vec(record)?)
}

/// What the verdict sink needs of a verdict written with `writer` (any compatible version).
pub fn decode(writer: &Schema, body: &[u8]) -> Result<Verdict> {
    let value = GenericDatumReader::builder(writer)
        .reader_schema(&SCHEMA)
        .build()?
        .read_value(&mut &body[..])?;
    let Value::Record(fields) = value else {
        return Err(Error::Decode("a verdict is not a record".into()));
    };
    let mut v = Verdict {
        review_id: 0,
        course_id: 0,
        version: Lsn::ZERO,
        position: 0,
        fraud: false,
        score: 0.0,
        reasons: Vec::new(),
        model: String::new(),
        review: None,
    };
    for (name, value) in fields {
        match (name.as_str(), value) {
            ("review_id", Value::Long(x)) => v.review_id = x,
            ("course_id", Value::Long(x)) => v.course_id = x,
            ("version", Value::Long(x)) => v.version = Lsn(x as u64),
            ("position", Value::Long(x)) => v.position = x,
            ("verdict", Value::String(x)) => {
                v.fraud = match x.as_str() {
                    "fraud" => true,
                    "valid" => false,
                    other => return Err(Error::Decode(format!("unknown verdict {other:?}"))),
                }
            }
            ("score", Value::Double(x)) => v.score = x,
            ("reasons", Value::Array(xs)) => {
                v.reasons = xs
                    .into_iter()
                    .map(|x| match x {
                        Value::String(s) => Ok(s),
                        other => Err(Error::Decode(format!("reason {other:?} is not a string"))),
                    })
                    .collect::<Result<_>>()?
            }
            ("model", Value::String(x)) => v.model = x,
            _ => {}
        }
    }
    Ok(v)
}

fn optional_string(s: &Option<String>) -> Value {
    match s {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(s) => Value::Union(1, Box::new(Value::String(s.clone()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::Rating;

    #[test]
    fn a_verdict_round_trips_with_and_without_the_review() {
        let mut v = Verdict {
            review_id: 7,
            course_id: 3,
            version: Lsn(0x16B3748),
            position: 2,
            fraud: true,
            score: 0.75,
            reasons: vec!["link".into(), "shouting".into()],
            model: "heuristic-v1@0.5".into(),
            review: None,
        };
        assert_eq!(decode(&SCHEMA, &encode(&v).unwrap()).unwrap(), v);
        v.review = Some(ReviewRow {
            id: 7,
            course_id: 3,
            user_id: 9,
            rating: Rating::from_halves(9).unwrap(),
            title: None,
            content: Some("see http://spam".into()),
            created_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            updated_at: chrono::DateTime::from_timestamp(1_700_000_100, 0).unwrap(),
        });
        let decoded = decode(&SCHEMA, &encode(&v).unwrap()).unwrap();
        // The sink does not need the review back; the rest must survive exactly.
        assert_eq!(decoded, Verdict { review: None, ..v });
        assert!(decode(&SCHEMA, b"\x02").is_err());
    }
}
