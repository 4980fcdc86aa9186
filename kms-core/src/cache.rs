//! The verified-key cache: verified tokens keyed by a keyed digest (BLAKE3 in keyed mode,
//! a MAC, under a per-process random key) of the presented token, never the plaintext.
//! A MAC rather than a fast non-cryptographic hash: a digest collision would let a forged
//! token share a valid token's cache entry.
//!
//! Invalidation is exact and immediate: an index maps each token id to its digest, and an
//! epoch counter closes the race between a cold verification that read the store before a
//! revocation and inserts after it.
//!
//! Cold verifications of one presented token are coalesced (single flight): while one
//! thread reads the store and runs argon2id for a digest, others presenting the same token
//! wait for its verdict instead of hashing too, so a hot key whose entry expires under load
//! costs one argon2id run, not one per waiting request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
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
    inflight: Mutex<HashMap<Digest, Arc<Flight>>>,
    pub(crate) shared: SharedParts,
}

/// The outcome of a cold verification: the verified key and the epoch read before the
/// lookup, or `None` for an unknown id or a wrong secret.
pub(crate) type ColdOutcome = Option<(Arc<CachedKey>, u64)>;

/// One cold verification in progress, which other threads presenting the same token wait
/// for.
#[derive(Default)]
struct Flight {
    state: Mutex<FlightState>,
    finished: Condvar,
}

/// Where a [`Flight`] is.
#[derive(Default, Clone)]
enum FlightState {
    #[default]
    Running,
    /// The leader failed (store error or panic): each waiter runs its own verification.
    Failed,
    /// The leader's verdict.
    Landed(ColdOutcome),
}

/// Longest a waiter waits for another thread's cold verification before running its own.
const FLIGHT_WAIT: Duration = Duration::from_secs(30);

/// Publishes the leader's verdict (or its failure) and lets the waiters go, even when the
/// leader unwinds.
struct Landing<'a> {
    cache: &'a VerifiedKeyCache,
    digest: Digest,
    flight: Arc<Flight>,
    state: FlightState,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        if let Ok(mut inflight) = self.cache.inflight.lock() {
            inflight.remove(&self.digest);
        }
        if let Ok(mut state) = self.flight.state.lock() {
            *state = match std::mem::take(&mut self.state) {
                FlightState::Running => FlightState::Failed,
                landed => landed,
            };
        }
        self.flight.finished.notify_all();
    }
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
            inflight: Mutex::default(),
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

    /// Runs the cold verification `load` of the token with `digest`, unless another thread
    /// is already running it: then waits for that thread's verdict and shares it (the same
    /// digest means the same presented token). If that thread fails, or takes longer than
    /// [`FLIGHT_WAIT`], runs `load` itself.
    pub(crate) fn single_flight(
        &self,
        digest: Digest,
        load: impl FnOnce() -> Result<ColdOutcome>,
    ) -> Result<ColdOutcome> {
        let (flight, leader) = match self.inflight.lock() {
            Ok(mut inflight) => match inflight.get(&digest) {
                Some(flight) => (Arc::clone(flight), false),
                None => {
                    let flight = Arc::new(Flight::default());
                    inflight.insert(digest, Arc::clone(&flight));
                    (flight, true)
                }
            },
            Err(_) => return load(),
        };
        if !leader {
            if let Some(outcome) = flight.wait() {
                return Ok(outcome);
            }
            return load();
        }
        let mut landing = Landing {
            cache: self,
            digest,
            flight,
            state: FlightState::Running,
        };
        let outcome = load()?;
        landing.state = FlightState::Landed(outcome.clone());
        Ok(outcome)
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

impl Flight {
    /// The leader's verdict, or `None` if it failed or took too long.
    fn wait(&self) -> Option<ColdOutcome> {
        let state = self.state.lock().ok()?;
        let (state, _) = self
            .finished
            .wait_timeout_while(state, FLIGHT_WAIT, |s| matches!(s, FlightState::Running))
            .ok()?;
        match &*state {
            FlightState::Landed(outcome) => Some(outcome.clone()),
            FlightState::Running | FlightState::Failed => None,
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
