//! The maintenance commands: `kms backup` and `kms restore` (SQLite copies through
//! [`kms_store::backup`]) and `kms db check` (SQLite and PostgreSQL).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use kms_core::store::Store;
use kms_core::{AuditVerification, Kms};
use kms_store::backup::{self, BackupError, Overwrite, Progress};
use serde_json::{json, Value};

use crate::bootstrap::open::open_store;
use crate::cli::args::{BackupArgs, RestoreArgs};
use crate::cli::commands::{print_json, CommandError};
use crate::cli::exit;
use crate::config::Config;

/// Where `kms backup` and `kms restore` send PostgreSQL users.
const POSTGRES_RUNBOOK: &str = "docs/runbooks/backup-and-restore.md";

/// The refusal of `kms backup` and `kms restore` on a PostgreSQL database.
pub(crate) fn postgres_refusal(command: &str) -> CommandError {
    CommandError::new(format!(
        "kms {command} copies SQLite databases only; back up and restore a PostgreSQL \
         database with pg_dump and pg_restore (or pg_basebackup with WAL archiving), as \
         {POSTGRES_RUNBOOK} describes. Nothing was changed"
    ))
}

impl From<BackupError> for CommandError {
    fn from(e: BackupError) -> Self {
        CommandError::new(crate::http::error::error_chain(&e))
    }
}

/// A progress line on stderr while it is a terminal, nothing otherwise.
fn terminal_progress(what: &'static str) -> impl FnMut(Progress) {
    let on_terminal = std::io::stderr().is_terminal();
    let mut shown = None;
    move |p: Progress| {
        if !on_terminal {
            return;
        }
        let percent = p.copied.saturating_mul(100) / p.total.max(1);
        if shown == Some(percent) {
            return;
        }
        shown = Some(percent);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{what}: {percent:3}% ({} of {} pages)",
            p.copied, p.total
        );
        if p.copied >= p.total {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }
}

fn seconds_since(start: Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

fn overwrite(force: bool) -> Overwrite {
    if force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    }
}

/// A refused destination, with what to do about it.
fn install_error(e: BackupError) -> CommandError {
    match e {
        BackupError::TargetExists(path) => CommandError::new(format!(
            "{} exists and is not empty; nothing was changed. Pass --force to replace it",
            path.display()
        )),
        BackupError::TargetInUse(path) => CommandError::new(format!(
            "{} is open in another process (a running kms serve?); stop it first. Nothing \
             was changed",
            path.display()
        )),
        other => other.into(),
    }
}

/// `kms backup --to FILE`: a consistent copy of the running SQLite database, installed
/// atomically; prints what it holds.
pub(crate) fn backup(config: &Config, args: &BackupArgs) -> Result<(), CommandError> {
    if config.postgres_url().is_some() {
        return Err(postgres_refusal("backup"));
    }
    let start = Instant::now();
    if !args.force && std::fs::metadata(&args.to).is_ok_and(|m| m.len() > 0) {
        return Err(install_error(BackupError::TargetExists(args.to.clone())));
    }
    let staged = backup::stage(&config.db, &args.to, &mut terminal_progress("backup"))?;
    let stats = staged.stats().clone();
    let file = staged
        .install(overwrite(args.force))
        .map_err(install_error)?;
    print_json(&json!({
        "file": file.display().to_string(),
        "bytes": stats.bytes,
        "pages": stats.pages,
        "audit_events": stats.audit_events,
        "schema_version": stats.schema_version,
        "integrity": "ok",
        "seconds": seconds_since(start),
    }))
}

/// `kms restore --from FILE --db PATH`: checks the copy (integrity, schema, audit chain)
/// and installs it at PATH atomically.
pub(crate) fn restore(config: &Config, args: &RestoreArgs) -> Result<(), CommandError> {
    if config.postgres_url().is_some() {
        return Err(postgres_refusal("restore"));
    }
    let start = Instant::now();
    let staged = backup::stage(&args.from, &config.db, &mut terminal_progress("restore"))?;
    let stats = staged.stats().clone();
    // Opened as a store, an older copy is migrated up, as `kms serve` would on start.
    let store = open_store(&with_db(config, staged.path()), None)?;
    let chain = audit_chain(config, store, &args.from)?;
    if let AuditVerification::Broken { first_bad_seq, .. } = chain {
        return Err(CommandError::new(format!(
            "the audit chain of {} is broken at event {first_bad_seq}; nothing was restored \
             (see docs/runbooks/audit-chain-failure.md)",
            args.from.display()
        )));
    }
    let restored = staged
        .install(overwrite(args.force))
        .map_err(install_error)?;
    print_json(&json!({
        "restored": restored.display().to_string(),
        "from": args.from.display().to_string(),
        "bytes": stats.bytes,
        "pages": stats.pages,
        "audit_events": stats.audit_events,
        "schema_version": kms_store::migrations::latest_version(),
        "backup_schema_version": stats.schema_version,
        "integrity": "ok",
        "audit_chain": chain,
        "seconds": seconds_since(start),
    }))
}

fn with_db(config: &Config, db: &Path) -> Config {
    let mut c = config.clone();
    c.db = db.to_path_buf();
    c
}

/// The verdict on the audit chain of an initialised kms database. No master key is
/// loaded: the chain needs none, and nothing is created.
fn audit_chain(
    config: &Config,
    store: Arc<dyn Store>,
    shown: &Path,
) -> Result<AuditVerification, CommandError> {
    let mut builder = Kms::builder(store);
    if config.insecure_fast_hash {
        builder = builder.hash_params(kms_core::dangerous::insecure_hash_params());
    }
    let kms = builder.build()?;
    if !kms.is_initialized()? {
        return Err(CommandError::new(format!(
            "{} holds a kms schema but was never initialised (`kms init`)",
            shown.display()
        )));
    }
    Ok(kms.verify_audit(&kms.operator())?)
}

/// `kms db check`: integrity, migration status and the audit chain; prints the report and
/// exits with [`exit::DB_CHECK_FAILED`] when any check fails.
pub(crate) fn db_check(config: &Config) -> Result<ExitCode, CommandError> {
    let report = match config.postgres_url() {
        Some(url) => check_postgres(config, url)?,
        None => check_sqlite(config)?,
    };
    print_json(&report.json)?;
    if report.failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "kms: db check failed on {}: {}",
        config.db_shown(),
        report.failures.join("; ")
    );
    Ok(ExitCode::from(exit::DB_CHECK_FAILED))
}

/// What `kms db check` prints, and the failed checks in words.
struct CheckReport {
    json: Value,
    failures: Vec<String>,
}

fn migrations_json(
    status: &[kms_store::migrations::MigrationStatus],
    latest: u32,
    failures: &mut Vec<String>,
) -> (Value, bool) {
    let version = status
        .iter()
        .filter(|m| m.applied)
        .map(|m| m.version)
        .max()
        .unwrap_or(0);
    let pending: Vec<u32> = status
        .iter()
        .filter(|m| !m.applied)
        .map(|m| m.version)
        .collect();
    let unknown: Vec<u32> = status
        .iter()
        .filter(|m| m.version > latest)
        .map(|m| m.version)
        .collect();
    let ok = pending.is_empty() && unknown.is_empty();
    if !pending.is_empty() {
        failures.push(format!(
            "migrations {pending:?} are not applied (`kms migrate up` applies them)"
        ));
    }
    if !unknown.is_empty() {
        failures.push(format!(
            "migrations {unknown:?} are newer than this build of kms (upgrade kms)"
        ));
    }
    let value = json!({
        "ok": ok,
        "version": version,
        "latest": latest,
        "pending": pending,
        "unknown": unknown,
    });
    (value, ok)
}

/// The audit chain part of the report; not checked while the schema is not current, since
/// opening the database would migrate it.
fn chain_json(
    config: &Config,
    current: bool,
    failures: &mut Vec<String>,
) -> Result<Value, CommandError> {
    if !current {
        failures.push("the audit chain was not checked (the schema is not current)".to_owned());
        return Ok(json!({"ok": false, "checked": false, "reason": "the schema is not current"}));
    }
    let store = open_store(config, None)?;
    let verdict = audit_chain(config, store, &config.db)?;
    if let AuditVerification::Broken { first_bad_seq, .. } = verdict {
        failures.push(format!(
            "the audit chain is broken at event {first_bad_seq} (see \
             docs/runbooks/audit-chain-failure.md)"
        ));
    }
    serde_json::to_value(&verdict)
        .map_err(|e| CommandError::new(format!("cannot encode the output: {e}")))
}

fn check_sqlite(config: &Config) -> Result<CheckReport, CommandError> {
    let mut failures = Vec::new();
    let found = match backup::inspect(&config.db) {
        Ok(found) => found,
        Err(BackupError::Damaged { problems, .. }) => {
            failures.push(format!("the file is damaged: {}", problems.join("; ")));
            let json = json!({
                "ok": false,
                "database": config.db_shown(),
                "integrity": {"ok": false, "problems": problems},
            });
            return Ok(CheckReport { json, failures });
        }
        Err(e) => return Err(e.into()),
    };
    if !found.is_intact() {
        failures.push(format!(
            "integrity_check found: {}",
            found.integrity_problems.join("; ")
        ));
    }
    let (migrations, current) =
        migrations_json(&found.migrations, found.latest_version, &mut failures);
    let chain = chain_json(config, current && found.is_intact(), &mut failures)?;
    let json = json!({
        "ok": failures.is_empty(),
        "database": config.db_shown(),
        "integrity": {"ok": found.is_intact(), "problems": found.integrity_problems},
        "migrations": migrations,
        "audit_chain": chain,
        "audit_events": found.audit_events,
    });
    Ok(CheckReport { json, failures })
}

fn check_postgres(config: &Config, url: &str) -> Result<CheckReport, CommandError> {
    let mut failures = Vec::new();
    let store = kms_store::PostgresStore::open_unmigrated(url, config.db_pool.clone())?;
    let (migrations, current) = migrations_json(
        &store.migration_status()?,
        kms_store::postgres::migrations::latest_version(),
        &mut failures,
    );
    drop(store);
    let chain = chain_json(config, current, &mut failures)?;
    let json = json!({
        "ok": failures.is_empty(),
        "database": config.db_shown(),
        "integrity": {
            "checked": false,
            "reason": "PostgreSQL has no integrity_check: run pg_amcheck, and initialise \
                       clusters with data checksums (initdb --data-checksums)",
        },
        "migrations": migrations,
        "audit_chain": chain,
    });
    Ok(CheckReport { json, failures })
}
