//! The primitive reads and writes of one SQLite transaction, for the shared batch logic.

use kms_core::store::{
    IdpRecord, LoginAttempt, RefreshRecord, RefreshStatus, Revocation, SessionRecord,
    SessionSelector, SigningKeyRecord, StoreError, TokenRecord, UserRecord,
};
use kms_core::{Application, AuditEvent, Permission, Role, RoleName, Scope, Timestamp};
use rusqlite::{params, Connection, OptionalExtension, ToSql};

use super::error::corrupt;
use super::error::db_error;
use crate::columns::{
    self, app_columns, audit_columns, idp_columns, login_attempt_columns, refresh_columns,
    session_columns, signing_key_columns, sql_int, to_json, token_columns, user_columns,
    IdpColumns, TokenColumns, UserColumns,
};
use kms_core::store::Transaction;

/// [`Transaction`] over an open transaction (a `rusqlite::Transaction` derefs to its connection).
pub(crate) struct SqliteTx<'a>(pub(crate) &'a Connection);

impl SqliteTx<'_> {
    fn exists(&self, sql: &str, key: &dyn ToSql) -> Result<bool, StoreError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(db_error)?;
        stmt.exists([key]).map_err(db_error)
    }

    fn execute(&self, sql: &str, params: &[&dyn ToSql]) -> Result<(), StoreError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(db_error)?;
        stmt.execute(params).map(drop).map_err(db_error)
    }

    fn text(&self, sql: &str, params: &[&dyn ToSql]) -> Result<Option<String>, StoreError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(db_error)?;
        stmt.query_row(params, |row| row.get(0))
            .optional()
            .map_err(db_error)
    }
}

impl Transaction for SqliteTx<'_> {
    fn meta_exists(&mut self, key: &str) -> Result<bool, StoreError> {
        self.exists("SELECT 1 FROM meta WHERE key = ?1", &key)
    }

    fn meta(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .map_err(db_error)?;
        stmt.query_row([key], |row| row.get(0))
            .optional()
            .map_err(db_error)
    }

    fn insert_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)",
            params![key, value],
        )
    }

    fn app_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        self.exists("SELECT 1 FROM apps WHERE id = ?1", &id)
    }

    fn app_named(&mut self, name: &str) -> Result<Option<String>, StoreError> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT id FROM apps WHERE name = ?1")
            .map_err(db_error)?;
        stmt.query_row([name], |row| row.get(0))
            .optional()
            .map_err(db_error)
    }

    fn put_app(&mut self, app: &Application) -> Result<(), StoreError> {
        self.execute(
            concat!(
                "INSERT INTO apps (",
                app_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
             token_prefix = excluded.token_prefix, status = excluded.status, \
             created_at = excluded.created_at, ip_allow = excluded.ip_allow, \
             require_signed_requests = excluded.require_signed_requests, \
             signing_secret = excluded.signing_secret, usage_price = excluded.usage_price"
            ),
            params![
                app.id,
                app.name,
                app.token_prefix.as_str(),
                app.status.as_str(),
                app.created_at.unix(),
                to_json(&app.security.ip_allow, "application allow-list")?,
                i64::from(app.security.require_signed_requests),
                app.security.signing_secret,
                app.usage_price
                    .as_ref()
                    .map(|p| to_json(p, "application usage price"))
                    .transpose()?,
            ],
        )
    }

    fn delete_app(&mut self, id: &str) -> Result<(), StoreError> {
        // Its people first: sessions and identities of its users and through its
        // providers, the users, the providers' login attempts, the providers.
        self.execute(
            "DELETE FROM sessions WHERE app_id = ?1 \
             OR user_id IN (SELECT id FROM users WHERE app_id = ?1)",
            params![id],
        )?;
        self.execute(
            "DELETE FROM user_identities \
             WHERE user_id IN (SELECT id FROM users WHERE app_id = ?1) \
             OR idp_id IN (SELECT id FROM idps WHERE app_id = ?1)",
            params![id],
        )?;
        self.execute("DELETE FROM users WHERE app_id = ?1", params![id])?;
        self.execute(
            "DELETE FROM login_attempts WHERE idp_id IN (SELECT id FROM idps WHERE app_id = ?1)",
            params![id],
        )?;
        self.execute("DELETE FROM idps WHERE app_id = ?1", params![id])?;
        self.execute(
            "DELETE FROM token_grants WHERE token_id IN (SELECT id FROM tokens WHERE app_id = ?1)",
            params![id],
        )?;
        self.execute("DELETE FROM tokens WHERE app_id = ?1", params![id])?;
        self.execute("DELETE FROM apps WHERE id = ?1", params![id])
    }

    fn permission_exists(&mut self, scope: &Scope) -> Result<bool, StoreError> {
        self.exists(
            "SELECT 1 FROM permissions WHERE scope = ?1",
            &scope.as_str(),
        )
    }

    fn put_permission(&mut self, permission: &Permission) -> Result<(), StoreError> {
        let implies = to_json(&permission.implies, "permission implies")?;
        self.execute(
            "INSERT INTO permissions (scope, description, implies) VALUES (?1, ?2, ?3) \
             ON CONFLICT (scope) DO UPDATE SET description = excluded.description, \
             implies = excluded.implies",
            params![permission.scope.as_str(), permission.description, implies],
        )
    }

    fn delete_permission(&mut self, scope: &Scope) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM permissions WHERE scope = ?1",
            params![scope.as_str()],
        )
    }

    fn put_role(&mut self, role: &Role) -> Result<(), StoreError> {
        let permissions = to_json(&role.permissions, "role permissions")?;
        let inherits = to_json(&role.inherits, "role inherits")?;
        let grants = to_json(&role.grants, "role grants")?;
        self.execute(
            "INSERT INTO roles (name, description, permissions, inherits, grants) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (name) DO UPDATE SET description = excluded.description, \
             permissions = excluded.permissions, inherits = excluded.inherits, \
             grants = excluded.grants",
            params![
                role.name.as_str(),
                role.description,
                permissions,
                inherits,
                grants
            ],
        )
    }

    fn delete_role(&mut self, name: &RoleName) -> Result<(), StoreError> {
        self.execute("DELETE FROM roles WHERE name = ?1", params![name.as_str()])
    }

    fn token_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        self.exists("SELECT 1 FROM tokens WHERE id = ?1", &id)
    }

    fn put_token(&mut self, token: &TokenRecord) -> Result<(), StoreError> {
        let c = TokenColumns::encode(token)?;
        const PUT: &str = concat!(
            "INSERT INTO tokens (",
            token_columns!(),
            ") \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
             ?18) \
             ON CONFLICT (id) DO UPDATE SET app_id = excluded.app_id, name = excluded.name, \
             secret_hash = excluded.secret_hash, start = excluded.start, \
             status = excluded.status, created_at = excluded.created_at, \
             expires_at = excluded.expires_at, revoked_at = excluded.revoked_at, \
             scopes = excluded.scopes, roles = excluded.roles, metadata = excluded.metadata, \
             limits = excluded.limits, uses = excluded.uses, \
             rotated_from = excluded.rotated_from, rotated_to = excluded.rotated_to, \
             grants = excluded.grants, \
             last_used_at = coalesce(max(excluded.last_used_at, tokens.last_used_at), \
             excluded.last_used_at, tokens.last_used_at)"
        );
        self.execute(
            PUT,
            params![
                token.id,
                token.app_id,
                token.name,
                token.secret_hash,
                token.start,
                token.status.as_str(),
                token.created_at.unix(),
                token.expires_at.map(|t| t.unix()),
                token.revoked_at.map(|t| t.unix()),
                c.scopes,
                c.roles,
                c.metadata,
                c.limits,
                c.uses,
                token.rotated_from,
                token.rotated_to,
                c.grants,
                token.last_used_at.map(|t| t.unix()),
            ],
        )?;
        self.execute(
            "DELETE FROM token_grants WHERE token_id = ?1",
            params![token.id],
        )?;
        for (kind, name) in columns::grants(token) {
            self.execute(
                "INSERT OR IGNORE INTO token_grants (token_id, kind, name) VALUES (?1, ?2, ?3)",
                params![token.id, kind, name],
            )?;
        }
        Ok(())
    }

    fn delete_token(&mut self, id: &str) -> Result<(), StoreError> {
        self.execute("DELETE FROM token_grants WHERE token_id = ?1", params![id])?;
        self.execute("DELETE FROM tokens WHERE id = ?1", params![id])
    }

    fn put_signing_key(&mut self, key: &SigningKeyRecord) -> Result<(), StoreError> {
        self.execute(
            concat!(
                "INSERT INTO signing_keys (",
                signing_key_columns!(),
                ", position) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
                 (SELECT coalesce(max(position), 0) + 1 FROM signing_keys)) \
                 ON CONFLICT (kid) DO UPDATE SET algorithm = excluded.algorithm, \
                 state = excluded.state, created_at = excluded.created_at, \
                 verify_until = excluded.verify_until, retired_at = excluded.retired_at, \
                 public_key = excluded.public_key, sealed_private = excluded.sealed_private"
            ),
            params![
                key.kid,
                key.algorithm.as_str(),
                key.state.as_str(),
                key.created_at.unix(),
                key.verify_until.map(|t| t.unix()),
                key.retired_at.map(|t| t.unix()),
                key.public_key,
                key.sealed_private,
            ],
        )
    }

    fn refresh_status(&mut self, id: &str) -> Result<Option<RefreshStatus>, StoreError> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT status FROM refresh_tokens WHERE id = ?1")
            .map_err(db_error)?;
        let status: Option<String> = stmt
            .query_row([id], |row| row.get(0))
            .optional()
            .map_err(db_error)?;
        status.map(|s| columns::refresh_status(&s)).transpose()
    }

    fn insert_refresh_token(&mut self, r: &RefreshRecord) -> Result<(), StoreError> {
        self.execute(
            concat!(
                "INSERT INTO refresh_tokens (",
                refresh_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ),
            params![
                r.id,
                r.family_id,
                r.token_id,
                r.app_id,
                r.secret_hash,
                r.scope,
                r.audience,
                r.status.as_str(),
                r.created_at.unix(),
                r.expires_at.unix(),
                r.spent_at.map(|t| t.unix()),
            ],
        )
    }

    fn spend_refresh_token(&mut self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        self.execute(
            "UPDATE refresh_tokens SET status = ?2, spent_at = ?3 WHERE id = ?1",
            params![id, RefreshStatus::Spent.as_str(), at.unix()],
        )
    }

    fn revoke_refresh_family(&mut self, family_id: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE refresh_tokens SET status = ?2 WHERE family_id = ?1",
            params![family_id, RefreshStatus::Revoked.as_str()],
        )
    }

    fn put_revocation(&mut self, revocation: &Revocation) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO revocations (id, expires_at) VALUES (?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
            params![revocation.id, revocation.expires_at.unix()],
        )
    }

    fn purge_expired(&mut self, before: Timestamp) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM revocations WHERE expires_at < ?1",
            params![before.unix()],
        )?;
        self.execute(
            "DELETE FROM refresh_tokens WHERE expires_at < ?1",
            params![before.unix()],
        )?;
        self.execute(
            "DELETE FROM login_attempts WHERE expires_at < ?1",
            params![before.unix()],
        )?;
        self.execute(
            "DELETE FROM sso_replay WHERE expires_at < ?1",
            params![before.unix()],
        )
    }

    fn prune_audit(&mut self, through_seq: u64) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM audit_events WHERE seq <= ?1",
            params![sql_int(through_seq)],
        )
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )
    }

    fn audit_exists(&mut self, seq: u64) -> Result<bool, StoreError> {
        self.exists("SELECT 1 FROM audit_events WHERE seq = ?1", &sql_int(seq))
    }

    fn audit_head(&mut self) -> Result<Option<(u64, String)>, StoreError> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .map_err(db_error)?;
        let head: Option<(i64, String)> = stmt
            .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()
            .map_err(db_error)?;
        head.map(|(seq, hash)| {
            u64::try_from(seq)
                .map(|seq| (seq, hash))
                .map_err(|_| corrupt("audit sequence number", format!("{seq} is negative")))
        })
        .transpose()
    }

    fn append_audit(&mut self, e: &AuditEvent) -> Result<(), StoreError> {
        let details = to_json(&e.details, "audit details")?;
        self.execute(
            concat!(
                "INSERT INTO audit_events (",
                audit_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ),
            params![
                sql_int(e.seq),
                e.at.unix(),
                e.actor,
                e.action,
                e.target,
                e.outcome,
                e.ip,
                e.request_id,
                e.app_id,
                details,
                e.prev_hash,
                e.hash,
                e.subject,
                e.sealed_personal,
            ],
        )
    }

    fn user_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        self.exists("SELECT 1 FROM users WHERE id = ?1", &id)
    }

    fn user_with_identity(
        &mut self,
        idp_id: &str,
        subject: &str,
    ) -> Result<Option<String>, StoreError> {
        self.text(
            "SELECT user_id FROM user_identities WHERE idp_id = ?1 AND subject = ?2",
            params![idp_id, subject],
        )
    }

    fn put_user(&mut self, user: &UserRecord) -> Result<(), StoreError> {
        let c = UserColumns::encode(user)?;
        self.execute(
            concat!(
                "INSERT INTO users (",
                user_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT (id) DO UPDATE SET app_id = excluded.app_id, \
                 email = excluded.email, name = excluded.name, status = excluded.status, \
                 roles = excluded.roles, mapped_roles = excluded.mapped_roles, \
                 grants = excluded.grants, created_at = excluded.created_at, \
                 last_login_at = excluded.last_login_at"
            ),
            params![
                user.id,
                user.app_id,
                user.email,
                user.name,
                user.status.as_str(),
                c.roles,
                c.mapped_roles,
                c.grants,
                user.created_at.unix(),
                user.last_login_at.map(|t| t.unix()),
            ],
        )?;
        self.execute(
            "DELETE FROM user_identities WHERE user_id = ?1",
            params![user.id],
        )?;
        for identity in &user.identities {
            self.execute(
                "INSERT OR IGNORE INTO user_identities (idp_id, subject, user_id) \
                 VALUES (?1, ?2, ?3)",
                params![identity.idp_id, identity.subject, user.id],
            )?;
        }
        Ok(())
    }

    fn delete_user(&mut self, id: &str) -> Result<(), StoreError> {
        self.execute("DELETE FROM sessions WHERE user_id = ?1", params![id])?;
        self.execute(
            "DELETE FROM user_identities WHERE user_id = ?1",
            params![id],
        )?;
        self.execute("DELETE FROM users WHERE id = ?1", params![id])
    }

    fn idp_with_slug(&mut self, slug: &str) -> Result<Option<String>, StoreError> {
        self.text("SELECT id FROM idps WHERE slug = ?1", params![slug])
    }

    fn put_idp(&mut self, idp: &IdpRecord) -> Result<(), StoreError> {
        let c = IdpColumns::encode(idp)?;
        self.execute(
            concat!(
                "INSERT INTO idps (",
                idp_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (id) DO UPDATE SET app_id = excluded.app_id, \
                 slug = excluded.slug, status = excluded.status, \
                 created_at = excluded.created_at, role_map = excluded.role_map, \
                 default_roles = excluded.default_roles, \
                 email_domains = excluded.email_domains, protocol = excluded.protocol"
            ),
            params![
                idp.id,
                idp.app_id,
                idp.slug,
                idp.status.as_str(),
                idp.created_at.unix(),
                c.role_map,
                c.default_roles,
                c.email_domains,
                c.protocol,
            ],
        )
    }

    fn delete_idp(&mut self, id: &str) -> Result<(), StoreError> {
        self.execute("DELETE FROM user_identities WHERE idp_id = ?1", params![id])?;
        self.execute("DELETE FROM login_attempts WHERE idp_id = ?1", params![id])?;
        self.execute("DELETE FROM idps WHERE id = ?1", params![id])
    }

    fn login_attempt_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        self.exists("SELECT 1 FROM login_attempts WHERE id = ?1", &id)
    }

    fn insert_login_attempt(&mut self, a: &LoginAttempt) -> Result<(), StoreError> {
        self.execute(
            concat!(
                "INSERT INTO login_attempts (",
                login_attempt_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                a.id,
                a.idp_id,
                a.browser_hash,
                a.nonce,
                a.sealed_pkce_verifier,
                a.saml_request_id,
                a.return_to,
                a.created_at.unix(),
                a.expires_at.unix(),
            ],
        )
    }

    fn delete_login_attempt(&mut self, id: &str) -> Result<(), StoreError> {
        self.execute("DELETE FROM login_attempts WHERE id = ?1", params![id])
    }

    fn session_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        self.exists("SELECT 1 FROM sessions WHERE id = ?1", &id)
    }

    fn put_session(&mut self, s: &SessionRecord) -> Result<(), StoreError> {
        self.execute(
            concat!(
                "INSERT INTO sessions (",
                session_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
                 ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, \
                 app_id = excluded.app_id, idp_id = excluded.idp_id, \
                 secret_hash = excluded.secret_hash, created_at = excluded.created_at, \
                 expires_at = excluded.expires_at, last_used_at = excluded.last_used_at, \
                 ip = excluded.ip, user_agent = excluded.user_agent, \
                 revoked_at = excluded.revoked_at, revoke_reason = excluded.revoke_reason, \
                 sealed_upstream_refresh = excluded.sealed_upstream_refresh, \
                 revalidated_at = excluded.revalidated_at"
            ),
            params![
                s.id,
                s.user_id,
                s.app_id,
                s.idp_id,
                s.secret_hash,
                s.created_at.unix(),
                s.expires_at.unix(),
                s.last_used_at.unix(),
                s.ip,
                s.user_agent,
                s.revoked_at.map(|t| t.unix()),
                s.revoke_reason,
                s.sealed_upstream_refresh,
                s.revalidated_at.map(|t| t.unix()),
            ],
        )
    }

    fn touch_session(&mut self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        self.execute(
            "UPDATE sessions SET last_used_at = ?2 \
             WHERE id = ?1 AND revoked_at IS NULL AND last_used_at < ?2",
            params![id, at.unix()],
        )
    }

    fn revoke_sessions(
        &mut self,
        selector: &SessionSelector,
        at: Timestamp,
        reason: &str,
    ) -> Result<(), StoreError> {
        let (sql, key) = match selector {
            SessionSelector::Id(id) => (
                "UPDATE sessions SET revoked_at = ?2, revoke_reason = ?3 \
                 WHERE id = ?1 AND revoked_at IS NULL",
                id,
            ),
            SessionSelector::User(id) => (
                "UPDATE sessions SET revoked_at = ?2, revoke_reason = ?3 \
                 WHERE user_id = ?1 AND revoked_at IS NULL",
                id,
            ),
            SessionSelector::Idp(id) => (
                "UPDATE sessions SET revoked_at = ?2, revoke_reason = ?3 \
                 WHERE idp_id = ?1 AND revoked_at IS NULL",
                id,
            ),
        };
        self.execute(sql, params![key, at.unix(), reason])
    }

    fn replay_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        self.exists("SELECT 1 FROM sso_replay WHERE id = ?1", &id)
    }

    fn insert_replay(&mut self, id: &str, expires_at: Timestamp) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO sso_replay (id, expires_at) VALUES (?1, ?2)",
            params![id, expires_at.unix()],
        )
    }

    fn purge_usage(&mut self, before: Timestamp) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM usage_buckets WHERE bucket_start < ?1",
            params![before.unix()],
        )
    }
    fn person_key_exists(&mut self, subject: &str) -> Result<bool, StoreError> {
        self.exists("SELECT 1 FROM person_keys WHERE subject = ?1", &subject)
    }

    fn put_person_key(&mut self, k: &kms_core::store::PersonKeyRecord) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO person_keys (subject, stored_key, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (subject) DO UPDATE SET stored_key = excluded.stored_key",
            params![k.subject, k.stored_key, k.created_at.unix()],
        )
    }

    fn delete_person_key(&mut self, subject: &str) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM person_keys WHERE subject = ?1",
            params![subject],
        )
    }

    fn delete_session(&mut self, id: &str) -> Result<(), StoreError> {
        self.execute("DELETE FROM sessions WHERE id = ?1", params![id])
    }
}
