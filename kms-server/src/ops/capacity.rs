//! Keeps the capacity gauges of `/metrics` current: counts what the store holds once a
//! minute (a handful of `count(*)`s, too much for every scrape) and hands the numbers to
//! [`Metrics::observe_capacity`]. `GET /v1/stats` refreshes them too.

use std::sync::Arc;
use std::time::Duration;

use kms_core::Kms;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::ops::metrics::Metrics;

/// How often the gauges are counted.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// Starts the refresh on the current Tokio runtime; the first count runs at once. A failed
/// count is logged and the gauges keep their last numbers.
pub fn spawn(kms: Kms, metrics: Arc<Metrics>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(REFRESH_EVERY);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let kms = kms.clone();
            match tokio::task::spawn_blocking(move || kms.stats(&kms.operator())).await {
                Ok(Ok(stats)) => metrics.observe_capacity(&stats),
                Ok(Err(e)) => tracing::warn!(
                    error = %crate::http::error::error_chain(&e),
                    "counting the capacity gauges failed; retrying in a minute"
                ),
                Err(e) => tracing::error!(error = %e, "the capacity task failed"),
            }
        }
    })
}
