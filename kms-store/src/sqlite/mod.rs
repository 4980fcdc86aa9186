//! [`SqliteStore`]: the embedded default, one SQLite file in write-ahead-log mode.

pub(crate) mod connection;
pub(crate) mod error;
mod privacy;
mod rows;
mod tx;
mod usage;

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError, Weak};

use kms_core::store::{
    AppStore, AuditStore, ChangeListener, GrantStore, IdentityStore, KeyStore, Mutation,
    PolicyStore, SealedIdentityRecords, Store, TokenStore, UseOutcome,
};
use kms_core::store::{
    AuditQuery, IdpRecord, LoginAttempt, Policy, RefreshRecord, Revocation, SessionRecord,
    SigningKeyRecord, StoreError, TokenRecord, UserRecord,
};
use kms_core::{Application, AuditEvent, RoleName, Scope};
use rusqlite::{params, Connection, OptionalExtension, Params, Row, TransactionBehavior};

use self::error::{corrupt, db_error};
use crate::columns::{
    app_columns, audit_columns, idp_columns, login_attempt_columns, refresh_columns,
    session_columns, signing_key_columns, sql_int, sql_limit, token_columns, user_columns,
};
use crate::listeners::Listeners;
use crate::migrations::{self, MigrationStatus};
use kms_core::store::{apply_batch, MAX_COUNTER};

/// A store in one SQLite database file.
///
/// Every batch is one `IMMEDIATE` transaction; the file runs in WAL mode with
/// `synchronous=FULL`, so a write is on disk once [`Store::apply`] returns. Busy, locked,
/// full or failing disks surface as [`StoreError::Unavailable`], undecodable rows as
/// [`StoreError::Corrupt`].
///
/// One connection serves all calls, one at a time. Several stores or processes may share
/// a file: SQLite's locks, with a 5 second busy timeout, keep them consistent, and
/// [`TokenStore::consume_use`] spends each use exactly once across all of them.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    listeners: Listeners,
}

impl SqliteStore {
    /// Opens the database at `path`, creating it (mode 0600) if needed, and migrates it to
    /// the latest schema version.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let mut conn = connection::open_file(path.as_ref())?;
        migrations::run_up(&mut conn, None)?;
        Ok(Self::with_connection(conn))
    }

    /// A migrated database that lives in memory only, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let mut conn = connection::open_memory()?;
        migrations::run_up(&mut conn, None)?;
        Ok(Self::with_connection(conn))
    }

    fn with_connection(conn: Connection) -> Self {
        SqliteStore {
            conn: Mutex::new(conn),
            listeners: Listeners::default(),
        }
    }

    /// Applies migrations up to `target` (the latest when `None`); returns the versions
    /// applied. See [`migrations::up`].
    pub fn migrate_up(&self, target: Option<u32>) -> Result<Vec<u32>, StoreError> {
        migrations::run_up(&mut self.conn(), target)
    }

    /// Reverts migrations newer than `target`, newest first; returns the versions
    /// reverted. The store cannot serve requests below the latest version. See
    /// [`migrations::down`].
    pub fn migrate_down(&self, target: u32) -> Result<Vec<u32>, StoreError> {
        migrations::run_down(&mut self.conn(), target)
    }

    /// Which migrations are applied. See [`migrations::status`].
    pub fn migration_status(&self) -> Result<Vec<MigrationStatus>, StoreError> {
        migrations::read_status(&self.conn())
    }

    // A panic cannot leave a transaction half-applied (rusqlite rolls back on drop), so a
    // poisoned lock still guards a consistent connection.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a query and decodes every row with `decode`.
    fn query<T>(
        &self,
        sql: &str,
        params: impl Params,
        decode: fn(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql).map_err(db_error)?;
        let mut rows = stmt.query(params).map_err(db_error)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db_error)? {
            out.push(decode(row)?);
        }
        Ok(out)
    }

    fn query_one<T>(
        &self,
        sql: &str,
        params: impl Params,
        decode: fn(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.query(sql, params, decode)?.into_iter().next())
    }

    fn exists(&self, sql: &str, params: impl Params) -> Result<bool, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql).map_err(db_error)?;
        stmt.exists(params).map_err(db_error)
    }
}

/// The columns of a user as [`rows::user_from_row`] reads them: the row's own, then its
/// identities as one JSON array, so a user and their identities are read in one statement.
macro_rules! user_select {
    () => {
        concat!(
            "SELECT ",
            user_columns!(),
            ", (SELECT json_group_array(json_object('idp_id', i.idp_id, 'subject', i.subject) \
             ORDER BY i.idp_id, i.subject) FROM user_identities AS i WHERE i.user_id = users.id) \
             FROM users"
        )
    };
}

/// How often [`SqliteStore::consume_use`] tries to spend a use that other processes keep
/// changing under it.
const CONSUME_ATTEMPTS: usize = 3;

impl AppStore for SqliteStore {
    fn get_app(&self, id: &str) -> Result<Option<Application>, StoreError> {
        let sql = concat!("SELECT ", app_columns!(), " FROM apps WHERE id = ?1");
        self.query_one(sql, [id], rows::app_from_row)
    }

    fn list_apps(&self, after: Option<&str>, limit: usize) -> Result<Vec<Application>, StoreError> {
        let limit = sql_limit(limit);
        match after {
            Some(after) => self.query(
                concat!(
                    "SELECT ",
                    app_columns!(),
                    " FROM apps WHERE id > ?1 ORDER BY id LIMIT ?2"
                ),
                params![after, limit],
                rows::app_from_row,
            ),
            None => self.query(
                concat!("SELECT ", app_columns!(), " FROM apps ORDER BY id LIMIT ?1"),
                [limit],
                rows::app_from_row,
            ),
        }
    }
}

impl TokenStore for SqliteStore {
    fn get_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let sql = concat!("SELECT ", token_columns!(), " FROM tokens WHERE id = ?1");
        self.query_one(sql, [id], rows::token_from_row)
    }

    fn list_tokens(
        &self,
        app_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let limit = sql_limit(limit);
        match after {
            Some(after) => self.query(
                concat!(
                    "SELECT ",
                    token_columns!(),
                    " FROM tokens WHERE app_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
                ),
                params![app_id, after, limit],
                rows::token_from_row,
            ),
            None => self.query(
                concat!(
                    "SELECT ",
                    token_columns!(),
                    " FROM tokens WHERE app_id = ?1 ORDER BY id LIMIT ?2"
                ),
                params![app_id, limit],
                rows::token_from_row,
            ),
        }
    }

    fn scope_is_granted(&self, scope: &Scope) -> Result<bool, StoreError> {
        self.exists(
            "SELECT 1 FROM token_grants WHERE kind = 'scope' AND name = ?1",
            [scope.as_str()],
        )
    }

    fn role_is_granted(&self, role: &RoleName) -> Result<bool, StoreError> {
        self.exists(
            "SELECT 1 FROM token_grants WHERE kind = 'role' AND name = ?1",
            [role.as_str()],
        )
    }

    fn expired_tokens(
        &self,
        before: kms_core::Timestamp,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        self.query(
            concat!(
                "SELECT ",
                token_columns!(),
                " FROM tokens WHERE expires_at IS NOT NULL AND expires_at < ?1 ORDER BY id LIMIT ?2"
            ),
            params![before.unix(), sql_limit(limit)],
            rows::token_from_row,
        )
    }

    fn consume_use(&self, id: &str) -> Result<UseOutcome, StoreError> {
        let conn = self.conn();
        let mut spend = conn
            .prepare_cached(
                "UPDATE tokens SET uses = uses - 1 WHERE id = ?1 AND uses > 0 RETURNING uses",
            )
            .map_err(db_error)?;
        let mut look = conn
            .prepare_cached("SELECT uses FROM tokens WHERE id = ?1")
            .map_err(db_error)?;
        // One statement spends the use, so no other connection or process can spend the
        // same one. Only when it matched nothing do we look at why; if another process
        // raised the counter in between, spend again.
        for _ in 0..CONSUME_ATTEMPTS {
            let left: Option<i64> = spend
                .query_row([id], |row| row.get(0))
                .optional()
                .map_err(db_error)?;
            if let Some(left) = left {
                let left =
                    u64::try_from(left).map_err(|_| corrupt("token uses", "negative counter"))?;
                return Ok(UseOutcome::Remaining(left));
            }
            let uses: Option<Option<i64>> = look
                .query_row([id], |row| row.get(0))
                .optional()
                .map_err(db_error)?;
            match uses {
                None => return Ok(UseOutcome::Missing),
                Some(None) => return Ok(UseOutcome::Unlimited),
                Some(Some(n)) if n <= 0 => return Ok(UseOutcome::Exhausted),
                Some(Some(_)) => continue,
            }
        }
        Err(StoreError::Unavailable {
            message: "the token's use counter kept changing; retry".to_owned(),
            source: None,
        })
    }
}

impl PolicyStore for SqliteStore {
    fn load_policy(&self) -> Result<Policy, StoreError> {
        let permissions = self.query(
            "SELECT scope, description, implies FROM permissions",
            [],
            rows::permission_from_row,
        )?;
        let roles = self.query(
            "SELECT name, description, permissions, inherits, grants FROM roles",
            [],
            rows::role_from_row,
        )?;
        Ok(Policy::from_definitions(permissions, roles))
    }
}

impl KeyStore for SqliteStore {
    fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        self.query(
            concat!(
                "SELECT ",
                signing_key_columns!(),
                " FROM signing_keys ORDER BY created_at, position"
            ),
            [],
            rows::signing_key_from_row,
        )
    }
}

impl GrantStore for SqliteStore {
    fn get_refresh_token(&self, id: &str) -> Result<Option<RefreshRecord>, StoreError> {
        self.query_one(
            concat!(
                "SELECT ",
                refresh_columns!(),
                " FROM refresh_tokens WHERE id = ?1"
            ),
            [id],
            rows::refresh_from_row,
        )
    }

    fn list_revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        self.query(
            "SELECT id, expires_at FROM revocations ORDER BY id",
            [],
            rows::revocation_from_row,
        )
    }
}

impl AuditStore for SqliteStore {
    fn last_audit_event(&self) -> Result<Option<AuditEvent>, StoreError> {
        self.query_one(
            concat!(
                "SELECT ",
                audit_columns!(),
                " FROM audit_events ORDER BY seq DESC LIMIT 1"
            ),
            [],
            rows::audit_from_row,
        )
    }

    fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.query(
            concat!(
                "SELECT ",
                audit_columns!(),
                " FROM audit_events WHERE (?1 IS NULL OR seq < ?1) \
                 AND (?2 IS NULL OR action = ?2) AND (?3 IS NULL OR actor = ?3) \
                 AND (?4 IS NULL OR at >= ?4) AND (?5 IS NULL OR app_id = ?5) \
                 ORDER BY seq DESC LIMIT ?6"
            ),
            params![
                // Every stored seq is below a cursor too large for SQLite.
                query.before_seq.filter(|&s| s <= MAX_COUNTER).map(sql_int),
                query.action,
                query.actor,
                query.since.map(|t| t.unix()),
                query.app_id,
                sql_limit(query.limit),
            ],
            rows::audit_from_row,
        )
    }

    fn audit_after(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.query(
            concat!(
                "SELECT ",
                audit_columns!(),
                " FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ),
            params![sql_int(after_seq), sql_limit(limit)],
            rows::audit_from_row,
        )
    }
}

impl IdentityStore for SqliteStore {
    fn get_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        self.query_one(
            concat!(user_select!(), " WHERE id = ?1"),
            [id],
            rows::user_from_row,
        )
    }

    fn list_users(
        &self,
        app_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<UserRecord>, StoreError> {
        let limit = sql_limit(limit);
        match after {
            Some(after) => self.query(
                concat!(
                    user_select!(),
                    " WHERE app_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
                ),
                params![app_id, after, limit],
                rows::user_from_row,
            ),
            None => self.query(
                concat!(user_select!(), " WHERE app_id = ?1 ORDER BY id LIMIT ?2"),
                params![app_id, limit],
                rows::user_from_row,
            ),
        }
    }

    fn user_by_identity(
        &self,
        idp_id: &str,
        subject: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        self.query_one(
            concat!(
                user_select!(),
                " WHERE id = (SELECT user_id FROM user_identities \
                 WHERE idp_id = ?1 AND subject = ?2)"
            ),
            params![idp_id, subject],
            rows::user_from_row,
        )
    }

    fn role_is_held_by_users(&self, role: &RoleName) -> Result<bool, StoreError> {
        // A scan of the JSON columns: asked only when a role is about to be deleted.
        self.exists(
            "SELECT 1 FROM users WHERE \
             EXISTS (SELECT 1 FROM json_each(users.roles) WHERE value = ?1) \
             OR EXISTS (SELECT 1 FROM json_each(users.mapped_roles) WHERE value = ?1) \
             UNION ALL \
             SELECT 1 FROM idps WHERE \
             EXISTS (SELECT 1 FROM json_each(idps.default_roles) WHERE value = ?1) \
             OR EXISTS (SELECT 1 FROM json_each(idps.role_map) AS g, json_each(g.value) AS r \
             WHERE r.value = ?1)",
            [role.as_str()],
        )
    }

    fn get_idp(&self, id: &str) -> Result<Option<IdpRecord>, StoreError> {
        let sql = concat!("SELECT ", idp_columns!(), " FROM idps WHERE id = ?1");
        self.query_one(sql, [id], rows::idp_from_row)
    }

    fn idp_by_slug(&self, slug: &str) -> Result<Option<IdpRecord>, StoreError> {
        let sql = concat!("SELECT ", idp_columns!(), " FROM idps WHERE slug = ?1");
        self.query_one(sql, [slug], rows::idp_from_row)
    }

    fn list_idps(&self, app_id: Option<&str>) -> Result<Vec<IdpRecord>, StoreError> {
        self.query(
            concat!(
                "SELECT ",
                idp_columns!(),
                " FROM idps WHERE ?1 IS NULL OR app_id = ?1 ORDER BY id"
            ),
            [app_id],
            rows::idp_from_row,
        )
    }

    fn get_login_attempt(&self, id: &str) -> Result<Option<LoginAttempt>, StoreError> {
        let sql = concat!(
            "SELECT ",
            login_attempt_columns!(),
            " FROM login_attempts WHERE id = ?1"
        );
        self.query_one(sql, [id], rows::login_attempt_from_row)
    }

    fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE id = ?1"
        );
        self.query_one(sql, [id], rows::session_from_row)
    }

    fn list_sessions(
        &self,
        user_id: &str,
        now: kms_core::Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.query(
            concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2 \
                 ORDER BY created_at DESC, id"
            ),
            params![user_id, now.unix()],
            rows::session_from_row,
        )
    }

    fn sealed_identity_records(&self) -> Result<SealedIdentityRecords, StoreError> {
        Ok(SealedIdentityRecords {
            login_attempts: self.query(
                concat!(
                    "SELECT ",
                    login_attempt_columns!(),
                    " FROM login_attempts WHERE sealed_pkce_verifier IS NOT NULL ORDER BY id"
                ),
                [],
                rows::login_attempt_from_row,
            )?,
            sessions: self.query(
                concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM sessions WHERE sealed_upstream_refresh IS NOT NULL ORDER BY id"
                ),
                [],
                rows::session_from_row,
            )?,
        })
    }
}

impl kms_core::store::CapacityStore for SqliteStore {
    fn capacity(
        &self,
        since: kms_core::Timestamp,
    ) -> Result<kms_core::store::Capacity, StoreError> {
        use kms_core::store::{Capacity, ObjectCounts};
        const SQL: &str = "SELECT \
            (SELECT count(*) FROM apps), (SELECT count(*) FROM apps WHERE created_at >= ?1), \
            (SELECT count(*) FROM tokens), (SELECT count(*) FROM tokens WHERE created_at >= ?1), \
            (SELECT count(*) FROM users), (SELECT count(*) FROM users WHERE created_at >= ?1), \
            (SELECT count(*) FROM sessions), \
            (SELECT count(*) FROM sessions WHERE created_at >= ?1), \
            (SELECT count(*) FROM audit_events), \
            (SELECT count(*) FROM audit_events WHERE at >= ?1), \
            (SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()), \
            (SELECT file FROM pragma_database_list WHERE name = 'main')";
        let row = self.query_one(SQL, [since.unix()], |row| {
            let n = |i: usize| -> Result<u64, StoreError> {
                let v: i64 = row.get(i).map_err(db_error)?;
                Ok(u64::try_from(v).unwrap_or(0))
            };
            let file: Option<String> = row.get(11).map_err(db_error)?;
            Ok((
                [
                    n(0)?,
                    n(1)?,
                    n(2)?,
                    n(3)?,
                    n(4)?,
                    n(5)?,
                    n(6)?,
                    n(7)?,
                    n(8)?,
                    n(9)?,
                    n(10)?,
                ],
                file,
            ))
        })?;
        let Some((n, file)) = row else {
            return Err(corrupt("capacity", "the query returned no row"));
        };
        // The write-ahead log holds committed pages not yet checkpointed into the file.
        let wal_bytes = file
            .filter(|f| !f.is_empty())
            .and_then(|f| std::fs::metadata(format!("{f}-wal")).ok())
            .map_or(0, |m| m.len());
        Ok(Capacity {
            stored: ObjectCounts {
                applications: n[0],
                tokens: n[2],
                users: n[4],
                sessions: n[6],
                audit_events: n[8],
            },
            created_since: ObjectCounts {
                applications: n[1],
                tokens: n[3],
                users: n[5],
                sessions: n[7],
                audit_events: n[9],
            },
            database_bytes: n[10].saturating_add(wal_bytes),
        })
    }
}

impl Store for SqliteStore {
    fn apply(&self, batch: &[Mutation]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        {
            let mut conn = self.conn();
            // IMMEDIATE takes the write lock up front: a deferred transaction that reads
            // first could fail to upgrade with SQLITE_BUSY, which busy_timeout cannot help.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_error)?;
            // On error the transaction is dropped, which rolls it back.
            apply_batch(&mut tx::SqliteTx(&tx), batch)?;
            tx.commit().map_err(db_error)?;
            if batch.iter().any(Mutation::erases) {
                // Committed: a failed scrub is reported to the log, not as a failed batch.
                if let Err(e) = privacy::scrub(&conn) {
                    tracing::warn!(error = %e, "scrubbing after an erasure");
                }
            }
        }
        self.listeners.notify(batch);
        Ok(())
    }

    fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.query_one("SELECT value FROM meta WHERE key = ?1", [key], |row| {
            row.get(0).map_err(db_error)
        })
    }

    fn subscribe(&self, listener: Weak<dyn ChangeListener>) {
        self.listeners.subscribe(listener);
    }

    fn ping(&self) -> Result<(), StoreError> {
        let version = migrations::current_version(&self.conn())?;
        let latest = migrations::latest_version();
        if version == latest {
            Ok(())
        } else {
            Err(StoreError::Unavailable {
                message: format!(
                    "the database schema is at version {version}, not {latest}; run `kms migrate up`"
                ),
                source: None,
            })
        }
    }
}
