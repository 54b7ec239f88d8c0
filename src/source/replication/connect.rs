//! Opening a replication session: TCP to the first host that accepts (as libpq), TLS as
//! `sslmode` says, the startup message with `replication=database`, and authentication
//! (trust, password, md5, SCRAM-SHA-256 without channel binding); with
//! `target_session_attrs=read-write`, a standby is passed over for the next host. A refusal
//! names its usual cause.

use std::io;

use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::net::TcpStream;
use tokio_postgres::config::{Host, TargetSessionAttrs};
use tokio_postgres::fallible_iterator::FallibleIterator;
use tokio_util::codec::Framed;

use super::wire::{log_notice, Backend, Codec, ServerError, Socket, Wire};
use super::ReplicationConnection;
use crate::error::{Error, Result};

impl ReplicationConnection {
    /// Connects in replication mode to what `database_url` names and authenticates.
    pub async fn connect(database_url: &str) -> Result<Self> {
        let target = crate::db::target(database_url)?;
        let read_write = target.config.get_target_session_attrs() == TargetSessionAttrs::ReadWrite;
        let mut from = 0;
        loop {
            let (mut conn, index) = Self::connect_from(&target, from).await?;
            // As libpq with target_session_attrs=read-write: a standby listed first (or the
            // old primary's standby after a failover) is passed over for the writable one.
            if read_write && conn.read_only().await? {
                tracing::info!(endpoint = %conn.wire.endpoint, "a read-only server; trying the next host");
                from = index + 1;
                continue;
            }
            return Ok(conn);
        }
    }

    /// A standby (in recovery): what libpq's read-write check refuses. Asked by SQL, which a
    /// `replication=database` session runs; a walsender's own SHOW would not tell.
    async fn read_only(&mut self) -> Result<bool> {
        let rows = self.simple_query("SELECT pg_is_in_recovery()").await?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .cloned()
            .flatten()
            .as_deref()
            == Some("t"))
    }

    /// The session on the first host from the `from`-th on that accepts, and its index.
    async fn connect_from(target: &crate::db::tls::Target, from: usize) -> Result<(Self, usize)> {
        let config = &target.config;
        let user = config
            .get_user()
            .ok_or_else(|| Error::Config("the database URL names no user".into()))?;
        let dbname = config.get_dbname().unwrap_or(user);
        let (stream, address, host, index) = open_tcp(config, from).await?;
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
        Ok((ReplicationConnection { wire }, index))
    }
}

/// (stream, "host:port", host, its index) of the first host from the `from`-th on that
/// accepts.
async fn open_tcp(
    config: &tokio_postgres::Config,
    from: usize,
) -> Result<(TcpStream, String, String, usize)> {
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
    for i in from..count {
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
                return Ok((stream, address, name, i));
            }
            Err(e) => {
                tracing::debug!(%address, error = %e, "replication connection attempt failed");
                last_error = Some(Error::io(format!("replication connection to {address}"), e));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| {
        Error::Config(if from > 0 {
            "no host of the database URL is a writable primary (target_session_attrs=read-write)"
                .into()
        } else {
            "the database URL names no usable host".into()
        })
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

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
