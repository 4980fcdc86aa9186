//! The SQLite schema as a list of versioned migrations, each with an `up` and a `down`
//! step, and the runner that moves a database between versions.
//!
//! Applied versions are recorded in `schema_migrations(version, applied_at)`. Each step
//! runs in its own transaction together with its bookkeeping row, so a database is always
//! at a well-defined version, even after a crash in the middle of a migration.
//!
//! [`SqliteStore::open`](crate::SqliteStore::open) migrates to the latest version by
//! itself. The free functions here work on a database file without opening a store, for
//! command-line tools (`kms migrate up|down|status`):
//!
//! ```
//! use kms_store::migrations;
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("kms.db");
//!
//! migrations::up(&path, None)?;
//! assert!(migrations::status(&path)?.iter().all(|m| m.applied));
//!
//! let reverted = migrations::down(&path, 0)?;
//! assert_eq!(reverted.len(), migrations::MIGRATIONS.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use kms_core::store::StoreError;
use kms_core::{Clock, SystemClock, Timestamp};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::sqlite::connection;
use crate::sqlite::error::db_error;

/// One schema change and its inverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Position in the sequence, from 1, without gaps.
    pub version: u32,
    /// What the migration does, for people.
    pub name: &'static str,
    /// SQL that applies the change.
    pub up: &'static str,
    /// SQL that undoes `up` exactly.
    pub down: &'static str,
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "applications and tokens",
        up: "
            CREATE TABLE meta (
                key   TEXT PRIMARY KEY NOT NULL,
                value TEXT NOT NULL
            ) STRICT;
            CREATE TABLE apps (
                id           TEXT PRIMARY KEY NOT NULL,
                name         TEXT NOT NULL UNIQUE,
                token_prefix TEXT NOT NULL,
                status       TEXT NOT NULL,
                created_at   INTEGER NOT NULL
            ) STRICT;
            CREATE TABLE tokens (
                id           TEXT PRIMARY KEY NOT NULL,
                app_id       TEXT NOT NULL REFERENCES apps (id),
                name         TEXT NOT NULL,
                secret_hash  TEXT NOT NULL,
                start        TEXT NOT NULL,
                status       TEXT NOT NULL,
                created_at   INTEGER NOT NULL,
                expires_at   INTEGER,
                revoked_at   INTEGER,
                scopes       TEXT NOT NULL,
                roles        TEXT NOT NULL,
                metadata     TEXT NOT NULL,
                limits       TEXT NOT NULL,
                uses         INTEGER CHECK (uses >= 0),
                rotated_from TEXT,
                rotated_to   TEXT
            ) STRICT;
            CREATE INDEX tokens_by_app ON tokens (app_id, id);
        ",
        down: "
            DROP INDEX tokens_by_app;
            DROP TABLE tokens;
            DROP TABLE apps;
            DROP TABLE meta;
        ",
    },
    Migration {
        version: 2,
        name: "permissions and roles",
        up: "
            CREATE TABLE permissions (
                scope       TEXT PRIMARY KEY NOT NULL,
                description TEXT NOT NULL,
                implies     TEXT NOT NULL
            ) STRICT;
            CREATE TABLE roles (
                name        TEXT PRIMARY KEY NOT NULL,
                description TEXT NOT NULL,
                permissions TEXT NOT NULL,
                inherits    TEXT NOT NULL
            ) STRICT;
        ",
        down: "
            DROP TABLE roles;
            DROP TABLE permissions;
        ",
    },
    Migration {
        version: 3,
        name: "token grants index",
        up: "
            CREATE TABLE token_grants (
                token_id TEXT NOT NULL REFERENCES tokens (id),
                kind     TEXT NOT NULL CHECK (kind IN ('scope', 'role')),
                name     TEXT NOT NULL,
                PRIMARY KEY (kind, name, token_id)
            ) STRICT, WITHOUT ROWID;
            CREATE INDEX token_grants_by_token ON token_grants (token_id);
            INSERT OR IGNORE INTO token_grants (token_id, kind, name)
                SELECT tokens.id, 'scope', s.value FROM tokens, json_each(tokens.scopes) AS s
                UNION ALL
                SELECT tokens.id, 'role', r.value FROM tokens, json_each(tokens.roles) AS r;
        ",
        down: "
            DROP INDEX token_grants_by_token;
            DROP TABLE token_grants;
        ",
    },
    Migration {
        version: 4,
        name: "signing keys, refresh tokens and revocations",
        up: "
            CREATE TABLE signing_keys (
                kid            TEXT PRIMARY KEY NOT NULL,
                algorithm      TEXT NOT NULL,
                state          TEXT NOT NULL,
                created_at     INTEGER NOT NULL,
                verify_until   INTEGER,
                retired_at     INTEGER,
                public_key     BLOB NOT NULL,
                sealed_private BLOB NOT NULL,
                -- Insertion order, to list keys created in the same second as added.
                position       INTEGER NOT NULL UNIQUE
            ) STRICT;
            CREATE TABLE refresh_tokens (
                id          TEXT PRIMARY KEY NOT NULL,
                family_id   TEXT NOT NULL,
                token_id    TEXT NOT NULL,
                app_id      TEXT NOT NULL,
                secret_hash TEXT NOT NULL,
                scope       TEXT NOT NULL,
                audience    TEXT NOT NULL,
                status      TEXT NOT NULL,
                created_at  INTEGER NOT NULL,
                expires_at  INTEGER NOT NULL,
                spent_at    INTEGER
            ) STRICT;
            CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
            CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_at);
            CREATE TABLE revocations (
                id         TEXT PRIMARY KEY NOT NULL,
                expires_at INTEGER NOT NULL
            ) STRICT;
            CREATE INDEX revocations_by_expiry ON revocations (expires_at);
        ",
        down: "
            DROP INDEX revocations_by_expiry;
            DROP TABLE revocations;
            DROP INDEX refresh_tokens_by_expiry;
            DROP INDEX refresh_tokens_by_family;
            DROP TABLE refresh_tokens;
            DROP TABLE signing_keys;
        ",
    },
    Migration {
        version: 5,
        name: "audit log",
        up: "
            CREATE TABLE audit_events (
                seq        INTEGER PRIMARY KEY NOT NULL,
                at         INTEGER NOT NULL,
                actor      TEXT NOT NULL,
                action     TEXT NOT NULL,
                target     TEXT NOT NULL,
                outcome    TEXT NOT NULL,
                ip         TEXT,
                request_id TEXT,
                app_id     TEXT,
                details    TEXT NOT NULL,
                prev_hash  TEXT NOT NULL,
                hash       TEXT NOT NULL
            ) STRICT;
            CREATE INDEX audit_events_by_action ON audit_events (action, seq);
            CREATE INDEX audit_events_by_actor ON audit_events (actor, seq);
            CREATE INDEX audit_events_by_app ON audit_events (app_id, seq);
        ",
        down: "
            DROP INDEX audit_events_by_app;
            DROP INDEX audit_events_by_actor;
            DROP INDEX audit_events_by_action;
            DROP TABLE audit_events;
        ",
    },
    Migration {
        version: 6,
        name: "application allow-lists and request signing",
        up: "
            ALTER TABLE apps ADD COLUMN ip_allow TEXT NOT NULL DEFAULT '[]';
            ALTER TABLE apps ADD COLUMN require_signed_requests INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE apps ADD COLUMN signing_secret BLOB;
        ",
        down: "
            ALTER TABLE apps DROP COLUMN signing_secret;
            ALTER TABLE apps DROP COLUMN require_signed_requests;
            ALTER TABLE apps DROP COLUMN ip_allow;
        ",
    },
    Migration {
        version: 7,
        name: "conditional grants",
        up: "
            ALTER TABLE tokens ADD COLUMN grants TEXT NOT NULL DEFAULT '[]';
            ALTER TABLE roles ADD COLUMN grants TEXT NOT NULL DEFAULT '[]';
        ",
        down: "
            ALTER TABLE roles DROP COLUMN grants;
            ALTER TABLE tokens DROP COLUMN grants;
        ",
    },
    Migration {
        version: 8,
        name: "users, identity providers, login attempts and sessions",
        up: "
            CREATE TABLE users (
                id            TEXT PRIMARY KEY NOT NULL,
                app_id        TEXT NOT NULL REFERENCES apps (id),
                email         TEXT,
                name          TEXT,
                status        TEXT NOT NULL,
                roles         TEXT NOT NULL,
                mapped_roles  TEXT NOT NULL,
                grants        TEXT NOT NULL,
                created_at    INTEGER NOT NULL,
                last_login_at INTEGER
            ) STRICT;
            CREATE INDEX users_by_app ON users (app_id, id);
            CREATE TABLE user_identities (
                idp_id  TEXT NOT NULL,
                subject TEXT NOT NULL,
                user_id TEXT NOT NULL REFERENCES users (id),
                PRIMARY KEY (idp_id, subject)
            ) STRICT, WITHOUT ROWID;
            CREATE INDEX user_identities_by_user ON user_identities (user_id);
            CREATE TABLE idps (
                id            TEXT PRIMARY KEY NOT NULL,
                app_id        TEXT NOT NULL REFERENCES apps (id),
                slug          TEXT NOT NULL UNIQUE,
                status        TEXT NOT NULL,
                created_at    INTEGER NOT NULL,
                role_map      TEXT NOT NULL,
                default_roles TEXT NOT NULL,
                email_domains TEXT NOT NULL,
                protocol      TEXT NOT NULL
            ) STRICT;
            CREATE INDEX idps_by_app ON idps (app_id, id);
            CREATE TABLE login_attempts (
                id                   TEXT PRIMARY KEY NOT NULL,
                idp_id               TEXT NOT NULL,
                browser_hash         TEXT NOT NULL,
                nonce                TEXT,
                sealed_pkce_verifier TEXT,
                saml_request_id      TEXT,
                return_to            TEXT,
                created_at           INTEGER NOT NULL,
                expires_at           INTEGER NOT NULL
            ) STRICT;
            CREATE INDEX login_attempts_by_idp ON login_attempts (idp_id);
            CREATE INDEX login_attempts_by_expiry ON login_attempts (expires_at);
            CREATE TABLE sessions (
                id                      TEXT PRIMARY KEY NOT NULL,
                user_id                 TEXT NOT NULL,
                app_id                  TEXT NOT NULL,
                idp_id                  TEXT NOT NULL,
                secret_hash             TEXT NOT NULL,
                created_at              INTEGER NOT NULL,
                expires_at              INTEGER NOT NULL,
                last_used_at            INTEGER NOT NULL,
                ip                      TEXT,
                user_agent              TEXT,
                revoked_at              INTEGER,
                revoke_reason           TEXT,
                sealed_upstream_refresh TEXT,
                revalidated_at          INTEGER
            ) STRICT;
            CREATE INDEX sessions_by_user ON sessions (user_id);
            CREATE INDEX sessions_by_idp ON sessions (idp_id);
            CREATE INDEX sessions_by_app ON sessions (app_id);
            CREATE TABLE sso_replay (
                id         TEXT PRIMARY KEY NOT NULL,
                expires_at INTEGER NOT NULL
            ) STRICT;
            CREATE INDEX sso_replay_by_expiry ON sso_replay (expires_at);
        ",
        down: "
            DROP INDEX sso_replay_by_expiry;
            DROP TABLE sso_replay;
            DROP INDEX sessions_by_app;
            DROP INDEX sessions_by_idp;
            DROP INDEX sessions_by_user;
            DROP TABLE sessions;
            DROP INDEX login_attempts_by_expiry;
            DROP INDEX login_attempts_by_idp;
            DROP TABLE login_attempts;
            DROP INDEX idps_by_app;
            DROP TABLE idps;
            DROP INDEX user_identities_by_user;
            DROP TABLE user_identities;
            DROP INDEX users_by_app;
            DROP TABLE users;
        ",
    },
    Migration {
        version: 9,
        name: "usage counting: last use of tokens and hourly usage buckets",
        up: "
            ALTER TABLE apps ADD COLUMN usage_price TEXT;
            ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
            CREATE TABLE usage_buckets (
                app_id       TEXT NOT NULL,
                token_id     TEXT NOT NULL,
                bucket_start INTEGER NOT NULL,
                code         TEXT NOT NULL,
                count        INTEGER NOT NULL,
                PRIMARY KEY (app_id, bucket_start, token_id, code)
            ) STRICT, WITHOUT ROWID;
            CREATE INDEX usage_buckets_by_token ON usage_buckets (token_id, bucket_start);
            CREATE INDEX usage_buckets_by_start ON usage_buckets (bucket_start);
        ",
        down: "
            DROP INDEX usage_buckets_by_start;
            DROP INDEX usage_buckets_by_token;
            DROP TABLE usage_buckets;
            ALTER TABLE tokens DROP COLUMN last_used_at;
            ALTER TABLE apps DROP COLUMN usage_price;
        ",
    },
    Migration {
        version: 10,
        name: "person keys and the data subject of audit events",
        up: "
            CREATE TABLE person_keys (
                subject    TEXT PRIMARY KEY NOT NULL,
                stored_key TEXT NOT NULL,
                created_at INTEGER NOT NULL
            ) STRICT;
            ALTER TABLE audit_events ADD COLUMN subject TEXT;
            ALTER TABLE audit_events ADD COLUMN sealed_personal TEXT;
            CREATE INDEX audit_events_by_subject ON audit_events (subject, seq);
            CREATE INDEX audit_events_by_target ON audit_events (target, seq);
            CREATE INDEX sessions_by_revoked_at ON sessions (revoked_at);
            CREATE INDEX sessions_by_expiry ON sessions (expires_at);
            CREATE INDEX sessions_by_last_use ON sessions (last_used_at);
        ",
        down: "
            DROP INDEX sessions_by_last_use;
            DROP INDEX sessions_by_expiry;
            DROP INDEX sessions_by_revoked_at;
            DROP INDEX audit_events_by_target;
            DROP INDEX audit_events_by_subject;
            ALTER TABLE audit_events DROP COLUMN sealed_personal;
            ALTER TABLE audit_events DROP COLUMN subject;
            DROP TABLE person_keys;
        ",
    },
];

/// The version of the newest migration.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Whether one migration is applied to a database.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationStatus {
    /// The migration's version.
    pub version: u32,
    /// Its name; `"unknown to this build"` for a version applied by a newer kms.
    pub name: &'static str,
    /// Whether it is applied.
    pub applied: bool,
    /// When it was applied, if it is.
    pub applied_at: Option<Timestamp>,
}

/// Migrates the database at `path` up to `target` (the latest when `None`), creating the
/// file if needed. Returns the versions applied, in order; none when already there.
///
/// Fails with `Conflict` when `target` names no migration or the database holds a
/// version this build does not know.
pub fn up(path: impl AsRef<Path>, target: Option<u32>) -> Result<Vec<u32>, StoreError> {
    run_up(&mut connection::open_file(path.as_ref())?, target)
}

/// Reverts migrations of the existing database at `path`, newest first, until only
/// versions up to `target` remain (`0` removes every table but `schema_migrations`).
/// Returns the versions reverted, in order. Data in dropped tables is lost.
pub fn down(path: impl AsRef<Path>, target: u32) -> Result<Vec<u32>, StoreError> {
    run_down(&mut connection::open_existing(path.as_ref())?, target)
}

/// Every known migration, and any unknown applied one, with whether it is applied to the
/// existing database at `path`.
pub fn status(path: impl AsRef<Path>) -> Result<Vec<MigrationStatus>, StoreError> {
    read_status(&connection::open_existing(path.as_ref())?)
}

const UNKNOWN_NAME: &str = "unknown to this build";

/// The status of a known migration.
pub(crate) fn status_of(
    version: u32,
    name: &'static str,
    applied_at: Option<Timestamp>,
) -> MigrationStatus {
    MigrationStatus {
        version,
        name,
        applied: applied_at.is_some(),
        applied_at,
    }
}

/// The status of an applied migration this build does not know.
pub(crate) fn unknown_status(version: u32, applied_at: Timestamp) -> MigrationStatus {
    MigrationStatus {
        version,
        name: UNKNOWN_NAME,
        applied: true,
        applied_at: Some(applied_at),
    }
}

pub(crate) fn run_up(conn: &mut Connection, target: Option<u32>) -> Result<Vec<u32>, StoreError> {
    let target = match target {
        Some(t) => check_target(t, latest_version())?,
        None => latest_version(),
    };
    ensure_version_table(conn)?;
    let applied = applied_versions(conn)?;
    check_known(&applied, latest_version())?;
    let mut done = Vec::new();
    let pending = MIGRATIONS
        .iter()
        .filter(|m| m.version <= target && !applied.contains_key(&m.version));
    for m in pending {
        // Checked again inside the write transaction, so two processes opening one new
        // file at the same time do not both apply a step. An up-to-date database is
        // opened without taking the write lock at all.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_error)?;
        if is_applied(&tx, m.version)? {
            continue;
        }
        tx.execute_batch(m.up)
            .map_err(|e| step_failed("apply", m, e))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![m.version, SystemClock.now().unix()],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        done.push(m.version);
    }
    Ok(done)
}

pub(crate) fn run_down(conn: &mut Connection, target: u32) -> Result<Vec<u32>, StoreError> {
    check_target(target, latest_version())?;
    ensure_version_table(conn)?;
    let applied = applied_versions(conn)?;
    check_known(&applied, latest_version())?;
    let mut done = Vec::new();
    let applied_above = MIGRATIONS
        .iter()
        .rev()
        .filter(|m| m.version > target && applied.contains_key(&m.version));
    for m in applied_above {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_error)?;
        if !is_applied(&tx, m.version)? {
            continue;
        }
        tx.execute_batch(m.down)
            .map_err(|e| step_failed("revert", m, e))?;
        tx.execute(
            "DELETE FROM schema_migrations WHERE version = ?1",
            [m.version],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        done.push(m.version);
    }
    Ok(done)
}

pub(crate) fn read_status(conn: &Connection) -> Result<Vec<MigrationStatus>, StoreError> {
    let applied = if has_version_table(conn)? {
        applied_versions(conn)?
    } else {
        BTreeMap::new()
    };
    let mut status: Vec<MigrationStatus> = MIGRATIONS
        .iter()
        .map(|m| status_of(m.version, m.name, applied.get(&m.version).copied()))
        .collect();
    status.extend(
        applied
            .iter()
            .filter(|(v, _)| !MIGRATIONS.iter().any(|m| m.version == **v))
            .map(|(v, at)| unknown_status(*v, *at)),
    );
    Ok(status)
}

/// The highest applied version, `0` for a database never migrated.
pub(crate) fn current_version(conn: &Connection) -> Result<u32, StoreError> {
    if !has_version_table(conn)? {
        return Ok(0);
    }
    conn.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_migrations",
        [],
        |row| row.get(0),
    )
    .map_err(db_error)
}

/// `target` if a store whose newest migration is `latest` has a migration `target`.
/// Shared by the SQLite and PostgreSQL migrations.
pub(crate) fn check_target(target: u32, latest: u32) -> Result<u32, StoreError> {
    if target > latest {
        return Err(StoreError::Conflict(format!(
            "there is no migration {target}; the latest is {latest}"
        )));
    }
    Ok(target)
}

/// Refuses to touch a database migrated by a newer build (its `down` steps are unknown
/// here); `latest` is this build's newest migration.
pub(crate) fn check_known(
    applied: &BTreeMap<u32, Timestamp>,
    latest: u32,
) -> Result<(), StoreError> {
    match applied.keys().next_back() {
        Some(&v) if v > latest => Err(StoreError::Conflict(format!(
            "the database is at schema version {v}, newer than this build of kms knows \
             ({latest}); upgrade kms"
        ))),
        _ => Ok(()),
    }
}

fn ensure_version_table(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY,
            applied_at INTEGER
        )",
    )
    .map_err(db_error)
}

fn has_version_table(conn: &Connection) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
        [],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
    .map_err(db_error)
}

fn applied_versions(conn: &Connection) -> Result<BTreeMap<u32, Timestamp>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT version, coalesce(applied_at, 0) FROM schema_migrations")
        .map_err(db_error)?;
    let rows = stmt
        .query_map([], |row| {
            Ok((row.get(0)?, Timestamp::from_unix(row.get(1)?)))
        })
        .map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

fn is_applied(conn: &Connection, version: u32) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT 1 FROM schema_migrations WHERE version = ?1",
        [version],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
    .map_err(db_error)
}

fn step_failed(action: &str, m: &Migration, e: rusqlite::Error) -> StoreError {
    match db_error(e) {
        StoreError::Corrupt(detail) => StoreError::Corrupt(format!(
            "could not {action} migration {} ({}): {detail}",
            m.version, m.name
        )),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
            assert!(!m.name.is_empty() && !m.up.trim().is_empty() && !m.down.trim().is_empty());
        }
        assert_eq!(latest_version() as usize, MIGRATIONS.len());
    }
}
