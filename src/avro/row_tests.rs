use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::RecordSchema;
use chrono::DateTime;

use super::*;
use crate::contract::lsn::Lsn;

/// One source position, for the tests of the envelope that carries it.
pub(crate) fn source() -> Source {
    Source {
        schema: "public".into(),
        table: "reviews".into(),
        lsn: Lsn(0x16_B374_D848),
        position: 3,
        txid: Some(771),
        commit_time: DateTime::from_timestamp_micros(1_795_581_617_993_809).unwrap(),
        snapshot: false,
    }
}

fn column(name: &str, oid: u32, typmod: i32, pg_type: &str) -> ColumnType {
    ColumnType {
        name: name.into(),
        type_oid: oid,
        type_modifier: typmod,
        pg_type: pg_type.into(),
    }
}

/// The fields of the envelope's before/after image: (name, its attributes as JSON).
fn row_fields(schema: &Schema) -> Vec<(String, serde_json::Value)> {
    let Schema::Record(RecordSchema { fields, .. }) = schema else {
        panic!("a record");
    };
    let Schema::Union(u) = &fields[1].schema else {
        panic!("before is a union");
    };
    let Schema::Record(RecordSchema { fields, .. }) = &u.variants()[1] else {
        panic!("of a record");
    };
    fields
        .iter()
        .map(|f| (f.name.clone(), json!(f.custom_attributes)))
        .collect()
}

fn decode(schema: &RowSchema, body: &[u8]) -> Vec<(String, Value)> {
    let value = GenericDatumReader::builder(schema.envelope())
        .build()
        .unwrap()
        .read_value(&mut &body[..])
        .unwrap();
    let Value::Record(fields) = value else {
        panic!("a record");
    };
    fields
}

fn image(fields: &[(String, Value)], which: &str) -> Vec<(String, Value)> {
    match &fields.iter().find(|(n, _)| n == which).unwrap().1 {
        Value::Union(1, row) => match &**row {
            Value::Record(r) => r.clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("{which} is {other:?}"),
    }
}

#[test]
fn column_names_avro_refuses_are_renamed_and_keep_the_original_in_pg_column() {
    let columns = [
        column("id", 20, -1, "bigint"),
        column("my col", 25, -1, "text"),
        column("größe", 23, -1, "integer"),
        column("1st", 25, -1, "text"),
        column("a b", 25, -1, "text"),
        column("a_b", 25, -1, "text"),
        column("", 25, -1, "text"),
    ];
    let schema = RowSchema::new("public", "reviews", columns).unwrap();
    let fields = row_fields(schema.envelope());
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["id", "my_col", "gr__e", "_1st", "a_b_2", "a_b", "_"]
    );
    assert_eq!(fields[0].1, json!({"pg_type": "bigint"}));
    assert_eq!(
        fields[2].1,
        json!({"pg_type": "integer", "pg_column": "größe"})
    );
    assert_eq!(fields[4].1["pg_column"], json!("a b"));
    assert_eq!(fields[5].1.get("pg_column"), None);
    // Same columns, same names: a restart registers the same schema.
    let again = RowSchema::new(
        "public",
        "reviews",
        [
            column("id", 20, -1, "bigint"),
            column("my col", 25, -1, "text"),
            column("größe", 23, -1, "integer"),
            column("1st", 25, -1, "text"),
            column("a b", 25, -1, "text"),
            column("a_b", 25, -1, "text"),
            column("", 25, -1, "text"),
        ],
    )
    .unwrap();
    assert_eq!(
        crate::registry::normalised(schema.envelope()).unwrap(),
        crate::registry::normalised(again.envelope()).unwrap()
    );
    assert_eq!(schema.column_index("größe"), Some(2));
    let t = [b"1".as_slice(), b"x", b"7", b"y", b"z", b"w", b"v"].map(Cell::Text);
    let body = schema
        .encode(Op::Create, None, Some(&t), &source())
        .unwrap();
    let after = image(&decode(&schema, &body), "after");
    assert_eq!(
        after[2],
        ("gr__e".into(), Value::Union(1, Box::new(Value::Int(7))))
    );
}

#[test]
fn the_registered_text_keeps_pg_type_and_pg_column() {
    let schema = RowSchema::new(
        "public",
        "reviews",
        [
            column("rating", 1700, (2 << 16 | 1) + 4, "numeric(2,1)"),
            column("my mood", 90_001, -1, "public.mood"),
        ],
    )
    .unwrap();
    // What both registries store and serve: apache-avro's own serialisation, parsed again.
    let text = crate::registry::normalised(schema.envelope()).unwrap();
    let parsed = Schema::parse_str(&text).unwrap();
    let fields = row_fields(&parsed);
    assert_eq!(fields[0].1, json!({"pg_type": "numeric(2,1)"}));
    assert_eq!(
        fields[1].1,
        json!({"pg_type": "public.mood", "pg_column": "my mood"})
    );
    assert!(text.contains(r#""pg_type":"public.mood""#), "{text}");
}

#[test]
fn special_values_round_trip_through_avro_in_their_branches() {
    let columns = [
        column("id", 20, -1, "bigint"),
        column("n", 1700, (5 << 16 | 2) + 4, "numeric(5,2)"),
        column("u", 1700, -1, "numeric"),
        column("f4", 700, -1, "real"),
        column("f8", 701, -1, "double precision"),
        column("d", 1082, -1, "date"),
        column("ts", 1114, -1, "timestamp without time zone"),
        column("tz", 1184, -1, "timestamp with time zone"),
        column("b", 17, -1, "bytea"),
        column("i", 1186, -1, "interval"),
        column("a", 1007, -1, "integer[]"),
    ];
    let schema = RowSchema::new("public", "reviews", columns).unwrap();
    let s = |v: &str| Value::String(v.into());
    type Case<'a> = (Vec<&'a str>, Vec<(u32, Value)>);
    let cases: Vec<Case> = vec![
        (
            vec![
                "1",
                "NaN",
                "-Infinity",
                "Infinity",
                "-Infinity",
                "infinity",
                "-infinity",
                "infinity",
                "\\xdeadbeef",
                "P1Y2M3DT4H5M6S",
                "{{1,NULL},{3,4}}",
            ],
            vec![
                (1, Value::Long(1)),
                (2, s("NaN")),
                (1, s("-Infinity")),
                (1, Value::Float(f32::INFINITY)),
                (1, Value::Double(f64::NEG_INFINITY)),
                (2, s("infinity")),
                (2, s("-infinity")),
                (2, s("infinity")),
                (1, Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef])),
                (1, s("P1Y2M3DT4H5M6S")),
                (1, s("{{1,NULL},{3,4}}")),
            ],
        ),
        (
            vec![
                "2",
                "-999.99",
                "1e-1000",
                "-0",
                "1.7976931348623157e+308",
                "0001-01-01 BC",
                "200000-01-01 00:00:00",
                "0044-03-15 12:00:00+00 BC",
                "\\x",
                "-P1D",
                "{}",
            ],
            vec![
                (1, Value::Long(2)),
                (1, Value::Decimal(vec![0xFE, 0x79, 0x61].into())),
                (1, s("1e-1000")),
                (1, Value::Float(-0.0)),
                (1, Value::Double(f64::MAX)),
                (1, Value::Date(-719_528)),
                (
                    1,
                    Value::LocalTimestampMicros(
                        chrono::NaiveDate::from_ymd_opt(200_000, 1, 1)
                            .unwrap()
                            .and_hms_opt(0, 0, 0)
                            .unwrap()
                            .and_utc()
                            .timestamp_micros(),
                    ),
                ),
                (
                    1,
                    Value::TimestampMicros(
                        chrono::NaiveDate::from_ymd_opt(-43, 3, 15)
                            .unwrap()
                            .and_hms_opt(12, 0, 0)
                            .unwrap()
                            .and_utc()
                            .timestamp_micros(),
                    ),
                ),
                (1, Value::Bytes(vec![])),
                (1, s("-P1D")),
                (1, s("{}")),
            ],
        ),
    ];
    for (texts, expected) in cases {
        let cells: Vec<Cell> = texts.iter().map(|t| Cell::Text(t.as_bytes())).collect();
        let body = schema
            .encode(Op::Create, None, Some(&cells), &source())
            .unwrap();
        let after = image(&decode(&schema, &body), "after");
        for ((name, value), (branch, want)) in after.into_iter().zip(expected) {
            assert_eq!(value, Value::Union(branch, Box::new(want)), "{name}");
        }
    }
    let nulls = vec![Cell::Null; 11];
    let body = schema
        .encode(Op::Delete, Some(&nulls), None, &source())
        .unwrap();
    let before = image(&decode(&schema, &body), "before");
    assert!(before
        .iter()
        .all(|(_, v)| *v == Value::Union(0, Box::new(Value::Null))));
}

#[test]
fn no_text_makes_a_change_fail_to_encode() {
    let columns: Vec<ColumnType> = [16, 20, 21, 23, 26, 700, 701, 1700, 17, 1082, 1114, 1184, 25]
        .iter()
        .enumerate()
        .map(|(i, oid)| column(&format!("c{i}"), *oid, (3 << 16 | 1) + 4, "t"))
        .collect();
    let schema = RowSchema::new("public", "t", columns).unwrap();
    let texts: [&[u8]; 12] = [
        b"",
        b"\xff\xfe",
        b"NaN",
        b"-",
        b"99999999999999999999999999",
        b"\\xz1",
        b"1e999",
        b"10000-13-45",
        b"infinity BC",
        b" BC",
        b"2026-01-01 00:00:00+99:99:99:99",
        b"12.345",
    ];
    for text in texts {
        let cells = vec![Cell::Text(text); 13];
        let body = schema
            .encode(Op::Update, Some(&cells), Some(&cells), &source())
            .unwrap();
        assert!(!decode(&schema, &body).is_empty());
    }
}

#[test]
fn a_change_too_large_carries_its_largest_values_as_markers() {
    let columns = [
        column("id", 20, -1, "bigint"),
        column("course_id", 20, -1, "bigint"),
        column("content", 25, -1, "text"),
        column("title", 25, -1, "text"),
        column("blob", 17, -1, "bytea"),
    ];
    let schema = RowSchema::new("public", "reviews", columns).unwrap();
    let content = "x".repeat(3_000_000);
    let title = "t".repeat(2_000);
    let blob = format!("\\x{}", "ab".repeat(500));
    let old = [
        Cell::Text(b"7"),
        Cell::Text(b"42"),
        Cell::Text(content.as_bytes()),
        Cell::Text(title.as_bytes()),
        Cell::Text(blob.as_bytes()),
    ];
    let mut new = old;
    new[3] = Cell::Text(b"short");
    let whole = schema
        .encode_within(Op::Update, Some(&old), Some(&new), &source(), usize::MAX)
        .unwrap();
    assert!(whole.oversize.is_empty() && whole.body.len() > 6_000_000);

    let limit = 10_000;
    let fitted = schema
        .encode_within(Op::Update, Some(&old), Some(&new), &source(), limit)
        .unwrap();
    assert!(fitted.body.len() <= limit, "{}", fitted.body.len());
    assert_eq!(fitted.oversize, ["before.content", "after.content"]);
    let fields = decode(&schema, &fitted.body);
    let marker = Value::Union(
        1,
        Box::new(Value::String(oversize_marker(content.as_bytes()))),
    );
    assert_eq!(image(&fields, "before")[2].1, marker);
    assert_eq!(image(&fields, "after")[2].1, marker);
    assert_eq!(
        image(&fields, "before")[3].1,
        Value::Union(1, Box::new(Value::String(title.clone()))),
        "what fits is carried as it is"
    );
    let listed = &fields.iter().find(|(n, _)| n == "oversize").unwrap().1;
    assert_eq!(
        *listed,
        Value::Array(vec![
            Value::String("before.content".into()),
            Value::String("after.content".into())
        ])
    );
    let digest = &fields.iter().find(|(n, _)| n == "digest").unwrap().1;
    assert_eq!(
        *digest,
        Value::Union(1, Box::new(Value::String(schema.digest(&new)))),
        "the digest is of the value, not the marker"
    );

    // Tighter: the title and the bytes go too, the bytes in their string branch.
    let tight = schema
        .encode_within(Op::Update, Some(&old), Some(&new), &source(), 1_000)
        .unwrap();
    assert!(tight.body.len() <= 1_000, "{}", tight.body.len());
    assert_eq!(
        tight.oversize,
        [
            "before.content",
            "before.title",
            "before.blob",
            "after.content",
            "after.blob"
        ]
    );
    let after = image(&decode(&schema, &tight.body), "after");
    assert_eq!(
        after[4].1,
        Value::Union(2, Box::new(Value::String(oversize_marker(blob.as_bytes()))))
    );
    assert!(oversize_marker(b"abc").starts_with("reviewflow.oversize length=3 sha256=ba7816bf"));
}
