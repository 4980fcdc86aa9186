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
//! | `header_read_timeout` | `--header-read-timeout` | `KMS_HEADER_READ_TIMEOUT` | `10s` |
//! | `max_connections` | `--max-connections` | `KMS_MAX_CONNECTIONS` | `10000` (0: no limit) |
//! | `max_connections_per_ip` | `--max-connections-per-ip` | `KMS_MAX_CONNECTIONS_PER_IP` | `256` (0: no limit) |
//! | `cache_ttl` | `--cache-ttl` | `KMS_CACHE_TTL` | `60s` |
//! | `cache_capacity` | `--cache-capacity` | `KMS_CACHE_CAPACITY` | `100000` |
//! | `master_key_file` | `--master-key-file` | `KMS_MASTER_KEY_FILE` | the database path + `.key` |
//! | `lockout_threshold` | `--lockout-threshold` | `KMS_LOCKOUT_THRESHOLD` | `10` (0 disables lockouts) |
//! | `lockout_window` | `--lockout-window` | `KMS_LOCKOUT_WINDOW` | `60s` |
//! | `lockout_duration` | `--lockout-duration` | `KMS_LOCKOUT_DURATION` | `300s` |
//! | `insecure_fast_hash` | `--insecure-fast-hash` | `KMS_INSECURE_FAST_HASH` | `false` |
//! | — | — | `KMS_MASTER_KEY` | none (base64 of 32 bytes; environment only) |
//! | `jwt_issuer` | `--jwt-issuer` | `KMS_JWT_ISSUER` | `kms` |
//! | `jwt_audience` | `--jwt-audience` | `KMS_JWT_AUDIENCE` | `kms` (when the client asks for none) |
//! | `access_token_ttl` | `--access-token-ttl` | `KMS_ACCESS_TOKEN_TTL` | `900s` |
//! | `refresh_token_ttl` | `--refresh-token-ttl` | `KMS_REFRESH_TOKEN_TTL` | `30d` |
//! | `refresh_overlap` | `--refresh-overlap` | `KMS_REFRESH_OVERLAP` | `0` |
//! | `jwt_leeway` | `--jwt-leeway` | `KMS_JWT_LEEWAY` | `30s` |
//! | `key_rotation_interval` | `--key-rotation-interval` | `KMS_KEY_ROTATION_INTERVAL` | `0` (off) |
//! | `tls_cert` | `--tls-cert` | `KMS_TLS_CERT` | none (plain HTTP) |
//! | `tls_key` | `--tls-key` | `KMS_TLS_KEY` | none |
//! | `deny_networks` | `--deny-network` | `KMS_DENY_NETWORKS` | none (CIDRs, comma separated) |
//! | `trusted_proxies` | `--trusted-proxy` | `KMS_TRUSTED_PROXIES` | none (CIDRs, comma separated) |
//! | `rate_limit_per_ip` | `--rate-limit-per-ip` | `KMS_RATE_LIMIT_PER_IP` | `100` per second (0 disables) |
//! | `rate_limit_burst` | `--rate-limit-burst` | `KMS_RATE_LIMIT_BURST` | twice the rate |
//! | `audit_retention` | `--audit-retention` | `KMS_AUDIT_RETENTION` | `0` (keep every event) |
//! | `expired_token_retention` | `--expired-token-retention` | `KMS_EXPIRED_TOKEN_RETENTION` | `0` (keep expired tokens) |
//! | `alert_webhook` | `--alert-webhook` | `KMS_ALERT_WEBHOOK` | none |
//! | `alert_webhook_secret` | `--alert-webhook-secret` | `KMS_ALERT_WEBHOOK_SECRET` | none (required with a webhook) |
//!
//! Durations take `ms`, `s`, `m`, `h` or `d` (a bare number is seconds); lists take commas
//! (or repeated flags, or a TOML array of strings).
//!
//! Lockouts: after `lockout_threshold` failed authentications or verifications from one
//! client address (or against one token id) within `lockout_window`, that source is
//! refused (`429 rate_limited`) for `lockout_duration`.
//!
//! The master key seals the signing keys of access tokens. It comes from `KMS_MASTER_KEY`
//! (base64 of 32 bytes; never a flag, so it stays out of process listings) or from the
//! master key file; setting both is refused. With neither, `kms init` and `kms serve` create
//! the file beside the database (mode 0600) and warn. A key that cannot open the database's
//! signing keys stops the start and changes nothing. Keep the key out of backups of the
//! database: the two together open every signing key.
//!
//! Access tokens: `jwt_issuer` and `jwt_audience` set `iss` and the default `aud`;
//! `access_token_ttl` their lifetime; `refresh_token_ttl` that of a refresh family, counted
//! from the API-key exchange (refreshing never extends it); `refresh_overlap` how long a
//! just-exchanged refresh token may be exchanged again (retrying clients, who get the same
//! successor refresh token) before it counts as reuse; `jwt_leeway` the clock skew allowed on
//! `exp` and `nbf`. With `key_rotation_interval` set, `kms serve` rotates the signing key
//! once the active one is that old; retired keys and expired revocations are swept every
//! minute either way.
//!
//! Network: requests from `deny_networks` are refused with `403 forbidden` before anything
//! else. The client address (audit events, lockouts, rate limits, deny-list) is the peer's
//! address, unless the peer is in `trusted_proxies`: then it is the right-most address of
//! `X-Forwarded-For` that is not itself a trusted proxy. `rate_limit_per_ip` (with
//! `rate_limit_burst`) limits management calls (`/v1`, except `/v1/verify` and the OAuth
//! endpoints under `/v1/auth`) per client address; over it: `429 rate_limited` with
//! `Retry-After`.
//!
//! Connections: a client must send a request's headers within `header_read_timeout` of
//! the server starting to wait for them, on a new connection and on a kept-alive one after
//! each answer (so it is also the idle limit of keep-alive); a TLS handshake has as long
//! again. Otherwise the connection is closed. At most `max_connections` connections are
//! open at once, and `max_connections_per_ip` from one peer address (IPv6 per /64;
//! `trusted_proxies` are exempt from this one); a connection over a limit is closed at
//! once, before anything is read from it (see [`crate::http::connections`]).
//!
//! Retention: with `audit_retention` (e.g. `365d`), `kms serve` deletes older audit events,
//! keeping the chain verifiable from the first kept event; with `expired_token_retention`,
//! tokens that expired longer ago than that are deleted. Each sweep is itself audited.
//!
//! TLS: `tls_cert` and `tls_key` (PEM files) together make `kms serve` speak HTTPS only,
//! with `Strict-Transport-Security` on every response.
//!
//! Alerts: with `alert_webhook`, security events (lockouts, refresh-token reuse, a broken
//! audit chain) are POSTed there as JSON, signed in `X-KMS-Signature: sha256=<hex>` with
//! HMAC-SHA256 under `alert_webhook_secret` (see [`crate::ops::alerts`]).
//!
//! `insecure_fast_hash` makes argon2id deliberately cheap. It exists for test suites only;
//! never set it where real secrets are issued.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::http::connections::ConnectionLimits;

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
const HEADER_READ_TIMEOUT: Setting = Setting {
    key: "header_read_timeout",
    flag: "--header-read-timeout",
    env: "KMS_HEADER_READ_TIMEOUT",
    what: "header read timeout",
};
const MAX_CONNECTIONS: Setting = Setting {
    key: "max_connections",
    flag: "--max-connections",
    env: "KMS_MAX_CONNECTIONS",
    what: "connection limit",
};
const MAX_CONNECTIONS_PER_IP: Setting = Setting {
    key: "max_connections_per_ip",
    flag: "--max-connections-per-ip",
    env: "KMS_MAX_CONNECTIONS_PER_IP",
    what: "connection limit per client address",
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
const MASTER_KEY: Setting = Setting {
    key: "master_key",
    flag: "",
    env: "KMS_MASTER_KEY",
    what: "master key",
};
const JWT_ISSUER: Setting = Setting {
    key: "jwt_issuer",
    flag: "--jwt-issuer",
    env: "KMS_JWT_ISSUER",
    what: "access-token issuer",
};
const JWT_AUDIENCE: Setting = Setting {
    key: "jwt_audience",
    flag: "--jwt-audience",
    env: "KMS_JWT_AUDIENCE",
    what: "access-token audience",
};
const ACCESS_TOKEN_TTL: Setting = Setting {
    key: "access_token_ttl",
    flag: "--access-token-ttl",
    env: "KMS_ACCESS_TOKEN_TTL",
    what: "access-token lifetime",
};
const REFRESH_TOKEN_TTL: Setting = Setting {
    key: "refresh_token_ttl",
    flag: "--refresh-token-ttl",
    env: "KMS_REFRESH_TOKEN_TTL",
    what: "refresh-token lifetime",
};
const REFRESH_OVERLAP: Setting = Setting {
    key: "refresh_overlap",
    flag: "--refresh-overlap",
    env: "KMS_REFRESH_OVERLAP",
    what: "refresh overlap",
};
const JWT_LEEWAY: Setting = Setting {
    key: "jwt_leeway",
    flag: "--jwt-leeway",
    env: "KMS_JWT_LEEWAY",
    what: "access-token leeway",
};
const KEY_ROTATION_INTERVAL: Setting = Setting {
    key: "key_rotation_interval",
    flag: "--key-rotation-interval",
    env: "KMS_KEY_ROTATION_INTERVAL",
    what: "key rotation interval",
};
const TLS_CERT: Setting = Setting {
    key: "tls_cert",
    flag: "--tls-cert",
    env: "KMS_TLS_CERT",
    what: "TLS certificate file",
};
const TLS_KEY: Setting = Setting {
    key: "tls_key",
    flag: "--tls-key",
    env: "KMS_TLS_KEY",
    what: "TLS private key file",
};
const DENY_NETWORKS: Setting = Setting {
    key: "deny_networks",
    flag: "--deny-network",
    env: "KMS_DENY_NETWORKS",
    what: "denied networks",
};
const TRUSTED_PROXIES: Setting = Setting {
    key: "trusted_proxies",
    flag: "--trusted-proxy",
    env: "KMS_TRUSTED_PROXIES",
    what: "trusted proxies",
};
const RATE_LIMIT_PER_IP: Setting = Setting {
    key: "rate_limit_per_ip",
    flag: "--rate-limit-per-ip",
    env: "KMS_RATE_LIMIT_PER_IP",
    what: "rate limit per client address",
};
const RATE_LIMIT_BURST: Setting = Setting {
    key: "rate_limit_burst",
    flag: "--rate-limit-burst",
    env: "KMS_RATE_LIMIT_BURST",
    what: "rate limit burst",
};
const AUDIT_RETENTION: Setting = Setting {
    key: "audit_retention",
    flag: "--audit-retention",
    env: "KMS_AUDIT_RETENTION",
    what: "audit retention",
};
const EXPIRED_TOKEN_RETENTION: Setting = Setting {
    key: "expired_token_retention",
    flag: "--expired-token-retention",
    env: "KMS_EXPIRED_TOKEN_RETENTION",
    what: "expired token retention",
};
const ALERT_WEBHOOK: Setting = Setting {
    key: "alert_webhook",
    flag: "--alert-webhook",
    env: "KMS_ALERT_WEBHOOK",
    what: "alert webhook URL",
};
const ALERT_WEBHOOK_SECRET: Setting = Setting {
    key: "alert_webhook_secret",
    flag: "--alert-webhook-secret",
    env: "KMS_ALERT_WEBHOOK_SECRET",
    what: "alert webhook secret",
};

const ALL: [Setting; 34] = [
    DB,
    LISTEN,
    LOG_FORMAT,
    LOG_LEVEL,
    BODY_LIMIT,
    REQUEST_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    HEADER_READ_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_IP,
    CACHE_TTL,
    CACHE_CAPACITY,
    MASTER_KEY_FILE,
    LOCKOUT_THRESHOLD,
    LOCKOUT_WINDOW,
    LOCKOUT_DURATION,
    INSECURE_FAST_HASH,
    JWT_ISSUER,
    JWT_AUDIENCE,
    ACCESS_TOKEN_TTL,
    REFRESH_TOKEN_TTL,
    REFRESH_OVERLAP,
    JWT_LEEWAY,
    KEY_ROTATION_INTERVAL,
    TLS_CERT,
    TLS_KEY,
    DENY_NETWORKS,
    TRUSTED_PROXIES,
    RATE_LIMIT_PER_IP,
    RATE_LIMIT_BURST,
    AUDIT_RETENTION,
    EXPIRED_TOKEN_RETENTION,
    ALERT_WEBHOOK,
    ALERT_WEBHOOK_SECRET,
];

/// Settings read from the environment only: secrets that must stay out of process listings
/// and configuration files.
const ENV_ONLY: [Setting; 1] = [MASTER_KEY];

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
        for setting in ALL.iter().chain(&ENV_ONLY) {
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
        ALL.iter().chain(&ENV_ONLY).map(|s| s.env)
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

/// Where the master key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// `KMS_MASTER_KEY`, already checked to be base64 of 32 bytes.
    Env(Secret),
    /// A file holding the base64 key, created (mode 0600) by `init` and `serve` when
    /// missing.
    File(PathBuf),
}

/// A secret setting: compared and cloned, but never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
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
    /// Where the master key comes from.
    pub master_key: MasterKeySource,
    /// Issuer, audience, lifetimes and leeway of access tokens.
    pub jwt: kms_core::JwtSettings,
}

impl Config {
    /// Resolves the common settings.
    pub fn resolve(sources: &Sources) -> Result<Self, ConfigError> {
        let db = sources.get(DB, parse_path, PathBuf::from("./kms.db"))?;
        Ok(Config {
            master_key: resolve_master_key(sources, &db)?,
            db,
            log_format: sources.get(LOG_FORMAT, LogFormat::parse, LogFormat::Text)?,
            log_level: sources.get(LOG_LEVEL, parse_log_level, "info".to_owned())?,
            insecure_fast_hash: sources.get(INSECURE_FAST_HASH, parse_bool, false)?,
            cache_ttl: sources.get(CACHE_TTL, parse_duration, Duration::from_secs(60))?,
            cache_capacity: sources.get(CACHE_CAPACITY, parse_u64, 100_000)?,
            lockout: resolve_lockout(sources)?,
            jwt: resolve_jwt(sources)?,
        })
    }
}

fn resolve_master_key(sources: &Sources, db: &Path) -> Result<MasterKeySource, ConfigError> {
    let file = sources.raw(MASTER_KEY_FILE);
    if let Some((_, source)) = sources.raw(MASTER_KEY) {
        if let Some((_, file_source)) = file {
            return Err(ConfigError(format!(
                "the master key is given twice, by {source} and by {file_source}; set only one"
            )));
        }
        // The value is never echoed: the parser's message names only the problem.
        let key = sources.get(
            MASTER_KEY,
            |v| {
                kms_core::MasterKey::from_base64(v)
                    .map(|_| Secret(v.to_owned()))
                    .map_err(|_| "expected the base64 encoding of exactly 32 bytes".to_owned())
            },
            Secret(String::new()),
        )?;
        return Ok(MasterKeySource::Env(key));
    }
    let mut default_key = db.to_path_buf().into_os_string();
    default_key.push(".key");
    Ok(MasterKeySource::File(sources.get(
        MASTER_KEY_FILE,
        parse_path,
        PathBuf::from(default_key),
    )?))
}

fn resolve_jwt(sources: &Sources) -> Result<kms_core::JwtSettings, ConfigError> {
    let d = kms_core::JwtSettings::default();
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let from_secs = |s: i64| Duration::from_secs(s.unsigned_abs());
    Ok(kms_core::JwtSettings {
        issuer: sources.get(JWT_ISSUER, parse_claim, d.issuer.clone())?,
        default_audience: sources.get(JWT_AUDIENCE, parse_claim, d.default_audience.clone())?,
        access_ttl_secs: secs(sources.get(
            ACCESS_TOKEN_TTL,
            parse_whole_seconds,
            from_secs(d.access_ttl_secs),
        )?),
        refresh_ttl_secs: secs(sources.get(
            REFRESH_TOKEN_TTL,
            parse_whole_seconds,
            from_secs(d.refresh_ttl_secs),
        )?),
        refresh_overlap_secs: secs(sources.get(
            REFRESH_OVERLAP,
            parse_duration_or_zero,
            from_secs(d.refresh_overlap_secs),
        )?),
        leeway_secs: sources
            .get(
                JWT_LEEWAY,
                parse_duration_or_zero,
                Duration::from_secs(d.leeway_secs),
            )?
            .as_secs(),
    })
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

/// The server-wide rate limit per client address on management calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Requests per second, sustained.
    pub per_second: u32,
    /// Requests allowed at once before the rate applies.
    pub burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            per_second: 100,
            burst: 200,
        }
    }
}

/// Where security alerts are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSettings {
    /// The webhook URL (`http` or `https`).
    pub url: String,
    /// The HMAC-SHA256 key of `X-KMS-Signature`.
    pub secret: Secret,
}

/// The certificate chain and key `kms serve` answers HTTPS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
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
    /// Longest a client may take to send a request's headers (and, again, to complete a
    /// TLS handshake); also the idle limit of kept-alive connections.
    pub header_read_timeout: Duration,
    /// Connections open at once, and from one client address; a connection over either is
    /// closed unread.
    pub connection_limits: ConnectionLimits,
    /// Rotate the signing key once the active one is this old; `None`: never on a schedule.
    pub key_rotation_interval: Option<Duration>,
    /// Serve HTTPS with these files; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Networks whose requests are refused.
    pub deny_networks: Vec<ipnet::IpNet>,
    /// Networks of proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The rate limit per client address on management calls; `None`: unlimited.
    pub rate_limit: Option<RateLimitSettings>,
    /// Where security alerts go; `None`: logs and metrics only.
    pub alerts: Option<AlertSettings>,
    /// Delete audit events older than this; `None`: keep them all.
    pub audit_retention: Option<Duration>,
    /// Delete tokens that expired longer ago than this; `None`: keep them.
    pub expired_token_retention: Option<Duration>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            connection_limits: ConnectionLimits::default(),
            key_rotation_interval: None,
            tls: None,
            deny_networks: Vec::new(),
            trusted_proxies: Vec::new(),
            rate_limit: Some(RateLimitSettings::default()),
            alerts: None,
            audit_retention: None,
            expired_token_retention: None,
        }
    }
}

impl ServeConfig {
    /// Resolves the settings of the server.
    pub fn resolve(sources: &Sources) -> Result<Self, ConfigError> {
        let d = ServeConfig::default();
        let trusted_proxies = sources.get(TRUSTED_PROXIES, parse_networks, Vec::new())?;
        Ok(ServeConfig {
            listen: sources.get(LISTEN, parse_socket_addr, d.listen)?,
            body_limit: sources.get(BODY_LIMIT, parse_size, d.body_limit)?,
            request_timeout: sources.get(REQUEST_TIMEOUT, parse_duration, d.request_timeout)?,
            shutdown_timeout: sources.get(SHUTDOWN_TIMEOUT, parse_duration, d.shutdown_timeout)?,
            header_read_timeout: sources.get(
                HEADER_READ_TIMEOUT,
                parse_duration,
                d.header_read_timeout,
            )?,
            connection_limits: resolve_connection_limits(sources, &trusted_proxies)?,
            key_rotation_interval: optional_interval(sources, KEY_ROTATION_INTERVAL)?,
            tls: resolve_tls(sources)?,
            deny_networks: sources.get(DENY_NETWORKS, parse_networks, Vec::new())?,
            trusted_proxies,
            rate_limit: resolve_rate_limit(sources)?,
            alerts: resolve_alerts(sources)?,
            audit_retention: optional_interval(sources, AUDIT_RETENTION)?,
            expired_token_retention: optional_interval(sources, EXPIRED_TOKEN_RETENTION)?,
        })
    }
}

/// A whole-seconds interval where `0` (or no value) means never.
fn optional_interval(sources: &Sources, setting: Setting) -> Result<Option<Duration>, ConfigError> {
    Ok(
        Some(sources.get(setting, parse_whole_seconds_or_zero, Duration::ZERO)?)
            .filter(|d| !d.is_zero()),
    )
}

fn resolve_tls(sources: &Sources) -> Result<Option<TlsFiles>, ConfigError> {
    let cert = sources.get(TLS_CERT, parse_path, PathBuf::new())?;
    let key = sources.get(TLS_KEY, parse_path, PathBuf::new())?;
    match (cert.as_os_str().is_empty(), key.as_os_str().is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some(TlsFiles { cert, key })),
        _ => Err(ConfigError(
            "TLS needs both --tls-cert and --tls-key (or KMS_TLS_CERT and KMS_TLS_KEY); \
             only one is set"
                .to_owned(),
        )),
    }
}

fn resolve_connection_limits(
    sources: &Sources,
    trusted_proxies: &[ipnet::IpNet],
) -> Result<ConnectionLimits, ConfigError> {
    let d = ConnectionLimits::default();
    Ok(ConnectionLimits {
        max_connections: sources.get(MAX_CONNECTIONS, parse_count, d.max_connections)?,
        max_connections_per_ip: sources.get(
            MAX_CONNECTIONS_PER_IP,
            parse_count,
            d.max_connections_per_ip,
        )?,
        exempt: trusted_proxies.to_vec(),
    })
}

fn resolve_rate_limit(sources: &Sources) -> Result<Option<RateLimitSettings>, ConfigError> {
    let d = RateLimitSettings::default();
    let per_second = sources.get(RATE_LIMIT_PER_IP, parse_u32, d.per_second)?;
    if per_second == 0 {
        return Ok(None);
    }
    let burst = sources.get(RATE_LIMIT_BURST, parse_u32, per_second.saturating_mul(2))?;
    if burst == 0 {
        return Err(ConfigError(
            "invalid rate limit burst: must be at least 1 (set rate_limit_per_ip to 0 to \
             disable the limit)"
                .to_owned(),
        ));
    }
    Ok(Some(RateLimitSettings { per_second, burst }))
}

fn resolve_alerts(sources: &Sources) -> Result<Option<AlertSettings>, ConfigError> {
    let url = sources.get(ALERT_WEBHOOK, parse_webhook_url, String::new())?;
    let secret = sources.get(
        ALERT_WEBHOOK_SECRET,
        |v| {
            if v.len() < 16 {
                Err("must be at least 16 characters".to_owned())
            } else {
                Ok(v.to_owned())
            }
        },
        String::new(),
    )?;
    match (url.is_empty(), secret.is_empty()) {
        (true, _) => Ok(None),
        (false, false) => Ok(Some(AlertSettings {
            url,
            secret: Secret(secret),
        })),
        (false, true) => Err(ConfigError(
            "an alert webhook needs a signing secret: set --alert-webhook-secret or \
             KMS_ALERT_WEBHOOK_SECRET"
                .to_owned(),
        )),
    }
}

fn parse_webhook_url(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !s.contains(char::is_whitespace) => {
            Ok(s.to_owned())
        }
        _ => Err(format!(
            "expected an http:// or https:// URL, got {}",
            crate::http::error::printable(s, 100)
        )),
    }
}

/// A comma-separated list of CIDRs (`10.0.0.0/8, 2001:db8::/32`); a bare address is a
/// network of one.
fn parse_networks(s: &str) -> Result<Vec<ipnet::IpNet>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    format!(
                        "expected CIDR networks such as 10.0.0.0/8 or 2001:db8::/32, got {}",
                        crate::http::error::printable(p, 100)
                    )
                })
        })
        .collect()
}

/// A value for a JWT claim: printable, at most 256 characters.
fn parse_claim(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
        Err("must be 1 to 256 printable characters".to_owned())
    } else {
        Ok(s.to_owned())
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
    // tracing-subscriber 0.3's directive parser slices at byte offsets and panics on some
    // multi-byte characters (found by the config_parse fuzz target); filters name Rust
    // targets and levels, which are ASCII, so anything else is refused first.
    if let Some(c) = s.chars().find(|c| !c.is_ascii() || c.is_ascii_control()) {
        return Err(format!(
            "expected ASCII text such as `info` or `kms_server=debug,info`, found {:?}",
            c
        ));
    }
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

fn parse_count(s: &str) -> Result<usize, String> {
    parse_u32(s).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

fn parse_u32(s: &str) -> Result<u32, String> {
    s.replace('_', "")
        .parse::<u32>()
        .map_err(|_| format!("expected a whole number up to {}, got {s:?}", u32::MAX))
}

/// `30`, `30s`, `500ms`, `5m`, `1h`, `30d`; a bare number is seconds. Zero is refused.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration_or_zero(s)?;
    if d.is_zero() {
        return Err(format!("must be longer than zero, got {s:?}"));
    }
    Ok(d)
}

/// Like [`parse_duration`], but a whole number of seconds (at least one).
fn parse_whole_seconds(s: &str) -> Result<Duration, String> {
    let d = parse_whole_seconds_or_zero(s)?;
    if d.is_zero() {
        return Err(format!("must be at least one second, got {s:?}"));
    }
    Ok(d)
}

/// A duration in whole seconds; `0` allowed.
fn parse_whole_seconds_or_zero(s: &str) -> Result<Duration, String> {
    let d = parse_duration_or_zero(s)?;
    if d.subsec_nanos() != 0 {
        return Err(format!("must be whole seconds, got {s:?}"));
    }
    Ok(d)
}

/// Like [`parse_duration`], but `0` is allowed.
fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration such as 30s, 500ms, 5m, 1h or 30d, got {s:?}");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    Ok(match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => return Err(bad()),
    })
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
        assert_eq!(
            c.master_key,
            MasterKeySource::File(PathBuf::from("./kms.db.key"))
        );
        assert_eq!(c.jwt, kms_core::JwtSettings::default());
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
    fn log_levels_with_non_ascii_text_are_refused_without_a_panic() {
        for bad in [
            "info,_server\u{fffd}\u{fffd}=d\u{145}ug",
            "d\u{e9}bug",
            "info\n",
        ] {
            let err = parse_log_level(bad).unwrap_err();
            assert!(err.contains("ASCII"), "{err}");
        }
        assert_eq!(
            parse_log_level("kms_server=debug,info").unwrap(),
            "kms_server=debug,info"
        );
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
    fn the_master_key_comes_from_one_source_and_is_never_echoed() {
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let s = sources(&[], &[("KMS_MASTER_KEY", key)], None).unwrap();
        let c = Config::resolve(&s).unwrap();
        assert_eq!(c.master_key, MasterKeySource::Env(Secret::new(key)));
        assert!(!format!("{c:?}").contains(key), "Debug hides the key");

        let s = sources(
            &[("master_key_file", "/k")],
            &[("KMS_MASTER_KEY", key)],
            None,
        )
        .unwrap();
        let err = Config::resolve(&s).unwrap_err().to_string();
        assert!(err.contains("given twice"), "{err}");

        let s = sources(&[], &[("KMS_MASTER_KEY", "c2hvcnQ=")], None).unwrap();
        let err = Config::resolve(&s).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid master key in KMS_MASTER_KEY"),
            "{err}"
        );
        assert!(!err.contains("c2hvcnQ"), "{err}");

        let err = sources(&[], &[], Some("master_key = \"x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown setting `master_key`"), "{err}");
    }

    #[test]
    fn access_token_settings_are_configurable() {
        let s = sources(
            &[
                ("jwt_issuer", "https://kms.example"),
                ("access_token_ttl", "5m"),
            ],
            &[
                ("KMS_REFRESH_TOKEN_TTL", "7d"),
                ("KMS_REFRESH_OVERLAP", "0"),
            ],
            Some("jwt_audience = \"billing\"\njwt_leeway = 0\n"),
        )
        .unwrap();
        let jwt = Config::resolve(&s).unwrap().jwt;
        assert_eq!(jwt.issuer, "https://kms.example");
        assert_eq!(jwt.default_audience, "billing");
        assert_eq!(jwt.access_ttl_secs, 300);
        assert_eq!(jwt.refresh_ttl_secs, 7 * 86_400);
        assert_eq!(jwt.refresh_overlap_secs, 0);
        assert_eq!(jwt.leeway_secs, 0);
        for (key, value) in [
            ("access_token_ttl", "0"),
            ("access_token_ttl", "1500ms"),
            ("jwt_issuer", ""),
        ] {
            let s = sources(&[(key, value)], &[], None).unwrap();
            assert!(Config::resolve(&s).is_err(), "{key} = {value:?}");
        }
    }

    #[test]
    fn network_lists_take_commas_flags_and_toml_arrays() {
        let s = sources(
            &[("deny_networks", "10.0.0.0/8,2001:db8::/32")],
            &[("KMS_TRUSTED_PROXIES", "192.0.2.1")],
            None,
        )
        .unwrap();
        let c = ServeConfig::resolve(&s).unwrap();
        assert_eq!(c.deny_networks.len(), 2);
        assert_eq!(
            c.trusted_proxies,
            vec!["192.0.2.1/32".parse::<ipnet::IpNet>().unwrap()]
        );

        let s = sources(
            &[],
            &[],
            Some("deny_networks = [\"10.1.2.3/8\", \"::1\"]\n"),
        )
        .unwrap();
        let c = ServeConfig::resolve(&s).unwrap();
        assert_eq!(
            c.deny_networks[0].to_string(),
            "10.0.0.0/8",
            "host bits dropped"
        );
        assert_eq!(c.deny_networks[1].to_string(), "::1/128");

        let s = sources(&[], &[("KMS_DENY_NETWORKS", "10.0.0.0/33")], None).unwrap();
        let err = ServeConfig::resolve(&s).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid denied networks in KMS_DENY_NETWORKS"),
            "{err}"
        );
    }

    #[test]
    fn serve_settings_check_their_companions() {
        let s = sources(&[("tls_cert", "c.pem")], &[], None).unwrap();
        assert!(ServeConfig::resolve(&s)
            .unwrap_err()
            .to_string()
            .contains("--tls-key"));
        let s = sources(&[("tls_cert", "c.pem"), ("tls_key", "k.pem")], &[], None).unwrap();
        assert!(ServeConfig::resolve(&s).unwrap().tls.is_some());

        let s = sources(&[("rate_limit_per_ip", "0")], &[], None).unwrap();
        assert_eq!(ServeConfig::resolve(&s).unwrap().rate_limit, None);
        let s = sources(&[("rate_limit_per_ip", "7")], &[], None).unwrap();
        assert_eq!(
            ServeConfig::resolve(&s).unwrap().rate_limit,
            Some(RateLimitSettings {
                per_second: 7,
                burst: 14
            })
        );

        let s = sources(&[("alert_webhook", "https://hooks.example/kms")], &[], None).unwrap();
        let err = ServeConfig::resolve(&s).unwrap_err().to_string();
        assert!(err.contains("KMS_ALERT_WEBHOOK_SECRET"), "{err}");
        let s = sources(
            &[("alert_webhook", "ftp://x")],
            &[("KMS_ALERT_WEBHOOK_SECRET", "0123456789abcdef")],
            None,
        )
        .unwrap();
        assert!(ServeConfig::resolve(&s).is_err());
        let s = sources(
            &[("alert_webhook", "https://hooks.example/kms")],
            &[("KMS_ALERT_WEBHOOK_SECRET", "0123456789abcdef")],
            None,
        )
        .unwrap();
        let alerts = ServeConfig::resolve(&s).unwrap().alerts.unwrap();
        assert_eq!(alerts.secret.expose(), "0123456789abcdef");
        assert!(!format!("{alerts:?}").contains("0123456789abcdef"));

        let s = sources(
            &[("key_rotation_interval", "30d"), ("audit_retention", "0")],
            &[],
            None,
        )
        .unwrap();
        let c = ServeConfig::resolve(&s).unwrap();
        assert_eq!(
            c.key_rotation_interval,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(c.audit_retention, None);
    }

    #[test]
    fn connection_settings_are_configurable_and_proxies_are_exempt() {
        let d = ServeConfig::resolve(&sources(&[], &[], None).unwrap()).unwrap();
        assert_eq!(d.header_read_timeout, Duration::from_secs(10));
        assert_eq!(d.connection_limits.max_connections, 10_000);
        assert_eq!(d.connection_limits.max_connections_per_ip, 256);

        let s = sources(
            &[("header_read_timeout", "1500ms")],
            &[
                ("KMS_MAX_CONNECTIONS", "0"),
                ("KMS_TRUSTED_PROXIES", "10.0.0.0/8"),
            ],
            Some("max_connections_per_ip = 8\n"),
        )
        .unwrap();
        let c = ServeConfig::resolve(&s).unwrap();
        assert_eq!(c.header_read_timeout, Duration::from_millis(1500));
        assert_eq!(c.connection_limits.max_connections, 0);
        assert_eq!(c.connection_limits.max_connections_per_ip, 8);
        assert_eq!(c.connection_limits.exempt, c.trusted_proxies);

        for (key, value) in [
            ("header_read_timeout", "0"),
            ("max_connections", "-1"),
            ("max_connections_per_ip", "lots"),
        ] {
            let s = sources(&[(key, value)], &[], None).unwrap();
            assert!(ServeConfig::resolve(&s).is_err(), "{key} = {value:?}");
        }
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
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86_400)));
        assert!(parse_duration("0").is_err());
        assert_eq!(parse_duration_or_zero("0"), Ok(Duration::ZERO));
    }
}
