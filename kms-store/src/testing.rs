//! Test hooks, not a stable interface: a scratch PostgreSQL database per test.
//!
//! Tests that run on PostgreSQL take the server from `KMS_TEST_POSTGRES_URL` (a URL of a
//! database on a server where the tests may create databases). Each test creates its own
//! database (`kms_test_<random>`), so tests never see each other's rows, and drops it
//! afterwards. Without the variable, [`postgres_test_url`] says why: under `CI=true` a
//! test that cannot run is a failure, elsewhere it is skipped with a notice.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use ::postgres::{Client, NoTls};

/// The environment variable naming the test server.
pub const POSTGRES_TEST_URL_VAR: &str = "KMS_TEST_POSTGRES_URL";

/// Why a PostgreSQL test does not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPostgres {
    /// Not configured, outside CI: skip with this notice.
    Skip(String),
    /// Not configured under `CI=true`, or the server refused: fail with this message.
    Fail(String),
}

/// The test server's URL, from [`POSTGRES_TEST_URL_VAR`].
pub fn postgres_test_url() -> Result<String, NoPostgres> {
    match std::env::var(POSTGRES_TEST_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Ok(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => Err(NoPostgres::Fail(format!(
            "{POSTGRES_TEST_URL_VAR} is not set, so the PostgreSQL tests cannot run; under \
             CI=true that is a failure (start a server with `.ci/postgres.sh start DIR`)"
        ))),
        _ => Err(NoPostgres::Skip(format!(
            "notice: {POSTGRES_TEST_URL_VAR} is not set; skipping a PostgreSQL test \
             (`.ci/postgres.sh start DIR` starts a private server)"
        ))),
    }
}

/// The environment variable naming the Redis server for tests.
pub const REDIS_TEST_URL_VAR: &str = "KMS_TEST_REDIS_URL";

/// The test Redis server's URL, from [`REDIS_TEST_URL_VAR`] (same rules as
/// [`postgres_test_url`]; tests keep apart by key prefix, see [`unique_prefix`]).
pub fn redis_test_url() -> Result<String, NoPostgres> {
    match std::env::var(REDIS_TEST_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Ok(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => Err(NoPostgres::Fail(format!(
            "{REDIS_TEST_URL_VAR} is not set, so the Redis tests cannot run; under CI=true \
             that is a failure (start a server with `.ci/redis.sh start DIR`)"
        ))),
        _ => Err(NoPostgres::Skip(format!(
            "notice: {REDIS_TEST_URL_VAR} is not set; skipping a Redis test \
             (`.ci/redis.sh start DIR` starts a private server)"
        ))),
    }
}

/// A key prefix no other test uses (`kms_test_<random>:`).
pub fn unique_prefix() -> String {
    format!("kms_test_{:016x}:", random_u64())
}

/// A freshly created database, dropped (with any connections still open) when this is.
#[derive(Debug)]
pub struct ScratchDatabase {
    server_url: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    /// Creates an empty database on the server of [`postgres_test_url`].
    pub fn create() -> Result<Self, NoPostgres> {
        let server_url = postgres_test_url()?;
        let name = format!("kms_test_{:016x}", random_u64());
        let mut admin = Client::connect(&server_url, NoTls).map_err(|e| {
            NoPostgres::Fail(format!("cannot connect to {POSTGRES_TEST_URL_VAR}: {e}"))
        })?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|e| NoPostgres::Fail(format!("cannot create a test database: {e}")))?;
        let url = with_database(&server_url, &name);
        Ok(ScratchDatabase {
            server_url,
            name,
            url,
        })
    }

    /// The URL of the new database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The new database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let dropped = Client::connect(&self.server_url, NoTls).and_then(|mut admin| {
            admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
        });
        if let Err(e) = dropped {
            eprintln!("could not drop the test database {}: {e}", self.name);
        }
    }
}

/// `url` with its database name replaced by `name` (query parameters kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since.as_nanos());
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced_and_the_rest_kept() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/postgres", "x"),
            "postgres://u:p@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgresql://h:1?sslmode=disable", "x"),
            "postgresql://h:1/x?sslmode=disable"
        );
    }
}
