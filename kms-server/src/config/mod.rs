//! Configuration: each setting comes from its command-line flag, else its `KMS_*`
//! environment variable, else the TOML file given by `--config` (or `KMS_CONFIG`), else its
//! default. A bad value stops the start with a message naming where it came from, such as
//! `invalid listen address in KMS_LISTEN: ...`.
//!
//! The settings, generated from the one table in `config/settings.rs` that also gives the
//! flags their `--help` text:
//!
#![doc = include_str!("settings.md")]
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
//! the file beside the database (mode 0600) and warn — except on a PostgreSQL database
//! (`--db postgres://...`), where every node needs the same key, so one must be given and
//! start-up stops saying so otherwise. A key that cannot open the database's
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
//! audit chain) are POSTed there as JSON, signed in `X-KMS-Webhook-Signature: sha256=<hex>` with
//! HMAC-SHA256 under `alert_webhook_secret` (see [`crate::ops::alerts`]).
//!
//! `insecure_fast_hash` makes argon2id deliberately cheap. It exists for test suites only;
//! never set it where real secrets are issued.

mod parse;
mod report;
pub mod sealed;
mod serve;
pub(crate) mod settings;
mod sources;

use std::path::{Path, PathBuf};
use std::time::Duration;

use self::parse::{
    parse_bool, parse_claim, parse_duration, parse_duration_or_zero, parse_log_format,
    parse_log_level, parse_path, parse_positive_u32, parse_u32, parse_u64, parse_whole_seconds,
};
pub use self::report::resolve_report;
pub use self::serve::{
    AlertSettings, RateLimitSettings, RedisSettings, ServeConfig, TlsFiles, UsageSettings,
};
pub use self::settings::CONFIG_ENV;
use self::settings::{
    ACCESS_TOKEN_TTL, CACHE_CAPACITY, CACHE_TTL, DB, DB_CONNECT_TIMEOUT, DB_POOL_SIZE,
    DB_STATEMENT_TIMEOUT, INSECURE_FAST_HASH, JWT_AUDIENCE, JWT_ISSUER, JWT_LEEWAY,
    LOCKOUT_DURATION, LOCKOUT_THRESHOLD, LOCKOUT_WINDOW, LOG_FORMAT, LOG_LEVEL, MASTER_KEY,
    MASTER_KEY_FILE, REFRESH_OVERLAP, REFRESH_TOKEN_TTL,
};
pub use self::sources::Sources;

/// A configuration problem; the message names the setting and where its value came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError(message.into())
    }
}

/// Where the master key comes from, as far as `sources` say, before sealed values are
/// opened: a sealed `db` counts as a PostgreSQL URL (the only kind worth sealing), so its
/// key source must be explicit.
pub fn master_key_source(sources: &Sources) -> Result<MasterKeySource, ConfigError> {
    let db = match sources.raw(DB) {
        Some((v, _)) if v.trim().starts_with(sealed::SEALED_PREFIX) => {
            PathBuf::from("postgres://sealed")
        }
        _ => resolve_db(sources)?,
    };
    resolve_master_key(sources, &db)
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

/// Where the master key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// `KMS_MASTER_KEY`, already checked to be base64 of 32 bytes.
    Env(Secret),
    /// A file holding the base64 key, created (mode 0600) by `init` and `serve` when
    /// missing.
    File(PathBuf),
    /// A shell command whose standard output is the base64 key (a secret manager).
    Command(Secret),
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
    /// The SQLite database file, or a `postgres://` / `postgresql://` URL.
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
    /// Pool size and timeouts of a PostgreSQL database.
    pub db_pool: kms_store::PostgresOptions,
}

impl Config {
    /// The PostgreSQL URL, when `db` is one rather than a SQLite file.
    pub fn postgres_url(&self) -> Option<&str> {
        self.db
            .to_str()
            .filter(|db| kms_store::postgres::is_postgres_url(db))
    }

    /// The database as shown in messages: a URL's password replaced by `***`.
    pub fn db_shown(&self) -> String {
        match self.postgres_url() {
            Some(url) => kms_store::postgres::redacted_url(url),
            None => self.db.display().to_string(),
        }
    }

    /// Resolves the common settings.
    pub fn resolve(sources: &Sources) -> Result<Self, ConfigError> {
        let db = resolve_db(sources)?;
        Ok(Config {
            master_key: resolve_master_key(sources, &db)?,
            db,
            log_format: sources.get(LOG_FORMAT, parse_log_format, LogFormat::Text)?,
            log_level: sources.get(LOG_LEVEL, parse_log_level, "info".to_owned())?,
            insecure_fast_hash: sources.get(INSECURE_FAST_HASH, parse_bool, false)?,
            cache_ttl: sources.get(CACHE_TTL, parse_duration, Duration::from_secs(60))?,
            cache_capacity: sources.get(CACHE_CAPACITY, parse_u64, 100_000)?,
            lockout: resolve_lockout(sources)?,
            jwt: resolve_jwt(sources)?,
            db_pool: resolve_db_pool(sources)?,
        })
    }
}

/// The `db` setting alone: a SQLite path (`./kms.db` by default) or a PostgreSQL URL.
pub fn resolve_db(sources: &Sources) -> Result<PathBuf, ConfigError> {
    sources.get(DB, parse_path, PathBuf::from("./kms.db"))
}

fn resolve_master_key(sources: &Sources, db: &Path) -> Result<MasterKeySource, ConfigError> {
    let file = sources.raw(MASTER_KEY_FILE);
    if let Some((command, source)) = sources.raw(settings::MASTER_KEY_COMMAND) {
        let other = sources.raw(MASTER_KEY).or_else(|| file.clone());
        if let Some((_, other_source)) = other {
            return Err(ConfigError(format!(
                "the master key is given twice, by {source} and by {other_source}; set only one"
            )));
        }
        if command.trim().is_empty() {
            return Err(ConfigError(format!(
                "{source}: the master-key command is empty"
            )));
        }
        return Ok(MasterKeySource::Command(Secret(command.to_owned())));
    }
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
    let on_postgres = db
        .to_str()
        .is_some_and(kms_store::postgres::is_postgres_url);
    if on_postgres && file.is_none() {
        // There is no "beside the database" for a URL, and a key created by one node
        // would not be the others'.
        return Err(ConfigError(
            "with a PostgreSQL database every node needs the same master key: set \
             KMS_MASTER_KEY or --master-key-file (the same key on every node)"
                .to_owned(),
        ));
    }
    let mut default_key = db.to_path_buf().into_os_string();
    default_key.push(".key");
    Ok(MasterKeySource::File(sources.get(
        MASTER_KEY_FILE,
        parse_path,
        PathBuf::from(default_key),
    )?))
}

fn resolve_db_pool(sources: &Sources) -> Result<kms_store::PostgresOptions, ConfigError> {
    let d = kms_store::PostgresOptions::default();
    Ok(kms_store::PostgresOptions {
        pool_size: sources.get(DB_POOL_SIZE, parse_positive_u32, d.pool_size)?,
        connect_timeout: sources.get(DB_CONNECT_TIMEOUT, parse_duration, d.connect_timeout)?,
        statement_timeout: sources.get(
            DB_STATEMENT_TIMEOUT,
            parse_duration,
            d.statement_timeout,
        )?,
    })
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

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use std::collections::BTreeMap;

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
    fn every_documented_default_is_the_default() {
        let unset = sources(&[], &[], None).unwrap();
        let common = Config::resolve(&unset).unwrap();
        let serve = ServeConfig::resolve(&unset).unwrap();
        for setting in &settings::ALL {
            let settings::Shown::Value(value) = setting.default else {
                continue;
            };
            let set = sources(&[], &[(setting.env, value)], None).unwrap();
            assert_eq!(
                Config::resolve(&set).unwrap(),
                common,
                "{} = {value:?} (its documented default) changes the settings",
                setting.env
            );
            assert_eq!(
                ServeConfig::resolve(&set).unwrap(),
                serve,
                "{} = {value:?} (its documented default) changes the settings",
                setting.env
            );
        }
    }

    #[test]
    fn settings_without_a_value_default_are_unset_or_derived() {
        let unset = ServeConfig::resolve(&sources(&[], &[], None).unwrap()).unwrap();
        assert_eq!(unset.tls, None);
        assert_eq!(unset.alerts, None);
        assert!(unset.deny_networks.is_empty() && unset.trusted_proxies.is_empty());
        let rate = unset.rate_limit.unwrap();
        assert_eq!(
            rate.burst,
            2 * rate.per_second,
            "the burst is twice the rate"
        );
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
    fn a_decision_log_file_turns_the_decision_log_on_unless_it_is_switched_off() {
        let resolve =
            |env: &[(&str, &str)]| ServeConfig::resolve(&sources(&[], env, None).unwrap());
        assert_eq!(resolve(&[]).unwrap().decision_log, None);
        let on = resolve(&[("KMS_DECISION_LOG", "true")])
            .unwrap()
            .decision_log
            .unwrap();
        assert_eq!(on.file, None, "to the structured log");
        let file = resolve(&[
            ("KMS_DECISION_LOG_FILE", "/var/log/kms/decisions.jsonl"),
            ("KMS_DECISION_LOG_VALUES", "true"),
        ])
        .unwrap()
        .decision_log
        .unwrap();
        assert_eq!(
            file.file,
            Some(PathBuf::from("/var/log/kms/decisions.jsonl"))
        );
        assert!(file.with_values);
        assert_eq!(file.sample_per_million, 1_000_000);
        let both = resolve(&[
            ("KMS_DECISION_LOG", "true"),
            ("KMS_DECISION_LOG_FILE", "d.jsonl"),
        ])
        .unwrap();
        assert_eq!(
            both.decision_log.unwrap().file,
            Some(PathBuf::from("d.jsonl"))
        );
        let err = resolve(&[
            ("KMS_DECISION_LOG", "false"),
            ("KMS_DECISION_LOG_FILE", "d.jsonl"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("decision_log_file is set"), "{err}");
        let err = resolve(&[("KMS_DECISION_LOG_FILE", "")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("KMS_DECISION_LOG_FILE"), "{err}");
    }
}
