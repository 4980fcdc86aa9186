//! Request logs: a span per request (method, path, route template, request id) and one line
//! per answer with its status and latency. Headers and bodies are never logged, so neither
//! bearer tokens nor issued secrets reach a log line.
//!
//! Routes a service calls on every request of its own users, and the probes, are *quiet*:
//! their successful answers are logged at DEBUG, not INFO (every verification is still
//! counted in the metrics; failures are logged at INFO, server errors at ERROR). A line per
//! verification would cost more than the verification itself (see docs/PERFORMANCE.md).

use std::time::Duration;

use axum::http::{Method, StatusCode};
use tracing::Span;

/// Routes whose successful answers are logged at DEBUG.
pub const QUIET_ROUTES: [&str; 5] = [
    "/v1/verify",
    "/healthz",
    "/readyz",
    "/metrics",
    "/.well-known/jwks.json",
];

/// What the log lines of one request say about it.
#[derive(Debug, Clone, Copy)]
pub struct RequestLog<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path, without the query.
    pub path: &'a str,
    /// The matched route template (empty when no route matched).
    pub route: &'a str,
    /// The request id.
    pub request_id: &'a str,
}

impl RequestLog<'_> {
    /// Whether the route is quiet.
    pub fn is_quiet(&self) -> bool {
        QUIET_ROUTES.contains(&self.route)
    }

    /// The span handlers' log lines are recorded in: INFO, or DEBUG for a quiet route.
    pub fn span(&self) -> Span {
        let RequestLog {
            method,
            path,
            route,
            request_id,
        } = *self;
        // `otel.name` and `otel.kind` name the span when it is exported as a trace;
        // `trace_id` is recorded once the caller's trace context is known.
        let name = if route.is_empty() {
            format!("{method} unmatched")
        } else {
            format!("{method} {route}")
        };
        if self.is_quiet() {
            tracing::debug_span!("request", method = %method, path, route, request_id,
                otel.name = %name, otel.kind = "server", trace_id = tracing::field::Empty)
        } else {
            tracing::info_span!("request", method = %method, path, route, request_id,
                otel.name = %name, otel.kind = "server", trace_id = tracing::field::Empty)
        }
    }

    /// Logs the answer: ERROR for a server error, DEBUG for a quiet route's success, INFO
    /// otherwise. A quiet route's failure names the request itself, since its span is
    /// recorded only at DEBUG.
    pub fn answered(&self, span: &Span, status: StatusCode, latency: Duration) {
        let latency_ms = latency.as_secs_f64() * 1000.0;
        let status = status.as_u16();
        let RequestLog {
            method,
            path,
            route,
            request_id,
        } = *self;
        match (self.is_quiet(), status >= 500, status >= 400) {
            (_, true, _) => tracing::error!(
                parent: span, method = %method, path, route, request_id, status, latency_ms,
                "request failed"
            ),
            (true, false, true) => tracing::info!(
                parent: span, method = %method, path, route, request_id, status, latency_ms,
                "finished processing request"
            ),
            (true, false, false) => tracing::debug!(
                parent: span, status, latency_ms, "finished processing request"
            ),
            (false, false, _) => tracing::info!(
                parent: span, status, latency_ms, "finished processing request"
            ),
        }
    }
}
