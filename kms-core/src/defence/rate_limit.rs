//! Per-token rate limits with `governor`: one keyed limiter per distinct quota, keyed by
//! token id, so tokens with the same limit share a limiter and memory grows with the number
//! of tokens actually limited.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::api_key::RateLimit;

#[derive(Default)]
pub(crate) struct TokenRateLimits {
    limiters: Mutex<HashMap<RateLimit, Arc<DefaultKeyedRateLimiter<String>>>>,
}

impl TokenRateLimits {
    fn limiter(&self, limit: RateLimit) -> Option<Arc<DefaultKeyedRateLimiter<String>>> {
        let mut map = self.limiters.lock().ok()?;
        if let Some(l) = map.get(&limit) {
            return Some(Arc::clone(l));
        }
        let burst = NonZeroU32::new(limit.limit)?;
        // `limit` cells every `per_seconds`, all of them available at once.
        let period = Duration::from_secs(u64::from(limit.per_seconds)) / limit.limit;
        let quota = Quota::with_period(period)?.allow_burst(burst);
        let l = Arc::new(RateLimiter::keyed(quota));
        map.insert(limit, Arc::clone(&l));
        Some(l)
    }

    /// Takes one cell for `token_id`; `Err(seconds)` says how long until the next is free.
    /// A limit that cannot be built (never the case for validated limits) refuses.
    pub(crate) fn check(&self, token_id: &str, limit: RateLimit) -> Result<(), u64> {
        let Some(l) = self.limiter(limit) else {
            return Err(1);
        };
        l.check_key(&token_id.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            wait.as_secs().max(1)
        })
    }
}
