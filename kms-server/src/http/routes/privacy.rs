//! Data-protection requests: `GET /v1/users/{id}/export` (`user.read`), everything kms
//! holds about a person. Erasure is `DELETE /v1/users/{id}?erase=true` and
//! `DELETE /v1/tokens/{id}?erase=true` (the delete handlers of `people` and `tokens`).

use axum::extract::{Path, State};
use axum::{Extension, Json};
use kms_core::{Caller, Kms, PageRequest, UserExport};

use crate::http::blocking::blocking;
use crate::http::error::ApiError;
use crate::http::extract::QueryParams;
use crate::wire;

/// `GET /v1/users/{id}/export`: profile, identities, sessions, roles, grants, and a page of
/// the audit events about the person.
#[utoipa::path(get, path = "/v1/users/{id}/export", tag = "users",
    params(("id" = String, Path, description = "User id"), wire::PageQuery),
    responses(
        (status = 200, description = "Everything held about the user; `?limit=&cursor=` page the audit events (default 100)", body = wire::UserExportView),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["user.read"])))]
pub async fn export_user(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryParams(page): QueryParams<wire::PageQuery>,
) -> Result<Json<UserExport>, ApiError> {
    let page = PageRequest::from(page);
    Ok(Json(
        blocking(move || kms.export_user(&caller, &id, page)).await?,
    ))
}
