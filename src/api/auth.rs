//! The bearer token that guards writes when one is configured (API_TOKEN / --api-token):
//! every request whose method is not GET, HEAD or OPTIONS must carry
//! `Authorization: Bearer <token>`, or it is answered 401 before its body is read. Reads stay
//! open, except the moderation view's (`api::MODERATION_ROUTES`), which shows spam: there
//! every request needs the token, as Bearer or, so that a browser can ask a moderator for it,
//! as the password of HTTP Basic (any user name), and a refusal challenges for both.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::ApiError;

/// A secret that never shows itself: Debug and Display print `***`, so logging the
/// configuration (or a panic message holding it) does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(Arc<str>);

impl ApiToken {
    /// Whether `presented` is this token, in time that does not depend on where they differ
    /// (only on their lengths).
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl FromStr for ApiToken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("the API token must not be empty (unset it to leave writes open)".into());
        }
        // What a client can send after "Bearer " in one header: visible ASCII, no spaces.
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the API token must be visible ASCII characters without spaces".into());
        }
        Ok(ApiToken(s.into()))
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Whose error body a refusal is written in: ours, or the Confluent registry's.
#[derive(Clone, Copy)]
pub(crate) enum Dialect {
    Api,
    Registry,
}

#[derive(Clone)]
pub(crate) struct Guard {
    pub token: ApiToken,
    pub dialect: Dialect,
}

/// Middleware: lets reads through, and writes only with the token.
pub(crate) async fn require_token(
    State(guard): State<Guard>,
    request: Request,
    next: Next,
) -> Response {
    let read = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    // The moderation routes are guarded by `require_moderator`, which also takes Basic.
    let moderated = super::MODERATION_ROUTES
        .iter()
        .any(|template| matches_template(template, request.uri().path()));
    if read || moderated {
        return next.run(request).await;
    }
    match presented(request.headers()) {
        Some(token) if guard.token.matches(token) => next.run(request).await,
        presented => refuse(guard.dialect, presented.is_some()),
    }
}

/// Whether `path` is one the route `template` matches: segment by segment, `{name}` standing
/// for any one non-empty segment.
fn matches_template(template: &str, path: &str) -> bool {
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(t), Some(p)) if t.starts_with('{') && !p.is_empty() => {}
            (Some(t), Some(p)) if t == p => {}
            _ => return false,
        }
    }
}

/// Middleware of the moderation routes: every request, whatever its method, needs the token,
/// as Bearer or as Basic's password.
pub(crate) async fn require_moderator(
    State(guard): State<Guard>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let presented = presented(headers)
        .map(<[u8]>::to_vec)
        .or_else(|| basic_password(headers));
    match presented {
        Some(token) if guard.token.matches(&token) => next.run(request).await,
        presented => {
            let error = if presented.is_some() {
                "the token is not the one this server was configured with"
            } else {
                "the moderation view needs the API token (this server has API_TOKEN set): \
                 Authorization: Bearer <token>, or HTTP Basic with the token as the password"
            };
            let mut response = ApiError {
                status: StatusCode::UNAUTHORIZED,
                error: error.into(),
                field: None,
            }
            .into_response();
            // Basic first, so a browser asks for the token rather than showing the refusal.
            let headers = response.headers_mut();
            headers.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="reviewflow moderation", charset="UTF-8""#),
            );
            headers.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="reviewflow""#),
            );
            response
        }
    }
}

/// The password of an `Authorization: Basic <base64 of user:password>` header.
fn basic_password(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, encoded) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let encoded = std::str::from_utf8(encoded.trim_ascii()).ok()?;
    if encoded.is_empty() {
        return None;
    }
    let decoded = openssl::base64::decode_block(encoded).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case).
fn presented(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
}

fn refuse(dialect: Dialect, had_token: bool) -> Response {
    let (challenge, message) = if had_token {
        (
            r#"Bearer realm="reviewflow", error="invalid_token""#,
            "the bearer token is not the one this server was configured with",
        )
    } else {
        (
            r#"Bearer realm="reviewflow""#,
            "writes need an Authorization: Bearer <token> header (this server has API_TOKEN set)",
        )
    };
    let mut response = match dialect {
        Dialect::Api => ApiError {
            status: StatusCode::UNAUTHORIZED,
            error: message.into(),
            field: None,
        }
        .into_response(),
        // Confluent's clients read {"error_code", "message"}; its server answers 401 so.
        Dialect::Registry => (
            StatusCode::UNAUTHORIZED,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::registry::MEDIA_TYPE),
            )],
            serde_json::json!({"error_code": 401, "message": message}).to_string(),
        )
            .into_response(),
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_shows_itself() {
        let token: ApiToken = "s3cret-token".parse().unwrap();
        assert_eq!(format!("{token:?} {token}"), "*** ***");
        assert!(token.matches(b"s3cret-token"));
        assert!(!token.matches(b"s3cret-tokeN"));
        assert!(!token.matches(b"s3cret"));
        assert!(!token.matches(b""));
    }

    #[test]
    fn empty_or_unsendable_tokens_are_refused() {
        for bad in ["", "two words", "tab\there", "é"] {
            assert!(bad.parse::<ApiToken>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_match_route_templates_segment_by_segment() {
        let m = |p| matches_template("/reviews/{id}/moderation", p);
        assert!(m("/reviews/7/moderation") && m("/reviews/x/moderation"));
        for other in [
            "/reviews//moderation",
            "/reviews/7",
            "/reviews/7/moderation/x",
            "/moderation",
        ] {
            assert!(!m(other), "{other}");
        }
        assert!(matches_template("/moderation", "/moderation"));
        assert!(!matches_template("/moderation", "/moderation/"));
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(v));
            presented(&h).map(<[u8]>::to_vec)
        };
        assert_eq!(with("Bearer abc"), Some(b"abc".to_vec()));
        assert_eq!(with("bearer abc"), Some(b"abc".to_vec()));
        assert_eq!(with("Basic abc"), None);
        let basic = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(v));
            basic_password(&h)
        };
        // "moderator:t0k:en" and ":tok": the password is all after the first colon.
        assert_eq!(
            basic("Basic bW9kZXJhdG9yOnQwazplbg=="),
            Some(b"t0k:en".to_vec())
        );
        assert_eq!(basic("basic  OnRvaw== "), Some(b"tok".to_vec()));
        for refused in [
            "Basic",
            "Basic ",
            "Basic !!!",
            "Basic dXNlcg==",
            "Bearer OnRvaw==",
        ] {
            assert_eq!(basic(refused), None, "{refused}");
        }
        assert_eq!(with("Bearer"), None);
        assert_eq!(presented(&HeaderMap::new()), None);
    }
}
