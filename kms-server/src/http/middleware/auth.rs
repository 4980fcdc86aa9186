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

/// The name of the session cookie a login sets.
pub const SESSION_COOKIE: &str = "kms_session";

/// How browsers authenticate with the session cookie: accepted only when there is no
/// `Authorization` header, and for a change (`POST`, `PUT`, `PATCH`, `DELETE`) only with an
/// `Origin` equal to the public URL's (the CSRF defence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieAuth {
    /// `scheme://host[:port]` of the public URL.
    pub origin: String,
}

impl CookieAuth {
    /// The cookie policy for a server reached at `public_url`.
    pub fn for_public_url(public_url: &str) -> Self {
        let (scheme, rest) = public_url.split_once("://").unwrap_or(("http", public_url));
        let host = rest.split('/').next().unwrap_or(rest);
        CookieAuth {
            origin: format!(
                "{}://{}",
                scheme.to_ascii_lowercase(),
                host.to_ascii_lowercase()
            ),
        }
    }
}

/// The value of cookie `name` in `headers`, if sent (the first one).
pub fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|v| !v.is_empty() && v.len() <= MAX_CREDENTIAL_LEN)
}

/// The credential of `request`: its bearer token, or, without an `Authorization` header,
/// the session cookie (checked against CSRF for changes).
fn credential<'r>(request: &'r Request, cookies: Option<&CookieAuth>) -> Result<&'r str, ApiError> {
    let headers = request.headers();
    let Some(policy) = cookies else {
        return bearer_token(headers);
    };
    if headers.contains_key(header::AUTHORIZATION) {
        return bearer_token(headers);
    }
    let Some(cookie) = cookie_value(headers, SESSION_COOKIE) else {
        return bearer_token(headers);
    };
    if !cookie.starts_with(kms_core::SESSION_TOKEN_PREFIX) {
        return Err(ApiError::unauthenticated(
            "malformed credentials: the session cookie holds no session token",
        ));
    }
    let safe = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if !safe {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        if origin.as_deref() != Some(policy.origin.as_str()) {
            return Err(
                ApiError::forbidden("a matching Origin").with_message(format!(
                    "a change authenticated by the session cookie must carry Origin: {}",
                    policy.origin
                )),
            );
        }
    }
    Ok(cookie)
}

/// Authenticates the bearer token of `request` and stores the [`Caller`] in its
/// extensions. A key in the verified-key cache is checked inline; only a cold key (store
/// lookup and argon2id) goes to the blocking pool.
pub async fn authenticate(kms: &Kms, request: &mut Request) -> Result<(), ApiError> {
    authenticate_with(kms, request, None).await
}

/// [`authenticate`], also accepting the session cookie under `cookies`.
pub async fn authenticate_with(
    kms: &Kms,
    request: &mut Request,
    cookies: Option<&CookieAuth>,
) -> Result<(), ApiError> {
    let token = credential(request, cookies)?;
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
    cookies: Option<std::sync::Arc<CookieAuth>>,
}

impl AuthLayer {
    /// Authenticates against `kms`.
    pub fn new(kms: Kms) -> Self {
        AuthLayer { kms, cookies: None }
    }

    /// Also accepts the session cookie, under `cookies`.
    pub fn with_session_cookie(mut self, cookies: CookieAuth) -> Self {
        self.cookies = Some(std::sync::Arc::new(cookies));
        self
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            kms: self.kms.clone(),
            cookies: self.cookies.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Authenticated<S> {
    inner: S,
    kms: Kms,
    cookies: Option<std::sync::Arc<CookieAuth>>,
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
        let cookies = self.cookies.clone();
        Box::pin(async move {
            match authenticate_with(&kms, &mut request, cookies.as_deref()).await {
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
