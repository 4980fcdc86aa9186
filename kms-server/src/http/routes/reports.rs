//! `/v1/stats` (capacity) and `/v1/reports/compliance` (the auditor's report), both
//! `audit.read` for callers of the system application.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kms_core::{Caller, CapacityStats, ComplianceSettings, Kms};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::http::blocking::blocking;
use crate::http::error::ApiError;
use crate::http::extract::QueryParams;
use crate::ops::metrics::Metrics;
use crate::ops::reports;
use crate::wire;

/// `GET /v1/stats`: objects stored, database size and growth per day. The answer also
/// refreshes the capacity gauges of `/metrics`.
#[utoipa::path(get, path = "/v1/stats", tag = "audit",
    responses(
        (status = 200, description = "What the store holds and how fast it grows", body = wire::Stats),
        (status = "4XX", description = "See the error code (403 for a caller outside the system application)", body = wire::ErrorBody),
    ),
    security(("bearer" = ["audit.read"])))]
pub async fn stats(
    State(kms): State<Kms>,
    State(metrics): State<Arc<Metrics>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<CapacityStats>, ApiError> {
    let stats = blocking(move || kms.stats(&caller)).await?;
    metrics.observe_capacity(&stats);
    Ok(Json(stats))
}

/// `?format=json|html` of the compliance report.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// `json` (default) or `html` (one self-contained page).
    pub format: Option<String>,
}

/// `GET /v1/reports/compliance`: every finding with its count, ids and verdict.
#[utoipa::path(get, path = "/v1/reports/compliance", tag = "audit",
    params(ReportParams),
    responses(
        (status = 200, description = "The report: JSON, or with `format=html` one self-contained HTML page (`text/html`, whose Content-Security-Policy allows only its own style)",
            content(
                (wire::ComplianceReport = "application/json"),
                (String = "text/html"),
            )),
        (status = "4XX", description = "See the error code (400 for an unknown format; 403 for a caller outside the system application)", body = wire::ErrorBody),
    ),
    security(("bearer" = ["audit.read"])))]
pub async fn compliance(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Extension(settings): Extension<Arc<ComplianceSettings>>,
    QueryParams(params): QueryParams<ReportParams>,
) -> Result<Response, ApiError> {
    let html = match params.format.as_deref() {
        None | Some("json") => false,
        Some("html") => true,
        Some(_) => return Err(ApiError::invalid_field("format", "must be json or html")),
    };
    let report = blocking(move || kms.compliance_report(&caller, &settings)).await?;
    if !html {
        return Ok(Json(report).into_response());
    }
    let mut response = reports::html(&report).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Never the page without its policy.
    let csp = HeaderValue::from_str(reports::html_csp()).map_err(|_| ApiError::internal())?;
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    Ok(response)
}
