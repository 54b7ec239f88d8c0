//! GET /courses/{id}/stats (what the stats sink wrote) and GET /healthz.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};

/// The course_stats row as JSON; its columns are the contract of DESIGN.md.
pub async fn course_stats(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("id must be an integer", Some("id".into())))?;
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT to_jsonb(s) FROM course_stats s WHERE course_id = $1",
            &[&id],
        )
        .await?;
    row.map(|r| Json(r.get(0)))
        .ok_or_else(|| ApiError::not_found(format!("no statistics for course {id} yet")))
}

pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let check = async {
        let client = state.pool.get().await?;
        client.query_one("SELECT 1", &[]).await?;
        Ok::<_, ApiError>(())
    };
    match check.await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ok", "database": "ok"})),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "database": e.error})),
        ),
    }
}
