//! The `kms` command line: `init`, `serve`, operator commands on a local database, and
//! schema migrations. Operator commands act as the full-power local operator and print
//! JSON on stdout; errors go to stderr with a non-zero exit status.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    propagate_version = true
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
    /// SQLite database file [env: KMS_DB] [default: ./kms.db]
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<String>,
    /// TOML configuration file with any of the settings (keys as in the flags, with `_`)
    /// [env: KMS_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format: `text` or `json` (logs go to stderr) [env: KMS_LOG_FORMAT]
    /// [default: text]
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Log filter such as `info` or `kms_server=debug,info` [env: KMS_LOG_LEVEL]
    /// [default: info]
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// File holding the base64 master key that seals access-token signing keys; created
    /// (mode 0600) by `init` and `serve` when missing. The key itself may instead come from
    /// KMS_MASTER_KEY (base64 of 32 bytes), never both [env: KMS_MASTER_KEY_FILE]
    /// [default: the database path + `.key`]
    #[arg(long, global = true, value_name = "FILE")]
    pub master_key_file: Option<String>,
    /// TEST ONLY: deliberately cheap argon2id parameters so test suites run fast. Never
    /// use where real secrets are issued [env: KMS_INSECURE_FAST_HASH]
    #[arg(long, global = true, hide = true)]
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
}

/// `kms audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole hash chain of the audit log (from its retention anchor, if events
    /// were pruned); prints the verdict as `GET /v1/audit/verify` does and exits with
    /// status 3 when the chain is broken.
    Verify,
}

/// Settings of `kms serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on, IP:PORT (port 0 picks a free port; the bound address is
    /// printed on stderr as `listening on ADDR`) [env: KMS_LISTEN]
    /// [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Largest request body, e.g. 1048576, 512KiB, 1MiB [env: KMS_BODY_LIMIT]
    /// [default: 1MiB]
    #[arg(long, value_name = "SIZE")]
    pub body_limit: Option<String>,
    /// Longest a request may run, e.g. 30s, 500ms [env: KMS_REQUEST_TIMEOUT]
    /// [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub request_timeout: Option<String>,
    /// Longest in-flight requests may take to finish after a shutdown signal
    /// [env: KMS_SHUTDOWN_TIMEOUT] [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub shutdown_timeout: Option<String>,
    /// Longest a client may take to send a request's headers, on a new connection and on
    /// a kept-alive one after each answer; a TLS handshake has as long again. Over it the
    /// connection is closed [env: KMS_HEADER_READ_TIMEOUT] [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub header_read_timeout: Option<String>,
    /// Connections open at once; one more is closed unread; 0: no limit
    /// [env: KMS_MAX_CONNECTIONS] [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<String>,
    /// Connections open at once from one client address (IPv6 per /64; trusted proxies
    /// are exempt); one more is closed unread; 0: no limit
    /// [env: KMS_MAX_CONNECTIONS_PER_IP] [default: 256]
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<String>,
    /// How long a verified key stays cached [env: KMS_CACHE_TTL] [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub cache_ttl: Option<String>,
    /// Most verified keys cached; 0 disables the cache [env: KMS_CACHE_CAPACITY]
    /// [default: 100000]
    #[arg(long, value_name = "N")]
    pub cache_capacity: Option<String>,
    /// Failed authentications or verifications from one source, within the lockout
    /// window, that lock it out; 0 disables lockouts [env: KMS_LOCKOUT_THRESHOLD]
    /// [default: 10]
    #[arg(long, value_name = "N")]
    pub lockout_threshold: Option<String>,
    /// The window in which failures are counted [env: KMS_LOCKOUT_WINDOW] [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub lockout_window: Option<String>,
    /// How long a locked-out source is refused (429) [env: KMS_LOCKOUT_DURATION]
    /// [default: 300s]
    #[arg(long, value_name = "DURATION")]
    pub lockout_duration: Option<String>,
    /// Rotate the signing key of access tokens once the active one is this old, e.g. 30d;
    /// 0 never rotates on a schedule [env: KMS_KEY_ROTATION_INTERVAL] [default: 0]
    #[arg(long, value_name = "DURATION")]
    pub key_rotation_interval: Option<String>,
    /// Delete audit events older than this, e.g. 365d, keeping the chain verifiable from
    /// the first kept event; 0 keeps every event [env: KMS_AUDIT_RETENTION] [default: 0]
    #[arg(long, value_name = "DURATION")]
    pub audit_retention: Option<String>,
    /// Delete tokens that expired longer ago than this, e.g. 30d; 0 keeps them
    /// [env: KMS_EXPIRED_TOKEN_RETENTION] [default: 0]
    #[arg(long, value_name = "DURATION")]
    pub expired_token_retention: Option<String>,
    /// Settings of access tokens.
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// PEM certificate chain: serve HTTPS (with --tls-key) [env: KMS_TLS_CERT]
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<String>,
    /// PEM private key of the certificate [env: KMS_TLS_KEY]
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<String>,
    /// Refuse every request from these networks with 403, CIDR (repeat or separate with
    /// commas) [env: KMS_DENY_NETWORKS]
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub deny_network: Vec<String>,
    /// Networks of reverse proxies whose X-Forwarded-For is believed, CIDR (repeat or
    /// separate with commas); by default none [env: KMS_TRUSTED_PROXIES]
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub trusted_proxy: Vec<String>,
    /// Management calls per second allowed from one client address; 0 disables the
    /// limit [env: KMS_RATE_LIMIT_PER_IP] [default: 100]
    #[arg(long, value_name = "N")]
    pub rate_limit_per_ip: Option<String>,
    /// Management calls one client address may make at once before the rate applies
    /// [env: KMS_RATE_LIMIT_BURST] [default: twice the rate]
    #[arg(long, value_name = "N")]
    pub rate_limit_burst: Option<String>,
    /// POST security events (lockouts, refresh-token reuse, a broken audit chain) to this
    /// URL as signed JSON [env: KMS_ALERT_WEBHOOK]
    #[arg(long, value_name = "URL")]
    pub alert_webhook: Option<String>,
    /// HMAC-SHA256 key of the webhook's X-KMS-Signature header, at least 16 characters;
    /// prefer the environment variable [env: KMS_ALERT_WEBHOOK_SECRET]
    #[arg(long, value_name = "SECRET")]
    pub alert_webhook_secret: Option<String>,
}

/// Settings of access tokens (`kms serve`, `kms keys rotate`).
#[derive(Debug, Clone, Default, Args)]
pub struct JwtArgs {
    /// `iss` of access tokens [env: KMS_JWT_ISSUER] [default: kms]
    #[arg(long, value_name = "ISSUER")]
    pub jwt_issuer: Option<String>,
    /// `aud` of access tokens when the client asks for none [env: KMS_JWT_AUDIENCE]
    /// [default: kms]
    #[arg(long, value_name = "AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Lifetime of access tokens; a rotated key verifies this long (plus leeway) before it
    /// retires [env: KMS_ACCESS_TOKEN_TTL] [default: 900s]
    #[arg(long, value_name = "DURATION")]
    pub access_token_ttl: Option<String>,
    /// Lifetime of refresh tokens [env: KMS_REFRESH_TOKEN_TTL] [default: 30d]
    #[arg(long, value_name = "DURATION")]
    pub refresh_token_ttl: Option<String>,
    /// How long an exchanged refresh token may be exchanged again (client retries) before
    /// it counts as reuse [env: KMS_REFRESH_OVERLAP] [default: 0]
    #[arg(long, value_name = "DURATION")]
    pub refresh_overlap: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` [env: KMS_JWT_LEEWAY] [default: 30s]
    #[arg(long, value_name = "DURATION")]
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
    /// Delete a token.
    Delete {
        /// Token id (tok_...).
        id: String,
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
    /// Exit with status 3 when the token is not valid (the verdict is printed either way).
    #[arg(long)]
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
        let mut put = |key: &'static str, value: &Option<String>| {
            if let Some(v) = value {
                flags.insert(key, v.clone());
            }
        };
        put("db", &g.db);
        put("log_format", &g.log_format);
        put("log_level", &g.log_level);
        put("master_key_file", &g.master_key_file);
        if let Command::Serve(s) = &self.command {
            put("listen", &s.listen);
            put("body_limit", &s.body_limit);
            put("request_timeout", &s.request_timeout);
            put("shutdown_timeout", &s.shutdown_timeout);
            put("header_read_timeout", &s.header_read_timeout);
            put("max_connections", &s.max_connections);
            put("max_connections_per_ip", &s.max_connections_per_ip);
            put("cache_ttl", &s.cache_ttl);
            put("cache_capacity", &s.cache_capacity);
            put("lockout_threshold", &s.lockout_threshold);
            put("lockout_window", &s.lockout_window);
            put("lockout_duration", &s.lockout_duration);
            put("key_rotation_interval", &s.key_rotation_interval);
            put("tls_cert", &s.tls_cert);
            put("tls_key", &s.tls_key);
            put("rate_limit_per_ip", &s.rate_limit_per_ip);
            put("rate_limit_burst", &s.rate_limit_burst);
            put("audit_retention", &s.audit_retention);
            put("expired_token_retention", &s.expired_token_retention);
            put("alert_webhook", &s.alert_webhook);
            put("alert_webhook_secret", &s.alert_webhook_secret);
            let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.join(","));
            put("deny_networks", &list(&s.deny_network));
            put("trusted_proxies", &list(&s.trusted_proxy));
        }
        let jwt = match &self.command {
            Command::Serve(s) => Some(&s.jwt),
            Command::Keys(KeysCommand::Rotate(j)) => Some(j),
            _ => None,
        };
        if let Some(j) = jwt {
            put("jwt_issuer", &j.jwt_issuer);
            put("jwt_audience", &j.jwt_audience);
            put("access_token_ttl", &j.access_token_ttl);
            put("refresh_token_ttl", &j.refresh_token_ttl);
            put("refresh_overlap", &j.refresh_overlap);
            put("jwt_leeway", &j.jwt_leeway);
        }
        if g.insecure_fast_hash {
            flags.insert("insecure_fast_hash", "true".to_owned());
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
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
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
