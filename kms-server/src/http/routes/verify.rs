//! `POST /v1/verify` (`token.verify`): always 200 when the caller may verify; the verdict
//! is in the body's `code`.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use kms_core::{Caller, Kms, VerifyRequest, VerifyResponse};

use crate::http::blocking::cached_else_blocking;
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;
use crate::ops::metrics::Metrics;
use crate::wire;

/// `POST /v1/verify`.
#[utoipa::path(post, path = "/v1/verify", tag = "verification",
    request_body = wire::VerifyBody,
    responses(
        (status = 200, description = "The verdict; `valid` false carries only `valid`, `code` and, when found, `token_id`", body = wire::VerifyResult),
        (status = "4XX", description = "The caller may not verify, or the request is invalid", body = wire::ErrorBody),
    ),
    security(("bearer" = ["token.verify"])))]
pub async fn verify(
    State(kms): State<Kms>,
    State(metrics): State<Arc<Metrics>>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<VerifyRequest>,
) -> Result<Json<VerifyResponse>, ApiError> {
    let decision = crate::ops::decision_log::start(&req);
    let logged_caller = decision.as_ref().map(|_| caller.clone());
    // A cached key is answered inline; the store and argon2id run on the blocking pool.
    let verification = cached_else_blocking(
        &kms,
        &(caller, req),
        |kms, (caller, req)| kms.try_verify_cached(caller, req),
        |kms, (caller, req)| kms.verify(&caller, &req),
    )
    .await?;
    metrics.record_verification(verification.code().as_str());
    if let (Some(pending), Some(caller)) = (decision, logged_caller) {
        crate::ops::decision_log::finish(pending, &caller, &verification);
    }
    Ok(Json(verification.to_response()))
}
