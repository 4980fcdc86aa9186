//! The API-key format: `<prefix>_<id><secret><checksum>`.
//!
//! - `prefix`: 2–16 of `[a-z0-9]`, starting with a letter; per application (`kms` default).
//! - `id`: 10 base62 characters, the public lookup id (the token id is `tok_<id>`).
//! - `secret`: 31 base62 characters from the OS CSPRNG (≈184 bits).
//! - `checksum`: CRC32 of everything before it, 6 base62 characters, zero-padded.
//!
//! At most 16 + 1 + 10 + 31 + 6 = 64 characters, all in `[A-Za-z0-9_]`. Parsing rejects
//! malformed and mistyped tokens offline, before any store access, and never panics.

use std::fmt;

use crate::error::{Error, Result};
use crate::random::SecureRandom;

/// Length of the public lookup id, in base62 characters.
pub const ID_LEN: usize = 10;
/// Length of the secret, in base62 characters (31 × log2(62) ≈ 184 bits).
pub const SECRET_LEN: usize = 31;
/// Length of the checksum, in base62 characters.
pub const CHECKSUM_LEN: usize = 6;
/// Longest token the format allows.
pub const MAX_TOKEN_LEN: usize = 64;
/// How many leading characters of a token are shown for display (`start`).
pub const START_LEN: usize = 8;

const TAIL_LEN: usize = ID_LEN + SECRET_LEN + CHECKSUM_LEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A validated token prefix: 2–16 of `[a-z0-9]`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct TokenPrefix(String);

impl TokenPrefix {
    /// Validates `s` as a prefix.
    pub fn parse(s: &str) -> Result<Self> {
        if is_valid_prefix(s) {
            Ok(TokenPrefix(s.to_owned()))
        } else {
            Err(Error::invalid(
                "token_prefix",
                "must be 2 to 16 characters of [a-z0-9], starting with a letter",
            ))
        }
    }

    /// The default prefix, `kms`.
    pub fn default_prefix() -> Self {
        TokenPrefix("kms".to_owned())
    }

    /// The prefix as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for TokenPrefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TokenPrefix::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for TokenPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `s` is a valid prefix; no allocation (it runs on every verification).
fn is_valid_prefix(s: &str) -> bool {
    let b = s.as_bytes();
    (2..=16).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// A token as presented, split into its parts after the format and checksum checked out.
/// Borrowed from the input; holds the secret, so it is never logged (`Debug` hides it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ParsedToken<'a> {
    prefix: &'a str,
    id: &'a str,
    secret: &'a str,
}

impl<'a> ParsedToken<'a> {
    /// The prefix.
    pub fn prefix(&self) -> &'a str {
        self.prefix
    }

    /// The public lookup id (without `tok_`).
    pub fn lookup_id(&self) -> &'a str {
        self.id
    }

    /// The id of the token record this token names (`tok_<lookup id>`).
    pub fn token_id(&self) -> String {
        token_id(self.id)
    }

    /// The secret part; the only part that is hashed.
    pub fn secret(&self) -> &'a str {
        self.secret
    }
}

impl fmt::Debug for ParsedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedToken")
            .field("prefix", &self.prefix)
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a token failed to parse. Deliberately coarse: callers see only `MALFORMED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Wrong length, characters or layout.
    Format,
    /// The layout is right but the checksum does not match.
    Checksum,
}

/// What every token record's id starts with.
pub const TOKEN_ID_PREFIX: &str = "tok_";

/// The record id for a lookup id: the one place the id format is written.
fn token_id(lookup_id: &str) -> String {
    format!("{TOKEN_ID_PREFIX}{lookup_id}")
}

/// Parses and checks a presented token. Never panics, whatever the input.
pub fn parse(token: &str) -> std::result::Result<ParsedToken<'_>, ParseError> {
    let b = token.as_bytes();
    if b.len() > MAX_TOKEN_LEN {
        return Err(ParseError::Format);
    }
    let sep = b
        .iter()
        .position(|&c| c == b'_')
        .ok_or(ParseError::Format)?;
    let (prefix, rest) = (&token[..sep], &token[sep + 1..]);
    if !is_valid_prefix(prefix) || rest.len() != TAIL_LEN {
        return Err(ParseError::Format);
    }
    if !rest.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ParseError::Format);
    }
    let body_end = token.len() - CHECKSUM_LEN;
    let expected = checksum(&b[..body_end]);
    if b[body_end..] != expected {
        return Err(ParseError::Checksum);
    }
    Ok(ParsedToken {
        prefix,
        id: &rest[..ID_LEN],
        secret: &rest[ID_LEN..ID_LEN + SECRET_LEN],
    })
}

/// A freshly generated token. The plaintext lives only here; `Debug` redacts it.
pub struct GeneratedToken {
    plaintext: String,
    id_start: usize,
}

impl GeneratedToken {
    /// The full token, to hand to the user exactly once.
    pub fn plaintext(&self) -> &str {
        &self.plaintext
    }

    /// Consumes the value, returning the plaintext.
    pub fn into_plaintext(self) -> String {
        self.plaintext
    }

    /// The public lookup id.
    pub fn lookup_id(&self) -> &str {
        &self.plaintext[self.id_start..self.id_start + ID_LEN]
    }

    /// The id of the token record (`tok_<lookup id>`).
    pub fn token_id(&self) -> String {
        token_id(self.lookup_id())
    }

    /// The secret part.
    pub fn secret(&self) -> &str {
        &self.plaintext[self.id_start + ID_LEN..self.id_start + ID_LEN + SECRET_LEN]
    }
}

impl fmt::Debug for GeneratedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedToken")
            .field("id", &self.lookup_id())
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Generates a new token with `prefix`, drawing id and secret from `random`.
pub fn generate(prefix: &TokenPrefix, random: &dyn SecureRandom) -> Result<GeneratedToken> {
    let mut out = String::with_capacity(MAX_TOKEN_LEN);
    out.push_str(prefix.as_str());
    out.push('_');
    let id_start = out.len();
    push_base62(&mut out, ID_LEN + SECRET_LEN, random)?;
    let sum = checksum(out.as_bytes());
    out.extend(sum.iter().map(|&c| c as char));
    Ok(GeneratedToken {
        plaintext: out,
        id_start,
    })
}

/// Random base62 characters, unbiased: bytes ≥ 248 are drawn again.
pub(crate) fn push_base62(out: &mut String, n: usize, random: &dyn SecureRandom) -> Result<()> {
    push_base62_from(out, n, |buf| random.fill(buf))
}

/// Base62 characters from the bytes `fill` gives, unbiased: bytes ≥ 248 are skipped.
pub(crate) fn push_base62_from(
    out: &mut String,
    n: usize,
    mut fill: impl FnMut(&mut [u8]) -> Result<()>,
) -> Result<()> {
    let mut buf = [0u8; 64];
    let mut produced = 0;
    while produced < n {
        fill(&mut buf)?;
        for &byte in &buf {
            if produced == n {
                break;
            }
            if byte < 248 {
                out.push(BASE62[(byte % 62) as usize] as char);
                produced += 1;
            }
        }
    }
    Ok(())
}

/// CRC32 of `data`, as 6 base62 characters, most significant first.
fn checksum(data: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut v = crc32fast::hash(data) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(v % 62) as usize];
        v /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::OsRandom;
    use proptest::prelude::*;

    fn fresh(prefix: &str) -> String {
        let p = TokenPrefix::parse(prefix).unwrap();
        generate(&p, &OsRandom).unwrap().into_plaintext()
    }

    #[test]
    fn generated_tokens_parse_and_fit_the_format() {
        let t = fresh("billing");
        assert!(t.len() <= MAX_TOKEN_LEN);
        assert!(t.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'));
        let p = parse(&t).unwrap();
        assert_eq!(p.prefix(), "billing");
        assert_eq!(p.lookup_id().len(), ID_LEN);
        assert_eq!(p.secret().len(), SECRET_LEN);
    }

    #[test]
    fn longest_prefix_gives_exactly_64_characters() {
        assert_eq!(fresh("abcdefghijklmnop").len(), 64);
    }

    #[test]
    fn tokens_are_distinct() {
        let a = fresh("kms");
        let b = fresh("kms");
        assert_ne!(a, b);
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in [
            "",
            "_",
            "kms_",
            "kms",
            "KMS_0123456789012345678901234567890123456789012345",
            "k_0123456789012345678901234567890123456789012345",
            "kms_abc",
            "kms_ééééééééééééééééééééééééééééééé",
            "kms-0123456789012345678901234567890123456789012345",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let t = fresh("kms");
        let p = parse(&t).unwrap();
        assert!(!format!("{p:?}").contains(p.secret()));
    }

    #[test]
    fn prefix_rules() {
        assert!(TokenPrefix::parse("kms").is_ok());
        assert!(TokenPrefix::parse("b2").is_ok());
        for bad in ["", "a", "2ab", "Abc", "ab_c", "abcdefghijklmnopq"] {
            assert!(TokenPrefix::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,80}") {
            let _ = parse(&s);
        }

        #[test]
        fn any_single_character_change_is_detected(pos in 0usize..64, c in "[A-Za-z0-9]") {
            let t = fresh("kms");
            let pos = pos % t.len();
            let c = c.as_bytes()[0];
            prop_assume!(t.as_bytes()[pos] != c && t.as_bytes()[pos] != b'_');
            let mut bytes = t.into_bytes();
            bytes[pos] = c;
            let mutated = String::from_utf8(bytes).unwrap();
            prop_assert!(parse(&mutated).is_err());
        }
    }
}
