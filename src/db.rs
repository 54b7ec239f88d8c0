//! PostgreSQL access shared by every part: connections, the pool, and the embedded
//! migrations that every part applies at start-up (refinery serialises concurrent runs).

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{Client, NoTls};

use crate::error::{Error, Result};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// One connection, its driver task spawned.
pub async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}

pub fn pool(url: &str, size: usize) -> Result<Pool> {
    let config: tokio_postgres::Config = url.parse().map_err(|e| {
        Error::Config(format!(
            "DATABASE_URL is not a PostgreSQL connection string: {e}"
        ))
    })?;
    let manager = Manager::from_config(
        config,
        NoTls,
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
