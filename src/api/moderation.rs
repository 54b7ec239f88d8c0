//! GET /moderation: the reviews whose current verdict is fraud, newest first, for a moderator
//! to decide; and POST /reviews/{id}/moderation, the decision. The decision is stored in
//! `reviews.moderation`, never in a verdict: the models honour the column
//! (`score::judge`), so the overturn flows through cdc, the fraud worker and the sinks like
//! any edit and the verdict stays a pure function of the row. Both are behind the token when
//! one is configured (`auth::require_moderator`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Html;
use axum::Json;
use serde_json::{json, Value};

use super::page::{document, escape, PageError};
use super::reviews::{refusal, require_json};
use super::stats::course_id;
use super::{ApiError, AppState};
use crate::contract::review::Decision;

/// Flagged reviews per page of GET /moderation.
pub const PAGE_SIZE: i64 = 50;
/// Pages beyond this are refused (the offset would make the database walk the whole index).
pub const MAX_PAGE: i64 = 1000;
/// Characters of a review's text the list shows; its history shows all of it.
const EXCERPT_CHARS: usize = 280;

/// The list's filters, from the query string.
#[derive(Debug, PartialEq)]
struct Filters {
    course: Option<i64>,
    reason: Option<String>,
    page: i64,
}

/// `course` and `reason` empty mean no filter (what the filter form sends when left blank);
/// `page` is 1 to [`MAX_PAGE`]. Other parameters are ignored.
fn filters(query: &HashMap<String, String>) -> Result<Filters, ApiError> {
    // Plain digits only, as the document's patterns say: no sign, space or `+` that a
    // looser parse would let through.
    let digits =
        |s: &str, max: usize| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let course = match query.get("course").map(String::as_str) {
        None | Some("") => None,
        Some(c) if digits(c.strip_prefix('-').unwrap_or(c), 18) => c.parse::<i64>().ok(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "course must be a course id (an integer of at most 18 digits)",
                Some("course".into()),
            ))
        }
    };
    let reason = query.get("reason").filter(|r| !r.is_empty()).cloned();
    // PostgreSQL's text cannot hold a NUL: the query would fail, a 500 for the caller's typo.
    if reason.as_deref().is_some_and(|r| r.contains('\0')) {
        return Err(ApiError::bad_request(
            "reason must not contain a NUL character (no verdict reason has one)",
            Some("reason".into()),
        ));
    }
    let page = match query.get("page") {
        None => 1,
        Some(p) => Some(p)
            .filter(|p| digits(p, 4))
            .and_then(|p| p.parse::<i64>().ok())
            .filter(|p| (1..=MAX_PAGE).contains(p))
            .ok_or_else(|| {
                ApiError::bad_request(
                    format!("page must be an integer from 1 to {MAX_PAGE}"),
                    Some("page".into()),
                )
            })?,
    };
    Ok(Filters {
        course,
        reason,
        page,
    })
}

/// A review's newest verdict is fraud and the review still exists: walked newest first on
/// the partial index of migration V11.
const FLAGGED_SQL: &str = "
    SELECT v.review_id, v.course_id, v.version::text, v.score, v.reasons, v.model,
           r.title, r.content, r.rating::text, r.moderation
    FROM review_verdicts v JOIN reviews r ON r.id = v.review_id
    WHERE v.verdict = 'fraud'
      AND NOT EXISTS (SELECT FROM review_verdicts n WHERE n.review_id = v.review_id
                      AND (n.version, n.position) > (v.version, v.position))
      AND ($1::bigint IS NULL OR v.course_id = $1)
      AND ($2::text IS NULL OR $2 = ANY (v.reasons))
    ORDER BY v.version DESC, v.position DESC
    LIMIT $3 OFFSET $4";

pub async fn flagged(
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Html<String>, PageError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text(), None))?;
    let f = filters(&query)?;
    let client = state.pool.get().await.map_err(ApiError::from)?;
    // One row more than a page says whether there is a next one.
    let rows = client
        .query(
            FLAGGED_SQL,
            &[
                &f.course,
                &f.reason,
                &(PAGE_SIZE + 1),
                &((f.page - 1) * PAGE_SIZE),
            ],
        )
        .await
        .map_err(ApiError::from)?;
    let more = rows.len() as i64 > PAGE_SIZE;
    let mut items = String::new();
    for row in rows.iter().take(PAGE_SIZE as usize) {
        let id: i64 = row.get(0);
        let course = row
            .get::<_, Option<i64>>(1)
            .map_or("none".to_string(), |c| c.to_string());
        let score: f64 = row.get(3);
        let reasons: Vec<String> = row.get(4);
        let text = [row.get::<_, Option<String>>(6), row.get(7)]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" — ");
        let mut excerpt: String = text.chars().take(EXCERPT_CHARS).collect();
        if excerpt.len() < text.len() {
            excerpt.push('…');
        }
        let rating = row.get::<_, Option<String>>(8).unwrap_or("none".into());
        items.push_str(&format!(
            "<li id=\"review-{id}\">\n<h2><a href=\"/reviews/{id}/history\">Review {id}</a>, \
             course {course}</h2>\n<p>Score {score:.2} · model {model} · version {version} · \
             rating {rating}</p>\n<p>Reasons: <span class=\"reasons\">{reasons}</span></p>\n\
             <p class=\"text\">{excerpt}</p>\n{moderated}{buttons}</li>\n",
            model = escape(row.get(5)),
            version = escape(row.get(2)),
            rating = escape(&rating),
            reasons = escape(&reasons.join(", ")),
            excerpt = escape(&excerpt),
            moderated = moderated(row.get(9)),
            buttons = buttons(id),
        ));
    }
    let shown = if items.is_empty() {
        "<p>No review is flagged with these filters.</p>".to_string()
    } else {
        format!("<ul class=\"flagged\">\n{items}</ul>")
    };
    let link = |page: i64, label: &str| {
        let mut q = vec![format!("page={page}")];
        if let Some(c) = f.course {
            q.push(format!("course={c}"));
        }
        if let Some(r) = &f.reason {
            q.push(format!("reason={}", percent(r)));
        }
        format!(
            "<a href=\"/moderation?{}\">{label}</a>",
            escape(&q.join("&"))
        )
    };
    let mut pages = Vec::new();
    if f.page > 1 {
        pages.push(link(f.page - 1, "Newer"));
    }
    if more {
        pages.push(link(f.page + 1, "Older"));
    }
    let pages = if pages.is_empty() {
        String::new()
    } else {
        format!(
            "<nav aria-label=\"Pages\"><p>{}</p></nav>",
            pages.join(" · ")
        )
    };
    let body = format!(
        "<div style=\"overflow-wrap:anywhere\">\n<h1>Moderation</h1>\n\
         <p>Reviews whose current verdict is fraud, newest first (page {page}). A decision is \
         stored with the review, and its verdict and the course's figures follow in moments.</p>\n\
         <form method=\"get\" action=\"/moderation\">\n\
         <p><label for=\"course\">Course</label> <input id=\"course\" name=\"course\" \
         inputmode=\"numeric\" size=\"8\" value=\"{course}\">\n\
         <label for=\"reason\">Reason</label> <input id=\"reason\" name=\"reason\" size=\"14\" \
         value=\"{reason}\">\n<button type=\"submit\">Filter</button></p>\n</form>\n\
         {shown}\n{pages}\n</div>",
        page = f.page,
        course = f.course.map(|c| c.to_string()).unwrap_or_default(),
        reason = escape(f.reason.as_deref().unwrap_or_default()),
    );
    Ok(Html(document("Moderation", &body, SCRIPT)))
}

/// `<p>` saying what a moderator decided, if anything (text as stored; escaped).
pub(super) fn moderated(decision: Option<&str>) -> String {
    decision.map_or(String::new(), |d| {
        format!(
            "<p>Moderator's decision: <strong class=\"decision\">{}</strong></p>\n",
            escape(d)
        )
    })
}

/// The decision buttons of review `id` and the line that reports the answer ([`SCRIPT`]).
pub(super) fn buttons(id: i64) -> String {
    format!(
        "<p><button type=\"button\" data-review=\"{id}\" data-decision=\"valid\">Valid</button> \
         <button type=\"button\" data-review=\"{id}\" data-decision=\"fraud\">Fraud</button> \
         <button type=\"button\" data-review=\"{id}\" data-decision=\"\">Leave to the model</button></p>\n\
         <p role=\"status\" id=\"status-{id}\"></p>\n"
    )
}

/// Posts the decision of the button clicked; the browser sends the credentials it was asked
/// for (Basic) with it, as it does for the page.
pub(super) const SCRIPT: &str = r#"<script>
document.addEventListener("click", function (e) {
  var b = e.target.closest("button[data-decision]");
  if (!b) return;
  var id = b.getAttribute("data-review");
  var status = document.getElementById("status-" + id);
  status.textContent = "Saving…";
  fetch("/reviews/" + id + "/moderation", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ decision: b.getAttribute("data-decision") || null })
  }).then(function (r) {
    return r.json().then(function (j) {
      if (!r.ok) throw new Error(j.error || String(r.status));
      status.textContent = "Saved: " + (j.moderation || "left to the model") +
        ". The verdict follows in moments.";
    });
  }).catch(function (err) { status.textContent = "Not saved: " + err.message; });
});
</script>
"#;

/// Percent-encodes a query value (everything but unreserved characters).
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The decision in a body of POST /reviews/{id}/moderation: `{"decision": "valid" | "fraud" |
/// null}`, null leaving the review to the model again. Not JSON is a 400; another shape a 422
/// naming the field.
fn decision(body: &[u8]) -> Result<Option<Decision>, ApiError> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}"), None))?;
    let Value::Object(fields) = json else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object: {\"decision\": \"valid\" | \"fraud\" | null}",
            None,
        ));
    };
    if let Some(unknown) = fields.keys().find(|k| *k != "decision") {
        return Err(ApiError::field(
            unknown,
            format!("unknown field `{unknown}`, expected `decision`"),
        ));
    }
    match fields.get("decision") {
        None => Err(ApiError::field("decision", "missing field `decision`")),
        Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if Decision::parse(s).is_some() => Ok(Decision::parse(s)),
        Some(_) => Err(ApiError::field(
            "decision",
            "decision must be \"valid\", \"fraud\" or null (leave it to the model)",
        )),
    }
}

/// Stores the decision; an unchanged one writes nothing (so makes no new verdict).
pub async fn decide(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = course_id(&id)?;
    let body =
        body.map_err(|e| ApiError::bad_request(e.body_text(), None).with_status(e.status()))?;
    require_json(&headers)?;
    let decision = decision(&body)?.map(Decision::as_str);
    let client = state.pool.get().await?;
    let changed = client
        .query_opt(
            "UPDATE reviews SET moderation = $2
             WHERE id = $1 AND moderation IS DISTINCT FROM $2 RETURNING id",
            &[&id, &decision],
        )
        .await
        .map_err(refusal)?
        .is_some();
    if !changed {
        let exists = client
            .query_opt("SELECT FROM reviews WHERE id = $1", &[&id])
            .await?
            .is_some();
        if !exists {
            return Err(ApiError::not_found(format!("no review {id}")));
        }
    }
    tracing::info!(
        review = id,
        decision = decision.unwrap_or("none"),
        changed,
        "moderated"
    );
    Ok(Json(
        json!({"review_id": id, "moderation": decision, "changed": changed}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_filters_are_none_and_bad_ones_name_their_parameter() {
        let q = |pairs: &[(&str, &str)]| {
            filters(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        assert_eq!(
            q(&[("course", ""), ("reason", "")]).unwrap(),
            Filters {
                course: None,
                reason: None,
                page: 1
            }
        );
        assert_eq!(
            q(&[("course", "7"), ("reason", "link"), ("page", "3")]).unwrap(),
            Filters {
                course: Some(7),
                reason: Some("link".into()),
                page: 3
            }
        );
        for (bad, field) in [
            (("course", "x"), "course"),
            (("course", "+7"), "course"),
            (("course", " 7"), "course"),
            (("page", "+1"), "page"),
            (("page", "0"), "page"),
            (("page", ""), "page"),
            (("page", "1001"), "page"),
            (("reason", "link\0"), "reason"),
        ] {
            let e = q(&[bad]).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{bad:?}");
        }
    }

    #[test]
    fn a_decision_is_valid_fraud_or_null_and_nothing_else() {
        assert_eq!(
            decision(br#"{"decision":"valid"}"#).unwrap(),
            Some(Decision::Valid)
        );
        assert_eq!(
            decision(br#"{"decision":"fraud"}"#).unwrap(),
            Some(Decision::Fraud)
        );
        assert_eq!(decision(br#"{"decision":null}"#).unwrap(), None);
        for (body, field) in [
            (&br#"{}"#[..], Some("decision")),
            (&br#"{"decision":"VALID"}"#[..], Some("decision")),
            (&br#"{"decision":1}"#[..], Some("decision")),
            (&br#"{"decision":"valid","x":1}"#[..], Some("x")),
            (&br#"["valid"]"#[..], None),
            (&b"valid"[..], None),
        ] {
            let e = decision(body).unwrap_err();
            assert_eq!(
                e.field.as_deref(),
                field,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(percent("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(percent("link_1.x~"), "link_1.x~");
    }
}
