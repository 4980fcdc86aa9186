//! The request timeout: a request still waiting when the configured limit passes is
//! answered `503 unavailable` (retry) — but only if none of its store work has started.
//!
//! A `503` must mean "nothing happened": a write that commits after its request was
//! answered `503` would be applied twice by the client's retry (and a refresh token
//! exchanged that way would look reused, revoking its family). So handlers run their store
//! calls through [`crate::http::blocking::run_blocking`], which marks the request's [`StoreWork`]
//! as started; a request whose store work has started is answered when that work ends
//! (store calls are bounded: SQLite's busy wait is 5 s), and one whose work has not
//! started yet is answered `503` and its work never runs. The limit thus bounds the wait
//! for a blocking thread and for the executor, not a store call in progress.
//!
//! The timer is armed only when the request does not finish on its first poll: a cached
//! verification, answered inline, never registers one.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

const IDLE: u8 = 0;
const STARTED: u8 = 1;
const CANCELLED: u8 = 2;

/// Whether a request's store work has started, or was called off by the timeout.
#[derive(Debug, Default)]
pub struct StoreWork(AtomicU8);

impl StoreWork {
    /// Called by store work as it starts: `false` when the request was already answered
    /// `503` (the work must not run), `true` otherwise (and from now on the timeout waits).
    pub fn start(&self) -> bool {
        match self
            .0
            .compare_exchange(IDLE, STARTED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(now) => now == STARTED,
        }
    }

    /// Called at the deadline: `true` when no work has started (and none will), so the
    /// request may be answered `503`.
    fn call_off(&self) -> bool {
        match self
            .0
            .compare_exchange(IDLE, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(now) => now == CANCELLED,
        }
    }
}

tokio::task_local! {
    static STORE_WORK: Arc<StoreWork>;
}

/// The [`StoreWork`] of the request being served, when it runs under [`within`].
pub fn current_store_work() -> Option<Arc<StoreWork>> {
    STORE_WORK.try_with(Arc::clone).ok()
}

/// Runs `work` until `started + limit`: `Some(output)` if it finished in time or its store
/// work had started by then (it is then awaited to the end), `None` if the deadline passed
/// before any store work started (which then never starts).
pub async fn within<F: Future>(started: Instant, limit: Duration, work: F) -> Option<F::Output> {
    let state = Arc::new(StoreWork::default());
    let mut work = pin!(STORE_WORK.scope(Arc::clone(&state), work));
    let mut deadline = None;
    let mut overtime = false;
    poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if overtime {
            return Poll::Pending;
        }
        let sleep = deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(started + limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) if state.call_off() => Poll::Ready(None),
            Poll::Ready(()) => {
                tracing::warn!(
                    limit_ms = limit.as_millis() as u64,
                    "request outlived the timeout with store work in progress; answering when it ends"
                );
                overtime = true;
                Poll::Pending
            }
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

    #[tokio::test]
    async fn started_store_work_is_awaited_past_the_deadline() {
        let started_work = async {
            assert!(current_store_work().unwrap().start());
            tokio::time::sleep(Duration::from_millis(200)).await;
            10
        };
        assert_eq!(
            within(Instant::now(), Duration::from_millis(20), started_work).await,
            Some(10)
        );
    }

    #[tokio::test]
    async fn work_not_started_by_the_deadline_never_starts() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let work = async move {
            let _ = tx.send(current_store_work().unwrap());
            tokio::time::sleep(Duration::from_secs(5)).await;
            11
        };
        assert_eq!(
            within(Instant::now(), Duration::from_millis(20), work).await,
            None
        );
        let state = rx.await.unwrap();
        assert!(
            !state.start(),
            "work called off by the timeout must not start"
        );
    }

    #[test]
    fn started_work_cannot_be_called_off() {
        let work = StoreWork::default();
        assert!(work.start());
        assert!(!work.call_off());
        assert!(work.start(), "a second call of the same request may start");
    }
}
