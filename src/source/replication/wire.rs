//! The protocol under every part of the session: framing (postgres-protocol's backend
//! messages plus the CopyBothResponse it does not parse), sending pre-encoded frontend
//! messages, and the server's errors and notices as text worth reporting. Malformed input is
//! an `Error`, never a panic.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use postgres_protocol::message::backend::{ErrorFields, ErrorResponseBody, Header, Message};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::fallible_iterator::FallibleIterator;
use tokio_util::codec::{Decoder, Encoder, Framed};

use crate::error::{Error, Result};

/// The fields of an ErrorResponse worth reporting.
#[derive(Debug, Default)]
pub(super) struct ServerError {
    pub(super) severity: String,
    pub(super) code: String,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
}

impl ServerError {
    pub(super) fn parse(body: &ErrorResponseBody) -> Self {
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

pub(super) fn log_notice(body: &postgres_protocol::message::backend::NoticeResponseBody) {
    let notice = ServerError::from_fields(body.fields());
    tracing::info!(severity = %notice.severity, "postgres: {notice}");
}

/// A backend message, plus the CopyBothResponse postgres-protocol does not parse.
pub(super) enum Backend {
    Message(Message),
    CopyBothResponse,
}

const COPY_BOTH_RESPONSE_TAG: u8 = b'W';

/// Frames the connection: backend messages in, pre-encoded frontend messages out.
pub(super) struct Codec;

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

/// The connection under the protocol: TCP, or TLS over it.
pub(super) trait Socket: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Socket for T {}

/// The framed socket and the name it is reported under.
pub(super) struct Wire {
    pub(super) io: Framed<Box<dyn Socket>, Codec>,
    pub(super) endpoint: String,
}

impl Wire {
    pub(super) async fn send(
        &mut self,
        write: impl FnOnce(&mut BytesMut) -> io::Result<()>,
    ) -> Result<()> {
        let mut buf = BytesMut::new();
        write(&mut buf).map_err(|e| self.protocol(e))?;
        self.io.send(buf.freeze()).await.map_err(|e| {
            Error::io(
                format!("replication connection {}: sending", self.endpoint),
                e,
            )
        })
    }

    pub(super) async fn recv(&mut self, doing: &str) -> Result<Backend> {
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

    pub(super) fn protocol(&self, e: io::Error) -> Error {
        Error::Replication(format!("{}: protocol error: {e}", self.endpoint))
    }

    pub(super) fn unexpected(&self, doing: &str, got: &Backend) -> Error {
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
    use bytes::BufMut;

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
}
