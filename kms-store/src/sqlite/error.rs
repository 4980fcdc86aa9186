//! How SQLite failures surface as [`StoreError`]s: transient conditions (busy, locked, disk
//! full, I/O) are `Unavailable` and worth a retry; anything that means the file or its
//! contents are not what we wrote is `Corrupt`.

use kms_core::store::StoreError;
use rusqlite::ErrorCode;

/// Converts a rusqlite error. Use as `.map_err(db_error)`.
pub(crate) fn db_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::OutOfMemory
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::NoLargeFileSupport
            | ErrorCode::OperationInterrupted => StoreError::unavailable(format!("sqlite: {e}"), e),
            // Preconditions are checked before every write, so a constraint can only
            // fail when another writer changed the same rows in between.
            ErrorCode::ConstraintViolation => StoreError::Conflict(
                "the change conflicts with data written at the same time; retry it".to_owned(),
            ),
            _ => StoreError::Corrupt(format!("sqlite: {e}")),
        },
        _ => StoreError::Corrupt(format!("sqlite: {e}")),
    }
}

pub(crate) use crate::columns::corrupt;

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn busy_locked_full_and_io_errors_are_unavailable() {
        for code in [
            rusqlite::ffi::SQLITE_BUSY,
            rusqlite::ffi::SQLITE_LOCKED,
            rusqlite::ffi::SQLITE_FULL,
            rusqlite::ffi::SQLITE_IOERR,
        ] {
            assert!(
                matches!(db_error(failure(code)), StoreError::Unavailable { .. }),
                "{code}"
            );
        }
    }

    #[test]
    fn malformed_files_are_corrupt() {
        for code in [rusqlite::ffi::SQLITE_CORRUPT, rusqlite::ffi::SQLITE_NOTADB] {
            assert!(
                matches!(db_error(failure(code)), StoreError::Corrupt(_)),
                "{code}"
            );
        }
        let decode = rusqlite::Error::InvalidColumnType(0, "x".into(), rusqlite::types::Type::Null);
        assert!(matches!(db_error(decode), StoreError::Corrupt(_)));
    }
}
