//! The `seed` scorer: parity with the original Kafka Streams fraud detector, which flagged a
//! pseudo-random 5% of reviews by hashing them. Like every scorer it is a pure function of the
//! row, so the verdict of an old image can be recomputed.
//!
//! Bytes hashed, in order (the Avro single-object encoding of the review):
//! 1. `C3 01`, the single-object marker;
//! 2. the 8-byte little-endian CRC-64-AVRO (Rabin) fingerprint of the Parsing Canonical Form
//!    of [`SCHEMA_JSON`], the fixed record `reviewflow.Review`, which is [`CANONICAL_FORM`]:
//!    `74 9b 9f e4 3c d5 0f 11`;
//! 3. the Avro binary body of that record: `id`, `course_id`, `user_id` as zig-zag varint
//!    longs; `rating` as a string with one decimal (`"4.5"`, `"3.0"`); `title` and `content`
//!    as `["null","string"]` unions (branch index, then the UTF-8 string if present);
//!    `created_at` as a zig-zag varint long of milliseconds since the Unix epoch (sub-millisecond
//!    precision is dropped, rounding towards the past).
//!
//! The hash is Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), made positive
//! with `& 0x7fffffff`; the review is fraud when that value `% 100 < 5`.
//!
//! A NULL `user_id` (possible only once the table's NOT NULL is dropped; the column had one
//! when this model was made) is hashed as user 0: the fixed schema has no null for it, and a
//! new schema would re-roll every verdict. No rule needs a user, so such a row still counts.
//!
//! `updated_at` is deliberately not hashed: an edit that does not change what the reviewer
//! wrote (a touch of the row, a re-save) must not re-roll the verdict. The original also hashed
//! its `modified` timestamp; this departs from it on purpose. The schema is fixed here rather
//! than derived from the table, so adding a column never changes anyone's verdict.

use std::sync::LazyLock;

use apache_avro::headers::{HeaderBuilder, RabinFingerprintHeader};
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;

use super::{Judgement, Scorer};
use crate::contract::image::ReviewRow;

/// The record hashed. Changing anything here (even a field name) re-rolls every verdict, so it
/// needs a new model string.
pub const SCHEMA_JSON: &str = r#"{
  "type": "record", "name": "Review", "namespace": "reviewflow",
  "fields": [
    {"name": "id", "type": "long"},
    {"name": "course_id", "type": "long"},
    {"name": "user_id", "type": "long"},
    {"name": "rating", "type": "string"},
    {"name": "title", "type": ["null", "string"]},
    {"name": "content", "type": ["null", "string"]},
    {"name": "created_at", "type": {"type": "long", "logicalType": "timestamp-millis"}}
  ]
}"#;

/// The Parsing Canonical Form of [`SCHEMA_JSON`] as the Avro specification (and Java's
/// `SchemaNormalization`) writes it. apache-avro 0.22's `canonical_form()` keeps
/// `created_at` as `{"type":"long"}` (it reduces a primitive to its name only when `type` is
/// the sole attribute, before stripping `logicalType`), so its fingerprint would not be the
/// one a Java reader expects; the header is computed from this form instead.
pub const CANONICAL_FORM: &str = r#"{"name":"reviewflow.Review","type":"record","fields":[{"name":"id","type":"long"},{"name":"course_id","type":"long"},{"name":"user_id","type":"long"},{"name":"rating","type":"string"},{"name":"title","type":["null","string"]},{"name":"content","type":["null","string"]},{"name":"created_at","type":"long"}]}"#;

const MODEL: &str = "seed-murmur2-v1";
const PERCENT_FLAGGED: u32 = 5;

static SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| Schema::parse_str(SCHEMA_JSON).expect("the fixed review schema parses"));
// The canonical form is itself a schema, and its own canonical form.
static HEADER: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let canonical = Schema::parse_str(CANONICAL_FORM).expect("the canonical form parses");
    RabinFingerprintHeader::from_schema(&canonical).build_header()
});
// Resolving the schema's names once, not per review.
static WRITER: LazyLock<GenericDatumWriter<'static>> = LazyLock::new(|| {
    GenericDatumWriter::builder(&SCHEMA)
        .build()
        .expect("the fixed review schema resolves")
});

#[derive(Clone, Copy, Debug, Default)]
pub struct SeedScorer;

impl SeedScorer {
    pub fn new() -> Self {
        SeedScorer
    }
}

impl Scorer for SeedScorer {
    fn model(&self) -> &str {
        MODEL
    }

    fn judge(&self, review: &ReviewRow) -> Judgement {
        let bucket = positive(murmur2(&single_object(review))) % 100;
        let fraud = bucket < PERCENT_FLAGGED;
        Judgement {
            fraud,
            score: if fraud { 1.0 } else { 0.0 },
            reasons: if fraud {
                vec![format!("seed_hash_bucket_{bucket}")]
            } else {
                Vec::new()
            },
        }
    }
}

/// The exact bytes the seed scorer hashes (see the module doc).
pub fn single_object(review: &ReviewRow) -> Vec<u8> {
    let optional = |text: &Option<String>| match text {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(text) => Value::Union(1, Box::new(Value::String(text.clone()))),
    };
    let record = Value::Record(vec![
        ("id".into(), Value::Long(review.id)),
        ("course_id".into(), Value::Long(review.course_id)),
        ("user_id".into(), Value::Long(review.user_id.unwrap_or(0))),
        ("rating".into(), Value::String(review.rating.to_string())),
        ("title".into(), optional(&review.title)),
        ("content".into(), optional(&review.content)),
        (
            "created_at".into(),
            Value::TimestampMillis(review.created_at.timestamp_millis()),
        ),
    ]);
    let mut bytes = HEADER.clone();
    // The record is built to the fixed schema above; the tests encode it, so failing here is
    // a bug in this file, not something a row can cause.
    WRITER
        .write_value_ref(&mut bytes, &record)
        .expect("a review record matches the fixed review schema");
    bytes
}

/// Kafka's murmur2, bit for bit as `org.apache.kafka.common.utils.Utils.murmur2(byte[])`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java mixes in the length as an int; no review comes near 4 GiB.
    let mut h = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    // Java's switch falls through from case 3 to case 1.
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit rather than taking the absolute value.
pub fn positive(hash: i32) -> u32 {
    (hash as u32) & 0x7fff_ffff
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};

    use apache_avro::rabin::Rabin;
    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::GenericSingleObjectWriter;

    use super::*;
    use crate::contract::review::Rating;

    fn review(id: i64) -> ReviewRow {
        let created_at = Utc
            .timestamp_millis_opt(1_700_000_000_000 + id * 61_001)
            .unwrap();
        ReviewRow {
            id,
            course_id: id % 37 + 1,
            user_id: Some(id * 7 + 3),
            rating: Rating::from_halves((id % 10) as u8 + 1).unwrap(),
            title: (id % 3 != 0).then(|| format!("Review number {id}")),
            content: (id % 5 != 0)
                .then(|| format!("Course {} was fine, lesson {}.", id % 37, id % 12)),
            created_at,
            updated_at: Some(created_at),
        }
    }

    /// Multi-byte text, a missing content, big and negative numbers, a time before 1970.
    fn unusual() -> ReviewRow {
        ReviewRow {
            id: i64::MAX,
            course_id: -5,
            user_id: Some(1 << 40),
            rating: Rating::from_halves(1).unwrap(),
            title: Some("Größe – 日本語 🦀".into()),
            content: None,
            created_at: Utc.timestamp_millis_opt(-86_400_001).unwrap(),
            updated_at: Some(Utc.timestamp_millis_opt(0).unwrap()),
        }
    }

    // Computed by Kafka 4.1.1's own org.apache.kafka.common.utils.Utils.murmur2(byte[])
    // (kafka-clients-4.1.1.jar, a throwaway Java 17 program), not by this code.
    #[test]
    fn murmur2_matches_kafka_utils_murmur2() {
        let all: Vec<u8> = (0..=255).collect();
        let vectors: [(&[u8], i32); 17] = [
            (b"", 275646681),
            (b"a", -1563381124),
            (b"ab", 316155434),
            (b"abc", 479470107),
            (b"abcd", -1323649548),
            (b"abcde", 461995741),
            (b"abcdef", 1870650108),
            (b"abcdefg", -346467175),
            (b"abcdefgh", -955427363),
            (b"abcdefghi", -619679810),
            (&[0x80], 857690492),
            (&[0xff, 0xfe], 1717632651),
            (&[0xff, 0xfe, 0xfd], 998637092),
            (
                &[0xc3, 0x01, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56],
                86082041,
            ),
            (b"The quick brown fox jumps over the lazy dog", 495243318),
            ("Größe – 日本語".as_bytes(), 932352185),
            (&all, -1948347274),
        ];
        for (bytes, expected) in vectors {
            assert_eq!(murmur2(bytes), expected, "{bytes:02x?}");
        }
        assert_eq!(positive(-1563381124), 584102524);
        assert_eq!(positive(-1948347274), 199136374);
    }

    #[test]
    fn hashed_bytes_start_with_the_single_object_header() {
        // CRC-64-AVRO of CANONICAL_FORM, computed apart from apache-avro (a throwaway Java
        // program following the specification's algorithm).
        let fingerprint_le = [0x74, 0x9b, 0x9f, 0xe4, 0x3c, 0xd5, 0x0f, 0x11];
        let bytes = single_object(&review(42));
        assert_eq!(bytes[..2], [0xc3, 0x01]);
        assert_eq!(bytes[2..10], fingerprint_le);
        let canonical = Schema::parse_str(CANONICAL_FORM).unwrap();
        assert_eq!(canonical.fingerprint::<Rabin>().bytes, fingerprint_le);

        // CANONICAL_FORM is the schema's, up to apache-avro's not reducing a primitive with a
        // logical type to its name (whether or not a later version fixes that).
        let form = SCHEMA.canonical_form();
        assert_eq!(
            form.replace(r#"{"type":"long"}"#, r#""long""#),
            CANONICAL_FORM
        );

        // The body is what apache-avro's own single-object writer writes after its header.
        let mut writer = GenericSingleObjectWriter::new_with_capacity(&SCHEMA, 64).unwrap();
        let record = GenericDatumReader::builder(&SCHEMA)
            .build()
            .unwrap()
            .read_value(&mut &bytes[10..])
            .unwrap();
        let mut theirs = Vec::new();
        writer.write_value_ref(&record, &mut theirs).unwrap();
        assert_eq!(theirs[10..], bytes[10..]);
    }

    // The full pipeline (encoding, then hash) against Kafka 4.1.1's Utils.murmur2 of these
    // very bytes, fed to it by a throwaway Java program; 82 and 96 land in buckets 4 and 2.
    #[test]
    fn verdicts_of_fixed_reviews_match_kafka() {
        let cases = [
            (unusual(), "c301749b9fe43cd50f11feffffffffffffffff010980808080804006302e3502344772c3b6c39f6520e2809320e697a5e69cace8aa9e20f09fa6800081f0b252", 1335612085, false),
            (review(1), "c301749b9fe43cd50f1102041406312e30021e526576696577206e756d62657220310238436f757273652031207761732066696e652c206c6573736f6e20312e92d9b2fef962", -758371588, false),
            (review(15), "c301749b9fe43cd50f111e20d80106332e3000008ef99afff962", 783619477, false),
            (review(42), "c301749b9fe43cd50f11540cd20406312e35000238436f757273652035207761732066696e652c206c6573736f6e20362ef4ffe380fa62", -1735502140, false),
            (review(82), "c301749b9fe43cd50f11a40112820906312e350220526576696577206e756d626572203832023a436f757273652038207761732066696e652c206c6573736f6e2031302ec4ed8d83fa62", -2082220644, true),
            (review(96), "c301749b9fe43cd50f11c0012ec60a06332e3500023a436f75727365203232207761732066696e652c206c6573736f6e20302ec08df683fa62", 1638589702, true),
        ];
        for (row, hex, kafka_murmur2, fraud) in cases {
            let bytes = single_object(&row);
            let ours: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(ours, hex, "review {}", row.id);
            assert_eq!(murmur2(&bytes), kafka_murmur2, "review {}", row.id);
            assert_eq!(SeedScorer.judge(&row).fraud, fraud, "review {}", row.id);
        }
    }

    #[test]
    fn body_is_the_fields_in_schema_order() {
        let created_at: DateTime<Utc> = Utc.timestamp_millis_opt(1_000).unwrap();
        let row = ReviewRow {
            id: 1,
            course_id: -1,
            user_id: Some(64),
            rating: Rating::from_halves(9).unwrap(),
            title: None,
            content: Some("ok".into()),
            created_at: created_at + chrono::Duration::microseconds(999),
            updated_at: Some(created_at),
        };
        let body = &single_object(&row)[10..];
        assert_eq!(
            body,
            [
                0x02, // id 1
                0x01, // course_id -1
                0x80, 0x01, // user_id 64
                0x06, b'4', b'.', b'5', // rating "4.5"
                0x00, // title null
                0x02, 0x04, b'o', b'k', // content "ok"
                0xd0, 0x0f, // created_at 1000 ms, the microseconds dropped
            ]
        );
    }

    #[test]
    fn flags_about_five_percent() {
        let scorer = SeedScorer::new();
        let flagged = (1..=10_000)
            .filter(|&id| scorer.judge(&review(id)).fraud)
            .count();
        assert!((400..=600).contains(&flagged), "{flagged} of 10000 flagged");
    }

    #[test]
    fn judgement_names_the_bucket_only_when_fraud() {
        let scorer = SeedScorer::new();
        let mut seen = (false, false);
        for id in 1..=200 {
            let row = review(id);
            let bucket = positive(murmur2(&single_object(&row))) % 100;
            let judgement = scorer.judge(&row);
            if bucket < 5 {
                seen.0 = true;
                assert_eq!(
                    judgement,
                    Judgement {
                        fraud: true,
                        score: 1.0,
                        reasons: vec![format!("seed_hash_bucket_{bucket}")]
                    }
                );
            } else {
                seen.1 = true;
                assert_eq!(
                    judgement,
                    Judgement {
                        fraud: false,
                        score: 0.0,
                        reasons: vec![]
                    }
                );
            }
        }
        assert_eq!(seen, (true, true));
    }

    #[test]
    fn only_what_the_reviewer_wrote_changes_the_verdict() {
        let scorer = SeedScorer::new();
        for id in 1..=500 {
            let row = review(id);
            let mut touched = row.clone();
            touched.updated_at = row.updated_at.map(|t| t + chrono::Duration::days(400));
            assert_eq!(single_object(&touched), single_object(&row));
            assert_eq!(scorer.judge(&touched), scorer.judge(&row));
        }
        let mut edited = review(7);
        edited.content = Some("changed".into());
        assert_ne!(single_object(&edited), single_object(&review(7)));
    }
}
