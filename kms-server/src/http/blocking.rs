//! Where kms calls run. Store access and argon2id are synchronous and slow, so they run on
//! tokio's blocking pool ([`run_blocking`], [`blocking`]), never on an async worker thread.
//! A key already in kms-core's verified-key cache needs neither, so the calls that have a
//! cached fast path try it inline first ([`cached_else_blocking`]).

use std::sync::atomic::{AtomicUsize, Ordering};

use kms_core::Kms;

use crate::http::error::ApiError;
use crate::http::middleware::timeout;

/// Answers from kms-core's cached fast path when it can, else runs the full call on the
/// blocking pool.
///
/// `cached` is one of `Kms::try_authenticate_cached`, `try_verify_cached` or
/// `try_verify_token_cached`: it runs here, on the async thread, and answers only from the
/// verified-key cache (`None`: it needs the store). `full` is the matching full call
/// (`authenticate`, `verify`, `verify_token`); it runs through [`run_blocking`] with its own
/// copy of `kms` and of `input`, which is only copied on that path, so a cached answer
/// allocates nothing.
pub async fn cached_else_blocking<I, T>(
    kms: &Kms,
    input: &I,
    cached: impl FnOnce(&Kms, &I) -> Option<kms_core::Result<T>>,
    full: impl FnOnce(&Kms, I::Owned) -> kms_core::Result<T> + Send + 'static,
) -> kms_core::Result<T>
where
    I: ToOwned + ?Sized,
    I::Owned: Send + 'static,
    T: Send + 'static,
{
    if let Some(answer) = cached(kms, input) {
        return answer;
    }
    let (kms, input) = (kms.clone(), input.to_owned());
    run_blocking(move || full(&kms, input)).await
}

/// Runs a synchronous kms call (store access, argon2id) on the blocking pool, so the
/// async executor keeps serving other requests. Errors become the API's error answers.
pub async fn blocking<T, F>(call: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> kms_core::Result<T> + Send + 'static,
{
    run_blocking(call).await.map_err(ApiError::from)
}

/// [`blocking`] with kms's own error. The call marks the request's store work as started
/// (see [`crate::http::middleware::timeout`]): once it runs, the request timeout waits for it
/// instead of answering `503` while it may still commit; if the request was already
/// answered `503`, the call does not run at all.
pub async fn run_blocking<T, F>(call: F) -> kms_core::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> kms_core::Result<T> + Send + 'static,
{
    let work = timeout::current_store_work();
    let load = PoolLoad::queued();
    // The request's span goes along, so the store calls and hashing inside are its
    // children in the logs and in traces.
    let span = tracing::Span::current();
    let task = tokio::task::spawn_blocking(move || {
        let _running = load.running();
        if work.as_deref().is_some_and(|w| !w.start()) {
            return Err(kms_core::Error::internal(
                "not run: the request timed out before it started",
            ));
        }
        span.in_scope(call)
    });
    match task.await {
        Ok(result) => result,
        Err(join_error) => {
            tracing::error!(error = %join_error, "a blocking kms call panicked or was cancelled");
            Err(kms_core::Error::internal("a blocking kms call failed"))
        }
    }
}

static QUEUED: AtomicUsize = AtomicUsize::new(0);
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Calls waiting for a thread of the blocking pool, and calls running on it.
pub fn pool_load() -> (usize, usize) {
    (
        QUEUED.load(Ordering::Relaxed),
        RUNNING.load(Ordering::Relaxed),
    )
}

/// One call's place in [`pool_load`]: queued from creation until [`PoolLoad::running`],
/// then running until that guard drops (a call dropped unrun leaves the queue too).
struct PoolLoad {
    queued: bool,
}

impl PoolLoad {
    fn queued() -> Self {
        QUEUED.fetch_add(1, Ordering::Relaxed);
        PoolLoad { queued: true }
    }

    fn running(mut self) -> Running {
        QUEUED.fetch_sub(1, Ordering::Relaxed);
        self.queued = false;
        RUNNING.fetch_add(1, Ordering::Relaxed);
        Running
    }
}

impl Drop for PoolLoad {
    fn drop(&mut self) {
        if self.queued {
            QUEUED.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use std::sync::Arc;

    use kms_core::Kms;

    use super::cached_else_blocking;

    fn kms() -> Kms {
        Kms::builder(Arc::new(kms_store::MemoryStore::new()))
            .hash_params(kms_core::dangerous::insecure_hash_params())
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_cached_answer_is_returned_without_the_full_call() {
        let answer = cached_else_blocking(
            &kms(),
            "kms_token",
            |_, _| Some(Ok("cached")),
            |_, _| panic!("the full call ran although the cache answered"),
        )
        .await;
        assert_eq!(answer.unwrap(), "cached");
    }

    #[tokio::test]
    async fn a_cache_miss_runs_the_full_call_on_the_blocking_pool_with_its_own_input() {
        let caller_thread = std::thread::current().id();
        let (len, thread) = cached_else_blocking(
            &kms(),
            "kms_token",
            |_, _| None,
            |_, token: String| Ok((token.len(), std::thread::current().id())),
        )
        .await
        .unwrap();
        assert_eq!(len, "kms_token".len());
        assert_ne!(
            thread, caller_thread,
            "the full call ran on the async thread"
        );
    }

    #[tokio::test]
    async fn an_error_from_either_path_is_returned_as_it_is() {
        let cached = cached_else_blocking(
            &kms(),
            "t",
            |_, _| Some(Err::<(), _>(kms_core::Error::internal("cached"))),
            |_, _| Ok(()),
        )
        .await;
        assert!(cached.unwrap_err().to_string().contains("cached"));
        let full = cached_else_blocking(
            &kms(),
            "t",
            |_, _| None,
            |_, _| Err::<(), _>(kms_core::Error::internal("full")),
        )
        .await;
        assert!(full.unwrap_err().to_string().contains("full"));
    }
}
