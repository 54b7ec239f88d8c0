//! Announces a stats transaction's changes to the api's listeners, in the transaction itself,
//! so that PostgreSQL delivers them only if it commits. The payload is the contract's
//! (`contract::notify`).

use tokio_postgres::types::Type;
use tokio_postgres::Transaction;

use crate::contract::notify::{payloads, Touched, CHANNEL};
use crate::error::Result;

/// Queues the notifications for `touched` in `tx`; they are sent when it commits.
pub async fn notify(tx: &Transaction<'_>, touched: &Touched) -> Result<()> {
    let payloads = payloads(touched);
    if payloads.is_empty() {
        return Ok(());
    }
    // Typed, not prepared: one round trip, and it can share a pipeline with the figures.
    tx.query_typed(
        "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
        &[(&CHANNEL, Type::TEXT), (&payloads, Type::TEXT_ARRAY)],
    )
    .await?;
    Ok(())
}
