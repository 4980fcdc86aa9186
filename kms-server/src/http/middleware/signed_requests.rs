//! Signed requests, for applications that require them: the request's method, path,
//! query, body and the headers `X-KMS-Timestamp` (Unix seconds), `X-KMS-Nonce` and
//! `X-KMS-Signature` (hex HMAC-SHA256 under the application's signing secret) are checked
//! by kms-core (see [`kms_core::request_signing`]).
//!
//! Every call made on such an application's behalf is covered: as middleware after bearer
//! authentication ([`SignatureLayer`]) on the management routes and `/v1/verify`, and
//! through [`verify`] from the OAuth endpoints, which authenticate themselves: the
//! `api_key` grant, introspection and revocation by their bearer's application, and the
//! `refresh_token` grant by the application of the refresh token's family, checked before
//! the refresh token is spent. A failure answers `401 unauthenticated` with
//! `details.signature` naming it (`signature_missing`, `signature_malformed`,
//! `signature_stale`, `signature_replayed` or `signature_invalid`); the OAuth endpoints
//! answer `401 invalid_client` in their own shape, the code in `error_description`.
//!
//! Callers of applications that do not require signing pass untouched (their body is
//! buffered, within the body limit, as the handler would anyway).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use axum::response::{IntoResponse, Response};
use kms_core::request_signing::{SignatureError, SignedRequest};
use kms_core::{Caller, Kms};
use tower::{Layer, Service, ServiceExt};

use crate::http::blocking::blocking;
use crate::http::error::ApiError;
use crate::http::middleware::body_limit::BodyLimit;
use crate::ops::metrics::Metrics;

/// Unix seconds at which the client signed.
pub const X_KMS_TIMESTAMP: HeaderName = HeaderName::from_static("x-kms-timestamp");
/// A value unique per request (8–128 of `[A-Za-z0-9_-]`).
pub const X_KMS_NONCE: HeaderName = HeaderName::from_static("x-kms-nonce");
/// The hex HMAC-SHA256 of the canonical request.
pub const X_KMS_SIGNATURE: HeaderName = HeaderName::from_static("x-kms-signature");

/// Body limit used when the request carries none (it always does behind the server's
/// layers).
const FALLBACK_BODY_LIMIT: usize = crate::http::server::DEFAULT_BODY_LIMIT;

/// The signature check as a route layer, after bearer authentication: a call by a caller
/// whose application requires signed requests reaches the route only with a good
/// signature.
#[derive(Debug, Clone)]
pub struct SignatureLayer {
    kms: Kms,
    metrics: Arc<Metrics>,
}

impl SignatureLayer {
    /// Checks with `kms`, counting refusals in `metrics`.
    pub fn new(kms: Kms, metrics: Arc<Metrics>) -> Self {
        SignatureLayer { kms, metrics }
    }
}

impl<S> Layer<S> for SignatureLayer {
    type Service = SignatureChecked<S>;

    fn layer(&self, inner: S) -> SignatureChecked<S> {
        SignatureChecked {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`SignatureLayer`].
#[derive(Debug, Clone)]
pub struct SignatureChecked<S> {
    inner: S,
    layer: SignatureLayer,
}

impl<S> Service<Request> for SignatureChecked<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        let layer = self.layer.clone();
        Box::pin(async move {
            let Some(caller) = request.extensions().get::<Caller>().cloned() else {
                return inner.oneshot(request).await;
            };
            let (parts, bytes) = match buffered(request).await {
                Ok(buffered) => buffered,
                Err(e) => return Ok(e.into_response()),
            };
            let signed = SignedParts::of(&parts, bytes.clone());
            match verify(&layer.kms, &layer.metrics, Signer::Caller(caller), signed).await {
                Ok(Ok(())) => {
                    inner
                        .oneshot(Request::from_parts(parts, Body::from(bytes)))
                        .await
                }
                Ok(Err(error)) => Ok(refusal(error).into_response()),
                Err(err) => Ok(err.into_response()),
            }
        })
    }
}

/// Whose application's signing policy covers a request.
#[derive(Debug, Clone)]
pub enum Signer {
    /// A caller authenticated by an API key (management calls, `/v1/verify`,
    /// introspection, revocation, the `api_key` grant).
    Caller(Caller),
    /// A `refresh_token` grant, which carries no bearer: the application of the refresh
    /// token's family.
    RefreshToken(String),
}

/// The signature headers as sent; `None` for a header that is absent.
#[derive(Debug, Clone)]
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

/// What a request's signature covers, read from the request as sent.
#[derive(Debug, Clone)]
pub struct SignedParts {
    method: String,
    path: String,
    query: String,
    headers: SignatureHeaders,
    body: Bytes,
}

impl SignedParts {
    /// The body as sent.
    pub fn body(&self) -> Bytes {
        self.body.clone()
    }

    /// The signed parts of a request with head `parts` and body `body`.
    pub fn of(parts: &Parts, body: Bytes) -> Self {
        SignedParts {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            headers: SignatureHeaders::of(&parts.headers),
            body,
        }
    }
}

/// Reads `request`'s body whole, within the body limit in force, so its signature can be
/// checked before the handler reads it.
pub async fn buffered(request: Request) -> Result<(Parts, Bytes), ApiError> {
    let (parts, body) = request.into_parts();
    let limit = parts
        .extensions
        .get::<BodyLimit>()
        .map_or(FALLBACK_BODY_LIMIT, |l| l.0);
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok((parts, bytes)),
        Err(_) => Err(ApiError::payload_too_large(limit)),
    }
}

/// The verdict on `signed` for `signer` (kms-core decides whether its application requires
/// a signature and whether this one is good), on the blocking pool. Refusals are counted.
pub async fn verify(
    kms: &Kms,
    metrics: &Metrics,
    signer: Signer,
    signed: SignedParts,
) -> Result<Result<(), SignatureError>, ApiError> {
    let kms = kms.clone();
    let verdict = blocking(move || check(&kms, &signer, &signed)).await?;
    if verdict.is_err() {
        metrics.record_refused("bad_signature");
    }
    Ok(verdict)
}

/// The API's answer to a refused signature: `401 unauthenticated` naming it in
/// `details.signature`.
pub fn refusal(error: SignatureError) -> ApiError {
    ApiError::unauthenticated(error.to_string()).with_detail("signature", error.code().into())
}

/// The check itself, for either kind of signer.
fn check(
    kms: &Kms,
    signer: &Signer,
    signed: &SignedParts,
) -> kms_core::Result<Result<(), SignatureError>> {
    let headers = &signed.headers;
    let timestamp = match headers.timestamp.as_deref() {
        Some(t) => t.parse::<i64>().ok(),
        None => Some(0),
    };
    let unsigned = headers.timestamp.is_none() || headers.nonce.is_empty();
    let request = SignedRequest {
        method: &signed.method,
        path: &signed.path,
        query: &signed.query,
        timestamp: timestamp.unwrap_or(0),
        nonce: if unsigned { "" } else { &headers.nonce },
        body: &signed.body,
    };
    let signature = if unsigned { "" } else { &headers.signature };
    let verdict = match signer {
        Signer::Caller(caller) => kms.check_signed_request(caller, &request, signature)?,
        Signer::RefreshToken(token) => kms.check_signed_refresh(token, &request, signature)?,
    };
    // An unreadable timestamp (checked as 0, so it can never pass or spend a nonce) is
    // malformed, when a signature is required at all.
    if timestamp.is_none() && !unsigned {
        return Ok(verdict.map_err(|_| SignatureError::Malformed));
    }
    Ok(verdict)
}
