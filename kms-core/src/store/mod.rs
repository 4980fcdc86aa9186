//! What a store implementer needs: the storage traits, the mutations a batch is made of
//! and the changes they announce, the records stores keep, and the audit chain's
//! constants. An application using [`Kms`](crate::Kms) needs none of it beyond handing a
//! store to [`Kms::builder`](crate::Kms::builder).
//!
//! Traits are synchronous: stores are synchronous (rusqlite), the core has no runtime, and
//! servers run store calls off their async executor.

mod batch;
mod capacity;
mod mutation;
mod records;
mod traits;

pub use crate::usage::{TokenTouch, UsageCount, UsageRow, UsageSubject};
pub use batch::{apply_batch, Transaction, MAX_COUNTER};
pub use capacity::{Capacity, CapacityStore, ObjectCounts};
pub use mutation::{Change, Mutation};
pub use records::{
    KeyAlgorithm, KeyState, RefreshRecord, RefreshStatus, Revocation, SigningKeyRecord, TokenRecord,
};
pub use traits::PrivacyStore;
pub use traits::{
    AppStore, AuditStore, ChangeListener, GrantStore, IdentityStore, KeyStore, PolicyStore,
    SealedIdentityRecords, Store, TokenStore, UsageStore, UseOutcome,
};

pub use crate::privacy::PersonKeyRecord;

pub use crate::audit::{verify_chain, AuditQuery, AUDIT_ANCHOR_KEY, GENESIS_HASH};
pub use crate::error::StoreError;
pub use crate::identity::{
    Identity, IdpKind, IdpProtocol, IdpRecord, IdpStatus, LoginAttempt, OidcSettings, SamlSettings,
    SessionRecord, SessionSelector, UserRecord, UserStatus,
};

/// The metadata key holding the policy version: a counter every permission and role change
/// increments in its own transaction (absent means 0).
pub const POLICY_VERSION_KEY: &str = "policy_version";
pub use crate::policy::Policy;
