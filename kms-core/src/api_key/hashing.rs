//! argon2id hashing of token secrets, stored as PHC strings.

use std::sync::{Arc, Condvar, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::{Error, Result};
use crate::random::SecureRandom;

/// argon2id verification work done on one thread, for tests that check that two paths do
/// the same hashing work (an unknown token id costs what a wrong secret costs).
///
/// A test hook (reached through [`crate::internal`]), not part of the supported API: counted in a thread-local [`Cell`](std::cell::Cell)
/// (no lock, no atomic, no allocation), a few nanoseconds next to the milliseconds of an
/// argon2id verification. Verification in kms-core is synchronous, so the work of a call
/// is counted on the thread that made it.
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
    fn argon2(&self) -> Result<Argon2<'static>> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| {
                Error::invalid("hash_params", format!("invalid argon2 parameters: {e}"))
            })?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Hashes and verifies secrets with argon2id.
///
/// At most a fixed number of argon2id computations run at once per hasher (and its clones;
/// by default one per CPU): each holds `memory_kib` of working memory (19 MiB at the OWASP
/// cost), and running more at once than there are cores only multiplies that memory
/// without finishing sooner. Callers beyond the limit wait their turn.
#[derive(Debug, Clone)]
pub struct SecretHasher {
    params: HashParams,
    argon2: Argon2<'static>,
    permits: Arc<Permits>,
}

/// A counting semaphore over argon2id computations.
#[derive(Debug)]
struct Permits {
    available: Mutex<usize>,
    freed: Condvar,
}

/// One running computation; gives its permit back when dropped.
struct Permit<'a>(&'a Permits);

impl Permits {
    fn acquire(&self) -> Permit<'_> {
        let mut available = self.available.lock().unwrap_or_else(|p| p.into_inner());
        while *available == 0 {
            available = self
                .freed
                .wait(available)
                .unwrap_or_else(|p| p.into_inner());
        }
        *available -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut available = self.0.available.lock().unwrap_or_else(|p| p.into_inner());
        *available += 1;
        self.0.freed.notify_one();
    }
}

impl SecretHasher {
    /// A hasher with `params`, running at most one computation per CPU at once; fails when
    /// the parameters are out of argon2's range.
    pub fn new(params: HashParams) -> Result<Self> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_concurrency(params, cpus)
    }

    /// A hasher with `params` running at most `max_concurrent` computations at once (at
    /// least one).
    pub fn with_concurrency(params: HashParams, max_concurrent: usize) -> Result<Self> {
        Ok(SecretHasher {
            argon2: params.argon2()?,
            params,
            permits: Arc::new(Permits {
                available: Mutex::new(max_concurrent.max(1)),
                freed: Condvar::new(),
            }),
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
        let _permit = self.permits.acquire();
        let _span = tracing::debug_span!("argon2id", operation = "hash").entered();
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
        let _permit = self.permits.acquire();
        let _span = tracing::debug_span!("argon2id", operation = "verify").entered();
        Ok(self
            .argon2
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::OsRandom;

    #[test]
    fn computations_beyond_the_limit_wait_for_a_permit() {
        let h =
            SecretHasher::with_concurrency(crate::dangerous::insecure_hash_params(), 2).unwrap();
        let phc = h.hash("s", &OsRandom).unwrap();
        // Hold both permits: a verification must wait for one.
        let (a, b) = (h.permits.acquire(), h.permits.acquire());
        let waiting = {
            let (h, phc) = (h.clone(), phc.clone());
            std::thread::spawn(move || h.verify("s", &phc).unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!waiting.is_finished(), "verified without a permit");
        drop(a);
        assert!(waiting.join().unwrap());
        drop(b);
        assert_eq!(
            *h.permits.available.lock().unwrap(),
            2,
            "every permit came back"
        );
        // Hashing takes a permit too.
        let _all = (h.permits.acquire(), h.permits.acquire());
        let hashing = {
            let h = h.clone();
            std::thread::spawn(move || h.hash("t", &OsRandom).unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!hashing.is_finished(), "hashed without a permit");
        drop(_all);
        assert!(hashing.join().unwrap().starts_with("$argon2id$"));
    }

    #[test]
    fn hash_verifies_the_right_secret_only() {
        let h = SecretHasher::new(crate::dangerous::insecure_hash_params()).unwrap();
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
        let h = SecretHasher::new(crate::dangerous::insecure_hash_params()).unwrap();
        assert!(h.verify("x", "not a phc").is_err());
    }
}
