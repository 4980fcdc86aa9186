//! Opening the database as a [`Kms`]: the store (metered when serving), the master key
//! (from `KMS_MASTER_KEY` or its file, created when missing) and the builder settings.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use kms_core::counters::SharedCounters;
use kms_core::store::Store;
use kms_core::{Kms, MasterKey, OsRandom, SecurityEventSink};
use kms_store::{PostgresCounters, PostgresStore, RedisCounters, RedisOptions, SqliteStore};

use crate::bootstrap::StartError;
use crate::config::{Config, MasterKeySource, ServeConfig};
use crate::ops::metrics::{MeteredStore, Metrics};
use crate::ops::security_events::LoggedSecurityEvents;

/// Whether a missing master key file is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterKeyFile {
    /// Create it when missing (`init`, `serve`).
    CreateIfMissing,
    /// Use it only if it exists (operator commands).
    UseIfPresent,
}

/// The master key: from `KMS_MASTER_KEY`, or read from its file. A missing file is created
/// (mode 0600, with a warning) when `mode` says so and `store` holds no signing key yet;
/// when it does, those keys were sealed under a key that is now missing, and the start
/// stops without creating anything.
fn master_key(
    config: &Config,
    mode: MasterKeyFile,
    store: &dyn Store,
) -> Result<Option<MasterKey>, StartError> {
    let path = match &config.master_key {
        MasterKeySource::File(path) => path,
        other => return load_master_key_from(other).map(Some),
    };
    match std::fs::read_to_string(path) {
        Ok(text) => MasterKey::from_base64(text.trim()).map(Some).map_err(|_| {
            StartError::new(format!(
                "the master key file {} does not hold a base64 key of 32 bytes",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if mode == MasterKeyFile::UseIfPresent {
                return Ok(None);
            }
            if !store.list_signing_keys()?.is_empty() {
                return Err(StartError::new(format!(
                    "the database {} holds signing keys sealed under a master key, but the \
                     master key file {} does not exist; restore it, point --master-key-file \
                     at it, or set KMS_MASTER_KEY. Nothing was changed",
                    config.db_shown(),
                    path.display()
                )));
            }
            let key = MasterKey::generate(&OsRandom)?;
            write_private_file(path, &key.to_base64()).map_err(|e| {
                StartError::new(format!(
                    "cannot create the master key file {}: {e}",
                    path.display()
                ))
            })?;
            tracing::warn!(
                file = %path.display(),
                "no master key was given (KMS_MASTER_KEY or --master-key-file): created a new \
                 one in this file, readable by its owner only; back it up apart from the \
                 database, which cannot issue access tokens without it"
            );
            Ok(Some(key))
        }
        Err(e) => Err(StartError::new(format!(
            "cannot read the master key file {}: {e}",
            path.display()
        ))),
    }
}

/// The master key of an existing deployment from its configured source, for commands that
/// need the key itself (escrow shares, sealing configuration values): a key file must
/// exist, nothing is created.
pub fn load_master_key(config: &Config) -> Result<MasterKey, StartError> {
    load_master_key_from(&config.master_key)
}

/// [`load_master_key`] from a source alone (before the rest of the settings resolve).
pub fn load_master_key_from(source: &MasterKeySource) -> Result<MasterKey, StartError> {
    match source {
        MasterKeySource::Env(secret) => MasterKey::from_base64(secret.expose())
            .map_err(|_| StartError::new("KMS_MASTER_KEY is not the base64 encoding of 32 bytes")),
        MasterKeySource::Command(command) => {
            key_from_command(command.expose(), MASTER_KEY_COMMAND_TIMEOUT)
        }
        MasterKeySource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                StartError::new(format!(
                    "cannot read the master key file {}: {e}",
                    path.display()
                ))
            })?;
            MasterKey::from_base64(text.trim()).map_err(|_| {
                StartError::new(format!(
                    "the master key file {} does not hold a base64 key of 32 bytes",
                    path.display()
                ))
            })
        }
    }
}

/// Writes a new file readable by its owner only; fails if it exists.
pub(crate) fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// The store `config.db` names: a PostgreSQL database for a `postgres://` or
/// `postgresql://` URL (migrated once, however many nodes start together), else a SQLite
/// file. The PostgreSQL client blocks: like every store call, this runs off the async
/// executor.
pub fn open_store(config: &Config, replica: Option<&str>) -> Result<Arc<dyn Store>, StartError> {
    let opened: Result<Arc<dyn Store>, _> =
        match config.postgres_url() {
            Some(url) => PostgresStore::open(url, config.db_pool.clone())
                .and_then(|s| match replica {
                    Some(replica) => s.with_replica(replica, &config.db_pool),
                    None => Ok(s),
                })
                .map(|s| Arc::new(s) as Arc<dyn Store>),
            None if replica.is_some() => return Err(StartError::new(
                "--db-replica (KMS_DB_REPLICA) needs a PostgreSQL database (--db postgres://...)",
            )),
            None => SqliteStore::open(&config.db).map(|s| Arc::new(s) as Arc<dyn Store>),
        };
    opened.map_err(|e| {
        StartError::new(format!(
            "cannot open the database {}: {}",
            config.db_shown(),
            crate::http::error::error_chain(&e)
        ))
    })
}

/// Opens the database of `config` as a [`Kms`], recording store latency into `metrics` and
/// telling security events to `alerts` as well as the log.
pub fn open_kms(
    config: &Config,
    metrics: Option<Arc<Metrics>>,
    key_file: MasterKeyFile,
    alerts: Option<Arc<dyn SecurityEventSink>>,
) -> Result<Kms, StartError> {
    open_kms_with(config, None, metrics, key_file, alerts)
}

/// Longest the master-key command may run.
const MASTER_KEY_COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the master-key command (`sh -c`) and reads the base64 key from its standard
/// output, waiting at most `timeout`. Errors say what went wrong without the output (it
/// may be the key) and with at most one clipped line of its standard error.
pub(crate) fn key_from_command(
    command: &str,
    timeout: std::time::Duration,
) -> Result<MasterKey, StartError> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| StartError::new(format!("the master-key command could not be run: {e}")))?;
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartError::new(format!(
                    "the master-key command did not finish within {} s",
                    timeout.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => {
                return Err(StartError::new(format!(
                    "waiting for the master-key command failed: {e}"
                )))
            }
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.by_ref().take(64 * 1024).read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.by_ref().take(64 * 1024).read_to_string(&mut err);
    }
    if !status.success() {
        let line: String = err
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        return Err(StartError::new(format!(
            "the master-key command failed ({status}){}",
            if line.is_empty() {
                String::new()
            } else {
                format!(": {line}")
            }
        )));
    }
    MasterKey::from_base64(out.trim())
        .map_err(|_| StartError::new("the master-key command printed no base64 key of 32 bytes"))
}

/// Longest one request to an identity provider may take.
const SSO_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The counters the nodes of this deployment share: Redis when configured, else the
/// PostgreSQL database when it is one; none (each node on its own) for SQLite.
fn shared_counters(
    config: &Config,
    serve: &ServeConfig,
) -> Result<Option<Arc<dyn SharedCounters>>, StartError> {
    if let Some(redis) = &serve.redis {
        let options = RedisOptions {
            timeout: redis.timeout,
            pool_size: config.db_pool.pool_size,
            ..RedisOptions::default()
        };
        let counters = RedisCounters::open(redis.url.expose(), options)
            .map_err(|e| StartError::new(format!("invalid Redis setting: {e}")))?;
        return Ok(Some(Arc::new(counters)));
    }
    let Some(url) = config.postgres_url() else {
        return Ok(None);
    };
    let timeout = serve.redis_timeout_or_default();
    let counters = PostgresCounters::open(url, config.db_pool.pool_size, timeout)
        .map_err(|e| StartError::new(e.to_string()))?;
    Ok(Some(Arc::new(counters)))
}

/// [`open_kms`] for `kms serve`: with the read replica and the shared counters of
/// `serve`, when it is given.
pub fn open_kms_with(
    config: &Config,
    serve: Option<&ServeConfig>,
    metrics: Option<Arc<Metrics>>,
    key_file: MasterKeyFile,
    alerts: Option<Arc<dyn SecurityEventSink>>,
) -> Result<Kms, StartError> {
    let replica = serve
        .and_then(|s| s.db_replica.as_ref())
        .map(|r| r.expose());
    let mut store = open_store(config, replica)?;
    let metrics_for_events = metrics.clone();
    if let Some(metrics) = metrics {
        store = Arc::new(MeteredStore::new(store, metrics));
    }
    let master = master_key(config, key_file, store.as_ref())?;
    let mut builder = Kms::builder(store)
        .cache_ttl(config.cache_ttl)
        .cache_capacity(config.cache_capacity)
        .lockout_policy(config.lockout)
        .jwt_settings(config.jwt.clone())
        .security_event_sink(Arc::new(LoggedSecurityEvents::new(metrics_for_events)));
    if let Some(alerts) = alerts {
        builder = builder.security_event_sink(alerts);
    }
    if config.insecure_fast_hash {
        builder = builder.hash_params(kms_core::dangerous::insecure_hash_params());
    }
    // Only a server counts usage: it flushes the counts; a command would lose them.
    builder = builder.usage_counting(serve.is_some_and(|s| s.usage.counting));
    if let Some(serve) = serve {
        if let Some(counters) = shared_counters(config, serve)? {
            builder = builder.shared_counters(counters);
        }
        builder = builder.condition_limits(serve.condition_limits);
        builder = builder
            .session_settings(serve.sessions)
            .sso(kms_core::SsoConfig {
                transport: Arc::new(crate::ops::sso_transport::UreqTransport::new(
                    SSO_CALL_TIMEOUT,
                )),
                public_url: serve.public_url_or_default(),
            });
    }
    let from = match &config.master_key {
        MasterKeySource::Env(_) => "KMS_MASTER_KEY".to_owned(),
        MasterKeySource::File(path) => format!("the file {}", path.display()),
        MasterKeySource::Command(_) => "the master-key command".to_owned(),
    };
    let has_master = master.is_some();
    if let Some(key) = master {
        builder = builder.master_key(key);
    }
    builder.build().map_err(|e| match e {
        kms_core::Error::Internal { message, .. } if has_master => StartError::new(format!(
            "cannot open the signing keys of {} with the master key from {from}: {message}. \
             Use the master key the database was created with; nothing was changed",
            config.db_shown()
        )),
        other => StartError::from(other),
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
    use std::time::Duration;

    use super::key_from_command;

    #[test]
    fn a_slow_master_key_command_is_stopped_at_its_limit() {
        let err = key_from_command("sleep 5", Duration::from_millis(300)).unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
    }

    #[test]
    fn the_key_is_read_from_standard_output() {
        let key = "a21zLXRlc3QtbWFzdGVyLWtleS0zMi1ieXRlcy0hISE=";
        let got = key_from_command(&format!("printf '%s\\n' {key}"), Duration::from_secs(5));
        assert_eq!(got.unwrap().to_base64(), key);
    }
}
