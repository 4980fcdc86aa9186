//! How PostgreSQL failures surface as [`StoreError`]s. A lost or refused connection, a
//! timeout or an overloaded server is `Unavailable` (worth a retry); a unique or check
//! violation is `Conflict`; anything else the server says, and a value that does not
//! decode, is `Corrupt`.
//!
//! Messages carry the SQLSTATE and the server's one-line message only, never its `DETAIL`
//! (which can quote a whole row, hashes included), and the connection URL never appears.

use ::postgres::error::SqlState;
use kms_core::store::StoreError;

/// Converts an error of a statement or a connection. Use as `.map_err(db_error)`.
pub(crate) fn db_error(e: ::postgres::Error) -> StoreError {
    let Some(db) = e.as_db_error() else {
        // No SQLSTATE: the connection failed, closed or timed out.
        return StoreError::unavailable(format!("postgresql: {e}"), e);
    };
    let code = db.code();
    let message = format!("postgresql: {} ({})", db.message(), code.code());
    if *code == SqlState::UNIQUE_VIOLATION
        || *code == SqlState::CHECK_VIOLATION
        || *code == SqlState::FOREIGN_KEY_VIOLATION
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
    {
        // Preconditions are checked before every write, so a constraint can only fail
        // when another writer changed the same rows in between.
        return StoreError::Conflict(
            "the change conflicts with data written at the same time; retry it".to_owned(),
        );
    }
    if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE {
        // Rust strings are UTF-8, so the one character PostgreSQL's text refuses is U+0000.
        return StoreError::Conflict(
            "a text value contains the character U+0000, which PostgreSQL cannot store; \
             nothing was changed"
                .to_owned(),
        );
    }
    if is_transient(code) {
        return StoreError::Unavailable {
            message,
            source: None,
        };
    }
    StoreError::Corrupt(message)
}

/// Conditions that pass: connection trouble (class 08), an overloaded or restarting server
/// (classes 53 and 57, which includes `statement_timeout`'s `query_canceled`), a lock not
/// granted in time.
fn is_transient(code: &SqlState) -> bool {
    let class = &code.code()[..2.min(code.code().len())];
    matches!(class, "08" | "53" | "57") || *code == SqlState::LOCK_NOT_AVAILABLE
}

/// A pool that could not hand out a connection in time.
pub(crate) fn pool_error(e: r2d2::Error) -> StoreError {
    StoreError::unavailable(format!("postgresql: no connection: {e}"), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_timeout_classes_are_transient() {
        for code in [
            SqlState::CONNECTION_FAILURE,
            SqlState::QUERY_CANCELED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::LOCK_NOT_AVAILABLE,
        ] {
            assert!(is_transient(&code), "{}", code.code());
        }
        for code in [SqlState::SYNTAX_ERROR, SqlState::UNDEFINED_TABLE] {
            assert!(!is_transient(&code), "{}", code.code());
        }
    }
}
