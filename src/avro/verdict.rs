//! The Avro form of the verdict record of `reviews.verdicts` and `reviews.fraud`
//! (`contract::verdict`): what the fraud worker said about one version of a review.
//!
//! `reviews.verdicts` also says when a review stopped existing (`op`, see `Record`), because
//! review_verdicts keeps a deleted review's verdicts (they are history): without a record of
//! the delete, `reviewflow verify` could not tell a delete the pipeline saw from one it lost.

use std::sync::LazyLock;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use serde_json::json;

use crate::contract::image::Carried;
use crate::contract::lsn::Lsn;
use crate::contract::verdict::{Deletion, Record, Verdict};
use crate::error::{Error, Result};

/// Every field added since the first version has a default and every type change widens to
/// a union holding the old type, so this schema reads every verdict ever written (BACKWARD).
pub static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    let instant = json!(["null", {"type": "long", "logicalType": "timestamp-micros"}, "string"]);
    Schema::parse(&json!({
        "type": "record", "name": "Verdict", "namespace": "reviewflow",
        "fields": [
            {"name": "review_id", "type": "long"},
            {"name": "course_id", "type": ["null", "long"], "default": null,
             "doc": "null for a row without a course (judged fraud, reason no_course)"},
            {"name": "version", "type": "long", "doc": "commit LSN of the change judged"},
            {"name": "position", "type": "long", "doc": "index of the change in its transaction"},
            {"name": "verdict", "type": "string", "doc": "valid or fraud"},
            {"name": "score", "type": "double"},
            {"name": "reasons", "type": {"type": "array", "items": "string"}},
            {"name": "model", "type": "string"},
            {"name": "review", "default": null, "type": ["null", {
                "type": "record", "name": "JudgedReview", "fields": [
                    {"name": "user_id", "type": ["null", "long"], "default": null},
                    {"name": "rating", "type": ["null", "string"], "default": null,
                     "doc": "stars as PostgreSQL prints them, e.g. 4.5, or NaN"},
                    {"name": "title", "type": ["null", "string"], "default": null},
                    {"name": "content", "type": ["null", "string"], "default": null},
                    {"name": "created_at", "type": instant, "default": null,
                     "doc": "the string branch: what a timestamp cannot hold (infinity, ...)"},
                    {"name": "updated_at", "type": instant, "default": null},
                    {"name": "moderation", "type": ["null", "string"], "default": null,
                     "doc": "the moderator's decision (valid or fraud) the verdict honours"}
                ]}]},
            {"name": "digest", "type": ["null", "string"], "default": null,
             "doc": "sha256 of the judged image's contract columns (docs/guarantees.md)"},
            {"name": "oversize", "type": {"type": "array", "items": "string"}, "default": [],
             "doc": "columns judged as their oversize marker"},
            {"name": "op", "type": "string", "default": "judged",
             "doc": "judged: a verdict of the version; deleted: review_id was deleted at (version, position); truncated: every review was (review_id 0). A deletion's verdict field is its op, so a reader that predates op refuses it rather than taking it for a verdict"}
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
        None => null(),
        Some(r) => Value::Union(
            1,
            Box::new(Value::Record(vec![
                ("user_id".into(), optional(r.user_id.map(Value::Long))),
                (
                    "rating".into(),
                    optional(match &r.rating {
                        Carried::Null => None,
                        Carried::Value(d) => Some(Value::String(d.to_string())),
                        Carried::Text(t) => Some(Value::String(t.clone())),
                    }),
                ),
                ("title".into(), optional_string(&r.title)),
                ("content".into(), optional_string(&r.content)),
                ("created_at".into(), instant(&r.created_at)),
                ("updated_at".into(), instant(&r.updated_at)),
                ("moderation".into(), optional_string(&r.moderation)),
            ])),
        ),
    };
    let record = Value::Record(vec![
        ("review_id".into(), Value::Long(v.review_id)),
        ("course_id".into(), optional(v.course_id.map(Value::Long))),
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
        ("digest".into(), optional_string(&v.digest)),
        (
            "oversize".into(),
            Value::Array(v.oversize.iter().cloned().map(Value::String).collect()),
        ),
        ("op".into(), Value::String(JUDGED.into())),
    ]);
    Ok(WRITER.write_value_to_vec(record)?)
}

const JUDGED: &str = "judged";
const DELETED: &str = "deleted";
const TRUNCATED: &str = "truncated";

/// The Avro body of a deletion (`Record::Deleted`) or a truncate (`Record::Truncated`);
/// a `Record::Judged` is `encode`d.
pub fn encode_record(r: &Record) -> Result<Vec<u8>> {
    let (op, review_id, course_id, version, position) = match r {
        Record::Judged(v) => return encode(v),
        Record::Deleted(d) => (DELETED, d.review_id, d.course_id, d.version, d.position),
        Record::Truncated { version, position } => (TRUNCATED, 0, None, *version, *position),
    };
    let record = Value::Record(vec![
        ("review_id".into(), Value::Long(review_id)),
        ("course_id".into(), optional(course_id.map(Value::Long))),
        ("version".into(), Value::Long(version.0 as i64)),
        ("position".into(), Value::Long(position)),
        ("verdict".into(), Value::String(op.into())),
        ("score".into(), Value::Double(0.0)),
        ("reasons".into(), Value::Array(Vec::new())),
        ("model".into(), Value::String(String::new())),
        ("review".into(), null()),
        ("digest".into(), null()),
        ("oversize".into(), Value::Array(Vec::new())),
        ("op".into(), Value::String(op.into())),
    ]);
    Ok(WRITER.write_value_to_vec(record)?)
}

/// What the verdict sink needs of a record written with `writer` (any compatible version).
pub fn decode(writer: &Schema, body: &[u8]) -> Result<Record> {
    let value = GenericDatumReader::builder(writer)
        .reader_schema(&SCHEMA)
        .build()?
        .read_value(&mut &body[..])?;
    let Value::Record(fields) = value else {
        return Err(Error::Decode("a verdict is not a record".into()));
    };
    let mut op = JUDGED.to_string();
    let mut verdict = String::new();
    let mut v = Verdict {
        review_id: 0,
        course_id: None,
        version: Lsn::ZERO,
        position: 0,
        fraud: false,
        score: 0.0,
        reasons: Vec::new(),
        model: String::new(),
        digest: None,
        oversize: Vec::new(),
        review: None,
    };
    for (name, value) in fields {
        let value = match value {
            Value::Union(_, inner) => *inner,
            v => v,
        };
        match (name.as_str(), value) {
            ("review_id", Value::Long(x)) => v.review_id = x,
            ("course_id", Value::Long(x)) => v.course_id = Some(x),
            ("version", Value::Long(x)) => v.version = Lsn(x as u64),
            ("position", Value::Long(x)) => v.position = x,
            ("verdict", Value::String(x)) => verdict = x,
            ("op", Value::String(x)) => op = x,
            ("score", Value::Double(x)) => v.score = x,
            ("reasons", Value::Array(xs)) => v.reasons = strings(xs, "reason")?,
            ("model", Value::String(x)) => v.model = x,
            ("digest", Value::String(x)) => v.digest = Some(x),
            ("oversize", Value::Array(xs)) => v.oversize = strings(xs, "oversize column")?,
            _ => {}
        }
    }
    match op.as_str() {
        JUDGED => {}
        DELETED => {
            return Ok(Record::Deleted(Deletion {
                review_id: v.review_id,
                course_id: v.course_id,
                version: v.version,
                position: v.position,
            }))
        }
        TRUNCATED => {
            return Ok(Record::Truncated {
                version: v.version,
                position: v.position,
            })
        }
        other => return Err(Error::Decode(format!("unknown op {other:?}"))),
    }
    v.fraud = match verdict.as_str() {
        "fraud" => true,
        "valid" => false,
        other => return Err(Error::Decode(format!("unknown verdict {other:?}"))),
    };
    Ok(Record::Judged(v))
}

fn strings(values: Vec<Value>, what: &str) -> Result<Vec<String>> {
    values
        .into_iter()
        .map(|x| match x {
            Value::String(s) => Ok(s),
            other => Err(Error::Decode(format!("{what} {other:?} is not a string"))),
        })
        .collect()
}

fn null() -> Value {
    Value::Union(0, Box::new(Value::Null))
}

fn optional(value: Option<Value>) -> Value {
    value.map_or_else(null, |v| Value::Union(1, Box::new(v)))
}

fn instant(t: &Carried<chrono::DateTime<chrono::Utc>>) -> Value {
    match t {
        Carried::Null => null(),
        Carried::Value(t) => {
            Value::Union(1, Box::new(Value::TimestampMicros(t.timestamp_micros())))
        }
        Carried::Text(s) => Value::Union(2, Box::new(Value::String(s.clone()))),
    }
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
    use crate::contract::image::ReviewImage;

    fn verdict() -> Verdict {
        Verdict {
            review_id: 7,
            course_id: Some(3),
            version: Lsn(0x16B3748),
            position: 2,
            fraud: true,
            score: 0.75,
            reasons: vec!["link".into(), "shouting".into()],
            model: "heuristic-v1@0.5".into(),
            digest: Some("ab".repeat(32)),
            oversize: vec!["content".into()],
            review: None,
        }
    }

    #[test]
    fn a_verdict_round_trips_with_and_without_the_review() {
        let mut v = verdict();
        assert_eq!(
            decode(&SCHEMA, &encode(&v).unwrap()).unwrap(),
            Record::Judged(v.clone())
        );
        v.review = Some(ReviewImage {
            content: Some("see http://spam".into()),
            updated_at: Carried::Value(chrono::DateTime::from_timestamp(1_700_000_100, 0).unwrap()),
            ..crate::contract::image::tests::image()
        });
        let decoded = decode(&SCHEMA, &encode(&v).unwrap())
            .unwrap()
            .judged()
            .unwrap();
        // The sink does not need the review back; the rest must survive exactly.
        assert_eq!(decoded, Verdict { review: None, ..v });
        assert!(decode(&SCHEMA, b"\x02").is_err());
    }

    #[test]
    fn a_row_that_cannot_count_is_carried_with_what_it_holds() {
        let mut v = verdict();
        v.course_id = None;
        v.reasons = vec!["no_course".into(), "created_at_out_of_range".into()];
        v.review = Some(ReviewImage {
            id: 7,
            course_id: None,
            user_id: None,
            rating: Carried::Text("NaN".into()),
            title: None,
            content: None,
            created_at: Carried::Text("-infinity".into()),
            updated_at: Carried::Null,
            moderation: None,
        });
        let body = encode(&v).unwrap();
        assert_eq!(
            decode(&SCHEMA, &body).unwrap().judged().unwrap(),
            Verdict {
                review: None,
                ..v.clone()
            }
        );
        let value = GenericDatumReader::builder(&SCHEMA)
            .build()
            .unwrap()
            .read_value(&mut &body[..])
            .unwrap();
        let text = format!("{value:?}");
        assert!(text.contains("NaN") && text.contains("-infinity"), "{text}");
    }

    /// The first version of the schema, as registered by earlier builds.
    const FIRST: &str = r#"{"type": "record", "name": "Verdict", "namespace": "reviewflow",
        "fields": [
            {"name": "review_id", "type": "long"},
            {"name": "course_id", "type": "long"},
            {"name": "version", "type": "long"},
            {"name": "position", "type": "long"},
            {"name": "verdict", "type": "string"},
            {"name": "score", "type": "double"},
            {"name": "reasons", "type": {"type": "array", "items": "string"}},
            {"name": "model", "type": "string"},
            {"name": "review", "default": null, "type": ["null", {
                "type": "record", "name": "JudgedReview", "fields": [
                    {"name": "user_id", "type": "long"},
                    {"name": "rating", "type": "string"},
                    {"name": "title", "type": ["null", "string"], "default": null},
                    {"name": "content", "type": ["null", "string"], "default": null},
                    {"name": "created_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
                    {"name": "updated_at", "type": {"type": "long", "logicalType": "timestamp-micros"}}
                ]}]}
        ]}"#;

    #[test]
    fn verdicts_of_the_first_schema_still_read() {
        use apache_avro::schema_compatibility::SchemaCompatibility;
        let first = Schema::parse_str(FIRST).unwrap();
        assert!(
            SchemaCompatibility::can_read(&first, &SCHEMA).is_ok(),
            "{:?}",
            SchemaCompatibility::can_read(&first, &SCHEMA)
        );
        let old = Value::Record(vec![
            ("review_id".into(), Value::Long(7)),
            ("course_id".into(), Value::Long(3)),
            ("version".into(), Value::Long(16)),
            ("position".into(), Value::Long(1)),
            ("verdict".into(), Value::String("valid".into())),
            ("score".into(), Value::Double(0.25)),
            ("reasons".into(), Value::Array(vec![])),
            ("model".into(), Value::String("seed-murmur2-v1".into())),
            ("review".into(), Value::Union(0, Box::new(Value::Null))),
        ]);
        let body = GenericDatumWriter::builder(&first)
            .build()
            .unwrap()
            .write_value_to_vec(old)
            .unwrap();
        let v = decode(&first, &body).unwrap().judged().unwrap();
        assert_eq!((v.review_id, v.course_id, v.digest), (7, Some(3), None));
        assert!(v.oversize.is_empty() && !v.fraud);
    }

    #[test]
    fn deletions_and_truncates_round_trip_and_an_old_reader_refuses_them() {
        let deleted = Record::Deleted(Deletion {
            review_id: 7,
            course_id: Some(3),
            version: Lsn(0x16B3748),
            position: 4,
        });
        let truncated = Record::Truncated {
            version: Lsn(0x16B3800),
            position: -11,
        };
        // The schema of the build before op: this one without its last field.
        let mut before_op: serde_json::Value =
            serde_json::from_str(&SCHEMA.canonical_form()).unwrap();
        let fields = before_op["fields"].as_array_mut().unwrap();
        assert_eq!(fields.pop().unwrap()["name"], "op");
        let before_op = Schema::parse(&before_op).unwrap();
        use apache_avro::schema_compatibility::SchemaCompatibility;
        assert!(SchemaCompatibility::can_read(&before_op, &SCHEMA).is_ok());
        for (r, op) in [(&deleted, "deleted"), (&truncated, "truncated")] {
            let body = encode_record(r).unwrap();
            assert_eq!(&decode(&SCHEMA, &body).unwrap(), r);
            // That build reads the verdict field, which names the op: it refuses the record
            // ("unknown verdict") instead of storing a verdict nobody gave.
            let old = GenericDatumReader::builder(&SCHEMA)
                .reader_schema(&before_op)
                .build()
                .unwrap()
                .read_value(&mut &body[..])
                .unwrap();
            let Value::Record(fields) = old else {
                panic!("{old:?}")
            };
            let verdict = fields.iter().find(|(n, _)| n == "verdict").unwrap();
            assert_eq!(verdict.1, Value::String(op.into()));
        }
        let v = verdict();
        assert_eq!(
            encode_record(&Record::Judged(v.clone())).unwrap(),
            encode(&v).unwrap()
        );
    }

    #[test]
    fn an_unknown_op_is_refused_not_taken_for_a_verdict() {
        let mut body = encode(&verdict()).unwrap();
        // op is the last field: "judged" (length 6, zigzag 12) becomes "judgex".
        let n = body.len();
        assert_eq!(&body[n - 7..], b"\x0cjudged");
        body[n - 1] = b'x';
        let e = decode(&SCHEMA, &body).unwrap_err().to_string();
        assert!(e.contains("judgex"), "{e}");
    }
}
