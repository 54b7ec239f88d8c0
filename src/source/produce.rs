//! The record key of the source's change records, in the wire format. Handing the records to
//! the producer is `kafka::produce`'s, the one rule every stage follows.

use crate::avro::{envelope, wire};
use crate::error::Result;

/// The course id as the record key: Avro long, Confluent wire format.
pub fn wire_key(key_schema_id: u32, course_id: i64) -> Result<Vec<u8>> {
    Ok(wire::frame(
        key_schema_id,
        &envelope::encode_key(course_id)?,
    ))
}
