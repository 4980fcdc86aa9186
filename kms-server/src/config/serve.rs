//! The settings of `kms serve` only: the listener, limits and timeouts, TLS, networks,
//! the rate limit, alerts, key rotation and retention.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::parse::{
    parse_count, parse_duration, parse_networks, parse_path, parse_postgres_url, parse_redis_url,
    parse_size, parse_socket_addr, parse_u32, parse_webhook_url, parse_whole_seconds_or_zero,
};
use super::settings::{
    Setting, ALERT_WEBHOOK, ALERT_WEBHOOK_SECRET, AUDIT_RETENTION, BODY_LIMIT, DB_REPLICA,
    DENY_NETWORKS, EXPIRED_TOKEN_RETENTION, HEADER_READ_TIMEOUT, KEY_ROTATION_INTERVAL, LISTEN,
    MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP, RATE_LIMIT_BURST, RATE_LIMIT_PER_IP, REDIS,
    REDIS_TIMEOUT, REQUEST_TIMEOUT, SHUTDOWN_TIMEOUT, TLS_CERT, TLS_KEY, TRUSTED_PROXIES,
};
use super::settings::{
    AUDIT_CHECKPOINT_EVERY, AUDIT_CHECKPOINT_FILE, CONDITION_MAX_DEPTH, CONDITION_MAX_LENGTH,
    DECISION_LOG, DECISION_LOG_FILE, DECISION_LOG_SAMPLE, DECISION_LOG_VALUES, OTLP_ENDPOINT,
    PUBLIC_URL, SESSION_IDLE_TIMEOUT, SESSION_TTL, SSO_REVALIDATE, TRACE_SAMPLE_RATIO,
};
use super::settings::{USAGE_COUNTING, USAGE_FLUSH_INTERVAL, USAGE_RETENTION};
use super::{ConfigError, Secret, Sources};
use crate::http::connections::ConnectionLimits;
use crate::http::server;

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
    /// The HMAC-SHA256 key of `X-KMS-Webhook-Signature`.
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
    /// A read replica of the PostgreSQL database, for listings and audit reads.
    pub db_replica: Option<Secret>,
    /// Redis for the counters several nodes share; `None`: per node (or PostgreSQL).
    pub redis: Option<RedisSettings>,
    /// Where spans are exported; `None`: no tracing.
    pub tracing: Option<crate::ops::telemetry::TracingSettings>,
    /// How verification decisions are logged; `None`: not at all.
    pub decision_log: Option<crate::ops::decision_log::DecisionLogSettings>,
    /// Bounds on conditions of conditional grants.
    pub condition_limits: kms_core::ConditionLimits,
    /// The address browsers and identity providers reach kms at (no trailing slash);
    /// `None`: from the listen address.
    pub public_url: Option<String>,
    /// Sessions' absolute lifetime, idle timeout and revalidation interval.
    pub sessions: kms_core::SessionSettings,
    /// The thresholds of `GET /v1/reports/compliance`.
    pub compliance: kms_core::ComplianceSettings,
    /// Delete sessions that ended longer ago than this; `None`: keep them.
    pub session_retention: Option<Duration>,
    /// Signed checkpoints of the audit chain's head; `None`: none written.
    pub audit_checkpoints: Option<crate::ops::checkpoints::CheckpointSettings>,
    /// Usage counting: on or off, how often it is flushed, how long buckets are kept.
    pub usage: UsageSettings,
}

/// Usage counting (ADR 0015).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageSettings {
    /// Whether verifications are counted.
    pub counting: bool,
    /// How often the counts are added to the database.
    pub flush_interval: Duration,
    /// Delete buckets of hours older than this; `None`: keep them.
    pub retention: Option<Duration>,
}

impl Default for UsageSettings {
    fn default() -> Self {
        UsageSettings {
            counting: true,
            flush_interval: Duration::from_secs(10),
            retention: Some(Duration::from_secs(400 * 86_400)),
        }
    }
}

fn resolve_usage(sources: &Sources) -> Result<UsageSettings, ConfigError> {
    let d = UsageSettings::default();
    Ok(UsageSettings {
        counting: sources.get(USAGE_COUNTING, super::parse::parse_bool, d.counting)?,
        flush_interval: sources.get(USAGE_FLUSH_INTERVAL, parse_duration, d.flush_interval)?,
        retention: Some(sources.get(
            USAGE_RETENTION,
            parse_whole_seconds_or_zero,
            d.retention.unwrap_or(Duration::ZERO),
        )?)
        .filter(|r| !r.is_zero()),
    })
}

/// Where and how to reach Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port/db` (may hold a password, so never shown).
    pub url: Secret,
    /// Longest connecting or one command may take.
    pub timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit: server::DEFAULT_BODY_LIMIT,
            request_timeout: server::DEFAULT_REQUEST_TIMEOUT,
            shutdown_timeout: server::DEFAULT_SHUTDOWN_TIMEOUT,
            header_read_timeout: server::DEFAULT_HEADER_READ_TIMEOUT,
            connection_limits: ConnectionLimits::default(),
            key_rotation_interval: None,
            tls: None,
            deny_networks: Vec::new(),
            trusted_proxies: Vec::new(),
            rate_limit: Some(RateLimitSettings::default()),
            alerts: None,
            audit_retention: None,
            expired_token_retention: None,
            db_replica: None,
            redis: None,
            tracing: None,
            decision_log: None,
            condition_limits: kms_core::ConditionLimits::default(),
            public_url: None,
            sessions: kms_core::SessionSettings::default(),
            compliance: kms_core::ComplianceSettings::default(),
            session_retention: None,
            audit_checkpoints: None,
            usage: UsageSettings::default(),
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
            db_replica: sources.get(DB_REPLICA, |v| parse_postgres_url(v).map(Some), None)?,
            redis: resolve_redis(sources)?,
            tracing: resolve_tracing(sources)?,
            decision_log: resolve_decision_log(sources)?,
            condition_limits: resolve_condition_limits(sources)?,
            public_url: sources.get(PUBLIC_URL, parse_public_url, None)?,
            sessions: resolve_sessions(sources)?,
            compliance: super::resolve_report(sources)?,
            session_retention: optional_interval(sources, super::settings::SESSION_RETENTION)?,
            audit_checkpoints: resolve_checkpoints(sources)?,
            usage: resolve_usage(sources)?,
        })
    }
}

impl ServeConfig {
    /// The public URL: as set, or `http://` (`https://` under TLS) and the listen address.
    pub fn public_url_or_default(&self) -> String {
        match &self.public_url {
            Some(u) => u.clone(),
            None => {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{}", self.listen)
            }
        }
    }
}

/// A public URL: `http(s)://host[:port][/path]`, without query, fragment or a trailing
/// slash.
fn parse_public_url(v: &str) -> Result<Option<String>, String> {
    let bad =
        || format!("expected an http:// or https:// URL without query or fragment, got {v:?}");
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .ok_or_else(bad)?;
    if rest.is_empty()
        || rest.starts_with('/')
        || v.contains(['?', '#', ' ', '"', '<', '>', '\\'])
        || v.chars().any(char::is_control)
    {
        return Err(bad());
    }
    Ok(Some(v.trim_end_matches('/').to_owned()))
}

fn resolve_sessions(sources: &Sources) -> Result<kms_core::SessionSettings, ConfigError> {
    let d = kms_core::SessionSettings::default();
    let secs = |v: Duration| i64::try_from(v.as_secs()).unwrap_or(i64::MAX).max(1);
    Ok(kms_core::SessionSettings {
        ttl_secs: secs(sources.get(
            SESSION_TTL,
            parse_duration,
            Duration::from_secs(d.ttl_secs.unsigned_abs()),
        )?),
        idle_secs: secs(sources.get(
            SESSION_IDLE_TIMEOUT,
            parse_duration,
            Duration::from_secs(d.idle_secs.unsigned_abs()),
        )?),
        revalidate_secs: secs(sources.get(
            SSO_REVALIDATE,
            parse_duration,
            Duration::from_secs(d.revalidate_secs.unsigned_abs()),
        )?),
    })
}

impl ServeConfig {
    /// The timeout of the shared counters: Redis's, or its default for the PostgreSQL
    /// counters.
    pub fn redis_timeout_or_default(&self) -> Duration {
        self.redis
            .as_ref()
            .map_or(DEFAULT_REDIS_TIMEOUT, |r| r.timeout)
    }
}

/// The default of `redis_timeout`.
pub(super) const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// The decision log: on with `decision_log`, or with a `decision_log_file` alone (a file
/// beside an explicit `decision_log = false` is a contradiction, refused).
fn resolve_decision_log(
    sources: &Sources,
) -> Result<Option<crate::ops::decision_log::DecisionLogSettings>, ConfigError> {
    let file = sources.get(DECISION_LOG_FILE, |v| parse_path(v).map(Some), None)?;
    let on = match sources.raw(DECISION_LOG) {
        None => file.is_some(),
        Some(_) => sources.get(DECISION_LOG, super::parse::parse_bool, false)?,
    };
    if !on {
        if file.is_some() {
            return Err(ConfigError(format!(
                "{} is set but the decision log is switched off ({} is false); drop one of them",
                DECISION_LOG_FILE.key, DECISION_LOG.key
            )));
        }
        return Ok(None);
    }
    Ok(Some(crate::ops::decision_log::DecisionLogSettings {
        sample_per_million: sources.get(DECISION_LOG_SAMPLE, parse_ratio, 1_000_000)?,
        with_values: sources.get(DECISION_LOG_VALUES, super::parse::parse_bool, false)?,
        file,
    }))
}

/// Audit checkpoints: on with `audit_checkpoint_file` (`audit_checkpoint_every` alone
/// changes nothing).
fn resolve_checkpoints(
    sources: &Sources,
) -> Result<Option<crate::ops::checkpoints::CheckpointSettings>, ConfigError> {
    let file = sources.get(AUDIT_CHECKPOINT_FILE, |v| parse_path(v).map(Some), None)?;
    let every = sources.get(
        AUDIT_CHECKPOINT_EVERY,
        |v| match parse_count(v)? {
            0 => Err("expected a positive number of events".to_owned()),
            n => Ok(n as u64),
        },
        100,
    )?;
    Ok(file.map(|file| crate::ops::checkpoints::CheckpointSettings { file, every }))
}

fn resolve_condition_limits(sources: &Sources) -> Result<kms_core::ConditionLimits, ConfigError> {
    let d = kms_core::ConditionLimits::default();
    let bounded = |max: usize| {
        move |v: &str| match parse_count(v)? {
            n if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!("expected a number from 1 to {max}")),
        }
    };
    Ok(kms_core::ConditionLimits {
        max_length: sources.get(CONDITION_MAX_LENGTH, bounded(65_536), d.max_length)?,
        max_depth: sources.get(CONDITION_MAX_DEPTH, bounded(128), d.max_depth)?,
        ..d
    })
}

fn resolve_tracing(
    sources: &Sources,
) -> Result<Option<crate::ops::telemetry::TracingSettings>, ConfigError> {
    let standard = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let endpoint = sources.get(OTLP_ENDPOINT, |v| parse_otlp_endpoint(v).map(Some), None)?;
    let endpoint = match (endpoint, standard) {
        (Some(e), _) => e,
        (None, Some(e)) => parse_otlp_endpoint(&e)
            .map_err(|why| ConfigError(format!("invalid OTEL_EXPORTER_OTLP_ENDPOINT: {why}")))?,
        (None, None) => return Ok(None),
    };
    let sample_per_million = sources.get(TRACE_SAMPLE_RATIO, parse_ratio, 1_000_000)?;
    Ok(Some(crate::ops::telemetry::TracingSettings {
        endpoint,
        sample_per_million,
    }))
}

fn parse_otlp_endpoint(v: &str) -> Result<String, String> {
    let lower = v.to_ascii_lowercase();
    let ok = (lower.starts_with("http://") || lower.starts_with("https://"))
        && !v.contains(char::is_whitespace)
        && v.len() > "http://".len();
    if ok {
        Ok(v.to_owned())
    } else {
        Err("expected an http:// or https:// URL of an OTLP collector".to_owned())
    }
}

/// A ratio from 0.0 to 1.0, in millionths.
fn parse_ratio(v: &str) -> Result<u32, String> {
    match v.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok((r * 1_000_000.0).round() as u32),
        _ => Err(format!(
            "expected a number from 0.0 to 1.0, got {}",
            crate::http::error::printable(v, 40)
        )),
    }
}

fn resolve_redis(sources: &Sources) -> Result<Option<RedisSettings>, ConfigError> {
    let url = sources.get(REDIS, |v| parse_redis_url(v).map(Some), None)?;
    let timeout = sources.get(REDIS_TIMEOUT, parse_duration, DEFAULT_REDIS_TIMEOUT)?;
    Ok(url.map(|url| RedisSettings { url, timeout }))
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
