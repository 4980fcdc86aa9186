//! The records stores keep that callers never see as such: API keys with their secret
//! hash, signing keys with their sealed private half, refresh tokens and the deny-list.

use serde::{Deserialize, Serialize};

use crate::api_key::{TokenLimits, TokenStatus};
use crate::clock::Timestamp;
use crate::policy::{RoleName, Scope};

/// A stored API key. Holds the argon2id hash of the secret, never the secret; the hash
/// is never returned to callers (see [`TokenInfo`](crate::TokenInfo)).
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
    /// Scopes and roles held only while their condition holds.
    #[serde(default)]
    pub grants: Vec<crate::policy::ConditionalGrant>,
    /// Free-form metadata returned on verification.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Limits.
    pub limits: TokenLimits,
    /// The token this one replaced by rotation.
    pub rotated_from: Option<String>,
    /// The token that replaced this one.
    pub rotated_to: Option<String>,
    /// When the token was last verified, to the minute (usage counting's flush sets it;
    /// writes of the token never move it backwards).
    #[serde(default)]
    pub last_used_at: Option<Timestamp>,
}

impl TokenRecord {
    /// Whether the token has expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// The algorithm a key is used with; exactly one per key (RFC 8725).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    /// Ed25519 signatures (JWS `EdDSA`).
    EdDSA,
    /// HMAC-SHA256 with a shared secret.
    HS256,
}

impl KeyAlgorithm {
    /// The JWS name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EdDSA => "EdDSA",
            KeyAlgorithm::HS256 => "HS256",
        }
    }

    /// Parses the JWS name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "EdDSA" => Some(KeyAlgorithm::EdDSA),
            "HS256" => Some(KeyAlgorithm::HS256),
            _ => None,
        }
    }
}

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyState {
    /// Signs new tokens and verifies.
    Active,
    /// Only verifies tokens it signed, until `verify_until`.
    VerifyOnly,
    /// Neither signs nor verifies.
    Retired,
}

impl KeyState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::VerifyOnly => "verify-only",
            KeyState::Retired => "retired",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(KeyState::Active),
            "verify-only" => Some(KeyState::VerifyOnly),
            "retired" => Some(KeyState::Retired),
            _ => None,
        }
    }
}

/// A stored signing key. `sealed_private` is XChaCha20-Poly1305 ciphertext; the plaintext
/// private key never reaches the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    /// Key id, as in the JWS header.
    pub kid: String,
    /// Its one algorithm.
    pub algorithm: KeyAlgorithm,
    /// Its state.
    pub state: KeyState,
    /// When it was made.
    pub created_at: Timestamp,
    /// For a verify-only key: when it retires.
    pub verify_until: Option<Timestamp>,
    /// When it retired.
    pub retired_at: Option<Timestamp>,
    /// The public key (32 bytes for Ed25519; empty for HMAC).
    pub public_key: Vec<u8>,
    /// The sealed private key or secret.
    pub sealed_private: Vec<u8>,
}

/// Whether a refresh token can still be exchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefreshStatus {
    /// Not exchanged yet.
    Active,
    /// Exchanged once; exchanging it again is reuse.
    Spent,
    /// Revoked with its family.
    Revoked,
}

impl RefreshStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshStatus::Active => "active",
            RefreshStatus::Spent => "spent",
            RefreshStatus::Revoked => "revoked",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(RefreshStatus::Active),
            "spent" => Some(RefreshStatus::Spent),
            "revoked" => Some(RefreshStatus::Revoked),
            _ => None,
        }
    }
}

/// A stored refresh token: only the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// Public lookup id.
    pub id: String,
    /// Rotation family: every refresh token descended from one API-key exchange.
    pub family_id: String,
    /// The API key it was issued for.
    pub token_id: String,
    /// That key's application.
    pub app_id: String,
    /// Hex SHA-256 of the secret part.
    pub secret_hash: String,
    /// Space-separated scopes of the family, as granted by its first exchange: the most a
    /// refresh may grant (less when the key holds less now).
    pub scope: String,
    /// Audience of the access tokens.
    pub audience: String,
    /// Active, spent or revoked.
    pub status: RefreshStatus,
    /// Creation time.
    pub created_at: Timestamp,
    /// Expiry: the family's, the same for every refresh token of it.
    pub expires_at: Timestamp,
    /// When it was exchanged.
    pub spent_at: Option<Timestamp>,
}

/// A deny-list entry: a revoked access token (`jti:<jti>`) or refresh family
/// (`family:<id>`), kept until every token it covers has expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// `jti:<jti>` or `family:<family id>`.
    pub id: String,
    /// When the entry may be forgotten.
    pub expires_at: Timestamp,
}
