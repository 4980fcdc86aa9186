//! Sealed configuration secrets: a secret setting may hold `sealed:v1:<base64>` instead
//! of its plaintext, made by `kms config seal --setting KEY` (XChaCha20-Poly1305 under the
//! master key, bound to the setting's key so a sealed value opens only where it was meant
//! to go). Sealed values are opened once, at start, before the settings are resolved; a
//! value that does not open stops the start naming the setting and its source, never the
//! value.
//!
//! The master key comes from its usual source (`KMS_MASTER_KEY`, the key file, or the
//! master-key command). A sealed `db` must name that source explicitly, since the default
//! key file lives beside a SQLite database and a sealed value can only be a URL.

use base64::Engine;
use kms_core::MasterKey;

use super::settings::{Setting, ALERT_WEBHOOK_SECRET, DB, DB_REPLICA, REDIS};
use super::{ConfigError, Sources};

/// What a sealed value starts with.
pub const SEALED_PREFIX: &str = "sealed:v1:";

/// The settings that may be given sealed.
pub(crate) const SEALABLE: [Setting; 4] = [ALERT_WEBHOOK_SECRET, DB, DB_REPLICA, REDIS];

/// A value of a file other commands read that may be given sealed: the `client_secret` of
/// the JSON given to `kms idp create|update`.
pub const IDP_CLIENT_SECRET: &str = "idp_client_secret";

fn context(key: &str) -> String {
    format!("config:{key}")
}

/// Seals `value` for the setting `key` (which must be one of [`SEALABLE`]).
pub fn seal(master: &MasterKey, key: &str, value: &str) -> Result<String, String> {
    if !SEALABLE.iter().any(|s| s.key == key) && key != IDP_CLIENT_SECRET {
        let mut names: Vec<&str> = SEALABLE.iter().map(|s| s.key).collect();
        names.push(IDP_CLIENT_SECRET);
        return Err(format!(
            "{key:?} cannot be given sealed; the settings that can: {}",
            names.join(", ")
        ));
    }
    let sealed = master
        .seal(&context(key), value.as_bytes(), &kms_core::OsRandom)
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "{SEALED_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(sealed)
    ))
}

/// Whether `value` is sealed (`sealed:v1:...`).
pub fn is_sealed(value: &str) -> bool {
    value.trim().starts_with(SEALED_PREFIX)
}

/// Opens a sealed value of the setting (or value kind) `key`.
pub fn open(master: &MasterKey, key: &str, value: &str) -> Result<String, String> {
    let body = value.trim().strip_prefix(SEALED_PREFIX).unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| "the sealed value is not base64".to_owned())?;
    let plain = master.open(&context(key), &bytes).map_err(|_| {
        "the sealed value does not open with this master key (another key, another setting, \
         or altered)"
            .to_owned()
    })?;
    String::from_utf8(plain).map_err(|_| "the sealed value is not text".to_owned())
}

/// Whether any setting's winning value is sealed.
pub fn any_sealed(sources: &Sources) -> bool {
    super::settings::ALL.iter().any(|s| {
        sources
            .raw(*s)
            .is_some_and(|(v, _)| v.trim().starts_with(SEALED_PREFIX))
    })
}

/// Opens every sealed value in `sources`, in place, with the key `load_key` gives (called
/// only when something is sealed). A sealed value of a setting that cannot be sealed, or
/// one that does not open, is an error.
pub fn unseal(
    sources: &mut Sources,
    load_key: impl FnOnce(&Sources) -> Result<MasterKey, ConfigError>,
) -> Result<(), ConfigError> {
    if !any_sealed(sources) {
        return Ok(());
    }
    for setting in super::settings::ALL {
        if let Some((value, source)) = sources.raw(setting) {
            if value.trim().starts_with(SEALED_PREFIX)
                && !SEALABLE.iter().any(|s| s.key == setting.key)
            {
                return Err(ConfigError(format!(
                    "{source} holds a sealed value, but {} cannot be given sealed",
                    setting.what
                )));
            }
        }
    }
    let master = load_key(sources)?;
    for setting in SEALABLE {
        let Some((value, source)) = sources.raw(setting) else {
            continue;
        };
        if !value.trim().starts_with(SEALED_PREFIX) {
            continue;
        }
        let plain = open(&master, setting.key, &value).map_err(|problem| {
            ConfigError(format!("invalid {} in {source}: {problem}", setting.what))
        })?;
        sources.replace_winner(setting, plain);
    }
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;

    fn sources(env: &[(&str, &str)], file: Option<&str>) -> Sources {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Sources::parse(
            BTreeMap::new(),
            |name| env.get(name).cloned(),
            file.map(|t| (Path::new("kms.toml"), t)),
        )
        .unwrap()
    }

    #[test]
    fn sealed_values_open_for_their_setting_only() {
        let key = MasterKey::generate(&kms_core::OsRandom).unwrap();
        let sealed = seal(&key, "alert_webhook_secret", "0123456789abcdef-secret").unwrap();
        assert!(!sealed.contains("0123456789abcdef"));
        let text =
            format!("alert_webhook_secret = \"{sealed}\"\nalert_webhook = \"http://127.0.0.1:1/\"");
        let mut s = sources(&[], Some(&text));
        let k = key.clone();
        unseal(&mut s, move |_| Ok(k)).unwrap();
        assert_eq!(
            s.raw(ALERT_WEBHOOK_SECRET).unwrap().0,
            "0123456789abcdef-secret"
        );
        // The same blob given for another setting does not open.
        let mut s = sources(&[("KMS_REDIS", sealed.as_str())], None);
        let k = key.clone();
        let err = unseal(&mut s, move |_| Ok(k)).unwrap_err().to_string();
        assert!(
            err.contains("KMS_REDIS") && err.contains("does not open"),
            "{err}"
        );
        assert!(!err.contains(&sealed));
        // Another key does not open it.
        let other = MasterKey::generate(&kms_core::OsRandom).unwrap();
        let mut s = sources(&[("KMS_ALERT_WEBHOOK_SECRET", sealed.as_str())], None);
        assert!(unseal(&mut s, move |_| Ok(other)).is_err());
        // A setting that cannot be sealed says so; nothing sealed loads no key.
        let mut s = sources(&[("KMS_LISTEN", sealed.as_str())], None);
        let err = unseal(&mut s, |_| panic!("no key needed"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot be given sealed"), "{err}");
        let mut s = sources(&[("KMS_LISTEN", "127.0.0.1:1")], None);
        unseal(&mut s, |_| panic!("no key needed")).unwrap();
        assert!(seal(&key, "listen", "x").is_err());
    }
}
