//! The server-wide rate limit per client address on management calls: a keyed
//! token bucket (`governor`); over it, `429 rate_limited` with `Retry-After`.
//!
//! Requests without a client address (served in-process, without a connection) are not
//! limited.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::RateLimitSettings;
use crate::http::error::ApiError;
use crate::http::middleware::client_addr::ClientAddr;
use crate::ops::metrics::Metrics;

/// Checks between two sweeps of addresses whose buckets are full again.
const SWEEP_EVERY: u64 = 4096;

/// The limiter and where its refusals are counted.
#[derive(Debug)]
pub struct ClientRateLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    checks: AtomicU64,
    metrics: Arc<Metrics>,
}

impl ClientRateLimit {
    /// A limiter allowing `settings.per_second` calls per second per address, with bursts of
    /// `settings.burst`.
    pub fn new(settings: RateLimitSettings, metrics: Arc<Metrics>) -> Self {
        let per_second = NonZeroU32::new(settings.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(settings.burst).unwrap_or(per_second);
        ClientRateLimit {
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
            metrics,
        }
    }

    /// `Err(seconds to wait)` when `ip` is over its limit.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // Forget addresses that are back to a full bucket, so memory stays bounded by
            // the recently active ones.
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// Middleware: refuses calls over the client address's rate with `429 rate_limited`.
pub async fn limit_per_client(
    State(limit): State<Arc<ClientRateLimit>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(ClientAddr(ip)) = request.extensions().get::<ClientAddr>().copied() {
        if let Err(secs) = limit.check(ip) {
            limit.metrics.record_refused("rate_limited");
            return ApiError::from(kms_core::Error::RateLimited {
                retry_after_secs: secs.max(1),
            })
            .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_bucket() {
        let limit = ClientRateLimit::new(
            RateLimitSettings {
                per_second: 1,
                burst: 2,
            },
            Arc::new(Metrics::new()),
        );
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limit.check(a).is_ok());
        assert!(limit.check(a).is_ok());
        let wait = limit.check(a).unwrap_err();
        assert!((1..=1).contains(&wait), "{wait}");
        assert!(limit.check(b).is_ok());
    }
}
