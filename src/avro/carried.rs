//! The row record of a change envelope read as a carried image (`image::ReviewImage`): every
//! value tolerated. The row fields are unions ["null", T] today and ["null", T, "string"] with
//! the special values' string branch; either reads the same way, at whatever numeric scale the
//! writer's rating has, so a reader never stops on a value.

use apache_avro::types::Value;
use chrono::{DateTime, Utc};

use super::pgtext::decimal_unscaled;
use crate::contract::image::{Carried, Decimal, ReviewImage};
use crate::error::{Error, Result};

/// A row image, every value tolerated: a column that is NULL, carried in its union's string
/// branch (NaN, infinity, a year its type cannot count, an oversize marker), or of a type it
/// was changed to, is carried as such; the rules of `image` decide whether the row counts.
/// Only a row without an id is an error: there is no review to judge.
pub(super) fn row(value: Value, rating_scale: u32) -> Result<Option<ReviewImage>> {
    if value == Value::Null {
        return Ok(None);
    }
    let mut image = ReviewImage {
        id: 0,
        course_id: None,
        user_id: None,
        rating: Carried::Null,
        title: None,
        content: None,
        created_at: Carried::Null,
        updated_at: Carried::Null,
        moderation: None,
    };
    let mut id = None;
    let Value::Record(fields) = value else {
        return Err(Error::Decode(format!("row is not a record: {value:?}")));
    };
    for (name, value) in fields {
        let value = match value {
            Value::Union(_, inner) => *inner,
            v => v,
        };
        match name.as_str() {
            "id" => id = whole(&value),
            "course_id" => image.course_id = whole(&value),
            "user_id" => image.user_id = whole(&value),
            "rating" => image.rating = rating(value, rating_scale),
            "title" => image.title = text(value),
            "content" => image.content = text(value),
            "created_at" => image.created_at = instant(value),
            "updated_at" => image.updated_at = instant(value),
            "moderation" => image.moderation = text(value),
            _ => {}
        }
    }
    image.id = id.ok_or_else(|| Error::Decode("change event has no id".into()))?;
    Ok(Some(image))
}

fn whole(value: &Value) -> Option<i64> {
    match value {
        Value::Long(v) => Some(*v),
        Value::Int(v) => Some(i64::from(*v)),
        _ => None,
    }
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn rating(value: Value, scale: u32) -> Carried<Decimal> {
    let exact = |unscaled, scale| Carried::Value(Decimal { unscaled, scale });
    match value {
        Value::Null => Carried::Null,
        Value::Decimal(d) => {
            let bytes: Option<Vec<u8>> = (&d).try_into().ok();
            match bytes.as_deref().and_then(decimal_unscaled) {
                Some(unscaled) => exact(unscaled, scale),
                None => Carried::Text("(a decimal wider than 128 bits)".into()),
            }
        }
        Value::Int(v) => exact(i128::from(v), 0),
        Value::Long(v) => exact(i128::from(v), 0),
        Value::Float(v) => double_rating(f64::from(v)),
        Value::Double(v) => double_rating(v),
        Value::String(s) => match plain_decimal(&s) {
            Some(d) => Carried::Value(d),
            None => Carried::Text(s),
        },
        other => Carried::Text(format!("{other:?}")),
    }
}

/// A float rating (a column retyped to real or double) as an exact decimal when it is a
/// number of tenths, as every half star is; anything else can only be off the scale.
fn double_rating(v: f64) -> Carried<Decimal> {
    let tenths = v * 10.0;
    if v.is_finite() && tenths.fract() == 0.0 && tenths.abs() < 1e15 {
        Carried::Value(Decimal {
            unscaled: tenths as i128,
            scale: 1,
        })
    } else {
        Carried::Text(v.to_string())
    }
}

/// "4.5", "-12.30", "7": a decimal in PostgreSQL's plain text form.
fn plain_decimal(s: &str) -> Option<Decimal> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let unscaled: i128 = format!("{whole}{fraction}").parse().ok()?;
    Some(Decimal {
        unscaled: if s.starts_with('-') {
            -unscaled
        } else {
            unscaled
        },
        scale: u32::try_from(fraction.len()).ok()?,
    })
}

fn instant(value: Value) -> Carried<DateTime<Utc>> {
    let micros = match value {
        Value::Null => return Carried::Null,
        Value::String(s) => return Carried::Text(s),
        Value::TimestampMicros(v) | Value::LocalTimestampMicros(v) => v,
        Value::TimestampMillis(v) | Value::LocalTimestampMillis(v) => match v.checked_mul(1000) {
            Some(v) => v,
            None => return Carried::Text(format!("{v} ms since 1970")),
        },
        Value::Date(days) => i64::from(days) * 86_400_000_000,
        other => return Carried::Text(format!("{other:?}")),
    };
    match DateTime::from_timestamp_micros(micros) {
        Some(t) => Carried::Value(t),
        None => Carried::Text(format!("{micros} µs since 1970")),
    }
}

#[cfg(test)]
mod tests {
    use apache_avro::writer::datum::GenericDatumWriter;
    use apache_avro::Schema;
    use serde_json::json;

    use super::*;
    use crate::avro::decode_change;
    use crate::contract::review::Rating;

    /// The row record of the value mapping with special values: every field a union
    /// ["null", T, "string"], the string branch for what T cannot hold.
    fn three_branch_envelope(rating: serde_json::Value) -> Schema {
        let ts = json!({"type": "long", "logicalType": "timestamp-micros"});
        let field = |name: &str, t: serde_json::Value| {
            let branches = if t == json!("string") {
                json!(["null", "string"])
            } else {
                json!(["null", t, "string"])
            };
            json!({"name": name, "type": branches, "default": null})
        };
        let fields = vec![
            field("id", json!("long")),
            field("course_id", json!("long")),
            field("user_id", json!("long")),
            field("rating", rating),
            field("title", json!("string")),
            field("content", json!("string")),
            field("created_at", ts.clone()),
            field("updated_at", ts),
        ];
        Schema::parse(&crate::avro::row::envelope_json("t", fields)).unwrap()
    }

    fn encode_with(schema: &Schema, after: Vec<(&str, Value)>) -> Vec<u8> {
        // Every field, in schema order; those not given are null.
        let fields = crate::avro::digest::COLUMNS;
        let row = Value::Record(
            fields
                .iter()
                .map(|name| {
                    let given = after
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone());
                    (
                        name.to_string(),
                        given.unwrap_or(Value::Union(0, Box::new(Value::Null))),
                    )
                })
                .collect(),
        );
        let record = Value::Record(vec![
            ("op".into(), Value::String("c".into())),
            ("before".into(), Value::Union(0, Box::new(Value::Null))),
            ("after".into(), Value::Union(1, Box::new(row))),
            (
                "source".into(),
                Value::Record(vec![
                    ("schema".into(), Value::String("public".into())),
                    ("table".into(), Value::String("reviews".into())),
                    ("lsn".into(), Value::Long(16)),
                    ("position".into(), Value::Long(0)),
                    ("txid".into(), Value::Union(0, Box::new(Value::Null))),
                    ("commit_time".into(), Value::TimestampMicros(0)),
                    ("snapshot".into(), Value::Boolean(false)),
                ]),
            ),
            ("digest".into(), Value::Union(0, Box::new(Value::Null))),
            ("oversize".into(), Value::Array(vec![])),
        ]);
        GenericDatumWriter::builder(schema)
            .build()
            .unwrap()
            .write_value_to_vec(record)
            .unwrap()
    }

    #[test]
    fn special_values_and_nulls_decode_as_carried_and_do_not_count() {
        use crate::contract::image::Rule;
        let decimal = |scale| json!({"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": scale});
        let schema = three_branch_envelope(decimal(1));
        let null = || Value::Union(0, Box::new(Value::Null));
        let special = |s: &str| Value::Union(2, Box::new(Value::String(s.into())));
        let body = encode_with(
            &schema,
            vec![
                ("id", Value::Union(1, Box::new(Value::Long(5)))),
                ("course_id", null()),
                ("user_id", null()),
                ("rating", special("NaN")),
                (
                    "title",
                    Value::Union(
                        1,
                        Box::new(Value::String(
                            "reviewflow.oversize length=3 sha256=ab".into(),
                        )),
                    ),
                ),
                ("content", null()),
                ("created_at", special("-infinity")),
                ("updated_at", special("infinity")),
            ],
        );
        let after = decode_change(&schema, &body).unwrap().after.unwrap();
        assert_eq!(after.id, 5);
        assert_eq!(after.course_id, None);
        assert_eq!(after.rating, Carried::Text("NaN".into()));
        assert_eq!(after.created_at, Carried::Text("-infinity".into()));
        assert_eq!(
            after.title.as_deref(),
            Some("reviewflow.oversize length=3 sha256=ab")
        );
        assert_eq!(
            after.countable().unwrap_err(),
            [
                Rule::NoCourse,
                Rule::RatingOffScale,
                Rule::CreatedAtOutOfRange
            ]
        );

        // numeric(4,2): the scale is the writer's; 7.50 is off the scale, 4.50 on it.
        let schema = three_branch_envelope(decimal(2));
        let with_rating = |unscaled: u16, created: i64| {
            let body = encode_with(
                &schema,
                vec![
                    ("id", Value::Union(1, Box::new(Value::Long(6)))),
                    ("course_id", Value::Union(1, Box::new(Value::Long(2)))),
                    (
                        "rating",
                        Value::Union(
                            1,
                            Box::new(Value::Decimal(unscaled.to_be_bytes().to_vec().into())),
                        ),
                    ),
                    (
                        "created_at",
                        Value::Union(1, Box::new(Value::TimestampMicros(created))),
                    ),
                ],
            );
            decode_change(&schema, &body).unwrap().after.unwrap()
        };
        let row = with_rating(450, 0).countable().unwrap();
        assert_eq!(row.rating, Rating::from_stars(4.5).unwrap());
        assert_eq!((row.user_id, row.updated_at), (None, None));
        assert_eq!(
            with_rating(750, 0).countable().unwrap_err(),
            [Rule::RatingOffScale]
        );
        // 1 BC, carried in T as a negative count.
        assert_eq!(
            with_rating(450, -62_198_755_200_000_000)
                .countable()
                .unwrap_err(),
            [Rule::CreatedAtOutOfRange]
        );
        // Past what chrono counts, as a long can still carry it.
        assert!(matches!(
            with_rating(450, i64::MAX).created_at,
            Carried::Text(_)
        ));
    }
}
