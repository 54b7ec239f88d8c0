//! The HTTP face of the pipeline, at the top of the flow: POST /reviews writes to the
//! `reviews` table (the source), and the read endpoints serve what the sinks wrote.
//! A write either stores the whole row and answers 201, or stores nothing and answers 4xx
//! with the offending field named. GET /openapi.json describes all of it (tests/openapi.rs
//! checks the description against the running router).

mod args;
mod auth;
mod cache;
mod error;
mod events;
mod history;
mod moderation;
mod page;
pub mod pipeline;
mod reviews;
mod stats;

use std::net::SocketAddr;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

pub use args::ApiArgs;
pub use auth::ApiToken;
pub use cache::Cors;
pub use error::ApiError;
pub use events::CourseEvents;

use crate::config::KafkaSettings;
use crate::error::{Error, Result};

/// Requests larger than this get 413 before any parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The OpenAPI 3.1 document of our API (not of the registry's), served at GET /openapi.json.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Our routes as (method, path), the schema registry's excluded. The router is built from
/// this list, and tests/openapi.rs checks it against [`OPENAPI`] both ways.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/reviews"),
    ("GET", "/reviews/{id}"),
    ("GET", "/courses/{id}/stats"),
    ("GET", "/healthz"),
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/courses/{id}/events"),
    ("GET", "/courses/{id}"),
    ("GET", "/courses"),
    ("GET", "/moderation"),
    ("GET", "/reviews/{id}/history"),
    ("GET", "/reviews/{id}/verdicts"),
    ("POST", "/reviews/{id}/moderation"),
    ("GET", "/pipeline"),
    ("GET", "/pipeline.json"),
];

/// The moderation view's paths (among [`ROUTES`]): it shows spam, so with a token configured
/// every request to them needs it, reads included (`auth::require_moderator`).
pub const MODERATION_ROUTES: &[&str] = &[
    "/moderation",
    "/reviews/{id}/history",
    "/reviews/{id}/verdicts",
    "/reviews/{id}/moderation",
];

fn handler(method: &str, path: &str) -> MethodRouter<AppState> {
    match (method, path) {
        ("POST", "/reviews") => post(reviews::create),
        ("GET", "/reviews/{id}") => get(reviews::read),
        ("GET", "/courses/{id}/stats") => get(stats::course_stats),
        ("GET", "/healthz") => get(stats::healthz),
        ("GET", "/openapi.json") => get(openapi),
        ("GET", "/metrics") => get(metrics),
        ("GET", "/courses/{id}/events") => get(events::course_events),
        ("GET", "/courses/{id}") => get(page::course),
        ("GET", "/courses") => get(page::index),
        ("GET", "/moderation") => get(moderation::flagged),
        ("GET", "/reviews/{id}/history") => get(history::page),
        ("GET", "/reviews/{id}/verdicts") => get(history::verdicts),
        ("POST", "/reviews/{id}/moderation") => post(moderation::decide),
        ("GET", "/pipeline") => get(pipeline::html),
        ("GET", "/pipeline.json") => get(pipeline::json),
        _ => unreachable!("ROUTES lists {method} {path}, which has no handler"),
    }
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Every stage running in this process, and the replication slots' lag read now.
async fn metrics(State(state): State<AppState>) -> Response {
    crate::metrics::scrape(Some(&state.pool)).await
}

#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    /// The `course_stats` listener behind GET /courses/{id}/events.
    pub events: CourseEvents,
    /// Which other origins' pages may read the API.
    pub cors: Cors,
    /// What GET /pipeline watches; nothing until [`AppState::watching`] names it.
    pub pipeline: pipeline::Watch,
}

impl AppState {
    /// `pool` and the listener both on the database at `database_url`.
    pub fn new(pool: Pool, database_url: &str) -> Self {
        AppState {
            pool,
            events: CourseEvents::new(database_url),
            cors: Cors::None,
            pipeline: pipeline::Watch::default(),
        }
    }

    /// The pipeline GET /pipeline shows: its slot and topics, through `kafka`.
    pub fn watching(self, place: crate::tools::status::Place, kafka: KafkaSettings) -> Self {
        AppState {
            pipeline: pipeline::Watch::new(place, kafka),
            ..self
        }
    }

    /// The same, readable from the pages of the `origins` (see [`Cors::from_origins`]).
    pub fn with_cors(mut self, origins: &[String]) -> Self {
        self.cors = Cors::from_origins(origins);
        self
    }
}

/// The API with writes open to anyone: [`router_with_token`] with no token.
pub fn router(state: AppState) -> Router {
    router_with_token(state, None)
}

/// The API, and the schema registry's REST subset at the root (/subjects, /schemas, ...), so
/// any Confluent-compatible client can read the topics with SCHEMA_REGISTRY_URL set to this
/// server. With a token, every write (any method but GET, HEAD, OPTIONS) of either needs
/// `Authorization: Bearer <token>`; reads stay open, but for the moderation view's
/// ([`MODERATION_ROUTES`]), which take the token as Bearer or Basic for every method.
pub fn router_with_token(state: AppState, token: Option<ApiToken>) -> Router {
    let registry = crate::registry::LocalRegistry::new(state.pool.clone());
    let cors = state.cors.layer();
    let mut ours = Router::new();
    for (method, path) in ROUTES {
        let mut route = handler(method, path);
        if let (Some(token), true) = (&token, MODERATION_ROUTES.contains(path)) {
            route = route.layer(middleware::from_fn_with_state(
                auth::Guard {
                    token: token.clone(),
                    dialect: auth::Dialect::Api,
                },
                auth::require_moderator,
            ));
        }
        ours = ours.route(path, route);
    }
    let mut ours = ours
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    let mut registry = crate::registry::router(registry);
    if let Some(token) = token {
        // Outermost, so a refused write is answered before its body is read.
        let guard = |dialect| auth::Guard {
            token: token.clone(),
            dialect,
        };
        ours = ours.layer(middleware::from_fn_with_state(
            guard(auth::Dialect::Api),
            auth::require_token,
        ));
        registry = registry.layer(middleware::from_fn_with_state(
            guard(auth::Dialect::Registry),
            auth::require_token,
        ));
    }
    // Outside the token's guard, so a preflight (OPTIONS, never a write) is answered by it.
    if let Some(cors) = cors {
        ours = ours.layer(cors);
    }
    ours.merge(registry)
}

/// Serves until `shutdown` is cancelled, then finishes the requests in flight.
pub async fn serve(
    listen: SocketAddr,
    state: AppState,
    token: Option<ApiToken>,
    shutdown: CancellationToken,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Error::io(
            format!("listen on {listen} (choose another with --listen or API_LISTEN)"),
            e,
        )
    })?;
    let writes = if token.is_some() {
        "need the bearer token"
    } else {
        "open (no API_TOKEN)"
    };
    tracing::info!(address = %listener.local_addr().map_err(|e| Error::io("local address", e))?, writes, "api listening");
    if token.is_none() && !listen.ip().is_loopback() {
        tracing::warn!(%listen, "anyone who reaches this address can write reviews and schemas: set API_TOKEN");
    }
    // Event streams never end by themselves: they end with the server.
    let events = state.events.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        events.stop();
    });
    axum::serve(listener, router_with_token(state, token))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|e| Error::io("serve http", e))
}
