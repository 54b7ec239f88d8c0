//! The slot's change stream (CopyBoth mode): XLogData and keepalives in, standby status
//! updates out. Reading is cancel-safe; the confirmed position moves only by `send_status`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::wire::{log_notice, Backend, ServerError};
use super::{ReplicationMessage, ReplicationStream, PG_EPOCH_UNIX_MICROS};
use crate::contract::lsn::Lsn;
use crate::error::{Error, Result};

impl ReplicationStream {
    /// The next message; `Ok(None)` once the server has ended the stream (CopyDone).
    /// Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<ReplicationMessage>> {
        while !self.ended {
            // The only await: everything below runs to completion once a frame is whole.
            let message = match self.wire.recv("streaming").await? {
                Backend::Message(m) => m,
                other => return Err(self.wire.unexpected("streaming", &other)),
            };
            match message {
                Message::CopyData(body) => return parse_copy_data(body.into_bytes()).map(Some),
                // The walsender resets its end-of-stream flags for physical replication
                // only, so a second logical stream on one session ends without CopyDone.
                Message::CopyDone | Message::CommandComplete(_) | Message::ReadyForQuery(_) => {
                    self.ended = true
                }
                Message::ErrorResponse(body) => {
                    return Err(Error::Replication(format!(
                        "stream of slot {}: {}",
                        self.slot,
                        ServerError::parse(&body)
                    )))
                }
                Message::NoticeResponse(body) => log_notice(&body),
                Message::ParameterStatus(_) => {}
                other => return Err(self.wire.unexpected("streaming", &Backend::Message(other))),
            }
        }
        Ok(None)
    }

    /// Standby status update: `flushed` is what the slot's confirmed_flush_lsn moves to, so
    /// pass only positions whose changes are safely stored downstream (`Lsn::ZERO` confirms
    /// nothing). A cancelled call may leave the update unsent; the next call sends it.
    pub async fn send_status(
        &mut self,
        written: Lsn,
        flushed: Lsn,
        applied: Lsn,
        reply_requested: bool,
    ) -> Result<()> {
        let update =
            standby_status_update(written, flushed, applied, now_pg_micros(), reply_requested);
        self.wire
            .send(|b| {
                frontend::CopyData::new(update)?.write(b);
                Ok(())
            })
            .await
    }
}

/// Reads the two CopyData payloads a walsender sends: 'w' XLogData and 'k' keepalive.
fn parse_copy_data(mut data: Bytes) -> Result<ReplicationMessage> {
    let malformed = |what: &str, data: &Bytes| {
        Error::Replication(format!("malformed {what} ({} bytes)", data.len()))
    };
    match data.first() {
        Some(b'w') => {
            if data.len() < 25 {
                return Err(malformed("XLogData", &data));
            }
            data.advance(1);
            Ok(ReplicationMessage::XLogData {
                wal_start: Lsn(data.get_u64()),
                wal_end: Lsn(data.get_u64()),
                server_time_micros: data.get_i64(),
                data,
            })
        }
        Some(b'k') => {
            if data.len() != 18 {
                return Err(malformed("keepalive", &data));
            }
            data.advance(1);
            Ok(ReplicationMessage::Keepalive {
                wal_end: Lsn(data.get_u64()),
                server_time_micros: data.get_i64(),
                reply_requested: data.get_u8() != 0,
            })
        }
        Some(tag) => Err(Error::Replication(format!(
            "unknown replication message type 0x{tag:02x}"
        ))),
        None => Err(Error::Replication("empty replication message".into())),
    }
}

fn standby_status_update(
    written: Lsn,
    flushed: Lsn,
    applied: Lsn,
    clock_pg_micros: i64,
    reply_requested: bool,
) -> Bytes {
    let mut b = BytesMut::with_capacity(34);
    b.put_u8(b'r');
    b.put_u64(written.0);
    b.put_u64(flushed.0);
    b.put_u64(applied.0);
    b.put_i64(clock_pg_micros);
    b.put_u8(u8::from(reply_requested));
    b.freeze()
}

fn now_pg_micros() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(unix.as_micros())
        .unwrap_or(i64::MAX)
        .saturating_sub(PG_EPOCH_UNIX_MICROS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::replication::pg_epoch_micros_to_unix_micros;

    #[test]
    fn timestamps_shift_from_the_postgres_epoch() {
        assert_eq!(pg_epoch_micros_to_unix_micros(0), 946_684_800_000_000);
        assert_eq!(pg_epoch_micros_to_unix_micros(-946_684_800_000_000), 0);
        assert_eq!(pg_epoch_micros_to_unix_micros(i64::MAX), i64::MAX);
        let now = pg_epoch_micros_to_unix_micros(now_pg_micros());
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!((unix.as_micros() as i64 - now).abs() < 5_000_000);
    }

    #[test]
    fn parses_xlogdata_and_keepalives() {
        let mut w = BytesMut::new();
        w.put_u8(b'w');
        w.put_u64(0x10);
        w.put_u64(0x20);
        w.put_i64(-3);
        w.put_slice(b"Bpayload");
        assert_eq!(
            parse_copy_data(w.freeze()).unwrap(),
            ReplicationMessage::XLogData {
                wal_start: Lsn(0x10),
                wal_end: Lsn(0x20),
                server_time_micros: -3,
                data: Bytes::from_static(b"Bpayload"),
            }
        );

        let mut k = BytesMut::new();
        k.put_u8(b'k');
        k.put_u64(0x1_0000_0000);
        k.put_i64(77);
        k.put_u8(1);
        let k = k.freeze();
        assert_eq!(
            parse_copy_data(k.clone()).unwrap(),
            ReplicationMessage::Keepalive {
                wal_end: Lsn(0x1_0000_0000),
                server_time_micros: 77,
                reply_requested: true,
            }
        );

        for len in 0..k.len() {
            assert!(parse_copy_data(k.slice(..len)).is_err());
        }
        let w = Bytes::from_static(&[b'w'; 24]);
        assert!(parse_copy_data(w).is_err());
        let err = parse_copy_data(Bytes::from_static(b"z123")).unwrap_err();
        assert!(err.to_string().contains("0x7a"), "{err}");
    }

    #[test]
    fn status_update_has_the_documented_layout() {
        let b = standby_status_update(Lsn(1), Lsn(2), Lsn(3), 4, true);
        let mut expected = vec![b'r'];
        for v in [1u64, 2, 3, 4] {
            expected.extend(v.to_be_bytes());
        }
        expected.push(1);
        assert_eq!(&b[..], &expected[..]);
    }
}
