//! POST /reviews and GET /reviews/{id}.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::contract::review::{self, Rating, MAX_CONTENT_CHARS, MAX_TITLE_CHARS};

/// The body of POST /reviews, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewReview {
    #[serde(deserialize_with = "whole_number")]
    pub course_id: i64,
    #[serde(deserialize_with = "whole_number")]
    pub user_id: i64,
    pub rating: f64,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

/// An integer as JSON Schema counts them: `7` and `7.0` alike (the OpenAPI document says
/// `"type": "integer"`, which a number with a zero fraction satisfies), within i64.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        // 2^63 is exactly representable, so the upper bound is exclusive and exact.
        Some(f) if f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63) => Ok(f as i64),
        _ => Err(serde::de::Error::custom(format!(
            "{n} is not an integer in the 64-bit range"
        ))),
    }
}

/// A stored review, as the API returns it. A row written by SQL may hold what no review
/// posted here can (NULLs, a NaN rating, an infinite or BC created_at: rows that cannot
/// count, judged fraud downstream); it is served as it is, never as a failure: a NULL or NaN
/// as null, a time RFC 3339 cannot spell in PostgreSQL's text form.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Review {
    pub id: i64,
    pub course_id: Option<i64>,
    pub user_id: Option<i64>,
    pub rating: Option<f64>,
    pub title: Option<String>,
    pub content: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

pub(super) const COLUMNS: &str = "id, course_id, user_id, rating::float8, title, content, \
     created_at, updated_at, created_at::text, updated_at::text";

pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    // Too large (413) or cut off: answered in our JSON, not axum's plain text.
    let body =
        body.map_err(|e| ApiError::bad_request(e.body_text(), None).with_status(e.status()))?;
    require_json(&headers)?;
    let new = parse(&body)?;
    let rating = validate(&new, Utc::now())?;
    let client = state.pool.get().await?;
    let insert = format!(
        "INSERT INTO reviews (course_id, user_id, rating, title, content, created_at) \
         VALUES ($1, $2, $3::float8::numeric(2,1), $4, $5, coalesce($6::timestamptz, now())) \
         ON CONFLICT (id) DO NOTHING RETURNING {COLUMNS}"
    );
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
        &new.course_id,
        &new.user_id,
        &rating.stars(),
        &new.title,
        &new.content,
        &new.created_at,
    ];
    // Rows written by SQL with ids of their own leave the id sequence behind them: each try
    // takes the next id, so a few taken ones only cost a few tries.
    let mut taken = 0;
    let row = loop {
        match client.query_opt(&insert, &params).await {
            Ok(Some(row)) => break row,
            Ok(None) if taken < MAX_TAKEN_IDS => taken += 1,
            Ok(None) => {
                return Err(ApiError::field(
                    "id",
                    format!(
                        "{MAX_TAKEN_IDS} ids in a row from the id sequence are already taken by rows \
                         written with ids of their own; an operator must move the sequence past them: \
                         SELECT setval(pg_get_serial_sequence('reviews', 'id'), max(id)) FROM reviews"
                    ),
                )
                .with_status(StatusCode::CONFLICT))
            }
            Err(e) => return Err(refusal(e)),
        }
    };
    let review = to_review(&row);
    let location = format!("/reviews/{}", review.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(review),
    ))
}

/// A body not declared as JSON is a 415.
pub(super) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if json {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "the body must be JSON (Content-Type: application/json)",
        None,
    )
    .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE))
}

/// Ids an insert skips before it gives up (see `create`).
const MAX_TAKEN_IDS: usize = 1000;

/// The database refused the row itself (a constraint or a trigger a user added to
/// `reviews`): the client's request, not the server, is what cannot be stored, so it is a
/// 422 naming the column or constraint; anything else is the server's trouble.
pub(super) fn refusal(e: tokio_postgres::Error) -> ApiError {
    let Some(db) = e.as_db_error() else {
        return e.into();
    };
    let class = &db.code().code()[..2];
    if class != "23" && class != "22" {
        return e.into();
    }
    let field = db
        .column()
        .or(db.constraint())
        .unwrap_or("reviews")
        .to_string();
    tracing::info!(error = %db, "review refused by the database");
    ApiError::field(
        &field,
        format!("the database refused the review: {}", db.message()),
    )
}

pub async fn read(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Review>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("id must be an integer", Some("id".into())))?;
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM reviews WHERE id = $1"),
            &[&id],
        )
        .await?;
    row.map(|r| Json(to_review(&r)))
        .ok_or_else(|| ApiError::not_found(format!("no review {id}")))
}

pub(super) fn to_review(row: &tokio_postgres::Row) -> Review {
    // try_get, not get: a value of another type (a column altered by SQL) is null, not a panic.
    let time = |typed: usize, text: usize| {
        let rfc3339 = row
            .try_get::<_, Option<DateTime<Utc>>>(typed)
            .ok()
            .flatten()
            .filter(|t| review::created_at_in_range(*t))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
        rfc3339.or_else(|| row.try_get::<_, Option<String>>(text).ok().flatten())
    };
    Review {
        id: row.get(0),
        course_id: row.try_get(1).ok().flatten(),
        user_id: row.try_get(2).ok().flatten(),
        rating: row
            .try_get::<_, Option<f64>>(3)
            .ok()
            .flatten()
            .filter(|r| r.is_finite()),
        title: row.try_get(4).ok().flatten(),
        content: row.try_get(5).ok().flatten(),
        created_at: time(6, 8),
        updated_at: time(7, 9),
    }
}

/// Malformed JSON is 400; a well-formed body with a wrong or missing field is 422.
pub fn parse(body: &[u8]) -> Result<NewReview, ApiError> {
    // Syntax first, so a body that is not JSON at all is a 400 whatever fields it starts with.
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}"), None))?;
    let parsed: NewReview = serde_path_to_error::deserialize(json).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let field = if path != "." && !path.is_empty() {
            Some(path)
        } else {
            // serde names missing and unknown fields only in its message: `field`.
            message.split('`').nth(1).map(str::to_string)
        };
        match field {
            Some(field) => ApiError::field(&field, format!("{field}: {message}")),
            None => ApiError::bad_request(
                format!("the body must be a JSON object of a review: {message}"),
                None,
            ),
        }
    })?;
    Ok(parsed)
}

pub fn validate(new: &NewReview, now: DateTime<Utc>) -> Result<Rating, ApiError> {
    if new.course_id <= 0 {
        return Err(ApiError::field(
            "course_id",
            "course_id must be a positive integer",
        ));
    }
    if new.user_id <= 0 {
        return Err(ApiError::field(
            "user_id",
            "user_id must be a positive integer",
        ));
    }
    let rating = Rating::from_stars(new.rating)
        .ok_or_else(|| ApiError::field("rating", review::RATING_RULE))?;
    for (field, value, max) in [
        ("title", &new.title, MAX_TITLE_CHARS),
        ("content", &new.content, MAX_CONTENT_CHARS),
    ] {
        if let Some(fault) = value
            .as_deref()
            .and_then(|text| review::text_fault(field, text, max))
        {
            return Err(ApiError::field(field, fault));
        }
    }
    if let Some(fault) = new
        .created_at
        .and_then(|at| review::created_at_fault("created_at", at, now))
    {
        return Err(ApiError::field("created_at", fault));
    }
    Ok(rating)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> (StatusCode, Option<String>) {
        match parse(body.as_bytes()).and_then(|n| validate(&n, Utc::now()).map(|_| n)) {
            Ok(_) => (StatusCode::CREATED, None),
            Err(e) => (e.status, e.field),
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (r#"{"user_id":1,"rating":4.5}"#, "course_id"),
            (r#"{"course_id":"x","user_id":1,"rating":4.5}"#, "course_id"),
            (r#"{"course_id":1,"user_id":0,"rating":4.5}"#, "user_id"),
            (r#"{"course_id":1,"user_id":1,"rating":4.25}"#, "rating"),
            (r#"{"course_id":1,"user_id":1,"rating":5.5}"#, "rating"),
            (r#"{"course_id":1,"user_id":1,"rating":"4.5"}"#, "rating"),
            (
                r#"{"course_id":1,"user_id":1,"rating":4,"ratting":4}"#,
                "ratting",
            ),
            (
                r#"{"course_id":1,"user_id":1,"rating":4,"created_at":"yesterday"}"#,
                "created_at",
            ),
            (
                r#"{"course_id":1,"user_id":1,"rating":4,"created_at":"2999-01-01T00:00:00Z"}"#,
                "created_at",
            ),
            (
                r#"{"course_id":1,"user_id":1,"rating":4,"title":7}"#,
                "title",
            ),
        ];
        for (body, field) in cases {
            let (status, got) = field_of(body);
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(got.as_deref(), Some(field), "{body}");
        }
        let long = format!(
            r#"{{"course_id":1,"user_id":1,"rating":4,"content":"{}"}}"#,
            "a".repeat(10_001)
        );
        assert_eq!(field_of(&long).1.as_deref(), Some("content"));
    }

    /// Every spelling of a date JSON can carry: refused naming created_at unless it is a
    /// time in [0001-01-01T00:00:00Z, now + skew], which PostgreSQL and every reader hold.
    #[test]
    fn any_date_outside_the_range_is_refused_naming_created_at() {
        let body =
            |at: &str| format!(r#"{{"course_id":1,"user_id":1,"rating":4,"created_at":{at}}}"#);
        for at in [
            r#""0000-01-01T00:00:00Z""#,
            r#""0000-12-31T23:59:59.999999Z""#,
            r#""0001-01-01T00:00:00+00:01""#,
            r#""-5000-01-01T00:00:00Z""#,
            r#""-0001-01-01T00:00:00Z""#,
            r#""+275760-09-13T00:00:00Z""#,
            r#""+10000-01-01T00:00:00Z""#,
            r#""10000-01-01T00:00:00Z""#,
            r#""9999-12-31T23:59:59-23:59""#,
            r#""2999-01-01T00:00:00Z""#,
            r#""2020-01-01T00:00:00+25:00""#,
            r#""2020-02-30T00:00:00Z""#,
            r#""2020-01-01T24:00:00Z""#,
            r#""2020-01-01T00:00:61Z""#,
            r#""2020-01-01T00:00:00""#,
            r#""2020-01-01""#,
            r#""infinity""#,
            r#""-infinity""#,
            r#""epoch""#,
            r#""now""#,
            r#""""#,
            r#""2020-01-01T00:00:00Z\u0000""#,
            "1577836800",
            "true",
            "[]",
            "{}",
        ] {
            let (status, field) = field_of(&body(at));
            assert_eq!(
                (status, field.as_deref()),
                (StatusCode::UNPROCESSABLE_ENTITY, Some("created_at")),
                "{at}"
            );
        }
        for at in [
            r#""0001-01-01T00:00:00Z""#,
            r#""0001-01-01T01:00:00+01:00""#,
            r#""2016-12-31T23:59:60Z""#,
            r#""2020-01-01T00:00:00.123456789Z""#,
            r#""2020-01-01t00:00:00z""#,
            "null",
        ] {
            assert_eq!(field_of(&body(at)), (StatusCode::CREATED, None), "{at}");
        }
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        for body in ["", "{", "[1]x", "{\"course_id\":1} trailing"] {
            assert_eq!(field_of(body).0, StatusCode::BAD_REQUEST, "{body:?}");
        }
    }

    #[test]
    fn ids_with_a_zero_fraction_are_integers_as_the_schema_says() {
        let body = r#"{"course_id":7.0,"user_id":1e0,"rating":4.5}"#;
        assert_eq!(field_of(body), (StatusCode::CREATED, None));
        for body in [
            r#"{"course_id":7.5,"user_id":1,"rating":4.5}"#,
            r#"{"course_id":1e30,"user_id":1,"rating":4.5}"#,
            r#"{"course_id":9223372036854775808,"user_id":1,"rating":4.5}"#,
        ] {
            assert_eq!(
                field_of(body),
                (StatusCode::UNPROCESSABLE_ENTITY, Some("course_id".into())),
                "{body}"
            );
        }
    }

    #[test]
    fn a_good_review_passes() {
        let body = r#"{"course_id":7,"user_id":9,"rating":4.5,"title":"Great","content":"Clear","created_at":"2026-01-02T03:04:05Z"}"#;
        assert_eq!(field_of(body), (StatusCode::CREATED, None));
    }
}
