//! `/v1/permissions`: permission definitions (`permission.read`, `permission.write`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use kms_core::{Caller, Kms, NewPermission, Page, Permission};
use serde::{Deserialize, Serialize};

use crate::http::blocking::blocking;
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;
use crate::wire;

/// The body of `POST /v1/permissions/bulk`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkPermissions {
    /// The permissions to define, all or none.
    pub permissions: Vec<NewPermission>,
}

/// The answer of `POST /v1/permissions/bulk`: the created permissions, under `items` and,
/// echoing the request's key, `permissions`.
#[derive(Debug, Serialize)]
pub struct BulkCreated {
    items: Vec<Permission>,
    permissions: Vec<Permission>,
}

/// `POST /v1/permissions`.
#[utoipa::path(post, path = "/v1/permissions", tag = "permissions",
    request_body = wire::NewPermissionBody,
    responses(
        (status = 201, description = "The permission", body = wire::PermissionView),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["permission.write"])))]
pub async fn create_permission(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<NewPermission>,
) -> Result<(StatusCode, Json<Permission>), ApiError> {
    let created = blocking(move || kms.create_permission(&caller, req)).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `POST /v1/permissions/bulk`: all or nothing.
#[utoipa::path(post, path = "/v1/permissions/bulk", tag = "permissions",
    request_body = wire::BulkPermissionsBody,
    responses(
        (status = 201, description = "Every permission was created", body = wire::BulkPermissionsCreated),
        (status = "4XX", description = "Nothing was created; see the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["permission.write"])))]
pub async fn create_permissions(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<BulkPermissions>,
) -> Result<(StatusCode, Json<BulkCreated>), ApiError> {
    let created = blocking(move || kms.create_permissions(&caller, req.permissions)).await?;
    Ok((
        StatusCode::CREATED,
        Json(BulkCreated {
            items: created.clone(),
            permissions: created,
        }),
    ))
}

/// `GET /v1/permissions`: every permission, in one page.
#[utoipa::path(get, path = "/v1/permissions", tag = "permissions",
    responses(
        (status = 200, description = "Every permission", body = wire::PermissionPage),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["permission.read"])))]
pub async fn list_permissions(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Page<Permission>>, ApiError> {
    let items = blocking(move || kms.list_permissions(&caller)).await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// `DELETE /v1/permissions/{scope}`: 409 while the permission is granted.
#[utoipa::path(delete, path = "/v1/permissions/{scope}", tag = "permissions",
    params(("scope" = String, Path, description = "The scope")),
    responses(
        (status = 204, description = "Deleted"),
        (status = "4XX", description = "See the error code (409 while granted)", body = wire::ErrorBody),
    ),
    security(("bearer" = ["permission.write"])))]
pub async fn delete_permission(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(scope): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || kms.delete_permission(&caller, &scope)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/permissions/bulk-delete`: several permissions, all or nothing.
#[utoipa::path(post, path = "/v1/permissions/bulk-delete", tag = "permissions",
    request_body = wire::BulkDeletePermissionsBody,
    responses(
        (status = 200, description = "How many were deleted", body = wire::BulkDeletedView),
        (status = "4XX", description = "Nothing was deleted (404 for an unknown one, 409 for one still in use)", body = wire::ErrorBody),
    ),
    security(("bearer" = ["permission.write"])))]
pub async fn delete_permissions(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<kms_core::BulkDeletePermissions>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let deleted = blocking(move || kms.delete_permissions(&caller, &req.scopes)).await?;
    Ok(Json(serde_json::json!({ "deleted": deleted })))
}
