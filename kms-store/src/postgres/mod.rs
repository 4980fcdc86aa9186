//! [`PostgresStore`]: a store in a PostgreSQL database that any number of kms nodes share.
//!
//! The synchronous `postgres` client (over tokio-postgres, which runs its own small
//! runtime inside each connection) behind an `r2d2` pool, so the store implements the same
//! synchronous traits as SQLite (ADR 0010). **Every call blocks**; calling it on an async
//! runtime's worker thread panics (the client starts a runtime of its own), so servers run
//! store calls on a blocking pool (`spawn_blocking`), as `kms-server` does for every store.

mod counters;
mod error;
pub mod migrations;
mod notify;
mod privacy;
mod rows;
mod tx;
mod usage;

use std::sync::{Arc, Weak};
use std::time::Duration;

use ::postgres::types::ToSql;
use ::postgres::{Config, NoTls, Row};
use kms_core::store::{
    apply_batch, AppStore, AuditQuery, AuditStore, ChangeListener, GrantStore, IdentityStore,
    IdpRecord, KeyStore, LoginAttempt, Mutation, Policy, PolicyStore, RefreshRecord, Revocation,
    SealedIdentityRecords, SessionRecord, SigningKeyRecord, Store, StoreError, TokenRecord,
    TokenStore, UseOutcome, UserRecord, MAX_COUNTER,
};
use kms_core::{Application, AuditEvent, RoleName, Scope, Timestamp};
use r2d2::{Pool, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;

pub use self::counters::PostgresCounters;
use self::error::{db_error, pool_error};
use crate::columns::{
    self, app_columns, audit_columns, counter, idp_columns, login_attempt_columns, refresh_columns,
    session_columns, signing_key_columns, sql_int, sql_limit, token_columns, user_columns,
    ColumnRead,
};
use crate::listeners::Listeners;
use crate::migrations::MigrationStatus;

/// The transaction advisory lock every batch takes first ("kms_writ" in ASCII): writers
/// on every node are serialised, so the preconditions a batch reads, the audit chain's
/// head and the policy version cannot move before it commits.
const WRITE_LOCK: i64 = 0x6b6d_735f_7772_6974;

/// The columns of a user as [`columns::user`] reads them: the row's own, then its
/// identities as one JSON array, so a user and their identities are read in one statement.
macro_rules! user_select {
    () => {
        concat!(
            "SELECT ",
            user_columns!(),
            ", (SELECT coalesce(json_agg(json_build_object('idp_id', i.idp_id, \
             'subject', i.subject) ORDER BY i.idp_id, i.subject), '[]'::json)::TEXT \
             FROM user_identities AS i WHERE i.user_id = users.id) FROM users"
        )
    };
}

/// How often [`PostgresStore::consume_use`] tries to spend a use that other writers keep
/// changing under it.
const CONSUME_ATTEMPTS: usize = 3;

/// Connection settings of a [`PostgresStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The most connections the store keeps open (each call holds one while it runs).
    pub pool_size: u32,
    /// How long opening a connection, or waiting for a free one, may take before the call
    /// fails as unavailable.
    pub connect_timeout: Duration,
    /// How long one statement may run (waiting for the write lock included) before the
    /// server cancels it and the call fails as unavailable.
    pub statement_timeout: Duration,
}

impl Default for PostgresOptions {
    /// 8 connections, a 5 s connection timeout and a 10 s statement timeout.
    fn default() -> Self {
        PostgresOptions {
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
        }
    }
}

type Manager = PostgresConnectionManager<NoTls>;

/// A store in a PostgreSQL database, shared by any number of processes.
///
/// Every batch is one transaction that first takes a transaction advisory lock, so writers
/// on all nodes apply batches one at a time and extend one audit chain;
/// [`TokenStore::consume_use`] is one conditional `UPDATE`, so each use is spent exactly
/// once across all nodes. Connection failures and timeouts surface as
/// [`StoreError::Unavailable`], unique violations as [`StoreError::Conflict`], undecodable
/// rows as [`StoreError::Corrupt`]. Connections are plain TCP (meant for loopback or a
/// private network); the URL's password never appears in an error.
///
/// Listeners subscribed to this store hear the changes written through it at once, and
/// those other nodes write through a listener connection (`LISTEN`/`NOTIFY`, typically
/// within milliseconds); after the listener reconnects they hear "flush everything".
pub struct PostgresStore {
    pool: Pool<Manager>,
    /// A read replica for listings and audit reads, if one was given.
    replica: Option<Pool<Manager>>,
    listeners: Arc<Listeners>,
    /// This store's name in its notifications.
    origin: String,
    /// The listener connection feeding other nodes' changes to `listeners`; none for a
    /// store opened only to migrate.
    _feed: Option<notify::ChangeFeed>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.pool.state();
        f.debug_struct("PostgresStore")
            .field("connections", &state.connections)
            .field("idle", &state.idle_connections)
            .field("listeners", &self.listeners)
            .finish()
    }
}

/// Whether `db` names a PostgreSQL database (a `postgres://` or `postgresql://` URL) rather
/// than a SQLite file.
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// `url` with its password (in the user part or a `password=` parameter) replaced by
/// `***`, for messages and logs.
pub fn redacted_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let authority = &base[scheme_end..authority_end];
    let mut out = base[..scheme_end].to_owned();
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            match user_info.split_once(':') {
                Some((user, _password)) => out.push_str(&format!("{user}:***@{host}")),
                None => out.push_str(&format!("{user_info}@{host}")),
            };
        }
        None => out.push_str(authority),
    }
    out.push_str(&base[authority_end..]);
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/dbname`) and
    /// migrates it to the latest schema version; several nodes may do so at once.
    pub fn open(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let mut store = Self::connect(url, &options)?;
        migrations::run_up(&mut *store.conn()?, None)?;
        let config = Self::config(url, &options)?;
        let feed =
            notify::ChangeFeed::start(config, Arc::clone(&store.listeners), store.origin.clone())
                .map_err(|e| StoreError::unavailable("cannot start the change listener", e))?;
        feed.wait_connected(options.connect_timeout);
        store._feed = Some(feed);
        Ok(store)
    }

    /// Sends listings (applications, tokens) and audit searches to the read replica at
    /// `url` from now on; everything else (verification, revocation, every write, the
    /// audit chain's head) stays on the primary. A listing the replica cannot answer is
    /// asked of the primary. Listings may lag the primary by the replication delay.
    pub fn with_replica(
        mut self,
        url: &str,
        options: &PostgresOptions,
    ) -> Result<Self, StoreError> {
        let config = Self::config(url, options)?;
        let pool = Pool::builder()
            .max_size(options.pool_size.max(1))
            .min_idle(Some(0))
            .connection_timeout(options.connect_timeout)
            .build_unchecked(PostgresConnectionManager::new(config, NoTls));
        self.replica = Some(pool);
        Ok(self)
    }

    /// Whether the change listener is connected now (other nodes' changes reach this
    /// node); `true` for a store opened without one.
    pub fn is_listening(&self) -> bool {
        self._feed
            .as_ref()
            .is_none_or(notify::ChangeFeed::is_connected)
    }

    /// Connects without migrating, for `kms migrate` on a database of any version.
    pub fn open_unmigrated(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        Self::connect(url, &options)
    }

    fn config(url: &str, options: &PostgresOptions) -> Result<Config, StoreError> {
        let mut config: Config = url.parse().map_err(|e: ::postgres::Error| {
            StoreError::unavailable(format!("the PostgreSQL URL is not valid: {e}"), e)
        })?;
        let statement_ms = options.statement_timeout.as_millis().max(1);
        config
            .connect_timeout(options.connect_timeout)
            .application_name("kms")
            .options(&format!("-c statement_timeout={statement_ms}"));
        Ok(config)
    }

    fn connect(url: &str, options: &PostgresOptions) -> Result<Self, StoreError> {
        let config = Self::config(url, options)?;
        let pool = Pool::builder()
            .max_size(options.pool_size.max(1))
            .min_idle(Some(1))
            .connection_timeout(options.connect_timeout)
            .build(PostgresConnectionManager::new(config, NoTls))
            .map_err(pool_error)?;
        Ok(PostgresStore {
            pool,
            replica: None,
            listeners: Arc::default(),
            origin: notify::origin(),
            _feed: None,
        })
    }

    /// Applies migrations up to `target` (the latest when `None`); returns the versions
    /// applied.
    pub fn migrate_up(&self, target: Option<u32>) -> Result<Vec<u32>, StoreError> {
        migrations::run_up(&mut *self.conn()?, target)
    }

    /// Reverts migrations newer than `target`, newest first; returns the versions
    /// reverted. The store cannot serve requests below the latest version.
    pub fn migrate_down(&self, target: u32) -> Result<Vec<u32>, StoreError> {
        migrations::run_down(&mut *self.conn()?, target)
    }

    /// Which migrations are applied.
    pub fn migration_status(&self) -> Result<Vec<MigrationStatus>, StoreError> {
        migrations::read_status(&mut *self.conn()?)
    }

    fn conn(&self) -> Result<PooledConnection<Manager>, StoreError> {
        self.pool.get().map_err(pool_error)
    }

    /// Runs a query and decodes every row with `decode`.
    fn query<T>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        decode: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = self.conn()?.query(sql, params).map_err(db_error)?;
        rows.iter().map(decode).collect()
    }

    /// [`Self::query`] on the replica when there is one (on the primary when the replica
    /// is unavailable).
    fn query_read<T>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        decode: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        if let Some(replica) = &self.replica {
            let rows = replica
                .get()
                .map_err(pool_error)
                .and_then(|mut conn| conn.query(sql, params).map_err(db_error));
            match rows {
                Ok(rows) => return rows.iter().map(decode).collect(),
                Err(StoreError::Unavailable { .. }) => {}
                Err(other) => return Err(other),
            }
        }
        self.query(sql, params, decode)
    }

    fn query_one<T>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        decode: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.query(sql, params, decode)?.into_iter().next())
    }

    fn exists(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<bool, StoreError> {
        let row = self.conn()?.query_opt(sql, params).map_err(db_error)?;
        Ok(row.is_some())
    }
}

impl AppStore for PostgresStore {
    fn get_app(&self, id: &str) -> Result<Option<Application>, StoreError> {
        let sql = concat!("SELECT ", app_columns!(), " FROM apps WHERE id = $1");
        self.query_one(sql, &[&id], columns::app)
    }

    fn list_apps(&self, after: Option<&str>, limit: usize) -> Result<Vec<Application>, StoreError> {
        self.query_read(
            concat!(
                "SELECT ",
                app_columns!(),
                " FROM apps WHERE ($1::TEXT IS NULL OR id > $1) ORDER BY id LIMIT $2"
            ),
            &[&after, &sql_limit(limit)],
            columns::app,
        )
    }
}

impl TokenStore for PostgresStore {
    fn get_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let sql = concat!("SELECT ", token_columns!(), " FROM tokens WHERE id = $1");
        self.query_one(sql, &[&id], columns::token)
    }

    fn list_tokens(
        &self,
        app_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        self.query_read(
            concat!(
                "SELECT ",
                token_columns!(),
                " FROM tokens WHERE app_id = $1 AND ($2::TEXT IS NULL OR id > $2) \
                 ORDER BY id LIMIT $3"
            ),
            &[&app_id, &after, &sql_limit(limit)],
            columns::token,
        )
    }

    fn scope_is_granted(&self, scope: &Scope) -> Result<bool, StoreError> {
        self.exists(
            "SELECT 1 FROM token_grants WHERE kind = 'scope' AND name = $1 LIMIT 1",
            &[&scope.as_str()],
        )
    }

    fn role_is_granted(&self, role: &RoleName) -> Result<bool, StoreError> {
        self.exists(
            "SELECT 1 FROM token_grants WHERE kind = 'role' AND name = $1 LIMIT 1",
            &[&role.as_str()],
        )
    }

    fn expired_tokens(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        self.query(
            concat!(
                "SELECT ",
                token_columns!(),
                " FROM tokens WHERE expires_at IS NOT NULL AND expires_at < $1 \
                 ORDER BY id LIMIT $2"
            ),
            &[&before.unix(), &sql_limit(limit)],
            columns::token,
        )
    }

    fn consume_use(&self, id: &str) -> Result<UseOutcome, StoreError> {
        let mut conn = self.conn()?;
        // One statement spends the use, so no other connection or node can spend the same
        // one. Only when it matched nothing do we look at why; if another writer raised the
        // counter in between, spend again.
        for _ in 0..CONSUME_ATTEMPTS {
            let spent = conn
                .query_opt(
                    "UPDATE tokens SET uses = uses - 1 WHERE id = $1 AND uses > 0 RETURNING uses",
                    &[&id],
                )
                .map_err(db_error)?;
            if let Some(row) = spent {
                return Ok(UseOutcome::Remaining(counter(row.int(0)?, "token uses")?));
            }
            let look = conn
                .query_opt("SELECT uses FROM tokens WHERE id = $1", &[&id])
                .map_err(db_error)?;
            let Some(row) = look else {
                return Ok(UseOutcome::Missing);
            };
            match row.opt_int(0)? {
                None => return Ok(UseOutcome::Unlimited),
                Some(n) if n <= 0 => return Ok(UseOutcome::Exhausted),
                Some(_) => continue,
            }
        }
        Err(StoreError::Unavailable {
            message: "the token's use counter kept changing; retry".to_owned(),
            source: None,
        })
    }
}

impl PolicyStore for PostgresStore {
    fn load_policy(&self) -> Result<Policy, StoreError> {
        // One connection, one snapshot: a concurrent change cannot land between the reads.
        let mut conn = self.conn()?;
        let mut tx = conn
            .build_transaction()
            .isolation_level(::postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(db_error)?;
        let permissions = tx
            .query("SELECT scope, description, implies FROM permissions", &[])
            .map_err(db_error)?
            .iter()
            .map(columns::permission)
            .collect::<Result<Vec<_>, _>>()?;
        let roles = tx
            .query(
                "SELECT name, description, permissions, inherits, grants FROM roles",
                &[],
            )
            .map_err(db_error)?
            .iter()
            .map(columns::role)
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().map_err(db_error)?;
        Ok(Policy::from_definitions(permissions, roles))
    }
}

impl KeyStore for PostgresStore {
    fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        self.query(
            concat!(
                "SELECT ",
                signing_key_columns!(),
                " FROM signing_keys ORDER BY created_at, position"
            ),
            &[],
            columns::signing_key,
        )
    }
}

impl GrantStore for PostgresStore {
    fn get_refresh_token(&self, id: &str) -> Result<Option<RefreshRecord>, StoreError> {
        self.query_one(
            concat!(
                "SELECT ",
                refresh_columns!(),
                " FROM refresh_tokens WHERE id = $1"
            ),
            &[&id],
            columns::refresh,
        )
    }

    fn list_revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        self.query(
            "SELECT id, expires_at FROM revocations ORDER BY id",
            &[],
            columns::revocation,
        )
    }
}

impl AuditStore for PostgresStore {
    fn last_audit_event(&self) -> Result<Option<AuditEvent>, StoreError> {
        self.query_one(
            concat!(
                "SELECT ",
                audit_columns!(),
                " FROM audit_events ORDER BY seq DESC LIMIT 1"
            ),
            &[],
            columns::audit,
        )
    }

    fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        // Every stored seq is below a cursor too large for a BIGINT.
        let before = query.before_seq.filter(|&s| s <= MAX_COUNTER).map(sql_int);
        self.query_read(
            concat!(
                "SELECT ",
                audit_columns!(),
                " FROM audit_events WHERE ($1::BIGINT IS NULL OR seq < $1) \
                 AND ($2::TEXT IS NULL OR action = $2) AND ($3::TEXT IS NULL OR actor = $3) \
                 AND ($4::BIGINT IS NULL OR at >= $4) AND ($5::TEXT IS NULL OR app_id = $5) \
                 ORDER BY seq DESC LIMIT $6"
            ),
            &[
                &before,
                &query.action,
                &query.actor,
                &query.since.map(|t| t.unix()),
                &query.app_id,
                &sql_limit(query.limit),
            ],
            columns::audit,
        )
    }

    fn audit_after(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        if after_seq >= MAX_COUNTER {
            return Ok(Vec::new());
        }
        self.query(
            concat!(
                "SELECT ",
                audit_columns!(),
                " FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
            ),
            &[&sql_int(after_seq), &sql_limit(limit)],
            columns::audit,
        )
    }
}

impl IdentityStore for PostgresStore {
    fn get_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        self.query_one(
            concat!(user_select!(), " WHERE id = $1"),
            &[&id],
            columns::user,
        )
    }

    fn list_users(
        &self,
        app_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<UserRecord>, StoreError> {
        self.query_read(
            concat!(
                user_select!(),
                " WHERE app_id = $1 AND ($2::TEXT IS NULL OR id > $2) ORDER BY id LIMIT $3"
            ),
            &[&app_id, &after, &sql_limit(limit)],
            columns::user,
        )
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
                 WHERE idp_id = $1 AND subject = $2)"
            ),
            &[&idp_id, &subject],
            columns::user,
        )
    }

    fn role_is_held_by_users(&self, role: &RoleName) -> Result<bool, StoreError> {
        // A scan of the JSON columns: asked only when a role is about to be deleted.
        self.exists(
            "SELECT 1 FROM users WHERE roles::jsonb ? $1 OR mapped_roles::jsonb ? $1 \
             UNION ALL \
             SELECT 1 FROM idps WHERE default_roles::jsonb ? $1 \
             OR EXISTS (SELECT 1 FROM jsonb_each(idps.role_map::jsonb) AS g \
             WHERE g.value ? $1) \
             LIMIT 1",
            &[&role.as_str()],
        )
    }

    fn get_idp(&self, id: &str) -> Result<Option<IdpRecord>, StoreError> {
        let sql = concat!("SELECT ", idp_columns!(), " FROM idps WHERE id = $1");
        self.query_one(sql, &[&id], columns::idp)
    }

    fn idp_by_slug(&self, slug: &str) -> Result<Option<IdpRecord>, StoreError> {
        let sql = concat!("SELECT ", idp_columns!(), " FROM idps WHERE slug = $1");
        self.query_one(sql, &[&slug], columns::idp)
    }

    fn list_idps(&self, app_id: Option<&str>) -> Result<Vec<IdpRecord>, StoreError> {
        self.query(
            concat!(
                "SELECT ",
                idp_columns!(),
                " FROM idps WHERE $1::TEXT IS NULL OR app_id = $1 ORDER BY id"
            ),
            &[&app_id],
            columns::idp,
        )
    }

    fn get_login_attempt(&self, id: &str) -> Result<Option<LoginAttempt>, StoreError> {
        let sql = concat!(
            "SELECT ",
            login_attempt_columns!(),
            " FROM login_attempts WHERE id = $1"
        );
        self.query_one(sql, &[&id], columns::login_attempt)
    }

    fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE id = $1"
        );
        self.query_one(sql, &[&id], columns::session)
    }

    fn list_sessions(
        &self,
        user_id: &str,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.query(
            concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
                 ORDER BY created_at DESC, id"
            ),
            &[&user_id, &now.unix()],
            columns::session,
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
                &[],
                columns::login_attempt,
            )?,
            sessions: self.query(
                concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM sessions WHERE sealed_upstream_refresh IS NOT NULL ORDER BY id"
                ),
                &[],
                columns::session,
            )?,
        })
    }
}

impl kms_core::store::CapacityStore for PostgresStore {
    fn capacity(&self, since: Timestamp) -> Result<kms_core::store::Capacity, StoreError> {
        use kms_core::store::{Capacity, ObjectCounts};
        const SQL: &str = "SELECT \
            (SELECT count(*) FROM apps), (SELECT count(*) FROM apps WHERE created_at >= $1), \
            (SELECT count(*) FROM tokens), (SELECT count(*) FROM tokens WHERE created_at >= $1), \
            (SELECT count(*) FROM users), (SELECT count(*) FROM users WHERE created_at >= $1), \
            (SELECT count(*) FROM sessions), \
            (SELECT count(*) FROM sessions WHERE created_at >= $1), \
            (SELECT count(*) FROM audit_events), \
            (SELECT count(*) FROM audit_events WHERE at >= $1), \
            pg_database_size(current_database())";
        let row = self.query_one(SQL, &[&since.unix()], |row| {
            let mut n = [0u64; 11];
            for (i, slot) in n.iter_mut().enumerate() {
                *slot = u64::try_from(row.int(i)?).unwrap_or(0);
            }
            Ok(n)
        })?;
        let Some(n) = row else {
            return Err(crate::columns::corrupt(
                "capacity",
                "the query returned no row",
            ));
        };
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
            database_bytes: n[10],
        })
    }
}

impl Store for PostgresStore {
    fn apply(&self, batch: &[Mutation]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction().map_err(db_error)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
                .map_err(db_error)?;
            // On error the transaction is dropped, which rolls it back (and releases the
            // lock).
            apply_batch(&mut tx::PgTx(&mut tx), batch)?;
            // Announced on commit only: a rolled-back batch tells no node anything.
            let changes = crate::listeners::changes_of(batch);
            if !changes.is_empty() {
                // The change counter lets a node notice a notification it missed.
                let seq: String = tx
                    .query_one(notify::ADVANCE_SEQ, &[])
                    .map_err(db_error)?
                    .get(0);
                let seq = seq.parse::<i64>().unwrap_or(0);
                tx.execute(
                    "SELECT pg_notify($1, $2)",
                    &[
                        &notify::CHANNEL,
                        &notify::encode(&self.origin, seq, &changes),
                    ],
                )
                .map_err(db_error)?;
            }
            tx.commit().map_err(db_error)?;
            if batch.iter().any(Mutation::erases) {
                // Committed: a failed vacuum is reported to the log, not as a failed batch.
                if let Err(e) = privacy::scrub(&mut conn) {
                    tracing::warn!(error = %e, "vacuuming after an erasure");
                }
            }
        }
        self.listeners.notify(batch);
        Ok(())
    }

    fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.query_one("SELECT value FROM meta WHERE key = $1", &[&key], |row| {
            row.text(0)
        })
    }

    fn subscribe(&self, listener: Weak<dyn ChangeListener>) {
        self.listeners.subscribe(listener);
    }

    fn ping(&self) -> Result<(), StoreError> {
        let version = migrations::current_version(&mut *self.conn()?)?;
        if !self.is_listening() {
            // Serving now could answer from caches that other nodes' changes no longer
            // reach; the listener reconnects by itself (and then flushes them).
            return Err(StoreError::Unavailable {
                message: "the change listener is not connected to the database yet".to_owned(),
                source: None,
            });
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            redacted_url("postgres://kms:s3cr%40t@db.internal:5432/kms?password=x&sslmode=disable"),
            "postgres://kms:***@db.internal:5432/kms?password=***&sslmode=disable"
        );
        assert_eq!(
            redacted_url("postgresql://postgres@127.0.0.1:5/postgres"),
            "postgresql://postgres@127.0.0.1:5/postgres"
        );
        assert!(is_postgres_url("postgresql://h/d") && !is_postgres_url("./kms.db"));
    }
}
