//! [`PostgresCounters`]: rate limits, lockout counters and request-signing nonces shared
//! through the PostgreSQL database itself, for deployments without Redis.
//!
//! One `UNLOGGED` table (`kms_counters`: not written to the WAL, so cheap, and emptied by
//! a crash, which for these counters only forgives some requests) of keys, a value and an
//! expiry in microseconds of the database server's clock. Each decision is one
//! conditional upsert, which PostgreSQL runs under the row's lock, so the nodes share each
//! limit exactly. The table is not part of the schema migrations: it holds no record of
//! anything, and is created when first needed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::postgres::{Config, NoTls};
use kms_core::counters::{CounterError, FailureCount, SharedCounters};
use kms_core::{LockoutPolicy, RateLimit};
use r2d2::Pool;
use r2d2_postgres::PostgresConnectionManager;

use super::redacted_url;

/// The database server's clock, in microseconds since the epoch.
macro_rules! now_us {
    () => {
        "(extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT"
    };
}

/// A transaction advisory lock taken while creating the table ("kms_cntr").
const CREATE_LOCK: i64 = 0x6b6d_735f_636e_7472;

/// Every this many decisions, expired rows are swept (a bounded number at a time).
const SWEEP_EVERY: u64 = 512;

/// Counters in a PostgreSQL table, shared by every node on the same database.
pub struct PostgresCounters {
    pool: Pool<PostgresConnectionManager<NoTls>>,
    calls: AtomicU64,
}

impl std::fmt::Debug for PostgresCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCounters")
            .field("connections", &self.pool.state().connections)
            .finish_non_exhaustive()
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> CounterError {
    CounterError(format!("postgresql {what}: {e}"))
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn secs_to_micros(secs: i64) -> i64 {
    secs.max(1).saturating_mul(1_000_000)
}

/// Whole seconds, at least 1, of a wait in microseconds.
fn wait_secs(us: i64) -> u64 {
    u64::try_from(us).unwrap_or(0).div_ceil(1_000_000).max(1)
}

impl PostgresCounters {
    /// A pool of at most `pool_size` connections to `url`, each statement limited to
    /// `timeout` (so a slow database costs a decision at most that before the breaker
    /// opens), and the table created if missing. Connections are made lazily: a database
    /// that is down now is not an error here.
    pub fn open(url: &str, pool_size: u32, timeout: Duration) -> Result<Self, CounterError> {
        let mut config: Config = url.parse().map_err(|_| {
            CounterError(format!(
                "the PostgreSQL URL {} is not valid",
                redacted_url(url)
            ))
        })?;
        let ms = timeout.as_millis().max(1);
        config
            .connect_timeout(timeout)
            .application_name("kms-counters")
            .options(&format!("-c statement_timeout={ms}"));
        let pool = Pool::builder()
            .max_size(pool_size.max(1))
            .min_idle(Some(0))
            .connection_timeout(timeout)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(PostgresConnectionManager::new(config, NoTls));
        let counters = PostgresCounters {
            pool,
            calls: AtomicU64::new(0),
        };
        // Best effort: if the database is down, the first decision creates the table.
        let _ = counters.ensure_table();
        Ok(counters)
    }

    fn ensure_table(&self) -> Result<(), CounterError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| failed("setup", e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CREATE_LOCK])
            .map_err(|e| failed("setup", e))?;
        tx.batch_execute(
            r#"CREATE UNLOGGED TABLE IF NOT EXISTS kms_counters (
                   key        TEXT COLLATE "C" PRIMARY KEY,
                   value      BIGINT NOT NULL,
                   expires_us BIGINT NOT NULL
               )"#,
        )
        .map_err(|e| failed("setup", e))?;
        tx.commit().map_err(|e| failed("setup", e))
    }

    fn conn(
        &self,
    ) -> Result<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>, CounterError> {
        self.pool.get().map_err(|e| failed("connection", e))
    }

    /// Runs `op`; when the table is missing (a fresh database, or one that was down at
    /// open), creates it and runs `op` once more. Now and then sweeps expired rows.
    fn run<T>(
        &self,
        what: &str,
        op: impl Fn(&mut ::postgres::Client) -> Result<T, ::postgres::Error>,
    ) -> Result<T, CounterError> {
        let mut conn = self.conn()?;
        if self.calls.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let _ = conn.execute(
                concat!(
                    "DELETE FROM kms_counters WHERE key IN (SELECT key FROM kms_counters \
                     WHERE expires_us < ",
                    now_us!(),
                    " LIMIT 1000)"
                ),
                &[],
            );
        }
        match op(&mut conn) {
            Err(e) if e.code() == Some(&::postgres::error::SqlState::UNDEFINED_TABLE) => {
                drop(conn);
                self.ensure_table()?;
                op(&mut *self.conn()?).map_err(|e| failed(what, e))
            }
            other => other.map_err(|e| failed(what, e)),
        }
    }
}

impl SharedCounters for PostgresCounters {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn take(&self, key: &str, limit: RateLimit) -> Result<Result<(), u64>, CounterError> {
        if limit.limit == 0 {
            return Ok(Err(1));
        }
        // GCRA: the value is the theoretical arrival time; a request conforms when it
        // comes no earlier than that minus the burst tolerance.
        let interval = i64::from(limit.per_seconds) * 1_000_000 / i64::from(limit.limit);
        let tolerance = interval * i64::from(limit.limit - 1);
        self.run("rate limit", |conn| {
            let taken = conn.query_opt(
                concat!(
                    "WITH n AS (SELECT ",
                    now_us!(),
                    " AS now) \
                     INSERT INTO kms_counters AS c (key, value, expires_us) \
                     SELECT $1, n.now + $2, n.now + $2 FROM n \
                     ON CONFLICT (key) DO UPDATE \
                     SET value = GREATEST(c.value, EXCLUDED.value - $2) + $2, \
                         expires_us = GREATEST(c.value, EXCLUDED.value - $2) + $2 \
                     WHERE GREATEST(c.value, EXCLUDED.value - $2) - $3 <= EXCLUDED.value - $2 \
                     RETURNING 1"
                ),
                &[&key, &interval, &tolerance],
            )?;
            if taken.is_some() {
                return Ok(Ok(()));
            }
            let wait = conn.query_opt(
                concat!(
                    "SELECT value - $2 - ",
                    now_us!(),
                    " FROM kms_counters WHERE key = $1"
                ),
                &[&key, &tolerance],
            )?;
            Ok(Err(wait_secs(wait.map_or(0, |row| row.get::<_, i64>(0)))))
        })
    }

    fn record_failure(
        &self,
        source: &str,
        policy: LockoutPolicy,
    ) -> Result<FailureCount, CounterError> {
        if policy.threshold == 0 {
            return Ok(FailureCount::Uncounted);
        }
        let failures = format!("fail:{source}");
        let lock = format!("lock:{source}");
        let window = secs_to_micros(policy.window_secs);
        let lockout = secs_to_micros(policy.lockout_secs);
        let threshold = i64::from(policy.threshold);
        self.run("failure count", |conn| {
            let mut tx = conn.transaction()?;
            // A window that has run out starts over at 1.
            let row = tx.query_one(
                concat!(
                    "WITH n AS (SELECT ",
                    now_us!(),
                    " AS now) \
                     INSERT INTO kms_counters AS c (key, value, expires_us) \
                     SELECT $1, 1, n.now + $2 FROM n \
                     ON CONFLICT (key) DO UPDATE \
                     SET value = CASE WHEN c.expires_us <= EXCLUDED.expires_us - $2 \
                                      THEN 1 ELSE c.value + 1 END, \
                         expires_us = CASE WHEN c.expires_us <= EXCLUDED.expires_us - $2 \
                                      THEN EXCLUDED.expires_us ELSE c.expires_us END \
                     RETURNING value"
                ),
                &[&failures, &window],
            )?;
            let count: i64 = row.get(0);
            let verdict = if count >= threshold {
                tx.execute("DELETE FROM kms_counters WHERE key = $1", &[&failures])?;
                tx.execute(
                    concat!(
                        "INSERT INTO kms_counters AS c (key, value, expires_us) \
                         VALUES ($1, 1, ",
                        now_us!(),
                        " + $2) ON CONFLICT (key) DO UPDATE \
                         SET value = 1, expires_us = EXCLUDED.expires_us"
                    ),
                    &[&lock, &lockout],
                )?;
                FailureCount::LockedOut
            } else if count == 1 {
                FailureCount::FirstInWindow
            } else {
                FailureCount::Counted
            };
            tx.commit()?;
            Ok(verdict)
        })
    }

    fn locked_for(&self, source: &str) -> Result<Option<u64>, CounterError> {
        let lock = format!("lock:{source}");
        self.run("lockout", |conn| {
            let row = conn.query_opt(
                concat!(
                    "SELECT expires_us - ",
                    now_us!(),
                    " FROM kms_counters WHERE key = $1"
                ),
                &[&lock],
            )?;
            Ok(row
                .map(|r| r.get::<_, i64>(0))
                .filter(|&left| left > 0)
                .map(wait_secs))
        })
    }

    fn claim(&self, key: &str, ttl: Duration) -> Result<bool, CounterError> {
        let ttl = micros(ttl).max(1);
        self.run("nonce", |conn| {
            let claimed = conn.query_opt(
                concat!(
                    "WITH n AS (SELECT ",
                    now_us!(),
                    " AS now) \
                     INSERT INTO kms_counters AS c (key, value, expires_us) \
                     SELECT $1, 1, n.now + $2 FROM n \
                     ON CONFLICT (key) DO UPDATE SET value = 1, expires_us = EXCLUDED.expires_us \
                     WHERE c.expires_us <= EXCLUDED.expires_us - $2 \
                     RETURNING 1"
                ),
                &[&key, &ttl],
            )?;
            Ok(claimed.is_some())
        })
    }

    fn ping(&self) -> Result<(), CounterError> {
        self.run("ping", |conn| conn.execute("SELECT 1", &[]).map(|_| ()))
    }
}
