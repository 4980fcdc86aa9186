//! People: users of an application, the identity-provider connections they sign in
//! through, login attempts in flight, and sessions. The records here are what stores keep;
//! none holds a secret in plaintext (session secrets are hashed, client secrets, PKCE
//! verifiers and upstream refresh tokens are sealed under the master key).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::policy::{ConditionalGrant, RoleName};

/// Prefix of user ids.
#[cfg_attr(
    not(feature = "sso"),
    allow(dead_code, reason = "users are created by single sign-on")
)]
pub(crate) const USER_ID_PREFIX: &str = "usr_";
/// Prefix of identity-provider ids.
#[cfg_attr(
    not(feature = "sso"),
    allow(dead_code, reason = "connections exist with single sign-on")
)]
pub(crate) const IDP_ID_PREFIX: &str = "idp_";
/// Prefix of session ids.
pub(crate) const SESSION_ID_PREFIX: &str = "ses_";

/// Whether a user may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// Signs in and holds their roles.
    Active,
    /// Refused at login; every session ended when they were disabled.
    Disabled,
}

impl UserStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(UserStatus::Active),
            "disabled" => Some(UserStatus::Disabled),
            _ => None,
        }
    }
}

/// A link between a user and their account at an identity provider. Users are found by
/// `(idp_id, subject)`, never by email.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    /// The provider connection.
    pub idp_id: String,
    /// The provider's stable id of the account (`sub`, or the SAML `NameID`).
    pub subject: String,
}

/// A stored user. `roles` are given by an administrator; `mapped_roles` come from the
/// provider's groups and are replaced at each login that carries the groups claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    /// `usr_...`.
    pub id: String,
    /// The application (tenant) the user belongs to.
    pub app_id: String,
    /// The email the provider gave, if any (display and discovery only, never a key).
    pub email: Option<String>,
    /// The display name the provider gave, if any.
    pub name: Option<String>,
    /// Active or disabled.
    pub status: UserStatus,
    /// Roles given by an administrator.
    pub roles: Vec<RoleName>,
    /// Roles mapped from the provider's groups at the last login.
    pub mapped_roles: Vec<RoleName>,
    /// Scopes and roles held while a condition holds, given by an administrator.
    #[serde(default)]
    pub grants: Vec<ConditionalGrant>,
    /// Accounts at identity providers; each `(idp_id, subject)` belongs to one user.
    pub identities: Vec<Identity>,
    /// Creation time.
    pub created_at: Timestamp,
    /// The last successful login.
    pub last_login_at: Option<Timestamp>,
}

impl UserRecord {
    /// Every role the user holds: given and mapped, each once, given ones first.
    pub fn all_roles(&self) -> Vec<RoleName> {
        let mut out = self.roles.clone();
        for r in &self.mapped_roles {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        out
    }
}

/// The protocol of a provider connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdpKind {
    /// OpenID Connect (authorization code with PKCE).
    Oidc,
    /// SAML 2.0 (HTTP-Redirect request, HTTP-POST response).
    Saml,
}

impl IdpKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            IdpKind::Oidc => "oidc",
            IdpKind::Saml => "saml",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "oidc" => Some(IdpKind::Oidc),
            "saml" => Some(IdpKind::Saml),
            _ => None,
        }
    }
}

/// Whether a connection accepts logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdpStatus {
    /// Accepts logins.
    Active,
    /// Refuses logins (403); existing sessions end when it is disabled.
    Disabled,
}

impl IdpStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            IdpStatus::Active => "active",
            IdpStatus::Disabled => "disabled",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(IdpStatus::Active),
            "disabled" => Some(IdpStatus::Disabled),
            _ => None,
        }
    }
}

/// The OpenID Connect side of a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OidcSettings {
    /// The issuer, exactly as the discovery document states it.
    pub issuer: String,
    /// The client id registered at the provider.
    pub client_id: String,
    /// The client secret, sealed under the master key; `None` for a public client.
    pub sealed_client_secret: Option<String>,
    /// Scopes asked for (`openid` always among them).
    pub scopes: Vec<String>,
    /// The ID-token or userinfo claim holding group names.
    pub groups_claim: Option<String>,
    /// Signature algorithms accepted for ID tokens (`RS256`, `ES256`, `EdDSA`).
    pub algorithms: Vec<String>,
    /// The discovery document as fetched (JSON).
    pub discovery: serde_json::Value,
    /// When the discovery document was fetched.
    pub discovered_at: Timestamp,
}

/// The SAML side of a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamlSettings {
    /// The identity provider's metadata XML, as given.
    pub idp_metadata_xml: String,
    /// The attribute holding group names.
    pub groups_attribute: Option<String>,
    /// Whether responses that answer no request of ours are accepted (off by default).
    #[serde(default)]
    pub allow_idp_initiated: bool,
}

/// The protocol settings of a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum IdpProtocol {
    /// OpenID Connect.
    Oidc(OidcSettings),
    /// SAML 2.0.
    Saml(SamlSettings),
}

/// A stored identity-provider connection of one application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdpRecord {
    /// `idp_...`.
    pub id: String,
    /// The application whose users sign in through it.
    pub app_id: String,
    /// Unique across the server; part of every SSO URL.
    pub slug: String,
    /// Active or disabled.
    pub status: IdpStatus,
    /// Creation time.
    pub created_at: Timestamp,
    /// Group name → roles it maps to.
    pub role_map: BTreeMap<String, Vec<RoleName>>,
    /// Roles every user of this provider gets mapped.
    pub default_roles: Vec<RoleName>,
    /// Email domains (lower case) that `GET /v1/sso/discover` sends here.
    pub email_domains: Vec<String>,
    /// The protocol settings.
    pub protocol: IdpProtocol,
}

impl IdpRecord {
    /// The protocol.
    pub fn kind(&self) -> IdpKind {
        match self.protocol {
            IdpProtocol::Oidc(_) => IdpKind::Oidc,
            IdpProtocol::Saml(_) => IdpKind::Saml,
        }
    }
}

/// A login in flight, from the redirect to the provider until its callback. Single use:
/// the callback consumes it ([`Mutation::ConsumeLoginAttempt`](crate::store::Mutation)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginAttempt {
    /// A hash of the `state` (OIDC) or `RelayState` (SAML) sent to the provider.
    pub id: String,
    /// The provider connection.
    pub idp_id: String,
    /// A hash of the value of the browser cookie bound to this attempt.
    pub browser_hash: String,
    /// The OIDC nonce (not secret once sent; kept to compare).
    pub nonce: Option<String>,
    /// The PKCE verifier, sealed under the master key.
    pub sealed_pkce_verifier: Option<String>,
    /// The SAML `AuthnRequest` id.
    pub saml_request_id: Option<String>,
    /// Where the browser goes after the login (a relative path).
    pub return_to: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// At most 10 minutes after creation.
    pub expires_at: Timestamp,
}

/// A stored session of a user. The session token's secret is kept only as a hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// `ses_...`.
    pub id: String,
    /// The user.
    pub user_id: String,
    /// The user's application.
    pub app_id: String,
    /// The provider the user signed in through.
    pub idp_id: String,
    /// Hex SHA-256 of the token's secret part.
    pub secret_hash: String,
    /// Login time.
    pub created_at: Timestamp,
    /// Absolute expiry (`--session-ttl` after login).
    pub expires_at: Timestamp,
    /// The last use as recorded (written at most about once a minute).
    pub last_used_at: Timestamp,
    /// The address the login came from.
    pub ip: Option<String>,
    /// The browser's `User-Agent` at login (truncated).
    pub user_agent: Option<String>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// Why it was revoked (`logout`, `revoked`, `user_disabled`, `idp_deleted`, ...).
    pub revoke_reason: Option<String>,
    /// The provider's refresh token, sealed, for revalidation (OIDC `offline_access`).
    pub sealed_upstream_refresh: Option<String>,
    /// When the user was last re-checked at the provider.
    pub revalidated_at: Option<Timestamp>,
}

impl SessionRecord {
    /// Whether the session is usable at `now` with `idle_secs` of idle timeout.
    pub fn is_live(&self, now: Timestamp, idle_secs: i64) -> bool {
        self.revoked_at.is_none()
            && now < self.expires_at
            && now < self.last_used_at.plus_secs(idle_secs)
    }
}

/// Which sessions a [`Mutation::RevokeSessions`](crate::store::Mutation) ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionSelector {
    /// One session.
    Id(String),
    /// Every session of a user.
    User(String),
    /// Every session started through a provider.
    Idp(String),
}
