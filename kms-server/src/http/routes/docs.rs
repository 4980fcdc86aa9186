//! The OpenAPI document.

use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::http::error::ApiError;

/// `GET /openapi.json`: the OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> Response {
    match crate::http::openapi::document_value() {
        Ok(doc) => Json(doc).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "the OpenAPI document could not be built");
            ApiError::internal().into_response()
        }
    }
}
