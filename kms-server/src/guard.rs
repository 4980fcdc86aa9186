//! Guarding your own axum routes by scope, in-process.
//!
//! [`RequireScopeLayer`] wraps a [`Kms`]: for each request it reads the bearer token,
//! verifies it against a permission query, and either passes the request on, with the
//! [`Verification`](kms_core::Verification) in its extensions, or answers in the API's error shape:
//! `401 unauthenticated` (missing, malformed, unknown, revoked, expired, disabled),
//! `403 forbidden` (valid but lacking the query); a network outside the allow-list is a
//! `401` as in bearer authentication (one mapping, `Verification::refusal`);
//! `429 rate_limited` with the real wait (its rate limit is spent, or its source is locked out).
//!
//! ```
//! use std::sync::Arc;
//!
//! use axum::routing::get;
//! use axum::{Extension, Router};
//! use kms_core::{HashParams, Kms, Verification};
//! use kms_server::guard::RequireScopeLayer;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let kms = Kms::builder(Arc::new(kms_store::MemoryStore::new()))
//!     .hash_params(kms_core::dangerous::insecure_hash_params())
//!     .build()?;
//!
//! async fn invoices(Extension(v): Extension<Verification>) -> String {
//!     format!("invoices for {}", v.app_id().unwrap_or_default())
//! }
//!
//! let app: Router = Router::new()
//!     .route("/invoices", get(invoices))
//!     .route_layer(RequireScopeLayer::new(kms, "billing.read")?);
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use kms_core::{Kms, PermissionQuery};
use tower::{Layer, Service};

use crate::http::blocking::cached_else_blocking;
use crate::http::error::ApiError;
use crate::http::middleware::auth::{bearer_token, client_ip};
use crate::http::middleware::request_id::{RequestId, X_REQUEST_ID};

/// What conditions on grants see as `context.NAME`, taken from each request.
pub type ContextFn =
    Arc<dyn Fn(&Request) -> serde_json::Map<String, serde_json::Value> + Send + Sync>;

/// A layer that admits only requests whose bearer token satisfies a permission query.
#[derive(Clone)]
pub struct RequireScopeLayer {
    kms: Kms,
    query: Arc<PermissionQuery>,
    shown: Arc<str>,
    context: Option<ContextFn>,
}

impl std::fmt::Debug for RequireScopeLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireScopeLayer")
            .field("query", &self.shown)
            .field("context", &self.context.is_some())
            .finish_non_exhaustive()
    }
}

impl RequireScopeLayer {
    /// A guard requiring `query`: a scope (`billing.read`) or an expression such as
    /// `billing.read AND (billing.write OR admin)`. Fails when the query does not parse.
    pub fn new(kms: Kms, query: &str) -> Result<Self, kms_core::Error> {
        Ok(RequireScopeLayer {
            kms,
            query: Arc::new(PermissionQuery::parse(query)?),
            shown: Arc::from(query),
            context: None,
        })
    }

    /// Gives conditional grants a context built from each request (a header, the path,
    /// anything the request carries): `context.NAME` in their conditions reads it.
    pub fn with_context(
        mut self,
        context: impl Fn(&Request) -> serde_json::Map<String, serde_json::Value> + Send + Sync + 'static,
    ) -> Self {
        self.context = Some(Arc::new(context));
        self
    }
}

impl<S> Layer<S> for RequireScopeLayer {
    type Service = RequireScope<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScope {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`RequireScopeLayer`].
#[derive(Clone, Debug)]
pub struct RequireScope<S> {
    inner: S,
    layer: RequireScopeLayer,
}

impl<S> Service<Request> for RequireScope<S>
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
        // The clone may not be ready; keep the one that is (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let request_id = request
                .extensions()
                .get::<RequestId>()
                .cloned()
                .unwrap_or_else(|| {
                    RequestId::from_client_or_new(request.headers().get(X_REQUEST_ID))
                });
            let refuse = |err: ApiError| {
                let mut response = err.with_request_id(request_id.as_str()).into_response();
                if let Ok(v) = request_id.as_str().parse() {
                    response.headers_mut().insert(X_REQUEST_ID, v);
                }
                Ok(response)
            };
            let token = match bearer_token(request.headers()) {
                Ok(t) => t.to_owned(),
                Err(err) => return refuse(err),
            };
            let ip = client_ip(&request);
            let context = layer.context.as_ref().map(|f| f(&request));
            // A cached key is checked inline; only a cold one goes to the blocking pool.
            let verified = cached_else_blocking(
                &layer.kms,
                &(token, Arc::clone(&layer.query), context),
                |kms, (token, query, context)| match context {
                    Some(c) => kms.try_verify_token_in_context_cached(token, Some(query), ip, c),
                    None => kms.try_verify_token_cached(token, Some(query), ip),
                },
                move |kms, (token, query, context)| match &context {
                    Some(c) => kms.verify_token_in_context(&token, Some(&query), ip, c),
                    None => kms.verify_token(&token, Some(&query), ip),
                },
            )
            .await;
            let verification = match verified {
                Ok(v) => v,
                Err(err) => return refuse(ApiError::from(err)),
            };
            match verification
                .refusal("the bearer token", Some(&layer.shown))
                .map(ApiError::from)
            {
                Some(err) => refuse(err),
                None => {
                    request.extensions_mut().insert(verification);
                    inner.call(request).await
                }
            }
        })
    }
}
