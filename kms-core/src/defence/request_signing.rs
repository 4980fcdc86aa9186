//! Request signing: HMAC-SHA256 over a canonical request, a timestamp window, and a nonce
//! cache against replay. Every failure has its own code.
//!
//! The canonical request is, joined by `\n`:
//! `KMS-HMAC-SHA256`, the method in upper case, the path, the query with its `&`-separated
//! pairs sorted (bytes as sent, not decoded), the Unix timestamp, the nonce, and the hex
//! SHA-256 of the body. The signature is the hex HMAC-SHA256 of that under the shared secret.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::clock::Timestamp;

const SCHEME: &str = "KMS-HMAC-SHA256";
/// Longest nonce accepted.
pub const MAX_NONCE_LEN: usize = 128;
/// Default of how far, in seconds, a signed request's timestamp may be from now.
pub const DEFAULT_WINDOW_SECS: i64 = 300;
/// Default of how many nonces are remembered at once.
pub const DEFAULT_MAX_NONCES: u64 = 100_000;

/// The parts of a request that are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedRequest<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path, as sent (`/v1/apps`).
    pub path: &'a str,
    /// Raw query string without `?` (may be empty).
    pub query: &'a str,
    /// Unix seconds the client signed at.
    pub timestamp: i64,
    /// A value unique per request (8–128 of `[A-Za-z0-9_-]`). Method, path and query
    /// must not contain control characters.
    pub nonce: &'a str,
    /// The body bytes.
    pub body: &'a [u8],
}

/// Why a signed request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signature, timestamp or nonce is missing.
    #[error("the request is not signed")]
    Missing,
    /// A signature part is malformed.
    #[error("the request signature is malformed")]
    Malformed,
    /// The timestamp lies outside the accepted window.
    #[error("the request timestamp is outside the accepted window")]
    Stale,
    /// The nonce was seen before.
    #[error("the request was replayed")]
    Replayed,
    /// The signature does not match.
    #[error("the request signature does not match")]
    BadSignature,
}

impl SignatureError {
    /// A stable code for the wire (`signature_stale`).
    pub fn code(self) -> &'static str {
        match self {
            SignatureError::Missing => "signature_missing",
            SignatureError::Malformed => "signature_malformed",
            SignatureError::Stale => "signature_stale",
            SignatureError::Replayed => "signature_replayed",
            SignatureError::BadSignature => "signature_invalid",
        }
    }
}

/// The canonical form that is signed.
pub fn canonical_request(r: &SignedRequest<'_>) -> String {
    let mut pairs: Vec<&str> = r.query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_unstable();
    let body_hash = crate::hex::encode(&Sha256::digest(r.body));
    format!(
        "{SCHEME}\n{}\n{}\n{}\n{}\n{}\n{body_hash}",
        r.method.to_ascii_uppercase(),
        r.path,
        pairs.join("&"),
        r.timestamp,
        r.nonce
    )
}

fn mac(secret: &[u8], r: &SignedRequest<'_>) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable_mac());
    m.update(canonical_request(r).as_bytes());
    m
}

#[allow(
    clippy::panic,
    reason = "HMAC-SHA256 takes keys of every length; this is unreachable"
)]
fn unreachable_mac() -> Hmac<Sha256> {
    panic!("hmac rejected a key")
}

/// Signs `r` with `secret`: the hex signature.
pub fn sign_request(secret: &[u8], r: &SignedRequest<'_>) -> String {
    crate::hex::encode(&mac(secret, r).finalize().into_bytes())
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Verifies signed requests: window, nonce cache and constant-time comparison.
pub struct RequestVerifier {
    window_secs: i64,
    nonces: moka::sync::Cache<String, ()>,
}

impl std::fmt::Debug for RequestVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestVerifier")
            .field("window_secs", &self.window_secs)
            .finish()
    }
}

impl Default for RequestVerifier {
    /// A verifier with [`DEFAULT_WINDOW_SECS`] and [`DEFAULT_MAX_NONCES`].
    fn default() -> Self {
        RequestVerifier::new(DEFAULT_WINDOW_SECS, DEFAULT_MAX_NONCES)
    }
}

impl RequestVerifier {
    /// Accepts timestamps within `window_secs` of now, and remembers nonces long enough to
    /// refuse any replay inside the window (at most `max_nonces` at once).
    pub fn new(window_secs: i64, max_nonces: u64) -> Self {
        let ttl = Duration::from_secs(window_secs.max(1) as u64 * 2);
        RequestVerifier {
            window_secs,
            nonces: moka::sync::Cache::builder()
                .max_capacity(max_nonces)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Checks `signature` for `r` under `secret` at `now`. The nonce is spent only when the
    /// signature is valid, so forged requests cannot burn a client's nonces. `key_id` scopes
    /// nonces per signer.
    pub fn verify(
        &self,
        key_id: &str,
        secret: &[u8],
        r: &SignedRequest<'_>,
        signature: &str,
        now: Timestamp,
    ) -> Result<(), SignatureError> {
        self.verify_with(key_id, secret, r, signature, now, |nonce| {
            self.nonces.entry(nonce.to_owned()).or_insert(()).is_fresh()
        })
    }

    /// How long a nonce must be remembered to refuse every replay inside the window.
    pub(crate) fn nonce_ttl(&self) -> Duration {
        Duration::from_secs(self.window_secs.max(1) as u64 * 2)
    }

    /// [`RequestVerifier::verify`] with the nonce claimed by `claim` (given
    /// `<key_id>:<nonce>`, `true` when it was not seen before), e.g. in counters that
    /// several nodes share.
    pub(crate) fn verify_with(
        &self,
        key_id: &str,
        secret: &[u8],
        r: &SignedRequest<'_>,
        signature: &str,
        now: Timestamp,
        claim: impl FnOnce(&str) -> bool,
    ) -> Result<(), SignatureError> {
        if r.nonce.is_empty() || signature.is_empty() {
            return Err(SignatureError::Missing);
        }
        let nonce_ok = (8..=MAX_NONCE_LEN).contains(&r.nonce.len())
            && r.nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        // The canonical form separates fields with newlines; a control character inside a
        // field could move text from one field to another and let two requests share a
        // signature (a fuzzing finding), so such requests are refused outright.
        let fields_ok = [r.method, r.path, r.query]
            .iter()
            .all(|f| !f.chars().any(char::is_control));
        let Some(sig) = decode_hex(signature).filter(|_| nonce_ok && fields_ok) else {
            return Err(SignatureError::Malformed);
        };
        if (now.unix() - r.timestamp).abs() > self.window_secs {
            return Err(SignatureError::Stale);
        }
        mac(secret, r)
            .verify_slice(&sig)
            .map_err(|_| SignatureError::BadSignature)?;
        if claim(&format!("{key_id}:{}", r.nonce)) {
            Ok(())
        } else {
            Err(SignatureError::Replayed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req<'a>(body: &'a [u8], query: &'a str, nonce: &'a str, ts: i64) -> SignedRequest<'a> {
        SignedRequest {
            method: "post",
            path: "/v1/verify",
            query,
            timestamp: ts,
            nonce,
            body,
        }
    }

    #[test]
    fn valid_stale_replayed_and_tampered() {
        let v = RequestVerifier::new(300, 1000);
        let now = Timestamp::from_unix(1_000_000);
        let r = req(b"{\"a\":1}", "b=2&a=1", "nonce-0001", now.unix());
        let sig = sign_request(b"secret", &r);
        assert_eq!(v.verify("k", b"secret", &r, &sig, now), Ok(()));
        assert_eq!(
            v.verify("k", b"secret", &r, &sig, now),
            Err(SignatureError::Replayed)
        );
        let stale = req(b"{\"a\":1}", "", "nonce-0002", now.unix() - 301);
        let s2 = sign_request(b"secret", &stale);
        assert_eq!(
            v.verify("k", b"secret", &stale, &s2, now),
            Err(SignatureError::Stale)
        );
        let fresh = req(b"{\"a\":1}", "", "nonce-0003", now.unix());
        let s3 = sign_request(b"secret", &fresh);
        let tampered = req(b"{\"a\":2}", "", "nonce-0003", now.unix());
        assert_eq!(
            v.verify("k", b"secret", &tampered, &s3, now),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            v.verify("k", b"other", &fresh, &s3, now),
            Err(SignatureError::BadSignature)
        );
        // The forged attempt did not burn the nonce.
        assert_eq!(v.verify("k", b"secret", &fresh, &s3, now), Ok(()));
        assert_eq!(
            v.verify("k", b"secret", &fresh, "zz", now),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            v.verify("k", b"secret", &fresh, "", now),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn query_order_does_not_matter_but_content_does() {
        let a = canonical_request(&req(b"", "b=2&a=1", "n", 1));
        let b = canonical_request(&req(b"", "a=1&b=2", "n", 1));
        let c = canonical_request(&req(b"", "a=1&b=3", "n", 1));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    proptest! {
        #[test]
        fn any_change_to_a_signed_part_breaks_the_signature(
            body in proptest::collection::vec(any::<u8>(), 0..64),
            path in "/[a-z/]{0,20}",
            query in "([a-z]{1,3}=[a-z0-9]{0,3}&){0,3}",
            which in 0usize..5,
        ) {
            let r = SignedRequest { method: "GET", path: &path, query: &query, timestamp: 100, nonce: "abcdefgh", body: &body };
            let sig = sign_request(b"k", &r);
            let mut body2 = body.clone();
            body2.push(1);
            let path2 = format!("{path}x");
            let query2 = format!("{query}&zz=1");
            let changed = match which {
                0 => SignedRequest { body: &body2, ..r },
                1 => SignedRequest { path: &path2, ..r },
                2 => SignedRequest { query: &query2, ..r },
                3 => SignedRequest { timestamp: 101, ..r },
                _ => SignedRequest { method: "POST", ..r },
            };
            prop_assert_ne!(sign_request(b"k", &changed), sig);
        }

        #[test]
        fn canonical_form_is_independent_of_pair_order(mut pairs in proptest::collection::vec("[a-z]{1,3}=[a-z]{0,3}", 0..6)) {
            let q1 = pairs.join("&");
            pairs.reverse();
            let q2 = pairs.join("&");
            prop_assert_eq!(
                canonical_request(&req(b"", &q1, "n", 1)),
                canonical_request(&req(b"", &q2, "n", 1))
            );
        }
    }
}
