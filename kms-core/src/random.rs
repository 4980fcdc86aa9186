//! Randomness: the source of every secret, injectable so tests are deterministic.

use crate::error::{Error, Result};

/// A source of cryptographically secure random bytes.
pub trait SecureRandom: Send + Sync + 'static {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]) -> Result<()>;
}

/// The operating system's CSPRNG (`getrandom`).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl SecureRandom for OsRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<()> {
        getrandom::getrandom(buf).map_err(|e| Error::Internal {
            message: "the operating system's random source failed".to_owned(),
            source: Some(Box::new(e)),
        })
    }
}
