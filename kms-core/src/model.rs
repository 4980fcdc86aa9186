//! Domain types: applications, tokens and their limits, and the views returned to callers.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::env::Timestamp;
use crate::scope::{RoleName, Scope};
use crate::token_format::TokenPrefix;

/// Id of the system application, which owns the root token and may see every application.
pub const SYSTEM_APP_ID: &str = "app_system";

/// Whether an application's tokens may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppStatus {
    /// Tokens verify.
    Active,
    /// Every token of the application fails with `DISABLED`.
    Disabled,
}

impl AppStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AppStatus::Active => "active",
            AppStatus::Disabled => "disabled",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(AppStatus::Active),
            "disabled" => Some(AppStatus::Disabled),
            _ => None,
        }
    }
}

/// An application: the tenant unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    /// Opaque id (`app_...`).
    pub id: String,
    /// Display name, unique.
    pub name: String,
    /// Prefix of the application's tokens.
    pub token_prefix: TokenPrefix,
    /// Active or disabled.
    pub status: AppStatus,
    /// When it was created.
    pub created_at: Timestamp,
    /// Network allow-list and request signing.
    #[serde(flatten)]
    pub security: AppSecurity,
}

/// An application's network allow-list and request-signing settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSecurity {
    /// Networks the application's tokens may be used from; empty means anywhere.
    #[serde(default)]
    pub ip_allow: Vec<IpNetwork>,
    /// Whether management calls by the application's tokens must be signed.
    #[serde(default)]
    pub require_signed_requests: bool,
    /// The request-signing secret, sealed under the master key. Never serialized.
    #[serde(skip)]
    pub signing_secret: Option<Vec<u8>>,
}

impl Application {
    /// Whether this is the system application.
    pub fn is_system(&self) -> bool {
        self.id == SYSTEM_APP_ID
    }
}

/// Whether a token was revoked. Expiry is derived from `expires_at` at check time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenStatus {
    /// Usable until it expires.
    Active,
    /// Revoked; never usable again.
    Revoked,
}

impl TokenStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Active => "active",
            TokenStatus::Revoked => "revoked",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(TokenStatus::Active),
            "revoked" => Some(TokenStatus::Revoked),
            _ => None,
        }
    }
}

/// A token's rate limit: at most `limit` verifications every `per_seconds` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimit {
    /// Verifications allowed per window.
    pub limit: u32,
    /// Window length in seconds.
    pub per_seconds: u32,
}

/// Limits on a token, all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenLimits {
    /// Rate limit on verifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratelimit: Option<RateLimit>,
    /// Verifications left; `None` means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u64>,
    /// Networks the token may be used from; empty means anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_allow: Vec<IpNetwork>,
}

/// A network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`); a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNetwork(ipnet::IpNet);

impl IpNetwork {
    /// Parses CIDR notation or a bare address.
    pub fn parse(s: &str) -> Option<Self> {
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            return Some(IpNetwork(net));
        }
        s.parse::<IpAddr>()
            .ok()
            .map(|a| IpNetwork(ipnet::IpNet::from(a)))
    }

    /// Whether every address of `self` lies in `outer`.
    pub fn is_within(&self, outer: &IpNetwork) -> bool {
        outer.0.contains(&self.0)
    }

    /// Whether `ip` lies in the network. IPv4-mapped IPv6 addresses match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

impl std::fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for IpNetwork {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNetwork {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IpNetwork::parse(&s)
            .ok_or_else(|| serde::de::Error::custom("expected a network in CIDR notation"))
    }
}

/// A stored API key. Holds the argon2id hash of the secret, never the secret; the hash
/// is never returned to callers (see [`TokenInfo`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// `tok_<lookup id>`.
    pub id: String,
    /// The owning application.
    pub app_id: String,
    /// Display name.
    pub name: String,
    /// argon2id PHC string of the secret part.
    pub secret_hash: String,
    /// The first characters of the token, for display.
    pub start: String,
    /// Active or revoked.
    pub status: TokenStatus,
    /// Creation time.
    pub created_at: Timestamp,
    /// Expiry, if any.
    pub expires_at: Option<Timestamp>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// Scopes granted directly.
    pub scopes: Vec<Scope>,
    /// Roles granted.
    pub roles: Vec<RoleName>,
    /// Free-form metadata returned on verification.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Limits.
    pub limits: TokenLimits,
    /// The token this one replaced by rotation.
    pub rotated_from: Option<String>,
    /// The token that replaced this one.
    pub rotated_to: Option<String>,
}

impl TokenRecord {
    /// Whether the token has expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// A token as shown to callers: everything but the secret and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// `tok_...`.
    pub id: String,
    /// The owning application.
    pub app_id: String,
    /// Display name.
    pub name: String,
    /// `active`, `revoked` or `expired`.
    pub status: &'static str,
    /// Scopes granted directly.
    pub scopes: Vec<Scope>,
    /// Roles granted.
    pub roles: Vec<RoleName>,
    /// Metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Expiry, or null.
    pub expires_at: Option<Timestamp>,
    /// Revocation time, or null.
    pub revoked_at: Option<Timestamp>,
    /// First characters of the token.
    pub start: String,
    /// Rate limit, if any.
    pub ratelimit: Option<RateLimit>,
    /// Verifications left, if limited.
    pub uses: Option<u64>,
    /// Allowed networks.
    pub ip_allow: Vec<IpNetwork>,
    /// The token this one replaced.
    pub rotated_from: Option<String>,
    /// The token that replaced this one.
    pub rotated_to: Option<String>,
}

impl TokenInfo {
    /// The caller-facing view of `r` at `now`.
    pub fn from_record(r: &TokenRecord, now: Timestamp) -> Self {
        let status = match r.status {
            TokenStatus::Revoked => "revoked",
            TokenStatus::Active if r.is_expired(now) => "expired",
            TokenStatus::Active => "active",
        };
        TokenInfo {
            id: r.id.clone(),
            app_id: r.app_id.clone(),
            name: r.name.clone(),
            status,
            scopes: r.scopes.clone(),
            roles: r.roles.clone(),
            metadata: r.metadata.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            start: r.start.clone(),
            ratelimit: r.limits.ratelimit,
            uses: r.limits.uses,
            ip_allow: r.limits.ip_allow.clone(),
            rotated_from: r.rotated_from.clone(),
            rotated_to: r.rotated_to.clone(),
        }
    }
}

/// A token just created or rotated: the plaintext, shown this once, and the token's view.
#[derive(Clone, Serialize)]
pub struct CreatedToken {
    /// The plaintext token. Store it now; it cannot be shown again.
    pub token: String,
    /// Everything else.
    #[serde(flatten)]
    pub info: TokenInfo,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Cursor for the next page, or null at the end.
    pub next_cursor: Option<String>,
}

/// Which page to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageRequest {
    /// Items per page (1–1000; default 50).
    pub limit: Option<u32>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
}

/// Default page size.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;
/// Largest page size.
pub const MAX_PAGE_LIMIT: u32 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses() {
        let n = IpNetwork::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.1".parse().unwrap()));
        let v6 = IpNetwork::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(IpNetwork::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(IpNetwork::parse("1.2.3.4")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "x",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "::/129",
            "1.2.3.4/8/9",
        ] {
            assert!(IpNetwork::parse(bad).is_none(), "{bad}");
        }
    }
}
