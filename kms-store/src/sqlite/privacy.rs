//! Personal data in SQLite: person keys, the audit events about a person, sessions for
//! export and retention, and scrubbing what SQLite keeps of erased rows.

use kms_core::store::{PersonKeyRecord, PrivacyStore, SessionRecord, StoreError};
use kms_core::{AuditEvent, Timestamp};
use rusqlite::{params, Connection};

use super::error::db_error;
use super::{rows, SqliteStore};
use crate::columns::{audit_columns, person_key_columns, session_columns, sql_int, sql_limit};
use kms_core::store::MAX_COUNTER;

impl PrivacyStore for SqliteStore {
    fn get_person_key(&self, subject: &str) -> Result<Option<PersonKeyRecord>, StoreError> {
        self.query_one(
            concat!(
                "SELECT ",
                person_key_columns!(),
                " FROM person_keys WHERE subject = ?1"
            ),
            [subject],
            rows::person_key_from_row,
        )
    }

    fn list_person_keys(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PersonKeyRecord>, StoreError> {
        self.query(
            concat!(
                "SELECT ",
                person_key_columns!(),
                " FROM person_keys WHERE ?1 IS NULL OR subject > ?1 ORDER BY subject LIMIT ?2"
            ),
            params![after, sql_limit(limit)],
            rows::person_key_from_row,
        )
    }

    fn audit_concerning(
        &self,
        ids: &[String],
        before_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let ids = serde_json::to_string(ids)
            .map_err(|e| StoreError::Corrupt(format!("ids could not be encoded: {e}")))?;
        self.query(
            concat!(
                "SELECT ",
                audit_columns!(),
                " FROM audit_events WHERE (?1 IS NULL OR seq < ?1) AND \
                 (subject IN (SELECT value FROM json_each(?2)) \
                 OR actor IN (SELECT value FROM json_each(?2)) \
                 OR target IN (SELECT value FROM json_each(?2))) \
                 ORDER BY seq DESC LIMIT ?3"
            ),
            params![
                before_seq.filter(|&s| s <= MAX_COUNTER).map(sql_int),
                ids,
                sql_limit(limit)
            ],
            rows::audit_from_row,
        )
    }

    fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.query(
            concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions WHERE user_id = ?1 ORDER BY created_at DESC, id"
            ),
            [user_id],
            rows::session_from_row,
        )
    }

    fn ended_sessions(
        &self,
        ended_before: Timestamp,
        used_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.query(
            "SELECT id FROM sessions WHERE revoked_at < ?1 OR expires_at < ?1 \
             OR last_used_at < ?2 ORDER BY id LIMIT ?3",
            params![ended_before.unix(), used_before.unix(), sql_limit(limit)],
            |row| row.get(0).map_err(db_error),
        )
    }
}

/// After an erasure: `secure_delete` (on for every connection) has zeroed the deleted
/// rows in the pages written; the write-ahead log still holds older copies of those pages,
/// so it is checkpointed into the file and truncated to nothing. A reader in another
/// process can keep the checkpoint from finishing; the log is then truncated by the next
/// erasure or checkpoint, and the caller reports it.
pub(crate) fn scrub(conn: &Connection) -> Result<(), StoreError> {
    let (busy, _, _): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .map_err(db_error)?;
    if busy != 0 {
        return Err(StoreError::Unavailable {
            message: "the write-ahead log could not be truncated after an erasure (another \
                      connection is reading); it will be at the next checkpoint"
                .to_owned(),
            source: None,
        });
    }
    Ok(())
}
