//! The table of settings: each one's file key, flag, environment variable, default and
//! description, written once. The flags' help text ([`Setting::help_text`]), the
//! configuration module's table ([`markdown_table`], committed as `settings.md` and in
//! `docs/API.md`) and the names in error messages all come from here; the tests below prove
//! the committed tables current, and `cli::args` proves its flags are these.

/// One setting, as every source and document names it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Setting {
    /// The key in the configuration file, and in the map of flags given.
    pub(crate) key: &'static str,
    /// The long flag, without its dashes; `None`: no flag (a secret kept out of process
    /// listings).
    pub(crate) flag: Option<&'static str>,
    /// The environment variable.
    pub(crate) env: &'static str,
    /// Whether the configuration file may set it.
    pub(crate) in_file: bool,
    /// What applies when no source sets it.
    pub(crate) default: Shown,
    /// What it is, for error messages: `invalid {what} in {source}: ...`.
    pub(crate) what: &'static str,
    /// What it does, for the flag's help and the documentation.
    pub(crate) help: &'static str,
}

/// A setting's default, as documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shown {
    /// A value, written as a user would write it: setting it changes nothing (a test
    /// proves it for every setting).
    Value(&'static str),
    /// No value; the text says what that means.
    Unset(&'static str),
    /// Computed from other settings; the text says how.
    Derived(&'static str),
}

impl Setting {
    /// The long flag, without its dashes (`""` for a setting without one).
    pub(crate) fn long(&self) -> &'static str {
        self.flag.unwrap_or("")
    }

    /// The flag as written on the command line, `--db`; `""` for none.
    pub(crate) fn flag_name(&self) -> String {
        self.flag.map(|f| format!("--{f}")).unwrap_or_default()
    }

    /// The default as shown in help text: `./kms.db`, `none (plain HTTP)`.
    pub(crate) fn default_text(&self) -> &'static str {
        match self.default {
            Shown::Value(v) | Shown::Unset(v) | Shown::Derived(v) => v,
        }
    }

    /// The flag's help: the description, its environment variable and its default.
    pub(crate) fn help_text(&self) -> String {
        format!(
            "{} [env: {}] [default: {}]",
            self.help,
            self.env,
            self.default_text()
        )
    }
}

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "KMS_CONFIG";

/// The help of `--config`.
pub(crate) fn config_help() -> String {
    format!(
        "TOML configuration file with any of the settings (keys as in the flags, with `_`) \
         [env: {CONFIG_ENV}]"
    )
}

/// The settings that a file may set.
pub(crate) fn file_settings() -> impl Iterator<Item = &'static Setting> {
    ALL.iter().filter(|s| s.in_file)
}

/// The documentation's table of settings, in Markdown (the tests keep the committed
/// copies equal to it).
#[cfg(test)]
pub(crate) fn markdown_table() -> String {
    let code = |s: &str| {
        if s.is_empty() {
            "—".to_owned()
        } else {
            format!("`{s}`")
        }
    };
    let mut out = String::from(
        "| file key | flag | environment | default | what it does |\n|---|---|---|---|---|\n",
    );
    for s in &ALL {
        let default = match s.default {
            Shown::Value(v) => code(v),
            Shown::Unset(v) | Shown::Derived(v) => v.to_owned(),
        };
        out.push_str(&format!(
            "| {} | {} | `{}` | {} | {} |\n",
            code(if s.in_file { s.key } else { "" }),
            code(&s.flag_name()),
            s.env,
            default,
            s.help.replace('|', "\\|"),
        ));
    }
    out
}

pub(crate) const DB: Setting = Setting {
    key: "db",
    flag: Some("db"),
    env: "KMS_DB",
    in_file: true,
    default: Shown::Value("./kms.db"),
    what: "database path",
    help: "SQLite database file, or a PostgreSQL URL (`postgres://user:password@host:port/dbname`, `postgresql://` too) that several nodes may share",
};

pub(crate) const LISTEN: Setting = Setting {
    key: "listen",
    flag: Some("listen"),
    env: "KMS_LISTEN",
    in_file: true,
    default: Shown::Value("127.0.0.1:8080"),
    what: "listen address",
    help: "Address to listen on, IP:PORT (port 0 picks a free port; the bound address is printed on stderr as `listening on ADDR`)",
};

pub(crate) const LOG_FORMAT: Setting = Setting {
    key: "log_format",
    flag: Some("log-format"),
    env: "KMS_LOG_FORMAT",
    in_file: true,
    default: Shown::Value("text"),
    what: "log format",
    help: "Log format: `text` or `json` (logs go to stderr)",
};

pub(crate) const LOG_LEVEL: Setting = Setting {
    key: "log_level",
    flag: Some("log-level"),
    env: "KMS_LOG_LEVEL",
    in_file: true,
    default: Shown::Value("info"),
    what: "log level",
    help: "Log filter (a tracing filter) such as `info` or `kms_server=debug,info`",
};

pub(crate) const BODY_LIMIT: Setting = Setting {
    key: "body_limit",
    flag: Some("body-limit"),
    env: "KMS_BODY_LIMIT",
    in_file: true,
    default: Shown::Value("1MiB"),
    what: "body limit",
    help: "Largest request body, e.g. 1048576, 512KiB, 1MiB",
};

pub(crate) const REQUEST_TIMEOUT: Setting = Setting {
    key: "request_timeout",
    flag: Some("request-timeout"),
    env: "KMS_REQUEST_TIMEOUT",
    in_file: true,
    default: Shown::Value("30s"),
    what: "request timeout",
    help: "Longest a request may run, e.g. 30s, 500ms",
};

pub(crate) const SHUTDOWN_TIMEOUT: Setting = Setting {
    key: "shutdown_timeout",
    flag: Some("shutdown-timeout"),
    env: "KMS_SHUTDOWN_TIMEOUT",
    in_file: true,
    default: Shown::Value("30s"),
    what: "shutdown timeout",
    help: "Longest in-flight requests may take to finish after a shutdown signal",
};

pub(crate) const HEADER_READ_TIMEOUT: Setting = Setting {
    key: "header_read_timeout",
    flag: Some("header-read-timeout"),
    env: "KMS_HEADER_READ_TIMEOUT",
    in_file: true,
    default: Shown::Value("10s"),
    what: "header read timeout",
    help: "Longest a client may take to send a request's headers, on a new connection and on a kept-alive one after each answer; a TLS handshake has as long again. Over it the connection is closed",
};

pub(crate) const MAX_CONNECTIONS: Setting = Setting {
    key: "max_connections",
    flag: Some("max-connections"),
    env: "KMS_MAX_CONNECTIONS",
    in_file: true,
    default: Shown::Value("10000"),
    what: "connection limit",
    help: "Connections open at once; one more is closed unread; 0: no limit",
};

pub(crate) const MAX_CONNECTIONS_PER_IP: Setting = Setting {
    key: "max_connections_per_ip",
    flag: Some("max-connections-per-ip"),
    env: "KMS_MAX_CONNECTIONS_PER_IP",
    in_file: true,
    default: Shown::Value("256"),
    what: "connection limit per client address",
    help: "Connections open at once from one client address (IPv6 per /64; trusted proxies are exempt); one more is closed unread; 0: no limit",
};

pub(crate) const CACHE_TTL: Setting = Setting {
    key: "cache_ttl",
    flag: Some("cache-ttl"),
    env: "KMS_CACHE_TTL",
    in_file: true,
    default: Shown::Value("60s"),
    what: "cache ttl",
    help: "How long a verified key stays cached",
};

pub(crate) const CACHE_CAPACITY: Setting = Setting {
    key: "cache_capacity",
    flag: Some("cache-capacity"),
    env: "KMS_CACHE_CAPACITY",
    in_file: true,
    default: Shown::Value("100000"),
    what: "cache capacity",
    help: "Most verified keys cached; 0 disables the cache",
};

pub(crate) const MASTER_KEY_FILE: Setting = Setting {
    key: "master_key_file",
    flag: Some("master-key-file"),
    env: "KMS_MASTER_KEY_FILE",
    in_file: true,
    default: Shown::Derived("the database path + `.key`"),
    what: "master key file",
    help: "File holding the base64 master key that seals access-token signing keys; created (mode 0600) by `init` and `serve` when missing. The key itself may instead come from KMS_MASTER_KEY (base64 of 32 bytes), never both",
};

pub(crate) const MASTER_KEY_COMMAND: Setting = Setting {
    key: "master_key_command",
    flag: Some("master-key-command"),
    env: "KMS_MASTER_KEY_COMMAND",
    in_file: false,
    default: Shown::Unset("none"),
    what: "master key command",
    help: "A shell command whose standard output is the base64 master key (a secret manager's CLI: `vault kv get -field=key secret/kms`, `aws secretsmanager get-secret-value ...`, `pass show kms`); run at start with a 10 s limit, its output never shown. Instead of KMS_MASTER_KEY or the key file, never together",
};

pub(crate) const LOCKOUT_THRESHOLD: Setting = Setting {
    key: "lockout_threshold",
    flag: Some("lockout-threshold"),
    env: "KMS_LOCKOUT_THRESHOLD",
    in_file: true,
    default: Shown::Value("10"),
    what: "lockout threshold",
    help: "Failed authentications or verifications from one source, within the lockout window, that lock it out; 0 disables lockouts",
};

pub(crate) const LOCKOUT_WINDOW: Setting = Setting {
    key: "lockout_window",
    flag: Some("lockout-window"),
    env: "KMS_LOCKOUT_WINDOW",
    in_file: true,
    default: Shown::Value("60s"),
    what: "lockout window",
    help: "The window in which failures are counted",
};

pub(crate) const LOCKOUT_DURATION: Setting = Setting {
    key: "lockout_duration",
    flag: Some("lockout-duration"),
    env: "KMS_LOCKOUT_DURATION",
    in_file: true,
    default: Shown::Value("300s"),
    what: "lockout duration",
    help: "How long a locked-out source is refused (429)",
};

pub(crate) const INSECURE_FAST_HASH: Setting = Setting {
    key: "insecure_fast_hash",
    flag: Some("insecure-fast-hash"),
    env: "KMS_INSECURE_FAST_HASH",
    in_file: true,
    default: Shown::Value("false"),
    what: "insecure fast hash switch",
    help: "TEST ONLY: deliberately cheap argon2id parameters so test suites run fast. Never use where real secrets are issued",
};

pub(crate) const MASTER_KEY: Setting = Setting {
    key: "master_key",
    flag: None,
    env: "KMS_MASTER_KEY",
    in_file: false,
    default: Shown::Unset("none"),
    what: "master key",
    help: "The master key itself, base64 of 32 bytes; environment only, so it stays out of process listings and files; never with a master key file",
};

pub(crate) const JWT_ISSUER: Setting = Setting {
    key: "jwt_issuer",
    flag: Some("jwt-issuer"),
    env: "KMS_JWT_ISSUER",
    in_file: true,
    default: Shown::Value("kms"),
    what: "access-token issuer",
    help: "`iss` of access tokens",
};

pub(crate) const JWT_AUDIENCE: Setting = Setting {
    key: "jwt_audience",
    flag: Some("jwt-audience"),
    env: "KMS_JWT_AUDIENCE",
    in_file: true,
    default: Shown::Value("kms"),
    what: "access-token audience",
    help: "`aud` of access tokens when the client asks for none",
};

pub(crate) const ACCESS_TOKEN_TTL: Setting = Setting {
    key: "access_token_ttl",
    flag: Some("access-token-ttl"),
    env: "KMS_ACCESS_TOKEN_TTL",
    in_file: true,
    default: Shown::Value("900s"),
    what: "access-token lifetime",
    help: "Lifetime of access tokens; a rotated key verifies this long (plus leeway) before it retires",
};

pub(crate) const REFRESH_TOKEN_TTL: Setting = Setting {
    key: "refresh_token_ttl",
    flag: Some("refresh-token-ttl"),
    env: "KMS_REFRESH_TOKEN_TTL",
    in_file: true,
    default: Shown::Value("30d"),
    what: "refresh-token lifetime",
    help: "Lifetime of refresh tokens, counted from the API-key exchange (refreshing never extends it)",
};

pub(crate) const REFRESH_OVERLAP: Setting = Setting {
    key: "refresh_overlap",
    flag: Some("refresh-overlap"),
    env: "KMS_REFRESH_OVERLAP",
    in_file: true,
    default: Shown::Value("0"),
    what: "refresh overlap",
    help: "How long an exchanged refresh token may be exchanged again (client retries) before it counts as reuse",
};

pub(crate) const JWT_LEEWAY: Setting = Setting {
    key: "jwt_leeway",
    flag: Some("jwt-leeway"),
    env: "KMS_JWT_LEEWAY",
    in_file: true,
    default: Shown::Value("30s"),
    what: "access-token leeway",
    help: "Clock skew allowed on `exp` and `nbf`",
};

pub(crate) const KEY_ROTATION_INTERVAL: Setting = Setting {
    key: "key_rotation_interval",
    flag: Some("key-rotation-interval"),
    env: "KMS_KEY_ROTATION_INTERVAL",
    in_file: true,
    default: Shown::Value("0"),
    what: "key rotation interval",
    help: "Rotate the signing key of access tokens once the active one is this old, e.g. 30d; 0 never rotates on a schedule",
};

pub(crate) const TLS_CERT: Setting = Setting {
    key: "tls_cert",
    flag: Some("tls-cert"),
    env: "KMS_TLS_CERT",
    in_file: true,
    default: Shown::Unset("none (plain HTTP)"),
    what: "TLS certificate file",
    help: "PEM certificate chain: serve HTTPS (with --tls-key)",
};

pub(crate) const TLS_KEY: Setting = Setting {
    key: "tls_key",
    flag: Some("tls-key"),
    env: "KMS_TLS_KEY",
    in_file: true,
    default: Shown::Unset("none"),
    what: "TLS private key file",
    help: "PEM private key of the certificate",
};

pub(crate) const DENY_NETWORKS: Setting = Setting {
    key: "deny_networks",
    flag: Some("deny-network"),
    env: "KMS_DENY_NETWORKS",
    in_file: true,
    default: Shown::Unset("none"),
    what: "denied networks",
    help:
        "Refuse every request from these networks with 403, CIDR (repeat or separate with commas)",
};

pub(crate) const TRUSTED_PROXIES: Setting = Setting {
    key: "trusted_proxies",
    flag: Some("trusted-proxy"),
    env: "KMS_TRUSTED_PROXIES",
    in_file: true,
    default: Shown::Unset("none"),
    what: "trusted proxies",
    help: "Networks of reverse proxies whose X-Forwarded-For is believed, CIDR (repeat or separate with commas)",
};

pub(crate) const RATE_LIMIT_PER_IP: Setting = Setting {
    key: "rate_limit_per_ip",
    flag: Some("rate-limit-per-ip"),
    env: "KMS_RATE_LIMIT_PER_IP",
    in_file: true,
    default: Shown::Value("100"),
    what: "rate limit per client address",
    help: "Management calls per second allowed from one client address; 0 disables the limit",
};

pub(crate) const RATE_LIMIT_BURST: Setting = Setting {
    key: "rate_limit_burst",
    flag: Some("rate-limit-burst"),
    env: "KMS_RATE_LIMIT_BURST",
    in_file: true,
    default: Shown::Derived("twice the rate"),
    what: "rate limit burst",
    help: "Management calls one client address may make at once before the rate applies",
};

pub(crate) const AUDIT_RETENTION: Setting = Setting {
    key: "audit_retention",
    flag: Some("audit-retention"),
    env: "KMS_AUDIT_RETENTION",
    in_file: true,
    default: Shown::Value("0"),
    what: "audit retention",
    help: "Delete audit events older than this, e.g. 365d, keeping the chain verifiable from the first kept event; 0 keeps every event",
};

pub(crate) const EXPIRED_TOKEN_RETENTION: Setting = Setting {
    key: "expired_token_retention",
    flag: Some("expired-token-retention"),
    env: "KMS_EXPIRED_TOKEN_RETENTION",
    in_file: true,
    default: Shown::Value("0"),
    what: "expired token retention",
    help: "Delete tokens that expired longer ago than this, e.g. 30d; 0 keeps them",
};

pub(crate) const SESSION_RETENTION: Setting = Setting {
    key: "session_retention",
    flag: Some("session-retention"),
    env: "KMS_SESSION_RETENTION",
    in_file: true,
    default: Shown::Value("0"),
    what: "session retention",
    help: "Delete sessions that ended (revoked, expired or idle) longer ago than this, e.g. 30d, with their addresses and user agents; 0 keeps them",
};

pub(crate) const ALERT_WEBHOOK: Setting = Setting {
    key: "alert_webhook",
    flag: Some("alert-webhook"),
    env: "KMS_ALERT_WEBHOOK",
    in_file: true,
    default: Shown::Unset("none"),
    what: "alert webhook URL",
    help: "POST security events (lockouts, refresh-token reuse, a broken audit chain) to this URL as signed JSON",
};

pub(crate) const ALERT_WEBHOOK_SECRET: Setting = Setting {
    key: "alert_webhook_secret",
    flag: Some("alert-webhook-secret"),
    env: "KMS_ALERT_WEBHOOK_SECRET",
    in_file: true,
    default: Shown::Unset("none (required with a webhook)"),
    what: "alert webhook secret",
    help: "HMAC-SHA256 key of the webhook's X-KMS-Webhook-Signature header, at least 16 characters; prefer the environment variable",
};

pub(crate) const DB_POOL_SIZE: Setting = Setting {
    key: "db_pool_size",
    flag: Some("db-pool-size"),
    env: "KMS_DB_POOL_SIZE",
    in_file: true,
    default: Shown::Value("8"),
    what: "database pool size",
    help: "PostgreSQL only: most connections a node keeps open to the database (and as many again to a replica)",
};

pub(crate) const DB_CONNECT_TIMEOUT: Setting = Setting {
    key: "db_connect_timeout",
    flag: Some("db-connect-timeout"),
    env: "KMS_DB_CONNECT_TIMEOUT",
    in_file: true,
    default: Shown::Value("5s"),
    what: "database connect timeout",
    help: "PostgreSQL only: longest opening a connection, or waiting for a free one, may take; over it the call fails as unavailable (503)",
};

pub(crate) const DB_STATEMENT_TIMEOUT: Setting = Setting {
    key: "db_statement_timeout",
    flag: Some("db-statement-timeout"),
    env: "KMS_DB_STATEMENT_TIMEOUT",
    in_file: true,
    default: Shown::Value("10s"),
    what: "database statement timeout",
    help: "PostgreSQL only: longest one statement may run, waiting for the write lock included; over it the server cancels it and the call fails as unavailable (503)",
};

pub(crate) const DB_REPLICA: Setting = Setting {
    key: "db_replica",
    flag: Some("db-replica"),
    env: "KMS_DB_REPLICA",
    in_file: true,
    default: Shown::Unset("none"),
    what: "database replica URL",
    help: "PostgreSQL only: a read replica's URL; listings and audit reads go to it, verification, revocation and every write to the primary",
};

pub(crate) const REDIS: Setting = Setting {
    key: "redis",
    flag: Some("redis"),
    env: "KMS_REDIS",
    in_file: true,
    default: Shown::Unset("none (per node; shared through PostgreSQL when the database is one)"),
    what: "Redis URL",
    help: "Share rate limits, lockout counters and request-signing nonces between nodes through this Redis, redis://host:port/db; while it does not answer each node counts on its own and /readyz says degraded",
};

pub(crate) const PUBLIC_URL: Setting = Setting {
    key: "public_url",
    flag: Some("public-url"),
    env: "KMS_PUBLIC_URL",
    in_file: true,
    default: Shown::Unset("http:// or https:// (under TLS) + the listen address"),
    what: "public URL",
    help: "The address browsers and identity providers reach kms at; every single sign-on URL (login, callback, acs, metadata) is built from it, and cookie-authenticated changes must carry it as Origin",
};

pub(crate) const SESSION_TTL: Setting = Setting {
    key: "session_ttl",
    flag: Some("session-ttl"),
    env: "KMS_SESSION_TTL",
    in_file: true,
    default: Shown::Value("8h"),
    what: "session lifetime",
    help: "How long a user's session lives after login, however much it is used",
};

pub(crate) const SESSION_IDLE_TIMEOUT: Setting = Setting {
    key: "session_idle_timeout",
    flag: Some("session-idle-timeout"),
    env: "KMS_SESSION_IDLE_TIMEOUT",
    in_file: true,
    default: Shown::Value("30m"),
    what: "session idle timeout",
    help: "A session unused for this long ends",
};

pub(crate) const SSO_REVALIDATE: Setting = Setting {
    key: "sso_revalidate",
    flag: Some("sso-revalidate"),
    env: "KMS_SSO_REVALIDATE",
    in_file: true,
    default: Shown::Value("15m"),
    what: "SSO revalidation interval",
    help: "How often a session holding the provider's refresh token (OIDC offline_access) re-checks its user at the provider while it is used; a refusal ends the session",
};

pub(crate) const REDIS_TIMEOUT: Setting = Setting {
    key: "redis_timeout",
    flag: Some("redis-timeout"),
    env: "KMS_REDIS_TIMEOUT",
    in_file: true,
    default: Shown::Value("250ms"),
    what: "Redis timeout",
    help: "Longest connecting to Redis, or one command, may take before the node counts on its own for a while",
};

pub(crate) const OTLP_ENDPOINT: Setting = Setting {
    key: "otlp_endpoint",
    flag: Some("otlp-endpoint"),
    env: "KMS_OTLP_ENDPOINT",
    in_file: true,
    default: Shown::Unset("none (no traces; OTEL_EXPORTER_OTLP_ENDPOINT is used when set)"),
    what: "OTLP endpoint",
    help: "Export a span per request (with store calls and argon2id as children) to this OpenTelemetry collector over OTLP/HTTP protobuf, e.g. http://127.0.0.1:4318 (spans go to /v1/traces)",
};

pub(crate) const TRACE_SAMPLE_RATIO: Setting = Setting {
    key: "trace_sample_ratio",
    flag: Some("trace-sample-ratio"),
    env: "KMS_TRACE_SAMPLE_RATIO",
    in_file: true,
    default: Shown::Value("1.0"),
    what: "trace sample ratio",
    help: "Share of traces sampled, 0.0 to 1.0, when the caller's traceparent does not decide",
};

pub(crate) const DECISION_LOG: Setting = Setting {
    key: "decision_log",
    flag: Some("decision-log"),
    env: "KMS_DECISION_LOG",
    in_file: true,
    default: Shown::Value("false"),
    what: "decision log switch",
    help: "Log a record per verification decision (a line with target kms::decision, or to decision_log_file): token id, application, query, context names, decision and code; never a secret",
};

pub(crate) const DECISION_LOG_SAMPLE: Setting = Setting {
    key: "decision_log_sample",
    flag: Some("decision-log-sample"),
    env: "KMS_DECISION_LOG_SAMPLE",
    in_file: true,
    default: Shown::Value("1.0"),
    what: "decision log sample ratio",
    help: "Share of decisions logged, 0.0 to 1.0",
};

pub(crate) const DECISION_LOG_VALUES: Setting = Setting {
    key: "decision_log_values",
    flag: Some("decision-log-values"),
    env: "KMS_DECISION_LOG_VALUES",
    in_file: true,
    default: Shown::Value("false"),
    what: "decision log values switch",
    help: "Also log the values of the verification context (only their names otherwise)",
};

pub(crate) const DECISION_LOG_FILE: Setting = Setting {
    key: "decision_log_file",
    flag: Some("decision-log-file"),
    env: "KMS_DECISION_LOG_FILE",
    in_file: true,
    default: Shown::Unset("none (decisions go to the structured log)"),
    what: "decision log file",
    help: "Append each decision as one JSON object per line to this file (created with mode 0600 when missing) instead of the structured log; setting it turns the decision log on",
};

pub(crate) const CONDITION_MAX_LENGTH: Setting = Setting {
    key: "condition_max_length",
    flag: Some("condition-max-length"),
    env: "KMS_CONDITION_MAX_LENGTH",
    in_file: true,
    default: Shown::Value("2048"),
    what: "condition length limit",
    help: "Longest condition on a grant, in bytes; longer ones are refused (400)",
};

pub(crate) const CONDITION_MAX_DEPTH: Setting = Setting {
    key: "condition_max_depth",
    flag: Some("condition-max-depth"),
    env: "KMS_CONDITION_MAX_DEPTH",
    in_file: true,
    default: Shown::Value("16"),
    what: "condition depth limit",
    help: "Deepest nesting of AND, OR, NOT and parentheses in a condition; deeper ones are refused (400)",
};

pub(crate) const REPORT_MAX_TOKEN_AGE: Setting = Setting {
    key: "report_max_token_age",
    flag: Some("report-max-token-age"),
    env: "KMS_REPORT_MAX_TOKEN_AGE",
    in_file: true,
    default: Shown::Value("365d"),
    what: "report key age limit",
    help: "Compliance report, the rotation policy: active API keys created longer ago than this fail `tokens_over_max_age`",
};

pub(crate) const REPORT_MAX_SIGNING_KEY_AGE: Setting = Setting {
    key: "report_max_signing_key_age",
    flag: Some("report-max-signing-key-age"),
    env: "KMS_REPORT_MAX_SIGNING_KEY_AGE",
    in_file: true,
    default: Shown::Value("90d"),
    what: "report signing key age limit",
    help: "Compliance report: an active access-token signing key older than this fails `signing_key_age`",
};

pub(crate) const REPORT_MAX_MASTER_KEY_AGE: Setting = Setting {
    key: "report_max_master_key_age",
    flag: Some("report-max-master-key-age"),
    env: "KMS_REPORT_MAX_MASTER_KEY_AGE",
    in_file: true,
    default: Shown::Value("365d"),
    what: "report master key age limit",
    help: "Compliance report: a master key set longer ago than this fails `master_key_age`",
};

pub(crate) const REPORT_PERIOD: Setting = Setting {
    key: "report_period",
    flag: Some("report-period"),
    env: "KMS_REPORT_PERIOD",
    in_file: true,
    default: Shown::Value("30d"),
    what: "report period",
    help: "Compliance report: the period, ending when the report is made, over which lockouts and refresh-token reuse are counted",
};

pub(crate) const REPORT_MIN_AUDIT_RETENTION: Setting = Setting {
    key: "report_min_audit_retention",
    flag: Some("report-min-audit-retention"),
    env: "KMS_REPORT_MIN_AUDIT_RETENTION",
    in_file: true,
    default: Shown::Value("365d"),
    what: "report minimum audit retention",
    help: "Compliance report: an `audit_retention` shorter than this fails `audit_retention` (keeping every event passes)",
};

pub(crate) const REPORT_THRESHOLDS: Setting = Setting {
    key: "report_thresholds",
    flag: Some("report-thresholds"),
    env: "KMS_REPORT_THRESHOLDS",
    in_file: true,
    default: Shown::Value("admin_tokens=1"),
    what: "report thresholds",
    help: "Compliance report: how many items each finding may count and still pass, as FINDING=N pairs separated by commas (e.g. `admin_tokens=2,tokens_without_expiry=5`); a finding not named allows none",
};

pub(crate) const AUDIT_CHECKPOINT_FILE: Setting = Setting {
    key: "audit_checkpoint_file",
    flag: Some("audit-checkpoint-file"),
    env: "KMS_AUDIT_CHECKPOINT_FILE",
    in_file: true,
    default: Shown::Unset("none (no checkpoints)"),
    what: "audit checkpoint file",
    help: "Append a signed checkpoint of the audit chain's head (seq, hash, time; an EdDSA JWS under the active signing key) to this file, one JSON object a line (created with mode 0600), so that `kms audit verify --checkpoint FILE` detects deleted newest events. Keep it off the database's disk (another host, append-only storage)",
};

pub(crate) const AUDIT_CHECKPOINT_EVERY: Setting = Setting {
    key: "audit_checkpoint_every",
    flag: Some("audit-checkpoint-every"),
    env: "KMS_AUDIT_CHECKPOINT_EVERY",
    in_file: true,
    default: Shown::Value("100"),
    what: "audit checkpoint interval",
    help: "With audit_checkpoint_file: write a checkpoint once the chain has grown by this many events since the last one (checked every second, and at shutdown)",
};

pub(crate) const USAGE_COUNTING: Setting = Setting {
    key: "usage_counting",
    flag: Some("usage-counting"),
    env: "KMS_USAGE_COUNTING",
    in_file: true,
    default: Shown::Value("true"),
    what: "usage counting switch",
    help: "Count every verification per token and application by outcome code, in hourly buckets for the usage reports, and keep tokens' last_used_at; false counts nothing",
};

pub(crate) const USAGE_FLUSH_INTERVAL: Setting = Setting {
    key: "usage_flush_interval",
    flag: Some("usage-flush-interval"),
    env: "KMS_USAGE_FLUSH_INTERVAL",
    in_file: true,
    default: Shown::Value("10s"),
    what: "usage flush interval",
    help: "How often the verifications counted in memory are added to the database (and once more at shutdown); a crash loses at most this much counting",
};

pub(crate) const USAGE_RETENTION: Setting = Setting {
    key: "usage_retention",
    flag: Some("usage-retention"),
    env: "KMS_USAGE_RETENTION",
    in_file: true,
    default: Shown::Value("400d"),
    what: "usage retention",
    help: "Delete usage buckets of hours older than this, e.g. 400d (audited as retention.sweep); 0 keeps them",
};

/// Every setting, in the order they are documented.
pub(crate) const ALL: [Setting; 66] = [
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
    MASTER_KEY,
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
    DB_POOL_SIZE,
    DB_CONNECT_TIMEOUT,
    DB_STATEMENT_TIMEOUT,
    DB_REPLICA,
    REDIS,
    REDIS_TIMEOUT,
    OTLP_ENDPOINT,
    TRACE_SAMPLE_RATIO,
    DECISION_LOG,
    DECISION_LOG_SAMPLE,
    DECISION_LOG_VALUES,
    DECISION_LOG_FILE,
    AUDIT_CHECKPOINT_FILE,
    AUDIT_CHECKPOINT_EVERY,
    CONDITION_MAX_LENGTH,
    CONDITION_MAX_DEPTH,
    PUBLIC_URL,
    SESSION_TTL,
    SESSION_IDLE_TIMEOUT,
    SSO_REVALIDATE,
    MASTER_KEY_COMMAND,
    REPORT_MAX_TOKEN_AGE,
    REPORT_MAX_SIGNING_KEY_AGE,
    REPORT_MAX_MASTER_KEY_AGE,
    REPORT_PERIOD,
    REPORT_MIN_AUDIT_RETENTION,
    REPORT_THRESHOLDS,
    USAGE_COUNTING,
    USAGE_FLUSH_INTERVAL,
    USAGE_RETENTION,
    SESSION_RETENTION,
];

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    const BEGIN: &str =
        "<!-- settings table: generated from kms-server/src/config/settings.rs -->\n";
    const END: &str = "<!-- end of settings table -->";
    const UPDATE: &str = "KMS_UPDATE_SETTINGS";

    fn repo_file(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    /// Compares (or, with `KMS_UPDATE_SETTINGS=1`, rewrites) the generated table between
    /// the markers of `path`, or the whole file when it has none.
    fn check_table_in(path: &Path, whole_file: bool) {
        let table = markdown_table();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let (before, committed, after) = if whole_file {
            ("", text.as_str(), "")
        } else {
            let start = text.find(BEGIN).map(|i| i + BEGIN.len());
            let end = text.find(END);
            let (Some(start), Some(end)) = (start, end) else {
                panic!(
                    "{} has no settings table between its markers",
                    path.display()
                )
            };
            (&text[..start], &text[start..end], &text[end..])
        };
        if std::env::var(UPDATE).is_ok_and(|v| v == "1") {
            std::fs::write(path, format!("{before}{table}{after}")).unwrap();
            return;
        }
        assert!(
            committed == table,
            "the settings table in {} is stale; regenerate it with \
             `{UPDATE}=1 cargo test -p kms-server --lib config::settings`",
            path.display()
        );
    }

    #[test]
    fn the_module_documentation_table_is_current() {
        check_table_in(&repo_file("src/config/settings.md"), true);
    }

    #[test]
    fn the_api_documentation_table_is_current() {
        check_table_in(&repo_file("../docs/API.md"), false);
    }

    #[test]
    fn names_are_unique_and_follow_one_pattern() {
        let (mut keys, mut envs, mut flags) = (Vec::new(), Vec::new(), Vec::new());
        for s in &ALL {
            assert!(!keys.contains(&s.key), "{} twice", s.key);
            assert!(!envs.contains(&s.env), "{} twice", s.env);
            keys.push(s.key);
            envs.push(s.env);
            assert_eq!(
                s.env,
                format!("KMS_{}", s.key.to_ascii_uppercase()),
                "{}",
                s.key
            );
            if let Some(flag) = s.flag {
                assert!(!flags.contains(&flag), "--{flag} twice");
                flags.push(flag);
                assert!(!flag.starts_with('-') && !flag.contains('_'), "--{flag}");
            }
            assert!(!s.help.is_empty() && !s.what.is_empty(), "{}", s.key);
            if let Shown::Value(v) = s.default {
                assert!(!v.is_empty(), "{}: an empty default is Unset", s.key);
            }
        }
    }
}
