//! Counters that several nodes share: per-token rate limits, lockout counters and
//! request-signing nonces.
//!
//! One node keeps them in memory. Several nodes behind a load balancer must count
//! together, or a token's `ratelimit` would hold per node and a guesser could spread its
//! failures over the nodes; a [`SharedCounters`] implementation (Redis or PostgreSQL, in
//! `kms-store`) does so. The core never depends on it being up: every shared call goes
//! through a circuit breaker, and while the shared counters fail the node counts in memory
//! on its own ([`CounterState::Fallback`]), so no request fails because they are down. The
//! breaker tries them again after [`RETRY_AFTER`], one caller at a time, and closes on the
//! first success.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api_key::RateLimit;
use crate::clock::Timestamp;
use crate::defence::failure_gate::{FailureGate, LockoutPolicy};
use crate::defence::rate_limit::TokenRateLimits;

/// What counting one failure led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureCount {
    /// Lockouts are off; nothing is counted.
    Uncounted,
    /// The first failure of the source in a new window (audited, once per window).
    FirstInWindow,
    /// Another failure within the window.
    Counted,
    /// The source just got locked out.
    LockedOut,
}

/// A shared counter store could not answer (unreachable, timed out, or answered
/// something unexpected). The message never holds a secret or a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shared counters unavailable: {0}")]
pub struct CounterError(pub String);

/// Counters shared by every node of a deployment, each operation atomic on the shared
/// side and timed by the shared side's clock (so the nodes' clocks need not agree).
///
/// Implementations block (they talk to a server); callers run them where blocking is
/// allowed. Rate-limit keys are `rl:<token id>` and nonce keys `nonce:<app>:<nonce>`;
/// lockouts are counted per source (`ip:203.0.113.9`, `caller:<token id>`, ...), and
/// the implementation names the keys it keeps for a source's failures and its lock.
pub trait SharedCounters: Send + Sync + std::fmt::Debug {
    /// A short name for logs, metrics and `/readyz` (`redis`, `postgres`).
    fn name(&self) -> &'static str;

    /// Takes one cell of `limit` for `key` (GCRA: `limit.limit` cells per
    /// `limit.per_seconds`, all of them available at once): `Ok(Ok(()))`, or
    /// `Ok(Err(seconds))` with how long until the next cell is free (at least 1).
    fn take(&self, key: &str, limit: RateLimit) -> Result<Result<(), u64>, CounterError>;

    /// Counts one failure of `source` under `policy` (a window of `policy.window_secs`
    /// opened by the first failure; at `policy.threshold` failures the source is locked
    /// for `policy.lockout_secs` and its window cleared, in the same atomic step).
    /// `policy.threshold` is at least 1.
    fn record_failure(
        &self,
        source: &str,
        policy: LockoutPolicy,
    ) -> Result<FailureCount, CounterError>;

    /// Seconds until `source` is no longer locked out, if it is locked out now.
    fn locked_for(&self, source: &str) -> Result<Option<u64>, CounterError>;

    /// Claims `key` for `ttl`: `true` the first time, `false` while an earlier claim
    /// lasts.
    fn claim(&self, key: &str, ttl: Duration) -> Result<bool, CounterError>;

    /// Whether the shared side answers.
    fn ping(&self) -> Result<(), CounterError>;
}

/// How long the breaker stays open after a failure before it tries the shared counters
/// again.
pub const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Where a node's counters are kept right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CounterState {
    /// In this process only (no shared counters configured).
    Local,
    /// In the shared counters.
    Shared,
    /// Shared counters are configured but failing: in this process until they answer.
    Fallback,
}

impl CounterState {
    /// `local`, `shared` or `fallback`.
    pub fn as_str(self) -> &'static str {
        match self {
            CounterState::Local => "local",
            CounterState::Shared => "shared",
            CounterState::Fallback => "fallback",
        }
    }
}

/// What [`crate::Kms::counter_status`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterStatus {
    /// The shared counters' name (`redis`, `postgres`), if configured.
    pub backend: Option<&'static str>,
    /// Where counting happens now.
    pub state: CounterState,
    /// Shared calls that failed and were answered in memory instead, since start.
    pub fallbacks: u64,
    /// Times the breaker opened, since start.
    pub trips: u64,
    /// The last failure's message, if the breaker is open.
    pub last_error: Option<String>,
}

/// The circuit breaker around one [`SharedCounters`].
#[derive(Debug)]
struct Breaker {
    shared: Arc<dyn SharedCounters>,
    started: Instant,
    /// Milliseconds since `started` until which the breaker is open; -1 when closed.
    open_until_ms: AtomicI64,
    /// One caller at a time tries the shared side while the breaker is half open.
    probing: AtomicBool,
    fallbacks: AtomicU64,
    trips: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Whether to call the shared side now.
enum Gate {
    /// Closed: call it.
    Closed,
    /// Half open and this caller holds the probe: call it, and report back.
    Probe,
    /// Open: answer in memory.
    Open,
}

impl Breaker {
    fn new(shared: Arc<dyn SharedCounters>) -> Self {
        Breaker {
            shared,
            started: Instant::now(),
            open_until_ms: AtomicI64::new(-1),
            probing: AtomicBool::new(false),
            fallbacks: AtomicU64::new(0),
            trips: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn gate(&self) -> Gate {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until < 0 {
            return Gate::Closed;
        }
        if self.now_ms() < until {
            return Gate::Open;
        }
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Gate::Probe,
            Err(_) => Gate::Open,
        }
    }

    fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) >= 0
    }

    /// Runs `op` on the shared side unless the breaker is open; `None` means "answer in
    /// memory" (and was counted as a fallback).
    fn call<T>(
        &self,
        op: impl FnOnce(&dyn SharedCounters) -> Result<T, CounterError>,
    ) -> Option<T> {
        let gate = self.gate();
        if matches!(gate, Gate::Open) {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let result = op(self.shared.as_ref());
        if matches!(gate, Gate::Probe) {
            self.probing.store(false, Ordering::Release);
        }
        match result {
            Ok(value) => {
                self.close();
                Some(value)
            }
            Err(e) => {
                self.trip(e);
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The shared side answered: close the breaker and forget the last failure.
    fn close(&self) {
        if self.open_until_ms.swap(-1, Ordering::AcqRel) >= 0 {
            if let Ok(mut last) = self.last_error.lock() {
                *last = None;
            }
        }
    }

    fn trip(&self, error: CounterError) {
        let retry = i64::try_from(RETRY_AFTER.as_millis()).unwrap_or(i64::MAX);
        let was = self
            .open_until_ms
            .swap(self.now_ms().saturating_add(retry), Ordering::AcqRel);
        if was < 0 {
            self.trips.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error.0);
        }
    }
}

/// A node's counters: in memory, or shared behind a breaker with memory as the fallback.
pub(crate) struct Counters {
    rate_limits: TokenRateLimits,
    gate: FailureGate,
    nonces: moka::sync::Cache<String, ()>,
    shared: Option<Breaker>,
}

impl Counters {
    pub(crate) fn new(
        policy: LockoutPolicy,
        nonce_capacity: u64,
        nonce_ttl: Duration,
        shared: Option<Arc<dyn SharedCounters>>,
    ) -> Self {
        Counters {
            rate_limits: TokenRateLimits::default(),
            gate: FailureGate::new(policy),
            nonces: moka::sync::Cache::builder()
                .max_capacity(nonce_capacity)
                .time_to_live(nonce_ttl)
                .build(),
            shared: shared.map(Breaker::new),
        }
    }

    /// The lockout thresholds in force.
    pub(crate) fn policy(&self) -> LockoutPolicy {
        self.gate.policy()
    }

    /// Whether counting may talk to another server (so it blocks, and cannot run on an
    /// async worker).
    pub(crate) fn is_remote(&self) -> bool {
        self.shared.is_some()
    }

    /// Takes a rate-limit cell for the token `token_id`.
    pub(crate) fn take(&self, token_id: &str, limit: RateLimit) -> Result<(), u64> {
        if let Some(b) = &self.shared {
            if let Some(verdict) = b.call(|s| s.take(&format!("rl:{token_id}"), limit)) {
                return verdict;
            }
        }
        self.rate_limits.check(token_id, limit)
    }

    /// Seconds until `source` may try again, if it is locked out.
    pub(crate) fn locked_for(&self, source: &str, now: Timestamp) -> Option<u64> {
        if let Some(b) = &self.shared {
            if self.gate.policy().threshold == 0 {
                return None;
            }
            if let Some(locked) = b.call(|s| s.locked_for(source)) {
                return locked;
            }
        }
        self.gate.locked_for(source, now)
    }

    /// Counts a failure of `source`.
    pub(crate) fn record_failure(&self, source: &str, now: Timestamp) -> FailureCount {
        let policy = self.gate.policy();
        if policy.threshold == 0 {
            return FailureCount::Uncounted;
        }
        if let Some(b) = &self.shared {
            let counted = b.call(|s| s.record_failure(source, policy));
            if let Some(verdict) = counted {
                return verdict;
            }
        }
        self.gate.record_failure(source, now)
    }

    /// Claims a request-signing nonce (already scoped by signer) for `ttl`: `true` the
    /// first time it is seen.
    pub(crate) fn claim_nonce(&self, nonce: &str, ttl: Duration) -> bool {
        if let Some(b) = &self.shared {
            if let Some(fresh) = b.call(|s| s.claim(&format!("nonce:{nonce}"), ttl)) {
                // Remembered here as well: if the shared side fails later, a replay
                // within this node's memory is still refused.
                self.nonces.insert(nonce.to_owned(), ());
                return fresh;
            }
        }
        self.nonces.entry(nonce.to_owned()).or_insert(()).is_fresh()
    }

    /// Asks the shared side whether it answers (tripping or closing the breaker), and
    /// reports where counting happens.
    pub(crate) fn probe(&self) -> CounterStatus {
        if let Some(b) = &self.shared {
            match b.shared.ping() {
                Ok(()) => b.close(),
                Err(e) => b.trip(e),
            }
        }
        self.status()
    }

    /// Where counting happens, without asking the shared side.
    pub(crate) fn status(&self) -> CounterStatus {
        match &self.shared {
            None => CounterStatus {
                backend: None,
                state: CounterState::Local,
                fallbacks: 0,
                trips: 0,
                last_error: None,
            },
            Some(b) => CounterStatus {
                backend: Some(b.shared.name()),
                state: if b.is_open() {
                    CounterState::Fallback
                } else {
                    CounterState::Shared
                },
                fallbacks: b.fallbacks.load(Ordering::Relaxed),
                trips: b.trips.load(Ordering::Relaxed),
                last_error: b.last_error.lock().ok().and_then(|l| l.clone()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shared counters that fail while `down` is set, and otherwise count in one map.
    #[derive(Debug, Default)]
    struct Flaky {
        down: AtomicBool,
        calls: AtomicU64,
        claimed: Mutex<std::collections::HashSet<String>>,
    }

    impl SharedCounters for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn take(&self, _key: &str, _limit: RateLimit) -> Result<Result<(), u64>, CounterError> {
            self.answer(Ok(()))
        }
        fn record_failure(
            &self,
            _key: &str,
            _policy: LockoutPolicy,
        ) -> Result<FailureCount, CounterError> {
            self.answer(FailureCount::Counted)
        }
        fn locked_for(&self, _key: &str) -> Result<Option<u64>, CounterError> {
            self.answer(None)
        }
        fn claim(&self, key: &str, _ttl: Duration) -> Result<bool, CounterError> {
            self.answer(())?;
            Ok(self
                .claimed
                .lock()
                .map_err(|_| CounterError("poisoned".into()))?
                .insert(key.to_owned()))
        }
        fn ping(&self) -> Result<(), CounterError> {
            self.answer(())
        }
    }

    impl Flaky {
        fn answer<T>(&self, value: T) -> Result<T, CounterError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                Err(CounterError("connection refused".into()))
            } else {
                Ok(value)
            }
        }
    }

    fn counters(shared: &Arc<Flaky>) -> Counters {
        let shared: Arc<dyn SharedCounters> = shared.clone();
        Counters::new(
            LockoutPolicy {
                threshold: 2,
                window_secs: 60,
                lockout_secs: 60,
            },
            100,
            Duration::from_secs(60),
            Some(shared),
        )
    }

    const ONE_PER_MINUTE: RateLimit = RateLimit {
        limit: 1,
        per_seconds: 60,
    };

    #[test]
    fn a_failing_backend_opens_the_breaker_and_memory_answers() {
        let flaky = Arc::new(Flaky::default());
        let c = counters(&flaky);
        let now = Timestamp::from_unix(1000);
        assert_eq!(c.take("t", ONE_PER_MINUTE), Ok(())); // the shared side said yes
        assert_eq!(c.status().state, CounterState::Shared);
        flaky.down.store(true, Ordering::SeqCst);
        // The failing call is answered in memory: the first cell of the local limiter.
        assert_eq!(c.take("t", ONE_PER_MINUTE), Ok(()));
        let status = c.status();
        assert_eq!(status.state, CounterState::Fallback);
        assert_eq!(status.trips, 1);
        assert!(status.last_error.is_some_and(|e| e.contains("refused")));
        // While open, the shared side is not called at all.
        let calls = flaky.calls.load(Ordering::SeqCst);
        assert!(matches!(c.take("t", ONE_PER_MINUTE), Err(59 | 60)));
        assert_eq!(c.record_failure("ip:1", now), FailureCount::FirstInWindow);
        assert_eq!(c.record_failure("ip:1", now), FailureCount::LockedOut);
        assert_eq!(c.locked_for("ip:1", now), Some(60));
        assert_eq!(flaky.calls.load(Ordering::SeqCst), calls);
        assert!(c.status().fallbacks >= 4);
    }

    #[test]
    fn the_breaker_closes_by_itself_when_the_backend_is_back() {
        let flaky = Arc::new(Flaky::default());
        let c = counters(&flaky);
        flaky.down.store(true, Ordering::SeqCst);
        assert_eq!(c.probe().state, CounterState::Fallback);
        flaky.down.store(false, Ordering::SeqCst);
        // Still open until the retry interval has passed...
        let calls = flaky.calls.load(Ordering::SeqCst);
        let _ = c.take("t", ONE_PER_MINUTE);
        assert_eq!(flaky.calls.load(Ordering::SeqCst), calls);
        std::thread::sleep(RETRY_AFTER + Duration::from_millis(50));
        // ...then one call probes, succeeds and closes it.
        assert_eq!(c.take("t", ONE_PER_MINUTE), Ok(()));
        assert_eq!(c.status().state, CounterState::Shared);
        assert_eq!(c.status().last_error, None);
    }

    #[test]
    fn a_probe_reports_and_resets_at_once() {
        let flaky = Arc::new(Flaky::default());
        let c = counters(&flaky);
        flaky.down.store(true, Ordering::SeqCst);
        assert_eq!(c.probe().state, CounterState::Fallback);
        flaky.down.store(false, Ordering::SeqCst);
        assert_eq!(c.probe().state, CounterState::Shared);
    }

    #[test]
    fn nonces_seen_through_the_backend_are_remembered_in_memory_too() {
        let flaky = Arc::new(Flaky::default());
        let c = counters(&flaky);
        let ttl = Duration::from_secs(60);
        assert!(c.claim_nonce("app:n1", ttl));
        assert!(!c.claim_nonce("app:n1", ttl));
        flaky.down.store(true, Ordering::SeqCst);
        assert!(
            !c.claim_nonce("app:n1", ttl),
            "a replay while the backend is down"
        );
        assert!(c.claim_nonce("app:n2", ttl));
    }

    #[test]
    fn without_shared_counters_everything_is_local() {
        let c = Counters::new(LockoutPolicy::default(), 10, Duration::from_secs(1), None);
        assert_eq!(c.status().state, CounterState::Local);
        assert_eq!(c.probe().backend, None);
        assert!(!c.is_remote());
    }
}
