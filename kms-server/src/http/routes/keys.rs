//! `/v1/keys`: the signing keys of access tokens (`key.read`, `key.rotate`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use kms_core::{Caller, KeyInfo, Kms, Page};

use crate::http::blocking::blocking;
use crate::http::error::ApiError;
use crate::wire;

/// `GET /v1/keys`: key ids, algorithms, states and dates, newest first; never private
/// material.
#[utoipa::path(get, path = "/v1/keys", tag = "access tokens",
    responses(
        (status = 200, description = "Every signing key", body = wire::KeyPage),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["key.read"])))]
pub async fn list_keys(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Page<KeyInfo>>, ApiError> {
    let items = blocking(move || kms.list_keys(&caller)).await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// `POST /v1/keys/rotate`: a new active key; the previous one verifies until the longest
/// access-token lifetime has passed, then retires.
#[utoipa::path(post, path = "/v1/keys/rotate", tag = "access tokens",
    responses(
        (status = 201, description = "The new active key", body = wire::KeyView),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["key.rotate"])))]
pub async fn rotate_keys(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
) -> Result<(StatusCode, Json<KeyInfo>), ApiError> {
    let key = blocking(move || kms.rotate_keys(&caller)).await?;
    Ok((StatusCode::CREATED, Json(key)))
}
