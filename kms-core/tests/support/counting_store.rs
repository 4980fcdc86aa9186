//! A store that records which methods were called, and can run a hook after each call,
//! delegating to a memory store. Shared by the tests that watch the facade's store traffic
//! or force an interleaving at a store call.

#![allow(dead_code, reason = "each test binary uses part of it")]
#![allow(clippy::unwrap_used, reason = "test support")]

use std::sync::{Arc, Mutex, Weak};

use kms_core::store::{
    AppStore, AuditStore, ChangeListener, GrantStore, IdentityStore, IdpRecord, KeyStore,
    LoginAttempt, Mutation, PolicyStore, PrivacyStore, SessionRecord, Store, TokenStore,
    UseOutcome, UserRecord,
};
use kms_core::store::{
    AuditQuery, Policy, RefreshRecord, Revocation, SigningKeyRecord, StoreError, TokenRecord,
};
use kms_core::{Application, AuditEvent, RoleName, Scope};
use kms_store::MemoryStore;

/// Runs after a store method returns (before its result reaches the caller), with the
/// method's name.
pub(crate) type Hook = Arc<dyn Fn(&'static str) + Send + Sync>;

/// A store that records which methods were called, delegating to a memory store.
pub(crate) struct CountingStore {
    pub(crate) inner: MemoryStore,
    pub(crate) calls: Mutex<Vec<&'static str>>,
    pub(crate) hook: Mutex<Option<Hook>>,
}

impl CountingStore {
    /// A counting store over an empty memory store.
    pub(crate) fn new() -> CountingStore {
        CountingStore {
            inner: MemoryStore::new(),
            calls: Mutex::new(Vec::new()),
            hook: Mutex::new(None),
        }
    }

    /// Runs `hook` after every later call (replacing any earlier hook).
    pub(crate) fn set_hook(&self, hook: Option<Hook>) {
        *self.hook.lock().unwrap() = hook;
    }

    fn note(&self, method: &'static str) {
        self.calls.lock().unwrap().push(method);
        let hook = self.hook.lock().unwrap().clone();
        if let Some(h) = hook {
            h(method);
        }
    }

    /// The calls since the last `take`.
    pub(crate) fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl AppStore for CountingStore {
    fn get_app(&self, id: &str) -> Result<Option<Application>, StoreError> {
        let result = self.inner.get_app(id);
        self.note("get_app");
        result
    }
    fn list_apps(&self, after: Option<&str>, limit: usize) -> Result<Vec<Application>, StoreError> {
        let result = self.inner.list_apps(after, limit);
        self.note("list_apps");
        result
    }
}

impl TokenStore for CountingStore {
    fn get_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let result = self.inner.get_token(id);
        self.note("get_token");
        result
    }
    fn list_tokens(
        &self,
        app_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let result = self.inner.list_tokens(app_id, after, limit);
        self.note("list_tokens");
        result
    }
    fn scope_is_granted(&self, scope: &Scope) -> Result<bool, StoreError> {
        let result = self.inner.scope_is_granted(scope);
        self.note("scope_is_granted");
        result
    }
    fn role_is_granted(&self, role: &RoleName) -> Result<bool, StoreError> {
        let result = self.inner.role_is_granted(role);
        self.note("role_is_granted");
        result
    }
    fn expired_tokens(
        &self,
        before: kms_core::Timestamp,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let result = self.inner.expired_tokens(before, limit);
        self.note("expired_tokens");
        result
    }
    fn consume_use(&self, id: &str) -> Result<UseOutcome, StoreError> {
        let result = self.inner.consume_use(id);
        self.note("consume_use");
        result
    }
}

impl PolicyStore for CountingStore {
    fn load_policy(&self) -> Result<Policy, StoreError> {
        let result = self.inner.load_policy();
        self.note("load_policy");
        result
    }
}

impl KeyStore for CountingStore {
    fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let result = self.inner.list_signing_keys();
        self.note("list_signing_keys");
        result
    }
}

impl GrantStore for CountingStore {
    fn get_refresh_token(&self, id: &str) -> Result<Option<RefreshRecord>, StoreError> {
        let result = self.inner.get_refresh_token(id);
        self.note("get_refresh_token");
        result
    }
    fn list_revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        let result = self.inner.list_revocations();
        self.note("list_revocations");
        result
    }
}

impl AuditStore for CountingStore {
    fn last_audit_event(&self) -> Result<Option<AuditEvent>, StoreError> {
        let result = self.inner.last_audit_event();
        self.note("last_audit_event");
        result
    }
    fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let result = self.inner.list_audit(query);
        self.note("list_audit");
        result
    }
    fn audit_after(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let result = self.inner.audit_after(after_seq, limit);
        self.note("audit_after");
        result
    }
}

impl CountingStore {
    /// Runs `call` on the memory store and records `name`.
    fn counted<T>(&self, name: &'static str, call: impl FnOnce(&MemoryStore) -> T) -> T {
        let result = call(&self.inner);
        self.note(name);
        result
    }
}

impl IdentityStore for CountingStore {
    fn get_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        self.counted("get_user", |s| s.get_user(id))
    }
    fn list_users(
        &self,
        app_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<UserRecord>, StoreError> {
        self.counted("list_users", |s| s.list_users(app_id, after, limit))
    }
    fn user_by_identity(
        &self,
        idp_id: &str,
        subject: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        self.counted("user_by_identity", |s| s.user_by_identity(idp_id, subject))
    }
    fn role_is_held_by_users(&self, role: &RoleName) -> Result<bool, StoreError> {
        self.counted("role_is_held_by_users", |s| s.role_is_held_by_users(role))
    }
    fn get_idp(&self, id: &str) -> Result<Option<IdpRecord>, StoreError> {
        self.counted("get_idp", |s| s.get_idp(id))
    }
    fn idp_by_slug(&self, slug: &str) -> Result<Option<IdpRecord>, StoreError> {
        self.counted("idp_by_slug", |s| s.idp_by_slug(slug))
    }
    fn list_idps(&self, app_id: Option<&str>) -> Result<Vec<IdpRecord>, StoreError> {
        self.counted("list_idps", |s| s.list_idps(app_id))
    }
    fn get_login_attempt(&self, id: &str) -> Result<Option<LoginAttempt>, StoreError> {
        self.counted("get_login_attempt", |s| s.get_login_attempt(id))
    }
    fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.counted("get_session", |s| s.get_session(id))
    }
    fn list_sessions(
        &self,
        user_id: &str,
        now: kms_core::Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.counted("list_sessions", |s| s.list_sessions(user_id, now))
    }
    fn sealed_identity_records(
        &self,
    ) -> Result<kms_core::store::SealedIdentityRecords, StoreError> {
        self.counted("sealed_identity_records", |s| s.sealed_identity_records())
    }
}

impl kms_core::store::UsageStore for CountingStore {
    fn add_usage(
        &self,
        counts: &[kms_core::store::UsageCount],
        touches: &[kms_core::store::TokenTouch],
    ) -> Result<(), StoreError> {
        self.counted("add_usage", |s| s.add_usage(counts, touches))
    }

    fn usage(
        &self,
        subject: kms_core::store::UsageSubject<'_>,
        from: kms_core::Timestamp,
        to: kms_core::Timestamp,
    ) -> Result<Vec<kms_core::store::UsageRow>, StoreError> {
        self.counted("usage", |s| s.usage(subject, from, to))
    }

    fn usage_buckets_before(&self, before: kms_core::Timestamp) -> Result<u64, StoreError> {
        self.counted("usage_buckets_before", |s| s.usage_buckets_before(before))
    }
}

impl PrivacyStore for CountingStore {
    fn get_person_key(
        &self,
        subject: &str,
    ) -> Result<Option<kms_core::store::PersonKeyRecord>, StoreError> {
        self.counted("get_person_key", |s| s.get_person_key(subject))
    }
    fn list_person_keys(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<kms_core::store::PersonKeyRecord>, StoreError> {
        self.counted("list_person_keys", |s| s.list_person_keys(after, limit))
    }
    fn audit_concerning(
        &self,
        ids: &[String],
        before_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.counted("audit_concerning", |s| {
            s.audit_concerning(ids, before_seq, limit)
        })
    }
    fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.counted("user_sessions", |s| s.user_sessions(user_id))
    }
    fn ended_sessions(
        &self,
        ended_before: kms_core::Timestamp,
        used_before: kms_core::Timestamp,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.counted("ended_sessions", |s| {
            s.ended_sessions(ended_before, used_before, limit)
        })
    }
}

impl kms_core::store::CapacityStore for CountingStore {
    fn capacity(
        &self,
        since: kms_core::Timestamp,
    ) -> Result<kms_core::store::Capacity, StoreError> {
        self.counted("capacity", |s| {
            kms_core::store::CapacityStore::capacity(s, since)
        })
    }
}

impl Store for CountingStore {
    fn apply(&self, batch: &[Mutation]) -> Result<(), StoreError> {
        let result = self.inner.apply(batch);
        self.note("apply");
        result
    }
    fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let result = self.inner.get_meta(key);
        self.note("get_meta");
        result
    }
    fn subscribe(&self, listener: Weak<dyn ChangeListener>) {
        self.inner.subscribe(listener)
    }
    fn ping(&self) -> Result<(), StoreError> {
        let result = self.inner.ping();
        self.note("ping");
        result
    }
}
