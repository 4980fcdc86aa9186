//! Request ids: each request gets one (the client's `x-request-id` when it is sane, else a
//! fresh one), handlers and logs see it, and every response carries it back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use axum::http::{HeaderName, HeaderValue};

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

    /// A fresh id: `req_`, 12 hex digits of a random per-process prefix and 12 of a
    /// counter. Unique within a process (2^48 ids) and, with high probability, across
    /// processes; not a secret, and cheap: no system call per request.
    pub fn generate() -> Self {
        static PREFIX: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(|| {
            let mut bytes = [0u8; 8];
            if getrandom::getrandom(&mut bytes).is_err() {
                // Ids only correlate logs; the clock is good enough then.
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                bytes.copy_from_slice(&nanos.to_le_bytes()[..8]);
            }
            u64::from_le_bytes(bytes)
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(4 + 24);
        id.push_str("req_");
        push_hex48(&mut id, prefix);
        push_hex48(&mut id, n);
        RequestId(id)
    }
}

/// Appends the low 48 bits of `v` as 12 lower-case hex digits.
fn push_hex48(out: &mut String, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..12).rev() {
        let digit = (v >> (shift * 4)) & 0xf;
        out.push(char::from(HEX[digit as usize]));
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
        let id = RequestId::generate();
        assert_eq!(id.as_str().len(), 4 + 24);
        assert!(is_acceptable(id.as_str()));
        assert!(id.as_str()[4..].bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
