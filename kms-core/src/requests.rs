//! Request types of the management API. Fields arrive raw (strings, numbers) so that
//! validation can report every bad field at once, with the field's name.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::api_key::{IpNetwork, RateLimit};
use crate::clock::Timestamp;
use crate::error::{Error, FieldErrors, Result};
use crate::policy::scope::{shown, RoleName, Scope};

/// Longest display name (applications, tokens), in characters.
pub(crate) const MAX_NAME_CHARS: usize = 128;
/// Longest description, in characters.
pub(crate) const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Largest token metadata object, serialized, in bytes.
pub(crate) const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Most scopes or roles in one grant list.
pub(crate) const MAX_GRANTS: usize = 256;
/// Most networks in one allow-list.
pub(crate) const MAX_NETWORKS: usize = 64;
/// Longest token lifetime or rotation grace, in seconds (10 years).
pub(crate) const MAX_LIFETIME_SECS: i64 = 10 * 365 * 24 * 3600;

/// Create an application.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct NewApp {
    /// Display name, unique.
    pub name: String,
    /// Token prefix (`kms` when absent).
    #[serde(default)]
    pub token_prefix: Option<String>,
    /// Networks the application's tokens may be used from (CIDR); absent means anywhere.
    #[serde(default)]
    pub ip_allow: Option<Vec<String>>,
    /// Whether management calls by the application's tokens must be signed.
    #[serde(default)]
    pub require_signed_requests: Option<bool>,
}

/// Change an application.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppUpdate {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// `active` or `disabled`.
    #[serde(default)]
    pub status: Option<String>,
    /// New allow-list (empty: anywhere).
    #[serde(default)]
    pub ip_allow: Option<Vec<String>>,
    /// Whether management calls by the application's tokens must be signed.
    #[serde(default)]
    pub require_signed_requests: Option<bool>,
    /// Price per thousand valid verifications for usage reports, or null to remove it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub usage_price: Option<Option<crate::usage::UsagePriceInput>>,
}

/// Define a permission.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct NewPermission {
    /// The scope.
    pub scope: String,
    /// What it allows.
    #[serde(default)]
    pub description: Option<String>,
    /// Scopes it implies.
    #[serde(default)]
    pub implies: Vec<String>,
}

/// Define a role.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct NewRole {
    /// The role's name.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Scopes it grants.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Roles it inherits.
    #[serde(default)]
    pub inherits: Vec<String>,
    /// Scopes it grants only while a condition holds.
    #[serde(default)]
    pub grants: Vec<crate::policy::GrantInput>,
}

/// Change a role; absent fields stay as they are, given lists replace the old ones.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleUpdate {
    /// New description.
    #[serde(default)]
    pub description: Option<String>,
    /// New permission list.
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
    /// New inheritance list.
    #[serde(default)]
    pub inherits: Option<Vec<String>>,
    /// New conditional grants (scopes only), replacing the old ones.
    #[serde(default)]
    pub grants: Option<Vec<crate::policy::GrantInput>>,
}

/// A rate limit as requested.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
pub struct RateLimitInput {
    /// Verifications per window.
    pub limit: i64,
    /// Window in seconds.
    pub per_seconds: i64,
}

/// Create a token.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct NewToken {
    /// Display name.
    pub name: String,
    /// Scopes granted directly.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Roles granted.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Lifetime in seconds.
    #[serde(default)]
    pub expires_in: Option<i64>,
    /// Expiry as RFC 3339 (instead of `expires_in`).
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Metadata returned on verification.
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Rate limit.
    #[serde(default)]
    pub ratelimit: Option<RateLimitInput>,
    /// Number of verifications allowed.
    #[serde(default)]
    pub uses: Option<i64>,
    /// Networks the token may be used from.
    #[serde(default)]
    pub ip_allow: Option<Vec<String>>,
    /// Scopes and roles, each optionally held only while a condition holds.
    #[serde(default)]
    pub grants: Vec<crate::policy::GrantInput>,
}

/// Change a token's name, metadata or limits. For the limits, JSON `null` removes the limit
/// and an absent field leaves it unchanged.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenUpdate {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New metadata (replaces the old object).
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// New rate limit, or null to remove it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub ratelimit: Option<Option<RateLimitInput>>,
    /// New use count, or null for unlimited.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub uses: Option<Option<i64>>,
    /// New allow-list, or null / empty for anywhere.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub ip_allow: Option<Option<Vec<String>>>,
    /// New conditional grants (replacing the old ones); an entry without `when` is added to
    /// the scopes or roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<crate::policy::GrantInput>>,
}

fn double_option<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Rotate a token.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RotateToken {
    /// How long the old token keeps working, in seconds (default 0: it expires at once).
    #[serde(default)]
    pub grace_seconds: Option<i64>,
}

/// Verify a token and, optionally, a permission query. `Debug` redacts the token.
#[derive(Clone, Default, Deserialize, Serialize)]
pub struct VerifyRequest {
    /// The presented token.
    pub token: String,
    /// A query expression such as `billing.read AND (billing.write OR admin)`.
    #[serde(default)]
    pub permissions: Option<String>,
    /// Scopes that must all be held (instead of `permissions`).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// The address the token is used from, checked against its allow-list.
    #[serde(default)]
    pub ip: Option<String>,
    /// What conditions on grants see as `context.NAME`: strings, numbers, booleans and
    /// lists of them.
    #[serde(default)]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
}

impl std::fmt::Debug for VerifyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyRequest")
            .field("token", &"<redacted>")
            .field("permissions", &self.permissions)
            .field("scopes", &self.scopes)
            .field("ip", &self.ip)
            .field("context", &self.context)
            .finish()
    }
}

// ---- validation helpers shared by the operations ----

pub(crate) fn validate_name(errs: &mut FieldErrors, field: &str, name: &str) -> Option<String> {
    let chars = name.chars().count();
    if name.trim().is_empty() {
        errs.push(field, "must not be empty");
    } else if chars > MAX_NAME_CHARS {
        errs.push(
            field,
            format!("must be at most {MAX_NAME_CHARS} characters"),
        );
    } else if name.chars().any(char::is_control) {
        errs.push(field, "must not contain control characters");
    } else {
        return Some(name.to_owned());
    }
    None
}

pub(crate) fn validate_description(errs: &mut FieldErrors, d: Option<&str>) -> String {
    let d = d.unwrap_or_default();
    if d.chars().count() > MAX_DESCRIPTION_CHARS {
        errs.push(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        );
    }
    // Line breaks and tabs are text; other control characters (U+0000 among them, which a
    // PostgreSQL `text` column cannot hold) are refused on every store alike.
    if d.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        errs.push(
            "description",
            "must not contain control characters other than line breaks and tabs",
        );
    }
    d.to_owned()
}

pub(crate) fn validate_scopes(errs: &mut FieldErrors, field: &str, raw: &[String]) -> Vec<Scope> {
    if raw.len() > MAX_GRANTS {
        errs.push(field, format!("must list at most {MAX_GRANTS} entries"));
        return Vec::new();
    }
    let mut out: Vec<Scope> = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        if let Some(scope) = errs.take(Scope::parse_field(s, &format!("{field}[{i}]"))) {
            if !out.contains(&scope) {
                out.push(scope);
            }
        }
    }
    out
}

pub(crate) fn validate_roles(errs: &mut FieldErrors, field: &str, raw: &[String]) -> Vec<RoleName> {
    if raw.len() > MAX_GRANTS {
        errs.push(field, format!("must list at most {MAX_GRANTS} entries"));
        return Vec::new();
    }
    let mut out: Vec<RoleName> = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        if let Some(r) = errs.take(RoleName::parse_field(s, &format!("{field}[{i}]"))) {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    out
}

pub(crate) fn validate_metadata(
    errs: &mut FieldErrors,
    m: Option<serde_json::Map<String, serde_json::Value>>,
) -> serde_json::Map<String, serde_json::Value> {
    let m = m.unwrap_or_default();
    let size = serde_json::to_vec(&m)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        errs.push(
            "metadata",
            format!("must serialize to at most {MAX_METADATA_BYTES} bytes"),
        );
    }
    m
}

pub(crate) fn validate_ratelimit(errs: &mut FieldErrors, r: RateLimitInput) -> Option<RateLimit> {
    let limit = u32::try_from(r.limit)
        .ok()
        .filter(|l| (1..=1_000_000).contains(l));
    let per = u32::try_from(r.per_seconds)
        .ok()
        .filter(|p| (1..=86_400).contains(p));
    if limit.is_none() {
        errs.push("ratelimit.limit", "must be an integer from 1 to 1000000");
    }
    if per.is_none() {
        errs.push(
            "ratelimit.per_seconds",
            "must be an integer from 1 to 86400",
        );
    }
    Some(RateLimit {
        limit: limit?,
        per_seconds: per?,
    })
}

pub(crate) fn validate_uses(errs: &mut FieldErrors, uses: i64) -> Option<u64> {
    match u64::try_from(uses) {
        Ok(u) if u >= 1 => Some(u),
        _ => {
            errs.push("uses", "must be a positive integer");
            None
        }
    }
}

pub(crate) fn validate_networks(errs: &mut FieldErrors, raw: &[String]) -> Vec<IpNetwork> {
    if raw.len() > MAX_NETWORKS {
        errs.push(
            "ip_allow",
            format!("must list at most {MAX_NETWORKS} networks"),
        );
        return Vec::new();
    }
    raw.iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let n = IpNetwork::parse(s);
            if n.is_none() {
                errs.push(
                    format!("ip_allow[{i}]"),
                    format!(
                        "must be an IPv4 or IPv6 network in CIDR notation; got {}",
                        shown(s)
                    ),
                );
            }
            n
        })
        .collect()
}

pub(crate) fn validate_expiry(
    errs: &mut FieldErrors,
    now: Timestamp,
    expires_in: Option<i64>,
    expires_at: Option<&str>,
) -> Option<Timestamp> {
    match (expires_in, expires_at) {
        (Some(_), Some(_)) => {
            errs.push(
                "expires_at",
                "give either expires_in or expires_at, not both",
            );
            None
        }
        (Some(secs), None) => {
            if (1..=MAX_LIFETIME_SECS).contains(&secs) {
                Some(now.plus_secs(secs))
            } else {
                errs.push(
                    "expires_in",
                    format!("must be from 1 to {MAX_LIFETIME_SECS} seconds"),
                );
                None
            }
        }
        (None, Some(at)) => match Timestamp::parse_rfc3339(at) {
            Ok(t) if t > now && t.unix() - now.unix() <= MAX_LIFETIME_SECS => Some(t),
            Ok(_) => {
                errs.push(
                    "expires_at",
                    "must lie in the future, at most 10 years ahead",
                );
                None
            }
            Err(_) => {
                errs.push("expires_at", "must be an RFC 3339 date-time");
                None
            }
        },
        (None, None) => None,
    }
}

pub(crate) fn parse_ip(raw: Option<&str>) -> Result<Option<IpAddr>> {
    raw.map(|s| {
        s.parse::<IpAddr>().map_err(|_| {
            Error::invalid(
                "ip",
                format!("must be an IPv4 or IPv6 address; got {}", shown(s)),
            )
        })
    })
    .transpose()
}

/// Most names in a verification's `context`.
pub(crate) const MAX_CONTEXT_KEYS: usize = 64;
/// Longest string in a verification's `context` (bytes), and most items in one list.
pub(crate) const MAX_CONTEXT_VALUE: usize = 1024;

/// Checks a verification's `context`: at most [`MAX_CONTEXT_KEYS`] names of 1–64
/// characters `[A-Za-z0-9_]`, each a string, number, boolean or list of them.
pub(crate) fn validate_context(
    context: &serde_json::Map<String, serde_json::Value>,
) -> crate::error::Result<()> {
    use serde_json::Value;
    let mut errs = FieldErrors::default();
    if context.len() > MAX_CONTEXT_KEYS {
        errs.push(
            "context",
            format!("must have at most {MAX_CONTEXT_KEYS} names"),
        );
        return errs.finish();
    }
    let scalar = |v: &Value| match v {
        Value::String(s) => s.len() <= MAX_CONTEXT_VALUE,
        Value::Number(_) | Value::Bool(_) => true,
        _ => false,
    };
    for (name, value) in context {
        let field = format!("context.{}", crate::policy::scope::shown(name));
        let name_ok = (1..=64).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            errs.push(field, "names are 1 to 64 of A-Z, a-z, 0-9 and _");
            continue;
        }
        let ok = match value {
            Value::Array(items) => items.len() <= MAX_CONTEXT_VALUE && items.iter().all(scalar),
            v => scalar(v),
        };
        if !ok {
            errs.push(
                field,
                "must be a string, number or boolean, or a list of them (strings up to 1024 bytes)",
            );
        }
    }
    errs.finish()
}

/// Revoke many tokens: `ids`, or a `filter` (give one).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRevoke {
    /// The tokens to revoke.
    #[serde(default)]
    pub ids: Option<Vec<String>>,
    /// Or: the tokens of an application that match.
    #[serde(default)]
    pub filter: Option<TokenFilter>,
}

/// Which of an application's tokens a bulk call means; every given criterion must match.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFilter {
    /// The application.
    pub app_id: String,
    /// Names starting with this.
    #[serde(default)]
    pub name_prefix: Option<String>,
    /// Metadata holding each of these values.
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Created before this time (RFC 3339).
    #[serde(default)]
    pub created_before: Option<String>,
}

/// What a bulk revocation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkRevoked {
    /// How many tokens it revoked (those already revoked are not counted).
    pub revoked: usize,
    /// Their ids.
    pub ids: Vec<String>,
}

/// Create many tokens in one application.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BulkNewTokens {
    /// The tokens, each as `POST /v1/apps/{app_id}/tokens` takes it.
    pub tokens: Vec<NewToken>,
}

/// Grant and withdraw roles on many tokens: `ids`, or a `filter` (give one).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRoles {
    /// The tokens.
    #[serde(default)]
    pub ids: Option<Vec<String>>,
    /// Or: the tokens of an application that match.
    #[serde(default)]
    pub filter: Option<TokenFilter>,
    /// Roles to grant.
    #[serde(default)]
    pub grant: Vec<String>,
    /// Roles to withdraw.
    #[serde(default)]
    pub withdraw: Vec<String>,
}

/// Delete several permissions.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BulkDeletePermissions {
    /// The scopes.
    pub scopes: Vec<String>,
}

/// What a bulk change of roles did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkChanged {
    /// How many tokens changed (those that already had the roles asked for are not counted).
    pub changed: usize,
    /// Their ids.
    pub ids: Vec<String>,
}
