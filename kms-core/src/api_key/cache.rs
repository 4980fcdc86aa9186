//! The verified-key cache: verified tokens keyed by a keyed digest (BLAKE3 in keyed mode,
//! a MAC, under a per-process random key) of the presented token, never the plaintext.
//! A MAC rather than a fast non-cryptographic hash: a digest collision would let a forged
//! token share a valid token's cache entry.
//!
//! Invalidation is exact and immediate: an index maps each token id to the entries cached
//! for it (digest and the very value inserted), and an epoch counter closes the race between
//! a cold verification that read the store before a change and inserts after it.
//!
//! The index is written by inserts and pruned by the cache's eviction listener. moka calls
//! that listener late (during housekeeping) and also when an entry is *replaced* under the
//! same digest, which is what happens whenever a key is cached again: after a policy change,
//! by each waiter of a coalesced first use, after a flush. So the listener removes an index
//! entry only when it names the evicted value itself (pointer equality), and never for a
//! replacement: an old value's late eviction can no longer unlink the live one.
//!
//! Cold verifications of one presented token are coalesced (single flight): while one
//! thread reads the store and runs argon2id for a digest, others presenting the same token
//! wait for its verdict instead of hashing too, so a hot key whose entry expires under load
//! costs one argon2id run, not one per waiting request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use crate::application::Application;
use crate::error::Result;
use crate::policy::snapshot::EffectiveSet;
use crate::random::SecureRandom;
use crate::store::TokenRecord;

/// Default of how many verified keys are cached.
pub(crate) const DEFAULT_CACHE_CAPACITY: u64 = 100_000;
/// Default of how long a verified key stays cached.
pub(crate) const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);

pub(crate) type Digest = [u8; 32];

/// A token whose secret was verified, with what verification needs next.
#[derive(Debug)]
pub(crate) struct CachedKey {
    pub(crate) record: TokenRecord,
    pub(crate) app: Arc<Application>,
    pub(crate) effective: Arc<EffectiveSet>,
    /// The conditional grants, each with what it adds when its condition holds (same
    /// generation as `effective`); empty for most keys, which then cost nothing more.
    pub(crate) conditional: Arc<[Branch]>,
    /// For a user's session: who and which session; `None` for an API key.
    pub(crate) session: Option<SessionPrincipal>,
    /// Where verifications of this key are counted; `None` when counting is off.
    pub(crate) usage: Option<Arc<crate::usage::UsageHandle>>,
}

/// The user behind a session credential, as the verified-key cache keeps it. The record of
/// a session's [`CachedKey`] is built from the user: its id is the session id, its roles
/// the user's, its expiry the session's absolute one.
#[derive(Debug)]
pub(crate) struct SessionPrincipal {
    pub(crate) user_id: String,
    pub(crate) idp_id: String,
    /// The last use written to the store (unix seconds).
    pub(crate) recorded_use: AtomicI64,
    /// The last use seen by this process (unix seconds); idle expiry counts from it.
    pub(crate) seen_use: AtomicI64,
    /// When the user was last re-checked at the provider (unix seconds; 0: never).
    pub(crate) revalidated_at: AtomicI64,
    /// Whether the session holds an upstream refresh token to re-check the user with.
    pub(crate) revalidates: bool,
}

impl CachedKey {
    /// The ids the cache index files this entry under: the token (or session) id, and for
    /// a session also its user and provider, so a change to either drops it.
    fn index_ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.record.id.as_str()).chain(
            self.session
                .iter()
                .flat_map(|s| [s.user_id.as_str(), s.idp_id.as_str()]),
        )
    }
}

/// One conditional grant, compiled: `set` is added while every condition of `when` holds
/// (one for a token's grant or a held role's grant, two for a role's grant reached through
/// a conditional grant of that role).
#[derive(Debug)]
pub(crate) struct Branch {
    pub(crate) when: Vec<Arc<crate::policy::Condition>>,
    pub(crate) set: Arc<EffectiveSet>,
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
    by_token: Arc<Mutex<TokenIndex>>,
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
        let by_token: Arc<Mutex<TokenIndex>> = Arc::default();
        let index = Arc::clone(&by_token);
        let entries = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl)
            .eviction_listener(move |digest: Arc<Digest>, key: Arc<CachedKey>, cause| {
                // A replaced entry's digest still maps to a live value (the replacement).
                if cause == moka::notification::RemovalCause::Replaced {
                    return;
                }
                if let Ok(mut idx) = index.lock() {
                    idx.unlink(&digest, &key);
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
    ///
    /// The index is written before the entry, and the epoch compared after it, so an
    /// invalidation running at the same time either finds the entry through the index or
    /// has moved the epoch, and then the entry is removed here.
    pub(crate) fn insert(&self, digest: Digest, key: Arc<CachedKey>, epoch: u64) {
        let id = key.record.id.clone();
        match self.by_token.lock() {
            Ok(mut idx) => {
                for indexed in key.index_ids() {
                    idx.link(indexed, digest, &key);
                }
            }
            // Without the index the entry could not be invalidated: don't cache it.
            Err(_) => return,
        }
        self.entries.insert(digest, key);
        if self.epoch() != epoch {
            self.remove_token(&id);
        }
    }

    /// Drops every entry cached for token `id`, at once.
    pub(crate) fn invalidate_token(&self, id: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.remove_token(id);
    }

    fn remove_token(&self, id: &str) {
        let digests = match self.by_token.lock() {
            Ok(mut idx) => idx.take(id),
            // A poisoned index cannot say where the token is: drop everything.
            Err(_) => return self.entries.invalidate_all(),
        };
        for d in digests {
            self.entries.invalidate(&d);
        }
    }

    /// Drops every entry of application `app_id` (its status or settings changed), leaving
    /// other applications' keys cached.
    pub(crate) fn invalidate_app(&self, app_id: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.shared.forget_app(app_id);
        let ids: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, k)| k.record.app_id == app_id)
            .map(|(_, k)| k.record.id.clone())
            .collect();
        for id in ids {
            self.remove_token(&id);
        }
    }

    /// Drops every entry. moka's `invalidate_all` is itself immediate (nothing inserted
    /// before it is returned again); the index is cleared so it holds only later entries.
    pub(crate) fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.shared.clear();
        self.entries.invalidate_all();
        if let Ok(mut idx) = self.by_token.lock() {
            idx.clear();
        }
    }

    /// Runs moka's pending maintenance (evictions and their listener) now; for tests that
    /// check the index against the entries.
    #[cfg(test)]
    fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks();
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

/// Where each token's cached entries are: for each token id, the digest of every presented
/// form cached and the value inserted under it. (A token has one presented form, so this is
/// one entry in practice; a list keeps the index exact without relying on that.)
#[derive(Default)]
struct TokenIndex(HashMap<String, Vec<(Digest, Weak<CachedKey>)>>);

impl TokenIndex {
    /// Records that `key` is (about to be) cached under `digest`.
    fn link(&mut self, id: &str, digest: Digest, key: &Arc<CachedKey>) {
        let list = self.0.entry(id.to_owned()).or_default();
        let weak = Arc::downgrade(key);
        match list.iter_mut().find(|(d, _)| *d == digest) {
            Some(slot) => slot.1 = weak,
            None => list.push((digest, weak)),
        }
    }

    /// Forgets `digest` for `key`'s token, if the index still names that very value there;
    /// a later value cached under the same digest stays linked.
    fn unlink(&mut self, digest: &Digest, key: &Arc<CachedKey>) {
        for id in key.index_ids() {
            let Some(list) = self.0.get_mut(id) else {
                continue;
            };
            list.retain(|(d, v)| !(d == digest && std::ptr::eq(v.as_ptr(), Arc::as_ptr(key))));
            if list.is_empty() {
                self.0.remove(id);
            }
        }
    }

    /// Removes and returns every digest cached for `id`.
    fn take(&mut self, id: &str) -> Vec<Digest> {
        self.0
            .remove(id)
            .map(|l| l.into_iter().map(|(d, _)| d).collect())
            .unwrap_or_default()
    }

    fn clear(&mut self) {
        self.0.clear();
    }

    #[cfg(test)]
    fn digests(&self, id: &str) -> Vec<Digest> {
        self.0
            .get(id)
            .map(|l| l.iter().map(|(d, _)| *d).collect())
            .unwrap_or_default()
    }
}

/// Parts many cached keys have in common, shared instead of copied: one application per
/// id and one effective set per distinct grant list (per policy generation).
#[derive(Default)]
pub(crate) struct SharedParts {
    apps: Mutex<HashMap<String, Arc<Application>>>,
    effective: Mutex<HashMap<GrantKey, Arc<EffectiveSet>>>,
}

type GrantKey = (
    u64,
    Vec<crate::policy::scope::Scope>,
    Vec<crate::policy::scope::RoleName>,
);

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
        scopes: &[crate::policy::scope::Scope],
        roles: &[crate::policy::scope::RoleName],
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

    /// Forgets the shared copy of one application (it changed).
    pub(crate) fn forget_app(&self, app_id: &str) {
        if let Ok(mut a) = self.apps.lock() {
            a.remove(app_id);
        }
    }

    /// Forgets everything (policy changes).
    pub(crate) fn clear(&self) {
        if let Ok(mut a) = self.apps.lock() {
            a.clear();
        }
        if let Ok(mut e) = self.effective.lock() {
            e.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_key::token_format::TokenPrefix;
    use crate::api_key::{TokenLimits, TokenStatus};
    use crate::application::AppSecurity;
    use crate::clock::Timestamp;
    use crate::policy::snapshot::PermissionSnapshot;
    use crate::policy::Policy;
    use crate::random::OsRandom;

    fn key(id: &str, app_id: &str) -> Arc<CachedKey> {
        let snap = PermissionSnapshot::compile(Arc::new(Policy::default()), 1);
        let empty: [crate::policy::scope::Scope; 0] = [];
        let no_roles: [crate::policy::scope::RoleName; 0] = [];
        Arc::new(CachedKey {
            record: TokenRecord {
                id: id.to_owned(),
                app_id: app_id.to_owned(),
                name: "t".to_owned(),
                secret_hash: String::new(),
                start: String::new(),
                status: TokenStatus::Active,
                created_at: Timestamp::from_unix(0),
                expires_at: None,
                revoked_at: None,
                scopes: Vec::new(),
                roles: Vec::new(),
                grants: Vec::new(),
                metadata: serde_json::Map::new(),
                limits: TokenLimits::default(),
                rotated_from: None,
                rotated_to: None,
                last_used_at: None,
            },
            app: Arc::new(Application {
                id: app_id.to_owned(),
                name: app_id.to_owned(),
                token_prefix: TokenPrefix::default_prefix(),
                status: crate::application::AppStatus::Active,
                created_at: Timestamp::from_unix(0),
                usage_price: None,
                security: AppSecurity::default(),
            }),
            effective: Arc::new(snap.effective(empty.iter(), no_roles.iter())),
            conditional: Arc::new([]),
            session: None,
            usage: None,
        })
    }

    fn cache() -> VerifiedKeyCache {
        let cache = VerifiedKeyCache::new(1000, Duration::from_secs(600), &OsRandom);
        cache.unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn a_key_cached_again_under_its_digest_is_still_invalidated() {
        let cache = cache();
        let d = cache.digest("kms_token");
        // Cached twice: the second insert replaces the first under the same digest (a
        // coalesced first use's waiters, a re-verification after a policy change).
        cache.insert(d, key("tok_a", "app_1"), cache.epoch());
        cache.insert(d, key("tok_a", "app_1"), cache.epoch());
        cache.run_pending_tasks();
        assert!(cache.get(&d).is_some());
        cache.invalidate_token("tok_a");
        assert!(
            cache.get(&d).is_none(),
            "the live entry escaped invalidation"
        );
    }

    #[test]
    fn a_late_eviction_of_a_flushed_value_does_not_unlink_its_successor() {
        let cache = cache();
        let d = cache.digest("kms_token");
        cache.insert(d, key("tok_a", "app_1"), cache.epoch());
        cache.invalidate_all();
        cache.insert(d, key("tok_a", "app_1"), cache.epoch());
        // The flushed value's eviction is notified only now, after its successor.
        cache.run_pending_tasks();
        assert_eq!(
            cache.by_token.lock().map(|i| i.digests("tok_a")).ok(),
            Some(vec![d])
        );
        cache.invalidate_token("tok_a");
        assert!(cache.get(&d).is_none());
    }

    #[test]
    fn an_insert_that_raced_an_invalidation_is_dropped() {
        let cache = cache();
        let d = cache.digest("kms_token");
        let epoch = cache.epoch(); // read before the store lookup
        cache.invalidate_token("tok_a"); // the revocation lands in between
        cache.insert(d, key("tok_a", "app_1"), epoch);
        assert!(cache.get(&d).is_none());
    }

    #[test]
    fn an_application_change_drops_only_that_applications_keys() {
        let cache = cache();
        let (a, b) = (cache.digest("kms_a"), cache.digest("kms_b"));
        cache.insert(a, key("tok_a", "app_1"), cache.epoch());
        cache.insert(b, key("tok_b", "app_2"), cache.epoch());
        cache.invalidate_app("app_1");
        assert!(cache.get(&a).is_none());
        assert!(cache.get(&b).is_some());
        // And the index of the other application's key still works.
        cache.invalidate_token("tok_b");
        assert!(cache.get(&b).is_none());
    }

    #[test]
    fn entries_beyond_capacity_are_evicted_and_leave_the_index() {
        let cache = VerifiedKeyCache::new(2, Duration::from_secs(600), &OsRandom)
            .unwrap_or_else(|e| unreachable!("{e}"));
        let ids: Vec<String> = (0..6).map(|i| format!("tok_{i}")).collect();
        for id in &ids {
            let d = cache.digest(id);
            cache.insert(d, key(id, "app_1"), cache.epoch());
            // Touch it, so the admission policy sees it as used.
            let _ = cache.get(&d);
        }
        cache.run_pending_tasks();
        assert!(cache.stats().entries <= 2, "{:?}", cache.stats());
        let indexed = cache
            .by_token
            .lock()
            .map(|i| i.0.len())
            .unwrap_or(usize::MAX);
        assert!(indexed <= 2, "{indexed} ids indexed for at most 2 entries");
        // Whatever is still cached can be invalidated through the index.
        for id in &ids {
            cache.invalidate_token(id);
            assert!(cache.get(&cache.digest(id)).is_none());
        }
    }

    #[test]
    fn expiry_prunes_the_index() {
        let cache = VerifiedKeyCache::new(1000, Duration::from_millis(1), &OsRandom)
            .unwrap_or_else(|e| unreachable!("{e}"));
        let d = cache.digest("kms_token");
        cache.insert(d, key("tok_a", "app_1"), cache.epoch());
        std::thread::sleep(Duration::from_millis(20));
        assert!(cache.get(&d).is_none());
        cache.run_pending_tasks();
        assert!(cache
            .by_token
            .lock()
            .map(|i| i.digests("tok_a").is_empty())
            .unwrap_or(false));
    }
}
