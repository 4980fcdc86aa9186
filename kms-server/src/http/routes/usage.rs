//! Usage reports: `GET /v1/apps/{app_id}/usage` (`app.read`) and
//! `GET /v1/tokens/{id}/usage` (`token.read`), tenant-scoped like every other read.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use kms_core::{Caller, Kms, UsageReport};

use crate::http::blocking::blocking;
use crate::http::error::ApiError;
use crate::http::extract::QueryParams;
use crate::wire;

/// `GET /v1/apps/{app_id}/usage`.
#[utoipa::path(get, path = "/v1/apps/{app_id}/usage", tag = "applications",
    params(("app_id" = String, Path, description = "Application id"), wire::UsageQuery),
    responses(
        (status = 200, description = "The application's verifications by bucket and outcome code, the totals, the trend and (with a usage price) the cost", body = wire::UsageReportBody),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["app.read"])))]
pub async fn app_usage(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(app_id): Path<String>,
    QueryParams(query): QueryParams<wire::UsageQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    let query = kms_core::UsageQuery::from(query);
    Ok(Json(
        blocking(move || kms.app_usage(&caller, &app_id, &query)).await?,
    ))
}

/// `GET /v1/tokens/{id}/usage`.
#[utoipa::path(get, path = "/v1/tokens/{id}/usage", tag = "tokens",
    params(("id" = String, Path, description = "Token id"), wire::UsageQuery),
    responses(
        (status = 200, description = "The token's verifications by bucket and outcome code, the totals and the trend", body = wire::UsageReportBody),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["token.read"])))]
pub async fn token_usage(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<wire::UsageQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    let query = kms_core::UsageQuery::from(query);
    Ok(Json(
        blocking(move || kms.token_usage(&caller, &id, &query)).await?,
    ))
}
