//! The digest of a review image: what ties a verdict to exactly the row it judged.
//!
//! It is taken over PostgreSQL's text form of the contract columns (DESIGN.md), read with
//! the session settings of `db::TEXT_OUTPUT_SETTINGS`: cdc takes it from the replication
//! stream's text values, `verify` from `SELECT col::text` on the table, and both get the same
//! bytes for the same row. It is independent of how a value is carried in Avro (special
//! values, oversize markers), and of columns a user adds or drops, so `ALTER TABLE ... ADD
//! COLUMN` does not make every earlier verdict look stale. Every UPDATE changes `updated_at`
//! (the migrations' trigger), so any edit, whatever it changed, changes the digest.

use openssl::sha::Sha256;

/// The columns the digest covers, in this order. A column missing from the table counts as
/// NULL.
pub const COLUMNS: [&str; 8] = [
    "id",
    "course_id",
    "user_id",
    "rating",
    "title",
    "content",
    "created_at",
    "updated_at",
];

/// Lower-case hex sha256 of the image: per column of `COLUMNS`, a 0 byte for NULL, or a 1
/// byte, the text's length as a big-endian u32 and the text.
pub fn image_digest<'a>(values: impl IntoIterator<Item = Option<&'a [u8]>>) -> String {
    let mut hasher = Sha256::new();
    for value in values {
        match value {
            None => hasher.update(&[0]),
            Some(text) => {
                hasher.update(&[1]);
                hasher.update(&(text.len() as u32).to_be_bytes());
                hasher.update(text);
            }
        }
    }
    hex(&hasher.finish())
}

pub fn hex(bytes: &[u8]) -> String {
    // Once per row in `verify`'s pass over the table: no formatting machinery per byte.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_empty_and_shifted_texts_differ() {
        let a = image_digest([Some(b"1".as_slice()), None]);
        let b = image_digest([Some(b"1".as_slice()), Some(b"".as_slice())]);
        let c = image_digest([Some(b"".as_slice()), Some(b"1".as_slice())]);
        let d = image_digest([Some(b"1".as_slice()), None]);
        assert_ne!(a, b);
        assert_ne!(b, c);
        assert_eq!(a, d);
        assert_eq!(a.len(), 64);
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
