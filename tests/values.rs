//! Every value PostgreSQL can store reaches reviews.changes, with the Avro value docs/values.md
//! documents, against the real PostgreSQL and Kafka: every CHECK and NOT NULL dropped from
//! reviews, user columns of many built-in types added, extreme values written by SQL, and cdc
//! never stopping or starting over because of one.

mod common;

use std::collections::BTreeMap;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{RecordSchema, Schema};
use apache_avro::types::Value;
use common::pipeline::Pipeline;
use rdkafka::Message;
use reviewflow::avro::{oversize_marker, wire};
use reviewflow::registry::Registry;

const COLUMNS: &str = "
    CREATE TYPE mood AS ENUM ('sad', 'happy');
    CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
    ALTER TABLE reviews
      ADD COLUMN c_bool boolean, ADD COLUMN c_small smallint, ADD COLUMN \"größe\" integer,
      ADD COLUMN c_oid oid, ADD COLUMN c_real real, ADD COLUMN c_double double precision,
      ADD COLUMN c_numeric numeric, ADD COLUMN c_num52 numeric(5,2), ADD COLUMN c_date date,
      ADD COLUMN c_ts timestamp, ADD COLUMN c_tstz timestamptz, ADD COLUMN c_time time,
      ADD COLUMN c_interval interval, ADD COLUMN c_ints integer[], ADD COLUMN c_texts text[],
      ADD COLUMN c_json json, ADD COLUMN c_jsonb jsonb, ADD COLUMN c_bytea bytea,
      ADD COLUMN c_uuid uuid, ADD COLUMN c_mood mood, ADD COLUMN c_domain positive,
      ADD COLUMN c_money money, ADD COLUMN c_inet inet, ADD COLUMN c_varchar varchar(5),
      ADD COLUMN c_char char(3), ADD COLUMN \"my col\" text;";

/// Every CHECK (whatever the migrations add) and every NOT NULL but the key's.
const UNCHECKED: &str = "
    DO $$ DECLARE c record; BEGIN
      FOR c IN SELECT conname FROM pg_constraint WHERE conrelid = 'reviews'::regclass AND contype = 'c' LOOP
        EXECUTE format('ALTER TABLE reviews DROP CONSTRAINT %I', c.conname);
      END LOOP;
    END $$;
    ALTER TABLE reviews ALTER course_id DROP NOT NULL, ALTER user_id DROP NOT NULL,
      ALTER rating DROP NOT NULL, ALTER created_at DROP NOT NULL, ALTER updated_at DROP NOT NULL;";

/// The Avro field of each column and the pg_type the schema names.
const FIELDS: [(&str, &str); 35] = [
    ("id", "bigint"),
    ("course_id", "bigint"),
    ("user_id", "bigint"),
    ("rating", "numeric(2,1)"),
    ("title", "text"),
    ("content", "text"),
    ("created_at", "timestamp with time zone"),
    ("updated_at", "timestamp with time zone"),
    ("moderation", "text"),
    ("c_bool", "boolean"),
    ("c_small", "smallint"),
    ("gr__e", "integer"),
    ("c_oid", "oid"),
    ("c_real", "real"),
    ("c_double", "double precision"),
    ("c_numeric", "numeric"),
    ("c_num52", "numeric(5,2)"),
    ("c_date", "date"),
    ("c_ts", "timestamp without time zone"),
    ("c_tstz", "timestamp with time zone"),
    ("c_time", "time without time zone"),
    ("c_interval", "interval"),
    ("c_ints", "integer[]"),
    ("c_texts", "text[]"),
    ("c_json", "json"),
    ("c_jsonb", "jsonb"),
    ("c_bytea", "bytea"),
    ("c_uuid", "uuid"),
    ("c_mood", "public.mood"),
    ("c_domain", "public.positive"),
    ("c_money", "money"),
    ("c_inet", "inet"),
    ("c_varchar", "character varying(5)"),
    ("c_char", "character(3)"),
    ("my_col", "text"),
];

/// One row per case: the column set to the literal, every other one NULL (but id).
struct Case {
    column: &'static str,
    literal: String,
    field: &'static str,
    /// The union branch and its value.
    expected: (u32, Value),
}

fn case(column: &'static str, literal: &str, expected: (u32, Value)) -> Case {
    let field = match column {
        "\"größe\"" => "gr__e",
        "\"my col\"" => "my_col",
        c => c,
    };
    Case {
        column,
        literal: literal.to_string(),
        field,
        expected,
    }
}

fn text(s: &str) -> Value {
    Value::String(s.into())
}

fn micros(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32, us: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_micro_opt(h, min, s, us)
        .unwrap()
        .and_utc()
        .timestamp_micros()
}

fn days(y: i32, m: u32, d: u32) -> i32 {
    chrono::NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .signed_duration_since(chrono::NaiveDate::default())
        .num_days() as i32
}

const HUGE: usize = 3_000_000;
/// Just over the producer's default message.max.bytes, and well under it.
const OVER: usize = 1_000_001;
const UNDER: usize = 950_000;

fn cases() -> Vec<Case> {
    let repeat = |c: char, n: usize| c.to_string().repeat(n);
    let marker = |c: char, n: usize| (1, text(&oversize_marker(repeat(c, n).as_bytes())));
    vec![
        case(
            "course_id",
            "9223372036854775807",
            (1, Value::Long(i64::MAX)),
        ),
        case(
            "user_id",
            "-9223372036854775808",
            (1, Value::Long(i64::MIN)),
        ),
        case("rating", "'NaN'", (2, text("NaN"))),
        case("rating", "-9.9", (1, Value::Decimal(vec![0x9D].into()))),
        case("title", "'größe ✓ \"q\"'", (1, text("größe ✓ \"q\""))),
        case("title", "''", (1, text(""))),
        case(
            "content",
            &format!("repeat('x', {HUGE})"),
            marker('x', HUGE),
        ),
        case(
            "content",
            &format!("repeat('y', {OVER})"),
            marker('y', OVER),
        ),
        case(
            "content",
            &format!("repeat('z', {UNDER})"),
            (1, text(&repeat('z', UNDER))),
        ),
        case(
            "created_at",
            "'0001-01-01 00:00:00+00 BC'",
            (1, Value::TimestampMicros(micros(0, 1, 1, 0, 0, 0, 0))),
        ),
        case(
            "created_at",
            "'4713-11-24 00:00:00+00 BC'",
            (1, Value::TimestampMicros(micros(-4712, 11, 24, 0, 0, 0, 0))),
        ),
        case(
            "created_at",
            "'200000-01-01 00:00:00+00'",
            (1, Value::TimestampMicros(micros(200_000, 1, 1, 0, 0, 0, 0))),
        ),
        case(
            "created_at",
            "'294276-12-31 23:59:59.999999+00'",
            (2, text("294276-12-31 23:59:59.999999+00")),
        ),
        case("created_at", "'infinity'", (2, text("infinity"))),
        case("updated_at", "'-infinity'", (2, text("-infinity"))),
        case("c_bool", "false", (1, Value::Boolean(false))),
        case("c_small", "-32768", (1, Value::Int(-32768))),
        case("\"größe\"", "2147483647", (1, Value::Int(i32::MAX))),
        case("c_oid", "4294967295", (1, Value::Long(4_294_967_295))),
        case("c_real", "'Infinity'", (1, Value::Float(f32::INFINITY))),
        case("c_real", "'NaN'", (1, Value::Float(f32::NAN))),
        case("c_real", "3.4028235e+38", (1, Value::Float(f32::MAX))),
        case(
            "c_double",
            "'-Infinity'",
            (1, Value::Double(f64::NEG_INFINITY)),
        ),
        case("c_double", "'NaN'", (1, Value::Double(f64::NAN))),
        case("c_double", "5e-324", (1, Value::Double(5e-324))),
        case("c_numeric", "'NaN'", (1, text("NaN"))),
        case("c_numeric", "'Infinity'", (1, text("Infinity"))),
        case("c_numeric", "'-Infinity'", (1, text("-Infinity"))),
        case(
            "c_numeric",
            "123456789012345678901234567890.123456789",
            (1, text("123456789012345678901234567890.123456789")),
        ),
        case("c_num52", "'NaN'", (2, text("NaN"))),
        case(
            "c_num52",
            "-999.99",
            (1, Value::Decimal(vec![0xFE, 0x79, 0x61].into())),
        ),
        case(
            "c_date",
            "'0044-03-15 BC'",
            (1, Value::Date(days(-43, 3, 15))),
        ),
        case(
            "c_date",
            "'200000-02-29'",
            (1, Value::Date(days(200_000, 2, 29))),
        ),
        case("c_date", "'5874897-12-31'", (2, text("5874897-12-31"))),
        case("c_date", "'infinity'", (2, text("infinity"))),
        case("c_date", "'-infinity'", (2, text("-infinity"))),
        case(
            "c_ts",
            "'0001-12-31 23:59:59.5 BC'",
            (
                1,
                Value::LocalTimestampMicros(micros(0, 12, 31, 23, 59, 59, 500_000)),
            ),
        ),
        case(
            "c_ts",
            "'294276-12-31 23:59:59.999999'",
            (2, text("294276-12-31 23:59:59.999999")),
        ),
        case("c_ts", "'-infinity'", (2, text("-infinity"))),
        case("c_tstz", "'infinity'", (2, text("infinity"))),
        case("c_time", "'24:00:00'", (1, text("24:00:00"))),
        case(
            "c_interval",
            "'1 year 2 mons 3 days 04:05:06.789'",
            (1, text("P1Y2M3DT4H5M6.789S")),
        ),
        case(
            "c_interval",
            "'-178000000 years'",
            (1, text("P-178000000Y")),
        ),
        case("c_ints", "'{1,NULL,3}'", (1, text("{1,NULL,3}"))),
        case(
            "c_ints",
            "'{{1,2},{3,NULL}}'",
            (1, text("{{1,2},{3,NULL}}")),
        ),
        case("c_ints", "'{}'", (1, text("{}"))),
        case(
            "c_texts",
            "ARRAY['a b', NULL, '\"q\"', 'NULL']",
            (1, text("{\"a b\",NULL,\"\\\"q\\\"\",\"NULL\"}")),
        ),
        case(
            "c_json",
            "'{\"b\": 1,  \"a\": [true, null]}'",
            (1, text("{\"b\": 1,  \"a\": [true, null]}")),
        ),
        case(
            "c_jsonb",
            "'{\"b\": 1,  \"a\": [true, null]}'",
            (1, text("{\"a\": [true, null], \"b\": 1}")),
        ),
        case(
            "c_bytea",
            "'\\x00ff10'",
            (1, Value::Bytes(vec![0, 255, 16])),
        ),
        case("c_bytea", "''", (1, Value::Bytes(vec![]))),
        case(
            "c_uuid",
            "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
            (1, text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
        ),
        case("c_mood", "'happy'", (1, text("happy"))),
        case("c_domain", "5", (1, text("5"))),
        case(
            "c_money",
            "'-92233720368547758.08'",
            (1, text("-$92,233,720,368,547,758.08")),
        ),
        case("c_inet", "'::ffff:1.2.3.4'", (1, text("::ffff:1.2.3.4"))),
        case("c_varchar", "'abcde'", (1, text("abcde"))),
        case("c_char", "'a'", (1, text("a  "))),
        case("\"my col\"", "'spaced'", (1, text("spaced"))),
    ]
}

/// A value as it was written, with NaN equal to itself.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Union(i, x), Value::Union(j, y)) => i == j && same(x, y),
        (Value::Float(x), Value::Float(y)) => x == y || (x.is_nan() && y.is_nan()),
        (Value::Double(x), Value::Double(y)) => x == y || (x.is_nan() && y.is_nan()),
        (x, y) => x == y,
    }
}

fn inserts(cases: &[Case], first_id: usize) -> String {
    let mut sql = String::new();
    for (i, c) in cases.iter().enumerate() {
        // created_at and updated_at have defaults: NULL must be written.
        let mut columns = vec!["id".to_string(), c.column.to_string()];
        let mut values = vec![(first_id + i).to_string(), c.literal.clone()];
        for stamp in ["created_at", "updated_at"] {
            if c.column != stamp {
                columns.push(stamp.into());
                values.push("NULL".into());
            }
        }
        sql.push_str(&format!(
            "INSERT INTO reviews ({}) VALUES ({});\n",
            columns.join(", "),
            values.join(", ")
        ));
    }
    sql.push_str(&format!(
        "INSERT INTO reviews (id, created_at, updated_at) VALUES ({}, NULL, NULL);\n",
        first_id + cases.len()
    ));
    sql
}

/// A record of the changes topic, decoded with the schema it was registered with.
struct Record {
    partition: i32,
    key: Option<Vec<u8>>,
    op: String,
    before: Option<Vec<(String, Value)>>,
    after: Option<Vec<(String, Value)>>,
    oversize: Vec<String>,
}

fn field<'a>(fields: &'a [(String, Value)], name: &str) -> &'a Value {
    &fields
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no field {name}"))
        .1
}

fn image(value: &Value) -> Option<Vec<(String, Value)>> {
    match value {
        Value::Union(0, _) => None,
        Value::Union(1, row) => match &**row {
            Value::Record(fields) => Some(fields.clone()),
            other => panic!("an image is a record: {other:?}"),
        },
        other => panic!("an image is a union: {other:?}"),
    }
}

async fn records(p: &Pipeline) -> (Vec<Record>, BTreeMap<u32, std::sync::Arc<Schema>>) {
    let registry = Registry::connect(&p.settings).await.unwrap();
    let mut schemas = BTreeMap::new();
    let mut out = Vec::new();
    for m in common::consume_rows(&p.settings, &p.topic).await {
        let (id, body) = wire::unframe(m.payload().unwrap()).unwrap();
        let schema = registry.schema(id).await.unwrap();
        schemas.insert(id, schema.clone());
        let value = GenericDatumReader::builder(&schema)
            .build()
            .unwrap()
            .read_value(&mut &body[..])
            .unwrap();
        let Value::Record(fields) = value else {
            panic!("an envelope is a record")
        };
        let oversize = match field(&fields, "oversize") {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("{other:?}"),
        };
        out.push(Record {
            partition: m.partition(),
            key: m.key().map(<[u8]>::to_vec),
            op: match field(&fields, "op") {
                Value::String(op) => op.clone(),
                other => panic!("{other:?}"),
            },
            before: image(field(&fields, "before")),
            after: image(field(&fields, "after")),
            oversize,
        });
    }
    (out, schemas)
}

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
        .map(|f| (f.name.clone(), serde_json::json!(f.custom_attributes)))
        .collect()
}

fn id_of(fields: &[(String, Value)]) -> i64 {
    match field(fields, "id") {
        Value::Union(1, id) => match **id {
            Value::Long(id) => id,
            ref other => panic!("{other:?}"),
        },
        other => panic!("id is {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_of_every_builtin_type_arrives_as_documented_and_cdc_never_stops() {
    let mut p = Pipeline::new("values_types").await;
    let log = std::env::temp_dir().join(format!("rf-values-{}.log", common::unique()));
    p.log = Some(log.clone());
    let db = p.db().await;
    db.batch_execute(UNCHECKED).await.unwrap();
    db.batch_execute(COLUMNS).await.unwrap();
    let cases = cases();
    // The same rows before the slot (snapshot) and after it (stream).
    db.batch_execute(&inserts(&cases, 1)).await.unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let metrics = format!("127.0.0.1:{port}");
    let cdc = p.spawn("cdc", None, &[("REVIEWFLOW_METRICS_LISTEN", &metrics)]);
    p.wait_for_snapshot().await;
    let streamed = 1001;
    db.batch_execute(&inserts(&cases, streamed)).await.unwrap();
    // Both images of an edit of the 3 MB row are too large; the NULL row leaves.
    db.batch_execute(&format!(
        "UPDATE reviews SET title = 'edited' WHERE id = {}; DELETE FROM reviews WHERE id = {};",
        streamed + 6,
        streamed + cases.len()
    ))
    .await
    .unwrap();
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;
    let scraped = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    p.stop(cdc).await;
    let output = std::fs::read_to_string(&log).unwrap();
    for trouble in ["session failed", "ERROR", "panicked"] {
        assert!(
            !output.contains(trouble),
            "cdc ran one session without trouble: {output}"
        );
    }

    let (records, schemas) = records(&p).await;
    let n = cases.len() + 1;
    assert_eq!(records.len(), 2 * n + 2, "every change is on the topic");
    assert_eq!(
        schemas.len(),
        1,
        "the snapshot and the stream register the same schema"
    );
    let fields = row_fields(schemas.values().next().unwrap());
    let described: Vec<(String, String)> = fields
        .iter()
        .map(|(name, attrs)| (name.clone(), attrs["pg_type"].as_str().unwrap().to_string()))
        .collect();
    let expected: Vec<(String, String)> = FIELDS
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    assert_eq!(described, expected, "each field names its PostgreSQL type");
    let originals: BTreeMap<&str, &str> = fields
        .iter()
        .filter_map(|(name, attrs)| Some((name.as_str(), attrs.get("pg_column")?.as_str()?)))
        .collect();
    assert_eq!(
        originals,
        BTreeMap::from([("gr__e", "größe"), ("my_col", "my col")])
    );

    let by_id: BTreeMap<(String, i64), &Record> = records
        .iter()
        .map(|r| {
            let row = r.after.as_ref().or(r.before.as_ref()).unwrap();
            ((r.op.clone(), id_of(row)), r)
        })
        .collect();
    let null = Value::Union(0, Box::new(Value::Null));
    for (op, first) in [("r", 1), ("c", streamed)] {
        for (i, c) in cases.iter().enumerate() {
            let id = (first + i) as i64;
            let record = by_id
                .get(&(op.to_string(), id))
                .unwrap_or_else(|| panic!("{op} of row {id} ({} = {})", c.column, c.literal));
            let after = record.after.as_ref().unwrap();
            let got = field(after, c.field);
            let want = Value::Union(c.expected.0, Box::new(c.expected.1.clone()));
            assert!(
                same(got, &want),
                "{op} row {id}: {} = {} arrives as {want:?}, got {got:?}",
                c.column,
                c.literal
            );
            for (name, value) in after {
                if name != "id" && name != c.field {
                    assert_eq!(value, &null, "{op} row {id}: {name} is NULL");
                }
            }
            let oversized =
                c.literal.starts_with("repeat('x'") || c.literal.starts_with("repeat('y'");
            assert_eq!(
                record.oversize,
                if oversized {
                    vec!["after.content".to_string()]
                } else {
                    vec![]
                },
                "{op} row {id}"
            );
            if c.field == "course_id" {
                assert!(record.key.is_some(), "a course id is the key");
            } else {
                assert_eq!(
                    (record.key.as_ref(), record.partition),
                    (None, 0),
                    "{op} row {id}: no course id, no key, partition 0"
                );
            }
        }
        let all_null = by_id
            .get(&(op.to_string(), (first + cases.len()) as i64))
            .expect("the row of NULLs");
        let after = all_null.after.as_ref().unwrap();
        assert!(after
            .iter()
            .all(|(name, value)| name == "id" || value == &null));
        assert_eq!((all_null.key.as_ref(), all_null.partition), (None, 0));
    }
    let edit = by_id
        .get(&("u".to_string(), (streamed + 6) as i64))
        .expect("the edit of the 3 MB row");
    assert_eq!(edit.oversize, ["before.content", "after.content"]);
    let marker = Value::Union(
        1,
        Box::new(text(&oversize_marker("x".repeat(HUGE).as_bytes()))),
    );
    assert_eq!(field(edit.before.as_ref().unwrap(), "content"), &marker);
    assert_eq!(field(edit.after.as_ref().unwrap(), "content"), &marker);
    assert_eq!(
        field(edit.after.as_ref().unwrap(), "title"),
        &Value::Union(1, Box::new(text("edited")))
    );
    let delete = by_id
        .get(&("d".to_string(), (streamed + cases.len()) as i64))
        .expect("the delete of the NULL row");
    assert!(delete
        .before
        .as_ref()
        .unwrap()
        .iter()
        .all(|(n, v)| n == "id" || v == &null));
    assert!(
        scraped.contains("reviewflow_cdc_oversize_values_total{stage=\"cdc\"} 6"),
        "two rows of the snapshot, two of the stream, two images of the edit: {scraped}"
    );
}
