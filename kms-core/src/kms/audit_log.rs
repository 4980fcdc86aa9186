//! Writing and reading the audit log. Every management change is committed together with
//! its audit event in one store batch, so a change without its event cannot happen: when
//! the event cannot be written, the call fails and nothing changes.

use serde_json::Value;

use super::{Caller, Kms};
use crate::audit::{
    AuditAnchor, AuditEvent, AuditQuery, AuditVerification, ChainChecker, AUDIT_ANCHOR_KEY,
};
use crate::error::{Error, Result};
use crate::page::{Page, PageRequest};
use crate::store::Mutation;

/// Events read per store call while verifying the chain.
const AUDIT_VERIFY_BATCH: usize = 1_000;
/// Most audit events one retention sweep prunes.
const RETENTION_AUDIT_BATCH: usize = 10_000;
/// Most long-expired tokens one retention sweep deletes.
const RETENTION_TOKEN_BATCH: usize = 1_000;
/// Most long-ended sessions one retention sweep deletes.
pub(crate) const RETENTION_SESSION_BATCH: usize = 1_000;

/// What an audit event records about a call.
pub(crate) struct Audit {
    pub(crate) action: &'static str,
    pub(crate) target: String,
    pub(crate) app_id: Option<String>,
    pub(crate) outcome: &'static str,
    pub(crate) details: Value,
    /// Who acted, when not the caller (an unauthenticated client is `anonymous`).
    pub(crate) actor: Option<&'static str>,
    /// The address the action came from, when not the caller's.
    pub(crate) ip: Option<std::net::IpAddr>,
    /// The data subject (a user id), when not the caller's own user (see
    /// [`crate::privacy`]).
    pub(crate) subject: Option<String>,
    /// Personal facts about the subject, sealed under their person key.
    pub(crate) personal: serde_json::Map<String, Value>,
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
            actor: None,
            ip: None,
            subject: None,
            personal: serde_json::Map::new(),
        }
    }

    /// The user this event is about: their personal facts (and the address given with
    /// [`Audit::ip`]) are sealed under their person key.
    pub(crate) fn subject(mut self, user_id: impl Into<String>) -> Self {
        self.subject = Some(user_id.into());
        self
    }

    /// Adds a personal fact about the subject (an email, a user agent), sealed under their
    /// person key; ignored without a subject.
    #[cfg_attr(
        not(feature = "sso"),
        allow(dead_code, reason = "logins carry the personal facts")
    )]
    pub(crate) fn personal(mut self, name: &str, value: Option<&str>) -> Self {
        if let Some(v) = value {
            self.personal.insert(name.to_owned(), Value::from(v));
        }
        self
    }

    /// Names the actor when there is no authenticated caller.
    pub(crate) fn actor(mut self, actor: &'static str) -> Self {
        self.actor = Some(actor);
        self
    }

    /// The address the action came from (the end user's, reported by a verifying service,
    /// or an unauthenticated client's).
    pub(crate) fn ip(mut self, ip: std::net::IpAddr) -> Self {
        self.ip = Some(ip);
        self
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
        batch: Vec<Mutation>,
    ) -> Result<()> {
        self.commit_unless(caller, audit, batch, || Ok(false))
            .map(|_| ())
    }

    /// [`commit`](Self::commit), unless `done` finds, under the audit lock, that the change
    /// was already made: an idempotent change (a revocation) writes its event once, even
    /// when two calls race. Returns whether it committed.
    pub(crate) fn commit_unless(
        &self,
        caller: Option<&Caller>,
        audit: Audit,
        batch: Vec<Mutation>,
        done: impl FnOnce() -> Result<bool>,
    ) -> Result<bool> {
        let _guard = self
            .inner
            .audit_lock
            .lock()
            .map_err(|_| Error::internal("the audit lock is poisoned"))?;
        if done()? {
            return Ok(false);
        }
        // The store places the event at the chain's head inside the batch's transaction
        // (Mutation::ChainAudit): sequence number, previous hash and hash are set there, so
        // several writers on one database extend one chain.
        let caller_user = caller.and_then(Caller::user_id);
        let subject = audit
            .subject
            .clone()
            .or_else(|| caller_user.map(str::to_owned));
        // The address is the subject's own when they are the caller, or when it was given
        // with the event about them (a login); an administrator's address is not theirs.
        let ip_is_personal =
            subject.is_some() && (audit.ip.is_some() || caller_user == subject.as_deref());
        let ip = audit
            .ip
            .or_else(|| caller.and_then(Caller::ip))
            .map(|i| i.to_string());
        let personal = crate::privacy::PersonalFields {
            ip: ip.clone().filter(|_| ip_is_personal),
            details: audit.personal,
        };
        let event = AuditEvent {
            seq: 0,
            at: self.inner.clock.now(),
            actor: match (caller, audit.actor) {
                (Some(c), _) => c.actor().to_owned(),
                (None, Some(actor)) => actor.to_owned(),
                (None, None) => "system".to_owned(),
            },
            action: audit.action.to_owned(),
            target: audit.target,
            outcome: audit.outcome.to_owned(),
            ip: ip.filter(|_| !ip_is_personal),
            request_id: caller.and_then(|c| c.request_id().map(str::to_owned)),
            app_id: audit.app_id,
            details: audit.details,
            prev_hash: String::new(),
            hash: String::new(),
            subject,
            sealed_personal: None,
            personal: None,
        };
        self.commit_event(batch, event, &personal)?;
        Ok(true)
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
        let (limit, before_seq) = seq_page(&page, crate::page::DEFAULT_PAGE_LIMIT, "listing")?;
        let since = match filter.since.as_deref() {
            None => None,
            Some(s) => Some(
                crate::clock::Timestamp::parse_rfc3339(s)
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
        let mut page = seq_page_of(self.inner.store.list_audit(&query)?, limit);
        self.open_personal_fields(&mut page.items)?;
        Ok(page)
    }

    /// Checks the whole chain (`audit.read`; system callers only).
    pub fn verify_audit(&self, caller: &Caller) -> Result<AuditVerification> {
        caller.require_global(&*self.snapshot()?, "audit.read")?;
        let (mut checker, mut after) = match self.inner.store.get_meta(AUDIT_ANCHOR_KEY)? {
            None => (ChainChecker::new(), 0),
            Some(anchor) => match AuditAnchor::from_meta_value(&anchor) {
                Some(a) => (ChainChecker::after_anchor(a.seq, a.hash), a.seq),
                None => {
                    return Ok(AuditVerification::Broken {
                        ok: false,
                        first_bad_seq: 1,
                    })
                }
            },
        };
        loop {
            let batch = self.inner.store.audit_after(after, AUDIT_VERIFY_BATCH)?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            for e in &batch {
                if let Err(seq) = checker.check(e) {
                    self.emit(&crate::security_event::SecurityEvent::AuditChainBroken {
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

    /// Retention: deletes audit events older than `audit_max_age_secs` (keeping the chain
    /// verifiable from an anchor) and tokens that expired more than
    /// `expired_token_max_age_secs` ago. A sweep that removes something is audited; one
    /// that removes nothing writes nothing. Servers call it periodically. Sessions that
    /// ended (revoked, expired or idle) more than `ended_session_max_age_secs` ago are
    /// deleted too.
    pub fn apply_retention(
        &self,
        audit_max_age_secs: Option<i64>,
        expired_token_max_age_secs: Option<i64>,
        ended_session_max_age_secs: Option<i64>,
    ) -> Result<RetentionReport> {
        let now = self.inner.clock.now();
        let mut report = RetentionReport::default();
        let mut batch = Vec::new();
        if let Some(age) = audit_max_age_secs {
            let cutoff = now.plus_secs(-age);
            let after = match self.inner.store.get_meta(AUDIT_ANCHOR_KEY)? {
                Some(a) => AuditAnchor::from_meta_value(&a).map_or(0, |a| a.seq),
                None => 0,
            };
            let old: Vec<AuditEvent> = self
                .inner
                .store
                .audit_after(after, RETENTION_AUDIT_BATCH)?
                .into_iter()
                .take_while(|e| e.at < cutoff)
                .collect();
            if let Some(last) = old.last() {
                report.audit_events_pruned = old.len() as u64;
                report.audit_anchor_seq = Some(last.seq);
                batch.push(Mutation::PruneAudit {
                    through_seq: last.seq,
                    anchor_hash: last.hash.clone(),
                });
            }
        }
        if let Some(age) = expired_token_max_age_secs {
            let expired = self
                .inner
                .store
                .expired_tokens(now.plus_secs(-age), RETENTION_TOKEN_BATCH)?;
            report.expired_tokens_deleted = expired.len() as u64;
            batch.extend(expired.into_iter().map(|t| Mutation::DeleteToken(t.id)));
        }
        if let Some(age) = ended_session_max_age_secs {
            let ended = self.ended_sessions(now, age)?;
            report.ended_sessions_deleted = ended.len() as u64;
            batch.extend(ended.into_iter().map(Mutation::DeleteSession));
        }
        if batch.is_empty() {
            return Ok(report);
        }
        let audit = Audit::success("retention.sweep", "audit").details(serde_json::json!({
            "audit_events_pruned": report.audit_events_pruned,
            "audit_anchor_seq": report.audit_anchor_seq,
            "expired_tokens_deleted": report.expired_tokens_deleted,
            "ended_sessions_deleted": report.ended_sessions_deleted,
        }));
        self.commit(None, audit, batch)?;
        Ok(report)
    }
}

/// The limit (1 to the page maximum, `default` when absent) and the `seq` cursor of a page
/// of audit events, newest first; `listing` names the call in a bad cursor's message.
pub(crate) fn seq_page(
    page: &PageRequest,
    default: u32,
    listing: &str,
) -> Result<(u32, Option<u64>)> {
    let limit = page.limit.unwrap_or(default);
    if !(1..=crate::page::MAX_PAGE_LIMIT).contains(&limit) {
        return Err(Error::invalid(
            "limit",
            format!("must be from 1 to {}", crate::page::MAX_PAGE_LIMIT),
        ));
    }
    let before_seq = match page.cursor.as_deref() {
        None => None,
        Some(c) => Some(c.parse::<u64>().map_err(|_| {
            Error::invalid(
                "cursor",
                format!("is not a cursor returned by this {listing}"),
            )
        })?),
    };
    Ok((limit, before_seq))
}

/// A page of `items` read with `limit + 1`: at most `limit`, and the cursor to go on below
/// the last when there were more.
pub(crate) fn seq_page_of(mut items: Vec<AuditEvent>, limit: u32) -> Page<AuditEvent> {
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|e| e.seq.to_string())
    } else {
        None
    };
    Page { items, next_cursor }
}

/// What a retention sweep removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetentionReport {
    /// Audit events deleted.
    pub audit_events_pruned: u64,
    /// The newest deleted event, now the anchor of the chain.
    pub audit_anchor_seq: Option<u64>,
    /// Long-expired tokens deleted (at most 1,000 a sweep).
    pub expired_tokens_deleted: u64,
    /// Sessions deleted that had ended longer ago than the session retention (at most
    /// 1,000 a sweep).
    pub ended_sessions_deleted: u64,
}
