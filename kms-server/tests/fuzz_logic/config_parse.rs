//! Configuration parsing: a TOML file and environment variables through `Sources::parse`,
//! `Config::resolve` and `ServeConfig::resolve`.
//!
//! Input: the bytes before the first NUL are the file's text; the rest is environment
//! variables, one `NAME=value` per line. Invariants beyond "never panics":
//! - resolving is deterministic (the same input gives the same settings or the same error);
//! - the master key (`KMS_MASTER_KEY`) is never shown by an error or by `Debug`;
//! - the file and the environment parse a value the same way: moving every file setting to
//!   its `KMS_*` variable gives the same settings, or an error for the same setting.

use std::collections::BTreeMap;
use std::path::Path;

use kms_server::config::{Config, ServeConfig, Sources};

type Resolved = Result<(String, String), String>;

fn resolve(env: &BTreeMap<String, String>, file: Option<&str>) -> Resolved {
    let sources = Sources::parse(
        BTreeMap::new(),
        |name| env.get(name).cloned(),
        file.map(|text| (Path::new("fuzz.toml"), text)),
    )
    .map_err(|e| e.to_string())?;
    let common = Config::resolve(&sources).map_err(|e| e.to_string())?;
    let serve = ServeConfig::resolve(&sources).map_err(|e| e.to_string())?;
    Ok((format!("{common:?}"), format!("{serve:?}")))
}

/// The file's settings as `KMS_*` variables, and whether every key is a setting's exact
/// file key (the file's keys are case-sensitive; an unknown key such as `Listen` would map
/// to a known variable), if the text is a flat table of strings, numbers, booleans and
/// lists of strings (what the file accepts).
fn file_as_env(text: &str) -> Option<(BTreeMap<String, String>, bool)> {
    let table: toml::Table = text.parse().ok()?;
    let keys: Vec<String> = Sources::env_names()
        .map(|n| n.trim_start_matches("KMS_").to_ascii_lowercase())
        .collect();
    let all_known = table.keys().all(|k| keys.contains(k));
    let mut env = BTreeMap::new();
    for (key, value) in table {
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()?
                .join(","),
            _ => return None,
        };
        env.insert(format!("KMS_{}", key.to_ascii_uppercase()), text);
    }
    Some((env, all_known))
}

/// The name of the setting an error is about: the text after "invalid " up to " in ".
fn setting_named(error: &str) -> Option<&str> {
    let rest = error.strip_prefix("invalid ")?;
    rest.find(" in ").map(|end| &rest[..end])
}

pub(crate) fn run(data: &[u8]) {
    let (file, env_bytes) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(file).into_owned();
    let env: BTreeMap<String, String> = String::from_utf8_lossy(env_bytes)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();

    let resolved = resolve(&env, Some(&text));
    assert_eq!(resolved, resolve(&env, Some(&text)), "not deterministic");

    // The master key is never shown: text equal to it may appear in the output only when
    // it appears there with another value of the same length in its place (it is then part
    // of the fixed wording, such as `KMS_MASTER_KEY`), or when the input repeats it.
    if let Some(key) = env.get("KMS_MASTER_KEY") {
        let key = key.trim();
        let elsewhere = text.contains(key)
            || env
                .iter()
                .any(|(k, v)| k.contains(key) || (k != "KMS_MASTER_KEY" && v.contains(key)));
        if key.len() >= 4 && !elsewhere {
            let shown = |r: &Resolved| match r {
                Ok((common, serve)) => format!("{common}{serve}"),
                Err(e) => e.clone(),
            };
            let mut other = env.clone();
            other.insert("KMS_MASTER_KEY".to_owned(), "\u{7f}".repeat(key.len()));
            let with_other = shown(&resolve(&other, Some(&text)));
            let out = shown(&resolved);
            assert!(
                !out.contains(key) || with_other.contains(key),
                "the master key is shown: {out}"
            );
        }
    }

    // Moving the file's settings into the environment changes nothing but error wording.
    // Only when the environment sets nothing itself (it would win over the file) and the
    // file has no env-only setting.
    if env.is_empty() {
        if let Some((moved, all_known)) = file_as_env(&text) {
            if moved.contains_key("KMS_MASTER_KEY") {
                return;
            }
            let via_env = resolve(&moved, None);
            match (&resolved, &via_env) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "file and environment disagree"),
                (Err(a), Err(b)) if all_known => assert_eq!(
                    setting_named(a),
                    setting_named(b),
                    "file and environment fail on different settings: {a} / {b}"
                ),
                (Err(_), Err(_)) => {}
                (Ok(_), Err(e)) => panic!("the file is accepted, the environment is not: {e}"),
                (Err(e), Ok(_)) => assert!(
                    !all_known,
                    "the environment is accepted, the file is not: {e}"
                ),
            }
        }
    }
}
