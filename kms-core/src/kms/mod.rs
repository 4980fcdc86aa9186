//! The `Kms` facade: every operation of the service, with its rules (scopes, tenant
//! isolation, no privilege escalation), over a [`Store`].

mod access_tokens;
mod api_keys;
mod apps;
mod audit_log;
mod caller;
mod capacity;
mod checkpoints;
mod compliance;
mod master_key;
mod policy_ops;
mod privacy;
mod request_signing;
mod sessions;
mod signing_keys;
#[cfg(feature = "sso")]
mod sso;
mod usage;
mod verify;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

pub use audit_log::{AuditFilter, RetentionReport};
pub use caller::Caller;
pub use capacity::{CapacityStats, GrowthPerDay, GROWTH_WINDOW_DAYS};
pub use checkpoints::{AuditCheckpoint, CheckpointVerification, CHECKPOINT_TYP};
pub use compliance::{
    ComplianceReport, ComplianceSettings, ComplianceSummary, Finding, FindingStatus, ReportPeriod,
    FINDING_IDS, MAX_FINDING_ITEMS, UNUSED_DAYS,
};
pub use master_key::{MasterKeyRotation, MASTER_KEY_SET_AT_KEY};
pub use policy_ops::RoleView;
pub use privacy::{UserExport, DEFAULT_EXPORT_AUDIT_LIMIT};
pub use sessions::{
    BulkUserRoles, Me, SessionInfo, SessionSettings, StartedSession, UserInfo, UserUpdate,
    SESSION_TOKEN_PREFIX,
};
#[cfg(feature = "sso")]
pub use sso::{
    validate_return_to, BrowserContext, IdpInfo, IdpUpdate, LoginDone, LoginRedirect, NewIdp,
    OidcCallback, SsoConfig, LOGIN_ATTEMPT_SECS,
};
pub use usage::UsageFlushed;
pub use verify::{Verification, VerifyCode, VerifyResponse};

use crate::access_token::keyring::KeyRing;
use crate::access_token::JwtSettings;
use crate::api_key::cache::{
    CacheStats, VerifiedKeyCache, DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_TTL,
};
use crate::api_key::hashing::{HashParams, SecretHasher};
use crate::api_key::token_format::TokenPrefix;
use crate::api_key::{CreatedToken, TokenInfo, TokenLimits};
use crate::application::{AppStatus, Application, SYSTEM_APP_ID};
use crate::clock::{Clock, SystemClock};
use crate::defence::counters::{CounterStatus, Counters, SharedCounters};
use crate::defence::failure_gate::LockoutPolicy;
use crate::error::{Error, Result};
use crate::policy::default_permissions;
use crate::policy::scope::{Scope, ADMIN};
use crate::policy::snapshot::PermissionSnapshot;
use crate::random::{OsRandom, SecureRandom};
use crate::sealing::MasterKey;
use crate::security_event::{SecurityEvent, SecurityEventSink};
use crate::store::{Change, ChangeListener, Mutation, Store};

const INITIALIZED_KEY: &str = "initialized_at";

/// Builds a [`Kms`].
pub struct KmsBuilder {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn SecureRandom>,
    hash_params: HashParams,
    cache_ttl: Duration,
    cache_capacity: u64,
    master_key: Option<MasterKey>,
    jwt: JwtSettings,
    lockout: LockoutPolicy,
    sinks: Vec<Arc<dyn SecurityEventSink>>,
    shared_counters: Option<Arc<dyn SharedCounters>>,
    condition_limits: crate::policy::ConditionLimits,
    sessions: SessionSettings,
    #[cfg(feature = "sso")]
    sso: Option<sso::SsoConfig>,
    usage_counting: bool,
}

impl std::fmt::Debug for KmsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The store, clock, random source and sinks are trait objects; the master key is
        // left out altogether.
        f.debug_struct("KmsBuilder")
            .field("hash_params", &self.hash_params)
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_capacity", &self.cache_capacity)
            .field("jwt", &self.jwt)
            .field("lockout", &self.lockout)
            .finish_non_exhaustive()
    }
}

impl KmsBuilder {
    /// Whether verifications are counted for usage reports (default: on). Off, nothing is
    /// counted and no key's `last_used_at` moves.
    pub fn usage_counting(mut self, on: bool) -> Self {
        self.usage_counting = on;
        self
    }

    /// Keeps rate limits, lockout counters and request-signing nonces in `counters`,
    /// which every node of a deployment shares (Redis or PostgreSQL, from `kms-store`),
    /// instead of in this process. While they fail, this process counts on its own (see
    /// [`Kms::counter_status`]); no call fails because of them.
    pub fn shared_counters(mut self, counters: Arc<dyn SharedCounters>) -> Self {
        self.shared_counters = Some(counters);
        self
    }

    /// How long users' sessions live (absolute, idle) and how often a session re-checks its
    /// user at the provider.
    pub fn session_settings(mut self, settings: SessionSettings) -> Self {
        self.sessions = settings;
        self
    }

    /// Enables single sign-on: logins through the application's identity providers, with
    /// every request to a provider sent through `config.transport`, and every SSO URL built
    /// from `config.public_url`.
    #[cfg(feature = "sso")]
    pub fn sso(mut self, config: sso::SsoConfig) -> Self {
        self.sso = Some(config);
        self
    }

    /// Bounds on the conditions of conditional grants (length, nesting, list size); longer
    /// or deeper ones are refused when a grant is made.
    pub fn condition_limits(mut self, limits: crate::policy::ConditionLimits) -> Self {
        self.condition_limits = limits;
        self
    }

    /// When repeated failures lock a source out (default: 10 within 60 s, for 300 s).
    pub fn lockout_policy(mut self, policy: LockoutPolicy) -> Self {
        self.lockout = policy;
        self
    }

    /// Adds a receiver of security events (lockouts, refresh-token reuse, a broken audit
    /// chain), e.g. a webhook.
    pub fn security_event_sink(mut self, sink: Arc<dyn SecurityEventSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// The master key that seals signing keys; access tokens (JWT) need one.
    pub fn master_key(mut self, key: MasterKey) -> Self {
        self.master_key = Some(key);
        self
    }

    /// Issuer, audience, lifetimes and leeway of access tokens.
    pub fn jwt_settings(mut self, settings: JwtSettings) -> Self {
        self.jwt = settings;
        self
    }

    /// Uses `clock` instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses `random` instead of the operating system's CSPRNG.
    pub fn random(mut self, random: Arc<dyn SecureRandom>) -> Self {
        self.random = random;
        self
    }

    /// argon2id parameters for new hashes (default: OWASP's).
    pub fn hash_params(mut self, params: HashParams) -> Self {
        self.hash_params = params;
        self
    }

    /// How long a verified key stays cached (default 60 s). Revocations and other changes
    /// drop entries at once regardless.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Most verified keys cached (default 100,000); 0 disables the cache.
    pub fn cache_capacity(mut self, capacity: u64) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Builds the service: loads and compiles the policy, loads the key ring (creating the
    /// first signing key when there is none and a master key is set) and the deny-list, and
    /// subscribes to store changes. A master key that cannot open the stored keys is an error.
    pub fn build(self) -> Result<Kms> {
        let hasher = SecretHasher::new(self.hash_params)?;
        // Unknown ids are checked against this hash so they cost the same as a wrong secret.
        let dummy_hash = hasher.hash("kms-dummy-secret-for-unknown-ids", self.random.as_ref())?;
        let cache =
            VerifiedKeyCache::new(self.cache_capacity, self.cache_ttl, self.random.as_ref())?;
        let version = stored_policy_version(self.store.as_ref())?;
        let policy = self.store.load_policy()?;
        let snapshot = PermissionSnapshot::compile(Arc::new(policy), 1).at_store_version(version);
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| Inner {
            store: self.store,
            clock: self.clock,
            random: self.random,
            hasher,
            dummy_hash,
            cache,
            snapshot: ArcSwap::from_pointee(snapshot),
            generation: AtomicU64::new(1),
            policy_stale: AtomicBool::new(false),
            policy_lock: Mutex::new(()),
            reload_lock: Mutex::new(()),
            hook: Arc::new(InvalidationHook(weak.clone())),
            master_key: self.master_key,
            jwt: self.jwt,
            keyring: ArcSwap::from_pointee(KeyRing::default()),
            revoked: RwLock::new(HashSet::new()),
            audit_lock: Mutex::new(()),
            counters: Counters::new(
                self.lockout,
                crate::defence::request_signing::DEFAULT_MAX_NONCES,
                crate::defence::request_signing::RequestVerifier::default().nonce_ttl(),
                self.shared_counters,
            ),
            sinks: self.sinks,
            condition_limits: self.condition_limits,
            request_verifier: crate::defence::request_signing::RequestVerifier::default(),
            sessions: self.sessions,
            #[cfg(feature = "sso")]
            sso: self.sso.map(sso::SsoState::new),
            usage: self
                .usage_counting
                .then(crate::usage::UsageCounters::default),
        });
        let hook: Arc<dyn ChangeListener> = inner.hook.clone();
        inner.store.subscribe(Arc::downgrade(&hook));
        let kms = Kms { inner };
        kms.load_keyring()?;
        kms.load_revocations()?;
        Ok(kms)
    }
}

/// The API-key and permission service. Cheap to clone; clones share everything.
///
/// Every management call takes the [`Caller`] it acts for and checks its scopes, keeps it
/// inside its own application unless it belongs to the system application, and refuses to
/// grant more than the caller holds.
#[derive(Clone)]
pub struct Kms {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kms").finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn SecureRandom>,
    hasher: SecretHasher,
    dummy_hash: String,
    cache: VerifiedKeyCache,
    snapshot: ArcSwap<PermissionSnapshot>,
    generation: AtomicU64,
    policy_stale: AtomicBool,
    policy_lock: Mutex<()>,
    /// Serialises policy reloads, so a slow reload cannot install an older snapshot over
    /// a newer one.
    reload_lock: Mutex<()>,
    hook: Arc<InvalidationHook>,
    master_key: Option<MasterKey>,
    jwt: JwtSettings,
    keyring: ArcSwap<KeyRing>,
    revoked: RwLock<HashSet<String>>,
    audit_lock: Mutex<()>,
    /// Rate limits, lockout counters and request-signing nonces.
    counters: Counters,
    sinks: Vec<Arc<dyn SecurityEventSink>>,
    condition_limits: crate::policy::ConditionLimits,
    request_verifier: crate::defence::request_signing::RequestVerifier,
    sessions: SessionSettings,
    #[cfg(feature = "sso")]
    sso: Option<sso::SsoState>,
    /// Verification counts not flushed yet; `None` when counting is off.
    usage: Option<crate::usage::UsageCounters>,
}

struct InvalidationHook(Weak<Inner>);

impl ChangeListener for InvalidationHook {
    fn on_change(&self, change: &Change) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        match change {
            Change::Token(id) => inner.cache.invalidate_token(id),
            Change::App(id) => inner.cache.invalidate_app(id),
            Change::Policy => {
                // Mark first, so a failed reload leaves the snapshot known-stale and the
                // next operation retries (failing closed while the store is down).
                inner.policy_stale.store(true, Ordering::SeqCst);
                inner.cache.invalidate_all();
                let _ = inner.reload_policy();
            }
            Change::Keys => {
                let kms = Kms { inner };
                let _ = kms.reload_keyring();
            }
            Change::Revocation(id) => {
                if let Ok(mut set) = inner.revoked.write() {
                    set.insert(id.clone());
                }
            }
            Change::User(id) | Change::Idp(id) | Change::Session(id) => {
                inner.cache.invalidate_token(id);
            }
        }
    }
}

/// The store's policy version (0 before any permission or role change).
fn stored_policy_version(store: &dyn Store) -> Result<u64> {
    match store.get_meta(crate::store::POLICY_VERSION_KEY)? {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| {
            Error::internal(format!("the stored policy version {v:?} is not a number"))
        }),
    }
}

impl Inner {
    /// Whether another writer changed the permissions or roles since the current snapshot
    /// was loaded.
    pub(crate) fn policy_changed_in_store(&self) -> Result<bool> {
        Ok(stored_policy_version(self.store.as_ref())? != self.snapshot.load().store_version())
    }

    /// Reloads the policy only when the stored one differs from the compiled one, so an
    /// unchanged policy keeps its generation (and every cached key stays valid).
    fn reload_policy_if_changed(&self) -> Result<()> {
        let stored = self.store.load_policy()?;
        if **self.snapshot.load().policy() != stored {
            self.cache.invalidate_all();
            self.reload_policy()?;
        }
        Ok(())
    }

    fn reload_policy(&self) -> Result<()> {
        // One reload at a time: each reads the store after the previous one stored its
        // snapshot, so snapshots only move forward (a verification that saw the policy
        // stale and a listener reloading after a commit may both reload at once).
        let _one_at_a_time = self
            .reload_lock
            .lock()
            .map_err(|_| Error::internal("the policy reload lock is poisoned"))?;
        // The version first: a policy read after it is at least that new, so a change
        // validated against it can only be refused as stale, never applied over a newer one.
        let version = stored_policy_version(self.store.as_ref())?;
        let policy = self.store.load_policy()?;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.snapshot.store(Arc::new(
            PermissionSnapshot::compile(Arc::new(policy), generation).at_store_version(version),
        ));
        self.policy_stale.store(false, Ordering::SeqCst);
        Ok(())
    }
}

impl Kms {
    /// Starts building a service over `store`, with the system clock, the OS CSPRNG,
    /// OWASP argon2id parameters and a 60-second verified-key cache.
    pub fn builder(store: Arc<dyn Store>) -> KmsBuilder {
        KmsBuilder {
            store,
            clock: Arc::new(SystemClock),
            random: Arc::new(OsRandom),
            hash_params: HashParams::default(),
            cache_ttl: DEFAULT_CACHE_TTL,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            master_key: None,
            jwt: JwtSettings::default(),
            lockout: LockoutPolicy::default(),
            sinks: Vec::new(),
            shared_counters: None,
            condition_limits: crate::policy::ConditionLimits::default(),
            sessions: SessionSettings::default(),
            #[cfg(feature = "sso")]
            sso: None,
            usage_counting: true,
        }
    }

    /// The current compiled permission snapshot.
    pub(crate) fn snapshot(&self) -> Result<Arc<PermissionSnapshot>> {
        if self.inner.policy_stale.load(Ordering::SeqCst) {
            self.inner.reload_policy()?;
        }
        Ok(self.inner.snapshot.load_full())
    }

    /// Verified-key cache statistics.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// Where rate limits, lockout counters and nonces are counted now, without asking the
    /// shared counters (see [`KmsBuilder::shared_counters`]).
    pub fn counter_status(&self) -> CounterStatus {
        self.inner.counters.status()
    }

    /// Asks the shared counters whether they answer, opening or closing the breaker at
    /// once by the answer, and reports where counting happens. Blocks (it talks to them).
    pub fn probe_counters(&self) -> CounterStatus {
        self.inner.counters.probe()
    }

    /// Checks that the store can serve requests.
    pub fn ping(&self) -> Result<()> {
        Ok(self.inner.store.ping()?)
    }

    /// Whether [`initialize`](Self::initialize) has run on this store.
    pub fn is_initialized(&self) -> Result<bool> {
        Ok(self.inner.store.get_meta(INITIALIZED_KEY)?.is_some())
    }

    /// Initialises an empty store in one transaction: the system application, the default
    /// permission hierarchy, and a root token holding `admin`, whose plaintext is returned
    /// this once. On an initialised store it fails with `Conflict` and changes nothing.
    pub fn initialize(&self) -> Result<CreatedToken> {
        let now = self.inner.clock.now();
        if self.is_initialized()? {
            return Err(Error::Conflict(
                "the database is already initialised; the root token was shown when it was created"
                    .into(),
            ));
        }
        let app = Application {
            id: SYSTEM_APP_ID.to_owned(),
            name: "system".to_owned(),
            token_prefix: TokenPrefix::default_prefix(),
            status: AppStatus::Active,
            created_at: now,
            usage_price: None,
            security: crate::application::AppSecurity::default(),
        };
        let existing = self.inner.store.load_policy()?;
        let mut batch = vec![
            Mutation::CreateMeta {
                key: INITIALIZED_KEY.to_owned(),
                value: now.to_rfc3339(),
            },
            Mutation::CreateMeta {
                key: "default_permissions_v2".to_owned(),
                value: now.to_rfc3339(),
            },
            Mutation::InsertApp(app.clone()),
        ];
        batch.extend(
            default_permissions()
                .into_iter()
                .filter(|p| !existing.permissions.contains_key(&p.scope))
                .map(Mutation::InsertPermission),
        );
        let admin = Scope::parse(ADMIN)?;
        let spec = api_keys::TokenSpec {
            name: "root".to_owned(),
            scopes: vec![admin],
            roles: Vec::new(),
            grants: Vec::new(),
            expires_at: None,
            metadata: serde_json::Map::new(),
            limits: TokenLimits::default(),
            rotated_from: None,
        };
        let (record, plaintext) = self.new_token_record(&app, &spec)?;
        batch.push(Mutation::InsertToken(record.clone()));
        let audit = audit_log::Audit::success("system.init", record.id.clone()).app(SYSTEM_APP_ID);
        self.commit(None, audit, batch).map_err(|e| match e {
            Error::Conflict(_) => Error::Conflict("the database is already initialised".into()),
            other => other,
        })?;
        Ok(CreatedToken {
            token: plaintext,
            info: TokenInfo::from_record(&record, now),
        })
    }

    /// Adds the default permissions a newer release introduced (`user.*`, `idp.*`,
    /// `session.*`) to a database initialised before them, audited once; those already
    /// there, or deleted on purpose before, are left alone. Returns the scopes added.
    pub fn add_new_default_permissions(&self) -> Result<Vec<Scope>> {
        const ADDED_LATER: [&str; 6] = [
            "user.read",
            "user.write",
            "idp.read",
            "idp.write",
            "session.read",
            "session.revoke",
        ];
        if !self.is_initialized()? {
            return Ok(Vec::new());
        }
        let marker = "default_permissions_v2";
        if self.inner.store.get_meta(marker)?.is_some() {
            return Ok(Vec::new());
        }
        let existing = self.inner.store.load_policy()?;
        let missing: Vec<_> = default_permissions()
            .into_iter()
            .filter(|p| ADDED_LATER.contains(&p.scope.as_str()))
            .filter(|p| !existing.permissions.contains_key(&p.scope))
            .collect();
        let added: Vec<Scope> = missing.iter().map(|p| p.scope.clone()).collect();
        let mut batch = vec![Mutation::CreateMeta {
            key: marker.to_owned(),
            value: self.inner.clock.now().to_rfc3339(),
        }];
        batch.extend(missing.into_iter().map(Mutation::InsertPermission));
        let audit = audit_log::Audit::success("system.upgrade", "permissions")
            .app(SYSTEM_APP_ID)
            .actor("system")
            .details(serde_json::json!({ "added": added }));
        match self.commit(None, audit, batch) {
            Ok(()) => Ok(added),
            // Another node upgraded the database at the same moment.
            Err(Error::Conflict(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Tells every security-event sink.
    pub(crate) fn emit(&self, event: &SecurityEvent) {
        for sink in &self.inner.sinks {
            sink.on_security_event(event);
        }
    }

    /// A caller with every permission in the system application, for operators working on a
    /// local database (the command-line tool) and for in-process administration.
    pub fn operator(&self) -> Caller {
        Caller::operator()
    }
}
