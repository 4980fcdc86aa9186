//! The request body limit: bodies that announce a larger `Content-Length` are answered
//! `413 payload_too_large` without being parsed; streamed bodies are cut at the same limit
//! when read (axum's `DefaultBodyLimit`, which [`crate::http::extract::JsonBody`] maps to the
//! same error).

use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use http_body_util::BodyExt;

use crate::http::error::ApiError;

/// Most bytes of a refused body read and discarded so that a client that writes its whole
/// body before reading the answer sees the 413 rather than a broken connection. Larger
/// bodies are cut off.
const MAX_DRAIN_BYTES: usize = 16 * 1024 * 1024;

/// The body limit in force, in the request's extensions, so extractors can name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub usize);

/// Refuses a body announced larger than `limit` bytes (reading and dropping it first, so
/// the client sees the answer); otherwise records the [`BodyLimit`] in the request.
pub async fn admit(limit: usize, request: Request) -> Result<Request, ApiError> {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|len| len > limit as u64) {
        drain(request.into_body()).await;
        return Err(ApiError::payload_too_large(limit));
    }
    let mut request = request;
    request.extensions_mut().insert(BodyLimit(limit));
    Ok(request)
}

/// Reads and drops up to [`MAX_DRAIN_BYTES`] of `body`, without keeping it in memory.
async fn drain(mut body: Body) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            seen = seen.saturating_add(data.len());
        }
        if seen > MAX_DRAIN_BYTES {
            break;
        }
    }
}
