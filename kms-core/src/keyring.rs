//! Signing keys: Ed25519 for access tokens (and HMAC-SHA256 where a shared secret is
//! needed), each with one algorithm, a `kid`, and a life of active → verify-only → retired.
//! Private material is stored only sealed under the master key.

use std::sync::Arc;

use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use serde::{Deserialize, Serialize};

use crate::env::{SecureRandom, Timestamp};
use crate::error::{Error, Result};
use crate::sealing::MasterKey;

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

/// A key as shown to callers: no private material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: &'static str,
    /// `active`, `verify-only` or `retired`.
    pub state: &'static str,
    /// Creation time.
    pub created_at: Timestamp,
    /// When a verify-only key retires.
    pub verify_until: Option<Timestamp>,
    /// When it retired.
    pub retired_at: Option<Timestamp>,
}

impl From<&SigningKeyRecord> for KeyInfo {
    fn from(r: &SigningKeyRecord) -> Self {
        KeyInfo {
            kid: r.kid.clone(),
            alg: r.algorithm.as_str(),
            state: r.state.as_str(),
            created_at: r.created_at,
            verify_until: r.verify_until,
            retired_at: r.retired_at,
        }
    }
}

/// Makes a new active Ed25519 key, sealed under `master`.
pub(crate) fn new_ed25519_key(
    kid: String,
    now: Timestamp,
    master: &MasterKey,
    random: &dyn SecureRandom,
) -> Result<SigningKeyRecord> {
    let mut seed = [0u8; 32];
    random.fill(&mut seed)?;
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let sealed_private = master.seal(&kid, &seed, random)?;
    Ok(SigningKeyRecord {
        kid,
        algorithm: KeyAlgorithm::EdDSA,
        state: KeyState::Active,
        created_at: now,
        verify_until: None,
        retired_at: None,
        public_key: signing.verifying_key().to_bytes().to_vec(),
        sealed_private,
    })
}

/// A key ready for use: decoded public key and, for the active key, the opened private key.
pub(crate) struct LoadedKey {
    pub(crate) record: SigningKeyRecord,
    pub(crate) verifying: ed25519_dalek::VerifyingKey,
    pub(crate) encoding: Option<jsonwebtoken::EncodingKey>,
}

/// Every usable (non-retired) key, with the active one found.
#[derive(Default)]
pub(crate) struct KeyRing {
    pub(crate) keys: Vec<Arc<LoadedKey>>,
}

impl KeyRing {
    /// Loads the records, opening the active keys' private material with `master`.
    /// Fails when the master key cannot open them.
    pub(crate) fn load(records: Vec<SigningKeyRecord>, master: &MasterKey) -> Result<Self> {
        let mut keys = Vec::new();
        for record in records {
            if record.state == KeyState::Retired || record.algorithm != KeyAlgorithm::EdDSA {
                continue;
            }
            let public: [u8; 32] = record.public_key.as_slice().try_into().map_err(|_| {
                Error::internal(format!(
                    "signing key {} has a malformed public key",
                    record.kid
                ))
            })?;
            let verifying = ed25519_dalek::VerifyingKey::from_bytes(&public).map_err(|_| {
                Error::internal(format!(
                    "signing key {} has an invalid public key",
                    record.kid
                ))
            })?;
            let encoding = if record.state == KeyState::Active {
                let seed = master.open(&record.kid, &record.sealed_private).map_err(|_| {
                    Error::internal(format!(
                        "the master key cannot open signing key {}: it is not the key this database was created with",
                        record.kid
                    ))
                })?;
                let seed: [u8; 32] = seed
                    .try_into()
                    .map_err(|_| Error::internal("a sealed Ed25519 key has the wrong length"))?;
                let der = ed25519_dalek::SigningKey::from_bytes(&seed)
                    .to_pkcs8_der()
                    .map_err(|_| Error::internal("pkcs8 encoding of a signing key failed"))?;
                Some(jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()))
            } else {
                None
            };
            keys.push(Arc::new(LoadedKey {
                record,
                verifying,
                encoding,
            }));
        }
        Ok(KeyRing { keys })
    }

    pub(crate) fn active(&self) -> Option<&Arc<LoadedKey>> {
        self.keys
            .iter()
            .filter(|k| k.encoding.is_some())
            .max_by_key(|k| k.record.created_at)
    }

    pub(crate) fn find(&self, kid: &str) -> Option<&Arc<LoadedKey>> {
        self.keys.iter().find(|k| k.record.kid == kid)
    }

    /// The JWKS document: public keys of active and verify-only keys.
    pub(crate) fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&k.record.public_key),
                    "kid": k.record.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}
