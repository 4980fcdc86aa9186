//! Watching the shared counters: a line in the log whenever a node starts counting rate
//! limits, lockouts and nonces on its own because the shared counters (Redis, or
//! PostgreSQL without Redis) failed, and when it is back on them. The metrics
//! (`kms_limit_fallbacks_total`, `kms_limits_shared`) and `/readyz` say the same.

use std::time::Duration;

use kms_core::counters::CounterState;
use kms_core::Kms;
use tokio::task::JoinHandle;

/// How often the state is looked at (reading it costs nothing; it asks no server).
const EVERY: Duration = Duration::from_millis(250);

/// Starts the watcher; it logs each change of state until aborted.
pub fn spawn(kms: Kms) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut was = kms.counter_status().state;
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tick.tick().await;
            let now = kms.counter_status();
            if now.state == was {
                continue;
            }
            let backend = now.backend.unwrap_or("none");
            match now.state {
                CounterState::Fallback => tracing::warn!(
                    backend,
                    error = now.last_error.as_deref().unwrap_or(""),
                    "the shared counters do not answer: this node counts rate limits, \
                     lockouts and nonces on its own until they do (readiness: degraded)"
                ),
                _ => tracing::info!(
                    backend,
                    fallbacks = now.fallbacks,
                    "the shared counters answer again: rate limits, lockouts and nonces \
                     are shared"
                ),
            }
            was = now.state;
        }
    })
}
