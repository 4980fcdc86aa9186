//! The storage traits kms-core talks to, and the change hook through which a store
//! announces what changed so caches drop stale entries.
//!
//! Traits are synchronous: stores are synchronous (rusqlite), the core has no runtime, and
//! servers run store calls off their async executor.

use std::sync::Weak;

use crate::application::Application;
use crate::audit::{AuditEvent, AuditQuery};
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::identity::{IdpRecord, LoginAttempt, SessionRecord, UserRecord};
use crate::policy::{Policy, RoleName, Scope};
use crate::privacy::PersonKeyRecord;
use crate::store::{Change, Mutation, RefreshRecord, Revocation, SigningKeyRecord, TokenRecord};
use crate::usage::{TokenTouch, UsageCount, UsageRow, UsageSubject};

/// Receives [`Change`]s from a store.
pub trait ChangeListener: Send + Sync {
    /// Called after a batch committed, with no store lock held, once per change.
    fn on_change(&self, change: &Change);
}

/// The outcome of spending one use of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseOutcome {
    /// The token has no use limit.
    Unlimited,
    /// One use was spent; this many are left.
    Remaining(u64),
    /// No uses were left; nothing was spent.
    Exhausted,
    /// The token does not exist (any more).
    Missing,
}

/// Applications.
pub trait AppStore {
    /// The application with `id`.
    fn get_app(&self, id: &str) -> Result<Option<Application>, StoreError>;
    /// Up to `limit` applications with ids greater than `after`, by id.
    fn list_apps(&self, after: Option<&str>, limit: usize) -> Result<Vec<Application>, StoreError>;
}

/// API keys.
pub trait TokenStore {
    /// The token with `id` (`tok_...`).
    fn get_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Up to `limit` tokens of `app_id` with ids greater than `after`, by id.
    fn list_tokens(
        &self,
        app_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, StoreError>;
    /// Whether any token is granted the scope directly.
    fn scope_is_granted(&self, scope: &Scope) -> Result<bool, StoreError>;
    /// Whether any token is granted the role.
    fn role_is_granted(&self, role: &RoleName) -> Result<bool, StoreError>;
    /// Up to `limit` tokens that expired before `before`, by id.
    fn expired_tokens(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, StoreError>;
    /// Atomically spends one use of a token with a use limit.
    fn consume_use(&self, id: &str) -> Result<UseOutcome, StoreError>;
}

/// Permission and role definitions.
pub trait PolicyStore {
    /// Every permission and role.
    fn load_policy(&self) -> Result<Policy, StoreError>;
}

/// Signing keys.
pub trait KeyStore {
    /// Every signing key, retired ones included, oldest first.
    fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError>;
}

/// Refresh tokens and the access-token deny-list.
pub trait GrantStore {
    /// The refresh token with `id`.
    fn get_refresh_token(&self, id: &str) -> Result<Option<RefreshRecord>, StoreError>;
    /// Every deny-list entry.
    fn list_revocations(&self) -> Result<Vec<Revocation>, StoreError>;
}

/// The audit log.
pub trait AuditStore {
    /// The newest event.
    fn last_audit_event(&self) -> Result<Option<AuditEvent>, StoreError>;
    /// Events matching `query`, newest first.
    fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;
    /// Up to `limit` events with `seq` greater than `after_seq`, oldest first.
    fn audit_after(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;
}

/// Users, identity-provider connections, login attempts and sessions.
pub trait IdentityStore {
    /// The user with `id` (`usr_...`).
    fn get_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Up to `limit` users of `app_id` with ids greater than `after`, by id.
    fn list_users(
        &self,
        app_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<UserRecord>, StoreError>;
    /// The user linked to the account `subject` at provider `idp_id`.
    fn user_by_identity(
        &self,
        idp_id: &str,
        subject: &str,
    ) -> Result<Option<UserRecord>, StoreError>;
    /// Whether any user holds the role (given or mapped), or any provider maps to it.
    fn role_is_held_by_users(&self, role: &RoleName) -> Result<bool, StoreError>;
    /// The provider connection with `id` (`idp_...`).
    fn get_idp(&self, id: &str) -> Result<Option<IdpRecord>, StoreError>;
    /// The provider connection with `slug`.
    fn idp_by_slug(&self, slug: &str) -> Result<Option<IdpRecord>, StoreError>;
    /// The provider connections of `app_id`, or of every application when `None`, by id.
    fn list_idps(&self, app_id: Option<&str>) -> Result<Vec<IdpRecord>, StoreError>;
    /// The login attempt with `id` (a hash of its state).
    fn get_login_attempt(&self, id: &str) -> Result<Option<LoginAttempt>, StoreError>;
    /// The session with `id` (`ses_...`), ended or not.
    fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Every session of `user_id` that is not revoked and not past its absolute expiry at
    /// `now`, newest first.
    fn list_sessions(
        &self,
        user_id: &str,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError>;
    /// Every login attempt holding a sealed PKCE verifier and every session, ended or not,
    /// holding a sealed upstream refresh token: what a master-key rotation re-seals.
    fn sealed_identity_records(&self) -> Result<SealedIdentityRecords, StoreError>;
}

/// What [`IdentityStore::sealed_identity_records`] returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SealedIdentityRecords {
    /// Login attempts with a sealed PKCE verifier, by id.
    pub login_attempts: Vec<LoginAttempt>,
    /// Sessions with a sealed upstream refresh token, by id.
    pub sessions: Vec<SessionRecord>,
}

/// Usage counts (hourly buckets by outcome code) and the last use of tokens.
pub trait UsageStore {
    /// In one transaction: adds every count to its bucket (`count = count + n`, so writers
    /// on one database sum) and raises each touched token's `last_used_at` to `at` when
    /// later (a missing token is skipped).
    fn add_usage(&self, counts: &[UsageCount], touches: &[TokenTouch]) -> Result<(), StoreError>;
    /// The hourly totals of `subject` by code with `from <= bucket_start < to`, by bucket
    /// then code.
    fn usage(
        &self,
        subject: UsageSubject<'_>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageRow>, StoreError>;
    /// How many stored buckets started before `before` (what a retention sweep removes).
    fn usage_buckets_before(&self, before: Timestamp) -> Result<u64, StoreError>;
}

/// Personal data: person keys (crypto-shredding, see [`crate::privacy`]), the audit events
/// about a person, every session of a user, and ended sessions for retention.
pub trait PrivacyStore {
    /// The person key of `subject`.
    fn get_person_key(&self, subject: &str) -> Result<Option<PersonKeyRecord>, StoreError>;
    /// Up to `limit` person keys with subjects greater than `after`, by subject (for a
    /// master-key rotation, which re-seals each with
    /// [`reseal_person_key`](crate::privacy::reseal_person_key)).
    fn list_person_keys(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PersonKeyRecord>, StoreError>;
    /// Up to `limit` audit events whose subject, actor or target is one of `ids`, with
    /// `seq` below `before_seq` when given, newest first.
    fn audit_concerning(
        &self,
        ids: &[String],
        before_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError>;
    /// Every session of `user_id`, ended or not, newest first.
    fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError>;
    /// Up to `limit` ids of sessions that ended before `ended_before`: revoked or past
    /// their absolute expiry before it, or last used before `used_before` (idle), by id.
    fn ended_sessions(
        &self,
        ended_before: Timestamp,
        used_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
}

/// A complete store: every entity trait, atomic batches, metadata and the change hook.
pub trait Store:
    AppStore
    + TokenStore
    + PolicyStore
    + KeyStore
    + GrantStore
    + AuditStore
    + IdentityStore
    + crate::store::CapacityStore
    + UsageStore
    + PrivacyStore
    + Send
    + Sync
    + 'static
{
    /// Applies every mutation in one transaction: all of them or none. Listeners hear the
    /// resulting [`Change`]s after the commit.
    fn apply(&self, batch: &[Mutation]) -> Result<(), StoreError>;
    /// A metadata value.
    fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Registers a listener; dropped listeners are skipped.
    fn subscribe(&self, listener: Weak<dyn ChangeListener>);
    /// Checks that the store can serve requests (readiness).
    fn ping(&self) -> Result<(), StoreError>;
}
