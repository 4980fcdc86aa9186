//! argon2id hashing of token secrets, stored as PHC strings.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::env::SecureRandom;
use crate::error::{Error, Result};

/// argon2id verification work done on one thread, for tests that check that two paths do
/// the same hashing work (an unknown token id costs what a wrong secret costs).
///
/// A test hook, not part of the supported API: counted in a thread-local [`Cell`](std::cell::Cell)
/// (no lock, no atomic, no allocation), a few nanoseconds next to the milliseconds of an
/// argon2id verification. Verification in kms-core is synchronous, so the work of a call
/// is counted on the thread that made it.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashWork {
    /// Calls of [`SecretHasher::verify`] that reached argon2id.
    pub verifications: u64,
    /// Their summed cost, memory (KiB) × passes × lanes of each PHC string verified against.
    pub cost: u64,
}

thread_local! {
    static HASH_WORK: std::cell::Cell<HashWork> = const {
        std::cell::Cell::new(HashWork { verifications: 0, cost: 0 })
    };
}

/// The argon2id verification work done on the calling thread so far (a test hook; see
/// [`HashWork`]).
#[doc(hidden)]
pub fn hash_work_on_this_thread() -> HashWork {
    HASH_WORK.with(std::cell::Cell::get)
}

/// argon2id cost parameters. The defaults are OWASP's: m = 19456 KiB, t = 2, p = 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HashParams {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Degree of parallelism.
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl HashParams {
    /// Deliberately cheap parameters for tests and bulk benchmark setup. Never use them for
    /// real secrets.
    pub fn insecure_for_tests() -> Self {
        HashParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    fn argon2(&self) -> Result<Argon2<'static>> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| {
                Error::invalid("hash_params", format!("invalid argon2 parameters: {e}"))
            })?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Hashes and verifies secrets with argon2id.
#[derive(Debug, Clone)]
pub struct SecretHasher {
    params: HashParams,
    argon2: Argon2<'static>,
}

impl SecretHasher {
    /// A hasher with `params`; fails when the parameters are out of argon2's range.
    pub fn new(params: HashParams) -> Result<Self> {
        Ok(SecretHasher {
            argon2: params.argon2()?,
            params,
        })
    }

    /// The parameters new hashes use.
    pub fn params(&self) -> HashParams {
        self.params
    }

    /// Hashes `secret` with a fresh 16-byte salt, returning a PHC string.
    pub fn hash(&self, secret: &str, random: &dyn SecureRandom) -> Result<String> {
        let mut salt = [0u8; 16];
        random.fill(&mut salt)?;
        let salt = SaltString::encode_b64(&salt)
            .map_err(|e| Error::internal(format!("salt encoding failed: {e}")))?;
        self.argon2
            .hash_password(secret.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::internal(format!("argon2 hashing failed: {e}")))
    }

    /// Checks `secret` against a PHC string in constant time. A malformed PHC string is
    /// corrupt data, not a mismatch.
    pub fn verify(&self, secret: &str, phc: &str) -> Result<bool> {
        let parsed = PasswordHash::new(phc)
            .map_err(|_| Error::internal("a stored secret hash is not a valid PHC string"))?;
        let cost = Params::try_from(&parsed).map_or(0, |p| {
            u64::from(p.m_cost()) * u64::from(p.t_cost()) * u64::from(p.p_cost())
        });
        HASH_WORK.with(|w| {
            let mut work = w.get();
            work.verifications += 1;
            work.cost += cost;
            w.set(work);
        });
        // The parameters come from the PHC string, so older hashes keep verifying after
        // the configured parameters change.
        Ok(self
            .argon2
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::OsRandom;

    #[test]
    fn hash_verifies_the_right_secret_only() {
        let h = SecretHasher::new(HashParams::insecure_for_tests()).unwrap();
        let phc = h.hash("s3cret", &OsRandom).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(!phc.contains("s3cret"));
        assert!(h.verify("s3cret", &phc).unwrap());
        assert!(!h.verify("s3cres", &phc).unwrap());
    }

    #[test]
    fn production_defaults_are_owasp() {
        let p = HashParams::default();
        assert_eq!((p.memory_kib, p.iterations, p.parallelism), (19_456, 2, 1));
        let h = SecretHasher::new(p).unwrap();
        let phc = h.hash("x", &OsRandom).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(h.verify("x", &phc).unwrap());
    }

    #[test]
    fn invalid_parameters_are_an_error() {
        let bad = HashParams {
            memory_kib: 1,
            iterations: 0,
            parallelism: 0,
        };
        assert!(SecretHasher::new(bad).is_err());
    }

    #[test]
    fn corrupt_phc_is_an_error_not_a_mismatch() {
        let h = SecretHasher::new(HashParams::insecure_for_tests()).unwrap();
        assert!(h.verify("x", "not a phc").is_err());
    }
}
