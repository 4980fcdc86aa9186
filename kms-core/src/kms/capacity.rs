//! Capacity statistics for planning: what the store holds, how fast it grows, and how
//! large the database is.

use serde::Serialize;

use super::{Caller, Kms};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::store::{Capacity, ObjectCounts};

/// The days over which growth is averaged.
pub const GROWTH_WINDOW_DAYS: u32 = 7;

/// What the store holds and how fast it grows (`GET /v1/stats`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityStats {
    /// Applications stored, the system application included.
    pub applications: u64,
    /// API keys stored, revoked and expired ones included until retention deletes them.
    pub tokens: u64,
    /// Users stored.
    pub users: u64,
    /// Sessions stored, ended ones included until they are deleted.
    pub sessions: u64,
    /// Audit events stored.
    pub audit_events: u64,
    /// The database's size on disk (SQLite: pages plus write-ahead log; PostgreSQL:
    /// `pg_database_size`; the memory store: 0).
    pub database_bytes: u64,
    /// Objects of each kind created per day, averaged over the last
    /// [`growth_window_days`](Self::growth_window_days) (from their creation times; what
    /// was deleted meanwhile is not subtracted).
    pub growth_per_day: GrowthPerDay,
    /// The days `growth_per_day` averages over.
    pub growth_window_days: u32,
    /// When the numbers were taken.
    pub at: Timestamp,
}

/// Objects created per day, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GrowthPerDay {
    /// Applications.
    pub applications: f64,
    /// API keys.
    pub tokens: f64,
    /// Users.
    pub users: f64,
    /// Sessions.
    pub sessions: f64,
    /// Audit events.
    pub audit_events: f64,
}

impl GrowthPerDay {
    fn over(added: ObjectCounts, days: u32) -> Self {
        let per_day = |n: u64| n as f64 / f64::from(days);
        GrowthPerDay {
            applications: per_day(added.applications),
            tokens: per_day(added.tokens),
            users: per_day(added.users),
            sessions: per_day(added.sessions),
            audit_events: per_day(added.audit_events),
        }
    }
}

impl CapacityStats {
    fn from_capacity(capacity: Capacity, at: Timestamp) -> Self {
        let stored = capacity.stored;
        CapacityStats {
            applications: stored.applications,
            tokens: stored.tokens,
            users: stored.users,
            sessions: stored.sessions,
            audit_events: stored.audit_events,
            database_bytes: capacity.database_bytes,
            growth_per_day: GrowthPerDay::over(capacity.created_since, GROWTH_WINDOW_DAYS),
            growth_window_days: GROWTH_WINDOW_DAYS,
            at,
        }
    }
}

impl Kms {
    /// What the store holds, its size and its growth per day (`audit.read`; callers of the
    /// system application only, as the numbers cover every application). A handful of
    /// counts in the store: cheap, but not for every request.
    pub fn stats(&self, caller: &Caller) -> Result<CapacityStats> {
        caller.require_global(&*self.snapshot()?, "audit.read")?;
        let now = self.inner.clock.now();
        let since = now.plus_secs(-i64::from(GROWTH_WINDOW_DAYS) * 86_400);
        let capacity = self.inner.store.capacity(since)?;
        Ok(CapacityStats::from_capacity(capacity, now))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::float_cmp, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn growth_is_what_was_created_in_the_window_per_day() {
        let capacity = Capacity {
            stored: ObjectCounts {
                applications: 3,
                tokens: 40,
                users: 2,
                sessions: 5,
                audit_events: 100,
            },
            created_since: ObjectCounts {
                applications: 0,
                tokens: 14,
                users: 7,
                sessions: 3,
                audit_events: 70,
            },
            database_bytes: 4096,
        };
        let stats = CapacityStats::from_capacity(capacity, Timestamp::from_unix(0));
        assert_eq!(stats.tokens, 40);
        assert_eq!(stats.database_bytes, 4096);
        assert_eq!(stats.growth_per_day.tokens, 2.0);
        assert_eq!(stats.growth_per_day.users, 1.0);
        assert_eq!(stats.growth_per_day.audit_events, 10.0);
        assert_eq!(stats.growth_per_day.sessions, 3.0 / 7.0);
        assert_eq!(stats.growth_per_day.applications, 0.0);
    }
}
