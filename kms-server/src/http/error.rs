//! The HTTP side of errors: every failure becomes API.md's error body
//! `{"error": {"code", "message", "request_id", "retryable", "details"}}` with the status
//! that fits its code.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// Seconds a client should wait before retrying a `503 unavailable`.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

/// An error answered to an HTTP client.
///
/// Its [`IntoResponse`] renders the body at once (with the request id given, if any) and
/// also stores the error in the response's extensions, so the server's error-body layer can
/// render it again with the request id of the request it answers.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Map<String, Value>,
    retry_after_secs: Option<u64>,
    request_id: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Map::new(),
            retry_after_secs: None,
            request_id: None,
        }
    }

    /// `400 invalid_request` listing one bad field.
    pub fn invalid_field(field: impl Into<String>, problem: impl Into<String>) -> Self {
        let field = field.into();
        let problem = problem.into();
        let mut err = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("invalid request: {field}: {problem}"),
        );
        err.details.insert(
            "fields".to_owned(),
            json!([{"field": field, "problem": problem}]),
        );
        err
    }

    /// `401 unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// `403 forbidden`, naming the missing permission in `details.required`.
    pub fn forbidden(required: impl Into<String>) -> Self {
        let required = required.into();
        let mut err = ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this call needs the permission {required}"),
        );
        err.details
            .insert("required".to_owned(), Value::String(required));
        err
    }

    /// `403 forbidden` for a request from a network the server refuses.
    pub fn network_denied() -> Self {
        let mut err = ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "requests from this network are not accepted",
        );
        err.details
            .insert("network".to_owned(), Value::String("denied".to_owned()));
        err
    }

    /// `404 not_found` for a path no route serves.
    pub fn no_route(path: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no endpoint at {}", printable(path, 200)),
        )
    }

    /// `405 method_not_allowed`.
    pub fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not support the request method; see the Allow header",
        )
    }

    /// `413 payload_too_large`.
    pub fn payload_too_large(limit_bytes: usize) -> Self {
        let mut err = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {limit_bytes} bytes"),
        );
        err.details
            .insert("limit_bytes".to_owned(), Value::from(limit_bytes));
        err
    }

    /// `415 unsupported_media_type`.
    pub fn unsupported_media_type() -> Self {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the request body must be JSON, sent with Content-Type: application/json",
        )
    }

    /// `503 unavailable` after the request ran longer than the server allows.
    pub fn timed_out() -> Self {
        let mut err = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the request took too long and was abandoned; retry shortly",
        );
        err.retry_after_secs = Some(UNAVAILABLE_RETRY_AFTER_SECS);
        err
    }

    /// `503 unavailable` when the store cannot be reached.
    pub fn unavailable() -> Self {
        let mut err = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service is temporarily unavailable; retry shortly",
        );
        err.retry_after_secs = Some(UNAVAILABLE_RETRY_AFTER_SECS);
        err
    }

    /// `500 internal`. The cause must already have been logged; nothing of it is shown.
    pub fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// The error a response without a JSON body of its own stands for, judged by its
    /// status (used for the plain responses of the router and of tower layers).
    pub fn for_status(status: StatusCode, path: &str) -> Self {
        match status {
            StatusCode::NOT_FOUND => ApiError::no_route(path),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::method_not_allowed(),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(0),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::unsupported_media_type(),
            StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => ApiError::timed_out(),
            StatusCode::UNAUTHORIZED => ApiError::unauthenticated("authentication is required"),
            StatusCode::FORBIDDEN => ApiError::new(StatusCode::FORBIDDEN, "forbidden", "forbidden"),
            s if s.is_client_error() => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the request could not be understood",
            ),
            _ => ApiError::internal(),
        }
    }

    /// Adds a detail to the error.
    pub fn with_detail(mut self, key: &str, value: Value) -> Self {
        self.details.insert(key.to_owned(), value);
        self
    }

    /// Replaces the message shown to the client.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// Sets the request id shown in the body.
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The wire code (`not_found`).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message shown to the client.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Seconds the client should wait before retrying (the `Retry-After` header), if any.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }

    /// Whether retrying the same call may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self.code, "unavailable" | "rate_limited")
    }

    /// The JSON body, with `request_id` as given.
    pub fn body(&self, request_id: &str) -> Value {
        json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "request_id": request_id,
                "retryable": self.retryable(),
                "details": self.details,
            }
        })
    }

    /// The full response, body rendered with `request_id`.
    pub fn to_response(&self, request_id: &str) -> Response {
        let body = self.body(request_id).to_string();
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            self.status.as_u16(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.to_response(self.request_id.as_deref().unwrap_or(""));
        response.extensions_mut().insert(self);
        response
    }
}

impl From<kms_core::Error> for ApiError {
    fn from(err: kms_core::Error) -> Self {
        use kms_core::Error as E;
        match err {
            E::InvalidRequest { fields } => {
                let mut out = ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", "");
                out.message = E::InvalidRequest {
                    fields: fields.clone(),
                }
                .to_string();
                out.details.insert("fields".to_owned(), json!(fields));
                out
            }
            E::Unauthenticated(message) => ApiError::unauthenticated(message),
            E::Forbidden { required } => ApiError::forbidden(required),
            E::LooserLimit { limit, ref own } => {
                let mut out = ApiError::new(StatusCode::FORBIDDEN, "forbidden", err.to_string());
                out.details.insert("limit".to_owned(), json!(limit));
                out.details.insert("own".to_owned(), json!(own));
                out
            }
            E::NotFound(message) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            E::Conflict(message) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            E::RateLimited { retry_after_secs } => {
                let mut out = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many requests; retry after {retry_after_secs} seconds"),
                );
                out.retry_after_secs = Some(retry_after_secs.max(1));
                out.details
                    .insert("retry_after_secs".to_owned(), Value::from(retry_after_secs));
                out
            }
            E::Unavailable { .. } => {
                tracing::warn!(error = %error_chain(&err), "store unavailable");
                ApiError::unavailable()
            }
            E::Internal { .. } => {
                tracing::error!(error = %error_chain(&err), "internal error");
                ApiError::internal()
            }
            other => {
                // A variant this server does not know yet: answer by its code.
                let code = other.code();
                tracing::warn!(error = %error_chain(&other), code = %code, "unmapped error variant");
                match code {
                    kms_core::ErrorCode::InvalidRequest => {
                        ApiError::invalid_field("request", other.to_string())
                    }
                    kms_core::ErrorCode::Unauthenticated => {
                        ApiError::unauthenticated(other.to_string())
                    }
                    kms_core::ErrorCode::NotFound => {
                        ApiError::new(StatusCode::NOT_FOUND, "not_found", other.to_string())
                    }
                    kms_core::ErrorCode::Conflict => {
                        ApiError::new(StatusCode::CONFLICT, "conflict", other.to_string())
                    }
                    kms_core::ErrorCode::Unavailable => ApiError::unavailable(),
                    _ => ApiError::internal(),
                }
            }
        }
    }
}

/// `err` followed by each of its sources, for operators' logs.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// At most `max` characters of `s`, with control characters escaped, for messages that
/// quote client input.
pub(crate) fn printable(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).flat_map(char::escape_default).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
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

    #[test]
    fn validation_errors_list_every_field() {
        let err = ApiError::from(kms_core::Error::InvalidRequest {
            fields: vec![
                kms_core::FieldError::new("name", "must not be empty"),
                kms_core::FieldError::new("scopes[1]", "is not a valid scope"),
            ],
        });
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        let body = err.body("req_1");
        assert_eq!(body["error"]["code"], "invalid_request");
        assert_eq!(body["error"]["request_id"], "req_1");
        assert_eq!(body["error"]["retryable"], false);
        assert_eq!(body["error"]["details"]["fields"][1]["field"], "scopes[1]");
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let err = ApiError::from(kms_core::Error::internal("disk sector 7 is on fire"));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.message(), "internal error");
        assert!(!err.body("r").to_string().contains("fire"));
    }

    #[test]
    fn unavailable_is_retryable_with_retry_after() {
        let err = ApiError::from(kms_core::Error::Unavailable {
            message: "locked".to_owned(),
            source: None,
        });
        let response = err.to_response("r");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        assert!(err.retryable());
    }

    #[test]
    fn forbidden_names_the_missing_permission() {
        let err = ApiError::from(kms_core::Error::Forbidden {
            required: "app.write".to_owned(),
        });
        assert_eq!(err.body("r")["error"]["details"]["required"], "app.write");
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        let response = ApiError::from(kms_core::Error::RateLimited {
            retry_after_secs: 7,
        })
        .to_response("r");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }
}
