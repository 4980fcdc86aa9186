//! Copies of a SQLite database file, for `kms backup`, `kms restore` and `kms db check`.
//!
//! [`stage`] takes a consistent copy of a database — live or not — with SQLite's online
//! backup API into a temporary file beside its destination; [`inspect`] checks a file is a
//! sound kms database (integrity, schema version, audit events); [`StagedCopy::install`]
//! puts a staged copy in place with a rename, so the destination holds either its old
//! contents or the whole copy, never part of it.
//!
//! The copy reads one snapshot: the source's read transaction stays open from the first
//! page to the last, so in WAL mode writers go on (they are neither blocked nor do they
//! restart the copy) and the copy holds exactly the transactions committed before it began.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kms_core::store::StoreError;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::migrations::{self, MigrationStatus};
use crate::sqlite::error::db_error;

/// Pages copied per step of the backup (4 MiB at the default page size): progress is
/// reported between steps.
const PAGES_PER_STEP: i32 = 1024;

/// How long a step may keep finding the destination or source busy before the copy fails.
const BUSY_LIMIT: Duration = Duration::from_secs(10);

/// How far a copy has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Pages copied so far.
    pub copied: u64,
    /// Pages in the snapshot being copied.
    pub total: u64,
}

/// What a finished copy holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyStats {
    /// Size of the copy in bytes.
    pub bytes: u64,
    /// Database pages copied.
    pub pages: u64,
    /// Audit events in the copy.
    pub audit_events: u64,
    /// The copy's schema version (its newest applied migration).
    pub schema_version: u32,
}

/// What [`inspect`] found in a database file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inspection {
    /// The problems `PRAGMA integrity_check` reported (at most 20); empty when it said `ok`.
    pub integrity_problems: Vec<String>,
    /// Every known migration, and any unknown applied one, with whether it is applied.
    pub migrations: Vec<MigrationStatus>,
    /// The newest applied migration.
    pub schema_version: u32,
    /// The newest migration this build knows.
    pub latest_version: u32,
    /// Audit events in the file.
    pub audit_events: u64,
}

impl Inspection {
    /// Whether SQLite found the file sound.
    pub fn is_intact(&self) -> bool {
        self.integrity_problems.is_empty()
    }

    /// Whether every migration this build knows is applied and none it does not know.
    pub fn is_current(&self) -> bool {
        self.migrations.iter().all(|m| m.applied) && self.schema_version == self.latest_version
    }
}

/// Whether [`StagedCopy::install`] may replace a destination that holds data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Refuse a destination that exists and is not empty.
    Refuse,
    /// Replace it (refused still while another process has it open).
    Replace,
}

/// Why a copy, a check or an installation failed; nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The destination exists and holds data.
    #[error("{} exists and is not empty", .0.display())]
    TargetExists(PathBuf),
    /// Another process has the destination database open.
    #[error("{} is in use by another process (a running kms serve?)", .0.display())]
    TargetInUse(PathBuf),
    /// Source and destination are the same file.
    #[error("{} is the source and the destination at once", .0.display())]
    SameFile(PathBuf),
    /// There is no file at the path.
    #[error("there is no database at {}", .0.display())]
    Missing(PathBuf),
    /// The file is not a SQLite database.
    #[error("{} is not a SQLite database", .0.display())]
    NotSqlite(PathBuf),
    /// The file is a SQLite database, but not one kms made.
    #[error("{} is a SQLite database but not a kms database (it has no kms schema)", .0.display())]
    NotKms(PathBuf),
    /// SQLite found the file damaged.
    #[error("{} is damaged: {}", .path.display(), .problems.join("; "))]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What `PRAGMA integrity_check` (or reading the file) reported.
        problems: Vec<String>,
    },
    /// A file operation failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// SQLite failed otherwise.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

/// A rusqlite error reading `path`, in the words of this module where one fits.
fn read_error(path: &Path, e: rusqlite::Error) -> BackupError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => BackupError::NotSqlite(path.to_path_buf()),
        Some(ErrorCode::DatabaseCorrupt) => BackupError::Damaged {
            path: path.to_path_buf(),
            problems: vec![e.to_string()],
        },
        _ => BackupError::Store(db_error(e)),
    }
}

/// A copy of a database in a temporary file beside its destination; dropped without
/// [`install`](StagedCopy::install), the file is removed.
#[derive(Debug)]
pub struct StagedCopy {
    temp: PathBuf,
    target: PathBuf,
    stats: CopyStats,
    installed: bool,
}

impl StagedCopy {
    /// The temporary file, to check or open before installing it.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// What the copy holds.
    pub fn stats(&self) -> &CopyStats {
        &self.stats
    }

    /// Moves the copy to its destination in one rename, and syncs the directory so the
    /// rename survives a power cut. With [`Overwrite::Refuse`] a destination that holds
    /// data (or a `-wal` file beside it) is refused; with [`Overwrite::Replace`] it is
    /// replaced, unless another process has it open. Stale `-wal` and `-shm` files of a
    /// replaced database are removed first: SQLite would replay them into the copy.
    pub fn install(mut self, overwrite: Overwrite) -> Result<PathBuf, BackupError> {
        let target = self.target.clone();
        let companions = [sidecar(&target, "-wal"), sidecar(&target, "-shm")];
        let has_file = file_len(&target)? > 0;
        if overwrite == Overwrite::Refuse && (has_file || file_len(&companions[0])? > 0) {
            return Err(BackupError::TargetExists(target));
        }
        if has_file {
            release_database(&target)?;
        }
        for companion in &companions {
            remove_if_present(companion)?;
        }
        std::fs::rename(&self.temp, &target).map_err(io_error(format!(
            "move {} to {}",
            self.temp.display(),
            target.display()
        )))?;
        self.installed = true;
        sync_parent(&target)?;
        Ok(target)
    }
}

impl Drop for StagedCopy {
    fn drop(&mut self) {
        if !self.installed {
            for suffix in ["", "-journal", "-wal", "-shm"] {
                let _ = std::fs::remove_file(sidecar(&self.temp, suffix));
            }
        }
    }
}

/// Copies the kms database at `source` into a new temporary file beside `target`, calling
/// `progress` after every step. The copy is synced to disk and checked with
/// `PRAGMA integrity_check` before this returns. Fails, creating nothing, when `source`
/// is missing, not a kms database or damaged, or is `target` itself.
pub fn stage(
    source: &Path,
    target: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<StagedCopy, BackupError> {
    if file_len(source)? == 0 {
        return Err(BackupError::Missing(source.to_path_buf()));
    }
    if same_file(source, target)? {
        return Err(BackupError::SameFile(target.to_path_buf()));
    }
    let src = open_read_only(source)?;
    // One read transaction for the whole copy: the copy, its audit count and its schema
    // version are one snapshot.
    src.execute_batch("BEGIN")
        .map_err(|e| read_error(source, e))?;
    let (schema_version, audit_events) = read_kms_facts(&src, source)?;

    let temp = temp_path(target)?;
    let mut staged = StagedCopy {
        temp,
        target: target.to_path_buf(),
        stats: CopyStats {
            bytes: 0,
            pages: 0,
            audit_events,
            schema_version,
        },
        installed: false,
    };
    create_private(staged.path())?;
    let mut dst = Connection::open(staged.path()).map_err(db_error)?;
    let pages = copy_pages(&src, &mut dst, source, progress)?;
    src.execute_batch("COMMIT")
        .map_err(|e| read_error(source, e))?;
    drop(src);
    // The copied header says WAL; a copy at rest is one self-contained file, so it goes
    // back to a rollback journal (kms switches it to WAL again when it opens it).
    dst.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))
        .map_err(|e| read_error(staged.path(), e))?;
    let problems = integrity_problems(&dst, staged.path())?;
    if !problems.is_empty() {
        return Err(BackupError::Damaged {
            path: source.to_path_buf(),
            problems,
        });
    }
    dst.close().map_err(|(_, e)| db_error(e))?;

    let file = File::open(staged.path()).map_err(io_error(format!(
        "open the copy {}",
        staged.path().display()
    )))?;
    file.sync_all().map_err(io_error(format!(
        "sync the copy {}",
        staged.path().display()
    )))?;
    staged.stats.bytes = file
        .metadata()
        .map_err(io_error(format!(
            "read the size of {}",
            staged.path().display()
        )))?
        .len();
    staged.stats.pages = pages;
    Ok(staged)
}

/// Checks the kms database at `path` without changing it: `PRAGMA integrity_check`, the
/// applied migrations and the number of audit events. A damaged file is reported in the
/// inspection; a file that is not a kms database at all is an error.
pub fn inspect(path: &Path) -> Result<Inspection, BackupError> {
    if file_len(path)? == 0 {
        return Err(BackupError::Missing(path.to_path_buf()));
    }
    let conn = open_read_only(path)?;
    conn.execute_batch("BEGIN")
        .map_err(|e| read_error(path, e))?;
    let integrity_problems = integrity_problems(&conn, path)?;
    let (schema_version, audit_events) = match read_kms_facts(&conn, path) {
        Ok(facts) => facts,
        // Too damaged to read the schema: report what integrity_check found.
        Err(BackupError::Damaged { problems, .. }) if !integrity_problems.is_empty() => {
            return Err(BackupError::Damaged {
                path: path.to_path_buf(),
                problems: integrity_problems.into_iter().chain(problems).collect(),
            })
        }
        Err(e) => return Err(e),
    };
    let migrations = migrations::read_status(&conn).map_err(|e| damaged(path, e))?;
    conn.execute_batch("COMMIT")
        .map_err(|e| read_error(path, e))?;
    Ok(Inspection {
        integrity_problems,
        migrations,
        schema_version,
        latest_version: migrations::latest_version(),
        audit_events,
    })
}

/// Opens an existing file for reading only; never creates one.
fn open_read_only(path: &Path) -> Result<Connection, BackupError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| read_error(path, e))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(db_error)?;
    Ok(conn)
}

/// The schema version and the audit event count of a kms database, inside the caller's
/// transaction; [`BackupError::NotKms`] for any other SQLite database.
fn read_kms_facts(conn: &Connection, path: &Path) -> Result<(u32, u64), BackupError> {
    let has_table = |name: &str| -> Result<bool, BackupError> {
        conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |row| row.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .map_err(|e| read_error(path, e))
    };
    if !has_table("schema_migrations")? {
        return Err(BackupError::NotKms(path.to_path_buf()));
    }
    let version = migrations::current_version(conn).map_err(|e| damaged(path, e))?;
    let audit_events = if has_table("audit_events")? {
        conn.query_row("SELECT count(*) FROM audit_events", [], |row| {
            row.get::<_, i64>(0)
        })
        .map_err(|e| read_error(path, e))?
    } else {
        0
    };
    Ok((version, u64::try_from(audit_events).unwrap_or(0)))
}

/// What `PRAGMA integrity_check` reports, `ok` left out.
fn integrity_problems(conn: &Connection, path: &Path) -> Result<Vec<String>, BackupError> {
    let mut stmt = conn
        .prepare("PRAGMA integrity_check(20)")
        .map_err(|e| read_error(path, e))?;
    let rows = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(|e| read_error(path, e))?;
    let mut problems = Vec::new();
    for row in rows {
        let line = row.map_err(|e| read_error(path, e))?;
        if line != "ok" {
            problems.push(line);
        }
    }
    Ok(problems)
}

/// Runs the online backup from `src` into `dst`, reporting progress; returns the pages
/// copied. Busy or locked steps are retried for up to [`BUSY_LIMIT`].
fn copy_pages(
    src: &Connection,
    dst: &mut Connection,
    source: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<u64, BackupError> {
    let backup = Backup::new(src, dst).map_err(|e| read_error(source, e))?;
    let mut busy_since: Option<Instant> = None;
    loop {
        let step = backup
            .step(PAGES_PER_STEP)
            .map_err(|e| read_error(source, e))?;
        let p = backup.progress();
        let total = u64::try_from(p.pagecount).unwrap_or(0);
        let remaining = u64::try_from(p.remaining).unwrap_or(0);
        match step {
            StepResult::Done => {
                progress(Progress {
                    copied: total,
                    total,
                });
                return Ok(total);
            }
            StepResult::More => {
                busy_since = None;
                progress(Progress {
                    copied: total.saturating_sub(remaining),
                    total,
                });
            }
            // StepResult is non-exhaustive: anything else is a busy step.
            _ => {
                let since = *busy_since.get_or_insert_with(Instant::now);
                if since.elapsed() > BUSY_LIMIT {
                    return Err(BackupError::Store(StoreError::Unavailable {
                        message: format!(
                            "sqlite: the copy of {} stayed busy for {} s",
                            source.display(),
                            BUSY_LIMIT.as_secs()
                        ),
                        source: None,
                    }));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Whether another connection (a running `kms serve`, say) has the SQLite database at
/// `path` open: an operation that must run alone (a master-key rotation) asks first. As a
/// side effect the WAL is checkpointed and the file left in rollback-journal mode, which
/// the next [`SqliteStore::open`](crate::SqliteStore::open) turns back to WAL.
pub fn in_use_elsewhere(path: &Path) -> Result<bool, BackupError> {
    match release_database(path) {
        Ok(()) => Ok(false),
        Err(BackupError::TargetInUse(_)) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Makes way for a new file at `target`, a database that holds data: refused while any
/// other connection has it open (SQLite then cannot leave WAL mode); otherwise its WAL is
/// checkpointed and removed, so nothing of it can be replayed into the new file.
fn release_database(target: &Path) -> Result<(), BackupError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match Connection::open_with_flags(target, flags) {
        Ok(conn) => conn,
        Err(e) => return not_a_database_is_fine(target, e),
    };
    match conn.query_row("PRAGMA journal_mode = DELETE", [], |row| {
        row.get::<_, String>(0)
    }) {
        Ok(mode) if mode.eq_ignore_ascii_case("delete") => Ok(()),
        Ok(_) => Err(BackupError::TargetInUse(target.to_path_buf())),
        Err(e) => match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                Err(BackupError::TargetInUse(target.to_path_buf()))
            }
            _ => not_a_database_is_fine(target, e),
        },
    }
}

/// A store error reading `path`: undecodable data means a damaged file.
fn damaged(path: &Path, e: StoreError) -> BackupError {
    match e {
        StoreError::Corrupt(problem) => BackupError::Damaged {
            path: path.to_path_buf(),
            problems: vec![problem],
        },
        other => BackupError::Store(other),
    }
}

/// A destination that is not a database (or too damaged to open) is simply replaced.
fn not_a_database_is_fine(target: &Path, e: rusqlite::Error) -> Result<(), BackupError> {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => Ok(()),
        _ => Err(BackupError::Store(StoreError::unavailable(
            format!("sqlite: cannot open {}", target.display()),
            e,
        ))),
    }
}

/// `path` with `suffix` appended (`kms.db` → `kms.db-wal`).
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// A new temporary name in the directory of `target`.
fn temp_path(target: &Path) -> Result<PathBuf, BackupError> {
    let name = target.file_name().ok_or_else(|| BackupError::Io {
        what: format!("write to {}", target.display()),
        source: io::Error::new(io::ErrorKind::InvalidInput, "it names no file"),
    })?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(format!(".{}-{nanos}.partial", std::process::id()));
    Ok(target.with_file_name(temp))
}

/// Creates a new file readable and writable by its owner only: a copy holds the same
/// hashes and sealed keys as the database.
fn create_private(path: &Path) -> Result<(), BackupError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .map(drop)
        .map_err(io_error(format!("create {}", path.display())))
}

/// The length of the file at `path`, 0 when there is none.
fn file_len(path: &Path) -> Result<u64, BackupError> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_error(format!("read {}", path.display()))(e)),
    }
}

fn remove_if_present(path: &Path) -> Result<(), BackupError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(format!("remove {}", path.display()))(e)),
    }
}

/// Whether `a` and `b` name one existing file.
fn same_file(a: &Path, b: &Path) -> Result<bool, BackupError> {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => Ok(a == b),
        _ => Ok(false),
    }
}

/// Syncs the directory holding `path`, so a rename into it is durable.
fn sync_parent(path: &Path) -> Result<(), BackupError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(format!("sync the directory {}", dir.display())))?;
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use super::*;
    use crate::SqliteStore;

    fn kms_db(dir: &Path) -> PathBuf {
        let path = dir.join("kms.db");
        drop(SqliteStore::open(&path).unwrap());
        path
    }

    fn no_progress() -> impl FnMut(Progress) {
        |_| {}
    }

    #[test]
    fn a_staged_copy_installs_into_a_new_path_and_inspects_clean() {
        let dir = tempfile::tempdir().unwrap();
        let db = kms_db(dir.path());
        let target = dir.path().join("copy.db");
        let mut seen = Vec::new();
        let staged = stage(&db, &target, &mut |p| seen.push(p)).unwrap();
        assert!(staged.stats().pages > 0);
        assert_eq!(staged.stats().schema_version, migrations::latest_version());
        assert_eq!(seen.last().map(|p| p.copied), Some(staged.stats().pages));
        staged.install(Overwrite::Refuse).unwrap();
        let found = inspect(&target).unwrap();
        assert!(found.is_intact() && found.is_current(), "{found:?}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn an_existing_target_is_refused_without_replace_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let db = kms_db(dir.path());
        let target = dir.path().join("copy.db");
        std::fs::write(&target, b"keep me").unwrap();
        let staged = stage(&db, &target, &mut no_progress()).unwrap();
        let temp = staged.path().to_path_buf();
        let err = staged.install(Overwrite::Refuse).unwrap_err();
        assert!(matches!(err, BackupError::TargetExists(_)), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        assert!(!temp.exists(), "the refused copy is removed");
    }

    #[test]
    fn replace_refuses_a_database_another_connection_has_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = kms_db(dir.path());
        let target = dir.path().join("live.db");
        let live = SqliteStore::open(&target).unwrap();
        let staged = stage(&db, &target, &mut no_progress()).unwrap();
        let err = staged.install(Overwrite::Replace).unwrap_err();
        assert!(matches!(err, BackupError::TargetInUse(_)), "{err}");
        drop(live);
        let staged = stage(&db, &target, &mut no_progress()).unwrap();
        staged.install(Overwrite::Replace).unwrap();
        assert!(inspect(&target).unwrap().is_intact());
    }

    #[test]
    fn files_that_are_not_kms_databases_are_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("copy.db");
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, vec![b'x'; 8192]).unwrap();
        let err = stage(&text, &target, &mut no_progress()).unwrap_err();
        assert!(matches!(err, BackupError::NotSqlite(_)), "{err}");
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let err = stage(&other, &target, &mut no_progress()).unwrap_err();
        assert!(matches!(err, BackupError::NotKms(_)), "{err}");
        let err = inspect(&dir.path().join("missing.db")).unwrap_err();
        assert!(matches!(err, BackupError::Missing(_)), "{err}");
        assert!(!target.exists());
    }

    #[test]
    fn a_file_is_never_copied_onto_itself() {
        let dir = tempfile::tempdir().unwrap();
        let db = kms_db(dir.path());
        let err = stage(&db, &db, &mut no_progress()).unwrap_err();
        assert!(matches!(err, BackupError::SameFile(_)), "{err}");
    }
}
