//! Bearer authentication for `/v1`: the token in `Authorization: Bearer <token>` becomes
//! the request's [`Caller`], or the request is answered `401 unauthenticated`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use kms_core::{Caller, Kms};
use tower::{Layer, Service, ServiceExt};

pub use crate::http::middleware::client_addr::client_ip;

use crate::http::blocking::cached_else_blocking;
use crate::http::error::ApiError;
use crate::http::middleware::request_id::RequestId;

/// Longest credential looked at; kms tokens are at most 64 characters.
const MAX_CREDENTIAL_LEN: usize = 1024;

/// The bearer credential of `headers`, or why there is none. The message never repeats
/// the credential.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or_else(|| {
        ApiError::unauthenticated("missing credentials: send Authorization: Bearer <token>")
    })?;
    if values.next().is_some() {
        return Err(ApiError::unauthenticated(
            "malformed credentials: send exactly one Authorization header",
        ));
    }
    let malformed = || {
        ApiError::unauthenticated("malformed credentials: expected Authorization: Bearer <token>")
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.len() > MAX_CREDENTIAL_LEN
        || token.contains(char::is_whitespace)
    {
        return Err(malformed());
    }
    Ok(token)
}

/// Authenticates the bearer token of `request` and stores the [`Caller`] in its
/// extensions. A key in the verified-key cache is checked inline; only a cold key (store
/// lookup and argon2id) goes to the blocking pool.
pub async fn authenticate(kms: &Kms, request: &mut Request) -> Result<(), ApiError> {
    let token = bearer_token(request.headers())?;
    let ip = client_ip(request);
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.as_str().to_owned());
    let caller: Caller = cached_else_blocking(
        kms,
        token,
        |kms, token| kms.try_authenticate_cached(token, ip),
        move |kms, token| kms.authenticate(&token, ip),
    )
    .await?;
    // The address and request id go into the audit events of the call.
    request
        .extensions_mut()
        .insert(caller.with_request(ip, request_id));
    Ok(())
}

/// Bearer authentication as a route layer: requests that fail [`authenticate`] are
/// answered with its error and never reach the route.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    kms: Kms,
}

impl AuthLayer {
    /// Authenticates against `kms`.
    pub fn new(kms: Kms) -> Self {
        AuthLayer { kms }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            kms: self.kms.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Authenticated<S> {
    inner: S,
    kms: Kms,
}

impl<S> Service<Request> for Authenticated<S>
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

    fn call(&mut self, mut request: Request) -> Self::Future {
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        let kms = self.kms.clone();
        Box::pin(async move {
            match authenticate(&kms, &mut request).await {
                Ok(()) => inner.oneshot(request).await,
                Err(err) => Ok(err.into_response()),
            }
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
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_tokens_are_extracted() {
        assert_eq!(
            bearer_token(&headers("Bearer kms_abc")).ok(),
            Some("kms_abc")
        );
        assert_eq!(
            bearer_token(&headers("bearer kms_abc")).ok(),
            Some("kms_abc")
        );
    }

    #[test]
    fn missing_or_malformed_credentials_are_unauthenticated() {
        assert!(bearer_token(&HeaderMap::new()).is_err());
        for bad in ["Basic abc", "Bearer", "Bearer ", "Bearer a b", "kms_abc"] {
            let err = bearer_token(&headers(bad)).err().map(|e| e.code());
            assert_eq!(err, Some("unauthenticated"), "{bad}");
        }
    }
}
