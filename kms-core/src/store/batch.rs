//! The meaning of each [`Mutation`], written once for every store: which preconditions it
//! checks, what its conflict says, what it changes. A store supplies only the primitive
//! reads and writes of one open transaction ([`Transaction`]); [`apply_batch`] turns a
//! batch into those primitives, so no two stores can drift apart on semantics, and a new
//! store (PostgreSQL, say) copies no rule.
//!
//! A store's `Store::apply` opens a transaction, calls [`apply_batch`], and commits on
//! `Ok` (rolling back on `Err`); the transaction must serialise writers (SQLite's
//! `BEGIN IMMEDIATE`, a lock on a network database), since the preconditions read what
//! they check inside it.

use super::{Mutation, POLICY_VERSION_KEY};
use super::{RefreshRecord, RefreshStatus, Revocation, SigningKeyRecord, StoreError, TokenRecord};
use crate::application::Application;
use crate::audit::{AuditAnchor, AuditEvent, AUDIT_ANCHOR_KEY, GENESIS_HASH};
use crate::clock::Timestamp;
use crate::identity::{IdpRecord, LoginAttempt, SessionRecord, SessionSelector, UserRecord};
use crate::policy::{Permission, Role, RoleName, Scope};
use crate::privacy::PersonKeyRecord;

/// Primitive reads and writes inside one open transaction. Writes do not check
/// preconditions: [`apply_batch`] has, before calling them.
pub trait Transaction {
    /// Whether the metadata key is set.
    fn meta_exists(&mut self, key: &str) -> Result<bool, StoreError>;
    /// A metadata value.
    fn meta(&mut self, key: &str) -> Result<Option<String>, StoreError>;
    /// Sets a metadata key that is not set yet.
    fn insert_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError>;

    /// Whether an application with this id exists.
    fn app_exists(&mut self, id: &str) -> Result<bool, StoreError>;
    /// The id of the application called `name`, if any.
    fn app_named(&mut self, name: &str) -> Result<Option<String>, StoreError>;
    /// Inserts or replaces the application with this id.
    fn put_app(&mut self, app: &Application) -> Result<(), StoreError>;
    /// Deletes the application and every token, user (with identities and sessions) and
    /// identity-provider connection (with login attempts) it owns; a missing one is a no-op.
    fn delete_app(&mut self, id: &str) -> Result<(), StoreError>;

    /// Whether the permission is defined.
    fn permission_exists(&mut self, scope: &Scope) -> Result<bool, StoreError>;
    /// Inserts or replaces the permission with this scope.
    fn put_permission(&mut self, permission: &Permission) -> Result<(), StoreError>;
    /// Deletes the permission; a missing one is a no-op.
    fn delete_permission(&mut self, scope: &Scope) -> Result<(), StoreError>;
    /// Inserts or replaces the role with this name.
    fn put_role(&mut self, role: &Role) -> Result<(), StoreError>;
    /// Deletes the role; a missing one is a no-op.
    fn delete_role(&mut self, name: &RoleName) -> Result<(), StoreError>;

    /// Whether a token with this id exists.
    fn token_exists(&mut self, id: &str) -> Result<bool, StoreError>;
    /// Inserts or replaces the token with this id, with its grants.
    fn put_token(&mut self, token: &TokenRecord) -> Result<(), StoreError>;
    /// Deletes the token and its grants; a missing one is a no-op.
    fn delete_token(&mut self, id: &str) -> Result<(), StoreError>;

    /// Inserts or replaces the signing key with this kid.
    fn put_signing_key(&mut self, key: &SigningKeyRecord) -> Result<(), StoreError>;

    /// The status of the refresh token with `id`, if it exists.
    fn refresh_status(&mut self, id: &str) -> Result<Option<RefreshStatus>, StoreError>;
    /// Inserts a refresh token whose id is free.
    fn insert_refresh_token(&mut self, record: &RefreshRecord) -> Result<(), StoreError>;
    /// Marks the refresh token spent at `at`.
    fn spend_refresh_token(&mut self, id: &str, at: Timestamp) -> Result<(), StoreError>;
    /// Marks every refresh token of the family revoked.
    fn revoke_refresh_family(&mut self, family_id: &str) -> Result<(), StoreError>;
    /// Inserts or replaces the deny-list entry with this id.
    fn put_revocation(&mut self, revocation: &Revocation) -> Result<(), StoreError>;
    /// Deletes deny-list entries, refresh tokens, login attempts and replay-cache entries
    /// with `expires_at < before`.
    fn purge_expired(&mut self, before: Timestamp) -> Result<(), StoreError>;

    /// Whether an audit event with this sequence number exists.
    fn audit_exists(&mut self, seq: u64) -> Result<bool, StoreError>;
    /// `seq` and `hash` of the newest audit event, if any.
    fn audit_head(&mut self) -> Result<Option<(u64, String)>, StoreError>;
    /// Stores the audit event as given.
    fn append_audit(&mut self, event: &AuditEvent) -> Result<(), StoreError>;
    /// Deletes audit events with `seq <= through_seq`.
    fn prune_audit(&mut self, through_seq: u64) -> Result<(), StoreError>;
    /// Sets a metadata value, replacing any.
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError>;

    /// Whether a user with this id exists.
    fn user_exists(&mut self, id: &str) -> Result<bool, StoreError>;
    /// The id of the user linked to `(idp_id, subject)`, if any.
    fn user_with_identity(
        &mut self,
        idp_id: &str,
        subject: &str,
    ) -> Result<Option<String>, StoreError>;
    /// Inserts or replaces the user with this id, replacing their identities.
    fn put_user(&mut self, user: &UserRecord) -> Result<(), StoreError>;
    /// Deletes the user, their identities and their sessions; a missing one is a no-op.
    fn delete_user(&mut self, id: &str) -> Result<(), StoreError>;
    /// The id of the provider connection with `slug`, if any.
    fn idp_with_slug(&mut self, slug: &str) -> Result<Option<String>, StoreError>;
    /// Inserts or replaces the provider connection with this id.
    fn put_idp(&mut self, idp: &IdpRecord) -> Result<(), StoreError>;
    /// Deletes the connection, every identity linked through it (users keep their other
    /// identities) and its login attempts; a missing one is a no-op.
    fn delete_idp(&mut self, id: &str) -> Result<(), StoreError>;
    /// Whether a login attempt with this id exists.
    fn login_attempt_exists(&mut self, id: &str) -> Result<bool, StoreError>;
    /// Inserts a login attempt whose id is free.
    fn insert_login_attempt(&mut self, attempt: &LoginAttempt) -> Result<(), StoreError>;
    /// Deletes a login attempt; a missing one is a no-op.
    fn delete_login_attempt(&mut self, id: &str) -> Result<(), StoreError>;
    /// Whether a session with this id exists.
    fn session_exists(&mut self, id: &str) -> Result<bool, StoreError>;
    /// Inserts or replaces the session with this id.
    fn put_session(&mut self, session: &SessionRecord) -> Result<(), StoreError>;
    /// Sets `last_used_at` to `at` if the session exists, is not revoked and was last
    /// used before `at`.
    fn touch_session(&mut self, id: &str, at: Timestamp) -> Result<(), StoreError>;
    /// Sets `revoked_at` and `revoke_reason` on every selected session not revoked yet.
    fn revoke_sessions(
        &mut self,
        selector: &SessionSelector,
        at: Timestamp,
        reason: &str,
    ) -> Result<(), StoreError>;
    /// Whether the replay-cache id is remembered.
    fn replay_exists(&mut self, id: &str) -> Result<bool, StoreError>;
    /// Remembers a replay-cache id until `expires_at` (purged by `purge_expired`).
    fn insert_replay(&mut self, id: &str, expires_at: Timestamp) -> Result<(), StoreError>;
    /// Deletes the usage buckets that started before `before`.
    fn purge_usage(&mut self, before: Timestamp) -> Result<(), StoreError>;

    /// Whether the subject has a person key.
    fn person_key_exists(&mut self, subject: &str) -> Result<bool, StoreError>;
    /// Inserts or replaces the person key of its subject.
    fn put_person_key(&mut self, key: &PersonKeyRecord) -> Result<(), StoreError>;
    /// Deletes the subject's person key; a missing one is a no-op.
    fn delete_person_key(&mut self, subject: &str) -> Result<(), StoreError>;
    /// Deletes the session; a missing one is a no-op.
    fn delete_session(&mut self, id: &str) -> Result<(), StoreError>;
}

/// The largest counter (use count, audit sequence number) a store keeps: SQLite integers
/// are signed 64-bit.
pub const MAX_COUNTER: u64 = i64::MAX as u64;

/// Applies every mutation of `batch` to `tx`, stopping at the first conflict. The caller
/// commits on `Ok` and rolls back on `Err`.
pub fn apply_batch(tx: &mut impl Transaction, batch: &[Mutation]) -> Result<(), StoreError> {
    batch.iter().try_for_each(|m| apply_one(tx, m))
}

fn apply_one(tx: &mut impl Transaction, mutation: &Mutation) -> Result<(), StoreError> {
    if matches!(
        mutation,
        Mutation::InsertPermission(_)
            | Mutation::DeletePermission(_)
            | Mutation::PutRole(_)
            | Mutation::DeleteRole(_)
    ) {
        let next = policy_version(tx)?.saturating_add(1);
        tx.set_meta(POLICY_VERSION_KEY, &next.to_string())?;
    }
    match mutation {
        Mutation::CreateMeta { key, value } => {
            if tx.meta_exists(key)? {
                return Err(conflict(format!("the metadata key {key:?} is already set")));
            }
            tx.insert_meta(key, value)
        }
        Mutation::InsertApp(app) => {
            if tx.app_exists(&app.id)? {
                return Err(conflict(format!(
                    "an application with id {:?} already exists",
                    app.id
                )));
            }
            if tx.app_named(&app.name)?.is_some() {
                return Err(name_taken(&app.name));
            }
            tx.put_app(app)
        }
        Mutation::UpdateApp(app) => {
            require_app(tx, &app.id)?;
            match tx.app_named(&app.name)? {
                Some(owner) if owner != app.id => Err(name_taken(&app.name)),
                _ => tx.put_app(app),
            }
        }
        Mutation::DeleteApp(id) => tx.delete_app(id),
        Mutation::InsertPermission(permission) => {
            if tx.permission_exists(&permission.scope)? {
                return Err(conflict(format!(
                    "the permission {} is already defined",
                    permission.scope
                )));
            }
            tx.put_permission(permission)
        }
        Mutation::DeletePermission(scope) => tx.delete_permission(scope),
        Mutation::PutRole(role) => tx.put_role(role),
        Mutation::DeleteRole(name) => tx.delete_role(name),
        Mutation::InsertToken(token) => {
            check_token(tx, token)?;
            if tx.token_exists(&token.id)? {
                return Err(conflict(format!(
                    "a token with id {:?} already exists",
                    token.id
                )));
            }
            tx.put_token(token)
        }
        Mutation::UpdateToken(token) => {
            check_token(tx, token)?;
            if !tx.token_exists(&token.id)? {
                return Err(conflict(format!("the token {:?} does not exist", token.id)));
            }
            tx.put_token(token)
        }
        Mutation::DeleteToken(id) => tx.delete_token(id),
        Mutation::PutSigningKey(key) => tx.put_signing_key(key),
        Mutation::InsertRefreshToken(record) => {
            if tx.refresh_status(&record.id)?.is_some() {
                return Err(conflict(format!(
                    "a refresh token with id {:?} already exists",
                    record.id
                )));
            }
            tx.insert_refresh_token(record)
        }
        Mutation::SpendRefreshToken { id, at } => match tx.refresh_status(id)? {
            Some(RefreshStatus::Active) => tx.spend_refresh_token(id, *at),
            Some(RefreshStatus::Spent) => Err(conflict(format!(
                "the refresh token {id:?} has already been exchanged"
            ))),
            Some(RefreshStatus::Revoked) => Err(conflict(format!(
                "the refresh token {id:?} has been revoked"
            ))),
            None => Err(conflict(format!("the refresh token {id:?} does not exist"))),
        },
        Mutation::RevokeRefreshFamily(family_id) => tx.revoke_refresh_family(family_id),
        Mutation::PutRevocation(revocation) => tx.put_revocation(revocation),
        Mutation::PurgeExpired { before } => tx.purge_expired(*before),
        Mutation::PruneAudit {
            through_seq,
            anchor_hash,
        } => {
            tx.prune_audit(*through_seq)?;
            let anchor = AuditAnchor {
                seq: *through_seq,
                hash: anchor_hash.clone(),
            };
            tx.set_meta(AUDIT_ANCHOR_KEY, &anchor.to_meta_value())
        }
        Mutation::AppendAudit(event) => {
            if event.seq > MAX_COUNTER {
                return Err(conflict(format!(
                    "an audit sequence number must be at most {MAX_COUNTER}"
                )));
            }
            if tx.audit_exists(event.seq)? {
                return Err(conflict(format!(
                    "the audit event {} already exists",
                    event.seq
                )));
            }
            tx.append_audit(event)
        }
        Mutation::ChainAudit(event) => {
            let (seq, prev_hash) = match tx.audit_head()? {
                Some(head) => head,
                None => match tx.meta(AUDIT_ANCHOR_KEY)? {
                    Some(anchor) => AuditAnchor::from_meta_value(&anchor)
                        .map(|a| (a.seq, a.hash))
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!(
                                "the audit anchor {anchor:?} is not <seq>:<hash>"
                            ))
                        })?,
                    None => (0, GENESIS_HASH.to_owned()),
                },
            };
            let mut event = event.clone();
            event.seq = seq.saturating_add(1);
            if event.seq > MAX_COUNTER {
                return Err(conflict(format!(
                    "an audit sequence number must be at most {MAX_COUNTER}"
                )));
            }
            event.prev_hash = prev_hash;
            event.hash = event.compute_hash();
            tx.append_audit(&event)
        }
        Mutation::PutUser(user) => {
            require_app(tx, &user.app_id)?;
            for identity in &user.identities {
                match tx.user_with_identity(&identity.idp_id, &identity.subject)? {
                    Some(owner) if owner != user.id => {
                        return Err(conflict(format!(
                            "the account {:?} at {} is linked to another user",
                            identity.subject, identity.idp_id
                        )))
                    }
                    _ => {}
                }
            }
            tx.put_user(user)
        }
        Mutation::DeleteUser(id) => tx.delete_user(id),
        Mutation::PutIdp(idp) => {
            require_app(tx, &idp.app_id)?;
            match tx.idp_with_slug(&idp.slug)? {
                Some(owner) if owner != idp.id => Err(conflict(format!(
                    "an identity provider with slug {:?} already exists",
                    idp.slug
                ))),
                _ => tx.put_idp(idp),
            }
        }
        Mutation::DeleteIdp(id) => tx.delete_idp(id),
        Mutation::InsertLoginAttempt(attempt) => {
            if tx.login_attempt_exists(&attempt.id)? {
                return Err(conflict("the login attempt already exists".to_owned()));
            }
            tx.insert_login_attempt(attempt)
        }
        Mutation::ConsumeLoginAttempt(id) => {
            if !tx.login_attempt_exists(id)? {
                return Err(conflict("the login attempt was already used".to_owned()));
            }
            tx.delete_login_attempt(id)
        }
        Mutation::InsertSession(session) => {
            if !tx.user_exists(&session.user_id)? {
                return Err(conflict(format!(
                    "the user {:?} does not exist",
                    session.user_id
                )));
            }
            if tx.session_exists(&session.id)? {
                return Err(conflict(format!(
                    "a session with id {:?} already exists",
                    session.id
                )));
            }
            tx.put_session(session)
        }
        Mutation::UpdateSession(session) => {
            if !tx.session_exists(&session.id)? {
                return Err(conflict(format!(
                    "the session {:?} does not exist",
                    session.id
                )));
            }
            tx.put_session(session)
        }
        Mutation::TouchSession { id, at } => tx.touch_session(id, *at),
        Mutation::RevokeSessions {
            selector,
            at,
            reason,
        } => tx.revoke_sessions(selector, *at, reason),
        Mutation::PutMeta { key, value } => tx.set_meta(key, value),
        Mutation::ClaimReplay { id, expires_at } => {
            if tx.replay_exists(id)? {
                return Err(conflict(format!("{id:?} was already used")));
            }
            tx.insert_replay(id, *expires_at)
        }
        Mutation::PurgeUsage { before } => tx.purge_usage(*before),
        Mutation::InsertPersonKey(key) => {
            if tx.person_key_exists(&key.subject)? {
                return Err(conflict(format!(
                    "{:?} already has a person key",
                    key.subject
                )));
            }
            tx.put_person_key(key)
        }
        Mutation::UpdatePersonKey(key) => {
            if !tx.person_key_exists(&key.subject)? {
                return Err(conflict(format!(
                    "{:?} has no person key (erased?)",
                    key.subject
                )));
            }
            tx.put_person_key(key)
        }
        Mutation::ErasePerson(id) => {
            tx.delete_user(id)?;
            tx.delete_person_key(id)
        }
        Mutation::EraseToken(id) => tx.delete_token(id),
        Mutation::DeleteSession(id) => tx.delete_session(id),
        Mutation::ExpectPolicyVersion(expected) => {
            let current = policy_version(tx)?;
            if current == *expected {
                Ok(())
            } else {
                Err(conflict(format!(
                    "the permissions and roles were changed meanwhile (version {current}, \
                     expected {expected}); retry"
                )))
            }
        }
    }
}

/// The stored policy version (0 before the first permission or role change).
fn policy_version(tx: &mut impl Transaction) -> Result<u64, StoreError> {
    match tx.meta(POLICY_VERSION_KEY)? {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("the policy version {v:?} is not a number"))),
    }
}

/// Preconditions every stored token meets: its application exists and its use counter fits.
fn check_token(tx: &mut impl Transaction, token: &TokenRecord) -> Result<(), StoreError> {
    require_app(tx, &token.app_id)?;
    match token.limits.uses {
        Some(uses) if uses > MAX_COUNTER => Err(conflict(format!(
            "a token's use limit must be at most {MAX_COUNTER}"
        ))),
        _ => Ok(()),
    }
}

fn require_app(tx: &mut impl Transaction, id: &str) -> Result<(), StoreError> {
    if tx.app_exists(id)? {
        Ok(())
    } else {
        Err(conflict(format!("the application {id:?} does not exist")))
    }
}

fn name_taken(name: &str) -> StoreError {
    conflict(format!("an application named {name:?} already exists"))
}

fn conflict(message: String) -> StoreError {
    StoreError::Conflict(message)
}
