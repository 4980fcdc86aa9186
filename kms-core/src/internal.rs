//! Test and benchmark hooks. **Not a stable interface**: anything here may change or
//! disappear in any release, without notice. Applications use the crate root; store
//! implementers use [`crate::store`].
//!
//! What is here: the compiled permission snapshot (so property tests can check it against
//! a reference model and benchmarks can time it), the secret hasher (timed by benchmarks),
//! and a thread-local counter of argon2id work (so tests can prove that two refusals cost
//! the same).

use std::sync::Arc;

pub use crate::api_key::hashing::{hash_work_on_this_thread, HashWork, SecretHasher};
pub use crate::policy::{EffectiveSet, PermissionSnapshot};

use crate::error::Result;
use crate::kms::Kms;

/// The compiled permission snapshot `kms` currently checks against (reloaded first if a
/// policy change left it stale).
pub fn snapshot(kms: &Kms) -> Result<Arc<PermissionSnapshot>> {
    kms.snapshot()
}

/// Starts a session for `user`, who must be stored, as a login through `idp_id` would, and
/// returns its token: for benchmarks and tests of session verification without an
/// identity provider.
pub fn start_session(
    kms: &Kms,
    user: &crate::identity::UserRecord,
    idp_id: &str,
) -> Result<String> {
    kms.start_session_unchecked(user, idp_id)
}
