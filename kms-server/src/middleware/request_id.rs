//! Request ids: each request gets one (the client's `x-request-id` when it is sane, else a
//! fresh one), handlers and logs see it, and every response carries it back.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The header carrying the request id.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id accepted from a client.
const MAX_CLIENT_ID_LEN: usize = 128;

/// The id of the request being served, in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The client's id when it is 1–128 characters of `[A-Za-z0-9._:-]`; anything else
    /// could smuggle text into logs, so it is replaced by a fresh id.
    pub fn from_client_or_new(client: Option<&HeaderValue>) -> Self {
        client
            .and_then(|v| v.to_str().ok())
            .filter(|s| is_acceptable(s))
            .map(|s| RequestId(s.to_owned()))
            .unwrap_or_else(RequestId::generate)
    }

    /// A fresh random id (`req_` and 24 hex digits).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 12];
        if getrandom::getrandom(&mut bytes).is_err() {
            // Ids only correlate logs; uniqueness from the clock is good enough then.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            bytes.copy_from_slice(&nanos.to_le_bytes()[..12]);
        }
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        RequestId(format!("req_{hex}"))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_acceptable(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CLIENT_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Middleware: assigns the request id and sets `x-request-id` on the response.
pub async fn assign_request_id(mut request: Request, next: Next) -> Response {
    let id = RequestId::from_client_or_new(request.headers().get(X_REQUEST_ID));
    request.extensions_mut().insert(id.clone());
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    response
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
    fn sane_client_ids_are_kept() {
        let v = HeaderValue::from_static("abc-123_x.y:z");
        assert_eq!(
            RequestId::from_client_or_new(Some(&v)).as_str(),
            "abc-123_x.y:z"
        );
    }

    #[test]
    fn odd_client_ids_are_replaced() {
        for bad in ["", "has space", "semi;colon", &"x".repeat(129)] {
            let v = HeaderValue::from_str(bad).unwrap_or(HeaderValue::from_static(""));
            let id = RequestId::from_client_or_new(Some(&v));
            assert!(id.as_str().starts_with("req_"), "{bad}");
        }
    }

    #[test]
    fn generated_ids_differ() {
        assert_ne!(RequestId::generate(), RequestId::generate());
        assert_eq!(RequestId::generate().as_str().len(), 4 + 24);
    }
}
