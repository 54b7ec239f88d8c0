//! A logical replication client: the walsender side of PostgreSQL's protocol, spoken over a
//! plain TCP connection opened with `replication=database`, using postgres-protocol's message
//! codecs (tokio-postgres has no CopyBoth API).
//!
//! Role: the session a slot is created on (`slot::create`, with its exported snapshot), then
//! stream the slot's changes (pgoutput, protocol version 1) and report back how far they are
//! safe.
//!
//! Guarantees:
//! - `ReplicationStream::next` is cancel-safe: a message partly read when its future is
//!   dropped stays buffered for the next call, so it can sit in `tokio::select!`.
//! - The slot's confirmed position moves only through `send_status`'s `flushed` argument;
//!   nothing here confirms on its own, so a change is never skipped by this module.
//! - Server input never panics: malformed frames and server errors become `Error`s naming
//!   what failed, with the server's message and SQLSTATE.
//! - The session runs with `db::TEXT_OUTPUT_SETTINGS` (the startup options `db::target`
//!   adds to every connection: UTF8, ISO dates in UTC, ISO 8601
//!   intervals, hex bytea, no timeouts), so text values depend neither on the server's
//!   defaults nor on a role's `ALTER ROLE ... SET`.
//!
//! - TLS as the connection string's `sslmode` says, with the same settings and guarantees
//!   as every other connection (`db::tls`): `require` and stronger never fall back to plain.
//!
//! Limits: TCP only (no Unix sockets); authentication by trust, password, md5 or
//! SCRAM-SHA-256 (without channel binding).
//!
//! Parts: `connect` (TCP, TLS and authentication, SCRAM included), `commands` (queries and
//! START_REPLICATION), `stream` (the CopyBoth change stream and status updates), and `wire`
//! (framing, server errors) under all three.

mod commands;
mod connect;
mod stream;
mod wire;

pub(super) use commands::validate_slot_name;

use bytes::Bytes;

use crate::contract::lsn::Lsn;
use wire::Wire;

/// 2000-01-01T00:00:00Z, PostgreSQL's epoch, in microseconds since the Unix epoch.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// Protocol timestamps count microseconds from 2000-01-01 UTC; this shifts them to 1970.
pub fn pg_epoch_micros_to_unix_micros(micros: i64) -> i64 {
    micros.saturating_add(PG_EPOCH_UNIX_MICROS)
}

/// A replication-mode session that has not started streaming yet.
pub struct ReplicationConnection {
    wire: Wire,
}

/// A slot's change stream (CopyBoth mode).
pub struct ReplicationStream {
    wire: Wire,
    slot: String,
    ended: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// `data` is one pgoutput message (see `pgoutput::decode`).
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        server_time_micros: i64,
        data: Bytes,
    },
    /// The server's position and clock; when `reply_requested`, answer with `send_status`
    /// before `wal_sender_timeout` or the server ends the connection.
    Keepalive {
        wal_end: Lsn,
        server_time_micros: i64,
        reply_requested: bool,
    },
}
