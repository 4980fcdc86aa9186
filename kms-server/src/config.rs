//! Configuration: each setting comes from its command-line flag, else its `KMS_*`
//! environment variable, else the TOML file given by `--config` (or `KMS_CONFIG`), else its
//! default. A bad value stops the start with a message naming where it came from, such as
//! `invalid listen address in KMS_LISTEN: ...`.
//!
//! | file key | flag | environment | default |
//! |---|---|---|---|
//! | `db` | `--db` | `KMS_DB` | `./kms.db` |
//! | `listen` | `--listen` | `KMS_LISTEN` | `127.0.0.1:8080` |
//! | `log_format` | `--log-format` | `KMS_LOG_FORMAT` | `text` (or `json`) |
//! | `log_level` | `--log-level` | `KMS_LOG_LEVEL` | `info` (a tracing filter) |
//! | `body_limit` | `--body-limit` | `KMS_BODY_LIMIT` | `1MiB` |
//! | `request_timeout` | `--request-timeout` | `KMS_REQUEST_TIMEOUT` | `30s` |
//! | `shutdown_timeout` | `--shutdown-timeout` | `KMS_SHUTDOWN_TIMEOUT` | `30s` |
//! | `cache_ttl` | `--cache-ttl` | `KMS_CACHE_TTL` | `60s` |
//! | `cache_capacity` | `--cache-capacity` | `KMS_CACHE_CAPACITY` | `100000` |
//! | `master_key_file` | `--master-key-file` | `KMS_MASTER_KEY_FILE` | the database path + `.key` |
//! | `lockout_threshold` | `--lockout-threshold` | `KMS_LOCKOUT_THRESHOLD` | `10` (0 disables lockouts) |
//! | `lockout_window` | `--lockout-window` | `KMS_LOCKOUT_WINDOW` | `60s` |
//! | `lockout_duration` | `--lockout-duration` | `KMS_LOCKOUT_DURATION` | `300s` |
//! | `insecure_fast_hash` | `--insecure-fast-hash` | `KMS_INSECURE_FAST_HASH` | `false` |
//!
//! Lockouts: after `lockout_threshold` failed authentications or verifications from one
//! client address (or against one token id) within `lockout_window`, that source is
//! refused (`429 rate_limited`) for `lockout_duration`.
//!
//! The master key file holds the base64 key that seals the signing keys of access tokens;
//! `kms init` and `kms serve` create it (mode 0600) when it does not exist. Keep it out of
//! backups of the database: the two together open every signing key.
//!
//! `insecure_fast_hash` makes argon2id deliberately cheap. It exists for test suites only;
//! never set it where real secrets are issued.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration problem; the message names the setting and where its value came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// One setting: its names in each source.
#[derive(Debug, Clone, Copy)]
struct Setting {
    key: &'static str,
    flag: &'static str,
    env: &'static str,
    what: &'static str,
}

const DB: Setting = Setting {
    key: "db",
    flag: "--db",
    env: "KMS_DB",
    what: "database path",
};
const LISTEN: Setting = Setting {
    key: "listen",
    flag: "--listen",
    env: "KMS_LISTEN",
    what: "listen address",
};
const LOG_FORMAT: Setting = Setting {
    key: "log_format",
    flag: "--log-format",
    env: "KMS_LOG_FORMAT",
    what: "log format",
};
const LOG_LEVEL: Setting = Setting {
    key: "log_level",
    flag: "--log-level",
    env: "KMS_LOG_LEVEL",
    what: "log level",
};
const BODY_LIMIT: Setting = Setting {
    key: "body_limit",
    flag: "--body-limit",
    env: "KMS_BODY_LIMIT",
    what: "body limit",
};
const REQUEST_TIMEOUT: Setting = Setting {
    key: "request_timeout",
    flag: "--request-timeout",
    env: "KMS_REQUEST_TIMEOUT",
    what: "request timeout",
};
const SHUTDOWN_TIMEOUT: Setting = Setting {
    key: "shutdown_timeout",
    flag: "--shutdown-timeout",
    env: "KMS_SHUTDOWN_TIMEOUT",
    what: "shutdown timeout",
};
const CACHE_TTL: Setting = Setting {
    key: "cache_ttl",
    flag: "--cache-ttl",
    env: "KMS_CACHE_TTL",
    what: "cache ttl",
};
const CACHE_CAPACITY: Setting = Setting {
    key: "cache_capacity",
    flag: "--cache-capacity",
    env: "KMS_CACHE_CAPACITY",
    what: "cache capacity",
};
const MASTER_KEY_FILE: Setting = Setting {
    key: "master_key_file",
    flag: "--master-key-file",
    env: "KMS_MASTER_KEY_FILE",
    what: "master key file",
};
const LOCKOUT_THRESHOLD: Setting = Setting {
    key: "lockout_threshold",
    flag: "--lockout-threshold",
    env: "KMS_LOCKOUT_THRESHOLD",
    what: "lockout threshold",
};
const LOCKOUT_WINDOW: Setting = Setting {
    key: "lockout_window",
    flag: "--lockout-window",
    env: "KMS_LOCKOUT_WINDOW",
    what: "lockout window",
};
const LOCKOUT_DURATION: Setting = Setting {
    key: "lockout_duration",
    flag: "--lockout-duration",
    env: "KMS_LOCKOUT_DURATION",
    what: "lockout duration",
};
const INSECURE_FAST_HASH: Setting = Setting {
    key: "insecure_fast_hash",
    flag: "--insecure-fast-hash",
    env: "KMS_INSECURE_FAST_HASH",
    what: "insecure fast hash switch",
};

const ALL: [Setting; 14] = [
    DB,
    LISTEN,
    LOG_FORMAT,
    LOG_LEVEL,
    BODY_LIMIT,
    REQUEST_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    CACHE_TTL,
    CACHE_CAPACITY,
    MASTER_KEY_FILE,
    LOCKOUT_THRESHOLD,
    LOCKOUT_WINDOW,
    LOCKOUT_DURATION,
    INSECURE_FAST_HASH,
];

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "KMS_CONFIG";

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
        let mut env_values = BTreeMap::new();
        for setting in ALL {
            if let Some(v) = env(setting.env) {
                env_values.insert(setting.env.to_owned(), v);
            }
        }
        let config_path = match config_flag {
            Some(p) => Some(p.to_path_buf()),
            None => env(CONFIG_ENV).filter(|p| !p.is_empty()).map(PathBuf::from),
        };
        let file = match config_path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ConfigError(format!(
                        "cannot read the configuration file {}: {e}",
                        path.display()
                    ))
                })?;
                Some((path.clone(), parse_file(&path, &text)?))
            }
            None => None,
        };
        Ok(Sources {
            flags,
            env: env_values,
            file,
        })
    }

    /// The value of `setting` and the name of its source, if any source sets it.
    fn raw(&self, setting: Setting) -> Option<(String, String)> {
        if let Some(v) = self.flags.get(setting.key) {
            return Some((v.clone(), setting.flag.to_owned()));
        }
        if let Some(v) = self.env.get(setting.env) {
            return Some((v.clone(), setting.env.to_owned()));
        }
        let (path, values) = self.file.as_ref()?;
        values.get(setting.key).map(|v| {
            (
                v.clone(),
                format!("`{}` of {}", setting.key, path.display()),
            )
        })
    }

    fn get<T>(
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
        if !ALL.iter().any(|s| s.key == key) {
            let known: Vec<&str> = ALL.iter().map(|s| s.key).collect();
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
            _ => {
                return Err(ConfigError(format!(
                    "invalid `{key}` in {}: must be a string, number or boolean",
                    path.display()
                )))
            }
        };
        out.insert(key, text);
    }
    Ok(out)
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" | "pretty" | "plain" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("expected `text` or `json`, got {s:?}")),
        }
    }
}

/// The settings every command uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The SQLite database file.
    pub db: PathBuf,
    /// Log format.
    pub log_format: LogFormat,
    /// A tracing filter (`info`, `kms_server=debug,info`).
    pub log_level: String,
    /// Cheap argon2id parameters, for tests only.
    pub insecure_fast_hash: bool,
    /// How long a verified key stays cached.
    pub cache_ttl: Duration,
    /// Most verified keys cached (0 disables the cache).
    pub cache_capacity: u64,
    /// When repeated failures lock a source out.
    pub lockout: kms_core::LockoutPolicy,
    /// The file holding the master key.
    pub master_key_file: PathBuf,
}

impl Config {
    /// Resolves the common settings.
    pub fn resolve(sources: &Sources) -> Result<Self, ConfigError> {
        let db = sources.get(DB, parse_path, PathBuf::from("./kms.db"))?;
        let mut default_key = db.clone().into_os_string();
        default_key.push(".key");
        Ok(Config {
            master_key_file: sources.get(
                MASTER_KEY_FILE,
                parse_path,
                PathBuf::from(default_key),
            )?,
            db,
            log_format: sources.get(LOG_FORMAT, LogFormat::parse, LogFormat::Text)?,
            log_level: sources.get(LOG_LEVEL, parse_log_level, "info".to_owned())?,
            insecure_fast_hash: sources.get(INSECURE_FAST_HASH, parse_bool, false)?,
            cache_ttl: sources.get(CACHE_TTL, parse_duration, Duration::from_secs(60))?,
            cache_capacity: sources.get(CACHE_CAPACITY, parse_u64, 100_000)?,
            lockout: resolve_lockout(sources)?,
        })
    }
}

fn resolve_lockout(sources: &Sources) -> Result<kms_core::LockoutPolicy, ConfigError> {
    let d = kms_core::LockoutPolicy::default();
    let secs = |d: Duration| i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX);
    Ok(kms_core::LockoutPolicy {
        threshold: sources.get(LOCKOUT_THRESHOLD, parse_u32, d.threshold)?,
        window_secs: sources
            .get(
                LOCKOUT_WINDOW,
                parse_duration,
                Duration::from_secs(d.window_secs.unsigned_abs()),
            )
            .map(secs)?,
        lockout_secs: sources
            .get(
                LOCKOUT_DURATION,
                parse_duration,
                Duration::from_secs(d.lockout_secs.unsigned_abs()),
            )
            .map(secs)?,
    })
}

/// The settings of `kms serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Longest a request may run.
    pub request_timeout: Duration,
    /// Longest in-flight requests may take to finish after a shutdown signal.
    pub shutdown_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl ServeConfig {
    /// Resolves the settings of the server.
    pub fn resolve(sources: &Sources) -> Result<Self, ConfigError> {
        let d = ServeConfig::default();
        Ok(ServeConfig {
            listen: sources.get(LISTEN, parse_socket_addr, d.listen)?,
            body_limit: sources.get(BODY_LIMIT, parse_size, d.body_limit)?,
            request_timeout: sources.get(REQUEST_TIMEOUT, parse_duration, d.request_timeout)?,
            shutdown_timeout: sources.get(SHUTDOWN_TIMEOUT, parse_duration, d.shutdown_timeout)?,
        })
    }
}

fn parse_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(PathBuf::from(s))
    }
}

fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("expected IP:PORT such as 127.0.0.1:8080 or [::1]:8080, got {s:?}"))
}

fn parse_log_level(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("{e} (got {s:?}; try `info` or `kms_server=debug,info`)"))
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("expected true or false, got {s:?}")),
    }
}

fn parse_u64(s: &str) -> Result<u64, String> {
    s.replace('_', "")
        .parse::<u64>()
        .map_err(|_| format!("expected a whole number, got {s:?}"))
}

fn parse_u32(s: &str) -> Result<u32, String> {
    s.replace('_', "")
        .parse::<u32>()
        .map_err(|_| format!("expected a whole number up to {}, got {s:?}", u32::MAX))
}

/// `30`, `30s`, `500ms`, `5m`, `1h`; a bare number is seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration such as 30s, 500ms, 5m or 1h, got {s:?}");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(format!("must be longer than zero, got {s:?}"));
    }
    Ok(d)
}

/// `1048576`, `512KiB`, `1MiB`, `1MB`, `64kb`; a bare number is bytes.
fn parse_size(s: &str) -> Result<usize, String> {
    let bad = || format!("expected a size such as 1048576, 512KiB or 1MiB, got {s:?}");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: usize = number.parse().map_err(|_| bad())?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(factor).ok_or_else(bad)?;
    if bytes == 0 {
        return Err(format!("must be larger than zero, got {s:?}"));
    }
    Ok(bytes)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use super::*;

    fn sources(
        flags: &[(&'static str, &str)],
        env: &[(&str, &str)],
        file: Option<&str>,
    ) -> Result<Sources, ConfigError> {
        let dir = tempfile::tempdir().map_err(|e| ConfigError(e.to_string()))?;
        let path = dir.path().join("kms.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).map_err(|e| ConfigError(e.to_string()))?;
        }
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Sources::load(
            flags.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            |k| env.get(k).cloned(),
            file.map(|_| path.as_path()),
        )
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = sources(&[], &[], None).unwrap();
        let c = Config::resolve(&s).unwrap();
        assert_eq!(c.db, PathBuf::from("./kms.db"));
        assert_eq!(c.master_key_file, PathBuf::from("./kms.db.key"));
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(!c.insecure_fast_hash);
        assert_eq!(c.lockout, kms_core::LockoutPolicy::default());
        assert_eq!(ServeConfig::resolve(&s).unwrap(), ServeConfig::default());
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let file = "listen = \"127.0.0.1:3\"\nbody_limit = 10\nrequest_timeout = \"5s\"\nlog_format = \"json\"\n";
        let s = sources(
            &[("listen", "127.0.0.1:1")],
            &[("KMS_LISTEN", "127.0.0.1:2"), ("KMS_BODY_LIMIT", "20")],
            Some(file),
        )
        .unwrap();
        let serve = ServeConfig::resolve(&s).unwrap();
        assert_eq!(serve.listen.port(), 1);
        assert_eq!(serve.body_limit, 20);
        assert_eq!(serve.request_timeout, Duration::from_secs(5));
        assert_eq!(Config::resolve(&s).unwrap().log_format, LogFormat::Json);
    }

    #[test]
    fn bad_values_name_their_source() {
        let s = sources(&[], &[("KMS_LISTEN", "not-an-address")], None).unwrap();
        let err = ServeConfig::resolve(&s).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid listen address in KMS_LISTEN:"),
            "{err}"
        );

        let s = sources(&[("log_format", "xml")], &[], None).unwrap();
        let err = Config::resolve(&s).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid log format in --log-format:"),
            "{err}"
        );

        let s = sources(&[], &[], Some("body_limit = \"lots\"\n")).unwrap();
        let err = ServeConfig::resolve(&s).unwrap_err().to_string();
        assert!(
            err.contains("invalid body limit in `body_limit` of"),
            "{err}"
        );
    }

    #[test]
    fn unknown_file_keys_and_bad_toml_are_refused() {
        let err = sources(&[], &[], Some("lisen = \"x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown setting `lisen`"), "{err}");
        let err = sources(&[], &[], Some("listen = \n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid TOML"), "{err}");
    }

    #[test]
    fn lockouts_are_configurable() {
        let s = sources(
            &[("lockout_threshold", "0")],
            &[("KMS_LOCKOUT_WINDOW", "2m"), ("KMS_LOCKOUT_DURATION", "10")],
            None,
        )
        .unwrap();
        let c = Config::resolve(&s).unwrap();
        assert_eq!(
            (
                c.lockout.threshold,
                c.lockout.window_secs,
                c.lockout.lockout_secs
            ),
            (0, 120, 10)
        );
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_size("512kib"), Ok(512 * 1024));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1GB").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }
}
