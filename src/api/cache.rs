//! Caching headers of the reads a website embeds or polls, and the CORS origins allowed to
//! read them from a page of another origin.
//!
//! Every cached answer carries an ETag (a hash of its body) and is answered 304 without a
//! body when the request's If-None-Match names it, so a poll of unchanged figures costs a
//! hash and no transfer. The HTML pages say `no-cache`: a browser or proxy may keep them but
//! must revalidate each time, since the figures move live. The JSON figures may be reused
//! for a few seconds (`max-age`): the number of requests a busy website sends to the API
//! then no longer grows with its visitors, while no figure shown is older than that.

use std::hash::{Hash, Hasher};

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The HTML pages: kept, but revalidated on every use.
pub const PAGE: &str = "no-cache";
/// The JSON figures: reused for 5 s by browsers and shared caches, then revalidated.
pub const FIGURES: &str = "public, max-age=5";

/// `body` as `content_type` with `policy` and its ETag, or 304 when the request already has
/// it.
pub fn cached(
    request: &HeaderMap,
    content_type: &'static str,
    policy: &'static str,
    body: String,
) -> Response {
    let tag = etag(body.as_bytes());
    let headers = [
        (CACHE_CONTROL, HeaderValue::from_static(policy)),
        (
            ETAG,
            HeaderValue::from_str(&tag).expect("an ETag is hex in quotes"),
        ),
    ];
    if matches(request, &tag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (
        headers,
        [(CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// A strong tag: two bodies with one tag are the same bytes, short of a 64-bit collision.
fn etag(body: &[u8]) -> String {
    // SipHash with fixed keys: the same body gets the same tag in every process of a build.
    let mut hasher = std::hash::DefaultHasher::new();
    body.hash(&mut hasher);
    format!("\"{:016x}\"", hasher.finish())
}

/// If-None-Match: `*`, or a list of tags of which one is `tag` (weak comparison, as RFC 9110
/// asks for If-None-Match).
fn matches(request: &HeaderMap, tag: &str) -> bool {
    request
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag)
}

/// Which other origins' pages may read the API (GET and HEAD only: a write from a browser
/// of another origin is never allowed, whatever the token).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Cors {
    /// Same origin only: no CORS header is sent.
    #[default]
    None,
    Any,
    Origins(Vec<String>),
}

impl Cors {
    /// From the configured origins, each `*` or `scheme://host[:port]`.
    pub fn from_origins(origins: &[String]) -> Self {
        if origins.is_empty() {
            Cors::None
        } else if origins.iter().any(|o| o == "*") {
            Cors::Any
        } else {
            Cors::Origins(origins.to_vec())
        }
    }

    pub fn layer(&self) -> Option<CorsLayer> {
        let allow = match self {
            Cors::None => return None,
            Cors::Any => AllowOrigin::any(),
            Cors::Origins(list) => AllowOrigin::list(
                list.iter()
                    .map(|o| HeaderValue::from_str(o).expect("checked by parse_origin")),
            ),
        };
        Some(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::HEAD])
                // A script of the website may revalidate what it read.
                .allow_headers([IF_NONE_MATCH])
                .expose_headers([ETAG, CACHE_CONTROL])
                .max_age(std::time::Duration::from_secs(3600)),
        )
    }
}

/// One configured origin as browsers send it in `Origin` (lower-case host, no default
/// port, no path), or why it is not one.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text == "*" {
        return Ok(text.into());
    }
    let url = reqwest::Url::parse(text)
        .map_err(|e| format!("{text:?} is not an origin such as https://www.example.com ({e})"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(format!(
            "{text:?} is not an origin: give scheme://host[:port] (http or https), with no \
             path, e.g. https://www.example.com"
        ));
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_as_browsers_send_them() {
        assert_eq!(
            parse_origin("https://WWW.Example.com:443").unwrap(),
            "https://www.example.com"
        );
        assert_eq!(
            parse_origin("http://localhost:3000/").unwrap(),
            "http://localhost:3000"
        );
        assert_eq!(parse_origin("*").unwrap(), "*");
        for bad in [
            "example.com",
            "https://example.com/page",
            "ftp://x",
            "https://u:p@x",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn if_none_match_names_the_tag_or_any() {
        let tag = etag(b"body");
        let mut h = HeaderMap::new();
        assert!(!matches(&h, &tag));
        h.insert(IF_NONE_MATCH, format!("\"x\", W/{tag}").parse().unwrap());
        assert!(matches(&h, &tag));
        h.insert(IF_NONE_MATCH, "*".parse().unwrap());
        assert!(matches(&h, &tag));
        assert_ne!(etag(b"body"), etag(b"other"));
    }
}
