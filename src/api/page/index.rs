//! GET /courses: the index of the courses with statistics, each by its title (or "Course
//! <id>" for one that has no row in reviewflow_catalog.courses), searchable by title (`q`)
//! and sorted by `sort`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::{document, escape, name, PageError};
use crate::api::{cache, ApiError, AppState};

/// How many courses the index lists.
pub const INDEX_LIMIT: i64 = 100;
/// The longest search accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

/// The orders the index offers: `sort` value, label, ORDER BY.
const SORTS: &[(&str, &str, &str)] = &[
    (
        "reviews",
        "most reviewed",
        "s.review_count DESC, s.course_id",
    ),
    (
        "rating",
        "best rated",
        "s.rating_avg DESC NULLS LAST, s.review_count DESC, s.course_id",
    ),
    (
        "title",
        "title",
        "c.title IS NULL, lower(c.title), c.title, s.course_id",
    ),
];

pub async fn index(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    request: HeaderMap,
) -> Result<Response, PageError> {
    let sort = query.get("sort").map_or("reviews", String::as_str);
    let Some((_, _, order)) = SORTS.iter().find(|(s, _, _)| *s == sort) else {
        return Err(ApiError::bad_request(
            format!("sort must be one of reviews, rating, title, not {sort:?}"),
            Some("sort".into()),
        )
        .into());
    };
    let raw = query.get("q").map_or("", String::as_str);
    if raw.chars().count() > MAX_QUERY_CHARS || raw.contains('\0') {
        return Err(ApiError::bad_request(
            format!("q must be at most {MAX_QUERY_CHARS} characters, without NUL"),
            Some("q".into()),
        )
        .into());
    }
    let q = raw.trim();
    // The search sees what the index shows, so "Course 7" finds a course without a title.
    let pattern = format!(
        "%{}%",
        q.replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let client = state.pool.get().await.map_err(ApiError::from)?;
    let rows = client
        .query(
            &format!(
                "SELECT s.course_id, c.title, s.review_count, s.rating_avg::float8
                 FROM course_stats s LEFT JOIN reviewflow_catalog.courses c ON c.id = s.course_id
                 WHERE coalesce(c.title, 'Course ' || s.course_id) ILIKE $1
                 ORDER BY {order} LIMIT $2"
            ),
            &[&pattern, &INDEX_LIMIT],
        )
        .await
        .map_err(ApiError::from)?;
    let mut list = String::new();
    for row in &rows {
        let (id, title, count, avg): (i64, Option<String>, i64, Option<f64>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let avg = avg.map_or("–".to_string(), |a| format!("{a:.2}"));
        list.push_str(&format!(
            "<tr><td><a href=\"/courses/{id}\">{}</a></td><td>{count}</td><td>{}</td></tr>\n",
            escape(&name(id, title.as_deref())),
            escape(&avg)
        ));
    }
    let mut options = String::new();
    for (value, label, _) in SORTS {
        options.push_str(&format!(
            "<option value=\"{value}\"{}>{label}</option>",
            if *value == sort { " selected" } else { "" }
        ));
    }
    let form = format!(
        "<form method=\"get\" action=\"/courses\" role=\"search\">\n\
         <label for=\"q\">Title</label> <input id=\"q\" name=\"q\" type=\"search\" value=\"{}\" maxlength=\"{MAX_QUERY_CHARS}\">\n\
         <label for=\"sort\">Sort by</label> <select id=\"sort\" name=\"sort\">{options}</select>\n\
         <button type=\"submit\">Show</button>\n</form>",
        escape(q)
    );
    let body = if rows.is_empty() && q.is_empty() {
        format!("<h1>Courses</h1>\n{form}\n<p>No course has statistics yet.</p>")
    } else if rows.is_empty() {
        format!(
            "<h1>Courses</h1>\n{form}\n<p>No course's title contains “{}”.</p>",
            escape(q)
        )
    } else {
        format!(
            "<h1>Courses</h1>\n{form}\n<table class=\"index\">\n\
             <tr><th scope=\"col\">Course</th><th scope=\"col\">Reviews</th><th scope=\"col\">Average</th></tr>\n\
             {list}</table>"
        )
    };
    Ok(cache::cached(
        &request,
        super::HTML,
        cache::PAGE,
        document("Courses", &body, ""),
    ))
}
