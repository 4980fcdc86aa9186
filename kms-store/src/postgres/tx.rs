//! The primitive reads and writes of one PostgreSQL transaction, for the shared batch logic
//! (`kms_core::store::apply_batch`).

use ::postgres::types::ToSql;
use kms_core::store::{
    RefreshRecord, RefreshStatus, Revocation, SigningKeyRecord, StoreError, TokenRecord,
    Transaction,
};
use kms_core::{Application, AuditEvent, Permission, Role, RoleName, Scope, Timestamp};

use super::error::db_error;
use crate::columns::{
    self, app_columns, audit_columns, counter, refresh_columns, signing_key_columns, sql_int,
    to_json, token_columns, ColumnRead, TokenColumns,
};

/// [`Transaction`] over an open PostgreSQL transaction.
pub(crate) struct PgTx<'t, 'c>(pub(crate) &'t mut ::postgres::Transaction<'c>);

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl PgTx<'_, '_> {
    fn exists(&mut self, sql: &str, params: Params<'_>) -> Result<bool, StoreError> {
        self.0
            .query_opt(sql, params)
            .map(|row| row.is_some())
            .map_err(db_error)
    }

    fn text(&mut self, sql: &str, params: Params<'_>) -> Result<Option<String>, StoreError> {
        match self.0.query_opt(sql, params).map_err(db_error)? {
            Some(row) => row.text(0).map(Some),
            None => Ok(None),
        }
    }

    fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<(), StoreError> {
        self.0.execute(sql, params).map(drop).map_err(db_error)
    }
}

impl Transaction for PgTx<'_, '_> {
    fn meta_exists(&mut self, key: &str) -> Result<bool, StoreError> {
        self.exists("SELECT 1 FROM meta WHERE key = $1", &[&key])
    }

    fn meta(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        self.text("SELECT value FROM meta WHERE key = $1", &[&key])
    }

    fn insert_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2)",
            &[&key, &value],
        )
    }

    fn app_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        self.exists("SELECT 1 FROM apps WHERE id = $1", &[&id])
    }

    fn app_named(&mut self, name: &str) -> Result<Option<String>, StoreError> {
        self.text("SELECT id FROM apps WHERE name = $1", &[&name])
    }

    fn put_app(&mut self, app: &Application) -> Result<(), StoreError> {
        let ip_allow = to_json(&app.security.ip_allow, "application allow-list")?;
        self.execute(
            concat!(
                "INSERT INTO apps (",
                app_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                 token_prefix = excluded.token_prefix, status = excluded.status, \
                 created_at = excluded.created_at, ip_allow = excluded.ip_allow, \
                 require_signed_requests = excluded.require_signed_requests, \
                 signing_secret = excluded.signing_secret"
            ),
            &[
                &app.id,
                &app.name,
                &app.token_prefix.as_str(),
                &app.status.as_str(),
                &app.created_at.unix(),
                &ip_allow,
                &app.security.require_signed_requests,
                &app.security.signing_secret,
            ],
        )
    }

    fn delete_app(&mut self, id: &str) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM token_grants WHERE token_id IN (SELECT id FROM tokens WHERE app_id = $1)",
            &[&id],
        )?;
        self.execute("DELETE FROM tokens WHERE app_id = $1", &[&id])?;
        self.execute("DELETE FROM apps WHERE id = $1", &[&id])
    }

    fn permission_exists(&mut self, scope: &Scope) -> Result<bool, StoreError> {
        self.exists(
            "SELECT 1 FROM permissions WHERE scope = $1",
            &[&scope.as_str()],
        )
    }

    fn put_permission(&mut self, permission: &Permission) -> Result<(), StoreError> {
        let implies = to_json(&permission.implies, "permission implies")?;
        self.execute(
            "INSERT INTO permissions (scope, description, implies) VALUES ($1, $2, $3) \
             ON CONFLICT (scope) DO UPDATE SET description = excluded.description, \
             implies = excluded.implies",
            &[
                &permission.scope.as_str(),
                &permission.description,
                &implies,
            ],
        )
    }

    fn delete_permission(&mut self, scope: &Scope) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM permissions WHERE scope = $1",
            &[&scope.as_str()],
        )
    }

    fn put_role(&mut self, role: &Role) -> Result<(), StoreError> {
        let permissions = to_json(&role.permissions, "role permissions")?;
        let inherits = to_json(&role.inherits, "role inherits")?;
        let grants = to_json(&role.grants, "role grants")?;
        self.execute(
            "INSERT INTO roles (name, description, permissions, inherits, grants) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO UPDATE SET description = excluded.description, \
             permissions = excluded.permissions, inherits = excluded.inherits, \
             grants = excluded.grants",
            &[
                &role.name.as_str(),
                &role.description,
                &permissions,
                &inherits,
                &grants,
            ],
        )
    }

    fn delete_role(&mut self, name: &RoleName) -> Result<(), StoreError> {
        self.execute("DELETE FROM roles WHERE name = $1", &[&name.as_str()])
    }

    fn token_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        self.exists("SELECT 1 FROM tokens WHERE id = $1", &[&id])
    }

    fn put_token(&mut self, token: &TokenRecord) -> Result<(), StoreError> {
        let c = TokenColumns::encode(token)?;
        const PUT: &str = concat!(
            "INSERT INTO tokens (",
            token_columns!(),
            ") \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
             ON CONFLICT (id) DO UPDATE SET app_id = excluded.app_id, name = excluded.name, \
             secret_hash = excluded.secret_hash, start = excluded.start, \
             status = excluded.status, created_at = excluded.created_at, \
             expires_at = excluded.expires_at, revoked_at = excluded.revoked_at, \
             scopes = excluded.scopes, roles = excluded.roles, metadata = excluded.metadata, \
             limits = excluded.limits, uses = excluded.uses, \
             rotated_from = excluded.rotated_from, rotated_to = excluded.rotated_to, \
             grants = excluded.grants"
        );
        self.execute(
            PUT,
            &[
                &token.id,
                &token.app_id,
                &token.name,
                &token.secret_hash,
                &token.start,
                &token.status.as_str(),
                &token.created_at.unix(),
                &token.expires_at.map(|t| t.unix()),
                &token.revoked_at.map(|t| t.unix()),
                &c.scopes,
                &c.roles,
                &c.metadata,
                &c.limits,
                &c.uses,
                &token.rotated_from,
                &token.rotated_to,
                &c.grants,
            ],
        )?;
        self.execute("DELETE FROM token_grants WHERE token_id = $1", &[&token.id])?;
        for (kind, name) in columns::grants(token) {
            self.execute(
                "INSERT INTO token_grants (token_id, kind, name) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &[&token.id, &kind, &name],
            )?;
        }
        Ok(())
    }

    fn delete_token(&mut self, id: &str) -> Result<(), StoreError> {
        self.execute("DELETE FROM token_grants WHERE token_id = $1", &[&id])?;
        self.execute("DELETE FROM tokens WHERE id = $1", &[&id])
    }

    fn put_signing_key(&mut self, key: &SigningKeyRecord) -> Result<(), StoreError> {
        self.execute(
            concat!(
                "INSERT INTO signing_keys (",
                signing_key_columns!(),
                ", position) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
                 (SELECT coalesce(max(position), 0) + 1 FROM signing_keys)) \
                 ON CONFLICT (kid) DO UPDATE SET algorithm = excluded.algorithm, \
                 state = excluded.state, created_at = excluded.created_at, \
                 verify_until = excluded.verify_until, retired_at = excluded.retired_at, \
                 public_key = excluded.public_key, sealed_private = excluded.sealed_private"
            ),
            &[
                &key.kid,
                &key.algorithm.as_str(),
                &key.state.as_str(),
                &key.created_at.unix(),
                &key.verify_until.map(|t| t.unix()),
                &key.retired_at.map(|t| t.unix()),
                &key.public_key,
                &key.sealed_private,
            ],
        )
    }

    fn refresh_status(&mut self, id: &str) -> Result<Option<RefreshStatus>, StoreError> {
        self.text("SELECT status FROM refresh_tokens WHERE id = $1", &[&id])?
            .map(|s| columns::refresh_status(&s))
            .transpose()
    }

    fn insert_refresh_token(&mut self, r: &RefreshRecord) -> Result<(), StoreError> {
        self.execute(
            concat!(
                "INSERT INTO refresh_tokens (",
                refresh_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ),
            &[
                &r.id,
                &r.family_id,
                &r.token_id,
                &r.app_id,
                &r.secret_hash,
                &r.scope,
                &r.audience,
                &r.status.as_str(),
                &r.created_at.unix(),
                &r.expires_at.unix(),
                &r.spent_at.map(|t| t.unix()),
            ],
        )
    }

    fn spend_refresh_token(&mut self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        // The batch holds the write lock, so the status read before this cannot have
        // moved; the condition says the same in the statement itself.
        let spent = self
            .0
            .execute(
                "UPDATE refresh_tokens SET status = $2, spent_at = $3 \
                 WHERE id = $1 AND status = $4",
                &[
                    &id,
                    &RefreshStatus::Spent.as_str(),
                    &at.unix(),
                    &RefreshStatus::Active.as_str(),
                ],
            )
            .map_err(db_error)?;
        if spent == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "the refresh token {id:?} has already been exchanged"
            )))
        }
    }

    fn revoke_refresh_family(&mut self, family_id: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE refresh_tokens SET status = $2 WHERE family_id = $1",
            &[&family_id, &RefreshStatus::Revoked.as_str()],
        )
    }

    fn put_revocation(&mut self, revocation: &Revocation) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO revocations (id, expires_at) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
            &[&revocation.id, &revocation.expires_at.unix()],
        )
    }

    fn purge_expired(&mut self, before: Timestamp) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM revocations WHERE expires_at < $1",
            &[&before.unix()],
        )?;
        self.execute(
            "DELETE FROM refresh_tokens WHERE expires_at < $1",
            &[&before.unix()],
        )
    }

    fn audit_exists(&mut self, seq: u64) -> Result<bool, StoreError> {
        self.exists(
            "SELECT 1 FROM audit_events WHERE seq = $1",
            &[&sql_int(seq)],
        )
    }

    fn audit_head(&mut self) -> Result<Option<(u64, String)>, StoreError> {
        let row = self
            .0
            .query_opt(
                "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .map_err(db_error)?;
        row.map(|row| Ok((counter(row.int(0)?, "audit sequence number")?, row.text(1)?)))
            .transpose()
    }

    fn append_audit(&mut self, e: &AuditEvent) -> Result<(), StoreError> {
        let details = to_json(&e.details, "audit details")?;
        self.execute(
            concat!(
                "INSERT INTO audit_events (",
                audit_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ),
            &[
                &sql_int(e.seq),
                &e.at.unix(),
                &e.actor,
                &e.action,
                &e.target,
                &e.outcome,
                &e.ip,
                &e.request_id,
                &e.app_id,
                &details,
                &e.prev_hash,
                &e.hash,
            ],
        )
    }

    fn prune_audit(&mut self, through_seq: u64) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM audit_events WHERE seq <= $1",
            &[&sql_int(through_seq)],
        )
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )
    }
}
