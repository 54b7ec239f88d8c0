//! PostgreSQL's text output of a column value, turned into the Avro value of its column kind.
//! The replication connection runs with DateStyle=ISO and TimeZone=UTC, so the text forms
//! parsed here are the only ones that arrive.

use apache_avro::types::Value;
use chrono::{NaiveDate, NaiveDateTime};

use crate::error::{Error, Result};

/// The Avro type a PostgreSQL column is carried as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Boolean,
    Int,
    Long,
    Float,
    Double,
    /// numeric(precision, scale): exact, as Avro's decimal logical type over bytes.
    Decimal {
        precision: u32,
        scale: u32,
    },
    String,
    Bytes,
    TimestampMicros,
    LocalTimestampMicros,
    Date,
}

impl Kind {
    /// By type OID (pg_type.h); anything not listed travels as its text form.
    pub fn of(type_oid: u32, type_modifier: i32) -> Kind {
        match type_oid {
            16 => Kind::Boolean,
            21 | 23 => Kind::Int,
            20 | 26 => Kind::Long,
            700 => Kind::Float,
            701 => Kind::Double,
            1700 if type_modifier >= 4 => {
                let m = (type_modifier - 4) as u32;
                Kind::Decimal {
                    precision: (m >> 16) & 0xFFFF,
                    scale: m & 0xFFFF,
                }
            }
            17 => Kind::Bytes,
            1184 => Kind::TimestampMicros,
            1114 => Kind::LocalTimestampMicros,
            1082 => Kind::Date,
            _ => Kind::String,
        }
    }

    pub fn avro_type(self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Kind::Boolean => json!("boolean"),
            Kind::Int => json!("int"),
            Kind::Long => json!("long"),
            Kind::Float => json!("float"),
            Kind::Double => json!("double"),
            Kind::Decimal { precision, scale } => {
                json!({"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale})
            }
            Kind::String => json!("string"),
            Kind::Bytes => json!("bytes"),
            Kind::TimestampMicros => json!({"type": "long", "logicalType": "timestamp-micros"}),
            Kind::LocalTimestampMicros => {
                json!({"type": "long", "logicalType": "local-timestamp-micros"})
            }
            Kind::Date => json!({"type": "int", "logicalType": "date"}),
        }
    }

    pub fn parse(self, text: &[u8]) -> Result<Value> {
        let s = std::str::from_utf8(text)
            .map_err(|_| Error::Decode("column text is not UTF-8".into()))?;
        let bad = |what: &str| Error::Decode(format!("{s:?} is not a valid {what}"));
        Ok(match self {
            Kind::Boolean => Value::Boolean(s == "t"),
            Kind::Int => Value::Int(s.parse().map_err(|_| bad("int"))?),
            Kind::Long => Value::Long(s.parse().map_err(|_| bad("bigint"))?),
            Kind::Float => Value::Float(s.parse().map_err(|_| bad("real"))?),
            Kind::Double => Value::Double(s.parse().map_err(|_| bad("double precision"))?),
            Kind::Decimal { scale, .. } => {
                let unscaled = unscaled_decimal(s, scale).ok_or_else(|| bad("numeric"))?;
                Value::Decimal(minimal_twos_complement(unscaled).into())
            }
            Kind::String => Value::String(s.to_string()),
            Kind::Bytes => {
                let hex = s.strip_prefix("\\x").ok_or_else(|| bad("bytea"))?;
                Value::Bytes(decode_hex(hex).ok_or_else(|| bad("bytea"))?)
            }
            Kind::TimestampMicros => {
                let t = chrono::DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z")
                    .map_err(|_| bad("timestamptz"))?;
                Value::TimestampMicros(t.timestamp_micros())
            }
            Kind::LocalTimestampMicros => {
                let t = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
                    .map_err(|_| bad("timestamp"))?;
                Value::LocalTimestampMicros(t.and_utc().timestamp_micros())
            }
            Kind::Date => {
                let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad("date"))?;
                let days = d.signed_duration_since(NaiveDate::default()).num_days();
                Value::Date(i32::try_from(days).map_err(|_| bad("date"))?)
            }
        })
    }
}

/// "-12.3" at scale 2 is -1230. More fractional digits than the scale, NaN or infinities: None.
fn unscaled_decimal(s: &str, scale: u32) -> Option<i128> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || fraction.len() > scale as usize
        || !(whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut value: i128 = 0;
    for b in whole.bytes().chain(fraction.bytes()) {
        value = value.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    value = value.checked_mul(10i128.checked_pow(scale - fraction.len() as u32)?)?;
    Some(if negative { -value } else { value })
}

/// Big-endian two's complement in as few bytes as hold the sign.
fn minimal_twos_complement(v: i128) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let sign = if v < 0 { 0xFF } else { 0x00 };
    let mut start = 0;
    while start < 15 && bytes[start] == sign && (bytes[start + 1] & 0x80) == (sign & 0x80) {
        start += 1;
    }
    bytes[start..].to_vec()
}

/// The unscaled integer of an Avro decimal's bytes.
pub fn decimal_unscaled(bytes: &[u8]) -> Option<i128> {
    if bytes.is_empty() || bytes.len() > 16 {
        return None;
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xFF } else { 0x00 };
    let mut buf = [fill; 16];
    buf[16 - bytes.len()..].copy_from_slice(bytes);
    Some(i128::from_be_bytes(buf))
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_typmods_become_decimals() {
        // numeric(2,1): typmod = ((2 << 16) | 1) + 4
        assert_eq!(
            Kind::of(1700, (2 << 16 | 1) + 4),
            Kind::Decimal {
                precision: 2,
                scale: 1
            }
        );
        assert_eq!(Kind::of(1700, -1), Kind::String);
        assert_eq!(Kind::of(20, -1), Kind::Long);
        assert_eq!(Kind::of(1184, -1), Kind::TimestampMicros);
    }

    #[test]
    fn decimals_are_exact_twos_complement() {
        for (text, scale, unscaled) in [
            ("4.5", 1, 45),
            ("0.5", 1, 5),
            ("5", 1, 50),
            ("-12.3", 2, -1230),
            ("127", 0, 127),
            ("128", 0, 128),
            ("-129", 0, -129),
        ] {
            let got = unscaled_decimal(text, scale).unwrap();
            assert_eq!(got, unscaled, "{text}");
            assert_eq!(
                decimal_unscaled(&minimal_twos_complement(got)),
                Some(unscaled),
                "{text}"
            );
        }
        assert_eq!(minimal_twos_complement(45), vec![45]);
        assert_eq!(minimal_twos_complement(128), vec![0, 128]);
        assert_eq!(minimal_twos_complement(-1), vec![0xFF]);
        for bad in ["NaN", "1.23", "", "-", "1e3", "Infinity"] {
            assert_eq!(unscaled_decimal(bad, 1), None, "{bad}");
        }
    }

    #[test]
    fn text_forms_parse() {
        assert_eq!(
            Kind::TimestampMicros
                .parse(b"2026-11-25 04:40:17.993809+00")
                .unwrap(),
            Value::TimestampMicros(1_795_581_617_993_809)
        );
        assert_eq!(
            Kind::TimestampMicros
                .parse(b"1970-01-01 00:00:01+00")
                .unwrap(),
            Value::TimestampMicros(1_000_000)
        );
        assert_eq!(Kind::Date.parse(b"1970-01-02").unwrap(), Value::Date(1));
        assert_eq!(
            Kind::Bytes.parse(b"\\x00ff").unwrap(),
            Value::Bytes(vec![0, 255])
        );
        assert_eq!(Kind::Boolean.parse(b"t").unwrap(), Value::Boolean(true));
        assert!(Kind::TimestampMicros.parse(b"infinity").is_err());
        assert!(Kind::Long.parse(b"12x").is_err());
    }
}
