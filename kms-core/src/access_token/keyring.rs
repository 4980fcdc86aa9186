//! Signing keys: Ed25519 for access tokens (and HMAC-SHA256 where a shared secret is
//! needed), each with one algorithm, a `kid`, and a life of active → verify-only → retired.
//! Private material is stored only sealed under the master key.

use std::sync::Arc;

use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use serde::Serialize;

use crate::clock::Timestamp;

use crate::error::{Error, Result};
use crate::random::SecureRandom;
use crate::sealing::MasterKey;
use crate::store::{KeyAlgorithm, KeyState, SigningKeyRecord};

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

/// The Ed25519 public key of a stored signing key; the error names the key.
pub(crate) fn verifying_key(
    record: &SigningKeyRecord,
) -> std::result::Result<ed25519_dalek::VerifyingKey, String> {
    let public: [u8; 32] = record
        .public_key
        .as_slice()
        .try_into()
        .map_err(|_| format!("signing key {} has a malformed public key", record.kid))?;
    ed25519_dalek::VerifyingKey::from_bytes(&public)
        .map_err(|_| format!("signing key {} has an invalid public key", record.kid))
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
            let verifying = verifying_key(&record).map_err(Error::internal)?;
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
