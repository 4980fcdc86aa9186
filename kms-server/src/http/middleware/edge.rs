//! The server's edge: one tower layer that every request passes first and every answer
//! last. In order, it
//!
//! 1. gives the request its id ([`request_id`]) and opens its log span ([`trace`]);
//! 2. resolves the client address and refuses denied networks ([`client_addr`]);
//! 3. under the request timeout ([`timeout`]): refuses bodies announced larger than the
//!    limit ([`body_limit`]), then runs the route, answering a panic with `500 internal`;
//! 4. gives error answers the JSON error body with the request id ([`error_body`]), adds
//!    the security headers ([`security_headers`]) and `x-request-id`;
//! 5. records the request in the metrics and logs the answer.
//!
//! Each step is a plain function of its own module; this layer only sequences them, so a
//! request costs one boxed future here instead of one per step (the steps used to be
//! `axum::middleware::from_fn` layers, each cloning a boxed service per request: a third of
//! the server's CPU time on `POST /v1/verify`, docs/PERFORMANCE.md).

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument;

use crate::http::error::ApiError;
use crate::http::middleware::client_addr::NetworkGate;
use crate::http::middleware::request_id::{RequestId, X_REQUEST_ID};
use crate::http::middleware::trace::RequestLog;
use crate::http::middleware::{body_limit, error_body, security_headers, timeout};
use crate::ops::metrics::Metrics;

/// The route label of requests no route matched (keeps label cardinality bounded).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The settings of the edge.
#[derive(Debug)]
pub struct EdgeSettings {
    /// Where requests are counted and timed.
    pub metrics: Arc<Metrics>,
    /// The deny-list and trusted proxies.
    pub network: NetworkGate,
    /// Longest a request may run before it is answered `503 unavailable`.
    pub request_timeout: Duration,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Whether responses carry `Strict-Transport-Security`.
    pub hsts: bool,
}

/// The layer: see the module documentation.
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    settings: Arc<EdgeSettings>,
}

impl EdgeLayer {
    /// The edge with `settings`.
    pub fn new(settings: EdgeSettings) -> Self {
        EdgeLayer {
            settings: Arc::new(settings),
        }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            settings: self.settings.clone(),
        }
    }
}

/// The service of [`EdgeLayer`].
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    settings: Arc<EdgeSettings>,
}

impl<S> Service<Request> for Edge<S>
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
        // The clone that was polled ready serves this request; a fresh clone stays behind.
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        let settings = self.settings.clone();
        Box::pin(async move { Ok(settings.serve(inner, request).await) })
    }
}

impl EdgeSettings {
    async fn serve<S>(&self, inner: S, mut request: Request) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        let started = tokio::time::Instant::now();
        let id = RequestId::from_client_or_new(request.headers().get(X_REQUEST_ID));
        request.extensions_mut().insert(id.clone());
        let matched = request.extensions().get::<MatchedPath>().cloned();
        let method = request.method().clone();
        let uri = request.uri().clone();
        let log = RequestLog {
            method: &method,
            path: uri.path(),
            route: matched.as_ref().map_or("", MatchedPath::as_str),
            request_id: id.as_str(),
        };
        let span = log.span();
        #[cfg(feature = "server")]
        crate::ops::telemetry::continue_trace(&span, request.headers());

        let response = async {
            self.network.admit(&mut request)?;
            // The body limit's drain of a refused body runs under the timeout too, so a
            // slow client cannot hold the connection with it.
            let limit = self.body_limit;
            let work = async move {
                let request = body_limit::admit(limit, request).await?;
                match AssertUnwindSafe(inner.oneshot(request))
                    .catch_unwind()
                    .await
                {
                    Ok(Ok(response)) => Ok(response),
                    Ok(Err(never)) => match never {},
                    Err(panic) => Err(panicked(panic)),
                }
            };
            match timeout::within(started, self.request_timeout, work).await {
                Some(result) => result,
                None => {
                    tracing::warn!(
                        limit_ms = self.request_timeout.as_millis() as u64,
                        "request timed out"
                    );
                    Err(ApiError::timed_out())
                }
            }
        }
        .instrument(span.clone())
        .await
        .unwrap_or_else(ApiError::into_response);

        let mut response = error_body::render(response, uri.path(), id.as_str());
        let headers = response.headers_mut();
        security_headers::apply(headers, self.hsts);
        if let Ok(value) = HeaderValue::from_str(id.as_str()) {
            headers.insert(X_REQUEST_ID, value);
        }
        let elapsed = started.elapsed();
        self.metrics.record_request(
            &method,
            matched
                .as_ref()
                .map_or(UNMATCHED_ROUTE, MatchedPath::as_str),
            response.status().as_u16(),
            elapsed,
        );
        log.answered(&span, response.status(), elapsed);
        response
    }
}

/// The error of a request whose handler panicked; the panic's message is logged.
fn panicked(panic: Box<dyn Any + Send + 'static>) -> ApiError {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or_default();
    tracing::error!(panic = %message, "a request handler panicked");
    ApiError::internal()
}
