//! The request body limit: bodies that announce a larger `Content-Length` are refused at
//! once with `413 payload_too_large`; streamed bodies are cut at the same limit when read
//! (axum's `DefaultBodyLimit`, which [`crate::extract::JsonBody`] maps to the same error).

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The body limit in force, in the request's extensions, so extractors can name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub usize);

/// Middleware: refuses bodies announced larger than the state's limit in bytes.
pub async fn limit_body(State(limit): State<usize>, mut request: Request, next: Next) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|len| len > limit as u64) {
        return ApiError::payload_too_large(limit).into_response();
    }
    request.extensions_mut().insert(BodyLimit(limit));
    next.run(request).await
}
