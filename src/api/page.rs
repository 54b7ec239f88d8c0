//! GET /courses/{id}: a course's page, and GET /courses: the index of courses. Plain,
//! self-contained HTML (no external assets); the course page keeps itself current through
//! GET /courses/{id}/events. Every value put in the HTML is escaped.

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;

use super::stats::{course_id, read_stats};
use super::{ApiError, AppState};

/// How many courses the index lists, most reviewed first.
pub const INDEX_LIMIT: i64 = 100;

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

const STYLE: &str =
    "body{font-family:sans-serif;max-width:42em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse}td,th{padding:.2em .6em;text-align:left}
.bar{background:#e8a317;height:1em;display:inline-block;vertical-align:middle}
.figures td:first-child{color:#555}";

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

/// The course page: the figures as they are now, and a script that replaces them with those
/// of each `stats` event.
pub async fn course(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Html<String>, PageError> {
    let id = course_id(&id)?;
    let stats = read_stats(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No statistics for course {id} yet.")))?;
    let title = format!("Course {id}");
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
            "<tr><th>{star}★</th><td><span class=\"bar\" id=\"bar_{star}\"></span> \
             <span id=\"{field}\">{}</span></td></tr>\n",
            escape(&shown(&stats[&field], 0))
        ));
    }
    let body = format!(
        "<p><a href=\"/courses\">All courses</a></p>\n\
         <h1 id=\"title\">{title}</h1>\n\
         <p>Course id <span id=\"course_id\">{id}</span></p>\n\
         <table class=\"figures\">\n\
         <tr><td>Average rating</td>{avg}</tr>\n\
         <tr><td>Reviews</td>{count}</tr>\n\
         <tr><td>Average, last 90 days</td>{ravg}</tr>\n\
         <tr><td>Reviews, last 90 days</td>{rcount}</tr>\n\
         <tr><td>Last review</td>{last}</tr>\n\
         <tr><td>Updated</td>{updated}</tr>\n\
         </table>\n<h2>Stars</h2>\n<table id=\"histogram\">\n{bars}</table>\n\
         <p id=\"live\">connecting…</p>",
        title = escape(&title),
        avg = cell("rating_avg", 2),
        count = cell("review_count", 0),
        ravg = cell("recent_rating_avg", 2),
        rcount = cell("recent_review_count", 0),
        last = cell("last_review_at", 0),
        updated = cell("updated_at", 0),
    );
    // The row for the script, safe inside <script>: no `<`, `>` or `&` left to end it.
    let initial = stats
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    let script = format!(
        "<script type=\"application/json\" id=\"initial\">{initial}</script>\n{}",
        script(id)
    );
    Ok(Html(document(&title, &body, &script)))
}

/// Sets the figures (by element id) from a course_stats row, draws the bars, and listens.
fn script(id: i64) -> String {
    format!(
        r#"<script>
(function () {{
  function shown(v, d) {{
    if (v === null || v === undefined) return "–";
    var n = Number(v);
    return typeof v === "number" || (v !== "" && !isNaN(n)) ? n.toFixed(d) : String(v);
  }}
  function set(s) {{
    [["rating_avg", 2], ["review_count", 0], ["recent_rating_avg", 2], ["recent_review_count", 0],
     ["last_review_at", 0], ["updated_at", 0]].forEach(function (f) {{
      document.getElementById(f[0]).textContent = shown(s[f[0]], f[1]);
    }});
    var most = 0;
    for (var i = 0; i <= 5; i++) most = Math.max(most, Number(s["stars_" + i]) || 0);
    for (var j = 0; j <= 5; j++) {{
      var n = Number(s["stars_" + j]) || 0;
      document.getElementById("stars_" + j).textContent = n;
      document.getElementById("bar_" + j).style.width = (most ? 15 * n / most : 0) + "em";
    }}
  }}
  set(JSON.parse(document.getElementById("initial").textContent));
  var live = document.getElementById("live");
  var events = new EventSource("/courses/{id}/events");
  events.addEventListener("stats", function (e) {{ set(JSON.parse(e.data)); live.textContent = "live"; }});
  events.addEventListener("missing", function () {{ live.textContent = "no statistics any more"; }});
  events.onerror = function () {{ live.textContent = "reconnecting…"; }};
}})();
</script>
"#
    )
}

/// The index: courses with statistics, most reviewed first.
pub async fn index(State(state): State<AppState>) -> Result<Html<String>, PageError> {
    let client = state.pool.get().await.map_err(ApiError::from)?;
    let rows = client
        .query(
            "SELECT course_id, review_count, rating_avg::float8 FROM course_stats
             ORDER BY review_count DESC, course_id LIMIT $1",
            &[&INDEX_LIMIT],
        )
        .await
        .map_err(ApiError::from)?;
    let mut list = String::new();
    for row in &rows {
        let (id, count, avg): (i64, i64, Option<f64>) = (row.get(0), row.get(1), row.get(2));
        let avg = avg.map_or("–".to_string(), |a| format!("{a:.2}"));
        list.push_str(&format!(
            "<tr><td><a href=\"/courses/{id}\">Course {id}</a></td><td>{count}</td><td>{}</td></tr>\n",
            escape(&avg)
        ));
    }
    let body = if rows.is_empty() {
        "<h1>Courses</h1>\n<p>No course has statistics yet.</p>".to_string()
    } else {
        format!(
            "<h1>Courses</h1>\n<table>\n<tr><th>Course</th><th>Reviews</th><th>Average</th></tr>\n{list}</table>"
        )
    };
    Ok(Html(document("Courses", &body, "")))
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
