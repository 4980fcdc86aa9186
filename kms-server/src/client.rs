//! A typed, blocking client of the kms HTTP API (on `ureq`), covering every endpoint.
//!
//! ```no_run
//! use kms_server::client::KmsClient;
//! use kms_server::wire::{NewAppBody, NewTokenBody, VerifyBody};
//!
//! # fn main() -> Result<(), kms_server::client::ClientError> {
//! let kms = KmsClient::new("http://127.0.0.1:8080").with_token("kms_...");
//! let app = kms.create_app(&NewAppBody { name: "billing".into(), token_prefix: Some("bill".into()), ..Default::default() })?;
//! let created = kms.create_token(&app.id, &NewTokenBody {
//!     name: "ci".into(),
//!     scopes: vec!["app.read".into()],
//!     roles: vec![],
//!     expires_in: Some(3600),
//!     expires_at: None,
//!     metadata: None,
//!     ratelimit: None,
//!     uses: None,
//!     ip_allow: None,
//!     grants: Vec::new(),
//! })?;
//! let verdict = kms.verify(&VerifyBody {
//!     token: created.token.clone(),
//!     permissions: Some("app.read".into()),
//!     ..Default::default()
//! })?;
//! assert!(verdict.valid);
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::wire::{
    AccessTokenResponse, App, AppPage, AppPatchBody, AuditCheck, AuditPage, AuditQueryParams,
    CreatedTokenView, ErrorInfo, Health, IntrospectionBody, KeyPage, KeyView, NewAppBody,
    NewPermissionBody, NewRoleBody, NewTokenBody, PageQuery, PermissionPage, PermissionView,
    RoleInfo, RolePage, RolePatchBody, RotateBody, SigningSecret, TokenPage, TokenPatchBody,
    TokenView, VerifyBody, VerifyResult,
};

/// What can go wrong calling the API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{status} {}: {}", .error.code, .error.message)]
    Api {
        /// The HTTP status.
        status: u16,
        /// The decoded error.
        error: ErrorInfo,
        /// The `Retry-After` header, in seconds, when present.
        retry_after: Option<u64>,
    },
    /// The server answered an OAuth 2.0 error (token, introspection, revocation).
    #[error("{status} {}", .error.error)]
    OAuth {
        /// The HTTP status.
        status: u16,
        /// The decoded error.
        error: crate::wire::OAuthErrorBody,
    },
    /// The server answered an error status without the API's error body.
    #[error("unexpected HTTP status {status}")]
    Status {
        /// The HTTP status.
        status: u16,
    },
    /// The request did not reach the server or the answer did not arrive.
    #[error("transport error: {0}")]
    Transport(String),
    /// The answer was not what the API documents.
    #[error("undecodable answer: {0}")]
    Decode(String),
}

impl ClientError {
    /// The HTTP status, for errors the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. }
            | ClientError::OAuth { status, .. }
            | ClientError::Status { status } => Some(*status),
            _ => None,
        }
    }

    /// The error code (`not_found`, or OAuth's `invalid_grant`), for errors with a body.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { error, .. } => Some(&error.code),
            ClientError::OAuth { error, .. } => Some(&error.error),
            _ => None,
        }
    }
}

/// A client of one kms server, optionally holding the bearer token it sends.
#[derive(Clone)]
pub struct KmsClient {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
    signing_secret: Option<String>,
}

impl std::fmt::Debug for KmsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "signing_secret",
                &self.signing_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Percent-encodes one path segment.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A request-signing nonce: `n` and 24 hex digits of fresh randomness (the server takes
/// 8–128 of `[A-Za-z0-9_-]`, each once).
fn fresh_nonce() -> Result<String, ClientError> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; 12];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| ClientError::Transport(format!("no randomness for a request nonce: {e}")))?;
    let mut nonce = String::with_capacity(1 + 2 * bytes.len());
    nonce.push('n');
    for b in bytes {
        nonce.push(char::from(HEX[usize::from(b >> 4)]));
        nonce.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    Ok(nonce)
}

/// How long the client waits for one call's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl KmsClient {
    /// A client of the server at `base_url` (`http://127.0.0.1:8080`), with a 30 s timeout per call.
    pub fn new(base_url: impl Into<String>) -> Self {
        let agent = ureq::AgentBuilder::new().timeout(CALL_TIMEOUT).build();
        KmsClient {
            agent,
            base: base_url.into().trim_end_matches('/').to_owned(),
            token: None,
            signing_secret: None,
        }
    }

    /// The same client, signing every JSON call (`X-KMS-Timestamp`, `X-KMS-Nonce`,
    /// `X-KMS-Signature`) with an application's request-signing secret.
    pub fn with_signing_secret(mut self, secret: impl Into<String>) -> Self {
        self.signing_secret = Some(secret.into());
        self
    }

    /// The same client, sending `token` as its bearer credential.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let mut req = self
            .agent
            .request(method, &format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        req
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<ureq::Response, ClientError> {
        let mut req = self.request(method, path);
        let bytes = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| ClientError::Decode(e.to_string()))?),
            None => None,
        };
        if let Some(secret) = &self.signing_secret {
            let (path, query) = path.split_once('?').unwrap_or((path, ""));
            let timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let nonce = fresh_nonce()?;
            let signature = kms_core::request_signing::sign_request(
                secret.as_bytes(),
                &kms_core::request_signing::SignedRequest {
                    method,
                    path,
                    query,
                    timestamp,
                    nonce: &nonce,
                    body: bytes.as_deref().unwrap_or_default(),
                },
            );
            req = req
                .set("X-KMS-Timestamp", &timestamp.to_string())
                .set("X-KMS-Nonce", &nonce)
                .set("X-KMS-Signature", &signature);
        }
        let result = match bytes {
            Some(b) => req.set("Content-Type", "application/json").send_bytes(&b),
            None => req.call(),
        };
        Self::finish(result)
    }

    /// Sends form-encoded parameters (the OAuth endpoints).
    fn send_form(
        &self,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<ureq::Response, ClientError> {
        Self::finish(self.request("POST", path).send_form(params))
    }

    fn finish(result: Result<ureq::Response, ureq::Error>) -> Result<ureq::Response, ClientError> {
        match result {
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(status, response)) => {
                let retry_after = response
                    .header("retry-after")
                    .and_then(|v| v.trim().parse().ok());
                let text = response.into_string().unwrap_or_default();
                if let Ok(body) = serde_json::from_str::<crate::wire::ErrorBody>(&text) {
                    return Err(ClientError::Api {
                        status,
                        error: body.error,
                        retry_after,
                    });
                }
                match serde_json::from_str::<crate::wire::OAuthErrorBody>(&text) {
                    Ok(error) => Err(ClientError::OAuth { status, error }),
                    Err(_) => Err(ClientError::Status { status }),
                }
            }
            Err(ureq::Error::Transport(t)) => Err(ClientError::Transport(t.to_string())),
        }
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let response = self.send(method, path, body)?;
        response
            .into_json::<T>()
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    fn call_empty(&self, method: &str, path: &str) -> Result<(), ClientError> {
        self.send(method, path, None::<&Value>).map(|_| ())
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call("GET", path, None::<&Value>)
    }

    fn page_path(path: &str, page: &PageQuery) -> String {
        let mut params = Vec::new();
        if let Some(l) = page.limit {
            params.push(format!("limit={l}"));
        }
        if let Some(c) = &page.cursor {
            params.push(format!("cursor={}", segment(c)));
        }
        if params.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", params.join("&"))
        }
    }

    // ---- operations ----

    /// `GET /healthz`.
    pub fn healthz(&self) -> Result<Health, ClientError> {
        self.get("/healthz")
    }

    /// `GET /readyz`.
    pub fn readyz(&self) -> Result<Health, ClientError> {
        self.get("/readyz")
    }

    /// `GET /metrics`, as text.
    pub fn metrics(&self) -> Result<String, ClientError> {
        self.send("GET", "/metrics", None::<&Value>)?
            .into_string()
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `GET /openapi.json`.
    pub fn openapi(&self) -> Result<Value, ClientError> {
        self.get("/openapi.json")
    }

    // ---- applications ----

    /// `POST /v1/apps`.
    pub fn create_app(&self, req: &NewAppBody) -> Result<App, ClientError> {
        self.call("POST", "/v1/apps", Some(req))
    }

    /// `GET /v1/apps`.
    pub fn list_apps(&self, page: &PageQuery) -> Result<AppPage, ClientError> {
        self.get(&Self::page_path("/v1/apps", page))
    }

    /// `GET /v1/apps/{id}`.
    pub fn get_app(&self, id: &str) -> Result<App, ClientError> {
        self.get(&format!("/v1/apps/{}", segment(id)))
    }

    /// `PATCH /v1/apps/{id}`.
    pub fn update_app(&self, id: &str, req: &AppPatchBody) -> Result<App, ClientError> {
        self.call("PATCH", &format!("/v1/apps/{}", segment(id)), Some(req))
    }

    /// `DELETE /v1/apps/{id}`.
    pub fn delete_app(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty("DELETE", &format!("/v1/apps/{}", segment(id)))
    }

    /// `POST /v1/apps/{id}/signing-secret`: a new request-signing secret, shown this once.
    pub fn rotate_signing_secret(&self, id: &str) -> Result<SigningSecret, ClientError> {
        self.call(
            "POST",
            &format!("/v1/apps/{}/signing-secret", segment(id)),
            None::<&Value>,
        )
    }

    // ---- permissions ----

    /// `POST /v1/permissions`.
    pub fn create_permission(
        &self,
        req: &NewPermissionBody,
    ) -> Result<PermissionView, ClientError> {
        self.call("POST", "/v1/permissions", Some(req))
    }

    /// `POST /v1/permissions/bulk`: all or nothing.
    pub fn create_permissions(
        &self,
        reqs: &[NewPermissionBody],
    ) -> Result<Vec<PermissionView>, ClientError> {
        let body = crate::wire::BulkPermissionsBody {
            permissions: reqs.to_vec(),
        };
        let created: crate::wire::BulkPermissionsCreated =
            self.call("POST", "/v1/permissions/bulk", Some(&body))?;
        Ok(created.items)
    }

    /// `GET /v1/permissions`.
    pub fn list_permissions(&self) -> Result<PermissionPage, ClientError> {
        self.get("/v1/permissions")
    }

    /// `DELETE /v1/permissions/{scope}`.
    pub fn delete_permission(&self, scope: &str) -> Result<(), ClientError> {
        self.call_empty("DELETE", &format!("/v1/permissions/{}", segment(scope)))
    }

    // ---- roles ----

    /// `POST /v1/roles`.
    pub fn create_role(&self, req: &NewRoleBody) -> Result<RoleInfo, ClientError> {
        self.call("POST", "/v1/roles", Some(req))
    }

    /// `GET /v1/roles`.
    pub fn list_roles(&self) -> Result<RolePage, ClientError> {
        self.get("/v1/roles")
    }

    /// `GET /v1/roles/{name}`.
    pub fn get_role(&self, name: &str) -> Result<RoleInfo, ClientError> {
        self.get(&format!("/v1/roles/{}", segment(name)))
    }

    /// `PATCH /v1/roles/{name}`.
    pub fn update_role(&self, name: &str, req: &RolePatchBody) -> Result<RoleInfo, ClientError> {
        self.call("PATCH", &format!("/v1/roles/{}", segment(name)), Some(req))
    }

    /// `DELETE /v1/roles/{name}`.
    pub fn delete_role(&self, name: &str) -> Result<(), ClientError> {
        self.call_empty("DELETE", &format!("/v1/roles/{}", segment(name)))
    }

    // ---- tokens ----

    /// `POST /v1/apps/{app_id}/tokens`: the answer holds the plaintext, this once.
    pub fn create_token(
        &self,
        app_id: &str,
        req: &NewTokenBody,
    ) -> Result<CreatedTokenView, ClientError> {
        self.call(
            "POST",
            &format!("/v1/apps/{}/tokens", segment(app_id)),
            Some(req),
        )
    }

    /// `GET /v1/apps/{app_id}/tokens`.
    pub fn list_tokens(&self, app_id: &str, page: &PageQuery) -> Result<TokenPage, ClientError> {
        self.get(&Self::page_path(
            &format!("/v1/apps/{}/tokens", segment(app_id)),
            page,
        ))
    }

    /// `GET /v1/tokens/{id}`.
    pub fn get_token(&self, id: &str) -> Result<TokenView, ClientError> {
        self.get(&format!("/v1/tokens/{}", segment(id)))
    }

    /// `PATCH /v1/tokens/{id}`.
    pub fn update_token(&self, id: &str, req: &TokenPatchBody) -> Result<TokenView, ClientError> {
        self.call("PATCH", &format!("/v1/tokens/{}", segment(id)), Some(req))
    }

    /// `POST /v1/tokens/{id}/revoke`.
    pub fn revoke_token(&self, id: &str) -> Result<TokenView, ClientError> {
        self.call(
            "POST",
            &format!("/v1/tokens/{}/revoke", segment(id)),
            None::<&Value>,
        )
    }

    /// `POST /v1/tokens/{id}/rotate`; without a body the old token expires at once.
    pub fn rotate_token(
        &self,
        id: &str,
        req: Option<&RotateBody>,
    ) -> Result<CreatedTokenView, ClientError> {
        self.call("POST", &format!("/v1/tokens/{}/rotate", segment(id)), req)
    }

    /// `DELETE /v1/tokens/{id}`.
    pub fn delete_token(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty("DELETE", &format!("/v1/tokens/{}", segment(id)))
    }

    // ---- access tokens, keys, audit ----

    /// `POST /v1/auth/token` with `grant_type=api_key`, this client's token being the API
    /// key.
    pub fn access_token(
        &self,
        scope: Option<&str>,
        audience: Option<&str>,
    ) -> Result<AccessTokenResponse, ClientError> {
        let mut params = vec![("grant_type", "api_key")];
        if let Some(s) = scope {
            params.push(("scope", s));
        }
        if let Some(a) = audience {
            params.push(("audience", a));
        }
        Self::decode(self.send_form("/v1/auth/token", &params)?)
    }

    /// `POST /v1/auth/token` with `grant_type=refresh_token`.
    pub fn refresh_access_token(
        &self,
        refresh_token: &str,
        scope: Option<&str>,
    ) -> Result<AccessTokenResponse, ClientError> {
        let mut params = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        if let Some(s) = scope {
            params.push(("scope", s));
        }
        Self::decode(self.send_form("/v1/auth/token", &params)?)
    }

    /// `POST /v1/auth/introspect`.
    pub fn introspect(&self, token: &str) -> Result<IntrospectionBody, ClientError> {
        Self::decode(self.send_form("/v1/auth/introspect", &[("token", token)])?)
    }

    /// `POST /v1/auth/revoke`.
    pub fn revoke_access_token(&self, token: &str) -> Result<(), ClientError> {
        self.send_form("/v1/auth/revoke", &[("token", token)])
            .map(|_| ())
    }

    /// `GET /.well-known/jwks.json`.
    pub fn jwks(&self) -> Result<Value, ClientError> {
        self.get("/.well-known/jwks.json")
    }

    /// `GET /v1/keys`.
    pub fn list_keys(&self) -> Result<KeyPage, ClientError> {
        self.get("/v1/keys")
    }

    /// `POST /v1/keys/rotate`.
    pub fn rotate_keys(&self) -> Result<KeyView, ClientError> {
        self.call("POST", "/v1/keys/rotate", None::<&Value>)
    }

    /// `GET /v1/audit`.
    pub fn list_audit(&self, query: &AuditQueryParams) -> Result<AuditPage, ClientError> {
        let mut params = Vec::new();
        if let Some(l) = query.limit {
            params.push(format!("limit={l}"));
        }
        for (k, v) in [
            ("cursor", &query.cursor),
            ("action", &query.action),
            ("actor", &query.actor),
            ("since", &query.since),
        ] {
            if let Some(v) = v {
                params.push(format!("{k}={}", segment(v)));
            }
        }
        let path = if params.is_empty() {
            "/v1/audit".to_owned()
        } else {
            format!("/v1/audit?{}", params.join("&"))
        };
        self.get(&path)
    }

    /// `GET /v1/audit/verify`.
    pub fn verify_audit(&self) -> Result<AuditCheck, ClientError> {
        self.get("/v1/audit/verify")
    }

    /// `GET /v1/stats`.
    pub fn stats(&self) -> Result<crate::wire::Stats, ClientError> {
        self.get("/v1/stats")
    }

    /// `GET /v1/reports/compliance` (JSON).
    pub fn compliance_report(&self) -> Result<crate::wire::ComplianceReport, ClientError> {
        self.get("/v1/reports/compliance")
    }

    fn decode<T: DeserializeOwned>(response: ureq::Response) -> Result<T, ClientError> {
        response
            .into_json::<T>()
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    // ---- verification ----

    /// `POST /v1/verify`.
    pub fn verify(&self, req: &VerifyBody) -> Result<VerifyResult, ClientError> {
        self.call("POST", "/v1/verify", Some(req))
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(segment("tok_abc"), "tok_abc");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn debug_output_hides_the_token() {
        let c = KmsClient::new("http://x/").with_token("kms_secret");
        let shown = format!("{c:?}");
        assert!(!shown.contains("kms_secret"));
        assert_eq!(c.base_url(), "http://x");
    }
}
