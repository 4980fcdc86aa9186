//! [`RedisCounters`]: rate limits, lockout counters and request-signing nonces shared by
//! every node through one Redis server.
//!
//! Each operation is one round trip and atomic in Redis: the rate limit is GCRA in one Lua
//! script timed by the Redis server's clock (`TIME`), so nodes whose clocks disagree still
//! share one limit exactly; a failure is counted and, at the threshold, turned into a lock
//! in one script; a nonce is claimed with `SET NX PX`. Connections come from a small
//! `r2d2` pool with short connect, read and write timeouts, so a Redis that stops
//! answering costs a request at most one timeout before the core's circuit breaker falls
//! back to counting in the node (see [`kms_core::counters`]).

use std::time::Duration;

use kms_core::counters::{CounterError, FailureCount, SharedCounters};
use kms_core::LockoutPolicy;
use kms_core::RateLimit;
use r2d2::Pool;

/// Connection settings of [`RedisCounters`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Most connections kept open.
    pub pool_size: u32,
    /// How long connecting, waiting for a free connection, or one command may take.
    pub timeout: Duration,
    /// Prefix of every key (so several deployments can share one Redis).
    pub key_prefix: String,
}

impl Default for RedisOptions {
    /// 8 connections, 250 ms, prefix `kms:`.
    fn default() -> Self {
        RedisOptions {
            pool_size: 8,
            timeout: Duration::from_millis(250),
            key_prefix: "kms:".to_owned(),
        }
    }
}

/// GCRA, in microseconds of the Redis server's clock. KEYS[1]: the limit's state (the
/// theoretical arrival time). ARGV[1]: the emission interval (`per / limit`), ARGV[2]: the
/// burst tolerance (`(limit - 1) * interval`). Returns `{1, 0}` when allowed, else
/// `{0, microseconds until allowed}`.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allowed_at = tat - tolerance
if now < allowed_at then
  return {0, allowed_at - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0}
";

/// One failure. KEYS[1]: the failures in the window, KEYS[2]: the lock. ARGV: threshold,
/// window seconds, lockout seconds. Returns 1 first in window, 2 counted, 3 locked out.
const FAILURE: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if n >= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
  return 3
end
if n == 1 then return 1 end
return 2
";

/// Counters in Redis, shared by every node given the same server and key prefix.
pub struct RedisCounters {
    pool: Pool<Manager>,
    prefix: String,
    gcra: redis::Script,
    failure: redis::Script,
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.pool.state();
        f.debug_struct("RedisCounters")
            .field("connections", &state.connections)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Opens pooled connections with the timeouts set.
#[derive(Debug)]
struct Manager {
    client: redis::Client,
    timeout: Duration,
}

impl r2d2::ManageConnection for Manager {
    type Connection = redis::Connection;
    type Error = redis::RedisError;

    fn connect(&self) -> Result<redis::Connection, redis::RedisError> {
        let conn = self.client.get_connection_with_timeout(self.timeout)?;
        conn.set_read_timeout(Some(self.timeout))?;
        conn.set_write_timeout(Some(self.timeout))?;
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut redis::Connection) -> Result<(), redis::RedisError> {
        redis::cmd("PING").query::<()>(conn)
    }

    fn has_broken(&self, conn: &mut redis::Connection) -> bool {
        !redis::ConnectionLike::is_open(conn)
    }
}

/// An error for the breaker: what failed, never the URL (which may hold a password).
fn failed(what: &str, e: impl std::fmt::Display) -> CounterError {
    CounterError(format!("redis {what}: {e}"))
}

impl RedisCounters {
    /// Connects lazily to `url` (`redis://host:port/db`, `rediss://` not supported): a
    /// Redis that is down at start-up is not an error here, only a fallback later.
    pub fn open(url: &str, options: RedisOptions) -> Result<Self, CounterError> {
        let client = redis::Client::open(url)
            .map_err(|e| CounterError(format!("the Redis URL is not valid ({:?})", e.kind())))?;
        let pool = Pool::builder()
            .max_size(options.pool_size.max(1))
            .min_idle(Some(0))
            .connection_timeout(options.timeout)
            .test_on_check_out(false)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(Manager {
                client,
                timeout: options.timeout,
            });
        Ok(RedisCounters {
            pool,
            prefix: options.key_prefix,
            gcra: redis::Script::new(GCRA),
            failure: redis::Script::new(FAILURE),
        })
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<Manager>, CounterError> {
        self.pool.get().map_err(|e| failed("connection", e))
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

impl SharedCounters for RedisCounters {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn take(&self, key: &str, limit: RateLimit) -> Result<Result<(), u64>, CounterError> {
        if limit.limit == 0 {
            return Ok(Err(1));
        }
        let interval = u64::from(limit.per_seconds) * 1_000_000 / u64::from(limit.limit);
        let tolerance = interval * u64::from(limit.limit - 1);
        let (allowed, wait_us): (i64, i64) = self
            .gcra
            .key(self.key(key))
            .arg(interval)
            .arg(tolerance)
            .invoke(&mut *self.conn()?)
            .map_err(|e| failed("rate limit", e))?;
        if allowed == 1 {
            Ok(Ok(()))
        } else {
            let secs = u64::try_from(wait_us).unwrap_or(0).div_ceil(1_000_000);
            Ok(Err(secs.max(1)))
        }
    }

    fn record_failure(
        &self,
        source: &str,
        policy: LockoutPolicy,
    ) -> Result<FailureCount, CounterError> {
        if policy.threshold == 0 {
            return Ok(FailureCount::Uncounted);
        }
        let verdict: i64 = self
            .failure
            .key(self.key(&format!("fail:{source}")))
            .key(self.key(&format!("lock:{source}")))
            .arg(policy.threshold)
            .arg(policy.window_secs.max(1))
            .arg(policy.lockout_secs.max(1))
            .invoke(&mut *self.conn()?)
            .map_err(|e| failed("failure count", e))?;
        Ok(match verdict {
            1 => FailureCount::FirstInWindow,
            3 => FailureCount::LockedOut,
            _ => FailureCount::Counted,
        })
    }

    fn locked_for(&self, source: &str) -> Result<Option<u64>, CounterError> {
        let ms: i64 = redis::cmd("PTTL")
            .arg(self.key(&format!("lock:{source}")))
            .query(&mut *self.conn()?)
            .map_err(|e| failed("lockout", e))?;
        // -2: no lock; -1: a lock without expiry (never set so, but locked all the same).
        Ok(match ms {
            -2 => None,
            -1 => Some(1),
            ms => Some(u64::try_from(ms).unwrap_or(0).div_ceil(1000).max(1)),
        })
    }

    fn claim(&self, key: &str, ttl: Duration) -> Result<bool, CounterError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(key))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .query(&mut *self.conn()?)
            .map_err(|e| failed("nonce", e))?;
        Ok(set.is_some())
    }

    fn ping(&self) -> Result<(), CounterError> {
        redis::cmd("PING")
            .query::<()>(&mut *self.conn()?)
            .map_err(|e| failed("ping", e))
    }
}
