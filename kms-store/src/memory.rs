//! [`MemoryStore`]: everything in process memory, for tests and ephemeral use.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use kms_core::store::{
    AppStore, AuditStore, ChangeListener, GrantStore, IdentityStore, KeyStore, Mutation,
    PolicyStore, SealedIdentityRecords, Store, TokenStore, TokenTouch, UsageCount, UsageRow,
    UsageStore, UsageSubject, UseOutcome,
};
use kms_core::store::{
    AuditQuery, IdpRecord, LoginAttempt, Policy, RefreshRecord, RefreshStatus, Revocation,
    SessionRecord, SessionSelector, SigningKeyRecord, StoreError, TokenRecord, UserRecord,
};
use kms_core::{Application, AuditEvent, Permission, Role, RoleName, Scope, Timestamp};

use crate::listeners::Listeners;
use kms_core::store::{apply_batch, Transaction};

/// A store that keeps everything in memory and loses it on drop.
///
/// It behaves exactly like [`SqliteStore`](crate::SqliteStore): the same conflicts, the
/// same all-or-nothing batches, the same ordering; one conformance suite runs against both.
///
/// ```
/// use kms_core::store::TokenStore;
/// let store = kms_store::MemoryStore::new();
/// assert!(store.get_token("tok_missing")?.is_none());
/// # Ok::<(), kms_core::store::StoreError>(())
/// ```
#[derive(Default)]
pub struct MemoryStore {
    state: RwLock<State>,
    listeners: Listeners,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.read();
        f.debug_struct("MemoryStore")
            .field("apps", &state.apps.len())
            .field("tokens", &state.tokens.len())
            .field("users", &state.users.len())
            .field("sessions", &state.sessions.len())
            .field("audit_events", &state.audit.len())
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    // No operation panics while holding the lock, so a poisoned lock still guards
    // consistent data.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The data, with the indexes the queries need. Every write goes through `put_*` and
/// `remove_*`, which keep the indexes in step.
#[derive(Default)]
struct State {
    meta: BTreeMap<String, String>,
    apps: BTreeMap<String, Application>,
    /// Application name → id.
    app_names: BTreeMap<String, String>,
    permissions: BTreeMap<Scope, Permission>,
    roles: BTreeMap<RoleName, Role>,
    tokens: BTreeMap<String, TokenRecord>,
    /// (application id, token id) for every token.
    tokens_by_app: BTreeSet<(String, String)>,
    /// Scope → ids of the tokens granted it directly.
    scope_grants: BTreeMap<Scope, BTreeSet<String>>,
    /// Role → ids of the tokens granted it.
    role_grants: BTreeMap<RoleName, BTreeSet<String>>,
    /// Kid → (insertion position, key): keys created in the same second list in the
    /// order they were added.
    signing_keys: BTreeMap<String, (u64, SigningKeyRecord)>,
    next_key_position: u64,
    refresh_tokens: BTreeMap<String, RefreshRecord>,
    revocations: BTreeMap<String, Revocation>,
    audit: BTreeMap<u64, AuditEvent>,
    /// Users, their identities sorted and each once.
    users: BTreeMap<String, UserRecord>,
    /// (application id, user id) for every user.
    users_by_app: BTreeSet<(String, String)>,
    /// (provider id, subject) → id of the user it is linked to.
    identities: BTreeMap<(String, String), String>,
    idps: BTreeMap<String, IdpRecord>,
    /// Slug → provider id.
    idp_slugs: BTreeMap<String, String>,
    login_attempts: BTreeMap<String, LoginAttempt>,
    sessions: BTreeMap<String, SessionRecord>,
    /// Subject → person key.
    person_keys: BTreeMap<String, kms_core::store::PersonKeyRecord>,
    /// Replay-cache id → when it may be forgotten.
    replay: BTreeMap<String, Timestamp>,
    /// Usage buckets: (application, bucket start, token, code) → count.
    usage: BTreeMap<UsageKey, u64>,
}

/// (application id, bucket start in unix seconds, token id, outcome code).
type UsageKey = (String, i64, String, String);

impl State {
    fn put_app(&mut self, app: Application) -> Option<Application> {
        let old = self.remove_app_row(&app.id);
        self.app_names.insert(app.name.clone(), app.id.clone());
        self.apps.insert(app.id.clone(), app);
        old
    }

    /// Removes the application row only; tokens are the caller's business.
    fn remove_app_row(&mut self, id: &str) -> Option<Application> {
        let old = self.apps.remove(id)?;
        self.app_names.remove(&old.name);
        Some(old)
    }

    fn put_token(&mut self, token: TokenRecord) -> Option<TokenRecord> {
        let old = self.remove_token(&token.id);
        self.tokens_by_app
            .insert((token.app_id.clone(), token.id.clone()));
        for scope in &token.scopes {
            let holders = self.scope_grants.entry(scope.clone()).or_default();
            holders.insert(token.id.clone());
        }
        for role in &token.roles {
            let holders = self.role_grants.entry(role.clone()).or_default();
            holders.insert(token.id.clone());
        }
        for grant in &token.grants {
            match &grant.target {
                kms_core::GrantTarget::Scope(s) => {
                    self.scope_grants
                        .entry(s.clone())
                        .or_default()
                        .insert(token.id.clone());
                }
                kms_core::GrantTarget::Role(r) => {
                    self.role_grants
                        .entry(r.clone())
                        .or_default()
                        .insert(token.id.clone());
                }
            }
        }
        self.tokens.insert(token.id.clone(), token);
        old
    }

    fn remove_token(&mut self, id: &str) -> Option<TokenRecord> {
        let old = self.tokens.remove(id)?;
        self.tokens_by_app
            .remove(&(old.app_id.clone(), old.id.clone()));
        for scope in &old.scopes {
            forget_holder(&mut self.scope_grants, scope, id);
        }
        for role in &old.roles {
            forget_holder(&mut self.role_grants, role, id);
        }
        for grant in &old.grants {
            match &grant.target {
                kms_core::GrantTarget::Scope(s) => forget_holder(&mut self.scope_grants, s, id),
                kms_core::GrantTarget::Role(r) => forget_holder(&mut self.role_grants, r, id),
            }
        }
        Some(old)
    }

    /// Stores `user` (its identities sorted, each once) and indexes it, replacing any
    /// user with its id.
    fn put_user(&mut self, mut user: UserRecord) -> Option<UserRecord> {
        let old = self.remove_user_row(&user.id);
        user.identities.sort();
        user.identities.dedup();
        self.users_by_app
            .insert((user.app_id.clone(), user.id.clone()));
        for identity in &user.identities {
            let key = (identity.idp_id.clone(), identity.subject.clone());
            self.identities.insert(key, user.id.clone());
        }
        self.users.insert(user.id.clone(), user);
        old
    }

    /// Removes the user with their identities; sessions are the caller's business.
    fn remove_user_row(&mut self, id: &str) -> Option<UserRecord> {
        let old = self.users.remove(id)?;
        self.users_by_app
            .remove(&(old.app_id.clone(), old.id.clone()));
        for identity in &old.identities {
            let key = (identity.idp_id.clone(), identity.subject.clone());
            if self.identities.get(&key).is_some_and(|owner| owner == id) {
                self.identities.remove(&key);
            }
        }
        Some(old)
    }

    fn put_idp(&mut self, idp: IdpRecord) -> Option<IdpRecord> {
        let old = self.remove_idp_row(&idp.id);
        self.idp_slugs.insert(idp.slug.clone(), idp.id.clone());
        self.idps.insert(idp.id.clone(), idp);
        old
    }

    /// Removes the provider row only; identities and attempts are the caller's business.
    fn remove_idp_row(&mut self, id: &str) -> Option<IdpRecord> {
        let old = self.idps.remove(id)?;
        self.idp_slugs.remove(&old.slug);
        Some(old)
    }

    fn user_ids_of_app(&self, app_id: &str) -> Vec<String> {
        self.users_by_app
            .range((app_id.to_owned(), String::new())..)
            .take_while(|(app, _)| app == app_id)
            .map(|(_, user)| user.clone())
            .collect()
    }

    fn token_ids_of_app(&self, app_id: &str) -> Vec<String> {
        self.tokens_by_app
            .range((app_id.to_owned(), String::new())..)
            .take_while(|(app, _)| app == app_id)
            .map(|(_, token)| token.clone())
            .collect()
    }
}

fn forget_holder<K: Ord>(grants: &mut BTreeMap<K, BTreeSet<String>>, key: &K, token_id: &str) {
    if let Some(holders) = grants.get_mut(key) {
        holders.remove(token_id);
        if holders.is_empty() {
            grants.remove(key);
        }
    }
}

/// What a write replaced, so a failed batch can be undone.
enum Undo {
    Meta(String, Option<String>),
    App(String, Option<Application>),
    Token(String, Option<Box<TokenRecord>>),
    Permission(Scope, Option<Permission>),
    Role(RoleName, Option<Role>),
    SigningKey(String, Option<Box<(u64, SigningKeyRecord)>>),
    Refresh(String, Option<Box<RefreshRecord>>),
    Revocation(String, Option<Revocation>),
    /// An appended audit event, removed on rollback.
    Audit(u64),
    /// A person key written or deleted, restored on rollback.
    PersonKey(String, Option<Box<kms_core::store::PersonKeyRecord>>),
    /// A pruned audit event, restored on rollback.
    AuditPruned(Box<AuditEvent>),
    User(String, Option<Box<UserRecord>>),
    Idp(String, Option<Box<IdpRecord>>),
    LoginAttempt(String, Option<Box<LoginAttempt>>),
    Session(String, Option<Box<SessionRecord>>),
    Replay(String, Option<Timestamp>),
    /// Purged usage buckets, restored on rollback.
    UsagePurged(Vec<(UsageKey, u64)>),
}

/// A transaction over [`State`]: writes apply at once and are logged, and
/// [`MemoryTx::rollback`] replays the log backwards.
struct MemoryTx<'a> {
    state: &'a mut State,
    undo: Vec<Undo>,
}

impl MemoryTx<'_> {
    fn rollback(mut self) {
        while let Some(step) = self.undo.pop() {
            let s = &mut *self.state;
            match step {
                Undo::Meta(k, Some(v)) => drop(s.meta.insert(k, v)),
                Undo::Meta(k, None) => drop(s.meta.remove(&k)),
                Undo::App(_, Some(app)) => drop(s.put_app(app)),
                Undo::App(id, None) => drop(s.remove_app_row(&id)),
                Undo::Token(_, Some(token)) => drop(s.put_token(*token)),
                Undo::Token(id, None) => drop(s.remove_token(&id)),
                Undo::Permission(k, Some(p)) => drop(s.permissions.insert(k, p)),
                Undo::Permission(k, None) => drop(s.permissions.remove(&k)),
                Undo::Role(k, Some(r)) => drop(s.roles.insert(k, r)),
                Undo::Role(k, None) => drop(s.roles.remove(&k)),
                Undo::SigningKey(k, Some(key)) => drop(s.signing_keys.insert(k, *key)),
                Undo::SigningKey(k, None) => drop(s.signing_keys.remove(&k)),
                Undo::Refresh(k, Some(r)) => drop(s.refresh_tokens.insert(k, *r)),
                Undo::Refresh(k, None) => drop(s.refresh_tokens.remove(&k)),
                Undo::Revocation(k, Some(r)) => drop(s.revocations.insert(k, r)),
                Undo::Revocation(k, None) => drop(s.revocations.remove(&k)),
                Undo::Audit(seq) => drop(s.audit.remove(&seq)),
                Undo::AuditPruned(e) => drop(s.audit.insert(e.seq, *e)),
                Undo::User(_, Some(user)) => drop(s.put_user(*user)),
                Undo::User(id, None) => drop(s.remove_user_row(&id)),
                Undo::PersonKey(k, Some(r)) => drop(s.person_keys.insert(k, *r)),
                Undo::PersonKey(k, None) => drop(s.person_keys.remove(&k)),
                Undo::Idp(_, Some(idp)) => drop(s.put_idp(*idp)),
                Undo::Idp(id, None) => drop(s.remove_idp_row(&id)),
                Undo::LoginAttempt(k, Some(a)) => drop(s.login_attempts.insert(k, *a)),
                Undo::LoginAttempt(k, None) => drop(s.login_attempts.remove(&k)),
                Undo::Session(k, Some(r)) => drop(s.sessions.insert(k, *r)),
                Undo::Session(k, None) => drop(s.sessions.remove(&k)),
                Undo::Replay(k, Some(t)) => drop(s.replay.insert(k, t)),
                Undo::Replay(k, None) => drop(s.replay.remove(&k)),
                Undo::UsagePurged(rows) => s.usage.extend(rows),
            }
        }
    }

    fn remove_token(&mut self, id: &str) {
        if let Some(old) = self.state.remove_token(id) {
            self.undo
                .push(Undo::Token(id.to_owned(), Some(Box::new(old))));
        }
    }

    /// Replaces (or with `None` removes) the user with `id`, logging the old one.
    fn set_user(&mut self, id: &str, user: Option<UserRecord>) {
        let old = match user {
            Some(u) => self.state.put_user(u),
            None => self.state.remove_user_row(id),
        };
        self.undo.push(Undo::User(id.to_owned(), old.map(Box::new)));
    }

    /// Replaces (or with `None` removes) the session with `id`, logging the old one.
    fn set_session(&mut self, id: &str, session: Option<SessionRecord>) {
        let old = match session {
            Some(s) => self.state.sessions.insert(id.to_owned(), s),
            None => self.state.sessions.remove(id),
        };
        self.undo
            .push(Undo::Session(id.to_owned(), old.map(Box::new)));
    }

    /// Removes the login attempt with `id`, logging it.
    fn remove_login_attempt(&mut self, id: &str) {
        if let Some(old) = self.state.login_attempts.remove(id) {
            self.undo
                .push(Undo::LoginAttempt(id.to_owned(), Some(Box::new(old))));
        }
    }

    /// The ids of the sessions that `matches`.
    fn session_ids_where(&self, matches: impl Fn(&SessionRecord) -> bool) -> Vec<String> {
        let sessions = self.state.sessions.values();
        sessions
            .filter(|s| matches(s))
            .map(|s| s.id.clone())
            .collect()
    }

    /// Applies `change` to every session that `matches`.
    fn update_sessions_where(
        &mut self,
        matches: impl Fn(&SessionRecord) -> bool,
        change: impl Fn(&mut SessionRecord),
    ) {
        for id in self.session_ids_where(matches) {
            if let Some(mut session) = self.state.sessions.get(&id).cloned() {
                change(&mut session);
                self.set_session(&id, Some(session));
            }
        }
    }

    /// Replaces (or with `None` removes) the refresh token with `id`, logging the old one.
    fn put_refresh(&mut self, id: &str, record: Option<RefreshRecord>) {
        let old = match record {
            Some(r) => self.state.refresh_tokens.insert(id.to_owned(), r),
            None => self.state.refresh_tokens.remove(id),
        };
        self.undo
            .push(Undo::Refresh(id.to_owned(), old.map(Box::new)));
    }

    /// The ids of the refresh tokens that `matches`.
    fn refresh_ids_where(&self, matches: impl Fn(&RefreshRecord) -> bool) -> Vec<String> {
        let tokens = self.state.refresh_tokens.values();
        tokens
            .filter(|r| matches(r))
            .map(|r| r.id.clone())
            .collect()
    }

    /// Applies `change` to every refresh token that `matches`.
    fn update_refresh_where(
        &mut self,
        matches: impl Fn(&RefreshRecord) -> bool,
        change: impl Fn(&mut RefreshRecord),
    ) {
        for id in self.refresh_ids_where(matches) {
            if let Some(mut record) = self.state.refresh_tokens.get(&id).cloned() {
                change(&mut record);
                self.put_refresh(&id, Some(record));
            }
        }
    }
}

impl Transaction for MemoryTx<'_> {
    fn meta_exists(&mut self, key: &str) -> Result<bool, StoreError> {
        Ok(self.state.meta.contains_key(key))
    }

    fn meta(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.state.meta.get(key).cloned())
    }

    fn insert_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        let old = self.state.meta.insert(key.to_owned(), value.to_owned());
        self.undo.push(Undo::Meta(key.to_owned(), old));
        Ok(())
    }

    fn app_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        Ok(self.state.apps.contains_key(id))
    }

    fn app_named(&mut self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.state.app_names.get(name).cloned())
    }

    fn put_app(&mut self, app: &Application) -> Result<(), StoreError> {
        let old = self.state.put_app(app.clone());
        self.undo.push(Undo::App(app.id.clone(), old));
        Ok(())
    }

    fn delete_app(&mut self, id: &str) -> Result<(), StoreError> {
        let idps: Vec<String> = self
            .state
            .idps
            .values()
            .filter(|idp| idp.app_id == id)
            .map(|idp| idp.id.clone())
            .collect();
        for idp in idps {
            self.delete_idp(&idp)?;
        }
        for user in self.state.user_ids_of_app(id) {
            self.delete_user(&user)?;
        }
        for session in self.session_ids_where(|s| s.app_id == id) {
            self.set_session(&session, None);
        }
        for token in self.state.token_ids_of_app(id) {
            self.remove_token(&token);
        }
        if let Some(old) = self.state.remove_app_row(id) {
            self.undo.push(Undo::App(id.to_owned(), Some(old)));
        }
        Ok(())
    }

    fn permission_exists(&mut self, scope: &Scope) -> Result<bool, StoreError> {
        Ok(self.state.permissions.contains_key(scope))
    }

    fn put_permission(&mut self, permission: &Permission) -> Result<(), StoreError> {
        let scope = permission.scope.clone();
        let old = self
            .state
            .permissions
            .insert(scope.clone(), permission.clone());
        self.undo.push(Undo::Permission(scope, old));
        Ok(())
    }

    fn delete_permission(&mut self, scope: &Scope) -> Result<(), StoreError> {
        if let Some(old) = self.state.permissions.remove(scope) {
            self.undo.push(Undo::Permission(scope.clone(), Some(old)));
        }
        Ok(())
    }

    fn put_role(&mut self, role: &Role) -> Result<(), StoreError> {
        let old = self.state.roles.insert(role.name.clone(), role.clone());
        self.undo.push(Undo::Role(role.name.clone(), old));
        Ok(())
    }

    fn delete_role(&mut self, name: &RoleName) -> Result<(), StoreError> {
        if let Some(old) = self.state.roles.remove(name) {
            self.undo.push(Undo::Role(name.clone(), Some(old)));
        }
        Ok(())
    }

    fn token_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        Ok(self.state.tokens.contains_key(id))
    }

    fn put_token(&mut self, token: &TokenRecord) -> Result<(), StoreError> {
        let mut token = token.clone();
        // Like the SQL stores: a write never moves the last use backwards.
        if let Some(old) = self.state.tokens.get(&token.id) {
            token.last_used_at = token.last_used_at.max(old.last_used_at);
        }
        let old = self.state.put_token(token.clone());
        self.undo
            .push(Undo::Token(token.id.clone(), old.map(Box::new)));
        Ok(())
    }

    fn delete_token(&mut self, id: &str) -> Result<(), StoreError> {
        self.remove_token(id);
        Ok(())
    }

    fn put_signing_key(&mut self, key: &SigningKeyRecord) -> Result<(), StoreError> {
        let position = match self.state.signing_keys.get(&key.kid) {
            Some((position, _)) => *position,
            None => {
                self.state.next_key_position += 1;
                self.state.next_key_position
            }
        };
        let old = self
            .state
            .signing_keys
            .insert(key.kid.clone(), (position, key.clone()));
        self.undo
            .push(Undo::SigningKey(key.kid.clone(), old.map(Box::new)));
        Ok(())
    }

    fn refresh_status(&mut self, id: &str) -> Result<Option<RefreshStatus>, StoreError> {
        Ok(self.state.refresh_tokens.get(id).map(|r| r.status))
    }

    fn insert_refresh_token(&mut self, record: &RefreshRecord) -> Result<(), StoreError> {
        self.put_refresh(&record.id, Some(record.clone()));
        Ok(())
    }

    fn spend_refresh_token(&mut self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        self.update_refresh_where(
            |r| r.id == id,
            |r| {
                r.status = RefreshStatus::Spent;
                r.spent_at = Some(at);
            },
        );
        Ok(())
    }

    fn revoke_refresh_family(&mut self, family_id: &str) -> Result<(), StoreError> {
        self.update_refresh_where(
            |r| r.family_id == family_id,
            |r| r.status = RefreshStatus::Revoked,
        );
        Ok(())
    }

    fn put_revocation(&mut self, revocation: &Revocation) -> Result<(), StoreError> {
        let id = revocation.id.clone();
        let old = self
            .state
            .revocations
            .insert(id.clone(), revocation.clone());
        self.undo.push(Undo::Revocation(id, old));
        Ok(())
    }

    fn purge_expired(&mut self, before: Timestamp) -> Result<(), StoreError> {
        let expired: Vec<String> = self
            .state
            .revocations
            .values()
            .filter(|r| r.expires_at < before)
            .map(|r| r.id.clone())
            .collect();
        for id in expired {
            let old = self.state.revocations.remove(&id);
            self.undo.push(Undo::Revocation(id, old));
        }
        for id in self.refresh_ids_where(|r| r.expires_at < before) {
            self.put_refresh(&id, None);
        }
        let attempts: Vec<String> = self
            .state
            .login_attempts
            .values()
            .filter(|a| a.expires_at < before)
            .map(|a| a.id.clone())
            .collect();
        for id in attempts {
            self.remove_login_attempt(&id);
        }
        let forgotten: Vec<String> = self
            .state
            .replay
            .iter()
            .filter(|(_, expires_at)| **expires_at < before)
            .map(|(id, _)| id.clone())
            .collect();
        for id in forgotten {
            let old = self.state.replay.remove(&id);
            self.undo.push(Undo::Replay(id, old));
        }
        Ok(())
    }

    fn audit_exists(&mut self, seq: u64) -> Result<bool, StoreError> {
        Ok(self.state.audit.contains_key(&seq))
    }

    fn audit_head(&mut self) -> Result<Option<(u64, String)>, StoreError> {
        Ok(self
            .state
            .audit
            .last_key_value()
            .map(|(seq, e)| (*seq, e.hash.clone())))
    }

    fn append_audit(&mut self, event: &AuditEvent) -> Result<(), StoreError> {
        self.state.audit.insert(event.seq, event.clone());
        self.undo.push(Undo::Audit(event.seq));
        Ok(())
    }

    fn prune_audit(&mut self, through_seq: u64) -> Result<(), StoreError> {
        let seqs: Vec<u64> = self
            .state
            .audit
            .range(..=through_seq)
            .map(|(s, _)| *s)
            .collect();
        for seq in seqs {
            if let Some(e) = self.state.audit.remove(&seq) {
                self.undo.push(Undo::AuditPruned(Box::new(e)));
            }
        }
        Ok(())
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        let old = self.state.meta.insert(key.to_owned(), value.to_owned());
        self.undo.push(Undo::Meta(key.to_owned(), old));
        Ok(())
    }

    fn user_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        Ok(self.state.users.contains_key(id))
    }

    fn user_with_identity(
        &mut self,
        idp_id: &str,
        subject: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = (idp_id.to_owned(), subject.to_owned());
        Ok(self.state.identities.get(&key).cloned())
    }

    fn put_user(&mut self, user: &UserRecord) -> Result<(), StoreError> {
        self.set_user(&user.id, Some(user.clone()));
        Ok(())
    }

    fn delete_user(&mut self, id: &str) -> Result<(), StoreError> {
        for session in self.session_ids_where(|s| s.user_id == id) {
            self.set_session(&session, None);
        }
        if self.state.users.contains_key(id) {
            self.set_user(id, None);
        }
        Ok(())
    }

    fn idp_with_slug(&mut self, slug: &str) -> Result<Option<String>, StoreError> {
        Ok(self.state.idp_slugs.get(slug).cloned())
    }

    fn put_idp(&mut self, idp: &IdpRecord) -> Result<(), StoreError> {
        let old = self.state.put_idp(idp.clone());
        self.undo.push(Undo::Idp(idp.id.clone(), old.map(Box::new)));
        Ok(())
    }

    fn delete_idp(&mut self, id: &str) -> Result<(), StoreError> {
        let linked: BTreeSet<String> = self
            .state
            .identities
            .iter()
            .filter(|((idp, _), _)| idp == id)
            .map(|(_, user)| user.clone())
            .collect();
        for user_id in linked {
            if let Some(mut user) = self.state.users.get(&user_id).cloned() {
                user.identities.retain(|i| i.idp_id != id);
                self.set_user(&user_id, Some(user));
            }
        }
        let attempts: Vec<String> = self
            .state
            .login_attempts
            .values()
            .filter(|a| a.idp_id == id)
            .map(|a| a.id.clone())
            .collect();
        for attempt in attempts {
            self.remove_login_attempt(&attempt);
        }
        if let Some(old) = self.state.remove_idp_row(id) {
            self.undo
                .push(Undo::Idp(id.to_owned(), Some(Box::new(old))));
        }
        Ok(())
    }

    fn login_attempt_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        Ok(self.state.login_attempts.contains_key(id))
    }

    fn insert_login_attempt(&mut self, attempt: &LoginAttempt) -> Result<(), StoreError> {
        let old = self
            .state
            .login_attempts
            .insert(attempt.id.clone(), attempt.clone());
        self.undo
            .push(Undo::LoginAttempt(attempt.id.clone(), old.map(Box::new)));
        Ok(())
    }

    fn delete_login_attempt(&mut self, id: &str) -> Result<(), StoreError> {
        self.remove_login_attempt(id);
        Ok(())
    }

    fn session_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        Ok(self.state.sessions.contains_key(id))
    }

    fn put_session(&mut self, session: &SessionRecord) -> Result<(), StoreError> {
        self.set_session(&session.id, Some(session.clone()));
        Ok(())
    }

    fn touch_session(&mut self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        self.update_sessions_where(
            |s| s.id == id && s.revoked_at.is_none() && s.last_used_at < at,
            |s| s.last_used_at = at,
        );
        Ok(())
    }

    fn revoke_sessions(
        &mut self,
        selector: &SessionSelector,
        at: Timestamp,
        reason: &str,
    ) -> Result<(), StoreError> {
        let selected = |s: &SessionRecord| match selector {
            SessionSelector::Id(id) => s.id == *id,
            SessionSelector::User(id) => s.user_id == *id,
            SessionSelector::Idp(id) => s.idp_id == *id,
        };
        self.update_sessions_where(
            |s| selected(s) && s.revoked_at.is_none(),
            |s| {
                s.revoked_at = Some(at);
                s.revoke_reason = Some(reason.to_owned());
            },
        );
        Ok(())
    }

    fn replay_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        Ok(self.state.replay.contains_key(id))
    }

    fn insert_replay(&mut self, id: &str, expires_at: Timestamp) -> Result<(), StoreError> {
        let old = self.state.replay.insert(id.to_owned(), expires_at);
        self.undo.push(Undo::Replay(id.to_owned(), old));
        Ok(())
    }

    fn purge_usage(&mut self, before: Timestamp) -> Result<(), StoreError> {
        let old: Vec<UsageKey> = self
            .state
            .usage
            .keys()
            .filter(|k| k.1 < before.unix())
            .cloned()
            .collect();
        let mut purged = Vec::with_capacity(old.len());
        for key in old {
            if let Some(count) = self.state.usage.remove(&key) {
                purged.push((key, count));
            }
        }
        self.undo.push(Undo::UsagePurged(purged));
        Ok(())
    }

    fn person_key_exists(&mut self, subject: &str) -> Result<bool, StoreError> {
        Ok(self.state.person_keys.contains_key(subject))
    }

    fn put_person_key(&mut self, key: &kms_core::store::PersonKeyRecord) -> Result<(), StoreError> {
        let old = self
            .state
            .person_keys
            .insert(key.subject.clone(), key.clone());
        self.undo
            .push(Undo::PersonKey(key.subject.clone(), old.map(Box::new)));
        Ok(())
    }

    fn delete_person_key(&mut self, subject: &str) -> Result<(), StoreError> {
        if let Some(old) = self.state.person_keys.remove(subject) {
            self.undo
                .push(Undo::PersonKey(subject.to_owned(), Some(Box::new(old))));
        }
        Ok(())
    }

    fn delete_session(&mut self, id: &str) -> Result<(), StoreError> {
        if self.state.sessions.contains_key(id) {
            self.set_session(id, None);
        }
        Ok(())
    }
}

impl UsageStore for MemoryStore {
    fn add_usage(&self, counts: &[UsageCount], touches: &[TokenTouch]) -> Result<(), StoreError> {
        let mut state = self.write();
        for c in counts {
            let key = (
                c.app_id.clone(),
                c.bucket_start.unix(),
                c.token_id.clone(),
                c.code.clone(),
            );
            let n = state.usage.entry(key).or_default();
            *n = n.saturating_add(c.count).min(kms_core::store::MAX_COUNTER);
        }
        for t in touches {
            if let Some(token) = state.tokens.get_mut(&t.token_id) {
                token.last_used_at = token.last_used_at.max(Some(t.at));
            }
        }
        Ok(())
    }

    fn usage(
        &self,
        subject: UsageSubject<'_>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let state = self.read();
        let mut sums: BTreeMap<(i64, String), u64> = BTreeMap::new();
        for ((app_id, start, token_id, code), count) in &state.usage {
            let matches = match subject {
                UsageSubject::App(id) => app_id == id,
                UsageSubject::Token(id) => token_id == id,
            };
            if matches && *start >= from.unix() && *start < to.unix() {
                let n = sums.entry((*start, code.clone())).or_default();
                *n = n.saturating_add(*count);
            }
        }
        Ok(sums
            .into_iter()
            .map(|((start, code), count)| UsageRow {
                bucket_start: Timestamp::from_unix(start),
                code,
                count,
            })
            .collect())
    }

    fn usage_buckets_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        Ok(self
            .read()
            .usage
            .keys()
            .filter(|k| k.1 < before.unix())
            .count() as u64)
    }
}

impl AppStore for MemoryStore {
    fn get_app(&self, id: &str) -> Result<Option<Application>, StoreError> {
        Ok(self.read().apps.get(id).cloned())
    }

    fn list_apps(&self, after: Option<&str>, limit: usize) -> Result<Vec<Application>, StoreError> {
        let state = self.read();
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(state
            .apps
            .range::<str, _>((lower, Bound::Unbounded))
            .take(limit)
            .map(|(_, app)| app.clone())
            .collect())
    }
}

/// Up to `limit` items of `app_id` with ids greater than `after`, by id, through an
/// `(app id, id)` index.
fn page_of_app<T: Clone>(
    index: &BTreeSet<(String, String)>,
    items: &BTreeMap<String, T>,
    app_id: &str,
    after: Option<&str>,
    limit: usize,
) -> Vec<T> {
    let start = (app_id.to_owned(), after.unwrap_or_default().to_owned());
    let lower = match after {
        Some(_) => Bound::Excluded(start),
        None => Bound::Included(start),
    };
    index
        .range((lower, Bound::Unbounded))
        .take_while(|(app, _)| app == app_id)
        .filter_map(|(_, id)| items.get(id).cloned())
        .take(limit)
        .collect()
}

impl TokenStore for MemoryStore {
    fn get_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.read().tokens.get(id).cloned())
    }

    fn list_tokens(
        &self,
        app_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let state = self.read();
        Ok(page_of_app(
            &state.tokens_by_app,
            &state.tokens,
            app_id,
            after,
            limit,
        ))
    }

    fn scope_is_granted(&self, scope: &Scope) -> Result<bool, StoreError> {
        Ok(self.read().scope_grants.contains_key(scope))
    }

    fn role_is_granted(&self, role: &RoleName) -> Result<bool, StoreError> {
        Ok(self.read().role_grants.contains_key(role))
    }

    fn expired_tokens(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(self
            .read()
            .tokens
            .values()
            .filter(|t| t.expires_at.is_some_and(|e| e < before))
            .take(limit)
            .cloned()
            .collect())
    }

    fn consume_use(&self, id: &str) -> Result<UseOutcome, StoreError> {
        let mut state = self.write();
        let Some(token) = state.tokens.get_mut(id) else {
            return Ok(UseOutcome::Missing);
        };
        Ok(match token.limits.uses {
            None => UseOutcome::Unlimited,
            Some(0) => UseOutcome::Exhausted,
            Some(n) => {
                token.limits.uses = Some(n - 1);
                UseOutcome::Remaining(n - 1)
            }
        })
    }
}

impl PolicyStore for MemoryStore {
    fn load_policy(&self) -> Result<Policy, StoreError> {
        let state = self.read();
        Ok(Policy {
            permissions: state.permissions.clone(),
            roles: state.roles.clone(),
        })
    }
}

impl KeyStore for MemoryStore {
    fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let mut keys: Vec<_> = self.read().signing_keys.values().cloned().collect();
        keys.sort_by_key(|(position, key)| (key.created_at, *position));
        Ok(keys.into_iter().map(|(_, key)| key).collect())
    }
}

impl GrantStore for MemoryStore {
    fn get_refresh_token(&self, id: &str) -> Result<Option<RefreshRecord>, StoreError> {
        Ok(self.read().refresh_tokens.get(id).cloned())
    }

    fn list_revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        Ok(self.read().revocations.values().cloned().collect())
    }
}

impl AuditStore for MemoryStore {
    fn last_audit_event(&self) -> Result<Option<AuditEvent>, StoreError> {
        Ok(self.read().audit.values().next_back().cloned())
    }

    fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let state = self.read();
        let upper = query.before_seq.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(state
            .audit
            .range((Bound::Unbounded, upper))
            .rev()
            .map(|(_, e)| e)
            .filter(|e| query.action.as_ref().is_none_or(|a| *a == e.action))
            .filter(|e| query.actor.as_ref().is_none_or(|a| *a == e.actor))
            .filter(|e| query.since.is_none_or(|t| e.at >= t))
            .filter(|e| query.app_id.is_none() || query.app_id == e.app_id)
            .take(query.limit)
            .cloned()
            .collect())
    }

    fn audit_after(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let state = self.read();
        let events = state
            .audit
            .range((Bound::Excluded(after_seq), Bound::Unbounded));
        Ok(events.take(limit).map(|(_, e)| e.clone()).collect())
    }
}

impl IdentityStore for MemoryStore {
    fn get_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.read().users.get(id).cloned())
    }

    fn list_users(
        &self,
        app_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<UserRecord>, StoreError> {
        let state = self.read();
        Ok(page_of_app(
            &state.users_by_app,
            &state.users,
            app_id,
            after,
            limit,
        ))
    }

    fn user_by_identity(
        &self,
        idp_id: &str,
        subject: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        let state = self.read();
        let key = (idp_id.to_owned(), subject.to_owned());
        Ok(state
            .identities
            .get(&key)
            .and_then(|id| state.users.get(id))
            .cloned())
    }

    fn role_is_held_by_users(&self, role: &RoleName) -> Result<bool, StoreError> {
        let state = self.read();
        let by_user = state
            .users
            .values()
            .any(|u| u.roles.contains(role) || u.mapped_roles.contains(role));
        let by_idp = state.idps.values().any(|idp| {
            idp.default_roles.contains(role) || idp.role_map.values().any(|r| r.contains(role))
        });
        Ok(by_user || by_idp)
    }

    fn get_idp(&self, id: &str) -> Result<Option<IdpRecord>, StoreError> {
        Ok(self.read().idps.get(id).cloned())
    }

    fn idp_by_slug(&self, slug: &str) -> Result<Option<IdpRecord>, StoreError> {
        let state = self.read();
        Ok(state
            .idp_slugs
            .get(slug)
            .and_then(|id| state.idps.get(id))
            .cloned())
    }

    fn list_idps(&self, app_id: Option<&str>) -> Result<Vec<IdpRecord>, StoreError> {
        Ok(self
            .read()
            .idps
            .values()
            .filter(|idp| app_id.is_none_or(|app| idp.app_id == app))
            .cloned()
            .collect())
    }

    fn get_login_attempt(&self, id: &str) -> Result<Option<LoginAttempt>, StoreError> {
        Ok(self.read().login_attempts.get(id).cloned())
    }

    fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.read().sessions.get(id).cloned())
    }

    fn list_sessions(
        &self,
        user_id: &str,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let mut sessions: Vec<SessionRecord> = self
            .read()
            .sessions
            .values()
            .filter(|s| s.user_id == user_id && s.revoked_at.is_none() && s.expires_at > now)
            .cloned()
            .collect();
        // Newest first; the map's order (by id) breaks ties, as the SQL stores do.
        sessions.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(sessions)
    }

    fn sealed_identity_records(&self) -> Result<SealedIdentityRecords, StoreError> {
        let state = self.read();
        Ok(SealedIdentityRecords {
            login_attempts: state
                .login_attempts
                .values()
                .filter(|a| a.sealed_pkce_verifier.is_some())
                .cloned()
                .collect(),
            sessions: state
                .sessions
                .values()
                .filter(|s| s.sealed_upstream_refresh.is_some())
                .cloned()
                .collect(),
        })
    }
}

impl kms_core::store::PrivacyStore for MemoryStore {
    fn get_person_key(
        &self,
        subject: &str,
    ) -> Result<Option<kms_core::store::PersonKeyRecord>, StoreError> {
        Ok(self.read().person_keys.get(subject).cloned())
    }

    fn list_person_keys(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<kms_core::store::PersonKeyRecord>, StoreError> {
        let state = self.read();
        let lower = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_owned()));
        Ok(state
            .person_keys
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(_, k)| k.clone())
            .collect())
    }

    fn audit_concerning(
        &self,
        ids: &[String],
        before_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let state = self.read();
        let upper = before_seq.map_or(Bound::Unbounded, Bound::Excluded);
        let named = |v: &str| ids.iter().any(|id| id == v);
        Ok(state
            .audit
            .range((Bound::Unbounded, upper))
            .rev()
            .map(|(_, e)| e)
            .filter(|e| {
                e.subject.as_deref().is_some_and(named) || named(&e.actor) || named(&e.target)
            })
            .take(limit)
            .cloned()
            .collect())
    }

    fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let mut sessions: Vec<SessionRecord> = self
            .read()
            .sessions
            .values()
            .filter(|s| s.user_id == user_id)
            .cloned()
            .collect();
        sessions.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(sessions)
    }

    fn ended_sessions(
        &self,
        ended_before: Timestamp,
        used_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .read()
            .sessions
            .values()
            .filter(|s| {
                s.revoked_at.is_some_and(|t| t < ended_before)
                    || s.expires_at < ended_before
                    || s.last_used_at < used_before
            })
            .take(limit)
            .map(|s| s.id.clone())
            .collect())
    }
}

impl kms_core::store::CapacityStore for MemoryStore {
    fn capacity(&self, since: Timestamp) -> Result<kms_core::store::Capacity, StoreError> {
        use kms_core::store::{Capacity, ObjectCounts};
        let state = self.read();
        let count = |n: usize| n as u64;
        let recent = |times: &mut dyn Iterator<Item = Timestamp>| {
            times.filter(|t| *t >= since).count() as u64
        };
        Ok(Capacity {
            stored: ObjectCounts {
                applications: count(state.apps.len()),
                tokens: count(state.tokens.len()),
                users: count(state.users.len()),
                sessions: count(state.sessions.len()),
                audit_events: count(state.audit.len()),
            },
            created_since: ObjectCounts {
                applications: recent(&mut state.apps.values().map(|a| a.created_at)),
                tokens: recent(&mut state.tokens.values().map(|t| t.created_at)),
                users: recent(&mut state.users.values().map(|u| u.created_at)),
                sessions: recent(&mut state.sessions.values().map(|s| s.created_at)),
                audit_events: recent(&mut state.audit.values().map(|e| e.at)),
            },
            // Nothing is on disk.
            database_bytes: 0,
        })
    }
}

impl Store for MemoryStore {
    fn apply(&self, batch: &[Mutation]) -> Result<(), StoreError> {
        {
            let mut state = self.write();
            let mut tx = MemoryTx {
                state: &mut state,
                undo: Vec::new(),
            };
            if let Err(e) = apply_batch(&mut tx, batch) {
                tx.rollback();
                return Err(e);
            }
        }
        self.listeners.notify(batch);
        Ok(())
    }

    fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.read().meta.get(key).cloned())
    }

    fn subscribe(&self, listener: Weak<dyn ChangeListener>) {
        self.listeners.subscribe(listener);
    }

    fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
