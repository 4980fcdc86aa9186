//! The shapes of the HTTP API's bodies, as API.md states them: the OpenAPI document is
//! generated from these types, and [`crate::client::KmsClient`] decodes answers into them.
//!
//! The server itself answers with kms-core's own types. What keeps the two in step: the
//! test `openapi_responses` drives the real binary through every documented operation and
//! validates each answer against the committed `docs/openapi.json` (a JSON Schema
//! validator), where response bodies are closed (`additionalProperties: false`) and every
//! field the server always sends is required; the other end-to-end tests decode the
//! answers into these types through the client.
//!
//! Deserialization stays tolerant (unknown fields ignored, `#[serde(default)]` on fields
//! added later), so a client built from these types reads a newer server's answers. The
//! `ToSchema` derives and `schema(...)` attributes exist with the `server` feature only.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
#[cfg(feature = "server")]
use utoipa::{IntoParams, ToSchema};

/// JSON object of free-form metadata.
pub type Metadata = Map<String, Value>;

/// `{"status": "ok"}` or `{"status": "ready"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct Health {
    /// `ok` (healthz); `ready`, or `degraded` while the shared counters do not answer
    /// (readyz).
    pub status: String,
    /// readyz: `ok` (the database answers and, on PostgreSQL, the change listener is
    /// connected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// readyz: where rate limits, lockouts and nonces are counted: `local` (one node),
    /// `shared`, or `fallback` (shared counters configured but failing: each node counts
    /// on its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<String>,
    /// readyz: the shared counters' kind, `redis` or `postgres`, when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter_backend: Option<String>,
}

/// The error body of every failed call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorInfo,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct ErrorInfo {
    /// `invalid_request`, `unauthenticated`, `forbidden`, `not_found`, `conflict`,
    /// `payload_too_large`, `unsupported_media_type`, `rate_limited`, `unavailable`,
    /// `internal` (and `method_not_allowed`).
    pub code: String,
    /// Lowercase prose for humans.
    pub message: String,
    /// Equal to the response's `x-request-id` header.
    pub request_id: String,
    /// Whether the same call may succeed when retried.
    pub retryable: bool,
    /// `fields` (`[{"field", "problem"}]`) for `invalid_request`; `required` for
    /// `forbidden` (or `network: "denied"` for a request from a denied network);
    /// `signature` (`signature_missing`, `signature_malformed`, `signature_stale`,
    /// `signature_replayed`, `signature_invalid`) for a refused signed request;
    /// `retry_after_secs` for `rate_limited`; empty otherwise.
    #[cfg_attr(feature = "server", schema(value_type = Object))]
    pub details: Map<String, Value>,
}

/// One bad field of an `invalid_request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct FieldProblem {
    /// The field as named in the request (`scopes[2]`).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

/// `?limit=&cursor=` of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema, IntoParams))]
#[cfg_attr(feature = "server", into_params(parameter_in = Query))]
pub struct PageQuery {
    /// Items per page, 1–1000 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl From<PageQuery> for kms_core::PageRequest {
    fn from(q: PageQuery) -> Self {
        kms_core::PageRequest {
            limit: q.limit,
            cursor: q.cursor,
        }
    }
}

/// Body of `POST /v1/apps`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct NewAppBody {
    /// Display name, unique.
    pub name: String,
    /// 2–16 of `[a-z0-9]` starting with a letter (default `kms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_prefix: Option<String>,
    /// Networks (CIDR, v4 or v6) the application's tokens may be used from; absent or
    /// empty: anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_allow: Option<Vec<String>>,
    /// Whether management calls by the application's tokens must be signed (see
    /// `POST /v1/apps/{id}/signing-secret`); default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_signed_requests: Option<bool>,
}

/// Body of `PATCH /v1/apps/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AppPatchBody {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `active` or `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// New network allow-list (CIDR); empty: anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_allow: Option<Vec<String>>,
    /// Whether management calls by the application's tokens must be signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_signed_requests: Option<bool>,
    /// Price per thousand valid verifications for usage reports; `null` removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_price: Option<UsagePriceBody>,
}

/// The answer of `POST /v1/apps/{id}/signing-secret`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct SigningSecret {
    /// The application's request-signing secret, shown this once. Sign with
    /// HMAC-SHA256 keyed with this string's bytes.
    pub secret: String,
}

/// An application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct App {
    /// Opaque id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Prefix of its tokens.
    pub token_prefix: String,
    /// `active` or `disabled`.
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
    /// Networks its tokens may be used from; empty: anywhere.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(required = true))]
    pub ip_allow: Vec<String>,
    /// Whether management calls by its tokens must be signed.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(required = true))]
    pub require_signed_requests: bool,
    /// Its price per thousand valid verifications; absent when none is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_price: Option<UsagePriceBody>,
}

/// A page of applications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct AppPage {
    /// The applications.
    pub items: Vec<App>,
    /// Cursor of the next page, null at the end.
    #[cfg_attr(feature = "server", schema(required = true))]
    pub next_cursor: Option<String>,
}

/// Body of `POST /v1/permissions` (and an item of the bulk call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct NewPermissionBody {
    /// 1–8 segments of `[a-z0-9_-]{1,32}` joined by `.`.
    pub scope: String,
    /// What it allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Scopes it implies; an edge closing a cycle is refused.
    #[serde(default)]
    pub implies: Vec<String>,
}

/// Body of `POST /v1/permissions/bulk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct BulkPermissionsBody {
    /// Created all or none.
    pub permissions: Vec<NewPermissionBody>,
}

/// Answer of `POST /v1/permissions/bulk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct BulkPermissionsCreated {
    /// The created permissions.
    pub items: Vec<PermissionView>,
    /// The same list, under the request's key.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(required = true))]
    pub permissions: Vec<PermissionView>,
}

/// A permission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct PermissionView {
    /// The scope.
    pub scope: String,
    /// What it allows.
    pub description: String,
    /// Scopes it implies.
    pub implies: Vec<String>,
}

/// Every permission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct PermissionPage {
    /// The permissions.
    pub items: Vec<PermissionView>,
    /// Always null: permissions come in one page.
    #[cfg_attr(feature = "server", schema(required = true))]
    pub next_cursor: Option<String>,
}

/// Body of `POST /v1/roles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct NewRoleBody {
    /// The role's name.
    pub name: String,
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Scopes it grants.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Roles it inherits (no cycles).
    #[serde(default)]
    pub inherits: Vec<String>,
    /// Scopes granted only while a condition holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<GrantBody>,
}

/// Body of `PATCH /v1/roles/{name}`: given lists replace the old ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RolePatchBody {
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New permission list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    /// New inheritance list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherits: Option<Vec<String>>,
    /// New conditional grants (scopes only), replacing the old ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<GrantBody>>,
}

/// A role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct RoleInfo {
    /// The role's name.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(required = true))]
    pub description: String,
    /// Scopes granted directly.
    pub permissions: Vec<String>,
    /// Roles inherited.
    pub inherits: Vec<String>,
    /// Every scope the role grants.
    pub effective: Vec<String>,
    /// Scopes granted only while a condition holds (absent when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<GrantBody>,
}

/// Every role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct RolePage {
    /// The roles.
    pub items: Vec<RoleInfo>,
    /// Always null: roles come in one page.
    #[cfg_attr(feature = "server", schema(required = true))]
    pub next_cursor: Option<String>,
}

/// A token's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct RateLimitBody {
    /// Verifications allowed per window.
    pub limit: i64,
    /// Window in seconds.
    pub per_seconds: i64,
}

/// Body of `POST /v1/apps/{app_id}/tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct NewTokenBody {
    /// Display name.
    pub name: String,
    /// Scopes granted directly (no more than the caller holds).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Roles granted (no more than the caller holds).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Lifetime in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
    /// Expiry, RFC 3339, instead of `expires_in`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Returned on verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "server", schema(value_type = Option<Object>))]
    pub metadata: Option<Metadata>,
    /// Rate limit of verifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratelimit: Option<RateLimitBody>,
    /// Verifications allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<i64>,
    /// Networks (CIDR) the token may be used from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_allow: Option<Vec<String>>,
    /// Scopes and roles held only while a condition holds (a grant without `when` is the
    /// same as listing it in `scopes` or `roles`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<GrantBody>,
}

/// A grant: exactly one of `scope` and `role`, and optionally a condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct GrantBody {
    /// A scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// A role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The condition, e.g. `context.region in ["eu", "us"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
}

/// Body of `PATCH /v1/tokens/{id}`: for the limits, `null` removes the limit and an absent
/// field leaves it unchanged (in Rust: `Some(None)` and `None`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenPatchBody {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New metadata (replaces the old object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "server", schema(value_type = Option<Object>))]
    pub metadata: Option<Metadata>,
    /// New rate limit, or null to remove it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(feature = "server", schema(value_type = Option<RateLimitBody>))]
    pub ratelimit: Option<Option<RateLimitBody>>,
    /// New use count, or null for unlimited.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(feature = "server", schema(value_type = Option<i64>))]
    pub uses: Option<Option<i64>>,
    /// New allow-list, or null for anywhere.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(feature = "server", schema(value_type = Option<Vec<String>>))]
    pub ip_allow: Option<Option<Vec<String>>>,
    /// New conditional grants, replacing the old ones (an entry without `when` is added to
    /// the scopes or roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<GrantBody>>,
}

/// A field that is present, possibly as `null`.
fn present<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `POST /v1/tokens/{id}/rotate` (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct RotateBody {
    /// How long the old token keeps working, in seconds (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<i64>,
}

/// A token as shown: never its secret or hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct TokenView {
    /// `tok_...`.
    pub id: String,
    /// Its application.
    pub app_id: String,
    /// Display name.
    pub name: String,
    /// `active`, `revoked` or `expired`.
    pub status: String,
    /// Scopes granted directly.
    pub scopes: Vec<String>,
    /// Roles granted.
    pub roles: Vec<String>,
    /// Metadata.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(value_type = Object))]
    #[cfg_attr(feature = "server", schema(required = true))]
    pub metadata: Metadata,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339 or null.
    #[cfg_attr(feature = "server", schema(required = true))]
    pub expires_at: Option<String>,
    /// RFC 3339 or null.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(required = true))]
    pub revoked_at: Option<String>,
    /// The first characters of the token, for display.
    pub start: String,
    /// Rate limit, if any.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(required = true))]
    pub ratelimit: Option<RateLimitBody>,
    /// Verifications left, if limited.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(required = true))]
    pub uses: Option<u64>,
    /// Allowed networks.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(required = true))]
    pub ip_allow: Vec<String>,
    /// The token this one replaced.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(required = true))]
    pub rotated_from: Option<String>,
    /// The token that replaced this one.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(required = true))]
    pub rotated_to: Option<String>,
    /// Conditional grants (absent when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<GrantBody>,
    /// When the token was last verified (RFC 3339, to the minute; updated at most once a
    /// minute), or null.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(required = true))]
    pub last_used_at: Option<String>,
}

/// A token just created or rotated, with its plaintext (shown this once).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct CreatedTokenView {
    /// The plaintext token. Store it now; it cannot be shown again.
    pub token: String,
    /// Everything else.
    #[serde(flatten)]
    pub info: TokenView,
}

impl std::fmt::Debug for CreatedTokenView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedTokenView")
            .field("token", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

/// A page of tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct TokenPage {
    /// The tokens.
    pub items: Vec<TokenView>,
    /// Cursor of the next page, null at the end.
    #[cfg_attr(feature = "server", schema(required = true))]
    pub next_cursor: Option<String>,
}

/// Body of `POST /v1/verify`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct VerifyBody {
    /// The presented token.
    pub token: String,
    /// A query such as `billing.read AND (billing.write OR admin)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    /// Scopes that must all be held (instead of `permissions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// The address the token is used from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// What conditions on grants see as `context.NAME`: strings, numbers, booleans and
    /// lists of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "server", schema(value_type = Option<Object>))]
    pub context: Option<Metadata>,
}

impl std::fmt::Debug for VerifyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyBody")
            .field("token", &"<redacted>")
            .field("permissions", &self.permissions)
            .field("scopes", &self.scopes)
            .field("ip", &self.ip)
            .field("context", &self.context)
            .finish()
    }
}

/// The verdict of `POST /v1/verify`. When `valid` is false only `valid`, `code` and,
/// where the token was found, `token_id` are present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct VerifyResult {
    /// Whether the token is valid for the query.
    pub valid: bool,
    /// `VALID`, `MALFORMED`, `NOT_FOUND`, `EXPIRED`, `REVOKED`, `DISABLED`, `FORBIDDEN`,
    /// `INSUFFICIENT_PERMISSIONS`, `RATE_LIMITED` or `USAGE_EXCEEDED`.
    pub code: String,
    /// `api_key`, or `session` for a user's session token (valid only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// For a session: the user (valid only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// For a session: its id (valid only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The token's id (a session's id for a session), when found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Its application (valid only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// Its name (valid only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Every scope it holds, effective (valid only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Roles granted (valid only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// Expiry (valid only; null when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Metadata (valid only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "server", schema(value_type = Option<Object>))]
    pub metadata: Option<Metadata>,
    /// Uses left, for tokens with a use limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
}

/// Output of `kms init`: the root token, shown this once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct InitOutput {
    /// The plaintext root token (holds `admin`).
    pub root_token: String,
    /// Its id.
    pub token_id: String,
}

impl std::fmt::Debug for InitOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitOutput")
            .field("root_token", &"<redacted>")
            .field("token_id", &self.token_id)
            .finish()
    }
}

/// Parameters of `POST /v1/auth/token`, form-encoded or JSON.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct TokenGrantBody {
    /// `api_key` (the API key is the bearer credential) or `refresh_token`.
    pub grant_type: String,
    /// Space-separated subset of the grant's scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Audience of the access token (`api_key` grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// The refresh token to exchange (`refresh_token` grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for TokenGrantBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrantBody")
            .field("grant_type", &self.grant_type)
            .field("scope", &self.scope)
            .field("audience", &self.audience)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A successful answer of `POST /v1/auth/token` (RFC 6749 §5.1).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct AccessTokenResponse {
    /// The access token, an EdDSA JWT.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// The refresh token; exchange it once.
    pub refresh_token: String,
    /// Space-separated scopes granted.
    pub scope: String,
}

impl std::fmt::Debug for AccessTokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokenResponse")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

/// The OAuth 2.0 error body of the token, introspection and revocation endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct OAuthErrorBody {
    /// `invalid_request`, `invalid_grant`, `invalid_scope`, `invalid_client`,
    /// `unsupported_grant_type`, ...
    pub error: String,
    /// For humans; always sent by this server.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(required = true, value_type = String))]
    pub error_description: Option<String>,
}

/// Parameters of introspection and revocation, form-encoded or JSON.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct TokenParamBody {
    /// The access or refresh token.
    pub token: String,
}

impl std::fmt::Debug for TokenParamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenParamBody { token: <redacted> }")
    }
}

/// An introspection answer (RFC 7662); inactive is exactly `{"active": false}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct IntrospectionBody {
    /// Whether the token is active.
    pub active: bool,
    /// Space-separated scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The API key's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Expiry, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// `Bearer` or `refresh_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// The application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
}

/// A signing key, without private material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct KeyView {
    /// Key id.
    pub kid: String,
    /// Algorithm (`EdDSA`).
    pub alg: String,
    /// `active`, `verify-only` or `retired`.
    pub state: String,
    /// RFC 3339.
    pub created_at: String,
    /// When a verify-only key retires.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(required = true))]
    pub verify_until: Option<String>,
    /// When it retired.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(required = true))]
    pub retired_at: Option<String>,
}

/// Every signing key, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct KeyPage {
    /// The keys.
    pub items: Vec<KeyView>,
    /// Always null.
    #[cfg_attr(feature = "server", schema(required = true))]
    pub next_cursor: Option<String>,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct AuditEventView {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// RFC 3339.
    pub at: String,
    /// A token id, `operator` or `system`.
    pub actor: String,
    /// `token.create`, `role.update`, ...
    pub action: String,
    /// The object acted on.
    pub target: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// The client address, when known.
    #[cfg_attr(feature = "server", schema(required = true))]
    pub ip: Option<String>,
    /// The request id, when known.
    #[cfg_attr(feature = "server", schema(required = true))]
    pub request_id: Option<String>,
    /// The application the object belongs to, when it belongs to one.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(required = true))]
    pub app_id: Option<String>,
    /// Further facts.
    #[cfg_attr(feature = "server", schema(value_type = Object))]
    pub details: Value,
    /// The previous event's hash (hex SHA-256), linking the chain.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(required = true))]
    pub prev_hash: String,
    /// This event's hash (hex SHA-256).
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(required = true))]
    pub hash: String,
    /// The data subject (a user id) whose personal fields the event carries, sealed under
    /// their person key; absent for events about no one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `erased` when the subject was erased (their personal fields, `ip` among them, are
    /// gone for good), `unavailable` when this server cannot open them (another master
    /// key); absent when the fields were opened or there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal: Option<String>,
}

/// A page of audit events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct AuditPage {
    /// Events, newest first.
    pub items: Vec<AuditEventView>,
    /// Cursor of the next (older) page, null at the end.
    #[cfg_attr(feature = "server", schema(required = true))]
    pub next_cursor: Option<String>,
}

/// The result of checking the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct AuditCheck {
    /// Whether the chain is intact.
    pub ok: bool,
    /// Events checked (intact chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    /// The first event that does not check out (altered chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<u64>,
}

/// `?limit=&cursor=&action=&actor=&since=` of `GET /v1/audit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQueryParams {
    /// Events per page.
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only events at or after this RFC 3339 time.
    pub since: Option<String>,
}

/// Body of `POST /v1/apps/{app_id}/tokens/bulk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct BulkTokensBody {
    /// 1 to 1,000 tokens, each as `POST /v1/apps/{app_id}/tokens` takes it.
    pub tokens: Vec<NewTokenBody>,
}

/// Answer of `POST /v1/apps/{app_id}/tokens/bulk`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct CreatedTokens {
    /// The tokens with their plaintexts, in the order asked.
    pub items: Vec<CreatedTokenView>,
}

impl std::fmt::Debug for CreatedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedTokens")
            .field("items", &self.items.len())
            .finish()
    }
}

/// Body of `POST /v1/tokens/revoke`: `ids`, or a `filter`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct BulkRevokeBody {
    /// 1 to 1,000 token ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
    /// Or the tokens of one application that match (at most 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<TokenFilterBody>,
}

/// Which of an application's tokens; every given criterion must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct TokenFilterBody {
    /// The application.
    pub app_id: String,
    /// Names starting with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    /// Metadata holding each of these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "server", schema(value_type = Option<Object>))]
    pub metadata: Option<Metadata>,
    /// Created before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_before: Option<String>,
}

/// Answer of `POST /v1/tokens/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct BulkRevokedView {
    /// How many were revoked (those already revoked are not counted).
    pub revoked: usize,
    /// Their ids.
    pub ids: Vec<String>,
}

/// Body of `POST /v1/tokens/roles`: `ids` or a `filter`, and the roles to grant and
/// withdraw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct BulkRolesBody {
    /// 1 to 1,000 token ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
    /// Or the tokens of one application that match (at most 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<TokenFilterBody>,
    /// Roles to grant (the caller must hold them).
    #[serde(default)]
    pub grant: Vec<String>,
    /// Roles to withdraw.
    #[serde(default)]
    pub withdraw: Vec<String>,
}

/// Answer of `POST /v1/tokens/roles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct BulkChangedView {
    /// How many tokens changed.
    pub changed: usize,
    /// Their ids.
    pub ids: Vec<String>,
}

/// Body of `POST /v1/users/roles`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct BulkUserRolesBody {
    /// 1 to 1,000 user ids.
    pub ids: Vec<String>,
    /// Roles to give (the caller must hold them).
    #[serde(default)]
    pub grant: Vec<String>,
    /// Roles to withdraw (given roles only; mapped roles follow the provider).
    #[serde(default)]
    pub withdraw: Vec<String>,
}

/// Body of `POST /v1/permissions/bulk-delete`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct BulkDeletePermissionsBody {
    /// 1 to 10,000 scopes; those deleted together may imply each other.
    pub scopes: Vec<String>,
}

/// Answer of `POST /v1/permissions/bulk-delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct BulkDeletedView {
    /// How many were deleted.
    pub deleted: usize,
}

/// Body of `POST /v1/apps/{app_id}/idps`: OpenID Connect (`kind: "oidc"`, with `issuer`,
/// `client_id`, ...) or SAML (`kind: "saml"`, with `idp_metadata_xml`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct NewIdpBody {
    /// 2–32 of `[a-z0-9-]`, unique across the server.
    pub slug: String,
    /// `oidc` or `saml`.
    pub kind: String,
    /// OIDC: the issuer; its discovery document is fetched at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// OIDC: the client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// OIDC: the client secret (sealed at rest, never shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// OIDC: scopes asked for (default `openid`, `email`, `profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// OIDC: the claim holding group names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
    /// OIDC: accepted ID-token algorithms (`RS256`, `ES256`, `EdDSA`; default all three).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
    /// SAML: the identity provider's metadata XML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_metadata_xml: Option<String>,
    /// SAML: the attribute holding group names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_attribute: Option<String>,
    /// SAML: accept responses that answer no request (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_idp_initiated: Option<bool>,
    /// Group → roles (each must exist and be held by the caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_map: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// Roles every user of the provider gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_roles: Option<Vec<String>>,
    /// Email domains `GET /v1/sso/discover` sends here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_domains: Option<Vec<String>>,
}

/// Body of `PATCH /v1/idps/{id}`; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct IdpPatchBody {
    /// `active` or `disabled` (disabling ends the sessions started through it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// OIDC: a new client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// OIDC: scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// OIDC: the groups claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
    /// OIDC: accepted algorithms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
    /// SAML: new metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_metadata_xml: Option<String>,
    /// SAML: the groups attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_attribute: Option<String>,
    /// SAML: accept IdP-initiated responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_idp_initiated: Option<bool>,
    /// Group → roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_map: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// Roles every user gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_roles: Option<Vec<String>>,
    /// Email domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_domains: Option<Vec<String>>,
}

/// An identity-provider connection (never its client secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct Idp {
    /// `idp_...`.
    pub id: String,
    /// The application.
    pub app_id: String,
    /// The slug in its URLs.
    pub slug: String,
    /// `oidc` or `saml`.
    pub kind: String,
    /// `active` or `disabled`.
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
    /// `{public_url}/v1/sso/{slug}/login`.
    pub login_url: String,
    /// OIDC: `{public_url}/v1/sso/{slug}/callback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// SAML: `{public_url}/v1/sso/{slug}/acs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acs_url: Option<String>,
    /// SAML: `{public_url}/v1/sso/{slug}/metadata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_entity_id: Option<String>,
    /// SAML: where the SP metadata is served (the entity id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_url: Option<String>,
    /// OIDC: the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// OIDC: the client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// OIDC: whether a client secret is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_client_secret: Option<bool>,
    /// OIDC: scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// OIDC: the groups claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
    /// OIDC: accepted algorithms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
    /// SAML: the identity provider's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_metadata_xml: Option<String>,
    /// SAML: the identity provider's entity id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_entity_id: Option<String>,
    /// SAML: the groups attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_attribute: Option<String>,
    /// SAML: whether IdP-initiated logins are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_idp_initiated: Option<bool>,
    /// Group → roles.
    pub role_map: std::collections::BTreeMap<String, Vec<String>>,
    /// Roles every user gets.
    pub default_roles: Vec<String>,
    /// Email domains for discovery.
    pub email_domains: Vec<String>,
}

/// The connections of an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct IdpList {
    /// The connections.
    pub items: Vec<Idp>,
    /// Always null (one page).
    #[cfg_attr(feature = "server", schema(required = true))]
    pub next_cursor: Option<String>,
}

/// Answer of `GET /v1/sso/discover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct LoginUrl {
    /// Where the browser starts the login.
    pub login_url: String,
}

/// An account at an identity provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct UserIdentity {
    /// The connection.
    pub idp_id: String,
    /// The provider's id of the account.
    pub subject: String,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct User {
    /// `usr_...`.
    pub id: String,
    /// The application.
    pub app_id: String,
    /// Email, if the provider gave one.
    #[cfg_attr(feature = "server", schema(required = true))]
    pub email: Option<String>,
    /// Name, if the provider gave one.
    #[cfg_attr(feature = "server", schema(required = true))]
    pub name: Option<String>,
    /// `active` or `disabled`.
    pub status: String,
    /// Every role held (given and mapped).
    pub roles: Vec<String>,
    /// Roles given by an administrator.
    pub given_roles: Vec<String>,
    /// Roles mapped from the provider's groups.
    pub mapped_roles: Vec<String>,
    /// Scopes and roles held only while their condition holds.
    pub grants: Vec<GrantBody>,
    /// Accounts at identity providers.
    pub identities: Vec<UserIdentity>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339 or null.
    #[cfg_attr(feature = "server", schema(required = true))]
    pub last_login_at: Option<String>,
}

/// A page of users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct UserPage {
    /// The users.
    pub items: Vec<User>,
    /// Cursor of the next page, null at the end.
    #[cfg_attr(feature = "server", schema(required = true))]
    pub next_cursor: Option<String>,
}

/// Body of `PATCH /v1/users/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct UserPatchBody {
    /// `active` or `disabled` (disabling ends every session of the user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The roles an administrator gives (mapped roles stay apart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// Scopes and roles held only while a condition holds, replacing the old ones (a role
    /// without `when` joins the given roles; a scope needs a `when`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<GrantBody>>,
}

/// A session (never its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct Session {
    /// `ses_...`.
    pub id: String,
    /// The user.
    pub user_id: String,
    /// The provider signed in through.
    pub idp_id: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: the absolute expiry.
    pub expires_at: String,
    /// RFC 3339 (kept to about a minute).
    pub last_used_at: String,
    /// The address of the login.
    #[cfg_attr(feature = "server", schema(required = true))]
    pub ip: Option<String>,
    /// The browser of the login.
    #[cfg_attr(feature = "server", schema(required = true))]
    pub user_agent: Option<String>,
    /// When it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Why it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_reason: Option<String>,
}

/// Sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct SessionList {
    /// Live sessions, newest first.
    pub items: Vec<Session>,
    /// Always null (one page).
    #[cfg_attr(feature = "server", schema(required = true))]
    pub next_cursor: Option<String>,
}

/// Answer of `POST /v1/users/{id}/sessions/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct RevokedCount {
    /// How many live sessions ended.
    pub revoked: usize,
}

/// Answer of `GET /v1/me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct MeBody {
    /// The caller's user.
    pub user: User,
    /// This session.
    pub session: Session,
}

/// Answer of a finished login without `return_to`: the only time the token is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct LoginBody {
    /// The session token (also set as the `kms_session` cookie).
    pub session_token: String,
    /// The user.
    pub user: User,
    /// The session.
    pub session: Session,
}

/// Answer of `GET /v1/stats`: what the store holds and how fast it grows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct Stats {
    /// Applications stored, the system application included.
    pub applications: u64,
    /// API keys stored, revoked and expired ones included until retention deletes them.
    pub tokens: u64,
    /// Users stored.
    pub users: u64,
    /// Sessions stored, ended ones included until they are deleted.
    pub sessions: u64,
    /// Audit events stored.
    pub audit_events: u64,
    /// Size of the database on disk: SQLite's file plus its write-ahead log, PostgreSQL's
    /// `pg_database_size`.
    pub database_bytes: u64,
    /// Objects created per day, by kind, averaged over `growth_window_days`.
    pub growth_per_day: GrowthPerDay,
    /// The days `growth_per_day` averages over (7).
    pub growth_window_days: u32,
    /// When the numbers were taken (RFC 3339).
    pub at: String,
}

/// Objects created per day, by kind (from their creation times; deletions are not
/// subtracted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct GrowthPerDay {
    /// Applications.
    pub applications: f64,
    /// API keys.
    pub tokens: f64,
    /// Users.
    pub users: f64,
    /// Sessions.
    pub sessions: f64,
    /// Audit events.
    pub audit_events: f64,
}

/// Answer of `GET /v1/reports/compliance` (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct ComplianceReport {
    /// When the report was made (RFC 3339).
    pub generated_at: String,
    /// `fail` when any finding failed, else `pass`.
    pub status: String,
    /// The window lockouts and refresh-token reuse are counted in.
    pub period: ReportPeriod,
    /// How many findings passed and failed.
    pub summary: ReportSummary,
    /// Every finding, in a fixed order.
    pub findings: Vec<Finding>,
}

/// The period of a compliance report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct ReportPeriod {
    /// Start (RFC 3339).
    pub from: String,
    /// End: when the report was made (RFC 3339).
    pub to: String,
}

/// Passed and failed findings of a compliance report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct ReportSummary {
    /// Findings within their threshold.
    pub passed: u64,
    /// Findings over it.
    pub failed: u64,
}

/// One finding of a compliance report: counts and ids, never secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct Finding {
    /// `tokens_without_expiry`, `tokens_over_max_age`, `tokens_unused_90d`,
    /// `admin_tokens`, `apps_without_network_allow_list`, `signing_key_age`,
    /// `master_key_age`, `audit_chain`, `audit_retention`, `lockouts`,
    /// `refresh_token_reuse` or `users_without_login_90d`.
    pub id: String,
    /// What it checks, for people.
    pub title: String,
    /// `pass` or `fail` (`count` over `limit`).
    pub status: String,
    /// How many objects the finding concerns.
    pub count: u64,
    /// The most it may count and still pass (setting `report_thresholds`).
    pub limit: u64,
    /// The ids concerned (at most 1,000).
    pub items: Vec<String>,
    /// Whether `items` lists fewer than `count`.
    pub items_truncated: bool,
    /// The measured values and thresholds behind the verdict.
    #[cfg_attr(feature = "server", schema(value_type = Object))]
    pub details: Metadata,
}

/// `?from=&to=&granularity=` of a usage report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema, IntoParams))]
#[cfg_attr(feature = "server", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Start, RFC 3339, rounded down to a whole bucket (UTC); default `to` minus 24 hours
    /// (hour) or 30 days (day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// End, RFC 3339, exclusive, rounded up to a whole bucket; default now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `hour` (default) or `day`; at most 1000 buckets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granularity: Option<String>,
}

impl From<UsageQuery> for kms_core::UsageQuery {
    fn from(q: UsageQuery) -> Self {
        kms_core::UsageQuery {
            from: q.from,
            to: q.to,
            granularity: q.granularity,
        }
    }
}

/// An application's price per thousand valid verifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct UsagePriceBody {
    /// A decimal string with at most 6 decimals, e.g. `"0.40"`.
    pub per_thousand: String,
    /// ISO 4217 code, e.g. `EUR`.
    pub currency: String,
}

/// One bucket of a usage report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct UsageBucketBody {
    /// Start of the bucket, RFC 3339.
    pub start: String,
    /// Verifications in it.
    pub total: u64,
    /// By outcome code (`VALID`, `REVOKED`, ...); codes without any left out.
    pub by_code: std::collections::BTreeMap<String, u64>,
}

/// Totals of a usage report's period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct UsageTotalsBody {
    /// Verifications in the period.
    pub total: u64,
    /// By outcome code.
    pub by_code: std::collections::BTreeMap<String, u64>,
}

/// The period against the equally long one just before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct UsageTrendBody {
    /// Verifications in the period before.
    pub previous_period_total: u64,
    /// `(total - previous) / previous`; null when the period before had none.
    #[cfg_attr(feature = "server", schema(required = true))]
    pub change_ratio: Option<f64>,
}

/// What the period cost, for an application with a usage price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct UsageCostBody {
    /// Valid verifications in the period.
    pub billable_units: u64,
    /// `billable_units / 1000 × per_thousand`, exact, as a decimal string.
    pub amount: String,
    /// The price's currency.
    pub currency: String,
}

/// Answer of `GET /v1/apps/{app_id}/usage` and `GET /v1/tokens/{id}/usage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct UsageReportBody {
    /// `hour` or `day`.
    pub granularity: String,
    /// Every bucket of the period, oldest first, empty ones included.
    pub series: Vec<UsageBucketBody>,
    /// The period's totals.
    pub totals: UsageTotalsBody,
    /// Against the period before.
    pub trend: UsageTrendBody,
    /// Applications with a usage price only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<UsageCostBody>,
}

/// `GET /v1/users/{id}/export`: everything kms holds about a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema))]
pub struct UserExportView {
    /// RFC 3339: when the export was made.
    pub exported_at: String,
    /// The profile: email, name, status, roles, grants, identities.
    pub user: User,
    /// Every stored session, ended ones included, with address and user agent.
    pub sessions: Vec<Session>,
    /// A page of the audit events the user (or one of their sessions) caused or that
    /// concern them, newest first, personal fields opened; `?limit=` (1–1000, default 100)
    /// and `?cursor=` page it.
    pub audit: AuditPage,
}

/// `?erase=true` of `DELETE /v1/users/{id}` and `DELETE /v1/tokens/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(ToSchema, IntoParams))]
#[cfg_attr(feature = "server", into_params(parameter_in = Query))]
pub struct EraseQuery {
    /// Also erase the personal data: a user's person key (their audit events' personal
    /// fields become unreadable), a token's metadata copies; default false.
    pub erase: Option<bool>,
}
