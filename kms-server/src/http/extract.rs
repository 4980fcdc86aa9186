//! Request extractors that answer in the API's error shape: JSON bodies (415 for another
//! content type, 413 over the limit, 400 naming the problem for malformed JSON or a field
//! of the wrong type) and query strings.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::http::error::{printable, ApiError};
use crate::http::middleware::body_limit::BodyLimit;

/// A JSON request body, deserialized into `T`.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

/// A JSON request body that may be absent (no bytes at all), in which case `T::default()`.
#[derive(Debug, Clone)]
pub struct OptionalJsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(request.headers()) {
            return Err(ApiError::unsupported_media_type());
        }
        let bytes = read_body(request, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

impl<S, T> FromRequest<S> for OptionalJsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json_content_type(request.headers());
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        if !json {
            return Err(ApiError::unsupported_media_type());
        }
        parse_json(&bytes).map(OptionalJsonBody)
    }
}

/// Whether the request declares a JSON body (`application/json` or `application/*+json`,
/// parameters such as `charset` allowed).
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit = request.extensions().get::<BodyLimit>().map(|l| l.0);
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(limit.unwrap_or_default())
            } else {
                ApiError::invalid_field("body", "the request body could not be read")
            }
        })
}

/// Parses a JSON body, naming the offending field when the JSON is well formed but a
/// value has the wrong type or a required field is missing.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Syntax first, so trailing garbage is reported as malformed JSON, not as a field.
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| match e.classify() {
            serde_json::error::Category::Eof => ApiError::invalid_field(
                "body",
                format!(
                    "malformed JSON: the body ended early (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            ),
            _ => ApiError::invalid_field("body", format!("malformed JSON: {e}")),
        })?;
    // The common case costs one pass; the error paths below may take more.
    let first = match T::deserialize(&value) {
        Ok(parsed) => return Ok(parsed),
        Err(err) => err,
    };
    let mut value = value;
    let unknown = match unknown_field_name(&first) {
        Some(_) => strip_unknown_fields::<T>(&mut value),
        None => Vec::new(),
    };
    if !unknown.is_empty() {
        let fields = unknown
            .into_iter()
            .map(|(name, problem)| kms_core::FieldError::new(name, problem))
            .collect();
        return Err(ApiError::from(kms_core::Error::InvalidRequest { fields }));
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let missing = missing_field_name(&inner);
        let field = match (path.as_str(), missing) {
            ("" | ".", Some(name)) => name,
            ("" | ".", None) => "body".to_owned(),
            (p, Some(name)) => format!("{p}.{name}"),
            (p, None) => p.to_owned(),
        };
        ApiError::invalid_field(field, data_problem(&inner))
    })
}

/// The most unknown fields one refusal names.
const MAX_UNKNOWN_FIELDS_NAMED: usize = 16;

/// Every top-level field of `value` that `T` refuses as unknown (bodies that change an
/// object refuse fields they cannot change instead of ignoring them), each with serde's
/// problem; found by removing them one at a time, at most [`MAX_UNKNOWN_FIELDS_NAMED`] of
/// them (each try parses the body again, so a body of many unknown keys costs a bounded
/// number of parses).
fn strip_unknown_fields<T: DeserializeOwned>(
    value: &mut serde_json::Value,
) -> Vec<(String, String)> {
    let mut unknown = Vec::new();
    let Some(len) = value.as_object().map(serde_json::Map::len) else {
        return unknown;
    };
    for _ in 0..len.min(MAX_UNKNOWN_FIELDS_NAMED) {
        let Err(err) = serde_json::from_value::<T>(value.clone()) else {
            break;
        };
        let Some(name) = unknown_field_name(&err) else {
            break;
        };
        let Some(obj) = value.as_object_mut() else {
            break;
        };
        if obj.remove(&name).is_none() {
            break;
        }
        let problem =
            data_problem(&err).replacen(&format!("unknown field `{name}`"), "unknown field", 1);
        unknown.push((
            printable(&name, 64),
            format!("{problem}; it cannot be set here"),
        ));
    }
    unknown
}

/// The name in serde's "unknown field `x`, expected ..." message.
fn unknown_field_name(err: &serde_json::Error) -> Option<String> {
    let text = err.to_string();
    let rest = text.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    Some(rest[..end].to_owned())
}

/// The name in serde's "missing field `x`" message, which carries no path of its own.
fn missing_field_name(err: &serde_json::Error) -> Option<String> {
    let text = err.to_string();
    let rest = text.strip_prefix("missing field `")?;
    let end = rest.find('`')?;
    Some(rest[..end].to_owned())
}

/// serde's message without its position suffix, which means little to clients once the
/// field is named; echoed values are clipped.
fn data_problem(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let text = match text.rfind(" at line ") {
        Some(i) => &text[..i],
        None => &text,
    };
    printable(text, 300)
}

/// Query-string parameters deserialized into `T`; a bad parameter is a 400 naming it.
#[derive(Debug, Clone)]
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| QueryParams(v))
            .map_err(|rejection| {
                let text = rejection.body_text();
                let problem = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::invalid_field("query", printable(problem, 300))
            })
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Sample {
        name: String,
        #[serde(default)]
        limits: Option<Limits>,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Limits {
        #[allow(dead_code, reason = "only deserialized")]
        uses: u64,
    }

    fn field_of(err: &ApiError) -> String {
        err.body("r")["error"]["details"]["fields"][0]["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn malformed_json_is_an_invalid_request_about_the_body() {
        let err = parse_json::<Sample>(br#"{"name": "#).unwrap_err();
        assert_eq!(err.code(), "invalid_request");
        assert_eq!(field_of(&err), "body");
        let err = parse_json::<Sample>(br#"{"name": "a"} trailing"#).unwrap_err();
        assert_eq!(field_of(&err), "body");
    }

    #[test]
    fn wrong_types_name_the_field_by_path() {
        let err =
            parse_json::<Sample>(br#"{"name": "a", "limits": {"uses": "many"}}"#).unwrap_err();
        assert_eq!(field_of(&err), "limits.uses");
        let err = parse_json::<Sample>(br#"{"limits": null}"#).unwrap_err();
        assert_eq!(field_of(&err), "name");
    }

    #[test]
    fn well_formed_bodies_parse() {
        let s = parse_json::<Sample>(br#"{"name": "a"}"#).unwrap();
        assert_eq!(s.name, "a");
        assert!(s.limits.is_none());
    }

    #[test]
    fn content_types_are_recognised() {
        let mut h = HeaderMap::new();
        assert!(!is_json_content_type(&h));
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(is_json_content_type(&h));
        h.insert(
            header::CONTENT_TYPE,
            "application/merge-patch+json".parse().unwrap(),
        );
        assert!(is_json_content_type(&h));
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(!is_json_content_type(&h));
    }
}
