//! The hostile values of tests/any_value.rs, shared with the encoder's differential test
//! (tests/encoder.rs): user columns of many built-in types with values from the edges of
//! their range, and values of the contract columns including every kind that cannot count.
//! Each value is SQL, to be written into a statement.

use super::Rng;

/// User columns, as a user might add them, each with the values drawn for it.
pub const COLUMNS: &[(&str, &str, &[&str])] = &[
    (
        "tags",
        "text[]",
        &[
            "NULL",
            "'{}'",
            "'{a,NULL,\"b c\",\"\\\\\"}'",
            "'{{1,2},{3,4}}'",
        ],
    ),
    (
        "meta",
        "jsonb",
        &[
            "NULL",
            "'{}'",
            "'{\"a\": [1, 2.5e300, null, \"x\\\\u0000y\"]}'",
            "'\"\"'",
        ],
    ),
    (
        "weight",
        "double precision",
        &[
            "NULL",
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "-0.0",
            "1e-308",
            "1.7976931348623157e308",
        ],
    ),
    (
        "amount",
        "numeric",
        &[
            "NULL",
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "0.000000000000000000000000000001",
            "123456789012345678901234567890.5",
        ],
    ),
    (
        "price",
        "numeric(7,2)",
        &["NULL", "'NaN'", "-99999.99", "0"],
    ),
    (
        "span",
        "interval",
        &[
            "NULL",
            "'-178000000 years'",
            "'1 mon -2 days 03:04:05.678'",
            "'infinity'",
        ],
    ),
    (
        "blob",
        "bytea",
        &[
            "NULL",
            "''",
            "'\\x00ff10'",
            "decode(repeat('ab', 5000), 'hex')",
        ],
    ),
    (
        "uid",
        "uuid",
        &[
            "NULL",
            "gen_random_uuid()",
            "'00000000-0000-0000-0000-000000000000'",
        ],
    ),
    (
        "seen_on",
        "date",
        &[
            "NULL",
            "'infinity'",
            "'-infinity'",
            "'4713-01-01 BC'",
            "'5874897-12-31'",
        ],
    ),
    (
        "local_at",
        "timestamp",
        &[
            "NULL",
            "'infinity'",
            "'294276-12-31 23:59:59.999999'",
            "'4713-01-01 00:00:00 BC'",
        ],
    ),
    (
        "at_time",
        "time",
        &["NULL", "'24:00:00'", "'00:00:00.000001'"],
    ),
    (
        "spent",
        "money",
        &["NULL", "'-92233720368547758.08'", "12.5"],
    ),
    ("host", "inet", &["NULL", "'::1'", "'10.1.2.3/8'"]),
    ("flag", "boolean", &["NULL", "true", "false"]),
    ("small", "smallint", &["NULL", "-32768", "32767"]),
    ("odd name", "text", &["NULL", "'x'"]),
];

/// Values of the contract columns, including every kind that cannot count.
pub fn course(rng: &mut Rng) -> String {
    match rng.next(10) {
        0 => "NULL".into(),
        1 => {
            ["0", "-1", "9223372036854775807", "-9223372036854775808"][rng.next(4) as usize].into()
        }
        _ => (1 + rng.next(6)).to_string(),
    }
}

pub fn rating(rng: &mut Rng) -> String {
    match rng.next(8) {
        0 => {
            ["NULL", "'NaN'", "0", "-0.5", "7.5", "9.9", "2.3", "-9.9"][rng.next(8) as usize].into()
        }
        _ => format!("{}", (1 + rng.next(10)) as f64 / 2.0),
    }
}

pub fn timestamp(rng: &mut Rng) -> String {
    match rng.next(8) {
        0 => [
            "NULL",
            "'infinity'",
            "'-infinity'",
            "'4713-01-01 00:00:00+00 BC'",
            "'0001-01-01 00:00:00+00 BC'",
            "'0001-01-01 00:00:00+00'",
            "'9999-12-31 23:59:59.999999+00'",
            "'10000-01-01 00:00:00+00'",
            "'294276-12-31 23:59:59.999999+00'",
            "'1900-02-28 12:00:00-03:30'",
        ][rng.next(10) as usize]
            .into(),
        // Inside and at the edges of the 90-day window.
        _ => format!(
            "now() - interval '{} days'",
            [0, 1, 45, 89, 90, 91, 400][rng.next(7) as usize]
        ),
    }
}

pub fn text(rng: &mut Rng) -> String {
    match rng.next(12) {
        0 => "NULL".into(),
        1 => "''".into(),
        2 => "repeat('long text ', 200000)".into(), // 2 MB: beyond a Kafka record
        3 => "repeat('é', 30000)".into(),
        4 => "E'quote '' backslash \\\\ tab \\t newline \\n end'".into(),
        5 => "'see http://spam.example.com now'".into(),
        6 => "'🦀 ünïcödé ∑ 中文'".into(),
        _ => format!("'review text {}'", rng.next(1_000_000)),
    }
}

pub fn user_values(rng: &mut Rng) -> Vec<String> {
    COLUMNS
        .iter()
        .map(|(_, _, values)| values[rng.next(values.len() as u64) as usize].to_string())
        .collect()
}

pub fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}
