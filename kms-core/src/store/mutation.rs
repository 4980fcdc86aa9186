//! Mutations: the writes a [`Store::apply`](crate::store::Store::apply) batch is made of,
//! and the [`Change`] each announces once committed.

use crate::application::Application;
use crate::audit::AuditEvent;
use crate::clock::Timestamp;
use crate::identity::{IdpRecord, LoginAttempt, SessionRecord, SessionSelector, UserRecord};
use crate::policy::{Permission, Role, RoleName, Scope};
use crate::privacy::PersonKeyRecord;
use crate::store::{RefreshRecord, Revocation, SigningKeyRecord, TokenRecord};

/// One change in a [`Store::apply`](crate::store::Store::apply) batch.
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
    /// Deletes an application and every token, user (with their identities and sessions)
    /// and identity-provider connection (with its login attempts) it owns.
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
    /// Fails the batch with `Conflict` unless the policy version
    /// ([`POLICY_VERSION_KEY`](super::POLICY_VERSION_KEY)) is `expected`: a policy change
    /// validated against one version of the permissions and roles is never applied over
    /// another writer's change.
    ExpectPolicyVersion(u64),
    /// Deletes the audit events up to `through_seq` and records the last deleted event as
    /// the anchor later verification starts from (meta `audit_anchor` = `<seq>:<hash>`).
    PruneAudit {
        /// The newest event deleted.
        through_seq: u64,
        /// That event's hash.
        anchor_hash: String,
    },
    /// Deletes deny-list entries and refresh tokens that expired before `before`, and
    /// login attempts and replay-cache entries that expired before it.
    PurgeExpired {
        /// The cut-off.
        before: Timestamp,
    },
    /// Inserts or replaces a user (matched by id) with their identities; `Conflict` when
    /// one of its `(idp_id, subject)` identities belongs to another user.
    PutUser(UserRecord),
    /// Deletes a user, their identities and their sessions.
    DeleteUser(String),
    /// Inserts or replaces a provider connection (matched by id); `Conflict` when its slug
    /// is taken by another connection.
    PutIdp(IdpRecord),
    /// Deletes a provider connection, the identities linked through it and its login
    /// attempts (its sessions are revoked by a [`Mutation::RevokeSessions`] in the same
    /// batch).
    DeleteIdp(String),
    /// Inserts a login attempt; `Conflict` when the id exists.
    InsertLoginAttempt(LoginAttempt),
    /// Deletes a login attempt; `Conflict` unless it existed, so a callback replayed or
    /// raced uses it at most once. Expiry is not checked here: the caller compares
    /// `expires_at` with its clock.
    ConsumeLoginAttempt(String),
    /// Inserts a session; `Conflict` when the id exists.
    InsertSession(SessionRecord),
    /// Replaces an existing session (matched by id).
    UpdateSession(SessionRecord),
    /// Records a use of a session: `last_used_at` becomes `at` when later, unless revoked.
    TouchSession {
        /// The session's id.
        id: String,
        /// When it was used.
        at: Timestamp,
    },
    /// Marks the selected sessions that are not revoked yet revoked at `at` for `reason`.
    RevokeSessions {
        /// Which sessions.
        selector: SessionSelector,
        /// When.
        at: Timestamp,
        /// Why (`logout`, `revoked`, `user_disabled`, `idp_deleted`, ...).
        reason: String,
    },
    /// Remembers a single-use id (a SAML assertion id) until `expires_at` (a later
    /// [`Mutation::PurgeExpired`] forgets it); `Conflict` while it is remembered.
    ClaimReplay {
        /// The id, namespaced by the caller (`saml:<idp>:<assertion id>`).
        id: String,
        /// When it may be forgotten.
        expires_at: Timestamp,
    },
    /// Sets a metadata key, replacing any value it had (the master key's rotation time).
    PutMeta {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Deletes the usage buckets that started before `before` (retention).
    PurgeUsage {
        /// The cut-off.
        before: Timestamp,
    },
    /// Inserts a person key; `Conflict` when the subject has one already (two writers
    /// made one at once: the loser retries with the winner's).
    InsertPersonKey(PersonKeyRecord),
    /// Replaces an existing person key (a master-key rotation re-seals it); `Conflict`
    /// when the subject has none (it was erased meanwhile).
    UpdatePersonKey(PersonKeyRecord),
    /// Erases a person: deletes the user with their identities and sessions, and their
    /// person key, so the personal fields sealed in audit events cannot be opened again.
    /// Stores then scrub deleted bytes (see [`Mutation::erases`]).
    ErasePerson(String),
    /// Erases an API key: deletes the token (with its metadata); stores then scrub deleted
    /// bytes (see [`Mutation::erases`]).
    EraseToken(String),
    /// Deletes a session (retention of ended sessions); a missing one is a no-op.
    DeleteSession(String),
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
            | Mutation::PurgeExpired { .. }
            | Mutation::InsertLoginAttempt(_)
            | Mutation::ConsumeLoginAttempt(_)
            | Mutation::InsertSession(_)
            | Mutation::TouchSession { .. }
            | Mutation::ClaimReplay { .. }
            | Mutation::PutMeta { .. }
            | Mutation::PurgeUsage { .. } => None,
            Mutation::PutUser(u) => Some(Change::User(u.id.clone())),
            Mutation::DeleteUser(id) => Some(Change::User(id.clone())),
            Mutation::PutIdp(i) => Some(Change::Idp(i.id.clone())),
            Mutation::DeleteIdp(id) => Some(Change::Idp(id.clone())),
            Mutation::UpdateSession(s) => Some(Change::Session(s.id.clone())),
            Mutation::RevokeSessions { selector, .. } => Some(match selector {
                SessionSelector::Id(id) => Change::Session(id.clone()),
                SessionSelector::User(id) => Change::User(id.clone()),
                SessionSelector::Idp(id) => Change::Idp(id.clone()),
            }),
            Mutation::InsertPersonKey(_) | Mutation::UpdatePersonKey(_) => None,
            Mutation::ErasePerson(id) => Some(Change::User(id.clone())),
            Mutation::EraseToken(id) => Some(Change::Token(id.clone())),
            Mutation::DeleteSession(id) => Some(Change::Session(id.clone())),
        }
    }

    /// Whether the mutation erases personal data: after committing a batch holding one, a
    /// store removes what the database engine keeps of deleted rows where it can (SQLite:
    /// `secure_delete` zeroes them in the file, and the write-ahead log is checkpointed and
    /// truncated; PostgreSQL: the affected tables are vacuumed).
    pub fn erases(&self) -> bool {
        matches!(self, Mutation::ErasePerson(_) | Mutation::EraseToken(_))
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
    /// A user was changed or deleted, or every session of theirs revoked.
    User(String),
    /// A provider connection was changed or deleted, or every session through it revoked.
    Idp(String),
    /// A session was changed or revoked.
    Session(String),
}
