//! Sealing of private key material: XChaCha20-Poly1305 under a master key that never
//! enters the database, with the key id as associated data so a sealed blob cannot be
//! swapped between keys. The master key also keys derivations (HMAC-SHA256 under a subkey
//! per purpose) of values that must be reproducible without being stored.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::random::SecureRandom;

const NONCE_LEN: usize = 24;

/// The 32-byte master key. `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// Decodes standard base64 of exactly 32 bytes (surrounding whitespace ignored).
    pub fn from_base64(s: &str) -> Result<Self> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| Error::invalid("master_key", "must be standard base64"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::invalid("master_key", "must decode to exactly 32 bytes"))?;
        Ok(MasterKey(key))
    }

    /// A fresh key from `random`.
    pub fn generate(random: &dyn SecureRandom) -> Result<Self> {
        let mut key = [0u8; 32];
        random.fill(&mut key)?;
        Ok(MasterKey(key))
    }

    /// Whether `other` is the same key (compared in constant time).
    pub fn same_key(&self, other: &MasterKey) -> bool {
        use subtle::ConstantTimeEq;
        self.0.ct_eq(&other.0).into()
    }

    /// The raw 32 bytes, for splitting the key into shares (escrow). Handle with care.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key from its raw 32 bytes (shares combined again).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(bytes)
    }

    /// Standard base64, for writing a key file.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// Seals `plaintext` bound to `context` (the key id): `nonce || ciphertext+tag`.
    pub fn seal(
        &self,
        context: &str,
        plaintext: &[u8],
        random: &dyn SecureRandom,
    ) -> Result<Vec<u8>> {
        seal_with(&self.0, context, plaintext, random)
    }

    /// Opens a blob sealed for `context`. Fails when the master key is wrong, the blob was
    /// altered, or it belongs to another context.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        open_with(&self.0, context, sealed).map_err(|_| {
            Error::internal(
                "sealed key material cannot be opened: the master key is wrong or the data was altered",
            )
        })
    }

    /// A keyed pseudo-random byte stream for `purpose` and `input`: the same inputs always
    /// give the same bytes, so what is derived from them never needs storing, and without
    /// the master key the bytes cannot be predicted. Each purpose has its own subkey, so
    /// no derivation can stand in for another or for sealing.
    pub(crate) fn keyed_stream(&self, purpose: &str, input: &[u8]) -> Result<KeyedStream> {
        let mut subkey = hmac_sha256(&self.0)?;
        subkey.update(b"kms derived key\0");
        subkey.update(purpose.as_bytes());
        let mut mac = hmac_sha256(&subkey.finalize().into_bytes())?;
        mac.update(&(input.len() as u64).to_be_bytes());
        mac.update(input);
        Ok(KeyedStream { mac, block: 0 })
    }
}

/// XChaCha20-Poly1305 under `key`, bound to `context`: `nonce || ciphertext+tag`.
pub(crate) fn seal_with(
    key: &[u8; 32],
    context: &str,
    plaintext: &[u8],
    random: &dyn SecureRandom,
) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    random.fill(&mut nonce)?;
    let cipher = XChaCha20Poly1305::new(key.into());
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: context.as_bytes(),
            },
        )
        .map_err(|_| Error::internal("sealing failed"))?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(out)
}

/// Opens what [`seal_with`] sealed under `key` for `context`.
pub(crate) fn open_with(key: &[u8; 32], context: &str, sealed: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(Error::internal("sealed data is truncated"));
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    XChaCha20Poly1305::new(key.into())
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: context.as_bytes(),
            },
        )
        .map_err(|_| Error::internal("sealed data cannot be opened: wrong key or altered data"))
}

fn hmac_sha256(key: &[u8]) -> Result<Hmac<Sha256>> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| Error::internal("hmac rejected a key"))
}

/// The bytes of [`MasterKey::keyed_stream`]: block `i` is the HMAC of the input and `i`.
pub(crate) struct KeyedStream {
    mac: Hmac<Sha256>,
    block: u32,
}

impl KeyedStream {
    /// Fills `buf` with the next bytes of the stream.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        for chunk in buf.chunks_mut(32) {
            let mut m = self.mac.clone();
            m.update(&self.block.to_be_bytes());
            let out = m.finalize().into_bytes();
            chunk.copy_from_slice(&out[..chunk.len()]);
            self.block = self
                .block
                .checked_add(1)
                .ok_or_else(|| Error::internal("keyed stream exhausted"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::OsRandom;

    #[test]
    fn seal_round_trips_and_binds_the_context() {
        let k = MasterKey::generate(&OsRandom).unwrap();
        let sealed = k.seal("kid1", b"private", &OsRandom).unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"private"));
        assert_eq!(k.open("kid1", &sealed).unwrap(), b"private");
        assert!(k.open("kid2", &sealed).is_err());
        let other = MasterKey::generate(&OsRandom).unwrap();
        assert!(other.open("kid1", &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered[30] ^= 1;
        assert!(k.open("kid1", &tampered).is_err());
        assert!(k.open("kid1", &sealed[..10]).is_err());
    }

    #[test]
    fn keyed_streams_are_reproducible_and_separated_by_key_purpose_and_input() {
        let k = MasterKey::generate(&OsRandom).unwrap();
        let bytes = |key: &MasterKey, purpose: &str, input: &[u8]| {
            let mut s = key.keyed_stream(purpose, input).unwrap();
            let mut a = [0u8; 40];
            let mut b = [0u8; 40];
            s.fill(&mut a).unwrap();
            s.fill(&mut b).unwrap();
            assert_ne!(a, b, "the stream moves on");
            (a, b)
        };
        assert_eq!(bytes(&k, "p", b"in"), bytes(&k, "p", b"in"));
        assert_ne!(bytes(&k, "p", b"in"), bytes(&k, "q", b"in"));
        assert_ne!(bytes(&k, "p", b"in"), bytes(&k, "p", b"im"));
        let other = MasterKey::generate(&OsRandom).unwrap();
        assert_ne!(bytes(&k, "p", b"in"), bytes(&other, "p", b"in"));
    }

    #[test]
    fn base64_form_is_checked() {
        let k = MasterKey::generate(&OsRandom).unwrap();
        let again = MasterKey::from_base64(&format!(" {}\n", k.to_base64())).unwrap();
        assert_eq!(again.0, k.0);
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(MasterKey::from_base64("AAAA").is_err());
        assert!(!format!("{k:?}").contains(&k.to_base64()));
    }
}
