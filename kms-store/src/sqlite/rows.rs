//! Reading SQLite rows: [`ColumnRead`] over a `rusqlite::Row`, and one decoder per table
//! with the signature the store's query helpers take. The decoding itself is shared with
//! the other SQL stores (`crate::columns`).

use kms_core::store::{
    IdpRecord, LoginAttempt, RefreshRecord, Revocation, SessionRecord, SigningKeyRecord,
    StoreError, TokenRecord, UserRecord,
};
use kms_core::{Application, AuditEvent, Permission, Role};
use rusqlite::types::FromSql;
use rusqlite::Row;

use super::error::db_error;
use crate::columns::{self, ColumnRead};

fn col<T: FromSql>(row: &Row<'_>, idx: usize) -> Result<T, StoreError> {
    row.get(idx).map_err(db_error)
}

impl ColumnRead for Row<'_> {
    fn text(&self, idx: usize) -> Result<String, StoreError> {
        col(self, idx)
    }
    fn opt_text(&self, idx: usize) -> Result<Option<String>, StoreError> {
        col(self, idx)
    }
    fn int(&self, idx: usize) -> Result<i64, StoreError> {
        col(self, idx)
    }
    fn opt_int(&self, idx: usize) -> Result<Option<i64>, StoreError> {
        col(self, idx)
    }
    fn bytes(&self, idx: usize) -> Result<Vec<u8>, StoreError> {
        col(self, idx)
    }
    fn opt_bytes(&self, idx: usize) -> Result<Option<Vec<u8>>, StoreError> {
        col(self, idx)
    }
    fn flag(&self, idx: usize) -> Result<bool, StoreError> {
        Ok(col::<i64>(self, idx)? != 0)
    }
}

pub(crate) fn app_from_row(row: &Row<'_>) -> Result<Application, StoreError> {
    columns::app(row)
}

pub(crate) fn token_from_row(row: &Row<'_>) -> Result<TokenRecord, StoreError> {
    columns::token(row)
}

pub(crate) fn permission_from_row(row: &Row<'_>) -> Result<Permission, StoreError> {
    columns::permission(row)
}

pub(crate) fn role_from_row(row: &Row<'_>) -> Result<Role, StoreError> {
    columns::role(row)
}

pub(crate) fn signing_key_from_row(row: &Row<'_>) -> Result<SigningKeyRecord, StoreError> {
    columns::signing_key(row)
}

pub(crate) fn refresh_from_row(row: &Row<'_>) -> Result<RefreshRecord, StoreError> {
    columns::refresh(row)
}

pub(crate) fn audit_from_row(row: &Row<'_>) -> Result<AuditEvent, StoreError> {
    columns::audit(row)
}

pub(crate) fn revocation_from_row(row: &Row<'_>) -> Result<Revocation, StoreError> {
    columns::revocation(row)
}

pub(crate) fn user_from_row(row: &Row<'_>) -> Result<UserRecord, StoreError> {
    columns::user(row)
}

pub(crate) fn idp_from_row(row: &Row<'_>) -> Result<IdpRecord, StoreError> {
    columns::idp(row)
}

pub(crate) fn login_attempt_from_row(row: &Row<'_>) -> Result<LoginAttempt, StoreError> {
    columns::login_attempt(row)
}

pub(crate) fn session_from_row(row: &Row<'_>) -> Result<SessionRecord, StoreError> {
    columns::session(row)
}

pub(crate) fn person_key_from_row(
    row: &Row<'_>,
) -> Result<kms_core::store::PersonKeyRecord, StoreError> {
    columns::person_key(row)
}
