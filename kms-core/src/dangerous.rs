//! Settings that make kms insecure on purpose, for tests and benchmark setup only. The
//! module's name is the warning, as with rustls' `dangerous()`: nothing here belongs in a
//! deployment, and a `kms_core::dangerous::` path in production code should fail review.

use crate::api_key::HashParams;

/// argon2id parameters cheap enough for test suites and bulk benchmark setup (64 KiB, one
/// pass, one lane): a stolen hash made with them falls to brute force quickly. Never use
/// them for real secrets; [`HashParams::default`] is OWASP's recommendation.
pub fn insecure_hash_params() -> HashParams {
    HashParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    }
}
