//! People: identity-provider connections (`idp.read`, `idp.write`), single sign-on (no
//! bearer token: the browser and the provider call these), users (`user.read`,
//! `user.write`) and sessions (`session.read`, `session.revoke`, and the caller's own).

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kms_core::{
    BrowserContext, Caller, IdpInfo, IdpUpdate, Kms, LoginDone, Me, NewIdp, OidcCallback, Page,
    PageRequest, SessionInfo, UserInfo, UserUpdate,
};
use serde::Deserialize;
use serde_json::json;

use crate::http::blocking::blocking;
use crate::http::error::ApiError;
use crate::http::extract::{JsonBody, QueryParams};
use crate::http::middleware::auth::{client_ip, cookie_value, SESSION_COOKIE};
use crate::http::server::HttpOptions;
use crate::wire;

/// The cookie binding a browser to its login attempt.
pub const LOGIN_COOKIE: &str = "kms_login";
/// Longest form body an assertion consumer service reads.
const MAX_SAML_FORM: usize = 768 * 1024;

/// How this server sets its cookies.
#[derive(Debug, Clone)]
pub struct CookieSettings {
    /// `Secure` (the server runs under TLS).
    pub secure: bool,
}

impl CookieSettings {
    /// The cookie settings of a server with `options`.
    pub fn new(options: &HttpOptions) -> Self {
        CookieSettings {
            secure: options.secure_cookies,
        }
    }

    /// `Set-Cookie` of the session: HttpOnly, SameSite=Lax, Path=/, Secure under TLS.
    fn session(&self, token: &str) -> String {
        let mut c = format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax");
        if self.secure {
            c.push_str("; Secure");
        }
        c
    }

    /// `Set-Cookie` that clears the session cookie.
    fn clear_session(&self) -> String {
        let mut c = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
        if self.secure {
            c.push_str("; Secure");
        }
        c
    }

    /// `Set-Cookie` of the login binding. The SAML response arrives by a cross-site POST,
    /// which a `SameSite=Lax` cookie would not accompany: under TLS it is `SameSite=None;
    /// Secure`; without TLS browsers refuse `None`, so no `SameSite` is set.
    fn login(&self, value: &str) -> String {
        let mut c = format!(
            "{LOGIN_COOKIE}={value}; Path=/v1/sso/; HttpOnly; Max-Age={}",
            kms_core::LOGIN_ATTEMPT_SECS
        );
        if self.secure {
            c.push_str("; Secure; SameSite=None");
        }
        c
    }

    fn clear_login(&self) -> String {
        let mut c = format!("{LOGIN_COOKIE}=; Path=/v1/sso/; HttpOnly; Max-Age=0");
        if self.secure {
            c.push_str("; Secure; SameSite=None");
        }
        c
    }
}

fn set_cookie(headers: &mut HeaderMap, value: &str) -> Result<(), ApiError> {
    let v = HeaderValue::from_str(value).map_err(|_| ApiError::internal())?;
    headers.append(header::SET_COOKIE, v);
    Ok(())
}

/// `POST /v1/apps/{app_id}/idps`.
#[utoipa::path(post, path = "/v1/apps/{app_id}/idps", tag = "identity providers",
    params(("app_id" = String, Path, description = "Application id")),
    request_body = wire::NewIdpBody,
    responses(
        (status = 201, description = "The connection", body = wire::Idp),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["idp.write"])))]
pub async fn create_idp(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(app_id): Path<String>,
    JsonBody(req): JsonBody<NewIdp>,
) -> Result<(StatusCode, Json<IdpInfo>), ApiError> {
    let idp = blocking(move || kms.create_idp(&caller, &app_id, req)).await?;
    Ok((StatusCode::CREATED, Json(idp)))
}

/// `GET /v1/apps/{app_id}/idps`.
#[utoipa::path(get, path = "/v1/apps/{app_id}/idps", tag = "identity providers",
    params(("app_id" = String, Path, description = "Application id")),
    responses(
        (status = 200, description = "The application's connections", body = wire::IdpList),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["idp.read"])))]
pub async fn list_idps(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(app_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let items = blocking(move || kms.list_idps(&caller, &app_id)).await?;
    Ok(Json(json!({ "items": items, "next_cursor": null })))
}

/// `GET /v1/idps/{id}`.
#[utoipa::path(get, path = "/v1/idps/{id}", tag = "identity providers",
    params(("id" = String, Path, description = "Connection id")),
    responses(
        (status = 200, description = "The connection", body = wire::Idp),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["idp.read"])))]
pub async fn get_idp(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<IdpInfo>, ApiError> {
    Ok(Json(blocking(move || kms.get_idp(&caller, &id)).await?))
}

/// `PATCH /v1/idps/{id}`.
#[utoipa::path(patch, path = "/v1/idps/{id}", tag = "identity providers",
    params(("id" = String, Path, description = "Connection id")),
    request_body = wire::IdpPatchBody,
    responses(
        (status = 200, description = "The changed connection", body = wire::Idp),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["idp.write"])))]
pub async fn update_idp(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<IdpUpdate>,
) -> Result<Json<IdpInfo>, ApiError> {
    Ok(Json(
        blocking(move || kms.update_idp(&caller, &id, req)).await?,
    ))
}

/// `DELETE /v1/idps/{id}`.
#[utoipa::path(delete, path = "/v1/idps/{id}", tag = "identity providers",
    params(("id" = String, Path, description = "Connection id")),
    responses(
        (status = 204, description = "Deleted; the sessions started through it ended"),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["idp.write"])))]
pub async fn delete_idp(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || kms.delete_idp(&caller, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /v1/sso/discover`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DiscoverQuery {
    /// The person's email address.
    pub email: String,
}

/// `GET /v1/sso/discover`.
#[utoipa::path(get, path = "/v1/sso/discover", tag = "single sign-on",
    params(DiscoverQuery),
    responses(
        (status = 200, description = "The login URL of the provider serving the domain", body = wire::LoginUrl),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ))]
pub async fn discover(
    State(kms): State<Kms>,
    QueryParams(q): QueryParams<DiscoverQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let url = blocking(move || kms.sso_discover(&q.email)).await?;
    Ok(Json(json!({ "login_url": url })))
}

/// Query of `GET /v1/sso/{slug}/login`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LoginQuery {
    /// Where the browser goes after the login: a relative path (`/...`).
    #[serde(default)]
    pub return_to: Option<String>,
}

/// `GET /v1/sso/{slug}/login`.
#[utoipa::path(get, path = "/v1/sso/{slug}/login", tag = "single sign-on",
    params(("slug" = String, Path, description = "Connection slug"), LoginQuery),
    responses(
        (status = 302, description = "To the identity provider, with the login cookie set"),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ))]
pub async fn login(
    State(kms): State<Kms>,
    Extension(cookies): Extension<CookieSettings>,
    Path(slug): Path<String>,
    QueryParams(q): QueryParams<LoginQuery>,
) -> Result<Response, ApiError> {
    let started = blocking(move || kms.sso_login(&slug, q.return_to.as_deref())).await?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&started.location).map_err(|_| ApiError::internal())?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    set_cookie(&mut headers, &cookies.login(&started.browser_binding))?;
    Ok((StatusCode::FOUND, headers).into_response())
}

/// The browser of a request.
fn browser(request_headers: &HeaderMap, ip: Option<std::net::IpAddr>) -> BrowserContext {
    BrowserContext {
        binding: cookie_value(request_headers, LOGIN_COOKIE).map(str::to_owned),
        ip,
        user_agent: request_headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

/// The answer to a finished login: the session cookie, and a redirect to `return_to` or
/// the session's JSON.
fn login_response(cookies: &CookieSettings, done: LoginDone) -> Result<Response, ApiError> {
    let mut headers = HeaderMap::new();
    set_cookie(&mut headers, &cookies.session(&done.session.token))?;
    set_cookie(&mut headers, &cookies.clear_login())?;
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match done.return_to {
        Some(to) => {
            headers.insert(
                header::LOCATION,
                HeaderValue::from_str(&to).map_err(|_| ApiError::internal())?,
            );
            Ok((StatusCode::SEE_OTHER, headers).into_response())
        }
        None => Ok((
            StatusCode::OK,
            headers,
            Json(json!({
                "session_token": done.session.token,
                "user": done.session.user,
                "session": done.session.session,
            })),
        )
            .into_response()),
    }
}

/// Query of the OIDC callback.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct CallbackQuery {
    /// The authorization code.
    #[serde(default)]
    pub code: Option<String>,
    /// The state sent with the authorization request.
    #[serde(default)]
    pub state: Option<String>,
    /// The issuer (RFC 9207).
    #[serde(default)]
    pub iss: Option<String>,
    /// The provider's error code, when it refused.
    #[serde(default)]
    pub error: Option<String>,
}

/// `GET /v1/sso/{slug}/callback`.
#[utoipa::path(get, path = "/v1/sso/{slug}/callback", tag = "single sign-on",
    params(("slug" = String, Path, description = "Connection slug"), CallbackQuery),
    responses(
        (status = 200, description = "Signed in (no return_to): the session, once", body = wire::LoginBody),
        (status = 303, description = "Signed in: to return_to, with the session cookie"),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ))]
pub async fn oidc_callback(
    State(kms): State<Kms>,
    Extension(cookies): Extension<CookieSettings>,
    Path(slug): Path<String>,
    QueryParams(q): QueryParams<CallbackQuery>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let ip = client_ip(&request);
    let callback = OidcCallback {
        code: q.code,
        state: q.state,
        iss: q.iss,
        error: q.error,
    };
    let browser = browser(request.headers(), ip);
    let done = blocking(move || kms.sso_oidc_callback(&slug, &callback, &browser)).await?;
    login_response(&cookies, done)
}

/// The form the identity provider posts to the assertion consumer service.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AcsForm {
    /// The base64 `Response`.
    #[serde(rename = "SAMLResponse")]
    pub saml_response: String,
    /// The `RelayState` sent with the request.
    #[serde(rename = "RelayState", default)]
    pub relay_state: Option<String>,
}

/// `POST /v1/sso/{slug}/acs`.
#[utoipa::path(post, path = "/v1/sso/{slug}/acs", tag = "single sign-on",
    params(("slug" = String, Path, description = "Connection slug")),
    request_body(content = AcsForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Signed in (no return_to): the session, once", body = wire::LoginBody),
        (status = 303, description = "Signed in: to return_to, with the session cookie"),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ))]
pub async fn saml_acs(
    State(kms): State<Kms>,
    Extension(cookies): Extension<CookieSettings>,
    Path(slug): Path<String>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let ip = client_ip(&request);
    let browser = browser(request.headers(), ip);
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(ApiError::unsupported_media_type()
            .with_message("send the SAML response as application/x-www-form-urlencoded"));
    }
    let body = axum::body::to_bytes(request.into_body(), MAX_SAML_FORM)
        .await
        .map_err(|_| ApiError::payload_too_large(MAX_SAML_FORM))?;
    let form: AcsForm = serde_urlencoded_form(&body)?;
    let done = blocking(move || {
        kms.sso_saml_acs(
            &slug,
            &form.saml_response,
            form.relay_state.as_deref(),
            &browser,
        )
    })
    .await?;
    login_response(&cookies, done)
}

/// A form body; a bad one (or one without the required fields) a 400.
fn serde_urlencoded_form<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|_| ApiError::invalid_field("SAMLResponse", "is missing or not a form field"))
}

/// `GET /v1/sso/{slug}/metadata`.
#[utoipa::path(get, path = "/v1/sso/{slug}/metadata", tag = "single sign-on",
    params(("slug" = String, Path, description = "Connection slug")),
    responses(
        (status = 200, description = "The service provider's SAML metadata", content_type = "application/samlmetadata+xml", body = String),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ))]
pub async fn saml_metadata(
    State(kms): State<Kms>,
    Path(slug): Path<String>,
) -> Result<Response, ApiError> {
    let xml = blocking(move || kms.sso_saml_metadata(&slug)).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/samlmetadata+xml"),
        )],
        xml,
    )
        .into_response())
}

/// `GET /v1/apps/{app_id}/users`.
#[utoipa::path(get, path = "/v1/apps/{app_id}/users", tag = "users",
    params(("app_id" = String, Path, description = "Application id"), wire::PageQuery),
    responses(
        (status = 200, description = "A page of users", body = wire::UserPage),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["user.read"])))]
pub async fn list_users(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(app_id): Path<String>,
    QueryParams(page): QueryParams<wire::PageQuery>,
) -> Result<Json<Page<UserInfo>>, ApiError> {
    let page = PageRequest::from(page);
    Ok(Json(
        blocking(move || kms.list_users(&caller, &app_id, page)).await?,
    ))
}

/// `GET /v1/users/{id}`.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The user", body = wire::User),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["user.read"])))]
pub async fn get_user(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<UserInfo>, ApiError> {
    Ok(Json(blocking(move || kms.get_user(&caller, &id)).await?))
}

/// `PATCH /v1/users/{id}`.
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    request_body = wire::UserPatchBody,
    responses(
        (status = 200, description = "The changed user", body = wire::User),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["user.write"])))]
pub async fn update_user(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UserUpdate>,
) -> Result<Json<UserInfo>, ApiError> {
    Ok(Json(
        blocking(move || kms.update_user(&caller, &id, req)).await?,
    ))
}

/// `POST /v1/users/roles`: give and withdraw roles on many users, all or nothing.
#[utoipa::path(post, path = "/v1/users/roles", tag = "users",
    request_body = wire::BulkUserRolesBody,
    responses(
        (status = 200, description = "How many users changed, and which", body = wire::BulkChangedView),
        (status = "4XX", description = "Nothing was changed", body = wire::ErrorBody),
    ),
    security(("bearer" = ["user.write"])))]
pub async fn change_user_roles(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<kms_core::BulkUserRoles>,
) -> Result<Json<kms_core::BulkChanged>, ApiError> {
    Ok(Json(
        blocking(move || kms.change_user_roles(&caller, req)).await?,
    ))
}

/// `DELETE /v1/users/{id}`; `?erase=true` erases the person (see `routes::privacy`).
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id"), wire::EraseQuery),
    responses(
        (status = 204, description = "Deleted with their sessions (and, with erase, their person key)"),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["user.write"])))]
pub async fn delete_user(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<wire::EraseQuery>,
) -> Result<StatusCode, ApiError> {
    if q.erase == Some(true) {
        blocking(move || kms.erase_user(&caller, &id)).await?;
    } else {
        blocking(move || kms.delete_user(&caller, &id)).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/users/{id}/sessions`.
#[utoipa::path(get, path = "/v1/users/{id}/sessions", tag = "sessions",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The user's live sessions", body = wire::SessionList),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["session.read"])))]
pub async fn list_user_sessions(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let items = blocking(move || kms.list_user_sessions(&caller, &id)).await?;
    Ok(Json(json!({ "items": items, "next_cursor": null })))
}

/// `POST /v1/users/{id}/sessions/revoke`.
#[utoipa::path(post, path = "/v1/users/{id}/sessions/revoke", tag = "sessions",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "How many sessions ended", body = wire::RevokedCount),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["session.revoke"])))]
pub async fn revoke_user_sessions(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let n = blocking(move || kms.revoke_user_sessions(&caller, &id)).await?;
    Ok(Json(json!({ "revoked": n })))
}

/// `POST /v1/sessions/{id}/revoke`.
#[utoipa::path(post, path = "/v1/sessions/{id}/revoke", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "The ended session", body = wire::Session),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = ["session.revoke"])))]
pub async fn revoke_session(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<SessionInfo>, ApiError> {
    Ok(Json(
        blocking(move || kms.revoke_session(&caller, &id)).await?,
    ))
}

/// `GET /v1/me`.
#[utoipa::path(get, path = "/v1/me", tag = "sessions",
    responses(
        (status = 200, description = "The caller's user and session", body = wire::MeBody),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn me(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Me>, ApiError> {
    Ok(Json(blocking(move || kms.me(&caller)).await?))
}

/// `GET /v1/me/sessions`.
#[utoipa::path(get, path = "/v1/me/sessions", tag = "sessions",
    responses(
        (status = 200, description = "The caller's live sessions", body = wire::SessionList),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn my_sessions(
    State(kms): State<Kms>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let items = blocking(move || kms.my_sessions(&caller)).await?;
    Ok(Json(json!({ "items": items, "next_cursor": null })))
}

/// `POST /v1/auth/logout`.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "sessions",
    responses(
        (status = 204, description = "This session ended; the cookie is cleared"),
        (status = "4XX", description = "See the error code", body = wire::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn logout(
    State(kms): State<Kms>,
    Extension(cookies): Extension<CookieSettings>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    blocking(move || kms.logout(&caller)).await?;
    let mut headers = HeaderMap::new();
    set_cookie(&mut headers, &cookies.clear_session())?;
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}
