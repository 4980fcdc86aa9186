//! Gives every error response the JSON error body with the request's id: errors raised as
//! [`ApiError`] are re-rendered with it, and plain error responses of the router or of
//! tower layers (404, 405, 413, ...) are translated into the same shape.

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;

use crate::http::error::ApiError;

/// `response` as the client sees it: an [`ApiError`] in its extensions is re-rendered with
/// `request_id`; any other 4xx/5xx without a JSON body gets the error body of its status
/// (`path` names the resource of a 404).
pub fn render(mut response: Response, path: &str, request_id: &str) -> Response {
    if let Some(err) = response.extensions_mut().remove::<ApiError>() {
        return with_body(response, &err, request_id);
    }
    let status = response.status();
    if (status.is_client_error() || status.is_server_error()) && !is_json(&response) {
        let err = ApiError::for_status(status, path);
        return with_body(response, &err, request_id);
    }
    response
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"))
}

/// `response` with `err`'s status and body; other headers (such as `Allow`) are kept.
fn with_body(response: Response, err: &ApiError, request_id: &str) -> Response {
    let rendered = err.to_response(request_id);
    let (mut parts, _) = response.into_parts();
    let (new_parts, body) = rendered.into_parts();
    parts.status = new_parts.status;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    for (name, value) in &new_parts.headers {
        parts.headers.insert(name.clone(), value.clone());
    }
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::new(body))
}
