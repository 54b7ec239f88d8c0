//! The course page's list of the latest valid reviews, newest first, a page at a time.
//!
//! Valid means what the figures count: a current row of `reviews` (a deleted review has no
//! row; an edit replaced the old version) whose newest verdict, by (version, position) as the
//! verdict sink orders them, is `valid`. A review not judged yet is not listed, as it is not
//! counted yet; it appears with the figures that count it.

use deadpool_postgres::Pool;

use super::escape;
use crate::api::ApiError;

/// Reviews per page of the list.
pub const PER_PAGE: i64 = 10;
/// The last page asked for that is answered: the list is for reading, not for walking a
/// whole course through OFFSET.
pub const MAX_PAGE: i64 = 1000;

#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub id: i64,
    pub rating: f64,
    pub title: Option<String>,
    pub content: Option<String>,
    pub created_at: String,
}

/// Page `page` (1-based) of the course's valid reviews, and whether an older page follows.
pub async fn page(pool: &Pool, course: i64, page: i64) -> Result<(Vec<Listed>, bool), ApiError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT r.id, r.rating::float8, r.title, r.content,
                    to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI \"UTC\"')
             FROM reviews r
             WHERE r.course_id = $1
               AND (SELECT v.verdict FROM review_verdicts v WHERE v.review_id = r.id
                    ORDER BY v.version DESC, v.position DESC LIMIT 1) = 'valid'
             ORDER BY r.created_at DESC, r.id DESC
             LIMIT $2 OFFSET $3",
            &[&course, &(PER_PAGE + 1), &((page - 1) * PER_PAGE)],
        )
        .await?;
    let more = rows.len() as i64 > PER_PAGE;
    let listed = rows
        .iter()
        .take(PER_PAGE as usize)
        .map(|r| Listed {
            id: r.get(0),
            rating: r.get(1),
            title: r.get(2),
            content: r.get(3),
            created_at: r.get(4),
        })
        .collect();
    Ok((listed, more))
}

/// The `#reviews` section's content: the reviews and the links to the pages beside this one.
pub fn html(reviews: &[Listed], page: i64, more: bool) -> String {
    let mut out = String::from("<h2>Latest reviews</h2>\n");
    if reviews.is_empty() {
        out.push_str(if page == 1 {
            "<p>No valid review yet.</p>\n"
        } else {
            "<p>No reviews on this page.</p>\n"
        });
    }
    for r in reviews {
        let heading = r
            .title
            .as_deref()
            .filter(|t| !t.trim().is_empty())
            .unwrap_or("Untitled review");
        out.push_str(&format!(
            "<article class=\"review\" data-review=\"{id}\">\n<h3>{heading}</h3>\n\
             <p class=\"meta\">{rating} of 5 stars · {created}</p>\n",
            id = r.id,
            heading = escape(heading),
            rating = stars(r.rating),
            created = escape(&r.created_at),
        ));
        if let Some(content) = r.content.as_deref().filter(|c| !c.trim().is_empty()) {
            out.push_str(&format!("<p>{}</p>\n", escape(content)));
        }
        out.push_str("</article>\n");
    }
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!(
            "<a href=\"?page={}#reviews\" rel=\"prev\">Newer reviews</a>",
            page - 1
        ));
    }
    if more && page < MAX_PAGE {
        links.push(format!(
            "<a href=\"?page={}#reviews\" rel=\"next\">Older reviews</a>",
            page + 1
        ));
    }
    if !links.is_empty() {
        out.push_str(&format!(
            "<nav aria-label=\"Pages of reviews\"><p>Page {page}: {}</p></nav>\n",
            links.join(" · ")
        ));
    }
    out
}

/// Half stars as shown: "4.5", "5".
fn stars(rating: f64) -> String {
    if rating.fract() == 0.0 {
        format!("{rating:.0}")
    } else {
        format!("{rating:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(id: i64, title: Option<&str>) -> Listed {
        Listed {
            id,
            rating: 4.5,
            title: title.map(Into::into),
            content: Some("<b>great</b>".into()),
            created_at: "2026-01-02 03:04 UTC".into(),
        }
    }

    #[test]
    fn reviews_are_escaped_and_paged() {
        let html = html(&[listed(1, Some("Fine & dandy")), listed(2, None)], 2, true);
        assert!(html.contains("<h3>Fine &amp; dandy</h3>"));
        assert!(html.contains("<h3>Untitled review</h3>"));
        assert!(html.contains("&lt;b&gt;great&lt;/b&gt;"));
        assert!(html.contains("4.5 of 5 stars"));
        assert!(html.contains("?page=1#reviews") && html.contains("?page=3#reviews"));
        let last = super::html(&[listed(1, None)], 1, false);
        assert!(!last.contains("<nav"));
    }
}
