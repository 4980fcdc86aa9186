//! The storage traits kms-core talks to, and the change hook through which a store
//! announces what changed so caches drop stale entries.
//!
//! Traits are synchronous: stores are synchronous (rusqlite), the core has no runtime, and
//! servers run store calls off their async executor.

use std::sync::Weak;

use crate::access_token::{RefreshRecord, Revocation};
use crate::audit::{AuditEvent, AuditQuery};
use crate::env::Timestamp;
use crate::error::StoreError;
use crate::keyring::SigningKeyRecord;
use crate::model::{Application, TokenRecord};
use crate::policy::{Permission, Policy, Role};
use crate::scope::{RoleName, Scope};

/// The metadata key holding the audit anchor: `<seq>:<hash>` of the newest pruned event.
pub const AUDIT_ANCHOR_KEY: &str = "audit_anchor";

/// The metadata key holding the policy version: a counter every permission and role change
/// increments in its own transaction (absent means 0).
pub const POLICY_VERSION_KEY: &str = "policy_version";

/// One change in a [`Store::apply`] batch.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Mutation {
    /// Sets a metadata key that must not exist yet (else `Conflict`).
    CreateMeta {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Inserts an application; `Conflict` when the id or name is taken.
    InsertApp(Application),
    /// Replaces an existing application (matched by id); `Conflict` when the new name is
    /// taken by another application.
    UpdateApp(Application),
    /// Deletes an application and every token it owns.
    DeleteApp(String),
    /// Inserts a permission; `Conflict` when the scope exists.
    InsertPermission(Permission),
    /// Deletes a permission.
    DeletePermission(Scope),
    /// Inserts or replaces a role.
    PutRole(Role),
    /// Deletes a role.
    DeleteRole(RoleName),
    /// Inserts a token; `Conflict` when the id exists.
    InsertToken(TokenRecord),
    /// Replaces an existing token (matched by id).
    UpdateToken(TokenRecord),
    /// Deletes a token.
    DeleteToken(String),
    /// Inserts or replaces a signing key (matched by `kid`).
    PutSigningKey(SigningKeyRecord),
    /// Inserts a refresh token; `Conflict` when the id exists.
    InsertRefreshToken(RefreshRecord),
    /// Marks an active refresh token spent at `at`; `Conflict` unless it is active, so two
    /// concurrent exchanges cannot both succeed.
    SpendRefreshToken {
        /// The refresh token's id.
        id: String,
        /// When it was exchanged.
        at: Timestamp,
    },
    /// Marks every refresh token of a family revoked.
    RevokeRefreshFamily(String),
    /// Inserts or replaces a deny-list entry.
    PutRevocation(Revocation),
    /// Appends an audit event exactly as given (restores, imports); `Conflict` when its
    /// `seq` exists.
    AppendAudit(AuditEvent),
    /// Appends an audit event at the head of the chain, inside the batch's transaction: its
    /// `seq` becomes the head's plus one, its `prev_hash` the head's hash (the anchor's when
    /// every event was pruned, the genesis hash when there never was one), and its `hash`
    /// is computed then; what the event carries in those three fields is ignored. So
    /// several writers on one database extend one chain instead of forking it.
    ChainAudit(AuditEvent),
    /// Fails the batch with `Conflict` unless the policy version ([`POLICY_VERSION_KEY`]) is
    /// `expected`: a policy change validated against one version of the permissions and
    /// roles is never applied over another writer's change.
    ExpectPolicyVersion(u64),
    /// Deletes the audit events up to `through_seq` and records the last deleted event as
    /// the anchor later verification starts from (meta `audit_anchor` = `<seq>:<hash>`).
    PruneAudit {
        /// The newest event deleted.
        through_seq: u64,
        /// That event's hash.
        anchor_hash: String,
    },
    /// Deletes deny-list entries and refresh tokens that expired before `before`.
    PurgeExpired {
        /// The cut-off.
        before: Timestamp,
    },
}

impl Mutation {
    /// The change listeners hear about once the batch has committed.
    pub fn change(&self) -> Option<Change> {
        match self {
            Mutation::CreateMeta { .. } | Mutation::InsertApp(_) | Mutation::InsertToken(_) => None,
            Mutation::UpdateApp(a) => Some(Change::App(a.id.clone())),
            Mutation::DeleteApp(id) => Some(Change::App(id.clone())),
            Mutation::InsertPermission(_)
            | Mutation::DeletePermission(_)
            | Mutation::PutRole(_)
            | Mutation::DeleteRole(_) => Some(Change::Policy),
            Mutation::UpdateToken(t) => Some(Change::Token(t.id.clone())),
            Mutation::DeleteToken(id) => Some(Change::Token(id.clone())),
            Mutation::PutSigningKey(_) => Some(Change::Keys),
            Mutation::PutRevocation(r) => Some(Change::Revocation(r.id.clone())),
            Mutation::InsertRefreshToken(_)
            | Mutation::SpendRefreshToken { .. }
            | Mutation::RevokeRefreshFamily(_)
            | Mutation::AppendAudit(_)
            | Mutation::ChainAudit(_)
            | Mutation::ExpectPolicyVersion(_)
            | Mutation::PruneAudit { .. }
            | Mutation::PurgeExpired { .. } => None,
        }
    }
}

/// What a store announces after a commit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Change {
    /// A token was updated (revoked, rotated, limits changed) or deleted.
    Token(String),
    /// An application was updated (e.g. disabled) or deleted.
    App(String),
    /// A permission or role definition changed.
    Policy,
    /// A signing key was added or changed state.
    Keys,
    /// A deny-list entry was added (its id).
    Revocation(String),
}

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

/// A complete store: every entity trait, atomic batches, metadata and the change hook.
pub trait Store:
    AppStore + TokenStore + PolicyStore + KeyStore + GrantStore + AuditStore + Send + Sync + 'static
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
