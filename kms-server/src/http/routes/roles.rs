//! `/v1/roles`: roles (`role.read`, `role.write`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use kms_core::{Caller, Kms, NewRole, Page, RoleUpdate, RoleView};

use crate::http::blocking::blocking;
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;
use crate::wire;

/// `POST /v1/roles`.
#[utoipa::path(post, path = "/v1/roles", tag = "roles",
    request_body = wire::NewRoleBody,
    responses(
        (status = 201, description = "The role with its effective scopes", body = wire::RoleInfo),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["role.write"])))]
pub async fn create_role(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<NewRole>,
) -> Result<(StatusCode, Json<RoleView>), ApiError> {
    let role = blocking(move || kms.create_role(&caller, req)).await?;
    Ok((StatusCode::CREATED, Json(role)))
}

/// `GET /v1/roles`: every role, in one page.
#[utoipa::path(get, path = "/v1/roles", tag = "roles",
    responses(
        (status = 200, description = "Every role", body = wire::RolePage),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["role.read"])))]
pub async fn list_roles(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Page<RoleView>>, ApiError> {
    let items = blocking(move || kms.list_roles(&caller)).await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// `GET /v1/roles/{name}`.
#[utoipa::path(get, path = "/v1/roles/{name}", tag = "roles",
    params(("name" = String, Path, description = "Role name")),
    responses(
        (status = 200, description = "The role", body = wire::RoleInfo),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["role.read"])))]
pub async fn get_role(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<RoleView>, ApiError> {
    Ok(Json(blocking(move || kms.get_role(&caller, &name)).await?))
}

/// `PATCH /v1/roles/{name}`.
#[utoipa::path(patch, path = "/v1/roles/{name}", tag = "roles",
    params(("name" = String, Path, description = "Role name")),
    request_body = wire::RolePatchBody,
    responses(
        (status = 200, description = "The changed role", body = wire::RoleInfo),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["role.write"])))]
pub async fn update_role(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<RoleUpdate>,
) -> Result<Json<RoleView>, ApiError> {
    Ok(Json(
        blocking(move || kms.update_role(&caller, &name, req)).await?,
    ))
}

/// `DELETE /v1/roles/{name}`.
#[utoipa::path(delete, path = "/v1/roles/{name}", tag = "roles",
    params(("name" = String, Path, description = "Role name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["role.write"])))]
pub async fn delete_role(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || kms.delete_role(&caller, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}
