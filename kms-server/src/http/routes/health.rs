//! Liveness, readiness and metrics; none needs a token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kms_core::Kms;
use serde_json::json;

use crate::http::blocking::blocking;
use crate::http::error::ApiError;
use crate::http::middleware::RequestId;
use crate::ops::metrics::Metrics;
use crate::wire;

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = wire::Health)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers (and, on PostgreSQL, this node hears other nodes'
/// changes); `degraded` (still 200) while the shared counters do not answer.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "The database answers: `ready`, or `degraded` while the shared counters (Redis) do not answer and each node counts limits on its own", body = wire::Health),
        (status = 503, description = "The database cannot be reached (or, on PostgreSQL, the change listener is not connected)", body = wire::ErrorBody),
    ))]
pub async fn readyz(
    State(kms): State<Kms>,
    request_id: Option<axum::Extension<RequestId>>,
) -> Response {
    let checked = blocking(move || {
        kms.ping()?;
        Ok(kms.probe_counters())
    })
    .await;
    match checked {
        Ok(counters) => {
            use kms_core::counters::CounterState;
            // Ready is exactly `{"status": "ready"}` (as API.md states it); degraded says
            // why. Where counting happens is in the metrics (kms_limits_shared).
            let health = if counters.state == CounterState::Fallback {
                wire::Health {
                    status: "degraded".to_owned(),
                    database: Some("ok".to_owned()),
                    counters: Some(counters.state.as_str().to_owned()),
                    counter_backend: counters.backend.map(str::to_owned),
                }
            } else {
                wire::Health {
                    status: "ready".to_owned(),
                    database: None,
                    counters: None,
                    counter_backend: None,
                }
            };
            Json(health).into_response()
        }
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed");
            let unavailable = ApiError::unavailable();
            let id = request_id.map(|r| r.0.to_string()).unwrap_or_default();
            let mut body = unavailable.body(&id);
            body["status"] = json!("unavailable");
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

/// `GET /metrics`: Prometheus text format (OpenMetrics when the scraper asks for it).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics in the Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(metrics): State<Arc<Metrics>>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    // Each format under its own content type: OpenMetrics when asked for (as Prometheus
    // asks), else the Prometheus text format.
    let encoded = if openmetrics {
        metrics
            .encode()
            .map(|text| (crate::ops::metrics::CONTENT_TYPE, text))
    } else {
        metrics
            .encode_text()
            .map(|text| (crate::ops::metrics::TEXT_CONTENT_TYPE, text))
    };
    match encoded {
        Ok((content_type, text)) => ([(header::CONTENT_TYPE, content_type)], text).into_response(),
        Err(_) => {
            tracing::error!("metrics could not be encoded");
            ApiError::internal().into_response()
        }
    }
}
