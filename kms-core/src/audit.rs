//! The audit log: one event per management call and security event, hash-chained so that
//! editing or deleting any stored event is detected.
//!
//! `hash = SHA-256(prev_hash || canonical JSON of the event's other fields)`; the first
//! event's `prev_hash` is 64 zeros. Sequence numbers are contiguous, so deleting an event
//! leaves a gap. Deleting the newest events (truncation) leaves a valid shorter chain: a
//! monitor that remembers the event count from `verify` (or an external anchor) sees it.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::env::Timestamp;

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit event. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// Position in the chain, from 1, contiguous.
    pub seq: u64,
    /// When it happened.
    pub at: Timestamp,
    /// Who: a token id, or `operator` for local administration, or `system`.
    pub actor: String,
    /// What: `token.create`, `role.update`, `refresh.reuse`, ...
    pub action: String,
    /// The object acted on (an id, scope or role name).
    pub target: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// The client address, when known.
    pub ip: Option<String>,
    /// The request id, when known.
    pub request_id: Option<String>,
    /// The application the object belongs to, when it belongs to one.
    pub app_id: Option<String>,
    /// Further facts (never secrets).
    pub details: serde_json::Value,
    /// The previous event's hash.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

impl AuditEvent {
    /// The hash this event should have, given its fields and `prev_hash`.
    pub fn compute_hash(&self) -> String {
        let canonical = serde_json::json!([
            self.seq,
            self.at.unix(),
            self.actor,
            self.action,
            self.target,
            self.outcome,
            self.ip,
            self.request_id,
            self.app_id,
            self.details,
        ]);
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(canonical.to_string().as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Filters for listing audit events, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only events with `seq` below this (the cursor).
    pub before_seq: Option<u64>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only events at or after this time.
    pub since: Option<Timestamp>,
    /// Only events of this application.
    pub app_id: Option<String>,
    /// At most this many.
    pub limit: usize,
}

/// The result of checking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AuditVerification {
    /// Every event links to its predecessor and hashes correctly.
    Intact {
        /// Always true.
        ok: bool,
        /// Number of events checked.
        events: u64,
    },
    /// The chain was altered at or just before `first_bad_seq`.
    Broken {
        /// Always false.
        ok: bool,
        /// The first event that does not check out.
        first_bad_seq: u64,
    },
}

/// Incremental chain checker over events in ascending order.
#[derive(Debug)]
pub(crate) struct ChainChecker {
    expected_seq: u64,
    prev_hash: String,
    pub(crate) checked: u64,
}

impl ChainChecker {
    pub(crate) fn new() -> Self {
        ChainChecker {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            checked: 0,
        }
    }

    /// A checker that continues after a pruned prefix whose newest event was `seq` with
    /// `hash`.
    pub(crate) fn after_anchor(seq: u64, hash: String) -> Self {
        ChainChecker {
            expected_seq: seq + 1,
            prev_hash: hash,
            checked: 0,
        }
    }

    /// Checks the next event; `Err(seq)` names the first bad one.
    pub(crate) fn check(&mut self, e: &AuditEvent) -> Result<(), u64> {
        if e.seq != self.expected_seq {
            return Err(self.expected_seq.min(e.seq));
        }
        if e.prev_hash != self.prev_hash || e.compute_hash() != e.hash {
            return Err(e.seq);
        }
        self.expected_seq += 1;
        self.prev_hash = e.hash.clone();
        self.checked += 1;
        Ok(())
    }
}

/// Checks a whole chain in memory (for tests and small logs).
pub fn verify_chain(events: &[AuditEvent]) -> AuditVerification {
    let mut c = ChainChecker::new();
    for e in events {
        if let Err(seq) = c.check(e) {
            return AuditVerification::Broken {
                ok: false,
                first_bad_seq: seq,
            };
        }
    }
    AuditVerification::Intact {
        ok: true,
        events: c.checked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chain(n: u64) -> Vec<AuditEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let mut e = AuditEvent {
                    seq,
                    at: Timestamp::from_unix(1_700_000_000 + seq as i64),
                    actor: format!("tok_{seq}"),
                    action: "token.create".into(),
                    target: format!("tok_x{seq}"),
                    outcome: "success".into(),
                    ip: Some("127.0.0.1".into()),
                    request_id: None,
                    app_id: None,
                    details: serde_json::json!({"n": seq}),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                e.hash = e.compute_hash();
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(
            verify_chain(&chain(5)),
            AuditVerification::Intact {
                ok: true,
                events: 5
            }
        );
    }

    proptest! {
        #[test]
        fn any_single_edit_is_detected(n in 1u64..20, pick in 0usize..20, field in 0usize..5) {
            let mut events = chain(n);
            let i = pick % events.len();
            match field {
                0 => events[i].actor.push('x'),
                1 => events[i].action = "token.delete".into(),
                2 => events[i].details = serde_json::json!({"n": 0}),
                3 => events[i].at = Timestamp::from_unix(1),
                _ => events[i].outcome = "failure".into(),
            }
            prop_assert_eq!(verify_chain(&events), AuditVerification::Broken { ok: false, first_bad_seq: events[i].seq });
        }

        #[test]
        fn any_deletion_but_the_last_is_detected(n in 2u64..20, pick in 0usize..19) {
            let mut events = chain(n);
            let i = pick % (events.len() - 1);
            let seq = events[i].seq;
            events.remove(i);
            prop_assert_eq!(verify_chain(&events), AuditVerification::Broken { ok: false, first_bad_seq: seq });
        }
    }
}
