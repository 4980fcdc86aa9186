//! API keys as callers see them: status, limits (rate, uses, networks), the view returned
//! by reads, and the plaintext returned once on creation.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::policy::{RoleName, Scope};
use crate::store::TokenRecord;

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
    /// Scopes and roles held only while a condition holds (absent when there are none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<crate::policy::GrantInput>,
    /// When the token was last verified (to the minute), or null.
    pub last_used_at: Option<Timestamp>,
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
            grants: r.grants.iter().map(|g| g.to_input()).collect(),
            last_used_at: r.last_used_at,
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
