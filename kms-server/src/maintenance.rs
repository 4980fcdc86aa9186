//! Periodic upkeep while serving: scheduled rotation of the signing key, retirement of
//! verify-only keys whose time has passed, and the sweep of expired deny-list entries and
//! refresh tokens. Each round runs on the blocking pool; a failed round is logged and the
//! next one tries again.

use std::time::Duration;

use kms_core::Kms;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// How often retired keys and expired entries are swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// What the upkeep does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Maintenance {
    /// Rotate the signing key once the active one is this old; `None`: never on a schedule.
    pub key_rotation_interval: Option<Duration>,
}

impl Maintenance {
    /// Time between rounds: a minute, or less when keys rotate more often than that (a
    /// key is then at most half an interval late).
    pub fn period(&self) -> Duration {
        match self.key_rotation_interval {
            Some(every) => (every / 2).clamp(Duration::from_secs(1), SWEEP_EVERY),
            None => SWEEP_EVERY,
        }
    }

    /// Starts the rounds on the current Tokio runtime; the first runs at once.
    pub fn spawn(self, kms: Kms) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.period());
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                self.round(kms.clone()).await;
            }
        })
    }

    /// One round.
    pub async fn round(&self, kms: Kms) {
        let rotation = self.key_rotation_interval;
        let done = tokio::task::spawn_blocking(move || match rotation {
            Some(every) => {
                let max_age = i64::try_from(every.as_secs()).unwrap_or(i64::MAX);
                kms.rotate_keys_if_due(max_age).map(|rotated| {
                    if let Some(key) = rotated {
                        tracing::info!(kid = %key.kid, "scheduled key rotation: a new signing key is active");
                    }
                })
            }
            None => kms.retire_due_keys().map(|retired| {
                if retired > 0 {
                    tracing::info!(retired, "retired verify-only signing keys");
                }
            }),
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                error = %crate::error::error_chain(&e),
                "key maintenance failed; retrying next round"
            ),
            Err(e) => tracing::error!(error = %e, "the key maintenance task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_follow_the_rotation_interval_within_bounds() {
        let m = |s: Option<u64>| Maintenance {
            key_rotation_interval: s.map(Duration::from_secs),
        };
        assert_eq!(m(None).period(), SWEEP_EVERY);
        assert_eq!(m(Some(1)).period(), Duration::from_secs(1));
        assert_eq!(m(Some(10)).period(), Duration::from_secs(5));
        assert_eq!(m(Some(30 * 86_400)).period(), SWEEP_EVERY);
    }
}
