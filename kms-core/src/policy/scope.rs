//! Scopes (`billing.invoices.read`) and role names: validated newtypes.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// Most segments a scope may have.
pub(crate) const MAX_SEGMENTS: usize = 8;
/// Longest segment.
pub(crate) const MAX_SEGMENT_LEN: usize = 32;
/// The scope that covers every other scope.
pub const ADMIN: &str = "admin";

/// A permission scope: 1–8 segments of `[a-z0-9_-]{1,32}` joined by `.`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Scope(String);

const SCOPE_RULE: &str =
    "must be 1 to 8 segments of [a-z0-9_-] (1 to 32 characters each) joined by '.'";

impl Scope {
    /// Validates `s` as a scope.
    pub fn parse(s: &str) -> Result<Self> {
        if is_valid_scope(s) {
            Ok(Scope(s.to_owned()))
        } else {
            Err(Error::invalid("scope", SCOPE_RULE))
        }
    }

    /// A scope from a literal known to be valid (checked by the default-hierarchy test).
    pub(crate) fn known(s: &str) -> Self {
        Scope(s.to_owned())
    }

    /// Validates `s`, naming `field` in the error.
    pub fn parse_field(s: &str, field: &str) -> Result<Self> {
        Scope::parse(s)
            .map_err(|_| Error::invalid(field, format!("{SCOPE_RULE}; got {}", shown(s))))
    }

    /// The scope as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `self` covers `other` through the hierarchy: equal, or an ancestor.
    pub fn covers(&self, other: &str) -> bool {
        other == self.0
            || (other.len() > self.0.len()
                && other.starts_with(self.0.as_str())
                && other.as_bytes()[self.0.len()] == b'.')
    }

    /// The strict ancestors of the scope, nearest first (`a.b.c` → `a.b`, `a`).
    pub fn ancestors(s: &str) -> impl Iterator<Item = &str> {
        let mut end = s.len();
        std::iter::from_fn(move || {
            let cut = s[..end].rfind('.')?;
            end = cut;
            Some(&s[..cut])
        })
    }
}

/// Whether `s` is a well-formed scope.
pub(crate) fn is_valid_scope(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_SEGMENTS * (MAX_SEGMENT_LEN + 1) {
        return false;
    }
    let mut segments = 0;
    for seg in s.split('.') {
        segments += 1;
        if segments > MAX_SEGMENTS
            || seg.is_empty()
            || seg.len() > MAX_SEGMENT_LEN
            || !seg
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
        {
            return false;
        }
    }
    true
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Scope {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Scope::parse(&s)
            .map_err(|_| serde::de::Error::custom(format!("invalid scope: {SCOPE_RULE}")))
    }
}

/// A role name: 1–64 of `[a-z0-9_.-]`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RoleName(String);

const ROLE_RULE: &str =
    "must be 1 to 64 characters of [a-z0-9_.-], starting with a letter or digit";

impl RoleName {
    /// Validates `s` as a role name, naming `field` in the error.
    pub fn parse_field(s: &str, field: &str) -> Result<Self> {
        let b = s.as_bytes();
        let ok = (1..=64).contains(&b.len())
            && b[0].is_ascii_alphanumeric()
            && !b[0].is_ascii_uppercase()
            && b.iter().all(|&c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
            });
        if ok {
            Ok(RoleName(s.to_owned()))
        } else {
            Err(Error::invalid(
                field,
                format!("{ROLE_RULE}; got {}", shown(s)),
            ))
        }
    }

    /// Validates `s` as a role name.
    pub fn parse(s: &str) -> Result<Self> {
        RoleName::parse_field(s, "name")
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RoleName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RoleName::parse(&s)
            .map_err(|_| serde::de::Error::custom(format!("invalid role name: {ROLE_RULE}")))
    }
}

/// Quotes user input for an error message, cut short so messages stay small. Input that
/// looks like a secret (an API key or refresh token pasted into the wrong field) is never
/// echoed.
pub(crate) fn shown(s: &str) -> String {
    if looks_like_secret(s) {
        return "(a value that looks like a secret, not shown)".to_owned();
    }
    let cut: String = s.chars().take(64).collect();
    if cut.len() < s.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

/// Whether `s` holds something shaped like an API key or refresh token: an underscore
/// followed by 20 or more letters and digits. By shape, not by checksum, so a key cut
/// short or mistyped is recognised too.
pub(crate) fn looks_like_secret(s: &str) -> bool {
    let mut run: Option<usize> = None;
    for c in s.chars() {
        run = match (c, run) {
            ('_', _) => Some(0),
            (c, Some(n)) if c.is_ascii_alphanumeric() => Some(n + 1),
            _ => None,
        };
        if run.is_some_and(|n| n >= 20) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_rules() {
        for good in [
            "a",
            "billing.invoices.read",
            "a-b_c.d",
            "a.b.c.d.e.f.g.h",
            &"x".repeat(32),
        ] {
            assert!(Scope::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "A",
            "a b",
            "a.b.c.d.e.f.g.h.i",
            &"x".repeat(33),
            "é",
            "*",
            "a;drop table",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hierarchy_cover() {
        let s = Scope::parse("billing").unwrap();
        assert!(s.covers("billing"));
        assert!(s.covers("billing.read"));
        assert!(!s.covers("billingx"));
        assert!(!s.covers("bill"));
        let anc: Vec<_> = Scope::ancestors("a.b.c").collect();
        assert_eq!(anc, ["a.b", "a"]);
    }

    #[test]
    fn secret_shaped_values_are_never_shown() {
        let key = "kms_0123456789abcdefghijABCDEFGHIJ0123456789abcdefXYZ";
        for s in [
            key,
            &key[..40],
            &format!("x{key}"),
            "kmsrt_0123456789abcdefghij0123456789",
        ] {
            assert!(!shown(s).contains("0123456789abcdefghij"), "{s}");
        }
        assert_eq!(shown("billing.read"), "\"billing.read\"");
        assert_eq!(shown("tok_abc"), "\"tok_abc\"");
    }

    #[test]
    fn role_name_rules() {
        assert!(RoleName::parse("support").is_ok());
        assert!(RoleName::parse("team.a-1").is_ok());
        for bad in ["", "-a", "A", "a b", &"a".repeat(65)] {
            assert!(RoleName::parse(bad).is_err(), "{bad}");
        }
    }
}
