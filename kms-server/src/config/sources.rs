//! Where values come from, and which wins: a flag, else its environment variable, else the
//! configuration file, else the default. [`Sources`] holds what each source set;
//! [`Sources::get`] picks the winner and names it in errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::settings::{file_settings, Setting, ALL, CONFIG_ENV};
use super::ConfigError;

/// Where values come from: flags given, the environment, and the file.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    flags: BTreeMap<&'static str, String>,
    env: BTreeMap<String, String>,
    file: Option<(PathBuf, BTreeMap<String, String>)>,
}

impl Sources {
    /// Collects the sources: `flags` maps file keys (`listen`) to flag values, `env` looks up
    /// an environment variable, and `config_flag` is the `--config` path, if given.
    pub fn load(
        flags: BTreeMap<&'static str, String>,
        env: impl Fn(&str) -> Option<String>,
        config_flag: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let config_path = match config_flag {
            Some(p) => Some(p.to_path_buf()),
            None => env(CONFIG_ENV).filter(|p| !p.is_empty()).map(PathBuf::from),
        };
        let text = match &config_path {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!(
                    "cannot read the configuration file {}: {e}",
                    path.display()
                ))
            })?),
            None => None,
        };
        Sources::parse(flags, env, config_path.as_deref().zip(text.as_deref()))
    }

    /// Collects the sources from a configuration file already read: `file` is its path (named
    /// in error messages) and its TOML text. Touches no file; [`Sources::load`] reads the file
    /// and calls this.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use std::path::Path;
    /// use kms_server::config::{ServeConfig, Sources};
    ///
    /// let text = "listen = \"127.0.0.1:9000\"\nrequest_timeout = \"5s\"";
    /// let sources = Sources::parse(BTreeMap::new(), |_| None, Some((Path::new("kms.toml"), text)))?;
    /// let serve = ServeConfig::resolve(&sources)?;
    /// assert_eq!(serve.listen.port(), 9000);
    ///
    /// let bad = Sources::parse(BTreeMap::new(), |_| None, Some((Path::new("kms.toml"), "colour = 1")));
    /// assert!(bad.unwrap_err().to_string().contains("unknown setting `colour`"));
    /// # Ok::<(), kms_server::config::ConfigError>(())
    /// ```
    pub fn parse(
        flags: BTreeMap<&'static str, String>,
        env: impl Fn(&str) -> Option<String>,
        file: Option<(&Path, &str)>,
    ) -> Result<Self, ConfigError> {
        let mut env_values = BTreeMap::new();
        for setting in &ALL {
            if let Some(v) = env(setting.env) {
                env_values.insert(setting.env.to_owned(), v);
            }
        }
        let file = match file {
            Some((path, text)) => Some((path.to_path_buf(), parse_file(path, text)?)),
            None => None,
        };
        Ok(Sources {
            flags,
            env: env_values,
            file,
        })
    }

    /// The environment variables that configure the server (the file key of each setting is
    /// its name without `KMS_`, in lower case), the master key's included.
    pub fn env_names() -> impl Iterator<Item = &'static str> {
        ALL.iter().map(|s| s.env)
    }

    /// The value of `setting` and the name of its source, if any source sets it.
    pub(super) fn raw(&self, setting: Setting) -> Option<(String, String)> {
        if setting.flag.is_some() {
            if let Some(v) = self.flags.get(setting.key) {
                return Some((v.clone(), setting.flag_name()));
            }
        }
        if let Some(v) = self.env.get(setting.env) {
            return Some((v.clone(), setting.env.to_owned()));
        }
        let (path, values) = self.file.as_ref().filter(|_| setting.in_file)?;
        values.get(setting.key).map(|v| {
            (
                v.clone(),
                format!("`{}` of {}", setting.key, path.display()),
            )
        })
    }

    /// Replaces the value of `setting` in the source it comes from (an opened sealed
    /// value); a setting no source sets is left unset.
    pub(super) fn replace_winner(&mut self, setting: Setting, value: String) {
        if setting.flag.is_some() {
            if let Some(v) = self.flags.get_mut(setting.key) {
                *v = value;
                return;
            }
        }
        if let Some(v) = self.env.get_mut(setting.env) {
            *v = value;
            return;
        }
        if setting.in_file {
            if let Some((_, values)) = self.file.as_mut() {
                if let Some(v) = values.get_mut(setting.key) {
                    *v = value;
                }
            }
        }
    }

    /// The value of `setting` parsed by `parse`, or `default` when no source sets it; a
    /// value that does not parse is an error naming the setting and its source.
    pub(super) fn get<T>(
        &self,
        setting: Setting,
        parse: impl Fn(&str) -> Result<T, String>,
        default: T,
    ) -> Result<T, ConfigError> {
        match self.raw(setting) {
            None => Ok(default),
            Some((value, source)) => parse(value.trim()).map_err(|problem| {
                ConfigError(format!("invalid {} in {source}: {problem}", setting.what))
            }),
        }
    }
}

fn parse_file(path: &Path, text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigError(format!(
            "the configuration file {} is not valid TOML: {}",
            path.display(),
            e.message()
        ))
    })?;
    let mut out = BTreeMap::new();
    for (key, value) in table {
        if !file_settings().any(|s| s.key == key) {
            let known: Vec<&str> = file_settings().map(|s| s.key).collect();
            return Err(ConfigError(format!(
                "unknown setting `{key}` in {}; known settings: {}",
                path.display(),
                known.join(", ")
            )));
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => items
                .iter()
                .filter_map(toml::Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
            _ => {
                return Err(ConfigError(format!(
                    "invalid `{key}` in {}: must be a string, number, boolean or list of strings",
                    path.display()
                )))
            }
        };
        out.insert(key, text);
    }
    Ok(out)
}
