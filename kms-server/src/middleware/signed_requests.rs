//! Signed requests, for applications that require them: after authentication, the
//! request's method, path, query, body and the headers `X-KMS-Timestamp` (Unix seconds),
//! `X-KMS-Nonce` and `X-KMS-Signature` (hex HMAC-SHA256 under the application's signing
//! secret) are checked by kms-core (see [`kms_core::request_signing`]). A failure answers
//! `401 unauthenticated` with `details.signature` naming it: `signature_missing`,
//! `signature_malformed`, `signature_stale`, `signature_replayed` or `signature_invalid`.
//!
//! Callers of applications that do not require signing pass untouched (their body is
//! buffered, within the body limit, as the handler would anyway).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kms_core::request_signing::{SignatureError, SignedRequest};
use kms_core::{Caller, Kms};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::middleware::body_limit::BodyLimit;
use crate::routes::blocking;

/// Unix seconds at which the client signed.
pub const X_KMS_TIMESTAMP: HeaderName = HeaderName::from_static("x-kms-timestamp");
/// A value unique per request (8–128 of `[A-Za-z0-9_-]`).
pub const X_KMS_NONCE: HeaderName = HeaderName::from_static("x-kms-nonce");
/// The hex HMAC-SHA256 of the canonical request.
pub const X_KMS_SIGNATURE: HeaderName = HeaderName::from_static("x-kms-signature");

/// Body limit used when the request carries none (it always does behind the server's
/// layers).
const FALLBACK_BODY_LIMIT: usize = 1024 * 1024;

/// The state of [`check_signature`].
#[derive(Debug, Clone)]
pub struct SignatureGate {
    /// The service.
    pub kms: Kms,
    /// Where refusals are counted.
    pub metrics: Arc<Metrics>,
}

/// The signature headers as sent; `None` for a header that is absent.
struct SignatureHeaders {
    timestamp: Option<String>,
    nonce: String,
    signature: String,
}

impl SignatureHeaders {
    fn of(headers: &HeaderMap) -> Self {
        let text = |name: &HeaderName| {
            headers
                .get(name)
                .map(|v| v.to_str().map(|s| s.trim().to_owned()).unwrap_or_default())
        };
        SignatureHeaders {
            timestamp: text(&X_KMS_TIMESTAMP),
            nonce: text(&X_KMS_NONCE).unwrap_or_default(),
            signature: text(&X_KMS_SIGNATURE).unwrap_or_default(),
        }
    }
}

/// Middleware (after authentication): checks the signature of calls by applications that
/// require signed requests.
pub async fn check_signature(
    State(gate): State<SignatureGate>,
    request: Request,
    next: Next,
) -> Response {
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let limit = parts
        .extensions
        .get::<BodyLimit>()
        .map_or(FALLBACK_BODY_LIMIT, |l| l.0);
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return ApiError::payload_too_large(limit).into_response();
    };
    let headers = SignatureHeaders::of(&parts.headers);
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let kms = gate.kms.clone();
    let body_for_check = bytes.clone();
    let checked = blocking(move || {
        check(
            &kms,
            &caller,
            &method,
            &path,
            &query,
            &headers,
            &body_for_check,
        )
    })
    .await;
    match checked {
        Ok(Ok(())) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(refusal)) => {
            gate.metrics.record_refused("bad_signature");
            ApiError::unauthenticated(refusal.to_string())
                .with_detail("signature", refusal.code().into())
                .into_response()
        }
        Err(err) => err.into_response(),
    }
}

/// The check itself: kms-core decides whether the caller's application requires a
/// signature and whether this one is good.
fn check(
    kms: &Kms,
    caller: &Caller,
    method: &str,
    path: &str,
    query: &str,
    headers: &SignatureHeaders,
    body: &Bytes,
) -> kms_core::Result<Result<(), SignatureError>> {
    let timestamp = match headers.timestamp.as_deref() {
        Some(t) => t.parse::<i64>().ok(),
        None => Some(0),
    };
    let unsigned = headers.timestamp.is_none() || headers.nonce.is_empty();
    let request = SignedRequest {
        method,
        path,
        query,
        timestamp: timestamp.unwrap_or(0),
        nonce: if unsigned { "" } else { &headers.nonce },
        body,
    };
    let signature = if unsigned { "" } else { &headers.signature };
    let verdict = kms.check_signed_request(caller, &request, signature)?;
    // An unreadable timestamp (checked as 0, so it can never pass or spend a nonce) is
    // malformed, when a signature is required at all.
    if timestamp.is_none() && !unsigned {
        return Ok(verdict.map_err(|_| SignatureError::Malformed));
    }
    Ok(verdict)
}
