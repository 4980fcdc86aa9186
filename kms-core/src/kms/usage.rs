//! Usage analytics: the flush of the in-memory counts, the usage reports of applications
//! and tokens, and the retention of usage buckets (ADR 0015).

use super::audit_log::Audit;
use super::{Caller, Kms};
use crate::error::Result;
use crate::usage::{UsageBatch, UsageQuery, UsageReport, UsageSubject, UsageWindow};

/// What one flush wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageFlushed {
    /// Verifications added to the store's buckets.
    pub verifications: u64,
    /// Bucket rows added to (one per application, token, hour and code).
    pub buckets: u64,
    /// Tokens whose `last_used_at` was raised.
    pub tokens_touched: u64,
}

impl Kms {
    /// Writes the verifications counted since the last flush, and keys' last uses, to the
    /// store in one transaction that adds to what is there (so nodes sharing a database
    /// sum). On a store error nothing is lost: the counts are kept for the next flush.
    /// Servers call it every few seconds and once more at shutdown. Blocks.
    pub fn flush_usage(&self) -> Result<UsageFlushed> {
        let Some(counters) = &self.inner.usage else {
            return Ok(UsageFlushed::default());
        };
        let batch: UsageBatch = counters.drain();
        if batch.is_empty() {
            return Ok(UsageFlushed::default());
        }
        let flushed = UsageFlushed {
            verifications: batch.verifications(),
            buckets: batch.counts.len() as u64,
            tokens_touched: batch.touches.len() as u64,
        };
        match self.inner.store.add_usage(&batch.counts, &batch.touches) {
            Ok(()) => Ok(flushed),
            Err(e) => {
                counters.restore(batch);
                Err(e.into())
            }
        }
    }

    /// The usage report of an application (`app.read`): its credentials' verifications in
    /// the period, by bucket and outcome code, the totals, the trend against the period
    /// before, and the cost when the application has a usage price. Other tenants'
    /// applications are `NotFound`.
    pub fn app_usage(
        &self,
        caller: &Caller,
        app_id: &str,
        query: &UsageQuery,
    ) -> Result<UsageReport> {
        caller.require(&*self.snapshot()?, "app.read")?;
        let window = UsageWindow::parse(query, self.inner.clock.now())?;
        let app = self.visible_app(caller, app_id)?;
        self.report(
            UsageSubject::App(&app.id),
            &window,
            app.usage_price.as_ref(),
        )
    }

    /// The usage report of one API key (`token.read`), as [`app_usage`](Self::app_usage)
    /// gives it, without a cost. Other tenants' tokens are `NotFound`.
    pub fn token_usage(
        &self,
        caller: &Caller,
        token_id: &str,
        query: &UsageQuery,
    ) -> Result<UsageReport> {
        caller.require(&*self.snapshot()?, "token.read")?;
        let window = UsageWindow::parse(query, self.inner.clock.now())?;
        let token = self.visible_token(caller, token_id)?;
        self.report(UsageSubject::Token(&token.id), &window, None)
    }

    /// Counts one verification with `code` of `token_id` (of `app_id`) outside the
    /// pipeline (an access token validated in process): the handle is looked up by id,
    /// which takes a lock, against a JWT validation's tens of microseconds.
    pub(crate) fn count_usage(&self, app_id: &str, token_id: &str, code: crate::kms::VerifyCode) {
        if let Some(counters) = &self.inner.usage {
            let now = self.inner.clock.now();
            counters.handle(app_id, token_id).record(code, now, true);
        }
    }

    fn report(
        &self,
        subject: UsageSubject<'_>,
        window: &UsageWindow,
        price: Option<&crate::usage::UsagePrice>,
    ) -> Result<UsageReport> {
        // One read covers the period and the one before it (the trend); the report files
        // each row in its own window.
        let before = window.previous();
        let rows = self.inner.store.usage(subject, before.from, window.to)?;
        Ok(UsageReport::build(window, &rows, &rows, price))
    }

    /// Retention of usage: deletes the buckets of hours that started more than
    /// `max_age_secs` ago, audited as a `retention.sweep` of `usage` with the number
    /// deleted; a sweep that finds nothing writes nothing. Returns how many were deleted.
    pub fn apply_usage_retention(&self, max_age_secs: i64) -> Result<u64> {
        let before = self.inner.clock.now().plus_secs(-max_age_secs);
        let old = self.inner.store.usage_buckets_before(before)?;
        if old == 0 {
            return Ok(0);
        }
        let audit = Audit::success("retention.sweep", "usage")
            .actor("system")
            .details(serde_json::json!({
                "usage_buckets_deleted": old,
                "before": before,
            }));
        self.commit(
            None,
            audit,
            vec![crate::store::Mutation::PurgeUsage { before }],
        )?;
        Ok(old)
    }
}
