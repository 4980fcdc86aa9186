//! Access tokens (EdDSA JWTs) and the OAuth 2.0 shapes of the token, introspection and
//! revocation endpoints. Refresh tokens and the deny-list are stored as
//! [`RefreshRecord`](crate::store::RefreshRecord) and [`Revocation`](crate::store::Revocation).

use serde::{Deserialize, Serialize};

/// Settings for issuing and validating access tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// `iss` of issued tokens; validation requires it.
    pub issuer: String,
    /// `aud` when the client asks for none.
    pub default_audience: String,
    /// Access-token lifetime in seconds (default 900).
    pub access_ttl_secs: i64,
    /// Lifetime of a refresh family in seconds (default 30 days), counted from the API-key
    /// exchange that started it: refreshing hands out successors with the same expiry, so
    /// a family never outlives it.
    pub refresh_ttl_secs: i64,
    /// Seconds after its exchange during which a refresh token may be exchanged again
    /// without counting as reuse (default 0). Such a repeat yields the same successor
    /// refresh token as the first exchange, never a second branch of the family.
    pub refresh_overlap_secs: i64,
    /// Clock leeway for `exp` and `nbf`, in seconds (default 30).
    pub leeway_secs: u64,
}

impl Default for JwtSettings {
    fn default() -> Self {
        JwtSettings {
            issuer: "kms".to_owned(),
            default_audience: "kms".to_owned(),
            access_ttl_secs: 900,
            refresh_ttl_secs: 30 * 24 * 3600,
            refresh_overlap_secs: 0,
            leeway_secs: 30,
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// The API key's id.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Expiry (Unix seconds).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Unique id, for revocation.
    pub jti: String,
    /// Space-separated scopes.
    pub scope: String,
    /// The API key's application.
    pub app_id: String,
    /// The refresh family the token was issued in.
    pub fid: String,
}

/// A successful token response (RFC 6749 §5.1). `Debug` redacts the tokens.
#[derive(Clone, Serialize)]
pub struct TokenResponse {
    /// The JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// The refresh token; exchange it once.
    pub refresh_token: String,
    /// Space-separated scopes granted.
    pub scope: String,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

/// The OAuth 2.0 error codes of the token, introspection and revocation endpoints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthError {
    /// A parameter is missing or malformed.
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    /// The grant (API key or refresh token) is invalid, expired, revoked or reused.
    #[error("invalid_grant: {0}")]
    InvalidGrant(String),
    /// The requested scope is unknown or wider than the grant.
    #[error("invalid_scope: {0}")]
    InvalidScope(String),
    /// The client (API key) could not be authenticated.
    #[error("invalid_client: {0}")]
    InvalidClient(String),
    /// The grant type is not supported.
    #[error("unsupported_grant_type: {0}")]
    UnsupportedGrantType(String),
}

impl OAuthError {
    /// The wire code (`invalid_grant`).
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::InvalidClient(_) => "invalid_client",
            OAuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
        }
    }

    /// The human-readable description (`error_description`).
    pub fn description(&self) -> &str {
        match self {
            OAuthError::InvalidRequest(d)
            | OAuthError::InvalidGrant(d)
            | OAuthError::InvalidScope(d)
            | OAuthError::InvalidClient(d)
            | OAuthError::UnsupportedGrantType(d) => d,
        }
    }
}

/// Why an access token was refused in-process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not a JWT, or a header, algorithm or `typ` we do not accept.
    #[error("the access token is malformed or uses a disallowed algorithm")]
    Malformed,
    /// The `kid` names no usable key.
    #[error("the access token names an unknown or retired key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the access token's signature is invalid")]
    BadSignature,
    /// `exp` has passed.
    #[error("the access token has expired")]
    Expired,
    /// `nbf` lies in the future.
    #[error("the access token is not valid yet")]
    NotYetValid,
    /// `iss` or `aud` is not the expected one, or a required claim is missing.
    #[error("the access token's issuer, audience or claims are not accepted")]
    Claims,
    /// The token or its family was revoked, or the API key it was issued for is no longer
    /// valid (revoked, expired, deleted, or its application disabled).
    #[error("the access token was revoked")]
    Revoked,
    /// The store could not be asked whether the token's API key is still valid; the token
    /// is refused (fail closed).
    #[error("the access token could not be checked; try again")]
    Unavailable,
}

/// The body of an introspection response (RFC 7662). Inactive is exactly `{"active": false}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[allow(
    clippy::large_enum_variant,
    reason = "a short-lived response body; boxing buys nothing"
)]
pub enum Introspection {
    /// An active token.
    Active {
        /// Always true.
        active: bool,
        /// Space-separated scopes.
        scope: String,
        /// The application (OAuth client).
        client_id: String,
        /// The API key's id.
        sub: String,
        /// Audience.
        #[serde(skip_serializing_if = "Option::is_none")]
        aud: Option<String>,
        /// Issuer.
        #[serde(skip_serializing_if = "Option::is_none")]
        iss: Option<String>,
        /// Expiry.
        exp: i64,
        /// Issued at.
        iat: i64,
        /// Not before.
        #[serde(skip_serializing_if = "Option::is_none")]
        nbf: Option<i64>,
        /// Token id.
        #[serde(skip_serializing_if = "Option::is_none")]
        jti: Option<String>,
        /// `Bearer` or `refresh_token`.
        token_type: &'static str,
        /// The application.
        app_id: String,
    },
    /// Anything else.
    Inactive {
        /// Always false.
        active: bool,
    },
}

impl Introspection {
    /// The inactive answer.
    pub fn inactive() -> Self {
        Introspection::Inactive { active: false }
    }
}
