//! The mapping between domain types and table rows: which columns hold what, and how
//! values are encoded (times as unix seconds, lists and maps as JSON text, the use counter
//! as its own integer column so it can be decremented in place).

use kms_core::store::{
    KeyAlgorithm, KeyState, RefreshRecord, RefreshStatus, Revocation, SigningKeyRecord, StoreError,
    TokenRecord,
};
use kms_core::token_format::TokenPrefix;
use kms_core::{
    AppSecurity, AppStatus, Application, AuditEvent, Permission, Role, RoleName, Scope, Timestamp,
    TokenLimits, TokenStatus,
};
use rusqlite::types::FromSql;
use rusqlite::Row;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::{corrupt, db_error};

/// Columns of `apps`, in the order [`app_from_row`] reads them.
macro_rules! app_columns {
    () => {
        "id, name, token_prefix, status, created_at, ip_allow, require_signed_requests, signing_secret"
    };
}
pub(crate) use app_columns;

/// Columns of `tokens`, in the order [`token_from_row`] reads them and writes bind them
/// (`?1` to `?16`). A macro, so statements can be built with `concat!` at compile time.
macro_rules! token_columns {
    () => {
        "id, app_id, name, secret_hash, start, status, created_at, expires_at, revoked_at, \
         scopes, roles, metadata, limits, uses, rotated_from, rotated_to"
    };
}
pub(crate) use token_columns;

fn col<T: FromSql>(row: &Row<'_>, idx: usize) -> Result<T, StoreError> {
    row.get(idx).map_err(db_error)
}

fn json_col<T: DeserializeOwned>(row: &Row<'_>, idx: usize, what: &str) -> Result<T, StoreError> {
    let text: String = col(row, idx)?;
    serde_json::from_str(&text).map_err(|e| corrupt(what, e))
}

fn time_col(row: &Row<'_>, idx: usize) -> Result<Option<Timestamp>, StoreError> {
    Ok(col::<Option<i64>>(row, idx)?.map(Timestamp::from_unix))
}

/// Encodes a list or map as JSON text.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| corrupt(what, e))
}

pub(crate) fn app_from_row(row: &Row<'_>) -> Result<Application, StoreError> {
    let prefix: String = col(row, 2)?;
    let status: String = col(row, 3)?;
    Ok(Application {
        id: col(row, 0)?,
        name: col(row, 1)?,
        token_prefix: TokenPrefix::parse(&prefix)
            .map_err(|e| corrupt("application token prefix", e))?,
        status: AppStatus::parse(&status)
            .ok_or_else(|| corrupt("application status", format!("unknown status {status:?}")))?,
        created_at: Timestamp::from_unix(col(row, 4)?),
        security: AppSecurity {
            ip_allow: json_col(row, 5, "application allow-list")?,
            require_signed_requests: col::<i64>(row, 6)? != 0,
            signing_secret: col(row, 7)?,
        },
    })
}

pub(crate) fn token_from_row(row: &Row<'_>) -> Result<TokenRecord, StoreError> {
    let status: String = col(row, 5)?;
    let mut limits: TokenLimits = json_col(row, 12, "token limits")?;
    limits.uses = col::<Option<i64>>(row, 13)?
        .map(|n| u64::try_from(n).map_err(|_| corrupt("token uses", "negative counter")))
        .transpose()?;
    Ok(TokenRecord {
        id: col(row, 0)?,
        app_id: col(row, 1)?,
        name: col(row, 2)?,
        secret_hash: col(row, 3)?,
        start: col(row, 4)?,
        status: TokenStatus::parse(&status)
            .ok_or_else(|| corrupt("token status", format!("unknown status {status:?}")))?,
        created_at: Timestamp::from_unix(col(row, 6)?),
        expires_at: time_col(row, 7)?,
        revoked_at: time_col(row, 8)?,
        scopes: json_col(row, 9, "token scopes")?,
        roles: json_col(row, 10, "token roles")?,
        metadata: json_col(row, 11, "token metadata")?,
        limits,
        rotated_from: col(row, 14)?,
        rotated_to: col(row, 15)?,
    })
}

pub(crate) fn permission_from_row(row: &Row<'_>) -> Result<Permission, StoreError> {
    let scope: String = col(row, 0)?;
    Ok(Permission {
        scope: Scope::parse(&scope).map_err(|e| corrupt("permission scope", e))?,
        description: col(row, 1)?,
        implies: json_col(row, 2, "permission implies")?,
    })
}

pub(crate) fn role_from_row(row: &Row<'_>) -> Result<Role, StoreError> {
    let name: String = col(row, 0)?;
    Ok(Role {
        name: RoleName::parse(&name).map_err(|e| corrupt("role name", e))?,
        description: col(row, 1)?,
        permissions: json_col(row, 2, "role permissions")?,
        inherits: json_col(row, 3, "role inherits")?,
    })
}

/// Columns of `signing_keys`, in the order [`signing_key_from_row`] reads them and writes
/// bind them.
macro_rules! signing_key_columns {
    () => {
        "kid, algorithm, state, created_at, verify_until, retired_at, public_key, sealed_private"
    };
}
pub(crate) use signing_key_columns;

/// Columns of `refresh_tokens`, in the order [`refresh_from_row`] reads them and writes
/// bind them.
macro_rules! refresh_columns {
    () => {
        "id, family_id, token_id, app_id, secret_hash, scope, audience, status, created_at, \
         expires_at, spent_at"
    };
}
pub(crate) use refresh_columns;

pub(crate) fn signing_key_from_row(row: &Row<'_>) -> Result<SigningKeyRecord, StoreError> {
    let algorithm: String = col(row, 1)?;
    let state: String = col(row, 2)?;
    Ok(SigningKeyRecord {
        kid: col(row, 0)?,
        algorithm: KeyAlgorithm::parse(&algorithm).ok_or_else(|| {
            corrupt(
                "signing key algorithm",
                format!("unknown algorithm {algorithm:?}"),
            )
        })?,
        state: KeyState::parse(&state)
            .ok_or_else(|| corrupt("signing key state", format!("unknown state {state:?}")))?,
        created_at: Timestamp::from_unix(col(row, 3)?),
        verify_until: time_col(row, 4)?,
        retired_at: time_col(row, 5)?,
        public_key: col(row, 6)?,
        sealed_private: col(row, 7)?,
    })
}

pub(crate) fn refresh_from_row(row: &Row<'_>) -> Result<RefreshRecord, StoreError> {
    let status: String = col(row, 7)?;
    Ok(RefreshRecord {
        id: col(row, 0)?,
        family_id: col(row, 1)?,
        token_id: col(row, 2)?,
        app_id: col(row, 3)?,
        secret_hash: col(row, 4)?,
        scope: col(row, 5)?,
        audience: col(row, 6)?,
        status: RefreshStatus::parse(&status)
            .ok_or_else(|| corrupt("refresh token status", format!("unknown status {status:?}")))?,
        created_at: Timestamp::from_unix(col(row, 8)?),
        expires_at: Timestamp::from_unix(col(row, 9)?),
        spent_at: time_col(row, 10)?,
    })
}

/// Columns of `audit_events`, in the order [`audit_from_row`] reads them and writes bind
/// them.
macro_rules! audit_columns {
    () => {
        "seq, at, actor, action, target, outcome, ip, request_id, app_id, details, prev_hash, hash"
    };
}
pub(crate) use audit_columns;

pub(crate) fn audit_from_row(row: &Row<'_>) -> Result<AuditEvent, StoreError> {
    let seq: i64 = col(row, 0)?;
    Ok(AuditEvent {
        seq: u64::try_from(seq).map_err(|_| corrupt("audit sequence number", "negative"))?,
        at: Timestamp::from_unix(col(row, 1)?),
        actor: col(row, 2)?,
        action: col(row, 3)?,
        target: col(row, 4)?,
        outcome: col(row, 5)?,
        ip: col(row, 6)?,
        request_id: col(row, 7)?,
        app_id: col(row, 8)?,
        details: json_col(row, 9, "audit details")?,
        prev_hash: col(row, 10)?,
        hash: col(row, 11)?,
    })
}

pub(crate) fn revocation_from_row(row: &Row<'_>) -> Result<Revocation, StoreError> {
    Ok(Revocation {
        id: col(row, 0)?,
        expires_at: Timestamp::from_unix(col(row, 1)?),
    })
}

/// The encoded columns of a token that are not stored as they are.
pub(crate) struct TokenColumns {
    pub(crate) scopes: String,
    pub(crate) roles: String,
    pub(crate) metadata: String,
    /// Every limit but `uses`, which has its own column.
    pub(crate) limits: String,
    pub(crate) uses: Option<i64>,
}

impl TokenColumns {
    pub(crate) fn encode(token: &TokenRecord) -> Result<Self, StoreError> {
        let limits = TokenLimits {
            uses: None,
            ..token.limits.clone()
        };
        Ok(TokenColumns {
            scopes: to_json(&token.scopes, "token scopes")?,
            roles: to_json(&token.roles, "token roles")?,
            metadata: to_json(&token.metadata, "token metadata")?,
            limits: to_json(&limits, "token limits")?,
            uses: token
                .limits
                .uses
                .map(|n| i64::try_from(n).map_err(|_| corrupt("token uses", "counter too large")))
                .transpose()?,
        })
    }
}
