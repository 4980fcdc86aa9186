//! Custody of the master key: rotation re-seals every sealed secret under a new key in
//! one store batch, so a crash before the commit leaves everything under the old key and
//! one after it everything under the new one; there is no state in between.
//!
//! Sealed under the master key, each bound to its own context:
//!
//! | what | where | context |
//! |---|---|---|
//! | signing keys' private halves | `signing_keys` | the key id |
//! | request-signing secrets | applications | `signing:<app id>` |
//! | OpenID Connect client secrets | provider connections | `<idp id>:client_secret` |
//! | PKCE verifiers of pending logins | login attempts | `<attempt id>:pkce` |
//! | providers' refresh tokens | sessions | `<session id>:upstream` |
//! | per-person keys (crypto-shredding) | person keys | `person:<user id>` |

use base64::Engine;
use serde::Serialize;

use super::Kms;
use crate::error::{Error, Result};
use crate::identity::IdpProtocol;
use crate::sealing::MasterKey;
use crate::store::{Mutation, SigningKeyRecord};

/// Metadata key: when the master key in use was set (RFC 3339), written by a rotation.
/// Without it the key dates from the database's initialisation (`initialized_at`).
pub const MASTER_KEY_SET_AT_KEY: &str = "master_key_set_at";

/// Applications (and person keys) read per store call while collecting sealed secrets.
const PAGE: usize = 500;

/// What a master-key rotation re-sealed, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MasterKeyRotation {
    /// Signing keys (every state, retired ones included).
    pub signing_keys: u64,
    /// Applications' request-signing secrets.
    pub request_signing_secrets: u64,
    /// OpenID Connect client secrets of provider connections.
    pub client_secrets: u64,
    /// PKCE verifiers of pending logins.
    pub login_attempts: u64,
    /// Providers' refresh tokens held by sessions.
    pub upstream_tokens: u64,
    /// Per-person keys of the personal fields in audit events.
    pub person_keys: u64,
    /// When the new key was set (RFC 3339).
    pub set_at: String,
}

impl Kms {
    /// Re-seals every sealed secret under `new` in one batch (with its audit event), and
    /// records the time in [`MASTER_KEY_SET_AT_KEY`]. Local administration only (the CLI's
    /// `kms master-key rotate`): it has no caller, and every node must be stopped and then
    /// restarted with the new key, since this instance keeps the old one. Fails, changing
    /// nothing, when a secret cannot be opened with the current key or `new` is the
    /// current key.
    pub fn rotate_master_key(&self, new: &MasterKey) -> Result<MasterKeyRotation> {
        let old = self.inner.master_key.as_ref().ok_or_else(|| {
            Error::Conflict("no master key is configured: there is nothing to rotate".into())
        })?;
        if old.same_key(new) {
            return Err(Error::invalid(
                "new_key",
                "is the master key in use; give a new one",
            ));
        }
        let random = self.inner.random.as_ref();
        let reseal = |context: &str, sealed: &[u8]| -> Result<Vec<u8>> {
            let plain = old.open(context, sealed).map_err(|_| {
                Error::internal(format!(
                    "the secret sealed for {context:?} cannot be opened with the current master \
                     key; nothing was changed"
                ))
            })?;
            new.seal(context, &plain, random)
        };
        let reseal_text = |context: &str, sealed: &str| -> Result<String> {
            let engine = base64::engine::general_purpose::STANDARD;
            let bytes = engine.decode(sealed).map_err(|_| {
                Error::internal(format!("the secret sealed for {context:?} is not base64"))
            })?;
            Ok(engine.encode(reseal(context, &bytes)?))
        };
        let store = &self.inner.store;
        let mut report = MasterKeyRotation::default();
        let mut batch = Vec::new();

        for key in store.list_signing_keys()? {
            let sealed_private = reseal(&key.kid, &key.sealed_private)?;
            batch.push(Mutation::PutSigningKey(SigningKeyRecord {
                sealed_private,
                ..key
            }));
            report.signing_keys += 1;
        }
        let mut after: Option<String> = None;
        loop {
            let apps = store.list_apps(after.as_deref(), PAGE)?;
            let Some(last) = apps.last() else { break };
            after = Some(last.id.clone());
            for mut app in apps {
                if let Some(sealed) = &app.security.signing_secret {
                    app.security.signing_secret =
                        Some(reseal(&format!("signing:{}", app.id), sealed)?);
                    batch.push(Mutation::UpdateApp(app));
                    report.request_signing_secrets += 1;
                }
            }
        }
        for mut idp in store.list_idps(None)? {
            if let IdpProtocol::Oidc(oidc) = &mut idp.protocol {
                if let Some(sealed) = &oidc.sealed_client_secret {
                    oidc.sealed_client_secret =
                        Some(reseal_text(&format!("{}:client_secret", idp.id), sealed)?);
                    batch.push(Mutation::PutIdp(idp));
                    report.client_secrets += 1;
                }
            }
        }
        let sealed = store.sealed_identity_records()?;
        for mut attempt in sealed.login_attempts {
            if let Some(s) = &attempt.sealed_pkce_verifier {
                attempt.sealed_pkce_verifier =
                    Some(reseal_text(&format!("{}:pkce", attempt.id), s)?);
                // Attempts are single-use records without an update: spent and inserted
                // again, in the same transaction.
                batch.push(Mutation::ConsumeLoginAttempt(attempt.id.clone()));
                batch.push(Mutation::InsertLoginAttempt(attempt));
                report.login_attempts += 1;
            }
        }
        for mut session in sealed.sessions {
            if let Some(s) = &session.sealed_upstream_refresh {
                session.sealed_upstream_refresh =
                    Some(reseal_text(&format!("{}:upstream", session.id), s)?);
                batch.push(Mutation::UpdateSession(session));
                report.upstream_tokens += 1;
            }
        }
        let mut after: Option<String> = None;
        loop {
            let keys = store.list_person_keys(after.as_deref(), PAGE)?;
            let Some(last) = keys.last() else { break };
            after = Some(last.subject.clone());
            for key in keys {
                let resealed = crate::privacy::reseal_person_key(Some(old), new, &key, random)
                    .map_err(|_| {
                        Error::internal(format!(
                            "the person key of {:?} cannot be opened with the current master \
                             key; nothing was changed",
                            key.subject
                        ))
                    })?;
                batch.push(Mutation::UpdatePersonKey(resealed));
                report.person_keys += 1;
            }
        }
        let now = self.inner.clock.now();
        report.set_at = now.to_rfc3339();
        batch.push(Mutation::PutMeta {
            key: MASTER_KEY_SET_AT_KEY.to_owned(),
            value: report.set_at.clone(),
        });
        let audit = super::audit_log::Audit::success("master_key.rotate", "master_key")
            .actor("operator")
            .details(serde_json::json!({
                "signing_keys": report.signing_keys,
                "request_signing_secrets": report.request_signing_secrets,
                "client_secrets": report.client_secrets,
                "login_attempts": report.login_attempts,
                "upstream_tokens": report.upstream_tokens,
                "person_keys": report.person_keys,
            }));
        self.commit(None, audit, batch)?;
        Ok(report)
    }

    /// When the master key in use was set: the last rotation, else the database's
    /// initialisation; `None` before either.
    pub fn master_key_set_at(&self) -> Result<Option<crate::clock::Timestamp>> {
        self.master_key_set_at_raw()?
            .map(|(v, _)| {
                crate::clock::Timestamp::parse_rfc3339(&v)
                    .map_err(|_| Error::internal(format!("the stored time {v:?} is not RFC 3339")))
            })
            .transpose()
    }

    /// The stored time the master key was set, as stored, with the metadata key it came
    /// from ([`MASTER_KEY_SET_AT_KEY`], else `initialized_at`).
    pub(crate) fn master_key_set_at_raw(&self) -> Result<Option<(String, &'static str)>> {
        let store = &self.inner.store;
        Ok(match store.get_meta(MASTER_KEY_SET_AT_KEY)? {
            Some(v) => Some((v, MASTER_KEY_SET_AT_KEY)),
            None => store
                .get_meta(super::INITIALIZED_KEY)?
                .map(|v| (v, super::INITIALIZED_KEY)),
        })
    }
}
