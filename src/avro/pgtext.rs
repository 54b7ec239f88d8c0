//! PostgreSQL's text output of a column value, turned into the Avro value of its column.
//! Sessions run with `db::TEXT_OUTPUT_SETTINGS` (DateStyle ISO, TimeZone UTC, bytea hex,
//! extra_float_digits 3), so the text forms parsed here are the only ones that arrive.
//!
//! Every column is a union ["null", T, "string"] (["null", "string"] when T is string): a value
//! T cannot hold (numeric NaN and infinities, `infinity` dates, years past what a date library
//! keeps, an oversize marker) travels in the string branch as its text, so no value can make
//! a change impossible to write. docs/values.md is the mapping users read.

use apache_avro::types::Value;
use serde_json::json;

use super::pgtime;

/// The Avro type T a PostgreSQL column is carried as.
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
            1700 => numeric(type_modifier),
            17 => Kind::Bytes,
            1184 => Kind::TimestampMicros,
            1114 => Kind::LocalTimestampMicros,
            1082 => Kind::Date,
            _ => Kind::String,
        }
    }

    /// T as Avro schema JSON.
    pub fn avro_type(self) -> serde_json::Value {
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

    /// The column's union: null first (the default), T, then the string of what T cannot hold.
    pub fn union_type(self) -> serde_json::Value {
        match self {
            Kind::String => json!(["null", "string"]),
            other => json!(["null", other.avro_type(), "string"]),
        }
    }

    /// The union value of a non-null column: T when T holds the text's value, else the text.
    pub fn value(self, text: &[u8]) -> Value {
        match self.parse(text) {
            Some(v) => Value::Union(1, Box::new(v)),
            None => self.text(String::from_utf8_lossy(text).into_owned()),
        }
    }

    /// The union value of a text carried as such (its string branch).
    pub fn text(self, text: String) -> Value {
        Value::Union(self.text_branch(), Box::new(Value::String(text)))
    }

    /// The value of T, or None when T cannot hold it.
    pub fn parse(self, text: &[u8]) -> Option<Value> {
        self.read(text).map(Parsed::into_value)
    }

    /// What T makes of the text, borrowing it where T is a string: the one parser behind
    /// both the value tree ([`Kind::parse`]) and the direct writer (`row_writer`).
    pub fn read(self, text: &[u8]) -> Option<Parsed<'_>> {
        let s = std::str::from_utf8(text).ok()?;
        Some(match self {
            Kind::Boolean => match s {
                "t" => Parsed::Boolean(true),
                "f" => Parsed::Boolean(false),
                _ => return None,
            },
            Kind::Int => Parsed::Int(s.parse().ok()?),
            Kind::Long => Parsed::Long(s.parse().ok()?),
            Kind::Float => Parsed::Float(float(s)?.parse().ok()?),
            Kind::Double => Parsed::Double(float(s)?.parse().ok()?),
            Kind::Decimal { scale, .. } => Parsed::Decimal(decimal_bytes(s, scale)?),
            Kind::String => Parsed::String(s),
            Kind::Bytes => Parsed::Bytes(decode_hex(s.strip_prefix("\\x")?)?),
            Kind::TimestampMicros => Parsed::TimestampMicros(pgtime::timestamp_micros(s, true)?),
            Kind::LocalTimestampMicros => {
                Parsed::LocalTimestampMicros(pgtime::timestamp_micros(s, false)?)
            }
            Kind::Date => Parsed::Date(pgtime::date_days(s)?),
        })
    }

    /// The union branch of the string a value T cannot hold travels in.
    pub fn text_branch(self) -> u32 {
        if self == Kind::String {
            1
        } else {
            2
        }
    }
}

/// A text read as its column's T (see [`Kind::read`]).
#[derive(Debug, PartialEq)]
pub enum Parsed<'a> {
    Boolean(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    /// The unscaled integer as Avro's decimal bytes.
    Decimal(Vec<u8>),
    String(&'a str),
    Bytes(Vec<u8>),
    TimestampMicros(i64),
    LocalTimestampMicros(i64),
    Date(i32),
}

impl Parsed<'_> {
    pub fn into_value(self) -> Value {
        match self {
            Parsed::Boolean(b) => Value::Boolean(b),
            Parsed::Int(n) => Value::Int(n),
            Parsed::Long(n) => Value::Long(n),
            Parsed::Float(f) => Value::Float(f),
            Parsed::Double(f) => Value::Double(f),
            Parsed::Decimal(b) => Value::Decimal(b.into()),
            Parsed::String(s) => Value::String(s.to_string()),
            Parsed::Bytes(b) => Value::Bytes(b),
            Parsed::TimestampMicros(t) => Value::TimestampMicros(t),
            Parsed::LocalTimestampMicros(t) => Value::LocalTimestampMicros(t),
            Parsed::Date(d) => Value::Date(d),
        }
    }
}

/// numeric(p,s) as a decimal when Avro's decimal can say it: PostgreSQL 15 also allows a
/// negative scale and a scale above the precision, which Avro's decimal cannot, so those
/// columns are carried as text (as unconstrained numeric is).
fn numeric(type_modifier: i32) -> Kind {
    if type_modifier < 4 {
        return Kind::String;
    }
    let m = (type_modifier - 4) as u32;
    let precision = (m >> 16) & 0xFFFF;
    // An 11-bit two's-complement field since PostgreSQL 15.
    let scale = m & 0x7FF;
    if scale & 0x400 != 0 || precision == 0 || scale > precision {
        return Kind::String;
    }
    Kind::Decimal { precision, scale }
}

/// PostgreSQL's spellings of the special float values in Rust's; a number as it is.
fn float(s: &str) -> Option<&str> {
    Some(match s {
        "NaN" => "NaN",
        "Infinity" => "inf",
        "-Infinity" => "-inf",
        _ if s
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.e".contains(&b)) =>
        {
            s
        }
        _ => return None,
    })
}

/// The unscaled integer of a decimal text at `scale`, as Avro's decimal bytes: big-endian
/// two's complement in as few bytes as hold the sign, of any precision (PostgreSQL's go to
/// 1000 digits). "-12.3" at scale 2 is -1230. More fractional digits than the scale, NaN or
/// infinities: None.
fn decimal_bytes(s: &str, scale: u32) -> Option<Vec<u8>> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || fraction.len() > scale as usize
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let padding = std::iter::repeat_n(b'0', scale as usize - fraction.len());
    // Magnitude, big-endian base 256, built digit by digit.
    let mut magnitude: Vec<u8> = Vec::new();
    for digit in whole.bytes().chain(fraction.bytes()).chain(padding) {
        let mut carry = u32::from(digit - b'0');
        for byte in magnitude.iter_mut().rev() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = (v & 0xFF) as u8;
            carry = v >> 8;
        }
        if carry > 0 {
            magnitude.insert(0, carry as u8);
        }
        while magnitude.first() == Some(&0) {
            magnitude.remove(0);
        }
    }
    if magnitude.is_empty() {
        return Some(vec![0]);
    }
    magnitude.insert(0, 0);
    if negative {
        for byte in magnitude.iter_mut() {
            *byte = !*byte;
        }
        for byte in magnitude.iter_mut().rev() {
            let (v, overflow) = byte.overflowing_add(1);
            *byte = v;
            if !overflow {
                break;
            }
        }
    }
    let sign = if negative { 0xFF } else { 0x00 };
    let mut start = 0;
    while start + 1 < magnitude.len()
        && magnitude[start] == sign
        && (magnitude[start + 1] & 0x80) == (sign & 0x80)
    {
        start += 1;
    }
    Some(magnitude.split_off(start))
}

/// The unscaled integer of an Avro decimal's bytes, when it fits an i128.
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
    fn numeric_typmods_become_decimals_when_avro_can_say_them() {
        let typmod = |p: i32, s: i32| ((p << 16) | (s & 0x7FF)) + 4;
        assert_eq!(
            Kind::of(1700, typmod(2, 1)),
            Kind::Decimal {
                precision: 2,
                scale: 1
            }
        );
        assert_eq!(
            Kind::of(1700, typmod(1000, 0)),
            Kind::Decimal {
                precision: 1000,
                scale: 0
            }
        );
        assert_eq!(Kind::of(1700, -1), Kind::String);
        assert_eq!(Kind::of(1700, typmod(2, -3)), Kind::String);
        assert_eq!(Kind::of(1700, typmod(2, 5)), Kind::String);
        assert_eq!(Kind::of(20, -1), Kind::Long);
        assert_eq!(Kind::of(1184, -1), Kind::TimestampMicros);
        assert_eq!(Kind::of(1186, -1), Kind::String, "interval");
    }

    #[test]
    fn decimals_are_exact_twos_complement_of_any_precision() {
        for (text, scale, unscaled) in [
            ("4.5", 1, 45),
            ("0.5", 1, 5),
            ("5", 1, 50),
            ("-12.3", 2, -1230),
            ("127", 0, 127),
            ("128", 0, 128),
            ("-128", 0, -128),
            ("-129", 0, -129),
            ("-0.00", 2, 0),
            ("999.99", 2, 99_999),
            ("-999.99", 2, -99_999),
        ] {
            let bytes = decimal_bytes(text, scale).unwrap();
            assert_eq!(decimal_unscaled(&bytes), Some(unscaled), "{text}");
            let wider = minimal(unscaled);
            assert_eq!(bytes, wider, "{text} is minimal");
        }
        assert_eq!(decimal_bytes("45", 0).unwrap(), vec![45]);
        assert_eq!(decimal_bytes("128", 0).unwrap(), vec![0, 128]);
        assert_eq!(decimal_bytes("-1", 0).unwrap(), vec![0xFF]);
        // 10^40 does not fit an i128; its bytes are 10^40 still.
        let big = decimal_bytes(&format!("1{}", "0".repeat(40)), 0).unwrap();
        let mut v = 0u128;
        for b in &big[1..] {
            v = v.wrapping_mul(256).wrapping_add(u128::from(*b));
        }
        assert_eq!(big.len(), 17);
        assert_eq!(big[0], 0x1D, "10^40 >> 128 is 29");
        assert_eq!(v, 10u128.pow(38).wrapping_mul(100));
        for bad in ["NaN", "1.23", "", "-", "1e3", "Infinity", "-Infinity"] {
            assert_eq!(decimal_bytes(bad, 1), None, "{bad}");
        }
    }

    fn minimal(v: i128) -> Vec<u8> {
        let bytes = v.to_be_bytes();
        let sign = if v < 0 { 0xFF } else { 0x00 };
        let mut start = 0;
        while start < 15 && bytes[start] == sign && (bytes[start + 1] & 0x80) == (sign & 0x80) {
            start += 1;
        }
        bytes[start..].to_vec()
    }

    fn branch(v: Value) -> (u32, Value) {
        match v {
            Value::Union(i, inner) => (i, *inner),
            other => panic!("not a union: {other:?}"),
        }
    }

    #[test]
    fn every_special_value_has_a_branch() {
        let decimal = Kind::Decimal {
            precision: 5,
            scale: 2,
        };
        let t = |s: &str| Value::String(s.into());
        for (kind, text, expected) in [
            (Kind::Boolean, "t", (1, Value::Boolean(true))),
            (Kind::Boolean, "f", (1, Value::Boolean(false))),
            (Kind::Int, "-2147483648", (1, Value::Int(i32::MIN))),
            (
                Kind::Long,
                "9223372036854775807",
                (1, Value::Long(i64::MAX)),
            ),
            (Kind::Float, "Infinity", (1, Value::Float(f32::INFINITY))),
            (
                Kind::Float,
                "-Infinity",
                (1, Value::Float(f32::NEG_INFINITY)),
            ),
            (Kind::Double, "1e+308", (1, Value::Double(1e308))),
            (
                Kind::Double,
                "-Infinity",
                (1, Value::Double(f64::NEG_INFINITY)),
            ),
            (
                Kind::Double,
                "4.94065645841246544e-324",
                (1, Value::Double(5e-324)),
            ),
            (decimal, "NaN", (2, t("NaN"))),
            (
                decimal,
                "-1.50",
                (1, Value::Decimal(vec![0xFF, 0x6A].into())),
            ),
            (Kind::String, "NaN", (1, t("NaN"))),
            (Kind::Bytes, "\\x00ff", (1, Value::Bytes(vec![0, 255]))),
            (Kind::Bytes, "\\x", (1, Value::Bytes(vec![]))),
            (Kind::Date, "infinity", (2, t("infinity"))),
            (Kind::Date, "-infinity", (2, t("-infinity"))),
            (Kind::Date, "5874897-12-31", (2, t("5874897-12-31"))),
            (Kind::Date, "1970-01-02", (1, Value::Date(1))),
            (Kind::TimestampMicros, "infinity", (2, t("infinity"))),
            (
                Kind::TimestampMicros,
                "294276-12-31 23:59:59.999999+00",
                (2, t("294276-12-31 23:59:59.999999+00")),
            ),
            (
                Kind::TimestampMicros,
                "1970-01-01 00:00:01+00",
                (1, Value::TimestampMicros(1_000_000)),
            ),
            (Kind::LocalTimestampMicros, "-infinity", (2, t("-infinity"))),
            (
                Kind::LocalTimestampMicros,
                "1970-01-01 00:00:00.000001",
                (1, Value::LocalTimestampMicros(1)),
            ),
            (Kind::Long, "12x", (2, t("12x"))),
        ] {
            assert_eq!(
                branch(kind.value(text.as_bytes())),
                expected,
                "{kind:?} {text}"
            );
        }
        let (i, nan) = branch(Kind::Double.value(b"NaN"));
        assert!(i == 1 && matches!(nan, Value::Double(d) if d.is_nan()));
        let (i, nan) = branch(Kind::Float.value(b"NaN"));
        assert!(i == 1 && matches!(nan, Value::Float(f) if f.is_nan()));
        // Not UTF-8 (a SQL_ASCII database): still carried, never an error.
        assert_eq!(branch(Kind::String.value(b"\xff")).0, 1);
    }
}
