//! Personal data and its erasure by crypto-shredding (ADR 0017).
//!
//! Each person (a user, `usr_...`) whose personal data an audit event carries has a
//! **person key**: 32 random bytes, kept in the store ([`PersonKeyRecord`]) sealed under
//! the master key when the [`Kms`](crate::Kms) has one (context `person:<id>`). The
//! personal fields of such an event (the client address, the user agent, an email or name)
//! are sealed under that key with XChaCha20-Poly1305 and stored in that form
//! ([`AuditEvent::sealed_personal`](crate::AuditEvent)); the chain hash covers the sealed
//! form. Erasing the person deletes the key: the fields can no longer be opened, while every
//! event, and so the chain, stays exactly as it was.
//!
//! The sealing of person keys lives here, once: [`seal_person_key`], [`open_person_key`]
//! and, for a master-key rotation, [`reseal_person_key`] over the records a store lists
//! with [`PrivacyStore::list_person_keys`](crate::store::PrivacyStore).

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::random::SecureRandom;
use crate::sealing::{open_with, seal_with, MasterKey};

/// How a stored person key starts when it is sealed under the master key.
const SEALED_PREFIX: &str = "sealed:";
/// How a stored person key starts when the Kms has no master key (erasure still works:
/// deleting the record destroys the key).
const PLAIN_PREFIX: &str = "plain:";

/// A stored person key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonKeyRecord {
    /// Whose key: a user id.
    pub subject: String,
    /// The key as stored: `sealed:<base64>` (under the master key, context
    /// `person:<subject>`) or `plain:<base64>` (no master key configured).
    pub stored_key: String,
    /// When it was made.
    pub created_at: Timestamp,
}

/// A person key, opened. `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct PersonKey([u8; 32]);

impl std::fmt::Debug for PersonKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PersonKey(<redacted>)")
    }
}

impl PersonKey {
    /// A fresh key.
    pub(crate) fn generate(random: &dyn SecureRandom) -> Result<Self> {
        let mut key = [0u8; 32];
        random.fill(&mut key)?;
        Ok(PersonKey(key))
    }
}

/// Whether the personal fields of a listed audit event could be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PersonalStatus {
    /// The person was erased: the fields are gone for good.
    Erased,
    /// The person key is stored but cannot be opened here (the master key is missing or
    /// another one).
    Unavailable,
}

/// The personal fields of one audit event, as sealed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct PersonalFields {
    /// The client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ip: Option<String>,
    /// Personal facts merged into the event's `details` when opened (`user_agent`,
    /// `email`, `name`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub(crate) details: serde_json::Map<String, serde_json::Value>,
}

fn person_context(subject: &str) -> String {
    format!("person:{subject}")
}

fn event_context(subject: &str) -> String {
    format!("audit:{subject}")
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The stored form of `key` for `subject`: sealed under `master` when there is one.
pub(crate) fn seal_person_key_bytes(
    master: Option<&MasterKey>,
    subject: &str,
    key: &PersonKey,
    random: &dyn SecureRandom,
) -> Result<String> {
    Ok(match master {
        Some(m) => format!(
            "{SEALED_PREFIX}{}",
            b64().encode(m.seal(&person_context(subject), &key.0, random)?)
        ),
        None => format!("{PLAIN_PREFIX}{}", b64().encode(key.0)),
    })
}

/// Opens a stored person key with `master` (needed when it is sealed).
pub(crate) fn open_person_key(
    master: Option<&MasterKey>,
    record: &PersonKeyRecord,
) -> Result<PersonKey> {
    let corrupt = || Error::internal("a stored person key is malformed");
    let bytes = if let Some(sealed) = record.stored_key.strip_prefix(SEALED_PREFIX) {
        let master = master.ok_or_else(|| {
            Error::internal("a person key is sealed under a master key, and none is configured")
        })?;
        let sealed = b64().decode(sealed).map_err(|_| corrupt())?;
        master.open(&person_context(&record.subject), &sealed)?
    } else if let Some(plain) = record.stored_key.strip_prefix(PLAIN_PREFIX) {
        b64().decode(plain).map_err(|_| corrupt())?
    } else {
        return Err(corrupt());
    };
    let key: [u8; 32] = bytes.try_into().map_err(|_| corrupt())?;
    Ok(PersonKey(key))
}

/// A new person key for `subject`, stored sealed under `master` when there is one.
pub fn seal_person_key(
    master: Option<&MasterKey>,
    subject: &str,
    now: Timestamp,
    random: &dyn SecureRandom,
) -> Result<PersonKeyRecord> {
    new_person_key(master, subject, now, random).map(|(record, _)| record)
}

/// [`seal_person_key`], with the key itself (no need to open what was just sealed).
pub(crate) fn new_person_key(
    master: Option<&MasterKey>,
    subject: &str,
    now: Timestamp,
    random: &dyn SecureRandom,
) -> Result<(PersonKeyRecord, PersonKey)> {
    let key = PersonKey::generate(random)?;
    let record = PersonKeyRecord {
        subject: subject.to_owned(),
        stored_key: seal_person_key_bytes(master, subject, &key, random)?,
        created_at: now,
    };
    Ok((record, key))
}

/// The same person key sealed under `new` instead of `old` (a master-key rotation; a key
/// stored in plain because no master key was configured is sealed too). Fails, changing
/// nothing, when `old` cannot open it.
pub fn reseal_person_key(
    old: Option<&MasterKey>,
    new: &MasterKey,
    record: &PersonKeyRecord,
    random: &dyn SecureRandom,
) -> Result<PersonKeyRecord> {
    let key = open_person_key(old, record)?;
    Ok(PersonKeyRecord {
        subject: record.subject.clone(),
        stored_key: seal_person_key_bytes(Some(new), &record.subject, &key, random)?,
        created_at: record.created_at,
    })
}

/// Seals the personal fields of an event about `subject`.
pub(crate) fn seal_personal(
    key: &PersonKey,
    subject: &str,
    fields: &PersonalFields,
    random: &dyn SecureRandom,
) -> Result<String> {
    let json = serde_json::to_vec(fields)
        .map_err(|_| Error::internal("personal fields could not be encoded"))?;
    Ok(b64().encode(seal_with(&key.0, &event_context(subject), &json, random)?))
}

/// Opens the sealed personal fields of an event about `subject`.
pub(crate) fn open_personal(
    key: &PersonKey,
    subject: &str,
    sealed: &str,
) -> Result<PersonalFields> {
    let bytes = b64()
        .decode(sealed)
        .map_err(|_| Error::internal("sealed personal fields are malformed"))?;
    let json = open_with(&key.0, &event_context(subject), &bytes)?;
    serde_json::from_slice(&json)
        .map_err(|_| Error::internal("sealed personal fields are malformed"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::OsRandom;

    #[test]
    fn person_keys_seal_under_the_master_key_and_reseal_under_a_new_one() {
        let old = MasterKey::generate(&OsRandom).unwrap();
        let new = MasterKey::generate(&OsRandom).unwrap();
        let now = Timestamp::from_unix(1_700_000_000);
        let record = seal_person_key(Some(&old), "usr_a", now, &OsRandom).unwrap();
        assert!(record.stored_key.starts_with(SEALED_PREFIX));
        let key = open_person_key(Some(&old), &record).unwrap();
        assert!(open_person_key(Some(&new), &record).is_err());
        assert!(open_person_key(None, &record).is_err());
        // Bound to the subject: another person's record cannot stand in.
        let swapped = PersonKeyRecord {
            subject: "usr_b".into(),
            ..record.clone()
        };
        assert!(open_person_key(Some(&old), &swapped).is_err());

        let resealed = reseal_person_key(Some(&old), &new, &record, &OsRandom).unwrap();
        assert_ne!(resealed.stored_key, record.stored_key);
        assert!(open_person_key(Some(&old), &resealed).is_err());
        assert_eq!(open_person_key(Some(&new), &resealed).unwrap().0, key.0);

        let plain = seal_person_key(None, "usr_c", now, &OsRandom).unwrap();
        assert!(plain.stored_key.starts_with(PLAIN_PREFIX));
        let k = open_person_key(None, &plain).unwrap();
        let sealed = reseal_person_key(None, &new, &plain, &OsRandom).unwrap();
        assert_eq!(open_person_key(Some(&new), &sealed).unwrap().0, k.0);
    }

    #[test]
    fn personal_fields_open_only_with_their_key_and_subject() {
        let key = PersonKey::generate(&OsRandom).unwrap();
        let mut fields = PersonalFields {
            ip: Some("192.0.2.7".into()),
            ..PersonalFields::default()
        };
        fields
            .details
            .insert("email".into(), "ada@example.com".into());
        let sealed = seal_personal(&key, "usr_a", &fields, &OsRandom).unwrap();
        assert!(!sealed.contains("ada") && !sealed.contains("192.0.2.7"));
        assert_eq!(open_personal(&key, "usr_a", &sealed).unwrap(), fields);
        assert!(open_personal(&key, "usr_b", &sealed).is_err());
        let other = PersonKey::generate(&OsRandom).unwrap();
        assert!(open_personal(&other, "usr_a", &sealed).is_err());
        assert!(open_personal(&key, "usr_a", "not base64!").is_err());
        assert!(!format!("{key:?}").contains(&b64().encode(key.0)));
    }
}
