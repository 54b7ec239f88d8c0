//! GET /courses/{id}/stats (what the stats sink wrote, and the course's name) and GET /healthz.
//! The event stream and the course page read the same row through [`read_stats`].

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};

use super::{cache, ApiError, AppState};

/// The course_stats row as JSON; its columns are the contract of DESIGN.md. Cached briefly
/// (see [`cache::FIGURES`]), so a website may call it on every page view.
pub async fn course_stats(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    let id = course_id(&id)?;
    let row = read_stats(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no statistics for course {id} yet")))?;
    Ok(cache::cached(
        &request,
        "application/json",
        cache::FIGURES,
        row.to_string(),
    ))
}

/// The path's course id.
pub fn course_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_request("id must be an integer", Some("id".into())))
}

/// The course's course_stats row as JSON (the body of GET /courses/{id}/stats), with its
/// `title` and `url` from reviewflow_catalog.courses (null when it has none there), if it has
/// a row.
pub async fn read_stats(
    pool: &deadpool_postgres::Pool,
    id: i64,
) -> Result<Option<Value>, ApiError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            // The name is not a figure: a course without a row in courses has null ones.
            "SELECT to_jsonb(s) || jsonb_build_object('title', c.title, 'url', c.url)
             FROM course_stats s LEFT JOIN reviewflow_catalog.courses c ON c.id = s.course_id
             WHERE s.course_id = $1",
            &[&id],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// 200 while the database answers, 503 when it does not. In `run`, each supervised stage
/// is named with its state; any not running makes the status "degraded", still with 200:
/// the API serves writes (they wait in the slot), so a load balancer must keep sending them
/// and an orchestrator must not restart the process, which would take the API down too.
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let check = async {
        let client = state.pool.get().await?;
        client.query_one("SELECT 1", &[]).await?;
        Ok::<_, ApiError>(())
    };
    let stages = crate::health::stages();
    let degraded = stages.values().any(|s| !s.is_running());
    let (code, mut body) = match check.await {
        Ok(()) if degraded => (
            StatusCode::OK,
            json!({"status": "degraded", "database": "ok"}),
        ),
        Ok(()) => (StatusCode::OK, json!({"status": "ok", "database": "ok"})),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable", "database": e.error}),
        ),
    };
    // A process that runs no stage (`reviewflow api`) keeps the two-field answer.
    if !stages.is_empty() {
        body["stages"] = json!(stages);
    }
    (code, Json(body))
}
