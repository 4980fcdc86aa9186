//! The verified-key cache: verified tokens keyed by a keyed digest (HMAC-SHA256 under a
//! per-process random key) of the presented token, never the plaintext.
//!
//! Invalidation is exact and immediate: an index maps each token id to its digest, and an
//! epoch counter closes the race between a cold verification that read the store before a
//! revocation and inserts after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::env::SecureRandom;
use crate::error::Result;
use crate::model::{Application, TokenRecord};
use crate::snapshot::EffectiveSet;

pub(crate) type Digest = [u8; 32];

/// A token whose secret was verified, with what verification needs next.
#[derive(Debug)]
pub(crate) struct CachedKey {
    pub(crate) record: TokenRecord,
    pub(crate) app: Application,
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
    mac: Hmac<Sha256>,
    entries: moka::sync::Cache<Digest, Arc<CachedKey>>,
    by_token: Arc<Mutex<HashMap<String, Digest>>>,
    epoch: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl VerifiedKeyCache {
    pub(crate) fn new(capacity: u64, ttl: Duration, random: &dyn SecureRandom) -> Result<Self> {
        let mut key = [0u8; 32];
        random.fill(&mut key)?;
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&key)
            .map_err(|_| crate::error::Error::internal("hmac key setup failed"))?;
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
            mac,
            entries,
            by_token,
            epoch: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    pub(crate) fn digest(&self, token: &str) -> Digest {
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        mac.finalize().into_bytes().into()
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
