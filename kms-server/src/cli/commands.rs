//! What each `kms` command does.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use kms_core::{
    AppUpdate, Kms, NewApp, NewPermission, NewRole, NewToken, PageRequest, RateLimitInput,
    RotateToken, VerifyRequest,
};
use serde::Serialize;
use serde_json::json;

use crate::bootstrap::{self, open_kms, MasterKeyFile, StartError};
use crate::cli::args::{
    AppCommand, AuditCommand, Cli, Command, DbCommand, KeysCommand, MigrateCommand, PageArgs,
    PermissionCommand, RoleCommand, TokenCommand, TokenCreateArgs, VerifyArgs,
};
use crate::cli::progress::Progress;
use crate::cli::{exit, maintenance};
use crate::config::{Config, MasterKeySource, ServeConfig, Sources};

/// A command failed; the message is for the person at the terminal.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(String);

impl CommandError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        CommandError(message.into())
    }
}

impl From<kms_core::Error> for CommandError {
    fn from(e: kms_core::Error) -> Self {
        CommandError(crate::http::error::error_chain(&e))
    }
}

impl From<kms_core::store::StoreError> for CommandError {
    fn from(e: kms_core::store::StoreError) -> Self {
        CommandError(crate::http::error::error_chain(&e))
    }
}

impl From<StartError> for CommandError {
    fn from(e: StartError) -> Self {
        CommandError(e.to_string())
    }
}

impl From<crate::config::ConfigError> for CommandError {
    fn from(e: crate::config::ConfigError) -> Self {
        CommandError(e.to_string())
    }
}

/// Runs the parsed command line and returns the process's exit status.
pub fn run(cli: Cli) -> ExitCode {
    match run_inner(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kms: error: {err}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn run_inner(cli: Cli) -> Result<ExitCode, CommandError> {
    let mut sources = Sources::load(
        cli.flag_settings(),
        |name| std::env::var(name).ok(),
        cli.global.config.as_deref(),
    )?;
    // Sealed secret settings (`kms config seal`) are opened before anything reads them.
    crate::config::sealed::unseal(&mut sources, |s| {
        let source = crate::config::master_key_source(s)?;
        crate::bootstrap::load_master_key_from(&source).map_err(|e| {
            crate::config::ConfigError::new(format!("cannot open sealed settings: {e}"))
        })
    })?;
    // Before the rest of the settings, which on PostgreSQL demand a master key that a
    // refused copy does not need.
    if crate::config::resolve_db(&sources)?
        .to_str()
        .is_some_and(kms_store::postgres::is_postgres_url)
    {
        match &cli.command {
            Command::Backup(_) => return Err(maintenance::postgres_refusal("backup")),
            Command::Restore(_) => return Err(maintenance::postgres_refusal("restore")),
            _ => {}
        }
    }
    let config = Config::resolve(&sources)?;
    let serve_config = match &cli.command {
        Command::Serve(_) => Some(ServeConfig::resolve(&sources)?),
        _ => None,
    };
    let tracing = serve_config.as_ref().and_then(|s| s.tracing.as_ref());
    let telemetry = crate::ops::logging::init(config.log_format, &config.log_level, tracing)
        .map_err(CommandError::new)?;
    let report = match &cli.command {
        Command::Report(_) => Some(crate::config::resolve_report(&sources)?),
        _ => None,
    };
    let outcome = run_command(cli, &config, serve_config, report);
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    outcome
}

fn run_command(
    cli: Cli,
    config: &Config,
    serve_config: Option<ServeConfig>,
    report: Option<kms_core::ComplianceSettings>,
) -> Result<ExitCode, CommandError> {
    let config = config.clone();
    if config.insecure_fast_hash {
        tracing::warn!("insecure fast hashing is on: for tests only, never for real secrets");
    }

    match cli.command {
        Command::Init => init(&config).map(|()| ExitCode::SUCCESS),
        Command::Serve(_) => {
            let serve_config =
                serve_config.ok_or_else(|| CommandError::new("no server settings"))?;
            bootstrap::serve(&config, &serve_config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate(cmd) => migrate(&config, cmd).map(|()| ExitCode::SUCCESS),
        Command::App(cmd) => {
            let kms = open_existing(&config)?;
            app(&kms, cmd).map(|()| ExitCode::SUCCESS)
        }
        Command::Permission(cmd) => {
            let kms = open_existing(&config)?;
            permission(&kms, cmd).map(|()| ExitCode::SUCCESS)
        }
        Command::Role(cmd) => {
            let kms = open_existing(&config)?;
            role(&kms, cmd).map(|()| ExitCode::SUCCESS)
        }
        Command::Token(cmd) => {
            let kms = open_existing(&config)?;
            token(&kms, cmd).map(|()| ExitCode::SUCCESS)
        }
        Command::Verify(args) => {
            let kms = open_existing(&config)?;
            verify(&kms, args)
        }
        Command::Idp(cmd) => crate::cli::people::idp(&config, cmd).map(|()| ExitCode::SUCCESS),
        Command::User(cmd) => {
            let kms = open_existing(&config)?;
            crate::cli::people::user(&kms, cmd).map(|()| ExitCode::SUCCESS)
        }
        Command::Session(cmd) => {
            let kms = open_existing(&config)?;
            crate::cli::people::session(&kms, cmd).map(|()| ExitCode::SUCCESS)
        }
        Command::Keys(cmd) => keys(&config, cmd).map(|()| ExitCode::SUCCESS),
        Command::MasterKey(cmd) => {
            crate::cli::custody::master_key(&config, cmd).map(|()| ExitCode::SUCCESS)
        }
        Command::Config(cmd) => {
            crate::cli::custody::config(&config, cmd).map(|()| ExitCode::SUCCESS)
        }
        Command::Backup(args) => maintenance::backup(&config, &args).map(|()| ExitCode::SUCCESS),
        Command::Restore(args) => maintenance::restore(&config, &args).map(|()| ExitCode::SUCCESS),
        Command::Db(DbCommand::Check) => maintenance::db_check(&config),
        Command::Report(crate::cli::args::ReportCommand::Compliance(args)) => {
            let kms = open_existing(&config)?;
            let settings = report.unwrap_or_default();
            crate::cli::reports::compliance(&kms, &settings, &args).map(|()| ExitCode::SUCCESS)
        }
        Command::Stats => {
            let kms = open_existing(&config)?;
            crate::cli::reports::stats(&kms).map(|()| ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Verify {
            checkpoint: Some(file),
        }) => {
            let kms = open_existing(&config)?;
            let checkpoints =
                crate::ops::checkpoints::read_checkpoints(&file).map_err(CommandError::new)?;
            let verdict = kms.verify_audit_checkpoints(&kms.operator(), &checkpoints)?;
            print_json(&verdict)?;
            Ok(if verdict.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(exit::AUDIT_CHAIN_BROKEN)
            })
        }
        Command::Usage(cmd) => {
            let kms = open_existing(&config)?;
            crate::cli::usage::usage(&kms, cmd).map(|()| ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Verify { checkpoint: None }) => {
            let kms = open_existing(&config)?;
            let verdict = kms.verify_audit(&kms.operator())?;
            print_json(&verdict)?;
            Ok(match verdict {
                kms_core::AuditVerification::Intact { .. } => ExitCode::SUCCESS,
                kms_core::AuditVerification::Broken { .. } => {
                    ExitCode::from(exit::AUDIT_CHAIN_BROKEN)
                }
            })
        }
    }
}

/// Opens an existing, initialised database for an operator command.
pub(crate) fn open_existing(config: &Config) -> Result<Kms, CommandError> {
    if config.postgres_url().is_none() && !config.db.exists() {
        return Err(CommandError::new(format!(
            "no database at {}; create one with `kms init --db {}`",
            config.db.display(),
            config.db.display()
        )));
    }
    let kms = open_kms(config, None, MasterKeyFile::UseIfPresent, None)?;
    if !kms.is_initialized()? {
        return Err(CommandError::new(format!(
            "the database at {} is not initialised; run `kms init --db {}` first",
            config.db_shown(),
            config.db_shown()
        )));
    }
    Ok(kms)
}

pub(crate) fn print_json(value: &impl Serialize) -> Result<(), CommandError> {
    let text = serde_json::to_string(value)
        .map_err(|e| CommandError::new(format!("cannot encode the output: {e}")))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| CommandError::new(format!("cannot write the output: {e}")))
}

fn init(config: &Config) -> Result<(), CommandError> {
    let kms = open_kms(config, None, MasterKeyFile::UseIfPresent, None)?;
    if kms.is_initialized()? {
        return Err(CommandError::new(format!(
            "the database at {} is already initialised; nothing was changed",
            config.db_shown()
        )));
    }
    // The master key is created with the database; reopen so the first signing key is made.
    let kms = open_kms(config, None, MasterKeyFile::CreateIfMissing, None)?;
    let root = kms.initialize()?;
    print_json(&json!({"root_token": root.token, "token_id": root.info.id}))
}

fn keys(config: &Config, cmd: KeysCommand) -> Result<(), CommandError> {
    let kms = open_existing(config)?;
    let op = kms.operator();
    match cmd {
        KeysCommand::List => {
            let items = kms.list_keys(&op)?;
            print_json(&json!({"items": items, "next_cursor": null}))
        }
        KeysCommand::Rotate(_) => {
            if let MasterKeySource::File(path) = &config.master_key {
                if !path.exists() {
                    return Err(CommandError::new(format!(
                        "rotating keys needs the master key: no file at {} and KMS_MASTER_KEY \
                         is not set",
                        path.display()
                    )));
                }
            }
            print_json(&kms.rotate_keys(&op)?)
        }
    }
}

fn migrate(config: &Config, cmd: MigrateCommand) -> Result<(), CommandError> {
    if let Some(url) = config.postgres_url() {
        return migrate_postgres(url, cmd);
    }
    use kms_store::migrations;
    let path = config.db.as_path();
    match cmd {
        MigrateCommand::Up { to } => {
            let applied = migrations::up(path, to)?;
            print_json(&json!({"applied": applied, "version": current_version(path)?}))
        }
        MigrateCommand::Down { to } => {
            require_file(path)?;
            let target = match to {
                Some(t) => t,
                None => current_version(path)?.saturating_sub(1),
            };
            let reverted = migrations::down(path, target)?;
            print_json(&json!({"reverted": reverted, "version": current_version(path)?}))
        }
        MigrateCommand::Status => {
            require_file(path)?;
            let status = migrations::status(path)?;
            let items: Vec<_> = status
                .iter()
                .map(|m| {
                    json!({
                        "version": m.version,
                        "name": m.name,
                        "applied": m.applied,
                        "applied_at": m.applied_at,
                    })
                })
                .collect();
            print_json(&json!({
                "version": current_version(path)?,
                "latest": migrations::latest_version(),
                "migrations": items,
            }))
        }
    }
}

/// `kms migrate` on a PostgreSQL database: the same steps and output as on SQLite.
fn migrate_postgres(url: &str, cmd: MigrateCommand) -> Result<(), CommandError> {
    let store = kms_store::PostgresStore::open_unmigrated(url, Default::default())?;
    let version = |store: &kms_store::PostgresStore| -> Result<u32, CommandError> {
        Ok(store
            .migration_status()?
            .iter()
            .filter(|m| m.applied)
            .map(|m| m.version)
            .max()
            .unwrap_or(0))
    };
    match cmd {
        MigrateCommand::Up { to } => {
            let applied = store.migrate_up(to)?;
            print_json(&json!({"applied": applied, "version": version(&store)?}))
        }
        MigrateCommand::Down { to } => {
            let target = match to {
                Some(t) => t,
                None => version(&store)?.saturating_sub(1),
            };
            let reverted = store.migrate_down(target)?;
            print_json(&json!({"reverted": reverted, "version": version(&store)?}))
        }
        MigrateCommand::Status => {
            let items: Vec<_> = store
                .migration_status()?
                .iter()
                .map(|m| {
                    json!({
                        "version": m.version,
                        "name": m.name,
                        "applied": m.applied,
                        "applied_at": m.applied_at,
                    })
                })
                .collect();
            print_json(&json!({
                "version": version(&store)?,
                "latest": kms_store::postgres::migrations::latest_version(),
                "migrations": items,
            }))
        }
    }
}

fn require_file(path: &Path) -> Result<(), CommandError> {
    if path.exists() {
        Ok(())
    } else {
        Err(CommandError::new(format!(
            "no database at {}",
            path.display()
        )))
    }
}

fn current_version(path: &Path) -> Result<u32, CommandError> {
    Ok(kms_store::migrations::status(path)?
        .iter()
        .filter(|m| m.applied)
        .map(|m| m.version)
        .max()
        .unwrap_or(0))
}

pub(crate) fn page(args: PageArgs) -> PageRequest {
    PageRequest {
        limit: args.limit,
        cursor: args.cursor,
    }
}

fn app(kms: &Kms, cmd: AppCommand) -> Result<(), CommandError> {
    let op = kms.operator();
    match cmd {
        AppCommand::Create { name, token_prefix } => print_json(&kms.create_app(
            &op,
            NewApp {
                name,
                token_prefix,
                ..Default::default()
            },
        )?),
        AppCommand::List(p) => print_json(&kms.list_apps(&op, page(p))?),
        AppCommand::Get { id } => print_json(&kms.get_app(&op, &id)?),
        AppCommand::Update { id, name, status } => print_json(&kms.update_app(
            &op,
            &id,
            AppUpdate {
                name,
                status,
                ..Default::default()
            },
        )?),
        AppCommand::Delete { id } => {
            kms.delete_app(&op, &id)?;
            print_json(&json!({"deleted": true, "id": id}))
        }
    }
}

fn permission(kms: &Kms, cmd: PermissionCommand) -> Result<(), CommandError> {
    let op = kms.operator();
    match cmd {
        PermissionCommand::Create {
            scope,
            description,
            implies,
        } => print_json(&kms.create_permission(
            &op,
            NewPermission {
                scope,
                description,
                implies,
            },
        )?),
        PermissionCommand::List => {
            print_json(&json!({"items": kms.list_permissions(&op)?, "next_cursor": null}))
        }
        PermissionCommand::Delete { scope } => {
            kms.delete_permission(&op, &scope)?;
            print_json(&json!({"deleted": true, "scope": scope}))
        }
    }
}

fn role(kms: &Kms, cmd: RoleCommand) -> Result<(), CommandError> {
    let op = kms.operator();
    match cmd {
        RoleCommand::Create {
            name,
            description,
            permissions,
            inherits,
        } => print_json(&kms.create_role(
            &op,
            NewRole {
                name,
                description,
                permissions,
                inherits,
                grants: Vec::new(),
            },
        )?),
        RoleCommand::List => {
            print_json(&json!({"items": kms.list_roles(&op)?, "next_cursor": null}))
        }
        RoleCommand::Get { name } => print_json(&kms.get_role(&op, &name)?),
        RoleCommand::Delete { name } => {
            kms.delete_role(&op, &name)?;
            print_json(&json!({"deleted": true, "name": name}))
        }
    }
}

fn new_token(args: TokenCreateArgs) -> Result<(String, NewToken), CommandError> {
    let metadata = match args.metadata {
        None => None,
        Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(map)) => Some(map),
            _ => {
                return Err(CommandError::new(
                    "--metadata must be a JSON object, e.g. '{\"team\":\"ci\"}'",
                ))
            }
        },
    };
    let ratelimit = match args.ratelimit {
        None => None,
        Some(text) => {
            let parsed = text
                .split_once('/')
                .and_then(|(l, p)| Some((l.trim().parse().ok()?, p.trim().parse().ok()?)));
            let Some((limit, per_seconds)) = parsed else {
                return Err(CommandError::new(
                    "--ratelimit must be LIMIT/SECONDS, e.g. 100/60",
                ));
            };
            Some(RateLimitInput { limit, per_seconds })
        }
    };
    let req = NewToken {
        name: args.name,
        scopes: args.scopes,
        roles: args.roles,
        expires_in: args.expires_in,
        expires_at: args.expires_at,
        metadata,
        ratelimit,
        uses: args.uses,
        ip_allow: (!args.ip_allow.is_empty()).then_some(args.ip_allow),
        grants: match args.grants {
            None => Vec::new(),
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                CommandError::new(format!(
                    "--grants must be a JSON list of {{\"scope\" or \"role\", \"when\"}} objects: {e}"
                ))
            })?,
        },
    };
    Ok((args.app, req))
}

fn token(kms: &Kms, cmd: TokenCommand) -> Result<(), CommandError> {
    let op = kms.operator();
    match cmd {
        TokenCommand::Create(args) => {
            let (app_id, req) = new_token(args)?;
            print_json(&kms.create_token(&op, &app_id, req)?)
        }
        TokenCommand::List { app, page: p } => print_json(&kms.list_tokens(&op, &app, page(p))?),
        TokenCommand::Get { id } => print_json(&kms.get_token(&op, &id)?),
        TokenCommand::Revoke { id } => print_json(&kms.revoke_token(&op, &id)?),
        TokenCommand::Rotate { id, grace_seconds } => {
            print_json(&kms.rotate_token(&op, &id, RotateToken { grace_seconds })?)
        }
        TokenCommand::Delete { id, erase: false } => {
            kms.delete_token(&op, &id)?;
            print_json(&json!({"deleted": true, "id": id}))
        }
        TokenCommand::Delete { id, erase: true } => {
            kms.erase_token(&op, &id)?;
            print_json(&json!({"deleted": true, "erased": true, "id": id}))
        }
        TokenCommand::CreateMany { app, file } => {
            let progress = Progress::on_terminal();
            let reqs = read_token_list(&file, &progress)?;
            let n = reqs.len();
            progress.step(format!(
                "kms: creating {n} tokens (one all-or-nothing batch)"
            ));
            let items = kms.create_tokens(&op, &app, reqs)?;
            progress.done(&format!("kms: created {} tokens", items.len()));
            print_json(&json!({"items": items}))
        }
        TokenCommand::RevokeMany { ids, filter } => {
            let progress = Progress::on_terminal();
            let filter = filter
                .map(|text| {
                    serde_json::from_str::<kms_core::TokenFilter>(&text).map_err(|e| {
                        CommandError::new(format!("--filter must be a JSON filter object: {e}"))
                    })
                })
                .transpose()?;
            progress.step(match &filter {
                Some(_) => "kms: revoking the tokens the filter matches (one all-or-nothing batch)"
                    .to_owned(),
                None => format!(
                    "kms: revoking {} tokens (one all-or-nothing batch)",
                    ids.len()
                ),
            });
            let req = kms_core::BulkRevoke {
                ids: (!ids.is_empty()).then_some(ids),
                filter,
            };
            let revoked = kms.revoke_tokens(&op, req)?;
            progress.done(&format!("kms: revoked {} tokens", revoked.revoked));
            print_json(&revoked)
        }
    }
}

/// The token bodies of `kms token create-many`: a JSON list, or CSV with the header
/// `name,scopes,roles` (lists separated by spaces); each entry checked under `progress`.
fn read_token_list(file: &Path, progress: &Progress) -> Result<Vec<NewToken>, CommandError> {
    progress.step(format!("kms: reading {}", file.display()));
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CommandError::new(format!("cannot read stdin: {e}")))?;
        text
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| CommandError::new(format!("cannot read {}: {e}", file.display())))?
    };
    if file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .collect();
        if header != ["name", "scopes", "roles"] {
            return Err(CommandError::new(
                "a CSV token list starts with the header name,scopes,roles",
            ));
        }
        let rows: Vec<&str> = lines.collect();
        progress.items("kms: checking the CSV rows", rows.len());
        return rows
            .into_iter()
            .enumerate()
            .map(|(i, line)| {
                let cells: Vec<&str> = line.split(',').map(str::trim).collect();
                let [name, scopes, roles] = cells[..] else {
                    return Err(CommandError::new(format!(
                        "line {} of the CSV does not have 3 cells",
                        i + 2
                    )));
                };
                let list = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
                let body = serde_json::from_value(
                    json!({"name": name, "scopes": list(scopes), "roles": list(roles)}),
                )
                .map_err(|e| CommandError::new(format!("line {}: {e}", i + 2)))?;
                progress.inc();
                Ok(body)
            })
            .collect();
    }
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| {
        CommandError::new(format!(
            "the token list must be a JSON list of token bodies: {e}"
        ))
    })?;
    progress.items("kms: checking the token bodies", entries.len());
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let body = serde_json::from_value(entry).map_err(|e| {
                CommandError::new(format!(
                    "the token list must be a JSON list of token bodies: tokens[{i}]: {e}"
                ))
            })?;
            progress.inc();
            Ok(body)
        })
        .collect()
}

fn verify(kms: &Kms, args: VerifyArgs) -> Result<ExitCode, CommandError> {
    let token = if args.token == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CommandError::new(format!("cannot read the token from stdin: {e}")))?;
        text.trim().to_owned()
    } else {
        args.token
    };
    let req = VerifyRequest {
        token,
        permissions: args.permissions,
        scopes: (!args.scopes.is_empty()).then_some(args.scopes),
        ip: args.ip,
        context: match args.context {
            None => None,
            Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(serde_json::Value::Object(map)) => Some(map),
                _ => {
                    return Err(CommandError::new(
                        "--context must be a JSON object, e.g. '{\"region\":\"eu\"}'",
                    ))
                }
            },
        },
    };
    let verification = kms.verify(&kms.operator(), &req)?;
    print_json(&verification.to_response())?;
    if args.fail_invalid && !verification.is_valid() {
        return Ok(ExitCode::from(exit::INVALID_TOKEN));
    }
    Ok(ExitCode::SUCCESS)
}
