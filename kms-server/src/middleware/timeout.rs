//! Abandons requests that run longer than the configured limit with `503 unavailable`.
//!
//! The timer is armed only when the request does not finish on its first poll: a cached
//! verification, answered inline, never registers one. Work already handed to a blocking
//! thread finishes there; only the answer is abandoned.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

/// Runs `work` until `started + limit`: `Some(output)` if it finished in time, `None` if
/// the deadline passed first.
pub async fn within<F: Future>(started: Instant, limit: Duration, work: F) -> Option<F::Output> {
    let mut work = pin!(work);
    let mut deadline = None;
    poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        let sleep =
            deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(started + limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_that_finishes_in_time_is_kept_and_slow_work_is_abandoned() {
        let now = Instant::now();
        assert_eq!(
            within(now, Duration::from_secs(1), async { 7 }).await,
            Some(7)
        );
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            8
        };
        assert_eq!(within(now, Duration::from_millis(50), slow).await, None);
        let pending_then_ready = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            9
        };
        assert_eq!(
            within(Instant::now(), Duration::from_secs(1), pending_then_ready).await,
            Some(9)
        );
    }
}
