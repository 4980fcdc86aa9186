//! Abandons requests that run longer than the configured limit with `503 unavailable`.
//!
//! Work already handed to a blocking thread finishes there; only the answer is abandoned.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Middleware: answers `503 unavailable` when the request takes longer than the state's
/// duration.
pub async fn enforce_timeout(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(limit_ms = limit.as_millis() as u64, "request timed out");
            ApiError::timed_out().into_response()
        }
    }
}
