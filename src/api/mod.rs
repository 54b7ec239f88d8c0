//! The HTTP face of the pipeline, at the top of the flow: POST /reviews writes to the
//! `reviews` table (the source), and the read endpoints serve what the sinks wrote.
//! A write either stores the whole row and answers 201, or stores nothing and answers 4xx
//! with the offending field named.

mod error;
mod reviews;
mod stats;

use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;

use crate::error::{Error, Result};

/// Requests larger than this get 413 before any parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
}

/// The API, and the schema registry's REST subset at the root (/subjects, /schemas, ...), so
/// any Confluent-compatible client can read the topics with SCHEMA_REGISTRY_URL set to this server.
pub fn router(state: AppState) -> Router {
    let registry = crate::registry::LocalRegistry::new(state.pool.clone());
    Router::new()
        .route("/reviews", post(reviews::create))
        .route("/reviews/{id}", get(reviews::read))
        .route("/courses/{id}/stats", get(stats::course_stats))
        .route("/healthz", get(stats::healthz))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
        .merge(crate::registry::router(registry))
}

/// Serves until `shutdown` is cancelled, then finishes the requests in flight.
pub async fn serve(listen: SocketAddr, state: AppState, shutdown: CancellationToken) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Error::io(
            format!("listen on {listen} (choose another with --listen or API_LISTEN)"),
            e,
        )
    })?;
    tracing::info!(address = %listener.local_addr().map_err(|e| Error::io("local address", e))?, "api listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|e| Error::io("serve http", e))
}
