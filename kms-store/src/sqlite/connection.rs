//! Opening a database file with the settings every kms connection runs with.

use std::path::Path;
use std::time::Duration;

use kms_core::store::StoreError;
use rusqlite::Connection;

use super::error::db_error;

/// How long a statement waits for another connection's lock before giving up as busy.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// Opens (creating if needed) the database at `path`, configured, without migrating.
/// A new file is created readable and writable by its owner only.
pub(crate) fn open_file(path: &Path) -> Result<Connection, StoreError> {
    create_private(path)?;
    let conn = Connection::open(path).map_err(db_error)?;
    configure(&conn, true)?;
    Ok(conn)
}

/// A configured private in-memory database.
pub(crate) fn open_memory() -> Result<Connection, StoreError> {
    let conn = Connection::open_in_memory().map_err(db_error)?;
    configure(&conn, false)?;
    Ok(conn)
}

fn configure(conn: &Connection, wal: bool) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_error)?;
    if wal {
        // Readers never block the writer and a crash never leaves a half-written page.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(db_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable {
                message: format!("sqlite refused write-ahead logging (journal mode {mode})"),
                source: None,
            });
        }
    }
    // FULL syncs the log on every commit: an acknowledged write survives a power cut.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db_error)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(db_error)?;
    // Deleted rows are overwritten with zeros, not left in free space: an erased person's
    // data must not stay readable in the file (see `privacy::scrub` for the log).
    conn.pragma_update(None, "secure_delete", "ON")
        .map_err(db_error)?;
    Ok(())
}

/// Creates the file with mode 0600 if it does not exist yet, so the hashes and metadata in
/// it are never readable by other users, not even for a moment. SQLite gives the `-wal`
/// and `-shm` files the same mode.
#[cfg(unix)]
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|e| {
            StoreError::unavailable(
                format!("could not open the database file {}: {e}", path.display()),
                e,
            )
        })
}

#[cfg(not(unix))]
fn create_private(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// Opens an existing database at `path`, configured, without migrating; a missing file is
/// an error rather than a new empty database.
pub(crate) fn open_existing(path: &Path) -> Result<Connection, StoreError> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::CannotOpen => {
            StoreError::unavailable(format!("there is no database at {}", path.display()), e)
        }
        other => db_error(other),
    })?;
    configure(&conn, true)?;
    Ok(conn)
}
