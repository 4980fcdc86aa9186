//! Signing keys of access tokens: the key ring loaded from the store under the master key,
//! listing, rotation (on demand and scheduled), retirement, and the JWKS document.

use std::sync::Arc;

use super::audit_log::Audit;
use super::{Caller, Kms};
use crate::access_token::keyring::{new_ed25519_key, KeyRing};
use crate::access_token::KeyInfo;
use crate::error::{Error, Result};
use crate::sealing::MasterKey;
use crate::store::{KeyState, Mutation};

impl Kms {
    pub(crate) fn master_key(&self) -> Result<&MasterKey> {
        self.inner.master_key.as_ref().ok_or_else(|| {
            Error::Conflict("access tokens are not enabled: no master key is configured".into())
        })
    }

    /// Loads the key ring from the store, creating the first signing key when there is
    /// none. Fails with a clear message when the master key cannot open the keys.
    pub(crate) fn load_keyring(&self) -> Result<()> {
        let Some(master) = self.inner.master_key.as_ref() else {
            return Ok(());
        };
        let records = self.inner.store.list_signing_keys()?;
        if !records.iter().any(|r| r.state == KeyState::Active) {
            let key = new_ed25519_key(
                self.new_id("k_", 16)?,
                self.inner.clock.now(),
                master,
                self.inner.random.as_ref(),
            )?;
            self.inner.store.apply(&[Mutation::PutSigningKey(key)])?;
        }
        self.reload_keyring()
    }

    pub(crate) fn reload_keyring(&self) -> Result<()> {
        let master = self.master_key()?;
        let records = self.inner.store.list_signing_keys()?;
        self.inner
            .keyring
            .store(Arc::new(KeyRing::load(records, master)?));
        Ok(())
    }

    /// When the active signing key was created, from the key ring in memory (no store
    /// read, so it may be called anywhere, e.g. by a metrics scrape); `None` without one.
    pub fn active_signing_key_created_at(&self) -> Option<crate::clock::Timestamp> {
        self.inner
            .keyring
            .load()
            .active()
            .map(|k| k.record.created_at)
    }

    /// Every signing key, newest first, without private material (`key.read`).
    pub fn list_keys(&self, caller: &Caller) -> Result<Vec<KeyInfo>> {
        caller.require(&*self.snapshot()?, "key.read")?;
        let mut keys: Vec<KeyInfo> = self
            .inner
            .store
            .list_signing_keys()?
            .iter()
            .map(KeyInfo::from)
            .collect();
        keys.reverse();
        Ok(keys)
    }

    /// Makes a new active key (`key.rotate`; system callers only). The previous active key
    /// verifies until the longest access-token lifetime (plus leeway) has passed, then
    /// retires. Returns the new key.
    pub fn rotate_keys(&self, caller: &Caller) -> Result<KeyInfo> {
        caller.require_global(&*self.snapshot()?, "key.rotate")?;
        let master = self.master_key()?;
        let now = self.inner.clock.now();
        let verify_until =
            now.plus_secs(self.inner.jwt.access_ttl_secs + self.inner.jwt.leeway_secs as i64);
        let mut batch = Vec::new();
        for mut old in self.inner.store.list_signing_keys()? {
            if old.state == KeyState::Active {
                old.state = KeyState::VerifyOnly;
                old.verify_until = Some(verify_until);
                batch.push(Mutation::PutSigningKey(old));
            }
        }
        let key = new_ed25519_key(
            self.new_id("k_", 16)?,
            now,
            master,
            self.inner.random.as_ref(),
        )?;
        let info = KeyInfo::from(&key);
        batch.push(Mutation::PutSigningKey(key));
        self.commit(
            Some(caller),
            Audit::success("key.rotate", info.kid.clone()),
            batch,
        )?;
        self.retire_due_keys()?;
        Ok(info)
    }

    /// Retires verify-only keys whose time has passed, forgets expired deny-list entries
    /// and refresh tokens, and reloads the key ring (so keys rotated by another process are
    /// picked up). Servers call it periodically.
    pub fn retire_due_keys(&self) -> Result<usize> {
        let now = self.inner.clock.now();
        let mut batch: Vec<Mutation> = self
            .inner
            .store
            .list_signing_keys()?
            .into_iter()
            .filter(|k| k.state == KeyState::VerifyOnly && k.verify_until.is_some_and(|t| t <= now))
            .map(|mut k| {
                k.state = KeyState::Retired;
                k.retired_at = Some(now);
                Mutation::PutSigningKey(k)
            })
            .collect();
        let retired = batch.len();
        batch.push(Mutation::PurgeExpired { before: now });
        self.inner.store.apply(&batch)?;
        // Keys rotated, tokens revoked and policy changed by another process sharing the
        // store become visible here.
        if self.inner.master_key.is_some() {
            self.reload_keyring()?;
        }
        self.load_revocations()?;
        self.inner.reload_policy_if_changed()?;
        Ok(retired)
    }

    /// Rotates when the active key is older than `max_age_secs` (scheduled rotation).
    /// Returns the new key when it rotated.
    pub fn rotate_keys_if_due(&self, max_age_secs: i64) -> Result<Option<KeyInfo>> {
        let now = self.inner.clock.now();
        let due = self
            .inner
            .keyring
            .load()
            .active()
            .is_none_or(|k| k.record.created_at.plus_secs(max_age_secs) <= now);
        if due {
            return self.rotate_keys(&self.operator()).map(Some);
        }
        self.retire_due_keys()?;
        Ok(None)
    }

    /// The JWKS document: public keys of every active and verify-only key.
    pub fn jwks(&self) -> serde_json::Value {
        self.inner.keyring.load().jwks()
    }
}
