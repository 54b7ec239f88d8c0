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

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::{
    DataRowBody, ErrorFields, ErrorResponseBody, Header, Message,
};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_postgres::config::Host;
use tokio_postgres::fallible_iterator::FallibleIterator;
use tokio_util::codec::{Decoder, Encoder, Framed};

use crate::error::{Error, Result};
use crate::lsn::Lsn;

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

impl ReplicationConnection {
    /// Connects in replication mode to what `database_url` names and authenticates.
    pub async fn connect(database_url: &str) -> Result<Self> {
        let target = crate::db::target(database_url)?;
        let config = &target.config;
        let user = config
            .get_user()
            .ok_or_else(|| Error::Config("the database URL names no user".into()))?;
        let dbname = config.get_dbname().unwrap_or(user);
        let (stream, address, host) = open_tcp(config).await?;
        let socket: Box<dyn Socket> = match target.negotiate(stream, &host).await? {
            Ok(tls) => Box::new(tls),
            Err(plain) => Box::new(plain),
        };
        let endpoint = format!("{user}@{address}/{dbname}");
        let mut wire = Wire {
            io: Framed::new(socket, Codec),
            endpoint,
        };

        let mut params = vec![
            ("user", user),
            ("database", dbname),
            ("replication", "database"),
            (
                "application_name",
                config.get_application_name().unwrap_or("reviewflow"),
            ),
        ];
        if let Some(options) = config.get_options() {
            params.push(("options", options));
        }
        wire.send(|b| frontend::startup_message(params, b)).await?;
        authenticate(&mut wire, user, config.get_password()).await?;

        // Session parameters and the cancel key follow; errors here are start-up refusals.
        loop {
            match wire.recv("starting the session").await? {
                Backend::Message(Message::ReadyForQuery(_)) => break,
                Backend::Message(Message::ErrorResponse(body)) => {
                    return Err(startup_error(&wire, user, ServerError::parse(&body)))
                }
                Backend::Message(Message::NoticeResponse(body)) => log_notice(&body),
                Backend::Message(Message::ParameterStatus(_) | Message::BackendKeyData(_)) => {}
                other => return Err(wire.unexpected("starting the session", &other)),
            }
        }
        tracing::debug!(endpoint = %wire.endpoint, "replication connection ready");
        Ok(ReplicationConnection { wire })
    }

    /// Runs `sql` with the simple-query protocol: SQL, or a replication command such as
    /// `IDENTIFY_SYSTEM`. Returns the rows of the last result set, every column as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        self.wire.send(|b| frontend::query(sql, b)).await?;
        let mut rows = Vec::new();
        // The connection stays usable only if we read up to ReadyForQuery, so failures are
        // kept until then.
        let mut failure: Option<String> = None;
        loop {
            let message = match self.wire.recv("running a query").await? {
                Backend::Message(m) => m,
                Backend::CopyBothResponse => {
                    // START_REPLICATION sent here: end the stream so the session stays usable
                    // for queries (PostgreSQL 15 will not stream a second time on it).
                    self.wire
                        .send(|b| {
                            frontend::copy_done(b);
                            Ok(())
                        })
                        .await?;
                    failure.get_or_insert_with(|| "streaming is started with start()".into());
                    continue;
                }
            };
            match message {
                Message::RowDescription(_) => rows.clear(),
                Message::DataRow(body) => match text_row(&body) {
                    Ok(row) => rows.push(row),
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                },
                Message::ErrorResponse(body) => {
                    failure.get_or_insert(ServerError::parse(&body).to_string());
                }
                Message::CopyInResponse(_) => {
                    self.wire
                        .send(|b| frontend::copy_fail("simple_query sends no COPY data", b))
                        .await?;
                    failure.get_or_insert_with(|| "COPY is not supported here".into());
                }
                Message::CopyOutResponse(_) => {
                    failure.get_or_insert_with(|| "COPY is not supported here".into());
                }
                Message::ReadyForQuery(_) => break,
                Message::NoticeResponse(body) => log_notice(&body),
                Message::CommandComplete(_)
                | Message::EmptyQueryResponse
                | Message::ParameterStatus(_)
                | Message::CopyData(_)
                | Message::CopyDone => {}
                other => {
                    return Err(self
                        .wire
                        .unexpected("running a query", &Backend::Message(other)))
                }
            }
        }
        match failure {
            None => Ok(rows),
            Some(e) => Err(Error::Replication(format!("{}: {e}", statement(sql)))),
        }
    }

    /// Streams `slot` from `from` (`Lsn::ZERO`: from the slot's confirmed position), with
    /// the tables of `publication` (an exact name, not case-folded).
    pub async fn start(
        mut self,
        slot: &str,
        from: Lsn,
        publication: &str,
    ) -> Result<ReplicationStream> {
        validate_slot_name(slot)?;
        // publication_names is a comma-separated identifier list inside a literal.
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {from} (proto_version '1', publication_names {})",
            quote_ident(slot),
            quote_literal(&quote_ident(publication))
        );
        self.wire.send(|b| frontend::query(&sql, b)).await?;
        loop {
            match self.wire.recv("starting replication").await? {
                Backend::CopyBothResponse => break,
                Backend::Message(Message::ErrorResponse(body)) => {
                    return Err(Error::Replication(format!(
                        "{}: {}",
                        statement(&sql),
                        ServerError::parse(&body)
                    )))
                }
                Backend::Message(Message::NoticeResponse(body)) => log_notice(&body),
                Backend::Message(Message::ParameterStatus(_)) => {}
                other => return Err(self.wire.unexpected("starting replication", &other)),
            }
        }
        tracing::info!(slot, %from, publication, endpoint = %self.wire.endpoint, "replication started");
        Ok(ReplicationStream {
            wire: self.wire,
            slot: slot.to_owned(),
            ended: false,
        })
    }
}

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

/// The connection under the protocol: TCP, or TLS over it.
trait Socket: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Socket for T {}

/// (stream, "host:port", host) of the first host that accepts.
async fn open_tcp(config: &tokio_postgres::Config) -> Result<(TcpStream, String, String)> {
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    let ports = config.get_ports();
    let count = hosts.len().max(addrs.len());
    if count == 0 {
        return Err(Error::Config(
            "the database URL names no host; the replication client needs a TCP host".into(),
        ));
    }
    let mut last_error = None;
    // Tried in order, like libpq: the first host that accepts wins.
    for i in 0..count {
        let host = match (addrs.get(i), hosts.get(i)) {
            (Some(ip), _) => ip.to_string(),
            (None, Some(Host::Tcp(name))) => name.clone(),
            #[cfg(unix)]
            (None, Some(Host::Unix(path))) => {
                return Err(Error::Config(format!(
                "the database URL names the Unix socket {}; the replication client speaks TCP only",
                path.display()
            )))
            }
            (None, None) => continue,
        };
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let address = format!("{host}:{port}");
        // With hostaddr, the host name is still what a certificate is checked against.
        let name = match hosts.get(i) {
            Some(Host::Tcp(name)) => name.clone(),
            _ => host.clone(),
        };
        let connecting = TcpStream::connect((host.as_str(), port));
        let attempt = match config.get_connect_timeout() {
            Some(limit) => tokio::time::timeout(*limit, connecting)
                .await
                .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))),
            None => connecting.await,
        };
        match attempt {
            Ok(stream) => {
                // Status updates are tiny and latency matters more than packet count.
                stream
                    .set_nodelay(true)
                    .map_err(|e| Error::io(format!("replication connection to {address}"), e))?;
                return Ok((stream, address, name));
            }
            Err(e) => {
                tracing::debug!(%address, error = %e, "replication connection attempt failed");
                last_error = Some(Error::io(format!("replication connection to {address}"), e));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| Error::Config("the database URL names no usable host".into())))
}

async fn authenticate(wire: &mut Wire, user: &str, password: Option<&[u8]>) -> Result<()> {
    let password = || {
        password.ok_or_else(|| {
            Error::Config(format!(
                "the server asks for a password for role {user} and its database URL has none"
            ))
        })
    };
    loop {
        match wire.recv("authenticating").await? {
            Backend::Message(Message::AuthenticationOk) => return Ok(()),
            Backend::Message(Message::AuthenticationCleartextPassword) => {
                let password = password()?;
                wire.send(|b| frontend::password_message(password, b))
                    .await?;
            }
            Backend::Message(Message::AuthenticationMd5Password(body)) => {
                let hash = md5_hash(user.as_bytes(), password()?, body.salt());
                wire.send(|b| frontend::password_message(hash.as_bytes(), b))
                    .await?;
            }
            Backend::Message(Message::AuthenticationSasl(body)) => {
                let mut offered = Vec::new();
                let mut mechanisms = body.mechanisms();
                while let Some(m) = mechanisms.next().map_err(|e| wire.protocol(e))? {
                    offered.push(m.to_owned());
                }
                if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                    return Err(Error::Replication(format!(
                        "authenticating {}: the server offers SASL {offered:?}, \
                         the client supports {SCRAM_SHA_256}",
                        wire.endpoint
                    )));
                }
                scram(wire, password()?).await?;
            }
            Backend::Message(Message::ErrorResponse(body)) => {
                return Err(startup_error(wire, user, ServerError::parse(&body)))
            }
            Backend::Message(Message::NoticeResponse(body)) => log_notice(&body),
            Backend::Message(
                Message::AuthenticationGss
                | Message::AuthenticationSspi
                | Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential,
            ) => {
                return Err(Error::Replication(format!(
                    "authenticating {}: the server asks for GSS, SSPI, Kerberos or SCM \
                     authentication, which the replication client does not support",
                    wire.endpoint
                )))
            }
            other => return Err(wire.unexpected("authenticating", &other)),
        }
    }
}

/// SCRAM-SHA-256 without channel binding.
async fn scram(wire: &mut Wire, password: &[u8]) -> Result<()> {
    let mut scram = ScramSha256::new(password, ChannelBinding::unsupported());
    wire.send(|b| frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), b))
        .await?;
    let challenge = match wire.recv("authenticating (SCRAM)").await? {
        Backend::Message(Message::AuthenticationSaslContinue(body)) => body,
        Backend::Message(Message::ErrorResponse(body)) => {
            return Err(Error::Replication(format!(
                "authenticating {}: {}",
                wire.endpoint,
                ServerError::parse(&body)
            )))
        }
        other => return Err(wire.unexpected("authenticating (SCRAM)", &other)),
    };
    scram
        .update(challenge.data())
        .map_err(|e| wire.protocol(e))?;
    wire.send(|b| frontend::sasl_response(scram.message(), b))
        .await?;
    match wire.recv("authenticating (SCRAM)").await? {
        Backend::Message(Message::AuthenticationSaslFinal(body)) => {
            scram.finish(body.data()).map_err(|e| {
                Error::Replication(format!(
                    "authenticating {}: the server's SCRAM proof is not valid: {e}",
                    wire.endpoint
                ))
            })
        }
        Backend::Message(Message::ErrorResponse(body)) => {
            Err(startup_error(wire, "", ServerError::parse(&body)))
        }
        other => Err(wire.unexpected("authenticating (SCRAM)", &other)),
    }
}

/// Names the usual causes of a refused replication session.
fn startup_error(wire: &Wire, user: &str, e: ServerError) -> Error {
    let cause = match e.code.as_str() {
        "42501" => format!("role {user} lacks REPLICATION (and is not a superuser)"),
        "28P01" | "28000" => "authentication failed".to_owned(),
        "3D000" => "the database does not exist".to_owned(),
        "53300" => "no free connection or walsender slot (max_wal_senders)".to_owned(),
        _ => "the server refused the replication session".to_owned(),
    };
    Error::Replication(format!("connecting to {}: {cause}: {e}", wire.endpoint))
}

fn text_row(body: &DataRowBody) -> std::result::Result<Vec<Option<String>>, String> {
    let buffer = body.buffer();
    let mut ranges = body.ranges();
    let mut row = Vec::new();
    while let Some(range) = ranges
        .next()
        .map_err(|e| format!("malformed DataRow: {e}"))?
    {
        let value = match range {
            None => None,
            Some(range) => {
                let bytes = buffer
                    .get(range)
                    .ok_or_else(|| "malformed DataRow: column out of bounds".to_owned())?;
                let text = std::str::from_utf8(bytes)
                    .map_err(|e| format!("a column value is not UTF-8: {e}"))?;
                Some(text.to_owned())
            }
        };
        row.push(value);
    }
    Ok(row)
}

/// The fields of an ErrorResponse worth reporting.
#[derive(Debug, Default)]
struct ServerError {
    severity: String,
    code: String,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
}

impl ServerError {
    fn parse(body: &ErrorResponseBody) -> Self {
        Self::from_fields(body.fields())
    }

    fn from_fields(mut fields: ErrorFields<'_>) -> Self {
        let mut e = ServerError::default();
        // A malformed field list still yields whatever was readable before it.
        while let Ok(Some(field)) = fields.next() {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => e.severity = value,
                b'S' if e.severity.is_empty() => e.severity = value,
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'H' => e.hint = Some(value),
                _ => {}
            }
        }
        e
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, "; detail: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

fn log_notice(body: &postgres_protocol::message::backend::NoticeResponseBody) {
    let notice = ServerError::from_fields(body.fields());
    tracing::info!(severity = %notice.severity, "postgres: {notice}");
}

/// PostgreSQL's rule for slot names; checked here so a bad name fails before any I/O.
pub(super) fn validate_slot_name(slot: &str) -> Result<()> {
    let valid_chars = slot
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if slot.is_empty() || slot.len() > 63 || !valid_chars {
        return Err(Error::Config(format!(
            "replication slot name {slot:?}: use 1 to 63 lower-case letters, digits and underscores"
        )));
    }
    Ok(())
}

pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The replication grammar's literals know no backslash escapes, only doubled quotes.
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A statement shortened for error messages.
fn statement(sql: &str) -> String {
    match sql.char_indices().nth(120) {
        Some((cut, _)) => format!("{}...", &sql[..cut]),
        None => sql.to_owned(),
    }
}

/// A backend message, plus the CopyBothResponse postgres-protocol does not parse.
enum Backend {
    Message(Message),
    CopyBothResponse,
}

const COPY_BOTH_RESPONSE_TAG: u8 = b'W';

/// Frames the connection: backend messages in, pre-encoded frontend messages out.
struct Codec;

impl Decoder for Codec {
    type Item = Backend;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Backend>> {
        let Some(header) = Header::parse(src)? else {
            return Ok(None);
        };
        if header.tag() == COPY_BOTH_RESPONSE_TAG {
            // Its body (copy format, column formats) carries nothing a replication client uses.
            let total = usize::try_from(header.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative length"))?
                .saturating_add(1);
            if src.len() < total {
                src.reserve(total - src.len());
                return Ok(None);
            }
            src.advance(total);
            return Ok(Some(Backend::CopyBothResponse));
        }
        Ok(Message::parse(src)?.map(Backend::Message))
    }
}

impl Encoder<Bytes> for Codec {
    type Error = io::Error;

    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> io::Result<()> {
        dst.extend_from_slice(&frame);
        Ok(())
    }
}

/// The framed socket and the name it is reported under.
struct Wire {
    io: Framed<Box<dyn Socket>, Codec>,
    endpoint: String,
}

impl Wire {
    async fn send(&mut self, write: impl FnOnce(&mut BytesMut) -> io::Result<()>) -> Result<()> {
        let mut buf = BytesMut::new();
        write(&mut buf).map_err(|e| self.protocol(e))?;
        self.io.send(buf.freeze()).await.map_err(|e| {
            Error::io(
                format!("replication connection {}: sending", self.endpoint),
                e,
            )
        })
    }

    async fn recv(&mut self, doing: &str) -> Result<Backend> {
        match self.io.next().await {
            Some(Ok(message)) => Ok(message),
            Some(Err(e)) => Err(Error::io(
                format!("replication connection {}: {doing}", self.endpoint),
                e,
            )),
            None => Err(Error::Replication(format!(
                "{}: the server closed the connection while {doing}",
                self.endpoint
            ))),
        }
    }

    fn protocol(&self, e: io::Error) -> Error {
        Error::Replication(format!("{}: protocol error: {e}", self.endpoint))
    }

    fn unexpected(&self, doing: &str, got: &Backend) -> Error {
        Error::Replication(format!(
            "{}: unexpected {} from the server while {doing}",
            self.endpoint,
            describe(got)
        ))
    }
}

fn describe(message: &Backend) -> &'static str {
    match message {
        Backend::CopyBothResponse => "CopyBothResponse",
        Backend::Message(m) => match m {
            Message::AuthenticationOk => "AuthenticationOk",
            Message::BackendKeyData(_) => "BackendKeyData",
            Message::CommandComplete(_) => "CommandComplete",
            Message::CopyData(_) => "CopyData",
            Message::CopyDone => "CopyDone",
            Message::CopyInResponse(_) => "CopyInResponse",
            Message::CopyOutResponse(_) => "CopyOutResponse",
            Message::DataRow(_) => "DataRow",
            Message::EmptyQueryResponse => "EmptyQueryResponse",
            Message::ErrorResponse(_) => "ErrorResponse",
            Message::NotificationResponse(_) => "NotificationResponse",
            Message::ReadyForQuery(_) => "ReadyForQuery",
            Message::RowDescription(_) => "RowDescription",
            _ => "message",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn codec_frames_copy_both_response_and_regular_messages() {
        let mut codec = Codec;
        let mut src = BytesMut::new();
        // CopyBothResponse: format 0, no columns; then ReadyForQuery idle.
        src.put_slice(&[b'W', 0, 0, 0, 7, 0, 0, 0]);
        src.put_slice(&[b'Z', 0, 0, 0, 5, b'I']);
        let whole = src.split();
        for cut in 0..whole.len() {
            // A frame cut anywhere must wait for more bytes, never fail or panic.
            let mut part = BytesMut::from(&whole[..cut]);
            while let Some(frame) = codec.decode(&mut part).unwrap() {
                assert!(matches!(
                    frame,
                    Backend::CopyBothResponse | Backend::Message(Message::ReadyForQuery(_))
                ));
            }
        }
        let mut all = whole.clone();
        assert!(matches!(
            codec.decode(&mut all).unwrap(),
            Some(Backend::CopyBothResponse)
        ));
        assert!(matches!(
            codec.decode(&mut all).unwrap(),
            Some(Backend::Message(Message::ReadyForQuery(_)))
        ));
        assert!(codec.decode(&mut all).unwrap().is_none());

        let mut bad = BytesMut::from(&[b'W', 0, 0, 0, 2][..]);
        assert!(codec.decode(&mut bad).is_err());
    }

    #[test]
    fn server_errors_keep_message_and_sqlstate() {
        let mut body = BytesMut::new();
        for (t, v) in [
            (b'S', "FATAL"),
            (b'C', "42501"),
            (b'M', "must be superuser"),
        ] {
            body.put_u8(t);
            body.put_slice(v.as_bytes());
            body.put_u8(0);
        }
        body.put_u8(0);
        let mut frame = BytesMut::new();
        frame.put_u8(b'E');
        frame.put_i32(body.len() as i32 + 4);
        frame.put_slice(&body);
        let Some(Backend::Message(Message::ErrorResponse(e))) = Codec.decode(&mut frame).unwrap()
        else {
            panic!("an ErrorResponse");
        };
        let e = ServerError::parse(&e);
        assert_eq!(e.severity, "FATAL");
        assert_eq!(e.to_string(), "must be superuser (SQLSTATE 42501)");
    }

    #[test]
    fn names_are_quoted_and_checked() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(quote_literal(&quote_ident("it's")), r#"'"it''s"'"#);
        assert!(validate_slot_name("reviewflow_1").is_ok());
        for bad in ["", "Upper", "a-b", "x\"y", &"a".repeat(64)] {
            assert!(validate_slot_name(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn refuses_what_it_cannot_speak_before_any_io() {
        for (url, says) in [
            ("postgres://u@localhost/db?sslmode=sometimes", "sslmode"),
            ("postgres://u@%2Ftmp/db", "Unix socket"),
            ("postgres://localhost/db", "no user"),
            ("not a url = =", "connection string"),
        ] {
            let err = ReplicationConnection::connect(url)
                .await
                .err()
                .expect("refused");
            assert!(err.to_string().contains(says), "{url}: {err}");
        }
    }
}
