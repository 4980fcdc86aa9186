//! `/v1/apps`: applications (`app.read`, `app.write`).

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use kms_core::{AppUpdate, Application, Caller, Kms, NewApp, Page, PageRequest};

use crate::http::blocking::blocking;
use crate::http::error::ApiError;
use crate::http::extract::{JsonBody, QueryParams};
use crate::wire;

/// `POST /v1/apps`.
#[utoipa::path(post, path = "/v1/apps", tag = "applications",
    request_body = wire::NewAppBody,
    responses(
        (status = 201, description = "The application", body = wire::App),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["app.write"])))]
pub async fn create_app(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<NewApp>,
) -> Result<(StatusCode, Json<Application>), ApiError> {
    let app = blocking(move || kms.create_app(&caller, req)).await?;
    Ok((StatusCode::CREATED, Json(app)))
}

/// `GET /v1/apps`.
#[utoipa::path(get, path = "/v1/apps", tag = "applications",
    params(wire::PageQuery),
    responses(
        (status = 200, description = "A page of applications", body = wire::AppPage),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["app.read"])))]
pub async fn list_apps(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    QueryParams(page): QueryParams<wire::PageQuery>,
) -> Result<Json<Page<Application>>, ApiError> {
    let page = PageRequest::from(page);
    Ok(Json(blocking(move || kms.list_apps(&caller, page)).await?))
}

/// `GET /v1/apps/{id}`.
#[utoipa::path(get, path = "/v1/apps/{id}", tag = "applications",
    params(("id" = String, Path, description = "Application id")),
    responses(
        (status = 200, description = "The application", body = wire::App),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["app.read"])))]
pub async fn get_app(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Application>, ApiError> {
    Ok(Json(blocking(move || kms.get_app(&caller, &id)).await?))
}

/// `PATCH /v1/apps/{id}`.
#[utoipa::path(patch, path = "/v1/apps/{id}", tag = "applications",
    params(("id" = String, Path, description = "Application id")),
    request_body = wire::AppPatchBody,
    responses(
        (status = 200, description = "The changed application", body = wire::App),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["app.write"])))]
pub async fn update_app(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<AppUpdate>,
) -> Result<Json<Application>, ApiError> {
    Ok(Json(
        blocking(move || kms.update_app(&caller, &id, req)).await?,
    ))
}

/// `DELETE /v1/apps/{id}`: the application and its tokens are gone.
#[utoipa::path(delete, path = "/v1/apps/{id}", tag = "applications",
    params(("id" = String, Path, description = "Application id")),
    responses(
        (status = 204, description = "Deleted; its tokens stop verifying"),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["app.write"])))]
pub async fn delete_app(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || kms.delete_app(&caller, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/apps/{id}/signing-secret` (`app.write`): a new request-signing secret for the
/// application, shown this once; the previous one stops working at once.
#[utoipa::path(post, path = "/v1/apps/{id}/signing-secret", tag = "applications",
    params(("id" = String, Path, description = "Application id")),
    responses(
        (status = 201, description = "The new secret, shown this once; `Cache-Control: no-store`", body = wire::SigningSecret),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["app.write"])))]
pub async fn rotate_signing_secret(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let secret = blocking(move || kms.rotate_request_signing_secret(&caller, &id)).await?;
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(wire::SigningSecret { secret }),
    ))
}
