//! One result of the reviews resource turned into a row of `reviews`, or into the reason it
//! cannot be one. The rules are the API's (`crate::contract::review`): an imported review is one that
//! POST /reviews would have accepted, so no figure depends on how a review arrived.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::contract::review::{self, Rating, MAX_CONTENT_CHARS, MAX_TITLE_CHARS};

/// A review ready to be stored under its id at the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub id: i64,
    pub user_id: i64,
    pub rating: Rating,
    pub title: Option<String>,
    pub content: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Why a result was left out; `id` when it had a usable one, so the warning can name it.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub id: Option<i64>,
    pub reason: String,
}

/// What a course is called at the source: the course object of the API 2.0 shape
/// (`{"id", "title", "url"}`), which a review result carries when the server was asked for it
/// (fields[course_review]) or sends it anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Course {
    pub title: String,
    /// Absolute: the API gives a path (`/course/rust/`), resolved against the import's URL.
    pub url: Option<String>,
}

/// The longest title and URL reviewflow_catalog.courses takes (migration V10).
const MAX_COURSE_TITLE_CHARS: usize = 500;
const MAX_COURSE_URL_CHARS: usize = 2000;

/// The course object of `result` when it is of `course` and has a usable title; why not
/// when it has one that cannot be stored. None when there is none.
pub fn course_of(
    result: &Value,
    course: i64,
    base: &reqwest::Url,
) -> Option<Result<Course, String>> {
    let object = result.get("course")?;
    if object.get("id").and_then(Value::as_i64) != Some(course) {
        return None;
    }
    let title = match object.get("title") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.trim(),
        None | Some(Value::Null) => return None,
        Some(other) => {
            return Some(Err(format!(
                "the course's title must be a non-empty string, not {}",
                shown(Some(other))
            )))
        }
    };
    if title.chars().count() > MAX_COURSE_TITLE_CHARS || title.contains('\0') {
        return Some(Err(format!(
            "the course's title must be at most {MAX_COURSE_TITLE_CHARS} characters, without NUL"
        )));
    }
    let url = object
        .get("url")
        .and_then(Value::as_str)
        .and_then(|u| base.join(u.trim()).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .map(String::from)
        .filter(|u| u.chars().count() <= MAX_COURSE_URL_CHARS);
    Some(Ok(Course {
        title: title.to_string(),
        url,
    }))
}

/// `course` is the course asked for; `now` bounds created_at like the API does.
pub fn convert(result: &Value, course: i64, now: DateTime<Utc>) -> Result<Imported, Skipped> {
    let id = result
        .get("id")
        .and_then(Value::as_i64)
        .filter(|id| *id > 0);
    let skip = |reason: String| Skipped { id, reason };
    let Some(id) = id else {
        return Err(skip(format!(
            "id must be a positive integer, not {}",
            shown(result.get("id"))
        )));
    };
    // Present only when the caller asked for it (fields[course_review]); a review of
    // another course must not be filed under this one.
    if let Some(other) = result.pointer("/course/id").and_then(Value::as_i64) {
        if other != course {
            return Err(skip(format!("it belongs to course {other}, not {course}")));
        }
    }
    let rating = stars(result.get("rating"))
        .and_then(Rating::from_stars)
        .ok_or_else(|| {
            skip(format!(
                "{}, not {}",
                review::RATING_RULE,
                shown(result.get("rating"))
            ))
        })?;
    let created_at = match result.get("created") {
        Some(Value::String(text)) => DateTime::parse_from_rfc3339(text)
            .map_err(|e| {
                skip(format!(
                    "created {text:?} is not an ISO-8601 date-time: {e}"
                ))
            })?
            .with_timezone(&Utc),
        other => {
            return Err(skip(format!(
                "created must be an ISO-8601 date-time, not {}",
                shown(other)
            )))
        }
    };
    if let Some(fault) = review::created_at_fault("created", created_at, now) {
        return Err(skip(fault));
    }
    Ok(Imported {
        id,
        user_id: user_id(result.get("user")),
        rating,
        title: text(result, "title", MAX_TITLE_CHARS).map_err(skip)?,
        content: text(result, "content", MAX_CONTENT_CHARS).map_err(skip)?,
        created_at,
    })
}

/// The API sends a number; the original producer's records carried a string ("4.5"), so a
/// string of a number is taken too.
fn stars(rating: Option<&Value>) -> Option<f64> {
    match rating? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(result: &Value, field: &str, max_chars: usize) -> Result<Option<String>, String> {
    match result.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match review::text_fault(field, s, max_chars) {
            Some(fault) => Err(fault),
            None => Ok(Some(s.clone())),
        },
        Some(other) => Err(format!(
            "{field} must be a string, not {}",
            shown(Some(other))
        )),
    }
}

/// The reviewer as a stable positive id. The resource names reviewers but gives no id, so the
/// id is the FNV-1a (64-bit) hash of the first non-empty of `display_name`, `title`, `name`,
/// kept to its low 63 bits: the same name maps to the same id on every run and machine, with
/// no table to keep. Reviewers who share a display name share an id (the API anonymises
/// some as "Anonymized User"), and one with no name at all hashes the empty string.
pub fn user_id(user: Option<&Value>) -> i64 {
    let name = ["display_name", "title", "name"]
        .iter()
        .filter_map(|key| user?.get(key)?.as_str())
        .map(str::trim)
        .find(|name| !name.is_empty())
        .unwrap_or("");
    let id = (fnv1a_64(name.as_bytes()) & i64::MAX as u64) as i64;
    // user_id must be positive (the table checks it); 0 takes 2^-63 luck.
    id.max(1)
}

fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A value as a warning quotes it: short, and "nothing" when absent.
fn shown(value: Option<&Value>) -> String {
    match value {
        None => "nothing".into(),
        Some(v) => {
            let text = v.to_string();
            match text.char_indices().nth(40) {
                Some((cut, _)) => format!("{}...", &text[..cut]),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn good() -> Value {
        json!({"id": 123, "rating": 4.5, "content": "Clear", "created": "2025-05-26T05:20:36-07:00",
               "modified": "2025-05-27T00:00:00Z",
               "user": {"title": "Jane Doe", "name": "Jane", "display_name": "Jane D."},
               "course": {"id": 7, "title": "Rust"}})
    }

    #[test]
    fn a_result_becomes_a_row() {
        let got = convert(&good(), 7, now()).unwrap();
        assert_eq!(got.id, 123);
        assert_eq!(got.rating.stars(), 4.5);
        assert_eq!(got.content.as_deref(), Some("Clear"));
        assert_eq!(got.title, None);
        assert_eq!(got.created_at.to_rfc3339(), "2025-05-26T12:20:36+00:00");
        assert_eq!(
            got.user_id,
            user_id(Some(&json!({"display_name": "Jane D."})))
        );
        let mut string_rating = good();
        string_rating["rating"] = json!("3.0");
        assert_eq!(
            convert(&string_rating, 7, now()).unwrap().rating.stars(),
            3.0
        );
    }

    #[test]
    fn bad_results_are_skipped_with_a_reason() {
        let cases: [(&str, Value, Option<i64>); 9] = [
            ("id", Value::Null, None),
            ("id", json!(-4), None),
            ("rating", json!(4.25), Some(123)),
            ("rating", json!(0), Some(123)),
            ("rating", Value::Null, Some(123)),
            ("created", json!("yesterday"), Some(123)),
            ("created", json!("2999-01-01T00:00:00Z"), Some(123)),
            ("content", json!("x".repeat(10_001)), Some(123)),
            ("course", json!({"id": 8}), Some(123)),
        ];
        for (field, value, id) in cases {
            let mut result = good();
            result[field] = value;
            let skipped = convert(&result, 7, now()).unwrap_err();
            assert_eq!(skipped.id, id, "{field}");
            assert!(!skipped.reason.is_empty());
        }
        let mut no_created = good();
        no_created.as_object_mut().unwrap().remove("created");
        assert!(convert(&no_created, 7, now()).is_err());
    }

    #[test]
    fn the_course_object_names_the_course() {
        let base = reqwest::Url::parse("https://www.udemy.com/api-2.0/").unwrap();
        let mut result = good();
        result["course"] =
            json!({"_class": "course", "id": 7, "title": " Rust ", "url": "/course/rust/"});
        assert_eq!(
            course_of(&result, 7, &base),
            Some(Ok(Course {
                title: "Rust".into(),
                url: Some("https://www.udemy.com/course/rust/".into())
            }))
        );
        assert_eq!(course_of(&result, 8, &base), None, "another course's");
        result["course"]["url"] = json!("javascript:alert(1)");
        assert_eq!(course_of(&result, 7, &base).unwrap().unwrap().url, None);
        result["course"]["title"] = json!(12);
        assert!(course_of(&result, 7, &base).unwrap().is_err());
        result.as_object_mut().unwrap().remove("course");
        assert_eq!(course_of(&result, 7, &base), None, "no course object");
    }

    #[test]
    fn user_ids_are_stable_positive_63_bit_hashes() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c; its low 63 bits:
        assert_eq!(
            user_id(Some(&json!({"display_name": "a"}))),
            0x2f63_dc4c_8601_ec8c
        );
        let by_title = user_id(Some(&json!({"display_name": " ", "title": "a"})));
        assert_eq!(by_title, 0x2f63_dc4c_8601_ec8c);
        assert!(user_id(None) > 0);
        assert_eq!(user_id(None), user_id(Some(&json!({}))));
    }
}
