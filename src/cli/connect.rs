//! How every part starts: the connections resolved (the local stack started for whatever
//! is not configured), the migrations applied, and the Kafka credentials checked.

use crate::config::{DbRole, Deployment, LocalStack};
use crate::db;
use crate::error::Result;

use super::Context;

/// The configured connections; when PostgreSQL or Kafka is not configured, the local stack
/// is started (when it is not up) and provides it.
pub(super) async fn resolve(cx: &Context) -> Result<Deployment> {
    let local = if cx.connections.needs_local_stack() {
        tracing::info!(home = %cx.stack.home().display(), "using the local stack");
        let up = crate::stack::up(&cx.stack).await?;
        Some(LocalStack {
            database_url: up.database_url,
            kafka_bootstrap_servers: up.kafka_bootstrap_servers,
        })
    } else {
        None
    };
    cx.connections.resolve(local.as_ref())
}

/// Every part starts by resolving its connections and applying the migrations (as the
/// owner; a part given only its own role's URL waits until they are applied instead), and,
/// on a secured Kafka, by checking its credentials. `role` is as whom the part connects.
pub(super) async fn prepare(cx: &Context, role: DbRole) -> Result<Deployment> {
    let deployment = resolve(cx).await?;
    let mine = deployment.url(role)?;
    match &deployment.urls.owner {
        Some(owner) => {
            let applied = db::migrate(owner).await?;
            if !applied.is_empty() {
                tracing::info!(?applied, "migrations applied");
            }
        }
        None => db::wait_until_migrated(mine, &cx.shutdown).await?,
    }
    crate::kafka::check_access(&deployment.kafka).await?;
    Ok(deployment)
}
