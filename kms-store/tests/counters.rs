//! The shared counters (Redis and PostgreSQL) against real servers: the same conformance
//! suite for both, with two instances standing for two nodes.
//!
//! Servers come from `KMS_TEST_REDIS_URL` and `KMS_TEST_POSTGRES_URL` (`.ci/redis.sh` and
//! `.ci/postgres.sh` start private ones); under `CI=true` a missing one is a failure.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kms_core::counters::{FailureCount, SharedCounters};
use kms_core::{LockoutPolicy, RateLimit};
use kms_store::testing::{redis_test_url, unique_prefix, NoPostgres, ScratchDatabase};
use kms_store::{PostgresCounters, RedisCounters, RedisOptions};

const TIMEOUT: Duration = Duration::from_millis(500);

fn or_skip<T>(r: Result<T, NoPostgres>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(NoPostgres::Skip(notice)) => {
            eprintln!("{notice}");
            None
        }
        Err(NoPostgres::Fail(message)) => panic!("{message}"),
    }
}

/// Two Redis "nodes" on one server, with a key prefix of their own test.
fn redis_pair() -> Option<[Arc<dyn SharedCounters>; 2]> {
    let url = or_skip(redis_test_url())?;
    let options = RedisOptions {
        key_prefix: unique_prefix(),
        timeout: TIMEOUT,
        ..RedisOptions::default()
    };
    let open = || -> Arc<dyn SharedCounters> {
        Arc::new(RedisCounters::open(&url, options.clone()).expect("redis url"))
    };
    Some([open(), open()])
}

/// Two PostgreSQL "nodes" on one scratch database.
fn postgres_pair() -> Option<(ScratchDatabase, [Arc<dyn SharedCounters>; 2])> {
    let db = or_skip(ScratchDatabase::create())?;
    let open = || -> Arc<dyn SharedCounters> {
        Arc::new(PostgresCounters::open(db.url(), 8, Duration::from_secs(2)).expect("pg url"))
    };
    let pair = [open(), open()];
    Some((db, pair))
}

/// 8 threads over two nodes try 25 times each against a limit of 40 per minute: exactly
/// 40 pass, and each refusal says when to come back.
fn rate_limit_is_exact_across_nodes(nodes: &[Arc<dyn SharedCounters>; 2]) {
    let limit = RateLimit {
        limit: 40,
        per_seconds: 60,
    };
    let passed = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        for t in 0..8 {
            let node = Arc::clone(&nodes[t % 2]);
            let passed = Arc::clone(&passed);
            s.spawn(move || {
                for _ in 0..25 {
                    match node.take("rl:tok_shared", limit).expect("counters answer") {
                        Ok(()) => {
                            passed.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(secs) => assert!((1..=60).contains(&secs), "retry after {secs}"),
                    }
                }
            });
        }
    });
    assert_eq!(passed.load(Ordering::SeqCst), 40);
    // Another key has its own limit.
    assert_eq!(nodes[0].take("rl:tok_other", limit).unwrap(), Ok(()));
}

/// A fast limit refills: 2 per second, then after half a second one more cell.
fn rate_limit_refills(nodes: &[Arc<dyn SharedCounters>; 2]) {
    let limit = RateLimit {
        limit: 2,
        per_seconds: 1,
    };
    assert_eq!(nodes[0].take("rl:tok_refill", limit).unwrap(), Ok(()));
    assert_eq!(nodes[1].take("rl:tok_refill", limit).unwrap(), Ok(()));
    assert_eq!(nodes[0].take("rl:tok_refill", limit).unwrap(), Err(1));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(nodes[1].take("rl:tok_refill", limit).unwrap(), Ok(()));
    assert_eq!(nodes[0].take("rl:tok_refill", limit).unwrap(), Err(1));
}

/// Failures from both nodes add up to one lockout of the source, and only of it.
fn lockouts_count_every_node(nodes: &[Arc<dyn SharedCounters>; 2]) {
    let policy = LockoutPolicy {
        threshold: 4,
        window_secs: 60,
        lockout_secs: 120,
    };
    let source = "ip:203.0.113.9";
    assert_eq!(nodes[0].locked_for(source).unwrap(), None);
    assert_eq!(
        nodes[0].record_failure(source, policy).unwrap(),
        FailureCount::FirstInWindow
    );
    assert_eq!(
        nodes[1].record_failure(source, policy).unwrap(),
        FailureCount::Counted
    );
    assert_eq!(
        nodes[0].record_failure(source, policy).unwrap(),
        FailureCount::Counted
    );
    assert_eq!(nodes[1].locked_for(source).unwrap(), None);
    assert_eq!(
        nodes[1].record_failure(source, policy).unwrap(),
        FailureCount::LockedOut
    );
    for node in nodes {
        let left = node.locked_for(source).unwrap().expect("locked out");
        assert!((119..=120).contains(&left), "{left}");
    }
    assert_eq!(nodes[0].locked_for("ip:198.51.100.1").unwrap(), None);
    // The lockout cleared the window: the next failure opens a new one.
    assert_eq!(
        nodes[0].record_failure(source, policy).unwrap(),
        FailureCount::FirstInWindow
    );
}

/// A short window runs out, and the count starts over.
fn failure_windows_expire(nodes: &[Arc<dyn SharedCounters>; 2]) {
    let policy = LockoutPolicy {
        threshold: 2,
        window_secs: 1,
        lockout_secs: 1,
    };
    let source = "caller:tok_window";
    assert_eq!(
        nodes[0].record_failure(source, policy).unwrap(),
        FailureCount::FirstInWindow
    );
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(
        nodes[1].record_failure(source, policy).unwrap(),
        FailureCount::FirstInWindow
    );
    assert_eq!(
        nodes[0].record_failure(source, policy).unwrap(),
        FailureCount::LockedOut
    );
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(nodes[1].locked_for(source).unwrap(), None);
}

/// A nonce is claimed once across nodes, and may be claimed again after its time.
fn nonces_are_claimed_once(nodes: &[Arc<dyn SharedCounters>; 2]) {
    let ttl = Duration::from_millis(400);
    let wins = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let node = &nodes[t % 2];
            let wins = &wins;
            s.spawn(move || {
                if node.claim("nonce:app_1:abcdefgh", ttl).unwrap() {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(wins.load(Ordering::SeqCst), 1);
    assert!(nodes[0].claim("nonce:app_2:abcdefgh", ttl).unwrap());
    std::thread::sleep(Duration::from_millis(500));
    assert!(nodes[1].claim("nonce:app_1:abcdefgh", ttl).unwrap());
    nodes[0].ping().unwrap();
}

fn conformance(nodes: &[Arc<dyn SharedCounters>; 2]) {
    rate_limit_is_exact_across_nodes(nodes);
    rate_limit_refills(nodes);
    lockouts_count_every_node(nodes);
    failure_windows_expire(nodes);
    nonces_are_claimed_once(nodes);
}

#[test]
fn redis_counters_conform() {
    let Some(nodes) = redis_pair() else { return };
    assert_eq!(nodes[0].name(), "redis");
    conformance(&nodes);
}

#[test]
fn postgres_counters_conform() {
    let Some((_db, nodes)) = postgres_pair() else {
        return;
    };
    assert_eq!(nodes[0].name(), "postgres");
    conformance(&nodes);
}

/// A server that is not there fails fast with an error that names no secret, and never
/// panics; so does a bad URL.
#[test]
fn an_unreachable_server_is_an_error_not_a_hang() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let redis = RedisCounters::open(
        &format!("redis://:hunter2@127.0.0.1:{port}/0"),
        RedisOptions {
            timeout: TIMEOUT,
            ..RedisOptions::default()
        },
    )
    .unwrap();
    let pg = PostgresCounters::open(
        &format!("postgres://kms:hunter2@127.0.0.1:{port}/kms"),
        2,
        TIMEOUT,
    )
    .unwrap();
    for counters in [&redis as &dyn SharedCounters, &pg] {
        let started = Instant::now();
        let err = counters.ping().unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{err}");
        assert!(!err.0.contains("hunter2"), "{err}");
        let err = counters
            .take(
                "rl:x",
                RateLimit {
                    limit: 1,
                    per_seconds: 1,
                },
            )
            .unwrap_err();
        assert!(!err.0.contains("hunter2"), "{err}");
    }
    assert!(RedisCounters::open("http://nope", RedisOptions::default()).is_err());
    let err = PostgresCounters::open("postgres://u:hunter2@[bad", 1, TIMEOUT).unwrap_err();
    assert!(!err.0.contains("hunter2"), "{err}");
}
