//! Writing and reading the audit log. Every management change is committed together with
//! its audit event in one store batch, so a change without its event cannot happen: when
//! the event cannot be written, the call fails and nothing changes.

use serde_json::Value;

use super::{Caller, Kms};
use crate::audit::{AuditEvent, AuditQuery, AuditVerification, ChainChecker, GENESIS_HASH};
use crate::error::{Error, Result};
use crate::model::{Page, PageRequest};
use crate::store::Mutation;

/// What an audit event records about a call.
pub(crate) struct Audit {
    pub(crate) action: &'static str,
    pub(crate) target: String,
    pub(crate) app_id: Option<String>,
    pub(crate) outcome: &'static str,
    pub(crate) details: Value,
}

impl Audit {
    /// A successful `action` on `target`.
    pub(crate) fn success(action: &'static str, target: impl Into<String>) -> Self {
        Audit {
            action,
            target: target.into(),
            app_id: None,
            outcome: "success",
            details: Value::Object(Default::default()),
        }
    }

    /// Attributes the event to an application.
    pub(crate) fn app(mut self, app_id: impl Into<String>) -> Self {
        self.app_id = Some(app_id.into());
        self
    }

    /// Adds facts (never secrets).
    pub(crate) fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Marks the event a failure (security events).
    pub(crate) fn failure(mut self) -> Self {
        self.outcome = "failure";
        self
    }
}

/// Filters of an audit listing as requested.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub struct AuditFilter {
    /// Only this action.
    #[serde(default)]
    pub action: Option<String>,
    /// Only this actor.
    #[serde(default)]
    pub actor: Option<String>,
    /// Only events at or after this RFC 3339 time.
    #[serde(default)]
    pub since: Option<String>,
}

impl Kms {
    /// Applies `batch` together with the audit event for it, atomically.
    pub(crate) fn commit(
        &self,
        caller: Option<&Caller>,
        audit: Audit,
        mut batch: Vec<Mutation>,
    ) -> Result<()> {
        let _guard = self
            .inner
            .audit_lock
            .lock()
            .map_err(|_| Error::internal("the audit lock is poisoned"))?;
        let last = self.inner.store.last_audit_event()?;
        let mut event = AuditEvent {
            seq: last.as_ref().map_or(1, |e| e.seq + 1),
            at: self.inner.clock.now(),
            actor: caller.map_or_else(|| "system".to_owned(), |c| c.actor().to_owned()),
            action: audit.action.to_owned(),
            target: audit.target,
            outcome: audit.outcome.to_owned(),
            ip: caller.and_then(|c| c.ip().map(|i| i.to_string())),
            request_id: caller.and_then(|c| c.request_id().map(str::to_owned)),
            app_id: audit.app_id,
            details: audit.details,
            prev_hash: last.map_or_else(|| GENESIS_HASH.to_owned(), |e| e.hash),
            hash: String::new(),
        };
        event.hash = event.compute_hash();
        batch.push(Mutation::AppendAudit(event));
        Ok(self.inner.store.apply(&batch)?)
    }

    /// Audit events, newest first (`audit.read`). Callers outside the system application
    /// see only their application's events. The cursor is the `seq` to continue below.
    pub fn list_audit(
        &self,
        caller: &Caller,
        filter: AuditFilter,
        page: PageRequest,
    ) -> Result<Page<AuditEvent>> {
        caller.require(&*self.snapshot()?, "audit.read")?;
        let limit = page.limit.unwrap_or(crate::model::DEFAULT_PAGE_LIMIT);
        if !(1..=crate::model::MAX_PAGE_LIMIT).contains(&limit) {
            return Err(Error::invalid(
                "limit",
                format!("must be from 1 to {}", crate::model::MAX_PAGE_LIMIT),
            ));
        }
        let before_seq = match page.cursor.as_deref() {
            None => None,
            Some(c) => Some(c.parse::<u64>().map_err(|_| {
                Error::invalid("cursor", "is not a cursor returned by this listing")
            })?),
        };
        let since = match filter.since.as_deref() {
            None => None,
            Some(s) => Some(
                crate::env::Timestamp::parse_rfc3339(s)
                    .map_err(|_| Error::invalid("since", "must be an RFC 3339 date-time"))?,
            ),
        };
        let query = AuditQuery {
            before_seq,
            action: filter.action,
            actor: filter.actor,
            since,
            app_id: (!caller.is_system()).then(|| caller.app_id().to_owned()),
            limit: limit as usize + 1,
        };
        let mut items = self.inner.store.list_audit(&query)?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|e| e.seq.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Checks the whole chain (`audit.read`; system callers only).
    pub fn verify_audit(&self, caller: &Caller) -> Result<AuditVerification> {
        caller.require_global(&*self.snapshot()?, "audit.read")?;
        let mut checker = ChainChecker::new();
        let mut after = 0;
        loop {
            let batch = self.inner.store.audit_after(after, 1000)?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            for e in &batch {
                if let Err(seq) = checker.check(e) {
                    self.emit(&crate::failure_gate::SecurityEvent::AuditChainBroken {
                        first_bad_seq: seq,
                    });
                    return Ok(AuditVerification::Broken {
                        ok: false,
                        first_bad_seq: seq,
                    });
                }
            }
        }
        Ok(AuditVerification::Intact {
            ok: true,
            events: checker.checked,
        })
    }
}
