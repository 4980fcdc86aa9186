//! The OpenAPI document.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;

/// `GET /openapi.json`: the OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> Response {
    // Built once per process; the document cannot change while it runs.
    match crate::http::openapi::document_bytes() {
        Ok(bytes) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "the OpenAPI document could not be built");
            ApiError::internal().into_response()
        }
    }
}
