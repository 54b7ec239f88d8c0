//! JSON errors: `{"error": "...", "field": "..."}`, the field named whenever one is at fault.
//! A database that is away for a moment (restarting, or a primary failover under way: the
//! old primary gone, the new one not yet found or still promoting) is a 503 with
//! `Retry-After`, never a 500: the client's request was fine and will succeed when retried.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn field(field: &str, error: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: error.into(),
            field: Some(field.to_string()),
        }
    }

    pub fn bad_request(error: impl Into<String>, field: Option<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: error.into(),
            field,
        }
    }

    pub fn not_found(error: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: error.into(),
            field: None,
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

/// Whether `e` says the database is away for a moment rather than that the request failed:
/// no connection (the pool's, or one that closed under it), a server shutting down or starting
/// up (SQLSTATE 57P01-57P03), a connection failure (class 08), or a server in recovery that
/// refuses writes (25006: a standby that the URL's hosts reached before the new primary was
/// promoted).
pub fn database_away(e: &crate::Error) -> bool {
    match e {
        crate::Error::Pool(_) => true,
        crate::Error::Postgres(pg) => {
            pg.is_closed()
                || std::error::Error::source(pg).is_some_and(|s| s.is::<std::io::Error>())
                || pg.code().is_some_and(|c| {
                    let code = c.code();
                    code.starts_with("08") || code.starts_with("57P") || code == "25006"
                })
        }
        _ => false,
    }
}

/// Database trouble is the server's fault: log the detail, tell the client only that.
impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        let status = if database_away(&e) {
            tracing::warn!(error = %e, "the database is away; answering 503");
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            tracing::error!(error = %e, "request failed");
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError {
            status,
            error: "the database could not complete the request; try again".into(),
            field: None,
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        crate::Error::from(e).into()
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        crate::Error::from(e).into()
    }
}

/// Seconds a client should wait before retrying a 503: about what a restart or a promotion
/// takes.
const RETRY_AFTER_SECS: &str = "2";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(&self)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}
