//! A review's history: the review as it is now (with the moderator's decision) and every
//! verdict of its versions, newest first, as a page (GET /reviews/{id}/history, linked from
//! the moderation view, with the same decision buttons) and as JSON
//! (GET /reviews/{id}/verdicts). A deleted review keeps its verdicts (review_verdicts is
//! history), so its history is still served, without the review.

use axum::extract::{Path, State};
use axum::response::Html;
use axum::Json;
use serde_json::{json, Value};

use super::moderation::{buttons, moderated, SCRIPT};
use super::page::{document, escape, PageError};
use super::reviews::{to_review, Review, COLUMNS};
use super::stats::course_id;
use super::{ApiError, AppState};

/// The newest versions a history shows; older ones are left out (and said to be).
pub const MAX_VERSIONS: i64 = 200;

struct History {
    review: Option<Review>,
    moderation: Option<String>,
    verdicts: Vec<Value>,
}

async fn history(state: &AppState, id: i64) -> Result<History, ApiError> {
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS}, moderation FROM reviews WHERE id = $1"),
            &[&id],
        )
        .await?;
    let verdicts = client
        .query(
            "SELECT version::text, position, verdict, score, reasons, model, course_id,
                    to_json(judged_at)
             FROM review_verdicts WHERE review_id = $1
             ORDER BY version DESC, position DESC LIMIT $2",
            &[&id, &MAX_VERSIONS],
        )
        .await?;
    if row.is_none() && verdicts.is_empty() {
        return Err(ApiError::not_found(format!("no review {id}")));
    }
    Ok(History {
        moderation: row
            .as_ref()
            .and_then(|r| r.try_get::<_, Option<String>>(COLUMN_COUNT).ok().flatten()),
        review: row.as_ref().map(to_review),
        verdicts: verdicts
            .iter()
            .map(|v| {
                json!({
                    "version": v.get::<_, String>(0),
                    "position": v.get::<_, i64>(1),
                    "verdict": v.get::<_, String>(2),
                    "score": v.get::<_, f64>(3),
                    "reasons": v.get::<_, Vec<String>>(4),
                    "model": v.get::<_, String>(5),
                    "course_id": v.get::<_, Option<i64>>(6),
                    "judged_at": v.get::<_, Value>(7),
                })
            })
            .collect(),
    })
}

/// The columns of [`COLUMNS`]: `moderation` is selected after them.
const COLUMN_COUNT: usize = 10;

pub async fn verdicts(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = course_id(&id)?;
    let h = history(&state, id).await?;
    Ok(Json(json!({
        "review_id": id,
        "review": h.review,
        "moderation": h.moderation,
        "verdicts": h.verdicts,
    })))
}

pub async fn page(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Html<String>, PageError> {
    let id = course_id(&id)?;
    let h = history(&state, id).await?;
    let text = |v: &Option<String>| escape(v.as_deref().unwrap_or("(none)"));
    let review = match &h.review {
        None => "<p>The review was deleted; its verdicts are kept.</p>\n".to_string(),
        Some(r) => {
            let course = r.course_id.map_or("none".into(), |c| c.to_string());
            format!(
                "<p><a href=\"/moderation\">Moderation</a></p>\n\
                 <dl>\n<dt>Course</dt><dd>{course}</dd>\n<dt>User</dt><dd>{user}</dd>\n\
                 <dt>Rating</dt><dd>{rating}</dd>\n<dt>Title</dt><dd>{title}</dd>\n\
                 <dt>Content</dt><dd>{content}</dd>\n<dt>Written</dt><dd>{created}</dd>\n\
                 <dt>Edited</dt><dd>{updated}</dd>\n</dl>\n{moderated}{buttons}",
                user = r.user_id.map_or("none".into(), |u| u.to_string()),
                rating = r.rating.map_or("none".into(), |s| format!("{s:.1}")),
                title = text(&r.title),
                content = text(&r.content),
                created = text(&r.created_at),
                updated = text(&r.updated_at),
                moderated = moderated(h.moderation.as_deref()),
                buttons = buttons(id),
            )
        }
    };
    let mut versions = String::new();
    for v in &h.verdicts {
        let reasons: Vec<&str> = v["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        versions.push_str(&format!(
            "<li><strong class=\"verdict\">{verdict}</strong> at version {version} \
             (position {position}), score {score:.2}, model {model}<br>\n\
             Reasons: <span class=\"reasons\">{reasons}</span><br>\nJudged {judged}</li>\n",
            verdict = escape(v["verdict"].as_str().unwrap_or_default()),
            version = escape(v["version"].as_str().unwrap_or_default()),
            position = v["position"],
            score = v["score"].as_f64().unwrap_or_default(),
            model = escape(v["model"].as_str().unwrap_or_default()),
            reasons = escape(&if reasons.is_empty() {
                "none".to_string()
            } else {
                reasons.join(", ")
            }),
            judged = escape(v["judged_at"].as_str().unwrap_or_default()),
        ));
    }
    let versions = if versions.is_empty() {
        "<p>No version judged yet.</p>".to_string()
    } else {
        let older = if h.verdicts.len() as i64 == MAX_VERSIONS {
            format!("<p>The newest {MAX_VERSIONS} versions are shown.</p>\n")
        } else {
            String::new()
        };
        format!("<ol id=\"versions\">\n{versions}</ol>\n{older}")
    };
    let title = format!("Review {id}");
    let body = format!(
        "<div style=\"overflow-wrap:anywhere\">\n<h1>{title}</h1>\n{review}\
         <h2>Verdicts, newest first</h2>\n{versions}</div>"
    );
    Ok(Html(document(&title, &body, SCRIPT)))
}
