//! The `kms` command line: `init`, `serve`, operator commands on a local database, and
//! schema migrations. Operator commands act as the full-power local operator and print
//! JSON on stdout; errors go to stderr with a non-zero exit status.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::cli::exit;
use crate::config::settings::{
    AUDIT_CHECKPOINT_EVERY, AUDIT_CHECKPOINT_FILE, CONDITION_MAX_DEPTH, CONDITION_MAX_LENGTH,
    DECISION_LOG, DECISION_LOG_FILE, DECISION_LOG_SAMPLE, DECISION_LOG_VALUES, OTLP_ENDPOINT,
    TRACE_SAMPLE_RATIO,
};
use crate::config::settings::{
    REPORT_MAX_MASTER_KEY_AGE, REPORT_MAX_SIGNING_KEY_AGE, REPORT_MAX_TOKEN_AGE,
    REPORT_MIN_AUDIT_RETENTION, REPORT_PERIOD, REPORT_THRESHOLDS,
};

use crate::config::settings::{
    config_help, Setting, ACCESS_TOKEN_TTL, ALERT_WEBHOOK, ALERT_WEBHOOK_SECRET, AUDIT_RETENTION,
    BODY_LIMIT, CACHE_CAPACITY, CACHE_TTL, DB, DB_CONNECT_TIMEOUT, DB_POOL_SIZE, DB_REPLICA,
    DB_STATEMENT_TIMEOUT, DENY_NETWORKS, EXPIRED_TOKEN_RETENTION, HEADER_READ_TIMEOUT,
    INSECURE_FAST_HASH, JWT_AUDIENCE, JWT_ISSUER, JWT_LEEWAY, KEY_ROTATION_INTERVAL, LISTEN,
    LOCKOUT_DURATION, LOCKOUT_THRESHOLD, LOCKOUT_WINDOW, LOG_FORMAT, LOG_LEVEL, MASTER_KEY_COMMAND,
    MASTER_KEY_FILE, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP, PUBLIC_URL, RATE_LIMIT_BURST,
    RATE_LIMIT_PER_IP, REDIS, REDIS_TIMEOUT, REFRESH_OVERLAP, REFRESH_TOKEN_TTL, REQUEST_TIMEOUT,
    SESSION_IDLE_TIMEOUT, SESSION_TTL, SHUTDOWN_TIMEOUT, SSO_REVALIDATE, TLS_CERT, TLS_KEY,
    TRUSTED_PROXIES,
};
use crate::config::settings::{USAGE_COUNTING, USAGE_FLUSH_INTERVAL, USAGE_RETENTION};

/// `kms`: API keys and authorization, as a server and an operator tool.
#[derive(Debug, Parser)]
#[command(
    name = "kms",
    version,
    about = "API keys and authorization: the kms server and operator tool",
    long_about = "API keys and authorization: the kms server and operator tool.\n\n\
        Settings come from flags, then KMS_* environment variables, then the TOML file \
        given by --config (or KMS_CONFIG), then defaults.\n\n\
        Start with `kms init --db kms.db` (prints the root token once), then \
        `kms serve --db kms.db`. Operator commands (app, permission, role, token, verify) \
        work directly on a local database with full power and print JSON.",
    propagate_version = true,
    after_help = exit::statuses_help()
)]
pub struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Settings shared by every command.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// The database path (setting `db`; see [`crate::config`]).
    #[arg(long = DB.long(), help = DB.help_text(), global = true, value_name = "PATH")]
    pub db: Option<String>,
    /// The configuration file (TOML, keys as in the settings table of [`crate::config`]).
    #[arg(long, help = config_help(), global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The log format (setting `log_format`; see [`crate::config`]).
    #[arg(long = LOG_FORMAT.long(), help = LOG_FORMAT.help_text(), global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// The log level (setting `log_level`; see [`crate::config`]).
    #[arg(long = LOG_LEVEL.long(), help = LOG_LEVEL.help_text(), global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// The master key file (setting `master_key_file`; see [`crate::config`]).
    #[arg(long = MASTER_KEY_FILE.long(), help = MASTER_KEY_FILE.help_text(), global = true, value_name = "FILE")]
    pub master_key_file: Option<String>,
    /// The master key command (setting `master_key_command`; see [`crate::config`]).
    #[arg(long = MASTER_KEY_COMMAND.long(), help = MASTER_KEY_COMMAND.help_text(), global = true, value_name = "COMMAND")]
    pub master_key_command: Option<String>,
    /// The database pool size (setting `db_pool_size`; see [`crate::config`]).
    #[arg(long = DB_POOL_SIZE.long(), help = DB_POOL_SIZE.help_text(), global = true, value_name = "N")]
    pub db_pool_size: Option<String>,
    /// The database connect timeout (setting `db_connect_timeout`; see [`crate::config`]).
    #[arg(long = DB_CONNECT_TIMEOUT.long(), help = DB_CONNECT_TIMEOUT.help_text(), global = true, value_name = "DURATION")]
    pub db_connect_timeout: Option<String>,
    /// The database statement timeout (setting `db_statement_timeout`; see [`crate::config`]).
    #[arg(long = DB_STATEMENT_TIMEOUT.long(), help = DB_STATEMENT_TIMEOUT.help_text(), global = true, value_name = "DURATION")]
    pub db_statement_timeout: Option<String>,
    /// The insecure fast hash switch (setting `insecure_fast_hash`; see [`crate::config`]).
    #[arg(long = INSECURE_FAST_HASH.long(), help = INSECURE_FAST_HASH.help_text(), global = true, hide = true)]
    pub insecure_fast_hash: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database and the root token; print {"root_token", "token_id"} once.
    /// Fails, changing nothing, on a database that is already initialised.
    Init,
    /// Run the HTTP server (initialising an empty database first; the root token is then
    /// printed once on stderr). Stops gracefully on SIGINT and SIGTERM.
    Serve(Box<ServeArgs>),
    /// Manage applications.
    #[command(subcommand)]
    App(AppCommand),
    /// Manage permission definitions.
    #[command(subcommand)]
    Permission(PermissionCommand),
    /// Manage roles.
    #[command(subcommand)]
    Role(RoleCommand),
    /// Manage tokens (API keys).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage identity-provider connections (OpenID Connect, SAML) of applications.
    #[command(subcommand)]
    Idp(crate::cli::people::IdpCommand),
    /// Manage users (people who sign in through an identity provider).
    #[command(subcommand)]
    User(crate::cli::people::UserCommand),
    /// Manage users' sessions.
    #[command(subcommand)]
    Session(crate::cli::people::SessionCommand),
    /// Verify a token, optionally against a permission query; prints the verdict as the
    /// HTTP API does.
    Verify(VerifyArgs),
    /// Manage the signing keys of access tokens.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Move the database schema between versions.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Take a consistent copy of a SQLite database, running or not (SQLite's online
    /// backup API; writers go on meanwhile). The copy is written to a temporary file
    /// beside FILE, checked, synced and renamed into place; prints {"file", "bytes",
    /// "pages", "audit_events", "schema_version", "seconds"}. PostgreSQL: use pg_dump
    /// (docs/runbooks/backup-and-restore.md).
    Backup(BackupArgs),
    /// Restore a copy made by `kms backup` into --db PATH: checks that it is a sound kms
    /// database (integrity_check, schema version, audit chain), then writes it beside PATH
    /// and renames it into place. Refuses a PATH that holds data without --force, and one
    /// a running process has open even with it. PostgreSQL: use pg_restore.
    Restore(RestoreArgs),
    /// Maintenance checks of the database.
    #[command(subcommand)]
    Db(DbCommand),
    /// Reports for auditors.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Capacity statistics: objects stored, database size and growth per day; prints the
    /// JSON of `GET /v1/stats`.
    Stats,
    /// Custody of the master key: rotation, and escrow in shares (Shamir).
    #[command(subcommand)]
    MasterKey(crate::cli::custody::MasterKeyCommand),
    /// Configuration helpers: sealing secret settings under the master key.
    #[command(subcommand)]
    Config(crate::cli::custody::ConfigCommand),
    /// Usage reports of applications and tokens (verifications by hour or day and outcome
    /// code, totals, trend, cost), as the HTTP API gives them.
    #[command(subcommand)]
    Usage(crate::cli::usage::UsageCommand),
}

/// `kms report ...`.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// The compliance report, as `GET /v1/reports/compliance` makes it, against the
    /// thresholds of the `report_*` settings (and the retention settings from the
    /// environment or the configuration file), in JSON, HTML or Markdown.
    Compliance(ReportCompliance),
}

/// `kms report compliance`.
#[derive(Debug, Clone, Args)]
pub struct ReportCompliance {
    /// `json` (the API's body), `html` (one self-contained page) or `md` (Markdown).
    #[arg(long, value_enum, default_value = "json")]
    pub format: ReportFormat,
    /// Write the report to FILE (created or replaced) instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The report's thresholds.
    #[command(flatten)]
    pub thresholds: ReportArgs,
}

/// The formats of `kms report compliance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// The JSON of the HTTP API.
    Json,
    /// One self-contained HTML page.
    Html,
    /// Markdown.
    Md,
}

/// The thresholds of the compliance report (`kms serve`, `kms report compliance`).
#[derive(Debug, Clone, Default, Args)]
pub struct ReportArgs {
    /// The rotation policy (setting `report_max_token_age`; see [`crate::config`]).
    #[arg(long = REPORT_MAX_TOKEN_AGE.long(), help = REPORT_MAX_TOKEN_AGE.help_text(), value_name = "DURATION")]
    pub report_max_token_age: Option<String>,
    /// The signing key age limit (setting `report_max_signing_key_age`; see [`crate::config`]).
    #[arg(long = REPORT_MAX_SIGNING_KEY_AGE.long(), help = REPORT_MAX_SIGNING_KEY_AGE.help_text(), value_name = "DURATION")]
    pub report_max_signing_key_age: Option<String>,
    /// The master key age limit (setting `report_max_master_key_age`; see [`crate::config`]).
    #[arg(long = REPORT_MAX_MASTER_KEY_AGE.long(), help = REPORT_MAX_MASTER_KEY_AGE.help_text(), value_name = "DURATION")]
    pub report_max_master_key_age: Option<String>,
    /// The report period (setting `report_period`; see [`crate::config`]).
    #[arg(long = REPORT_PERIOD.long(), help = REPORT_PERIOD.help_text(), value_name = "DURATION")]
    pub report_period: Option<String>,
    /// The minimum audit retention (setting `report_min_audit_retention`; see [`crate::config`]).
    #[arg(long = REPORT_MIN_AUDIT_RETENTION.long(), help = REPORT_MIN_AUDIT_RETENTION.help_text(), value_name = "DURATION")]
    pub report_min_audit_retention: Option<String>,
    /// The thresholds per finding (setting `report_thresholds`; see [`crate::config`]).
    #[arg(long = REPORT_THRESHOLDS.long(), help = REPORT_THRESHOLDS.help_text(), value_name = "FINDING=N,...")]
    pub report_thresholds: Option<String>,
}

/// `kms backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The file to write the copy to.
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `kms restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The copy to restore, made by `kms backup` (or SQLite's `.backup`).
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// Replace a database that holds data at --db (stop every server on it first).
    #[arg(long)]
    pub force: bool,
}

/// `kms db ...`.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Check the database for a maintenance window: integrity (SQLite's integrity_check),
    /// migration status and the audit chain; prints the report and exits with
    /// [`exit::DB_CHECK_FAILED`] when a check fails.
    #[command(about = exit::db_check_about())]
    Check,
}

/// `kms audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole hash chain of the audit log; exits with
    /// [`exit::AUDIT_CHAIN_BROKEN`] when it is broken.
    #[command(about = exit::audit_verify_about())]
    Verify {
        /// Also check the chain against the signed checkpoints in FILE (written by
        /// `kms serve --audit-checkpoint-file`): detects deleted newest events, which the
        /// chain alone cannot.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<std::path::PathBuf>,
    },
}

/// Settings of `kms serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// The listen address (setting `listen`; see [`crate::config`]).
    #[arg(long = LISTEN.long(), help = LISTEN.help_text(), value_name = "ADDR")]
    pub listen: Option<String>,
    /// The body limit (setting `body_limit`; see [`crate::config`]).
    #[arg(long = BODY_LIMIT.long(), help = BODY_LIMIT.help_text(), value_name = "SIZE")]
    pub body_limit: Option<String>,
    /// The request timeout (setting `request_timeout`; see [`crate::config`]).
    #[arg(long = REQUEST_TIMEOUT.long(), help = REQUEST_TIMEOUT.help_text(), value_name = "DURATION")]
    pub request_timeout: Option<String>,
    /// The shutdown timeout (setting `shutdown_timeout`; see [`crate::config`]).
    #[arg(long = SHUTDOWN_TIMEOUT.long(), help = SHUTDOWN_TIMEOUT.help_text(), value_name = "DURATION")]
    pub shutdown_timeout: Option<String>,
    /// The header read timeout (setting `header_read_timeout`; see [`crate::config`]).
    #[arg(long = HEADER_READ_TIMEOUT.long(), help = HEADER_READ_TIMEOUT.help_text(), value_name = "DURATION")]
    pub header_read_timeout: Option<String>,
    /// The connection limit (setting `max_connections`; see [`crate::config`]).
    #[arg(long = MAX_CONNECTIONS.long(), help = MAX_CONNECTIONS.help_text(), value_name = "N")]
    pub max_connections: Option<String>,
    /// The connection limit per client address (setting `max_connections_per_ip`; see [`crate::config`]).
    #[arg(long = MAX_CONNECTIONS_PER_IP.long(), help = MAX_CONNECTIONS_PER_IP.help_text(), value_name = "N")]
    pub max_connections_per_ip: Option<String>,
    /// The cache ttl (setting `cache_ttl`; see [`crate::config`]).
    #[arg(long = CACHE_TTL.long(), help = CACHE_TTL.help_text(), value_name = "DURATION")]
    pub cache_ttl: Option<String>,
    /// The cache capacity (setting `cache_capacity`; see [`crate::config`]).
    #[arg(long = CACHE_CAPACITY.long(), help = CACHE_CAPACITY.help_text(), value_name = "N")]
    pub cache_capacity: Option<String>,
    /// The lockout threshold (setting `lockout_threshold`; see [`crate::config`]).
    #[arg(long = LOCKOUT_THRESHOLD.long(), help = LOCKOUT_THRESHOLD.help_text(), value_name = "N")]
    pub lockout_threshold: Option<String>,
    /// The lockout window (setting `lockout_window`; see [`crate::config`]).
    #[arg(long = LOCKOUT_WINDOW.long(), help = LOCKOUT_WINDOW.help_text(), value_name = "DURATION")]
    pub lockout_window: Option<String>,
    /// The lockout duration (setting `lockout_duration`; see [`crate::config`]).
    #[arg(long = LOCKOUT_DURATION.long(), help = LOCKOUT_DURATION.help_text(), value_name = "DURATION")]
    pub lockout_duration: Option<String>,
    /// The key rotation interval (setting `key_rotation_interval`; see [`crate::config`]).
    #[arg(long = KEY_ROTATION_INTERVAL.long(), help = KEY_ROTATION_INTERVAL.help_text(), value_name = "DURATION")]
    pub key_rotation_interval: Option<String>,
    /// The audit retention (setting `audit_retention`; see [`crate::config`]).
    #[arg(long = AUDIT_RETENTION.long(), help = AUDIT_RETENTION.help_text(), value_name = "DURATION")]
    pub audit_retention: Option<String>,
    /// The expired token retention (setting `expired_token_retention`; see [`crate::config`]).
    #[arg(long = EXPIRED_TOKEN_RETENTION.long(), help = EXPIRED_TOKEN_RETENTION.help_text(), value_name = "DURATION")]
    pub expired_token_retention: Option<String>,
    /// The database replica URL (setting `db_replica`; see [`crate::config`]).
    #[arg(long = DB_REPLICA.long(), help = DB_REPLICA.help_text(), value_name = "URL")]
    pub db_replica: Option<String>,
    /// The Redis URL (setting `redis`; see [`crate::config`]).
    #[arg(long = REDIS.long(), help = REDIS.help_text(), value_name = "URL")]
    pub redis: Option<String>,
    /// The Redis timeout (setting `redis_timeout`; see [`crate::config`]).
    #[arg(long = REDIS_TIMEOUT.long(), help = REDIS_TIMEOUT.help_text(), value_name = "DURATION")]
    pub redis_timeout: Option<String>,
    /// The OTLP endpoint (setting `otlp_endpoint`; see [`crate::config`]).
    #[arg(long = OTLP_ENDPOINT.long(), help = OTLP_ENDPOINT.help_text(), value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// The decision log switch (setting `decision_log`; see [`crate::config`]).
    #[arg(long = DECISION_LOG.long(), help = DECISION_LOG.help_text(), value_name = "BOOL")]
    pub decision_log: Option<String>,
    /// The decision log sample ratio (setting `decision_log_sample`; see [`crate::config`]).
    #[arg(long = DECISION_LOG_SAMPLE.long(), help = DECISION_LOG_SAMPLE.help_text(), value_name = "RATIO")]
    pub decision_log_sample: Option<String>,
    /// The decision log values switch (setting `decision_log_values`; see [`crate::config`]).
    #[arg(long = DECISION_LOG_VALUES.long(), help = DECISION_LOG_VALUES.help_text(), value_name = "BOOL")]
    pub decision_log_values: Option<String>,
    /// The decision log file (setting `decision_log_file`; see [`crate::config`]).
    #[arg(long = DECISION_LOG_FILE.long(), help = DECISION_LOG_FILE.help_text(), value_name = "PATH")]
    pub decision_log_file: Option<String>,
    /// The audit checkpoint file (setting `audit_checkpoint_file`; see [`crate::config`]).
    #[arg(long = AUDIT_CHECKPOINT_FILE.long(), help = AUDIT_CHECKPOINT_FILE.help_text(), value_name = "PATH")]
    pub audit_checkpoint_file: Option<String>,
    /// The audit checkpoint interval (setting `audit_checkpoint_every`; see [`crate::config`]).
    #[arg(long = AUDIT_CHECKPOINT_EVERY.long(), help = AUDIT_CHECKPOINT_EVERY.help_text(), value_name = "EVENTS")]
    pub audit_checkpoint_every: Option<String>,
    /// The condition length limit (setting `condition_max_length`; see [`crate::config`]).
    #[arg(long = CONDITION_MAX_LENGTH.long(), help = CONDITION_MAX_LENGTH.help_text(), value_name = "BYTES")]
    pub condition_max_length: Option<String>,
    /// The condition depth limit (setting `condition_max_depth`; see [`crate::config`]).
    #[arg(long = CONDITION_MAX_DEPTH.long(), help = CONDITION_MAX_DEPTH.help_text(), value_name = "N")]
    pub condition_max_depth: Option<String>,
    /// The public URL (setting `public_url`; see [`crate::config`]).
    #[arg(long = PUBLIC_URL.long(), help = PUBLIC_URL.help_text(), value_name = "URL")]
    pub public_url: Option<String>,
    /// The session lifetime (setting `session_ttl`; see [`crate::config`]).
    #[arg(long = SESSION_TTL.long(), help = SESSION_TTL.help_text(), value_name = "DURATION")]
    pub session_ttl: Option<String>,
    /// The session idle timeout (setting `session_idle_timeout`; see [`crate::config`]).
    #[arg(long = SESSION_IDLE_TIMEOUT.long(), help = SESSION_IDLE_TIMEOUT.help_text(), value_name = "DURATION")]
    pub session_idle_timeout: Option<String>,
    /// The SSO revalidation interval (setting `sso_revalidate`; see [`crate::config`]).
    #[arg(long = SSO_REVALIDATE.long(), help = SSO_REVALIDATE.help_text(), value_name = "DURATION")]
    pub sso_revalidate: Option<String>,
    /// The session retention (setting `session_retention`; see [`crate::config`]).
    #[arg(long = crate::config::settings::SESSION_RETENTION.long(), help = crate::config::settings::SESSION_RETENTION.help_text(), value_name = "DURATION")]
    pub session_retention: Option<String>,
    /// The trace sample ratio (setting `trace_sample_ratio`; see [`crate::config`]).
    #[arg(long = TRACE_SAMPLE_RATIO.long(), help = TRACE_SAMPLE_RATIO.help_text(), value_name = "RATIO")]
    pub trace_sample_ratio: Option<String>,
    /// Settings of access tokens.
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// The compliance report's thresholds.
    #[command(flatten)]
    pub report: ReportArgs,
    /// The TLS certificate file (setting `tls_cert`; see [`crate::config`]).
    #[arg(long = TLS_CERT.long(), help = TLS_CERT.help_text(), value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<String>,
    /// The TLS private key file (setting `tls_key`; see [`crate::config`]).
    #[arg(long = TLS_KEY.long(), help = TLS_KEY.help_text(), value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<String>,
    /// The denied networks (setting `deny_networks`; see [`crate::config`]).
    #[arg(long = DENY_NETWORKS.long(), help = DENY_NETWORKS.help_text(), value_name = "CIDR", value_delimiter = ',')]
    pub deny_network: Vec<String>,
    /// The trusted proxies (setting `trusted_proxies`; see [`crate::config`]).
    #[arg(long = TRUSTED_PROXIES.long(), help = TRUSTED_PROXIES.help_text(), value_name = "CIDR", value_delimiter = ',')]
    pub trusted_proxy: Vec<String>,
    /// The rate limit per client address (setting `rate_limit_per_ip`; see [`crate::config`]).
    #[arg(long = RATE_LIMIT_PER_IP.long(), help = RATE_LIMIT_PER_IP.help_text(), value_name = "N")]
    pub rate_limit_per_ip: Option<String>,
    /// The rate limit burst (setting `rate_limit_burst`; see [`crate::config`]).
    #[arg(long = RATE_LIMIT_BURST.long(), help = RATE_LIMIT_BURST.help_text(), value_name = "N")]
    pub rate_limit_burst: Option<String>,
    /// The alert webhook URL (setting `alert_webhook`; see [`crate::config`]).
    #[arg(long = ALERT_WEBHOOK.long(), help = ALERT_WEBHOOK.help_text(), value_name = "URL")]
    pub alert_webhook: Option<String>,
    /// The alert webhook secret (setting `alert_webhook_secret`; see [`crate::config`]).
    #[arg(long = ALERT_WEBHOOK_SECRET.long(), help = ALERT_WEBHOOK_SECRET.help_text(), value_name = "SECRET")]
    pub alert_webhook_secret: Option<String>,
    /// The usage counting switch (setting `usage_counting`; see [`crate::config`]).
    #[arg(long = USAGE_COUNTING.long(), help = USAGE_COUNTING.help_text(), value_name = "BOOL")]
    pub usage_counting: Option<String>,
    /// The usage flush interval (setting `usage_flush_interval`; see [`crate::config`]).
    #[arg(long = USAGE_FLUSH_INTERVAL.long(), help = USAGE_FLUSH_INTERVAL.help_text(), value_name = "DURATION")]
    pub usage_flush_interval: Option<String>,
    /// The usage retention (setting `usage_retention`; see [`crate::config`]).
    #[arg(long = USAGE_RETENTION.long(), help = USAGE_RETENTION.help_text(), value_name = "DURATION")]
    pub usage_retention: Option<String>,
}

/// Settings of access tokens (`kms serve`, `kms keys rotate`).
#[derive(Debug, Clone, Default, Args)]
pub struct JwtArgs {
    /// The access-token issuer (setting `jwt_issuer`; see [`crate::config`]).
    #[arg(long = JWT_ISSUER.long(), help = JWT_ISSUER.help_text(), value_name = "ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The access-token audience (setting `jwt_audience`; see [`crate::config`]).
    #[arg(long = JWT_AUDIENCE.long(), help = JWT_AUDIENCE.help_text(), value_name = "AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// The access-token lifetime (setting `access_token_ttl`; see [`crate::config`]).
    #[arg(long = ACCESS_TOKEN_TTL.long(), help = ACCESS_TOKEN_TTL.help_text(), value_name = "DURATION")]
    pub access_token_ttl: Option<String>,
    /// The refresh-token lifetime (setting `refresh_token_ttl`; see [`crate::config`]).
    #[arg(long = REFRESH_TOKEN_TTL.long(), help = REFRESH_TOKEN_TTL.help_text(), value_name = "DURATION")]
    pub refresh_token_ttl: Option<String>,
    /// The refresh overlap (setting `refresh_overlap`; see [`crate::config`]).
    #[arg(long = REFRESH_OVERLAP.long(), help = REFRESH_OVERLAP.help_text(), value_name = "DURATION")]
    pub refresh_overlap: Option<String>,
    /// The access-token leeway (setting `jwt_leeway`; see [`crate::config`]).
    #[arg(long = JWT_LEEWAY.long(), help = JWT_LEEWAY.help_text(), value_name = "DURATION")]
    pub jwt_leeway: Option<String>,
}

/// Paging of a listing.
#[derive(Debug, Clone, Default, Args)]
pub struct PageArgs {
    /// Items per page (1–1000) [default: 50]
    #[arg(long)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[arg(long)]
    pub cursor: Option<String>,
}

/// `kms app ...`.
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create an application.
    Create {
        /// Display name, unique.
        #[arg(long)]
        name: String,
        /// Prefix of its tokens: 2–16 of [a-z0-9] starting with a letter [default: kms]
        #[arg(long)]
        token_prefix: Option<String>,
    },
    /// List applications.
    List(PageArgs),
    /// Show one application.
    Get {
        /// Application id.
        id: String,
    },
    /// Rename, disable or enable an application.
    Update {
        /// Application id.
        id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// `active` or `disabled` (a disabled application's tokens stop verifying).
        #[arg(long)]
        status: Option<String>,
    },
    /// Delete an application and all its tokens.
    Delete {
        /// Application id.
        id: String,
    },
}

/// `kms permission ...`.
#[derive(Debug, Subcommand)]
pub enum PermissionCommand {
    /// Define a permission.
    Create {
        /// The scope, e.g. billing.invoices.read.
        scope: String,
        /// What it allows.
        #[arg(long)]
        description: Option<String>,
        /// Scopes it implies (repeat or separate with commas).
        #[arg(long, value_delimiter = ',')]
        implies: Vec<String>,
    },
    /// List every permission.
    List,
    /// Delete a permission (refused while it is granted).
    Delete {
        /// The scope.
        scope: String,
    },
}

/// `kms role ...`.
#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Define a role.
    Create {
        /// The role's name.
        name: String,
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
        /// Scopes it grants (repeat or separate with commas).
        #[arg(long, value_delimiter = ',')]
        permissions: Vec<String>,
        /// Roles it inherits (repeat or separate with commas).
        #[arg(long, value_delimiter = ',')]
        inherits: Vec<String>,
    },
    /// List every role.
    List,
    /// Show one role with its effective scopes.
    Get {
        /// The role's name.
        name: String,
    },
    /// Delete a role.
    Delete {
        /// The role's name.
        name: String,
    },
}

/// `kms token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its plaintext is printed this once.
    Create(TokenCreateArgs),
    /// List an application's tokens.
    List {
        /// Application id.
        #[arg(long)]
        app: String,
        /// Paging.
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one token (never its secret).
    Get {
        /// Token id (tok_...).
        id: String,
    },
    /// Revoke a token (idempotent).
    Revoke {
        /// Token id (tok_...).
        id: String,
    },
    /// Replace a token by a new one with the same grants; the old one keeps working for
    /// the grace period.
    Rotate {
        /// Token id (tok_...).
        id: String,
        /// Seconds the old token keeps working [default: 0]
        #[arg(long)]
        grace_seconds: Option<i64>,
    },
    /// Delete a token; with `--erase`, also clear the metadata copied into the tokens it
    /// was rotated from.
    Delete {
        /// Token id (tok_...).
        id: String,
        /// Erase its metadata everywhere (as `DELETE /v1/tokens/{id}?erase=true`).
        #[arg(long)]
        erase: bool,
    },
    /// Create up to 1,000 tokens at once, all or nothing, from a JSON list of token bodies
    /// (as `POST /v1/apps/{app_id}/tokens` takes them) or a CSV file with a header
    /// `name,scopes,roles` (scopes and roles separated by spaces); prints the plaintexts
    /// this once.
    CreateMany {
        /// Application id.
        #[arg(long)]
        app: String,
        /// The file (`-`: stdin); `.csv` files are read as CSV, anything else as JSON.
        #[arg(long)]
        file: PathBuf,
    },
    /// Revoke many tokens at once, all or nothing: by ids, or by a filter.
    RevokeMany {
        /// Token ids (repeat or separate with commas).
        #[arg(long, value_delimiter = ',')]
        ids: Vec<String>,
        /// A filter as JSON: {"app_id": ..., "name_prefix"?, "metadata"?, "created_before"?}.
        #[arg(long, value_name = "JSON")]
        filter: Option<String>,
    },
}

/// `kms token create`.
#[derive(Debug, Clone, Args)]
pub struct TokenCreateArgs {
    /// Application id.
    #[arg(long)]
    pub app: String,
    /// Display name.
    #[arg(long)]
    pub name: String,
    /// Scopes granted (repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    pub scopes: Vec<String>,
    /// Roles granted (repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, conflicts_with = "expires_at")]
    pub expires_in: Option<i64>,
    /// Expiry as RFC 3339, e.g. 2030-01-01T00:00:00Z.
    #[arg(long)]
    pub expires_at: Option<String>,
    /// Metadata as a JSON object, returned on verification.
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
    /// Rate limit of verifications, LIMIT/SECONDS (e.g. 100/60).
    #[arg(long, value_name = "LIMIT/SECONDS")]
    pub ratelimit: Option<String>,
    /// Number of verifications allowed.
    #[arg(long)]
    pub uses: Option<i64>,
    /// Networks the token may be used from, in CIDR notation (repeat or separate with
    /// commas).
    #[arg(long, value_delimiter = ',')]
    pub ip_allow: Vec<String>,
    /// Conditional grants as a JSON list, e.g.
    /// '[{"scope": "billing.read", "when": "context.region == \"eu\""}]'.
    #[arg(long, value_name = "JSON")]
    pub grants: Option<String>,
}

/// `kms verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The token, or `-` to read it from stdin (keeps it out of shell history and process
    /// listings).
    pub token: String,
    /// A permission query, e.g. "billing.read AND (billing.write OR admin)".
    #[arg(long, conflicts_with = "scopes")]
    pub permissions: Option<String>,
    /// Scopes that must all be held (repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    pub scopes: Vec<String>,
    /// The address the token is used from, checked against its allow-list.
    #[arg(long)]
    pub ip: Option<String>,
    /// The context conditions on grants see, as a JSON object, e.g. '{"region": "eu"}'.
    #[arg(long, value_name = "JSON")]
    pub context: Option<String>,
    /// Exit with [`exit::INVALID_TOKEN`] when the token is not valid.
    #[arg(long, help = exit::fail_invalid_help())]
    pub fail_invalid: bool,
}

/// `kms keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List signing keys: ids, algorithms, states and dates (never private material).
    List,
    /// Make a new active signing key; the previous one verifies until the longest
    /// access-token lifetime has passed, then retires. Needs the master key. A server
    /// already running on the database keeps signing with the key it loaded until that one
    /// retires; against a running server prefer `POST /v1/keys/rotate`.
    Rotate(JwtArgs),
}

/// `kms migrate ...`.
#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Apply migrations up to a version (the latest by default).
    Up {
        /// Target version.
        #[arg(long)]
        to: Option<u32>,
    },
    /// Revert migrations down to a version (one step by default; 0 reverts everything and
    /// loses all data).
    Down {
        /// Target version.
        #[arg(long)]
        to: Option<u32>,
    },
    /// Show which migrations are applied.
    Status,
}

impl Cli {
    /// The settings given as flags, keyed by their configuration-file names.
    pub fn flag_settings(&self) -> BTreeMap<&'static str, String> {
        let mut flags = BTreeMap::new();
        let g = &self.global;
        let mut put = |setting: Setting, value: &Option<String>| {
            if let Some(v) = value {
                flags.insert(setting.key, v.clone());
            }
        };
        put(DB, &g.db);
        put(LOG_FORMAT, &g.log_format);
        put(LOG_LEVEL, &g.log_level);
        put(MASTER_KEY_FILE, &g.master_key_file);
        put(MASTER_KEY_COMMAND, &g.master_key_command);
        put(DB_POOL_SIZE, &g.db_pool_size);
        put(DB_CONNECT_TIMEOUT, &g.db_connect_timeout);
        put(DB_STATEMENT_TIMEOUT, &g.db_statement_timeout);
        if let Command::Serve(s) = &self.command {
            put(LISTEN, &s.listen);
            put(BODY_LIMIT, &s.body_limit);
            put(REQUEST_TIMEOUT, &s.request_timeout);
            put(SHUTDOWN_TIMEOUT, &s.shutdown_timeout);
            put(HEADER_READ_TIMEOUT, &s.header_read_timeout);
            put(MAX_CONNECTIONS, &s.max_connections);
            put(MAX_CONNECTIONS_PER_IP, &s.max_connections_per_ip);
            put(CACHE_TTL, &s.cache_ttl);
            put(CACHE_CAPACITY, &s.cache_capacity);
            put(LOCKOUT_THRESHOLD, &s.lockout_threshold);
            put(LOCKOUT_WINDOW, &s.lockout_window);
            put(LOCKOUT_DURATION, &s.lockout_duration);
            put(KEY_ROTATION_INTERVAL, &s.key_rotation_interval);
            put(TLS_CERT, &s.tls_cert);
            put(TLS_KEY, &s.tls_key);
            put(RATE_LIMIT_PER_IP, &s.rate_limit_per_ip);
            put(RATE_LIMIT_BURST, &s.rate_limit_burst);
            put(AUDIT_RETENTION, &s.audit_retention);
            put(EXPIRED_TOKEN_RETENTION, &s.expired_token_retention);
            put(ALERT_WEBHOOK, &s.alert_webhook);
            put(ALERT_WEBHOOK_SECRET, &s.alert_webhook_secret);
            put(DB_REPLICA, &s.db_replica);
            put(REDIS, &s.redis);
            put(REDIS_TIMEOUT, &s.redis_timeout);
            put(OTLP_ENDPOINT, &s.otlp_endpoint);
            put(TRACE_SAMPLE_RATIO, &s.trace_sample_ratio);
            put(DECISION_LOG, &s.decision_log);
            put(DECISION_LOG_SAMPLE, &s.decision_log_sample);
            put(DECISION_LOG_VALUES, &s.decision_log_values);
            put(DECISION_LOG_FILE, &s.decision_log_file);
            put(AUDIT_CHECKPOINT_FILE, &s.audit_checkpoint_file);
            put(AUDIT_CHECKPOINT_EVERY, &s.audit_checkpoint_every);
            put(CONDITION_MAX_LENGTH, &s.condition_max_length);
            put(CONDITION_MAX_DEPTH, &s.condition_max_depth);
            put(PUBLIC_URL, &s.public_url);
            put(SESSION_TTL, &s.session_ttl);
            put(SESSION_IDLE_TIMEOUT, &s.session_idle_timeout);
            put(SSO_REVALIDATE, &s.sso_revalidate);
            put(USAGE_COUNTING, &s.usage_counting);
            put(USAGE_FLUSH_INTERVAL, &s.usage_flush_interval);
            put(USAGE_RETENTION, &s.usage_retention);
            put(
                crate::config::settings::SESSION_RETENTION,
                &s.session_retention,
            );
            let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.join(","));
            put(DENY_NETWORKS, &list(&s.deny_network));
            put(TRUSTED_PROXIES, &list(&s.trusted_proxy));
        }
        let jwt = match &self.command {
            Command::Serve(s) => Some(&s.jwt),
            Command::Keys(KeysCommand::Rotate(j)) => Some(j),
            _ => None,
        };
        if let Some(j) = jwt {
            put(JWT_ISSUER, &j.jwt_issuer);
            put(JWT_AUDIENCE, &j.jwt_audience);
            put(ACCESS_TOKEN_TTL, &j.access_token_ttl);
            put(REFRESH_TOKEN_TTL, &j.refresh_token_ttl);
            put(REFRESH_OVERLAP, &j.refresh_overlap);
            put(JWT_LEEWAY, &j.jwt_leeway);
        }
        let report = match &self.command {
            Command::Serve(s) => Some(&s.report),
            Command::Report(ReportCommand::Compliance(r)) => Some(&r.thresholds),
            _ => None,
        };
        if let Some(r) = report {
            put(REPORT_MAX_TOKEN_AGE, &r.report_max_token_age);
            put(REPORT_MAX_SIGNING_KEY_AGE, &r.report_max_signing_key_age);
            put(REPORT_MAX_MASTER_KEY_AGE, &r.report_max_master_key_age);
            put(REPORT_PERIOD, &r.report_period);
            put(REPORT_MIN_AUDIT_RETENTION, &r.report_min_audit_retention);
            put(REPORT_THRESHOLDS, &r.report_thresholds);
        }
        if g.insecure_fast_hash {
            flags.insert(INSECURE_FAST_HASH.key, "true".to_owned());
        }
        flags
    }
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
    use crate::config::settings::{ALL, CONFIG_ENV};
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// The flags of `kms serve` (the global ones included), by long name.
    fn serve_flags() -> BTreeMap<String, clap::Arg> {
        let mut cli = Cli::command();
        cli.build();
        let serve = cli.find_subcommand("serve").unwrap();
        serve
            .get_arguments()
            .filter_map(|a| Some((a.get_long()?.to_owned(), a.clone())))
            .collect()
    }

    #[test]
    fn every_flag_of_a_setting_is_the_settings_table_entry() {
        let flags = serve_flags();
        for setting in &ALL {
            let Some(long) = setting.flag else { continue };
            let arg = flags
                .get(long)
                .unwrap_or_else(|| panic!("kms serve has no --{long} for `{}`", setting.key));
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert_eq!(help, setting.help_text(), "the help of --{long}");
            assert!(help.contains(&format!("[env: {}]", setting.env)), "{help}");
            assert!(
                help.contains(&format!("[default: {}]", setting.default_text())),
                "{help}"
            );
            assert_eq!(arg.get_long_help(), None, "--{long} has a second help text");
            // Environment variables are read by `config::Sources`, with the file between
            // them and the defaults; clap must not read them too.
            assert_eq!(arg.get_env(), None, "--{long} reads the environment itself");
        }
    }

    #[test]
    fn every_flag_of_kms_serve_is_a_setting() {
        for (long, arg) in serve_flags() {
            match long.as_str() {
                "help" | "version" => {}
                "config" => {
                    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                    assert!(help.contains(&format!("[env: {CONFIG_ENV}]")), "{help}");
                }
                _ => assert!(
                    ALL.iter().any(|s| s.flag == Some(long.as_str())),
                    "--{long} is not in the settings table (config/settings.rs)"
                ),
            }
        }
    }

    #[test]
    fn every_flag_of_a_setting_reaches_its_setting() {
        for setting in &ALL {
            let Some(long) = setting.flag else { continue };
            let flag = format!("--{long}");
            let (mut args, expected) = if setting.key == INSECURE_FAST_HASH.key {
                (vec!["kms", "serve", flag.as_str()], "true")
            } else {
                (vec!["kms", "serve", flag.as_str(), "v1"], "v1")
            };
            // The TLS pair is required together.
            match setting.key {
                "tls_cert" => args.extend(["--tls-key", "v2"]),
                "tls_key" => args.extend(["--tls-cert", "v2"]),
                _ => {}
            }
            let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{flag}: {e}"));
            assert_eq!(
                cli.flag_settings().get(setting.key).map(String::as_str),
                Some(expected),
                "{flag} does not set `{}`",
                setting.key
            );
        }
        let jwt: Vec<_> = [
            "jwt-issuer",
            "jwt-audience",
            "access-token-ttl",
            "refresh-token-ttl",
        ]
        .iter()
        .map(|l| ALL.iter().find(|s| s.flag == Some(l)).unwrap())
        .collect();
        for setting in jwt {
            let flag = setting.flag_name();
            let cli = Cli::try_parse_from(["kms", "keys", "rotate", flag.as_str(), "v1"]).unwrap();
            assert_eq!(
                cli.flag_settings().get(setting.key).map(String::as_str),
                Some("v1")
            );
        }
    }

    #[test]
    fn each_exit_status_has_one_meaning() {
        let statuses = [
            exit::SUCCESS,
            exit::FAILURE,
            exit::USAGE,
            exit::INVALID_TOKEN,
            exit::AUDIT_CHAIN_BROKEN,
            exit::DB_CHECK_FAILED,
        ];
        for (i, a) in statuses.iter().enumerate() {
            assert!(
                !statuses[i + 1..].contains(a),
                "exit status {a} has two meanings"
            );
        }
        let usage = Cli::try_parse_from(["kms", "no-such-command"]).unwrap_err();
        assert_eq!(
            usage.exit_code(),
            i32::from(exit::USAGE),
            "clap's usage status"
        );
        let help = Cli::command().render_help().to_string();
        assert!(help.contains(&exit::statuses_help()), "{help}");
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from(["kms", "serve", "--db", "x.db", "--listen", "127.0.0.1:0"])
            .unwrap();
        let flags = cli.flag_settings();
        assert_eq!(flags.get("db").map(String::as_str), Some("x.db"));
        assert_eq!(flags.get("listen").map(String::as_str), Some("127.0.0.1:0"));
    }

    #[test]
    fn lists_take_commas_or_repeats() {
        let cli = Cli::try_parse_from([
            "kms",
            "token",
            "create",
            "--app",
            "a",
            "--name",
            "n",
            "--scopes",
            "a.read,b.read",
            "--scopes",
            "c",
        ])
        .unwrap();
        let Command::Token(TokenCommand::Create(args)) = cli.command else {
            unreachable!("parsed as token create")
        };
        assert_eq!(args.scopes, ["a.read", "b.read", "c"]);
    }
}
