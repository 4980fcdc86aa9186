//! The usage flush: every `usage_flush_interval` (10 s by default) the verifications
//! counted in memory are added to the database, and once more at shutdown, so a crash
//! loses at most one interval of counting (ADR 0015). A failed flush keeps its counts for
//! the next one.

use std::time::Duration;

use kms_core::Kms;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Starts the periodic flush on the current Tokio runtime; it runs until aborted.
pub fn spawn(kms: Kms, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick is immediate; there is nothing to flush yet.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            flush(kms.clone()).await;
        }
    })
}

/// The last flush, at shutdown (after the listener stopped taking requests).
pub async fn flush_at_shutdown(kms: Kms) {
    flush(kms).await;
}

async fn flush(kms: Kms) {
    match tokio::task::spawn_blocking(move || kms.flush_usage()).await {
        Ok(Ok(flushed)) if flushed.verifications > 0 || flushed.tokens_touched > 0 => {
            tracing::debug!(
                verifications = flushed.verifications,
                buckets = flushed.buckets,
                tokens_touched = flushed.tokens_touched,
                "usage flushed"
            );
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(
            error = %crate::http::error::error_chain(&e),
            "the usage counts could not be written; they are kept for the next flush"
        ),
        Err(e) => tracing::error!(error = %e, "the usage flush task failed"),
    }
}
