//! The HTTP handlers, one module per resource. Handlers are thin: extract, call the
//! [`Kms`] facade off the async executor, answer with the right status.

pub mod apps;
pub mod audit;
pub mod docs;
pub mod health;
pub mod keys;
pub mod oauth;
pub mod permissions;
pub mod roles;
pub mod tokens;
pub mod verify;

use std::sync::Arc;

use axum::extract::FromRef;
use kms_core::Kms;

use crate::http::error::ApiError;
use crate::http::middleware::timeout;
use crate::ops::metrics::Metrics;

/// What every handler may use.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The service.
    pub kms: Kms,
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
}

impl FromRef<AppState> for Kms {
    fn from_ref(state: &AppState) -> Kms {
        state.kms.clone()
    }
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Arc<Metrics> {
        state.metrics.clone()
    }
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
    let task = tokio::task::spawn_blocking(move || {
        if work.as_deref().is_some_and(|w| !w.start()) {
            return Err(kms_core::Error::internal(
                "not run: the request timed out before it started",
            ));
        }
        call()
    });
    match task.await {
        Ok(result) => result,
        Err(join_error) => {
            tracing::error!(error = %join_error, "a blocking kms call panicked or was cancelled");
            Err(kms_core::Error::internal("a blocking kms call failed"))
        }
    }
}
