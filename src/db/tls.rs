//! TLS for every PostgreSQL connection, configured by the connection string as libpq reads
//! it: `sslmode` (disable, prefer, require, verify-ca, verify-full), `sslrootcert`, and a
//! client certificate with `sslcert` and `sslkey`. The same settings serve tokio-postgres
//! (through postgres-openssl) and the hand-spoken replication connection.
//!
//! Guarantees: `require` and stronger never fall back to plain text; `verify-ca` checks the
//! server's certificate against the root certificates, `verify-full` also its host name;
//! `prefer` and `require` encrypt without checking who answers, as libpq does. Nothing here
//! puts the connection string (or its password) into an error.

use std::path::PathBuf;

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;
use tokio_postgres::config::SslMode;

use crate::error::{Error, Result};

/// How a connection uses TLS (libpq's `sslmode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            "disable" => TlsMode::Disable,
            // libpq's `allow` tries plain text first; plain text when the server allows it
            // is what prefer with a server without TLS gives too.
            "allow" | "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => {
                return Err(Error::Config(format!(
                "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            )))
            }
        })
    }

    /// Whether a server without TLS must be refused.
    pub fn required(self) -> bool {
        !matches!(self, TlsMode::Disable | TlsMode::Prefer)
    }
}

/// A parsed connection string: what tokio-postgres understands, plus the TLS settings it
/// does not (verify-ca, verify-full, certificate files).
#[derive(Clone, Debug)]
pub struct Target {
    pub config: tokio_postgres::Config,
    pub mode: TlsMode,
    root_cert: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

/// The TLS parameters taken out of a connection string before tokio-postgres reads it.
const TLS_KEYS: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey"];

impl Target {
    /// Reads a URL (`postgres://...?...`) or a key=value connection string. `what` names the
    /// setting in errors (DATABASE_URL, CDC_DATABASE_URL, ...); the string itself is never
    /// quoted, since it may hold a password.
    pub fn parse(url: &str, what: &str) -> Result<Self> {
        let (rest, tls) = split_tls_params(url);
        let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
            Error::Config(format!("{what} is not a PostgreSQL connection string: {e}"))
        })?;
        let mut target = Target {
            config: tokio_postgres::Config::new(),
            mode: TlsMode::Prefer,
            root_cert: None,
            client_cert: None,
            client_key: None,
        };
        for (key, value) in tls {
            match key.as_str() {
                "sslmode" => target.mode = TlsMode::parse(&value)?,
                "sslrootcert" if value != "system" => target.root_cert = Some(value.into()),
                "sslrootcert" => target.root_cert = None,
                "sslcert" => target.client_cert = Some(value.into()),
                _ => target.client_key = Some(value.into()),
            }
        }
        config.ssl_mode(match target.mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        target.config = config;
        Ok(target)
    }

    /// The OpenSSL side of these settings, built once per process for each distinct set
    /// (building one reads the system's root certificates).
    pub fn connector(&self) -> Result<SslConnector> {
        type Key = (TlsMode, Option<PathBuf>, Option<PathBuf>, Option<PathBuf>);
        static BUILT: std::sync::OnceLock<std::sync::Mutex<Vec<(Key, SslConnector)>>> =
            std::sync::OnceLock::new();
        let key: Key = (
            self.mode,
            self.root_cert.clone(),
            self.client_cert.clone(),
            self.client_key.clone(),
        );
        let built = BUILT.get_or_init(Default::default);
        if let Some((_, c)) = built
            .lock()
            .ok()
            .and_then(|b| b.iter().find(|(k, _)| *k == key).cloned())
        {
            return Ok(c);
        }
        let connector = self.build_connector()?;
        if let Ok(mut b) = built.lock() {
            b.push((key, connector.clone()));
        }
        Ok(connector)
    }

    fn build_connector(&self) -> Result<SslConnector> {
        let tls_error =
            |e: openssl::error::ErrorStack| Error::Config(format!("PostgreSQL TLS settings: {e}"));
        let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(tls_error)?;
        let verify = matches!(self.mode, TlsMode::VerifyCa | TlsMode::VerifyFull);
        builder.set_verify(if verify {
            SslVerifyMode::PEER
        } else {
            SslVerifyMode::NONE
        });
        if let Some(root) = &self.root_cert {
            builder
                .set_ca_file(root)
                .map_err(|e| Error::Config(format!("sslrootcert {}: {e}", root.display())))?;
        }
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                builder
                    .set_certificate_chain_file(cert)
                    .map_err(|e| Error::Config(format!("sslcert {}: {e}", cert.display())))?;
                builder
                    .set_private_key_file(key, SslFiletype::PEM)
                    .map_err(|e| Error::Config(format!("sslkey {}: {e}", key.display())))?;
            }
            (None, None) => {}
            _ => {
                return Err(Error::Config(
                    "sslcert and sslkey go together: set both or neither".into(),
                ))
            }
        }
        Ok(builder.build())
    }

    /// tokio-postgres' TLS connector for these settings.
    pub fn make_tls(&self) -> Result<postgres_openssl::MakeTlsConnector> {
        let mut make = postgres_openssl::MakeTlsConnector::new(self.connector()?);
        let check_host = self.mode == TlsMode::VerifyFull;
        make.set_callback(move |config, _host| {
            config.set_verify_hostname(check_host);
            Ok(())
        });
        Ok(make)
    }

    /// Asks the server on `tcp` for TLS (PostgreSQL's SSLRequest) and, when it agrees, does
    /// the handshake. `Ok(Err(tcp))`: the server declined and the mode allows plain text.
    pub async fn negotiate(
        &self,
        mut tcp: TcpStream,
        host: &str,
    ) -> Result<std::result::Result<SslStream<TcpStream>, TcpStream>> {
        if self.mode == TlsMode::Disable {
            return Ok(Err(tcp));
        }
        let io = |e| Error::io(format!("asking {host} for TLS"), e);
        let mut request = bytes::BytesMut::new();
        postgres_protocol::message::frontend::ssl_request(&mut request);
        tcp.write_all(&request).await.map_err(io)?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.map_err(io)?;
        if answer[0] != b'S' {
            if self.mode.required() {
                return Err(Error::Config(format!(
                    "the PostgreSQL server at {host} does not accept TLS connections \
                     (sslmode={:?} needs it): turn ssl on in the server or lower sslmode",
                    self.mode
                )));
            }
            return Ok(Err(tcp));
        }
        let handshake = |e: String| Error::Config(format!("TLS handshake with {host}: {e}"));
        let ssl = self
            .connector()?
            .configure()
            .map_err(|e| handshake(e.to_string()))?
            .verify_hostname(self.mode == TlsMode::VerifyFull)
            .into_ssl(host)
            .map_err(|e| handshake(e.to_string()))?;
        let mut stream = SslStream::new(ssl, tcp).map_err(|e| handshake(e.to_string()))?;
        std::pin::Pin::new(&mut stream)
            .connect()
            .await
            .map_err(|e| handshake(e.to_string()))?;
        Ok(Ok(stream))
    }
}

/// Splits the TLS parameters tokio-postgres cannot read out of a connection string.
fn split_tls_params(url: &str) -> (String, Vec<(String, String)>) {
    let mut tls = Vec::new();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), tls);
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if TLS_KEYS.contains(&key) {
                tls.push((key.to_owned(), percent_decode(value)));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, tls);
    }
    // key=value form: only unquoted values of these keys are recognised.
    if !TLS_KEYS.iter().any(|k| url.contains(&format!("{k}="))) {
        return (url.to_owned(), tls);
    }
    let mut kept = Vec::new();
    for token in url.split_whitespace() {
        match token.split_once('=') {
            Some((key, value)) if TLS_KEYS.contains(&key) => {
                tls.push((key.to_owned(), value.to_owned()))
            }
            _ => kept.push(token),
        }
    }
    (kept.join(" "), tls)
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_read_from_urls_and_key_value_strings() {
        let t = Target::parse(
            "postgres://u:pw@db.example:5433/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
            "DATABASE_URL",
        )
        .unwrap();
        assert_eq!(t.mode, TlsMode::VerifyFull);
        assert_eq!(t.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(t.config.get_application_name(), Some("x"));
        assert_eq!(t.config.get_password(), Some(&b"pw"[..]));

        let t = Target::parse("host=h user=u sslmode=verify-ca sslrootcert=/ca", "X").unwrap();
        assert_eq!(t.mode, TlsMode::VerifyCa);
        assert_eq!(t.config.get_user(), Some("u"));

        let t = Target::parse("postgres://u@h/db", "X").unwrap();
        assert_eq!(t.mode, TlsMode::Prefer);
        let t = Target::parse("postgres://u@h/db?sslmode=disable", "X").unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Disable);
    }

    #[test]
    fn bad_settings_are_named_without_the_password() {
        let e = Target::parse(
            "postgres://u:hunter2@h/db?sslmode=sometimes",
            "API_DATABASE_URL",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sometimes") && !e.contains("hunter2"), "{e}");
        let e = Target::parse("postgres://u:hunter2@h:notaport/db", "API_DATABASE_URL")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("API_DATABASE_URL") && !e.contains("hunter2"),
            "{e}"
        );
        let t = Target::parse("postgres://u@h/db?sslcert=/c", "X").unwrap();
        assert!(t.connector().is_err());
    }
}
