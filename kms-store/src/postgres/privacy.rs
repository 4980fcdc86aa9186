//! Personal data in PostgreSQL: person keys, the audit events about a person, sessions for
//! export and retention, and vacuuming the tables an erasure deleted rows from.

use ::postgres::Client;
use kms_core::store::{PersonKeyRecord, PrivacyStore, SessionRecord, StoreError, MAX_COUNTER};
use kms_core::{AuditEvent, Timestamp};

use super::error::db_error;
use super::PostgresStore;
use crate::columns::{
    self, audit_columns, person_key_columns, session_columns, sql_int, sql_limit, ColumnRead,
};

impl PrivacyStore for PostgresStore {
    fn get_person_key(&self, subject: &str) -> Result<Option<PersonKeyRecord>, StoreError> {
        self.query_one(
            concat!(
                "SELECT ",
                person_key_columns!(),
                " FROM person_keys WHERE subject = $1"
            ),
            &[&subject],
            columns::person_key,
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
                " FROM person_keys WHERE $1::TEXT IS NULL OR subject > $1 \
                 ORDER BY subject LIMIT $2"
            ),
            &[&after, &sql_limit(limit)],
            columns::person_key,
        )
    }

    fn audit_concerning(
        &self,
        ids: &[String],
        before_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let before = before_seq.filter(|&s| s <= MAX_COUNTER).map(sql_int);
        self.query(
            concat!(
                "SELECT ",
                audit_columns!(),
                " FROM audit_events WHERE ($1::BIGINT IS NULL OR seq < $1) AND \
                 (subject = ANY($2) OR actor = ANY($2) OR target = ANY($2)) \
                 ORDER BY seq DESC LIMIT $3"
            ),
            &[&before, &ids, &sql_limit(limit)],
            columns::audit,
        )
    }

    fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.query(
            concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions WHERE user_id = $1 ORDER BY created_at DESC, id"
            ),
            &[&user_id],
            columns::session,
        )
    }

    fn ended_sessions(
        &self,
        ended_before: Timestamp,
        used_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.query(
            "SELECT id FROM sessions WHERE revoked_at < $1 OR expires_at < $1 \
             OR last_used_at < $2 ORDER BY id LIMIT $3",
            &[&ended_before.unix(), &used_before.unix(), &sql_limit(limit)],
            |row| row.text(0),
        )
    }
}

/// After an erasure: PostgreSQL keeps deleted rows as dead tuples until a vacuum, so the
/// tables an erasure deletes from are vacuumed at once (outside the transaction, as
/// VACUUM must be). What a vacuum frees may still hold the bytes until reused, and the
/// write-ahead log and its archives keep them for their retention (see the runbook).
pub(crate) fn scrub(conn: &mut Client) -> Result<(), StoreError> {
    conn.batch_execute("VACUUM users, user_identities, sessions, person_keys, tokens, token_grants")
        .map_err(db_error)
}
