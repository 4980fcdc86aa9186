//! Brute-force protection: failed authentications and verifications are counted per source
//! (client address, token id); past a threshold within a window the source is locked out.
//!
//! The hot path only reads a normally empty map of locked sources; failure counting takes a
//! lock, but only on failures.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use crate::clock::Timestamp;

/// When a source is locked out. Defaults: 10 failures within 60 s lock it for 300 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures within the window that trigger a lockout (0 disables lockouts).
    pub threshold: u32,
    /// Counting window in seconds.
    pub window_secs: i64,
    /// Lockout length in seconds.
    pub lockout_secs: i64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            threshold: 10,
            window_secs: 60,
            lockout_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    failures: u32,
}

/// Most sources tracked before expired ones are swept.
const SWEEP_AT: usize = 100_000;

pub(crate) use super::counters::FailureCount as Failure;

pub(crate) struct FailureGate {
    policy: LockoutPolicy,
    windows: Mutex<HashMap<String, Window>>,
    locked: RwLock<HashMap<String, i64>>,
}

impl FailureGate {
    pub(crate) fn new(policy: LockoutPolicy) -> Self {
        FailureGate {
            policy,
            windows: Mutex::default(),
            locked: RwLock::default(),
        }
    }

    /// The thresholds in force.
    pub(crate) fn policy(&self) -> LockoutPolicy {
        self.policy
    }

    /// Seconds until `source` may try again, if it is locked out.
    pub(crate) fn locked_for(&self, source: &str, now: Timestamp) -> Option<u64> {
        let locked = self.locked.read().ok()?;
        if locked.is_empty() {
            return None;
        }
        let until = *locked.get(source)?;
        (until > now.unix()).then(|| (until - now.unix()) as u64)
    }

    /// Counts a failure of `source`.
    pub(crate) fn record_failure(&self, source: &str, now: Timestamp) -> Failure {
        if self.policy.threshold == 0 {
            return Failure::Uncounted;
        }
        let now = now.unix();
        let Ok(mut windows) = self.windows.lock() else {
            return Failure::Uncounted;
        };
        if windows.len() >= SWEEP_AT {
            windows.retain(|_, w| w.start + self.policy.window_secs > now);
        }
        let w = windows.entry(source.to_owned()).or_insert(Window {
            start: now,
            failures: 0,
        });
        if w.start + self.policy.window_secs <= now {
            *w = Window {
                start: now,
                failures: 0,
            };
        }
        w.failures += 1;
        if w.failures < self.policy.threshold {
            return if w.failures == 1 {
                Failure::FirstInWindow
            } else {
                Failure::Counted
            };
        }
        windows.remove(source);
        drop(windows);
        if let Ok(mut locked) = self.locked.write() {
            locked.retain(|_, until| *until > now);
            locked.insert(source.to_owned(), now + self.policy.lockout_secs);
        }
        Failure::LockedOut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_within_window_locks_then_expires() {
        let g = FailureGate::new(LockoutPolicy {
            threshold: 3,
            window_secs: 10,
            lockout_secs: 30,
        });
        let t = Timestamp::from_unix(1000);
        assert_eq!(g.record_failure("ip:1", t), Failure::FirstInWindow);
        assert_eq!(g.record_failure("ip:1", t), Failure::Counted);
        assert_eq!(g.locked_for("ip:1", t), None);
        assert_eq!(g.record_failure("ip:1", t.plus_secs(5)), Failure::LockedOut);
        assert_eq!(g.locked_for("ip:1", t.plus_secs(5)), Some(30));
        assert_eq!(g.locked_for("ip:2", t.plus_secs(5)), None);
        assert_eq!(g.locked_for("ip:1", t.plus_secs(35)), None);
    }

    #[test]
    fn failures_outside_the_window_start_over() {
        let g = FailureGate::new(LockoutPolicy {
            threshold: 2,
            window_secs: 10,
            lockout_secs: 30,
        });
        let t = Timestamp::from_unix(1000);
        assert_eq!(g.record_failure("x", t), Failure::FirstInWindow);
        assert_eq!(
            g.record_failure("x", t.plus_secs(11)),
            Failure::FirstInWindow
        );
        assert_eq!(g.record_failure("x", t.plus_secs(12)), Failure::LockedOut);
    }
}
