//! The mapping between domain types and table rows: which columns hold what, and how
//! values are encoded (times as unix seconds, lists and maps as JSON text, the use counter
//! as its own integer column so it can be decremented in place).

use kms_core::token_format::TokenPrefix;
use kms_core::{
    AppStatus, Application, Permission, Role, RoleName, Scope, StoreError, Timestamp, TokenLimits,
    TokenRecord, TokenStatus,
};
use rusqlite::types::FromSql;
use rusqlite::Row;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::{corrupt, db_error};

/// Columns of `apps`, in the order [`app_from_row`] reads them.
macro_rules! app_columns {
    () => {
        "id, name, token_prefix, status, created_at"
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
