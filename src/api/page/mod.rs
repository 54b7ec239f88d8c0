//! GET /courses/{id}: a course's page, and GET /courses: the index of courses ([`index`]).
//! Plain, self-contained HTML (no external assets); the course page keeps itself current
//! through GET /courses/{id}/events (course.js). Its chart ([`chart`]) and its list of
//! reviews ([`reviews`]) are parts of their own. Every value put in the HTML is escaped.

mod chart;
mod index;
mod reviews;

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;

use super::stats::{course_id, read_stats};
use super::{cache, ApiError, AppState};

pub use index::index;

/// The content type of every page.
const HTML: &str = "text/html; charset=utf-8";

/// An error answered as a page: the status of the [`ApiError`] it comes from, its message.
pub struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = self.0.status.to_string();
        let body = format!(
            "<h1>{}</h1>\n<p>{}</p>\n<p><a href=\"/courses\">All courses</a></p>",
            escape(&title),
            escape(&self.0.error)
        );
        (self.0.status, Html(document(&title, &body, ""))).into_response()
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

// Narrow screens: nothing is wider than the body (the chart scales, long words wrap), so a
// 375 px phone scrolls only vertically.
const STYLE: &str =
    "body{font-family:sans-serif;max-width:42em;margin:2em auto;padding:0 1em;color:#222;overflow-wrap:anywhere}
table{border-collapse:collapse}td,th{padding:.2em .6em;text-align:left}
.bar{background:#e8a317;height:1em;display:inline-block;vertical-align:middle;max-width:100%}
.figures td:first-child{color:#555}
figure{margin:0}svg{width:100%;height:auto;display:block}
svg text{font-size:13px;fill:#222}svg .axis{stroke:#555}
svg rect.count{fill:#9cc3e6}svg polyline.average{fill:none;stroke:#1a5a96;stroke-width:2}
svg circle.average{fill:#1a5a96}
.review{border-top:1px solid #ccc;padding:.2em 0}.review h3{margin:.4em 0 .2em;font-size:1em}
.meta{color:#555;margin:.2em 0}
form label{margin-right:.3em}form input,form select,form button{margin:.2em .6em .2em 0;max-width:100%}";

/// What a course is called on the pages: its title, or "Course <id>" when it has none.
pub fn name(id: i64, title: Option<&str>) -> String {
    match title {
        Some(t) if !t.trim().is_empty() => t.to_string(),
        _ => format!("Course {id}"),
    }
}

/// A link to the course elsewhere, only for an absolute http(s) URL (never `javascript:`).
fn course_link(url: Option<&str>) -> String {
    match url.and_then(|u| reqwest::Url::parse(u).ok()) {
        Some(u) if matches!(u.scheme(), "http" | "https") => format!(
            " · <a href=\"{}\">The course's own page</a>",
            escape(u.as_str())
        ),
        _ => String::new(),
    }
}

pub(crate) fn document(title: &str, body: &str, script: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n{script}</body>\n</html>\n",
        escape(title)
    )
}

fn number(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// A figure as the page shows it: averages to two decimals, "–" for none.
fn shown(v: &Value, decimals: usize) -> String {
    match number(v) {
        Some(n) => format!("{n:.decimals$}"),
        None if v.is_string() => v.as_str().unwrap_or_default().to_string(),
        None => "–".to_string(),
    }
}

/// The course page: the figures as they are now, the chart of the last 90 days, a page of
/// the latest valid reviews (`?page=`), and a script that keeps them current.
pub async fn course(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    request: HeaderMap,
) -> Result<Response, PageError> {
    let id = course_id(&id)?;
    let page = match query.get("page") {
        None => 1,
        Some(p) => p
            .parse::<i64>()
            .ok()
            .filter(|p| (1..=reviews::MAX_PAGE).contains(p))
            .ok_or_else(|| {
                ApiError::bad_request(
                    format!("page must be an integer from 1 to {}", reviews::MAX_PAGE),
                    Some("page".into()),
                )
            })?,
    };
    let stats = read_stats(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No statistics for course {id} yet.")))?;
    let days = chart::days(&state.pool, id).await?;
    let (listed, more) = reviews::page(&state.pool, id, page).await?;
    let title = name(id, stats["title"].as_str());
    let cell = |name: &str, decimals: usize| {
        format!(
            "<td id=\"{}\">{}</td>",
            escape(name),
            escape(&shown(&stats[name], decimals))
        )
    };
    let mut bars = String::new();
    for star in (0..=5).rev() {
        let field = format!("stars_{star}");
        bars.push_str(&format!(
            "<tr><th scope=\"row\">{star}★</th><td><span class=\"bar\" id=\"bar_{star}\"></span> \
             <span id=\"{field}\">{}</span></td></tr>\n",
            escape(&shown(&stats[&field], 0))
        ));
    }
    let body = format!(
        "<div id=\"course\" data-course=\"{id}\">\n\
         <p><a href=\"/courses\">All courses</a></p>\n\
         <h1 id=\"title\">{heading}</h1>\n\
         <p>Course id <span id=\"course_id\">{id}</span>{link}</p>\n\
         <table class=\"figures\">\n\
         <tr><td>Average rating</td>{avg}</tr>\n\
         <tr><td>Reviews</td>{count}</tr>\n\
         <tr><td>Average, last 90 days</td>{ravg}</tr>\n\
         <tr><td>Reviews, last 90 days</td>{rcount}</tr>\n\
         <tr><td>Last review</td>{last}</tr>\n\
         <tr><td>Updated</td>{updated}</tr>\n\
         </table>\n<h2>Stars</h2>\n<table id=\"histogram\">\n{bars}</table>\n\
         <section id=\"chart\">\n{chart}\n</section>\n\
         <section id=\"reviews\">\n{list}</section>\n\
         <p id=\"live\" role=\"status\">connecting…</p>\n</div>",
        heading = escape(&title),
        link = course_link(stats["url"].as_str()),
        avg = cell("rating_avg", 2),
        count = cell("review_count", 0),
        ravg = cell("recent_rating_avg", 2),
        rcount = cell("recent_review_count", 0),
        last = cell("last_review_at", 0),
        updated = cell("updated_at", 0),
        chart = chart::html(&days),
        list = reviews::html(&listed, page, more),
    );
    // The row for the script, safe inside <script>: no `<`, `>` or `&` left to end it.
    let initial = stats
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    let script = format!(
        "<script type=\"application/json\" id=\"initial\">{initial}</script>\n<script>\n{}</script>\n",
        include_str!("course.js")
    );
    Ok(cache::cached(
        &request,
        HTML,
        cache::PAGE,
        document(&title, &body, &script),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn json_in_a_script_cannot_close_it() {
        let row = serde_json::json!({"t": "</script><b>&"});
        let safe = row
            .to_string()
            .replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026");
        assert!(!safe.contains('<'));
        assert_eq!(serde_json::from_str::<Value>(&safe).unwrap(), row);
    }

    #[test]
    fn figures_are_shown_rounded_or_as_a_dash() {
        assert_eq!(shown(&serde_json::json!(4.25), 2), "4.25");
        assert_eq!(shown(&serde_json::json!("4.5"), 2), "4.50");
        assert_eq!(shown(&Value::Null, 2), "–");
        assert_eq!(shown(&serde_json::json!(3), 0), "3");
    }
}
