//! The verified-key cache: verified tokens keyed by a keyed digest (BLAKE3 in keyed mode,
//! a MAC, under a per-process random key) of the presented token, never the plaintext.
//! A MAC rather than a fast non-cryptographic hash: a digest collision would let a forged
//! token share a valid token's cache entry.
//!
//! Invalidation is exact and immediate: an index maps each token id to its digest, and an
//! epoch counter closes the race between a cold verification that read the store before a
//! revocation and inserts after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::env::SecureRandom;
use crate::error::Result;
use crate::model::{Application, TokenRecord};
use crate::snapshot::EffectiveSet;

pub(crate) type Digest = [u8; 32];

/// A token whose secret was verified, with what verification needs next.
#[derive(Debug)]
pub(crate) struct CachedKey {
    pub(crate) record: TokenRecord,
    pub(crate) app: Arc<Application>,
    pub(crate) effective: Arc<EffectiveSet>,
}

/// Hit and miss counts of the verified-key cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Verifications answered from the cache.
    pub hits: u64,
    /// Verifications that had to read the store and hash.
    pub misses: u64,
    /// Entries currently held (approximate).
    pub entries: u64,
}

pub(crate) struct VerifiedKeyCache {
    key: [u8; 32],
    entries: moka::sync::Cache<Digest, Arc<CachedKey>>,
    by_token: Arc<Mutex<HashMap<String, Digest>>>,
    epoch: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    pub(crate) shared: SharedParts,
}

impl VerifiedKeyCache {
    pub(crate) fn new(capacity: u64, ttl: Duration, random: &dyn SecureRandom) -> Result<Self> {
        let mut key = [0u8; 32];
        random.fill(&mut key)?;
        let by_token: Arc<Mutex<HashMap<String, Digest>>> = Arc::default();
        let index = Arc::clone(&by_token);
        let entries = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl)
            .eviction_listener(move |digest: Arc<Digest>, key: Arc<CachedKey>, _cause| {
                if let Ok(mut idx) = index.lock() {
                    if idx.get(&key.record.id) == Some(&*digest) {
                        idx.remove(&key.record.id);
                    }
                }
            })
            .build();
        Ok(VerifiedKeyCache {
            key,
            entries,
            by_token,
            epoch: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            shared: SharedParts::default(),
        })
    }

    pub(crate) fn digest(&self, token: &str) -> Digest {
        *blake3::keyed_hash(&self.key, token.as_bytes()).as_bytes()
    }

    pub(crate) fn get(&self, digest: &Digest) -> Option<Arc<CachedKey>> {
        let hit = self.entries.get(digest);
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// The epoch to read before a cold store lookup.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Inserts `key` unless an invalidation happened since `epoch` was read.
    pub(crate) fn insert(&self, digest: Digest, key: Arc<CachedKey>, epoch: u64) {
        let id = key.record.id.clone();
        if let Ok(mut idx) = self.by_token.lock() {
            idx.insert(id.clone(), digest);
        }
        self.entries.insert(digest, key);
        if self.epoch() != epoch {
            self.remove_token(&id);
        }
    }

    pub(crate) fn invalidate_token(&self, id: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.remove_token(id);
    }

    fn remove_token(&self, id: &str) {
        let digest = self.by_token.lock().ok().and_then(|mut idx| idx.remove(id));
        if let Some(d) = digest {
            self.entries.invalidate(&d);
        }
    }

    pub(crate) fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.shared.clear();
        self.entries.invalidate_all();
        if let Ok(mut idx) = self.by_token.lock() {
            idx.clear();
        }
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.entries.entry_count(),
        }
    }
}

/// Parts many cached keys have in common, shared instead of copied: one application per
/// id and one effective set per distinct grant list (per policy generation).
#[derive(Default)]
pub(crate) struct SharedParts {
    apps: Mutex<HashMap<String, Arc<Application>>>,
    effective: Mutex<HashMap<GrantKey, Arc<EffectiveSet>>>,
}

type GrantKey = (u64, Vec<crate::scope::Scope>, Vec<crate::scope::RoleName>);

/// Most distinct entries kept before starting over.
const SHARED_LIMIT: usize = 10_000;

impl SharedParts {
    /// The shared copy of `app`, as read from the store just now.
    pub(crate) fn app(&self, app: Application) -> Arc<Application> {
        let Ok(mut apps) = self.apps.lock() else {
            return Arc::new(app);
        };
        if let Some(shared) = apps.get(&app.id) {
            if **shared == app {
                return Arc::clone(shared);
            }
        }
        if apps.len() >= SHARED_LIMIT {
            apps.clear();
        }
        let shared = Arc::new(app);
        apps.insert(shared.id.clone(), Arc::clone(&shared));
        shared
    }

    /// The shared effective set of a grant list, computed by `compute` when new.
    pub(crate) fn effective(
        &self,
        generation: u64,
        scopes: &[crate::scope::Scope],
        roles: &[crate::scope::RoleName],
        compute: impl FnOnce() -> EffectiveSet,
    ) -> Arc<EffectiveSet> {
        let key = (generation, scopes.to_vec(), roles.to_vec());
        if let Some(set) = self
            .effective
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return set;
        }
        let set = Arc::new(compute());
        if let Ok(mut m) = self.effective.lock() {
            if m.len() >= SHARED_LIMIT {
                m.clear();
            }
            m.insert(key, Arc::clone(&set));
        }
        set
    }

    /// Forgets everything (policy or application changes).
    pub(crate) fn clear(&self) {
        if let Ok(mut a) = self.apps.lock() {
            a.clear();
        }
        if let Ok(mut e) = self.effective.lock() {
            e.clear();
        }
    }
}
