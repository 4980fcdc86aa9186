//! [`UsageStore`] for SQLite: hourly buckets added in place, one transaction per flush.

use kms_core::store::{StoreError, TokenTouch, UsageCount, UsageRow, UsageStore, UsageSubject};
use kms_core::Timestamp;
use rusqlite::{params, TransactionBehavior};

use super::error::db_error;
use super::SqliteStore;
use crate::columns::{counter, sql_int};

impl UsageStore for SqliteStore {
    fn add_usage(&self, counts: &[UsageCount], touches: &[TokenTouch]) -> Result<(), StoreError> {
        if counts.is_empty() && touches.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_error)?;
        {
            let mut add = tx
                .prepare_cached(
                    "INSERT INTO usage_buckets (app_id, token_id, bucket_start, code, count) \
                     VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (app_id, bucket_start, token_id, code) \
                     DO UPDATE SET count = count + excluded.count",
                )
                .map_err(db_error)?;
            for c in counts {
                add.execute(params![
                    c.app_id,
                    c.token_id,
                    c.bucket_start.unix(),
                    c.code,
                    sql_int(c.count)
                ])
                .map_err(db_error)?;
            }
            let mut touch = tx
                .prepare_cached(
                    "UPDATE tokens SET last_used_at = ?2 \
                     WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
                )
                .map_err(db_error)?;
            for t in touches {
                touch
                    .execute(params![t.token_id, t.at.unix()])
                    .map_err(db_error)?;
            }
        }
        tx.commit().map_err(db_error)
    }

    fn usage(
        &self,
        subject: UsageSubject<'_>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let (sql, id) = match subject {
            UsageSubject::App(id) => (
                "SELECT bucket_start, code, sum(count) FROM usage_buckets \
                 WHERE app_id = ?1 AND bucket_start >= ?2 AND bucket_start < ?3 \
                 GROUP BY bucket_start, code ORDER BY bucket_start, code",
                id,
            ),
            UsageSubject::Token(id) => (
                "SELECT bucket_start, code, sum(count) FROM usage_buckets \
                 WHERE token_id = ?1 AND bucket_start >= ?2 AND bucket_start < ?3 \
                 GROUP BY bucket_start, code ORDER BY bucket_start, code",
                id,
            ),
        };
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql).map_err(db_error)?;
        let mut rows = stmt
            .query(params![id, from.unix(), to.unix()])
            .map_err(db_error)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db_error)? {
            out.push(UsageRow {
                bucket_start: Timestamp::from_unix(row.get(0).map_err(db_error)?),
                code: row.get(1).map_err(db_error)?,
                count: counter(row.get(2).map_err(db_error)?, "usage count")?,
            });
        }
        Ok(out)
    }

    fn usage_buckets_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        let conn = self.conn();
        let n: i64 = conn
            .prepare_cached("SELECT count(*) FROM usage_buckets WHERE bucket_start < ?1")
            .map_err(db_error)?
            .query_row([before.unix()], |row| row.get(0))
            .map_err(db_error)?;
        counter(n, "usage bucket count")
    }
}
