//! [`UsageStore`] for PostgreSQL: hourly buckets added in place (`count = count + n`), so
//! every node's flushes sum into the same rows. A flush takes no write lock: each upsert
//! is atomic on its own, and the batch is sorted, so two nodes lock rows in the same order.

use kms_core::store::{StoreError, TokenTouch, UsageCount, UsageRow, UsageStore, UsageSubject};
use kms_core::Timestamp;

use super::error::db_error;
use super::PostgresStore;
use crate::columns::{counter, sql_int};

impl UsageStore for PostgresStore {
    fn add_usage(&self, counts: &[UsageCount], touches: &[TokenTouch]) -> Result<(), StoreError> {
        if counts.is_empty() && touches.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(db_error)?;
        let add = tx
            .prepare(
                "INSERT INTO usage_buckets (app_id, token_id, bucket_start, code, count) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (app_id, bucket_start, token_id, code) \
                 DO UPDATE SET count = usage_buckets.count + excluded.count",
            )
            .map_err(db_error)?;
        for c in counts {
            tx.execute(
                &add,
                &[
                    &c.app_id,
                    &c.token_id,
                    &c.bucket_start.unix(),
                    &c.code,
                    &sql_int(c.count),
                ],
            )
            .map_err(db_error)?;
        }
        let touch = tx
            .prepare(
                "UPDATE tokens SET last_used_at = $2 \
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            )
            .map_err(db_error)?;
        for t in touches {
            tx.execute(&touch, &[&t.token_id, &t.at.unix()])
                .map_err(db_error)?;
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
                "SELECT bucket_start, code, sum(count)::BIGINT FROM usage_buckets \
                 WHERE app_id = $1 AND bucket_start >= $2 AND bucket_start < $3 \
                 GROUP BY bucket_start, code ORDER BY bucket_start, code",
                id,
            ),
            UsageSubject::Token(id) => (
                "SELECT bucket_start, code, sum(count)::BIGINT FROM usage_buckets \
                 WHERE token_id = $1 AND bucket_start >= $2 AND bucket_start < $3 \
                 GROUP BY bucket_start, code ORDER BY bucket_start, code",
                id,
            ),
        };
        let rows = self
            .conn()?
            .query(sql, &[&id, &from.unix(), &to.unix()])
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(UsageRow {
                    bucket_start: Timestamp::from_unix(row.try_get(0).map_err(db_error)?),
                    code: row.try_get(1).map_err(db_error)?,
                    count: counter(row.try_get(2).map_err(db_error)?, "usage count")?,
                })
            })
            .collect()
    }

    fn usage_buckets_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        let row = self
            .conn()?
            .query_one(
                "SELECT count(*) FROM usage_buckets WHERE bucket_start < $1",
                &[&before.unix()],
            )
            .map_err(db_error)?;
        counter(row.try_get(0).map_err(db_error)?, "usage bucket count")
    }
}
