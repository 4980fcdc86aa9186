//! Tokens (API keys): `/v1/apps/{app_id}/tokens` and `/v1/tokens/{id}`
//! (`token.read`, `token.create`, `token.revoke`).

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kms_core::{Caller, Kms, NewToken, Page, PageRequest, RotateToken, TokenInfo, TokenUpdate};

use crate::http::blocking::blocking;
use crate::http::error::ApiError;
use crate::http::extract::{JsonBody, OptionalJsonBody, QueryParams};
use crate::wire;

/// `201 Created` with freshly issued secrets, never to be cached.
fn secret_response(created: impl serde::Serialize) -> Response {
    let mut response = (StatusCode::CREATED, Json(created)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// `POST /v1/apps/{app_id}/tokens`: the plaintext token is in this answer only.
#[utoipa::path(post, path = "/v1/apps/{app_id}/tokens", tag = "tokens",
    params(("app_id" = String, Path, description = "Application id")),
    request_body = wire::NewTokenBody,
    responses(
        (status = 201, description = "The token, with its plaintext shown this once", body = wire::CreatedTokenView),
        (status = "4XX", description = "See the error code (403 when asking for more than the caller holds)", body = wire::ErrorBody),
    ),
    security(("bearer" = ["token.create"])))]
pub async fn create_token(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(app_id): Path<String>,
    JsonBody(req): JsonBody<NewToken>,
) -> Result<Response, ApiError> {
    let created = blocking(move || kms.create_token(&caller, &app_id, req)).await?;
    Ok(secret_response(created))
}

/// `POST /v1/apps/{app_id}/tokens/bulk`: up to 1,000 tokens, all or nothing; the
/// plaintexts are in this answer only.
#[utoipa::path(post, path = "/v1/apps/{app_id}/tokens/bulk", tag = "tokens",
    params(("app_id" = String, Path, description = "Application id")),
    request_body = wire::BulkTokensBody,
    responses(
        (status = 201, description = "Every token, with its plaintext shown this once, in the order asked", body = wire::CreatedTokens),
        (status = "4XX", description = "Nothing was created; errors name the request (`tokens[3].scopes[0]`)", body = wire::ErrorBody),
    ),
    security(("bearer" = ["token.create"])))]
pub async fn create_tokens(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(app_id): Path<String>,
    JsonBody(req): JsonBody<kms_core::BulkNewTokens>,
) -> Result<Response, ApiError> {
    let created = blocking(move || kms.create_tokens(&caller, &app_id, req.tokens)).await?;
    Ok(secret_response(serde_json::json!({ "items": created })))
}

/// `POST /v1/tokens/revoke`: many tokens by `ids` or by a `filter`, all or nothing.
#[utoipa::path(post, path = "/v1/tokens/revoke", tag = "tokens",
    request_body = wire::BulkRevokeBody,
    responses(
        (status = 200, description = "How many were revoked, and which", body = wire::BulkRevokedView),
        (status = "4XX", description = "Nothing was revoked", body = wire::ErrorBody),
    ),
    security(("bearer" = ["token.revoke"])))]
pub async fn revoke_tokens(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<kms_core::BulkRevoke>,
) -> Result<Json<kms_core::BulkRevoked>, ApiError> {
    Ok(Json(
        blocking(move || kms.revoke_tokens(&caller, req)).await?,
    ))
}

/// `POST /v1/tokens/roles`: grant and withdraw roles on many tokens, all or nothing.
#[utoipa::path(post, path = "/v1/tokens/roles", tag = "tokens",
    request_body = wire::BulkRolesBody,
    responses(
        (status = 200, description = "How many tokens changed, and which", body = wire::BulkChangedView),
        (status = "4XX", description = "Nothing was changed", body = wire::ErrorBody),
    ),
    security(("bearer" = ["token.create"])))]
pub async fn change_token_roles(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<kms_core::BulkRoles>,
) -> Result<Json<kms_core::BulkChanged>, ApiError> {
    Ok(Json(
        blocking(move || kms.change_token_roles(&caller, req)).await?,
    ))
}

/// `GET /v1/apps/{app_id}/tokens`.
#[utoipa::path(get, path = "/v1/apps/{app_id}/tokens", tag = "tokens",
    params(("app_id" = String, Path, description = "Application id"), wire::PageQuery),
    responses(
        (status = 200, description = "A page of the application's tokens", body = wire::TokenPage),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["token.read"])))]
pub async fn list_tokens(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(app_id): Path<String>,
    QueryParams(page): QueryParams<wire::PageQuery>,
) -> Result<Json<Page<TokenInfo>>, ApiError> {
    let page = PageRequest::from(page);
    Ok(Json(
        blocking(move || kms.list_tokens(&caller, &app_id, page)).await?,
    ))
}

/// `GET /v1/tokens/{id}`.
#[utoipa::path(get, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id (tok_...)")),
    responses(
        (status = 200, description = "The token (never its secret)", body = wire::TokenView),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["token.read"])))]
pub async fn get_token(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    Ok(Json(blocking(move || kms.get_token(&caller, &id)).await?))
}

/// `PATCH /v1/tokens/{id}`: name, metadata and limits.
#[utoipa::path(patch, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id (tok_...)")),
    request_body = wire::TokenPatchBody,
    responses(
        (status = 200, description = "The changed token", body = wire::TokenView),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["token.create"])))]
pub async fn update_token(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<TokenUpdate>,
) -> Result<Json<TokenInfo>, ApiError> {
    Ok(Json(
        blocking(move || kms.update_token(&caller, &id, req)).await?,
    ))
}

/// `POST /v1/tokens/{id}/revoke`: idempotent.
#[utoipa::path(post, path = "/v1/tokens/{id}/revoke", tag = "tokens",
    params(("id" = String, Path, description = "Token id (tok_...)")),
    responses(
        (status = 200, description = "The token, revoked", body = wire::TokenView),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["token.revoke"])))]
pub async fn revoke_token(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    Ok(Json(
        blocking(move || kms.revoke_token(&caller, &id)).await?,
    ))
}

/// `POST /v1/tokens/{id}/rotate`: a new token with the same grants; the old one works
/// until the grace period ends. The body is optional.
#[utoipa::path(post, path = "/v1/tokens/{id}/rotate", tag = "tokens",
    params(("id" = String, Path, description = "Token id (tok_...)")),
    request_body(content = Option<wire::RotateBody>, description = "Optional"),
    responses(
        (status = 201, description = "The new token, with its plaintext shown this once", body = wire::CreatedTokenView),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["token.create"])))]
pub async fn rotate_token(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    OptionalJsonBody(req): OptionalJsonBody<RotateToken>,
) -> Result<Response, ApiError> {
    let created = blocking(move || kms.rotate_token(&caller, &id, req)).await?;
    Ok(secret_response(created))
}

/// `DELETE /v1/tokens/{id}`; `?erase=true` also clears the metadata copied into the
/// tokens it was rotated from.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id (tok_...)"), wire::EraseQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["token.revoke"])))]
pub async fn delete_token(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<wire::EraseQuery>,
) -> Result<StatusCode, ApiError> {
    if q.erase == Some(true) {
        blocking(move || kms.erase_token(&caller, &id)).await?;
    } else {
        blocking(move || kms.delete_token(&caller, &id)).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
