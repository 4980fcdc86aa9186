//! The PostgreSQL schema: the same versioned migrations as SQLite's
//! ([`crate::migrations::MIGRATIONS`]: same versions, names, tables and meaning), written in
//! PostgreSQL's types (`BIGINT`, `TEXT`, `BOOLEAN`, `BYTEA`), each with an `up` and a `down`
//! step, recorded in `schema_migrations`.
//!
//! JSON columns stay `TEXT`, not `JSONB`: a record must read back byte for byte as written
//! (`JSONB` reorders keys and rewrites numbers), and no query looks inside them.
//! Identifiers that listings order or page by use the `"C"` collation, so the order is the
//! bytes' order whatever the database's locale (as in SQLite and the memory store).
//!
//! Several nodes may start at the same moment: the runner holds a session advisory lock
//! (`MIGRATION_LOCK`) while it migrates, and each step runs in its own transaction with
//! its bookkeeping row, so every step is applied exactly once.

use std::collections::BTreeMap;

use ::postgres::Client;
use kms_core::store::StoreError;
use kms_core::{Clock, SystemClock, Timestamp};

use super::error::db_error;
use crate::migrations::{check_known, check_target, Migration, MigrationStatus};

/// The session advisory lock held while migrating ("kms_migr" in ASCII).
const MIGRATION_LOCK: i64 = 0x6b6d_735f_6d69_6772;

/// Every migration, oldest first; versions and names match SQLite's.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "applications and tokens",
        up: r#"
            CREATE TABLE meta (
                key   TEXT COLLATE "C" PRIMARY KEY,
                value TEXT NOT NULL
            );
            CREATE TABLE apps (
                id           TEXT COLLATE "C" PRIMARY KEY,
                name         TEXT NOT NULL UNIQUE,
                token_prefix TEXT NOT NULL,
                status       TEXT NOT NULL,
                created_at   BIGINT NOT NULL
            );
            CREATE TABLE tokens (
                id           TEXT COLLATE "C" PRIMARY KEY,
                app_id       TEXT COLLATE "C" NOT NULL REFERENCES apps (id),
                name         TEXT NOT NULL,
                secret_hash  TEXT NOT NULL,
                start        TEXT NOT NULL,
                status       TEXT NOT NULL,
                created_at   BIGINT NOT NULL,
                expires_at   BIGINT,
                revoked_at   BIGINT,
                scopes       TEXT NOT NULL,
                roles        TEXT NOT NULL,
                metadata     TEXT NOT NULL,
                limits       TEXT NOT NULL,
                uses         BIGINT CHECK (uses >= 0),
                rotated_from TEXT,
                rotated_to   TEXT
            );
            CREATE INDEX tokens_by_app ON tokens (app_id, id);
        "#,
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
        up: r#"
            CREATE TABLE permissions (
                scope       TEXT COLLATE "C" PRIMARY KEY,
                description TEXT NOT NULL,
                implies     TEXT NOT NULL
            );
            CREATE TABLE roles (
                name        TEXT COLLATE "C" PRIMARY KEY,
                description TEXT NOT NULL,
                permissions TEXT NOT NULL,
                inherits    TEXT NOT NULL
            );
        "#,
        down: "
            DROP TABLE roles;
            DROP TABLE permissions;
        ",
    },
    Migration {
        version: 3,
        name: "token grants index",
        up: r#"
            CREATE TABLE token_grants (
                token_id TEXT COLLATE "C" NOT NULL REFERENCES tokens (id),
                kind     TEXT NOT NULL CHECK (kind IN ('scope', 'role')),
                name     TEXT NOT NULL,
                PRIMARY KEY (kind, name, token_id)
            );
            CREATE INDEX token_grants_by_token ON token_grants (token_id);
            INSERT INTO token_grants (token_id, kind, name)
                SELECT tokens.id, 'scope', s FROM tokens, json_array_elements_text(tokens.scopes::json) AS s
                UNION ALL
                SELECT tokens.id, 'role', r FROM tokens, json_array_elements_text(tokens.roles::json) AS r
                ON CONFLICT DO NOTHING;
        "#,
        down: "
            DROP INDEX token_grants_by_token;
            DROP TABLE token_grants;
        ",
    },
    Migration {
        version: 4,
        name: "signing keys, refresh tokens and revocations",
        up: r#"
            CREATE TABLE signing_keys (
                kid            TEXT COLLATE "C" PRIMARY KEY,
                algorithm      TEXT NOT NULL,
                state          TEXT NOT NULL,
                created_at     BIGINT NOT NULL,
                verify_until   BIGINT,
                retired_at     BIGINT,
                public_key     BYTEA NOT NULL,
                sealed_private BYTEA NOT NULL,
                -- Insertion order, to list keys created in the same second as added.
                position       BIGINT NOT NULL UNIQUE
            );
            CREATE TABLE refresh_tokens (
                id          TEXT COLLATE "C" PRIMARY KEY,
                family_id   TEXT NOT NULL,
                token_id    TEXT NOT NULL,
                app_id      TEXT NOT NULL,
                secret_hash TEXT NOT NULL,
                scope       TEXT NOT NULL,
                audience    TEXT NOT NULL,
                status      TEXT NOT NULL,
                created_at  BIGINT NOT NULL,
                expires_at  BIGINT NOT NULL,
                spent_at    BIGINT
            );
            CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
            CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_at);
            CREATE TABLE revocations (
                id         TEXT COLLATE "C" PRIMARY KEY,
                expires_at BIGINT NOT NULL
            );
            CREATE INDEX revocations_by_expiry ON revocations (expires_at);
        "#,
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
                seq        BIGINT PRIMARY KEY,
                at         BIGINT NOT NULL,
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
            );
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
            ALTER TABLE apps ADD COLUMN require_signed_requests BOOLEAN NOT NULL DEFAULT FALSE;
            ALTER TABLE apps ADD COLUMN signing_secret BYTEA;
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
        up: r#"
            CREATE TABLE users (
                id            TEXT COLLATE "C" PRIMARY KEY,
                app_id        TEXT COLLATE "C" NOT NULL REFERENCES apps (id),
                email         TEXT,
                name          TEXT,
                status        TEXT NOT NULL,
                roles         TEXT NOT NULL,
                mapped_roles  TEXT NOT NULL,
                grants        TEXT NOT NULL,
                created_at    BIGINT NOT NULL,
                last_login_at BIGINT
            );
            CREATE INDEX users_by_app ON users (app_id, id);
            CREATE TABLE user_identities (
                idp_id  TEXT COLLATE "C" NOT NULL,
                subject TEXT COLLATE "C" NOT NULL,
                user_id TEXT COLLATE "C" NOT NULL REFERENCES users (id),
                PRIMARY KEY (idp_id, subject)
            );
            CREATE INDEX user_identities_by_user ON user_identities (user_id);
            CREATE TABLE idps (
                id            TEXT COLLATE "C" PRIMARY KEY,
                app_id        TEXT COLLATE "C" NOT NULL REFERENCES apps (id),
                slug          TEXT NOT NULL UNIQUE,
                status        TEXT NOT NULL,
                created_at    BIGINT NOT NULL,
                role_map      TEXT NOT NULL,
                default_roles TEXT NOT NULL,
                email_domains TEXT NOT NULL,
                protocol      TEXT NOT NULL
            );
            CREATE INDEX idps_by_app ON idps (app_id, id);
            CREATE TABLE login_attempts (
                id                   TEXT COLLATE "C" PRIMARY KEY,
                idp_id               TEXT NOT NULL,
                browser_hash         TEXT NOT NULL,
                nonce                TEXT,
                sealed_pkce_verifier TEXT,
                saml_request_id      TEXT,
                return_to            TEXT,
                created_at           BIGINT NOT NULL,
                expires_at           BIGINT NOT NULL
            );
            CREATE INDEX login_attempts_by_idp ON login_attempts (idp_id);
            CREATE INDEX login_attempts_by_expiry ON login_attempts (expires_at);
            CREATE TABLE sessions (
                id                      TEXT COLLATE "C" PRIMARY KEY,
                user_id                 TEXT COLLATE "C" NOT NULL,
                app_id                  TEXT NOT NULL,
                idp_id                  TEXT NOT NULL,
                secret_hash             TEXT NOT NULL,
                created_at              BIGINT NOT NULL,
                expires_at              BIGINT NOT NULL,
                last_used_at            BIGINT NOT NULL,
                ip                      TEXT,
                user_agent              TEXT,
                revoked_at              BIGINT,
                revoke_reason           TEXT,
                sealed_upstream_refresh TEXT,
                revalidated_at          BIGINT
            );
            CREATE INDEX sessions_by_user ON sessions (user_id);
            CREATE INDEX sessions_by_idp ON sessions (idp_id);
            CREATE INDEX sessions_by_app ON sessions (app_id);
            CREATE TABLE sso_replay (
                id         TEXT COLLATE "C" PRIMARY KEY,
                expires_at BIGINT NOT NULL
            );
            CREATE INDEX sso_replay_by_expiry ON sso_replay (expires_at);
        "#,
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
        up: r#"
            ALTER TABLE apps ADD COLUMN usage_price TEXT;
            ALTER TABLE tokens ADD COLUMN last_used_at BIGINT;
            CREATE TABLE usage_buckets (
                app_id       TEXT COLLATE "C" NOT NULL,
                token_id     TEXT COLLATE "C" NOT NULL,
                bucket_start BIGINT NOT NULL,
                code         TEXT NOT NULL,
                count        BIGINT NOT NULL,
                PRIMARY KEY (app_id, bucket_start, token_id, code)
            );
            CREATE INDEX usage_buckets_by_token ON usage_buckets (token_id, bucket_start);
            CREATE INDEX usage_buckets_by_start ON usage_buckets (bucket_start);
        "#,
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
        up: r#"
            CREATE TABLE person_keys (
                subject    TEXT COLLATE "C" PRIMARY KEY,
                stored_key TEXT NOT NULL,
                created_at BIGINT NOT NULL
            );
            ALTER TABLE audit_events ADD COLUMN subject TEXT;
            ALTER TABLE audit_events ADD COLUMN sealed_personal TEXT;
            CREATE INDEX audit_events_by_subject ON audit_events (subject, seq);
            CREATE INDEX audit_events_by_target ON audit_events (target, seq);
            CREATE INDEX sessions_by_revoked_at ON sessions (revoked_at);
            CREATE INDEX sessions_by_expiry ON sessions (expires_at);
            CREATE INDEX sessions_by_last_use ON sessions (last_used_at);
        "#,
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

/// Runs `work` holding the migration lock, releasing it whatever `work` returns (the
/// connection goes back to a pool, where a held session lock would outlive the call).
fn locked<T>(
    client: &mut Client,
    work: impl FnOnce(&mut Client) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(db_error)?;
    let result = ensure_version_table(client).and_then(|()| work(client));
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .map_err(db_error);
    let value = result?;
    unlocked?;
    Ok(value)
}

/// Migrates up to `target` (the latest when `None`); returns the versions applied.
pub(crate) fn run_up(client: &mut Client, target: Option<u32>) -> Result<Vec<u32>, StoreError> {
    let target = match target {
        Some(t) => check_target(t, latest_version())?,
        None => latest_version(),
    };
    locked(client, |client| {
        let applied = applied_versions(client)?;
        check_known(&applied, latest_version())?;
        let mut done = Vec::new();
        let pending = MIGRATIONS
            .iter()
            .filter(|m| m.version <= target && !applied.contains_key(&m.version));
        for m in pending {
            let mut tx = client.transaction().map_err(db_error)?;
            tx.batch_execute(m.up)
                .map_err(|e| step_failed("apply", m, e))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                &[&i64::from(m.version), &SystemClock.now().unix()],
            )
            .map_err(db_error)?;
            tx.commit().map_err(db_error)?;
            done.push(m.version);
        }
        Ok(done)
    })
}

/// Reverts migrations newer than `target`, newest first; returns the versions reverted.
pub(crate) fn run_down(client: &mut Client, target: u32) -> Result<Vec<u32>, StoreError> {
    check_target(target, latest_version())?;
    locked(client, |client| {
        let applied = applied_versions(client)?;
        check_known(&applied, latest_version())?;
        let mut done = Vec::new();
        let applied_above = MIGRATIONS
            .iter()
            .rev()
            .filter(|m| m.version > target && applied.contains_key(&m.version));
        for m in applied_above {
            let mut tx = client.transaction().map_err(db_error)?;
            tx.batch_execute(m.down)
                .map_err(|e| step_failed("revert", m, e))?;
            tx.execute(
                "DELETE FROM schema_migrations WHERE version = $1",
                &[&i64::from(m.version)],
            )
            .map_err(db_error)?;
            tx.commit().map_err(db_error)?;
            done.push(m.version);
        }
        Ok(done)
    })
}

/// Every known migration, and any unknown applied one, with whether it is applied.
pub(crate) fn read_status(client: &mut Client) -> Result<Vec<MigrationStatus>, StoreError> {
    let applied = if has_version_table(client)? {
        applied_versions(client)?
    } else {
        BTreeMap::new()
    };
    let mut status: Vec<MigrationStatus> = MIGRATIONS
        .iter()
        .map(|m| crate::migrations::status_of(m.version, m.name, applied.get(&m.version).copied()))
        .collect();
    status.extend(
        applied
            .iter()
            .filter(|(v, _)| !MIGRATIONS.iter().any(|m| m.version == **v))
            .map(|(v, at)| crate::migrations::unknown_status(*v, *at)),
    );
    Ok(status)
}

/// The highest applied version, `0` for a database never migrated.
pub(crate) fn current_version(client: &mut Client) -> Result<u32, StoreError> {
    if !has_version_table(client)? {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0)::BIGINT FROM schema_migrations",
            &[],
        )
        .map_err(db_error)?;
    let version: i64 = row.try_get(0).map_err(db_error)?;
    u32::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("schema version {version} is out of range")))
}

fn ensure_version_table(client: &mut Client) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    BIGINT PRIMARY KEY,
                applied_at BIGINT
            )",
        )
        .map_err(db_error)
}

fn has_version_table(client: &mut Client) -> Result<bool, StoreError> {
    let row = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .map_err(db_error)?;
    row.try_get(0).map_err(db_error)
}

fn applied_versions(client: &mut Client) -> Result<BTreeMap<u32, Timestamp>, StoreError> {
    let rows = client
        .query(
            "SELECT version, coalesce(applied_at, 0) FROM schema_migrations",
            &[],
        )
        .map_err(db_error)?;
    rows.iter()
        .map(|row| {
            let version: i64 = row.try_get(0).map_err(db_error)?;
            let at: i64 = row.try_get(1).map_err(db_error)?;
            let version = u32::try_from(version).map_err(|_| {
                StoreError::Corrupt(format!("schema version {version} is out of range"))
            })?;
            Ok((version, Timestamp::from_unix(at)))
        })
        .collect()
}

fn step_failed(action: &str, m: &Migration, e: ::postgres::Error) -> StoreError {
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
    fn versions_and_names_match_the_sqlite_schema() {
        let sqlite: Vec<_> = crate::migrations::MIGRATIONS
            .iter()
            .map(|m| (m.version, m.name))
            .collect();
        let postgres: Vec<_> = MIGRATIONS.iter().map(|m| (m.version, m.name)).collect();
        assert_eq!(postgres, sqlite);
        assert!(MIGRATIONS
            .iter()
            .all(|m| !m.up.trim().is_empty() && !m.down.trim().is_empty()));
    }
}
