//! PostgreSQL access shared by every part: connections (TLS as the connection string's
//! `sslmode` says, see `tls`), the pool, the least-privilege roles (`roles`), and the
//! embedded migrations that the owner applies at start-up (refinery serialises concurrent
//! runs).

mod quote;
pub mod roles;
pub mod tls;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::Client;

use crate::error::{Error, Result};

pub use quote::{quote_ident, quote_literal, readable_ident};

/// How connection-string errors name the setting: the string itself may hold a password.
const WHAT: &str = "the database URL (DATABASE_URL or a stage's own *_DATABASE_URL)";

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Session settings under which PostgreSQL prints column values the way the pipeline reads
/// them. Every connection starts with them (`target`), and the replication session, the
/// snapshot and `verify` also set them explicitly, so
/// neither the server's defaults nor a role's `ALTER ROLE ... SET` can change a value's text
/// (and with it its Avro value or its digest), or end a long session.
pub const TEXT_OUTPUT_SETTINGS: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "iso_8601"),
    ("bytea_output", "hex"),
    ("extra_float_digits", "3"),
    ("lc_monetary", "C"),
    ("statement_timeout", "0"),
    ("lock_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
    ("idle_session_timeout", "0"),
];

/// `TEXT_OUTPUT_SETTINGS` as SQL; `local` scopes them to the current transaction.
pub fn text_output_sql(local: bool) -> String {
    TEXT_OUTPUT_SETTINGS
        .iter()
        .map(|(name, value)| {
            format!(
                "SET {}{name} = '{value}';",
                if local { "LOCAL " } else { "" }
            )
        })
        .collect()
}

/// A connection string read, with its TLS settings (errors never quote it), and
/// `TEXT_OUTPUT_SETTINGS` as startup options after any of its own: every session of the
/// pipeline (the sinks', the api's, the snapshot's, verify's, the replication session's) starts
/// with them, so neither the server's defaults nor an `ALTER ROLE ... SET` (a 1 ms
/// statement_timeout, escape bytea_output) can fail its statements or change a value's text.
/// Startup options rank above role and database settings.
pub fn target(url: &str) -> Result<tls::Target> {
    let mut target = tls::Target::parse(url, WHAT)?;
    let ours = TEXT_OUTPUT_SETTINGS
        .iter()
        .map(|(name, value)| format!("-c {name}={value}"))
        .collect::<Vec<_>>()
        .join(" ");
    let options = match target.config.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
        _ => ours,
    };
    target.config.options(&options);
    Ok(target)
}

/// One connection, its driver task spawned.
pub async fn connect(url: &str) -> Result<Client> {
    let target = target(url)?;
    let (client, connection) = target.config.connect(target.make_tls()?).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}

pub fn pool(url: &str, size: usize) -> Result<Pool> {
    let target = target(url)?;
    let manager = Manager::from_config(
        target.config.clone(),
        target.make_tls()?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .build()
        .map_err(|e| Error::Config(format!("postgres pool: {e}")))
}

/// Applies every migration not yet applied; returns the names of those it applied.
pub async fn migrate(url: &str) -> Result<Vec<String>> {
    let mut client = connect(url).await?;
    // refinery takes no lock of its own; two parts starting together must not both migrate.
    client
        .batch_execute("SELECT pg_advisory_lock(7271100)")
        .await?;
    let report = embedded::migrations::runner().run_async(&mut client).await;
    client
        .batch_execute("SELECT pg_advisory_unlock(7271100)")
        .await?;
    let applied = report?
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect();
    Ok(applied)
}

/// For a stage that connects with its own role and not as the owner, which may not migrate:
/// waits until the owner has brought the schema to what this build expects (a stage started
/// beside `reviewflow migrate`, or before it, must not fail on that), saying what it waits for.
/// A schema it cannot read for another reason than not being there yet is an error.
pub async fn wait_until_migrated(
    url: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<()> {
    let expected = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0);
    let client = connect(url).await?;
    let mut said = None::<std::time::Instant>;
    loop {
        let applied = match client
            .query_one("SELECT max(version) FROM refinery_schema_history", &[])
            .await
        {
            Ok(row) => row.get::<_, Option<i32>>(0).unwrap_or(0),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => 0,
            Err(e) => {
                return Err(Error::Config(format!(
                    "cannot read the schema version ({e}): run `reviewflow migrate` with the \
                     owner's DATABASE_URL first"
                )))
            }
        };
        if i64::from(applied) >= i64::from(expected) {
            return Ok(());
        }
        if said.is_none_or(|at| at.elapsed() > std::time::Duration::from_secs(30)) {
            tracing::info!(
                applied = format!("V{applied}"),
                needed = format!("V{expected}"),
                "waiting for the database schema: run `reviewflow migrate` with the owner's \
                 DATABASE_URL (a stage given only its own role's URL does not migrate)"
            );
            said = Some(std::time::Instant::now());
        }
        if !crate::retry::sleep(std::time::Duration::from_secs(1), shutdown).await {
            return Err(Error::Config(format!(
                "stopped while waiting for the database schema to reach migration V{expected} \
                 (it is at V{applied})"
            )));
        }
    }
}
