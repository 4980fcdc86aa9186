//! `/v1/audit`: the hash-chained audit log (`audit.read`).

use axum::extract::State;
use axum::{Extension, Json};
use kms_core::{AuditEvent, AuditFilter, AuditVerification, Caller, Kms, Page, PageRequest};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::http::blocking::blocking;
use crate::http::error::ApiError;
use crate::http::extract::QueryParams;
use crate::wire;

/// `?limit=&cursor=&action=&actor=&since=` of the audit listing.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Events per page, 1–1000 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this action (`token.create`).
    pub action: Option<String>,
    /// Only this actor (a token id, or `operator`).
    pub actor: Option<String>,
    /// Only events at or after this RFC 3339 time.
    pub since: Option<String>,
}

/// `GET /v1/audit`: events, newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(AuditParams),
    responses(
        (status = 200, description = "A page of events, newest first", body = wire::AuditPage),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["audit.read"])))]
pub async fn list_audit(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    QueryParams(params): QueryParams<AuditParams>,
) -> Result<Json<Page<AuditEvent>>, ApiError> {
    let filter = AuditFilter {
        action: params.action,
        actor: params.actor,
        since: params.since,
    };
    let page = PageRequest {
        limit: params.limit,
        cursor: params.cursor,
    };
    Ok(Json(
        blocking(move || kms.list_audit(&caller, filter, page)).await?,
    ))
}

/// `GET /v1/audit/verify`: `{"ok": true, "events": N}` or `{"ok": false, "first_bad_seq": K}`.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses(
        (status = 200, description = "Whether the chain is intact", body = wire::AuditCheck),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["audit.read"])))]
pub async fn verify_audit(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<AuditVerification>, ApiError> {
    Ok(Json(blocking(move || kms.verify_audit(&caller)).await?))
}
