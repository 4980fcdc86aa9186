//! The OAuth 2.0 endpoints of access tokens: `POST /v1/auth/token` (RFC 6749),
//! `POST /v1/auth/introspect` (RFC 7662) and `POST /v1/auth/revoke` (RFC 7009), and the
//! public keys at `GET /.well-known/jwks.json`.
//!
//! These three endpoints answer errors in the OAuth shape,
//! `{"error": "invalid_grant", "error_description": "..."}`, not the API's error body.
//! Parameters come form-encoded or as JSON.
//!
//! For an application that requires signed requests, every call on its behalf must be
//! signed (see [`signed_requests`]): the `api_key` grant, introspection and revocation by
//! the bearer's application, the `refresh_token` grant by the application of the refresh
//! token's family, checked before the refresh token is spent. A refused signature is
//! `401 {"error": "invalid_client", "error_description": "... (signature_missing)"}`.

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use kms_core::{Caller, Kms, OAuthError};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::http::blocking::{blocking, cached_else_blocking, run_blocking};
use crate::http::error::ApiError;
use crate::http::extract::{is_json_content_type, JsonBody};
use crate::http::middleware::auth::{bearer_token, client_ip};
use crate::http::middleware::signed_requests::{self, SignedParts, Signer};
use crate::http::middleware::RequestId;
use crate::http::routes::AppState;
use crate::wire;

/// An error in the OAuth 2.0 shape.
#[derive(Debug, Clone)]
pub struct OAuthFailure {
    status: StatusCode,
    error: &'static str,
    description: String,
    retry_after: Option<String>,
}

impl From<OAuthError> for OAuthFailure {
    fn from(e: OAuthError) -> Self {
        let status = match e {
            OAuthError::InvalidClient(_) => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        };
        OAuthFailure {
            status,
            error: e.code(),
            description: e.description().to_owned(),
            retry_after: None,
        }
    }
}

impl From<ApiError> for OAuthFailure {
    fn from(e: ApiError) -> Self {
        // From the API's own error code, not from the HTTP status number.
        let error = match e.code() {
            "unauthenticated" => "invalid_client",
            "forbidden" => "insufficient_scope",
            "rate_limited" => "rate_limited",
            "unavailable" => "temporarily_unavailable",
            "internal" => "server_error",
            _ => "invalid_request",
        };
        OAuthFailure {
            status: e.status(),
            error,
            description: e.message().to_owned(),
            retry_after: e.retry_after_secs().map(|s| s.max(1).to_string()),
        }
    }
}

impl From<kms_core::Error> for OAuthFailure {
    fn from(e: kms_core::Error) -> Self {
        OAuthFailure::from(ApiError::from(e))
    }
}

impl IntoResponse for OAuthFailure {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"error": self.error, "error_description": self.description})),
        )
            .into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(v) = self
            .retry_after
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            headers.insert(header::RETRY_AFTER, v);
        }
        response
    }
}

/// Parameters sent form-encoded or as JSON.
#[derive(Debug, Clone)]
pub struct OAuthParams<T>(pub T);

impl<S, T> FromRequest<S> for OAuthParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = OAuthFailure;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if is_json_content_type(request.headers()) {
            let JsonBody(v) = JsonBody::<T>::from_request(request, state).await?;
            return Ok(OAuthParams(v));
        }
        let is_form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(ApiError::unsupported_media_type()
                .with_message(
                    "send parameters as application/x-www-form-urlencoded or application/json",
                )
                .into());
        }
        Form::<T>::from_request(request, state)
            .await
            .map(|Form(v)| OAuthParams(v))
            .map_err(|rejection| OAuthFailure {
                status: rejection.status(),
                error: "invalid_request",
                description: rejection.body_text(),
                retry_after: None,
            })
    }
}

/// Parameters of the token endpoint.
#[derive(Debug, Default, Deserialize)]
pub struct TokenParams {
    grant_type: Option<String>,
    scope: Option<String>,
    audience: Option<String>,
    refresh_token: Option<String>,
}

/// Parameters of introspection and revocation.
#[derive(Debug, Default, Deserialize)]
pub struct TokenParam {
    token: Option<String>,
}

fn answer<T: serde::Serialize>(
    result: Result<Result<T, OAuthError>, kms_core::Error>,
) -> Result<Response, OAuthFailure> {
    match result {
        Ok(Ok(body)) => Ok(Json(body).into_response()),
        Ok(Err(oauth)) => Err(oauth.into()),
        Err(e) => Err(e.into()),
    }
}

/// `POST /v1/auth/token`: `grant_type=api_key` (the API key as bearer credential) or
/// `grant_type=refresh_token`.
#[utoipa::path(post, path = "/v1/auth/token", tag = "access tokens",
    request_body(content = wire::TokenGrantBody, content_type = "application/x-www-form-urlencoded",
        description = "Form-encoded or JSON"),
    responses(
        (status = 200, description = "An access token and a refresh token", body = wire::AccessTokenResponse),
        (status = "4XX", description = "OAuth 2.0 error", body = wire::OAuthErrorBody),
    ),
    security(("bearer" = []), ()))]
pub async fn token(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, OAuthFailure> {
    let call = OAuthCall::read(request).await?;
    let params = OAuthCall::params::<TokenParams>(&call.head, &call.signed).await?;
    let scope = params.scope.filter(|s| !s.is_empty());
    let kms = state.kms.clone();
    match params.grant_type.as_deref() {
        Some("api_key") => {
            let caller = call.who.authenticate(&kms).await?;
            require_signature(&state, Signer::Caller(caller.clone()), call.signed).await?;
            let audience = params.audience;
            answer(
                run_blocking(move || {
                    kms.issue_access_token_for(&caller, scope.as_deref(), audience.as_deref())
                })
                .await,
            )
        }
        Some("refresh_token") => {
            let Some(refresh) = params.refresh_token.filter(|t| !t.is_empty()) else {
                return Err(OAuthError::InvalidRequest("refresh_token is required".into()).into());
            };
            // Before the exchange, so an unsigned request spends nothing.
            require_signature(&state, Signer::RefreshToken(refresh.clone()), call.signed).await?;
            let ip = call.who.ip;
            answer(
                run_blocking(move || kms.refresh_access_token(&refresh, scope.as_deref(), ip))
                    .await,
            )
        }
        Some(other) => Err(OAuthError::UnsupportedGrantType(format!(
            "grant_type {} is not supported; use api_key or refresh_token",
            crate::http::error::printable(other, 64)
        ))
        .into()),
        None => Err(OAuthError::InvalidRequest("grant_type is required".into()).into()),
    }
}

/// A call of an OAuth endpoint, its body buffered: who asks, what its signature covers,
/// and its head, for reading its parameters.
struct OAuthCall {
    who: CallerParts,
    signed: SignedParts,
    head: Head,
}

/// What reading the parameters needs of the request's head (form extraction depends on
/// the method).
struct Head {
    method: Method,
    headers: HeaderMap,
}

impl OAuthCall {
    async fn read(request: Request) -> Result<Self, OAuthFailure> {
        let who = CallerParts::of(&request);
        let (parts, body) = signed_requests::buffered(request).await?;
        let signed = SignedParts::of(&parts, body);
        Ok(OAuthCall {
            who,
            signed,
            head: Head {
                method: parts.method,
                headers: parts.headers,
            },
        })
    }

    /// The parameters, form-encoded or JSON, read from the buffered body.
    async fn params<T: DeserializeOwned>(
        head: &Head,
        signed: &SignedParts,
    ) -> Result<T, OAuthFailure> {
        let mut copy = Request::new(Body::from(signed.body()));
        *copy.method_mut() = head.method.clone();
        *copy.headers_mut() = head.headers.clone();
        OAuthParams::<T>::from_request(copy, &())
            .await
            .map(|OAuthParams(v)| v)
    }
}

/// Refuses, in the OAuth shape, a request whose signature its application requires and
/// it lacks.
async fn require_signature(
    state: &AppState,
    signer: Signer,
    signed: SignedParts,
) -> Result<(), OAuthFailure> {
    match signed_requests::verify(&state.kms, &state.metrics, signer, signed).await? {
        Ok(()) => Ok(()),
        Err(refused) => Err(OAuthFailure {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: format!("{refused} ({})", refused.code()),
            retry_after: None,
        }),
    }
}

/// Who asks, read from the request before it is consumed.
struct CallerParts {
    token: Result<String, ApiError>,
    ip: Option<std::net::IpAddr>,
    request_id: Option<String>,
}

impl CallerParts {
    fn of(request: &Request) -> Self {
        CallerParts {
            token: bearer_token(request.headers()).map(str::to_owned),
            ip: client_ip(request),
            request_id: request
                .extensions()
                .get::<RequestId>()
                .map(|id| id.as_str().to_owned()),
        }
    }

    /// Authenticates the bearer of an introspection or revocation call, in the OAuth shape.
    async fn authenticate(self, kms: &Kms) -> Result<Caller, OAuthFailure> {
        let token = self.token?;
        let ip = self.ip;
        let caller = cached_else_blocking(
            kms,
            token.as_str(),
            |kms, token| kms.try_authenticate_cached(token, ip),
            move |kms, token| kms.authenticate(&token, ip),
        )
        .await?;
        Ok(caller.with_request(ip, self.request_id))
    }
}

/// Introspection and revocation: the bearer authenticated, then its signature checked when
/// its application requires one, then the parameters read.
async fn authenticated_call<T: DeserializeOwned>(
    state: &AppState,
    request: Request,
) -> Result<(Kms, Caller, T), OAuthFailure> {
    let OAuthCall { who, signed, head } = OAuthCall::read(request).await?;
    let caller = who.authenticate(&state.kms).await?;
    require_signature(state, Signer::Caller(caller.clone()), signed.clone()).await?;
    let params = OAuthCall::params::<T>(&head, &signed).await?;
    Ok((state.kms.clone(), caller, params))
}

fn required_token(params: TokenParam) -> Result<String, OAuthFailure> {
    params
        .token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::InvalidRequest("token is required".into()).into())
}

/// `POST /v1/auth/introspect` (`token.verify`): an inactive or unknown token is exactly
/// `{"active": false}`.
#[utoipa::path(post, path = "/v1/auth/introspect", tag = "access tokens",
    request_body(content = wire::TokenParamBody, content_type = "application/x-www-form-urlencoded",
        description = "Form-encoded or JSON"),
    responses(
        (status = 200, description = "RFC 7662 introspection", body = wire::IntrospectionBody),
        (status = "4XX", description = "OAuth 2.0 error", body = wire::OAuthErrorBody),
    ),
    security(("bearer" = ["token.verify"])))]
pub async fn introspect(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, OAuthFailure> {
    let (kms, caller, params) = authenticated_call::<TokenParam>(&state, request).await?;
    let token = required_token(params)?;
    let result = blocking(move || kms.introspect(&caller, &token)).await?;
    Ok(Json(result).into_response())
}

/// `POST /v1/auth/revoke` (`token.verify`): 200 whether or not the token was known.
#[utoipa::path(post, path = "/v1/auth/revoke", tag = "access tokens",
    request_body(content = wire::TokenParamBody, content_type = "application/x-www-form-urlencoded",
        description = "Form-encoded or JSON"),
    responses(
        (status = 200, description = "Revoked, or was not a valid token"),
        (status = "4XX", description = "OAuth 2.0 error", body = wire::OAuthErrorBody),
    ),
    security(("bearer" = ["token.verify"])))]
pub async fn revoke(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, OAuthFailure> {
    let (kms, caller, params) = authenticated_call::<TokenParam>(&state, request).await?;
    let token = required_token(params)?;
    blocking(move || kms.revoke_access_token(&caller, &token)).await?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /.well-known/jwks.json`: the public keys of every active and verify-only key.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "access tokens",
    responses((status = 200, description = "JSON Web Key Set", body = Object)))]
pub async fn jwks(State(kms): State<Kms>) -> Response {
    let mut response = Json(kms.jwks()).into_response();
    // Public keys: caches may keep them briefly; rotation keeps old keys published.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}
