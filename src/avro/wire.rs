//! The Confluent wire format: magic byte 0, the schema id as a big-endian u32, then the
//! Avro binary body. Any Confluent-compatible client reads what this writes.

use crate::error::{Error, Result};

pub const MAGIC: u8 = 0;

pub fn frame(schema_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The schema id and the Avro body of a framed record.
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8])> {
    match bytes {
        [MAGIC, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        [] => Err(Error::Decode(
            "empty record: no Confluent wire-format header".into(),
        )),
        [m, ..] if *m != MAGIC => Err(Error::Decode(format!(
            "magic byte is {m}, not 0: not Confluent wire format"
        ))),
        _ => Err(Error::Decode(format!(
            "{} bytes: shorter than the 5-byte wire-format header",
            bytes.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_an_error() {
        let framed = frame(258, b"body");
        assert_eq!(&framed[..5], &[0, 0, 0, 1, 2]);
        assert_eq!(unframe(&framed).unwrap(), (258, b"body".as_slice()));
        assert_eq!(unframe(&frame(7, b"")).unwrap(), (7, b"".as_slice()));
        for bad in [&b""[..], b"\x01\0\0\0\x01x", b"\0\0\x01"] {
            assert!(unframe(bad).is_err(), "{bad:?}");
        }
    }
}
