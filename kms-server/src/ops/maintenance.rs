//! Periodic upkeep while serving: scheduled rotation of the signing key, retirement of
//! verify-only keys whose time has passed, the sweep of expired deny-list entries and
//! refresh tokens, and retention (old audit events, with the chain anchored at the first
//! kept one, and long-expired tokens). Each round runs on the blocking pool; a failed round
//! is logged and the next one tries again.

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
    /// Delete audit events older than this; `None`: keep them all.
    pub audit_retention: Option<Duration>,
    /// Delete tokens that expired longer ago than this; `None`: keep them.
    pub expired_token_retention: Option<Duration>,
    /// Delete usage buckets of hours older than this; `None`: keep them.
    pub usage_retention: Option<Duration>,
    /// Delete sessions that ended longer ago than this; `None`: keep them.
    pub session_retention: Option<Duration>,
}

impl Maintenance {
    /// Time between rounds: a minute, or half the shortest configured interval when that
    /// is shorter (so nothing is more than half an interval late), but at least a second.
    pub fn period(&self) -> Duration {
        [
            self.key_rotation_interval,
            self.audit_retention,
            self.expired_token_retention,
            self.usage_retention,
            self.session_retention,
        ]
        .into_iter()
        .flatten()
        .map(|every| (every / 2).clamp(Duration::from_secs(1), SWEEP_EVERY))
        .min()
        .unwrap_or(SWEEP_EVERY)
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
        let this = *self;
        let done = tokio::task::spawn_blocking(move || this.round_blocking(&kms)).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                error = %crate::http::error::error_chain(&e),
                "maintenance failed; retrying next round"
            ),
            Err(e) => tracing::error!(error = %e, "the maintenance task failed"),
        }
    }

    fn round_blocking(&self, kms: &Kms) -> kms_core::Result<()> {
        match self.key_rotation_interval {
            Some(every) => {
                if let Some(key) = kms.rotate_keys_if_due(secs(every))? {
                    tracing::info!(kid = %key.kid, "scheduled key rotation: a new signing key is active");
                }
            }
            None => {
                let retired = kms.retire_due_keys()?;
                if retired > 0 {
                    tracing::info!(retired, "retired verify-only signing keys");
                }
            }
        }
        if self.audit_retention.is_some()
            || self.expired_token_retention.is_some()
            || self.session_retention.is_some()
        {
            let report = kms.apply_retention(
                self.audit_retention.map(secs),
                self.expired_token_retention.map(secs),
                self.session_retention.map(secs),
            )?;
            if report.ended_sessions_deleted > 0 {
                tracing::info!(
                    deleted = report.ended_sessions_deleted,
                    "retention: deleted ended sessions"
                );
            }
            if report.audit_events_pruned > 0 {
                tracing::info!(
                    pruned = report.audit_events_pruned,
                    anchor_seq = report.audit_anchor_seq,
                    "retention: deleted old audit events"
                );
            }
        }
        if let Some(age) = self.usage_retention {
            let deleted = kms.apply_usage_retention(secs(age))?;
            if deleted > 0 {
                tracing::info!(deleted, "retention: deleted old usage buckets");
            }
        }
        Ok(())
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_follow_the_rotation_interval_within_bounds() {
        let m = |s: Option<u64>| Maintenance {
            key_rotation_interval: s.map(Duration::from_secs),
            ..Maintenance::default()
        };
        assert_eq!(m(None).period(), SWEEP_EVERY);
        assert_eq!(m(Some(1)).period(), Duration::from_secs(1));
        assert_eq!(m(Some(10)).period(), Duration::from_secs(5));
        assert_eq!(m(Some(30 * 86_400)).period(), SWEEP_EVERY);
        let retention = Maintenance {
            key_rotation_interval: Some(Duration::from_secs(40)),
            audit_retention: Some(Duration::from_secs(6)),
            expired_token_retention: None,
            usage_retention: None,
            session_retention: None,
        };
        assert_eq!(retention.period(), Duration::from_secs(3));
        let sessions = Maintenance {
            session_retention: Some(Duration::from_secs(4)),
            ..Maintenance::default()
        };
        assert_eq!(sessions.period(), Duration::from_secs(2));
    }
}
