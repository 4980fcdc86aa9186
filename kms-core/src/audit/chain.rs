//! The audit chain: each event's hash covers its predecessor's, so that editing or
//! deleting any stored event is detected.
//!
//! `hash = SHA-256(prev_hash || canonical JSON of the event's other fields)`; the first
//! event's `prev_hash` is 64 zeros. Sequence numbers are contiguous, so deleting an event
//! leaves a gap. Deleting the newest events (truncation) leaves a valid shorter chain: a
//! monitor that remembers the event count from `verify` (or an external anchor) sees it.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::audit::AuditEvent;

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl AuditEvent {
    /// The hash this event should have, given its fields and `prev_hash`. An event with a
    /// data subject or sealed personal fields hashes them too, appended, in their stored
    /// (sealed) form; an event without either hashes exactly as before they existed, so
    /// older chains still verify.
    pub fn compute_hash(&self) -> String {
        let mut canonical = serde_json::json!([
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
        if self.subject.is_some() || self.sealed_personal.is_some() {
            if let serde_json::Value::Array(fields) = &mut canonical {
                fields.push(serde_json::json!(self.subject));
                fields.push(serde_json::json!(self.sealed_personal));
            }
        }
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(canonical.to_string().as_bytes());
        crate::hex::encode(&h.finalize())
    }
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
    use crate::clock::Timestamp;
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
                    subject: None,
                    sealed_personal: None,
                    personal: None,
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

    /// The hash of an event without a subject, as every build before data subjects
    /// computed it: existing databases' chains keep verifying.
    #[test]
    fn events_without_a_subject_hash_exactly_as_before() {
        for e in chain(5) {
            let old = serde_json::json!([
                e.seq,
                e.at.unix(),
                e.actor,
                e.action,
                e.target,
                e.outcome,
                e.ip,
                e.request_id,
                e.app_id,
                e.details,
            ]);
            let mut h = Sha256::new();
            h.update(e.prev_hash.as_bytes());
            h.update(old.to_string().as_bytes());
            assert_eq!(e.hash, crate::hex::encode(&h.finalize()));
        }
        // A fixed event, hashed by the build before data subjects existed.
        let e = &chain(1)[0];
        assert_eq!(
            e.hash,
            "083021c4a9b774a1384383e5291fe90f1e062357d585bb733f1e68585f1a9474"
        );
    }

    /// A chain whose events carry a subject and sealed personal fields.
    fn personal_chain(n: u64) -> Vec<AuditEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let mut e = chain(1).remove(0);
                e.seq = seq;
                e.ip = None;
                e.subject = Some(format!("usr_{seq}"));
                e.sealed_personal = Some(format!("c2VhbGVk{seq}"));
                e.prev_hash = prev.clone();
                e.hash = e.compute_hash();
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    #[test]
    fn the_subject_and_sealed_personal_fields_are_hashed() {
        let events = personal_chain(4);
        assert_eq!(
            verify_chain(&events),
            AuditVerification::Intact {
                ok: true,
                events: 4
            }
        );
        for i in 0..events.len() {
            let mut edited = events.clone();
            edited[i].sealed_personal = Some("dGFtcGVyZWQ=".into());
            assert_eq!(
                verify_chain(&edited),
                AuditVerification::Broken {
                    ok: false,
                    first_bad_seq: edited[i].seq
                }
            );
            let mut edited = events.clone();
            edited[i].subject = Some("usr_other".into());
            assert!(matches!(
                verify_chain(&edited),
                AuditVerification::Broken { .. }
            ));
            let mut stripped = events.clone();
            stripped[i].subject = None;
            stripped[i].sealed_personal = None;
            assert!(matches!(
                verify_chain(&stripped),
                AuditVerification::Broken { .. }
            ));
        }
        // The opened view (`personal`) is not part of the stored form.
        let mut viewed = events.clone();
        viewed[0].personal = Some(crate::privacy::PersonalStatus::Erased);
        assert_eq!(viewed[0].compute_hash(), events[0].hash);
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

    /// The contents of one event, chained by [`chain_of`].
    type Contents = (
        String,
        String,
        String,
        bool,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
    );

    fn contents() -> impl Strategy<Value = Contents> {
        (
            "[a-z_]{1,8}",
            "[a-z.]{1,12}",
            ".{0,8}",
            any::<bool>(),
            proptest::option::of("[0-9.:]{1,15}"),
            proptest::option::of("[a-z0-9-]{1,8}"),
            proptest::option::of("app_[a-z0-9]{1,4}"),
            ".{0,8}",
        )
    }

    /// A valid chain of these contents, continuing from `seq` and `prev`.
    fn chain_of(contents: &[Contents], first_seq: u64, prev: &str) -> Vec<AuditEvent> {
        let mut prev = prev.to_owned();
        contents
            .iter()
            .zip(first_seq..)
            .map(|(c, seq)| {
                let mut e = AuditEvent {
                    seq,
                    at: Timestamp::from_unix(1_700_000_000 + seq as i64),
                    actor: c.0.clone(),
                    action: c.1.clone(),
                    target: c.2.clone(),
                    outcome: if c.3 { "success" } else { "failure" }.into(),
                    ip: c.4.clone(),
                    request_id: c.5.clone(),
                    app_id: c.6.clone(),
                    details: serde_json::json!({ "note": c.7 }),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                    subject: None,
                    sealed_personal: None,
                    personal: None,
                };
                e.hash = e.compute_hash();
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    /// A different value for one field of an event.
    #[derive(Debug, Clone)]
    enum Edit {
        Seq(u64),
        At(i64),
        Actor(String),
        Action(String),
        Target(String),
        Outcome,
        Ip(Option<String>),
        RequestId(Option<String>),
        AppId(Option<String>),
        Details(String),
        PrevHash(String),
        Hash(String),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let text = || ".{0,10}";
        prop_oneof![
            any::<u64>().prop_map(Edit::Seq),
            any::<i64>().prop_map(Edit::At),
            text().prop_map(Edit::Actor),
            text().prop_map(Edit::Action),
            text().prop_map(Edit::Target),
            Just(Edit::Outcome),
            proptest::option::of(text()).prop_map(Edit::Ip),
            proptest::option::of(text()).prop_map(Edit::RequestId),
            proptest::option::of(text()).prop_map(Edit::AppId),
            text().prop_map(Edit::Details),
            "[0-9a-f]{0,64}".prop_map(Edit::PrevHash),
            "[0-9a-f]{0,64}".prop_map(Edit::Hash),
        ]
    }

    /// Changes a string to `new`, or to something else when `new` is what it was.
    fn differ(old: &mut String, new: &str) {
        *old = if new == old.as_str() {
            format!("{new}x")
        } else {
            new.to_owned()
        };
    }

    fn differ_opt(old: &mut Option<String>, new: &Option<String>) {
        *old = match (old.as_ref(), new) {
            (o, n) if o != n.as_ref() => n.clone(),
            (Some(_), _) => None,
            (None, _) => Some(String::new()),
        };
    }

    /// Applies `edit` to `e`; the event is certainly different afterwards.
    fn apply(e: &mut AuditEvent, edit: &Edit) {
        let before = e.clone();
        match edit {
            Edit::Seq(s) => e.seq = if *s == e.seq { s.wrapping_add(1) } else { *s },
            Edit::At(t) => {
                let t = if *t == e.at.unix() {
                    t.wrapping_add(1)
                } else {
                    *t
                };
                e.at = Timestamp::from_unix(t);
            }
            Edit::Actor(v) => differ(&mut e.actor, v),
            Edit::Action(v) => differ(&mut e.action, v),
            Edit::Target(v) => differ(&mut e.target, v),
            Edit::Outcome => {
                e.outcome = if e.outcome == "success" {
                    "failure"
                } else {
                    "success"
                }
                .into()
            }
            Edit::Ip(v) => differ_opt(&mut e.ip, v),
            Edit::RequestId(v) => differ_opt(&mut e.request_id, v),
            Edit::AppId(v) => differ_opt(&mut e.app_id, v),
            Edit::Details(v) => {
                let new = serde_json::json!({ "note": v });
                e.details = if new == e.details {
                    serde_json::json!({ "note": format!("{v}x") })
                } else {
                    new
                };
            }
            Edit::PrevHash(v) => differ(&mut e.prev_hash, v),
            Edit::Hash(v) => differ(&mut e.hash, v),
        }
        assert_ne!(&before, e);
    }

    fn check_all(checker: &mut ChainChecker, events: &[AuditEvent]) -> Result<u64, u64> {
        for e in events {
            checker.check(e)?;
        }
        Ok(checker.checked)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any change to any one field of any one event is detected, at that event (a
        /// changed `seq` may be reported at the lower of its old and new values).
        #[test]
        fn an_edit_of_any_field_of_any_event_is_detected(
            cs in proptest::collection::vec(contents(), 1..16),
            pick in any::<proptest::sample::Index>(),
            edit in edit(),
        ) {
            let mut events = chain_of(&cs, 1, GENESIS_HASH);
            prop_assert_eq!(
                verify_chain(&events),
                AuditVerification::Intact { ok: true, events: events.len() as u64 }
            );
            let i = pick.index(events.len());
            let seq = events[i].seq;
            apply(&mut events[i], &edit);
            match verify_chain(&events) {
                AuditVerification::Broken { ok: false, first_bad_seq } => match edit {
                    Edit::Seq(_) => prop_assert!(first_bad_seq <= seq, "{} > {}", first_bad_seq, seq),
                    _ => prop_assert_eq!(first_bad_seq, seq),
                },
                other => prop_assert!(false, "{:?} of event {} not detected: {:?}", edit, seq, other),
            }
        }

        /// An edit that also recomputes the event's own hash is detected at the next event
        /// (its `prev_hash` no longer matches). On the newest event it is not: the hash is
        /// unkeyed, so rewriting the head goes unseen without an anchor recorded elsewhere
        /// (the documented limit, as for truncation).
        #[test]
        fn an_edit_with_a_recomputed_hash_is_detected_at_the_next_event(
            cs in proptest::collection::vec(contents(), 1..16),
            pick in any::<proptest::sample::Index>(),
            edit in edit().prop_filter("a content field", |e| !matches!(e, Edit::Seq(_) | Edit::PrevHash(_) | Edit::Hash(_))),
        ) {
            let mut events = chain_of(&cs, 1, GENESIS_HASH);
            let i = pick.index(events.len());
            apply(&mut events[i], &edit);
            events[i].hash = events[i].compute_hash();
            let n = events.len() as u64;
            if i + 1 < events.len() {
                prop_assert_eq!(
                    verify_chain(&events),
                    AuditVerification::Broken { ok: false, first_bad_seq: events[i + 1].seq }
                );
            } else {
                prop_assert_eq!(verify_chain(&events), AuditVerification::Intact { ok: true, events: n });
            }
        }

        /// Deleting any one event is detected at its `seq`, except the newest: deleting it
        /// leaves a valid chain one event shorter, which only the count (or an anchor
        /// recorded elsewhere) reveals — the documented limit, asserted here as such.
        #[test]
        fn deleting_any_one_event_is_detected_but_the_newest_shows_only_in_the_count(
            cs in proptest::collection::vec(contents(), 1..16),
            pick in any::<proptest::sample::Index>(),
        ) {
            let mut events = chain_of(&cs, 1, GENESIS_HASH);
            let n = events.len() as u64;
            let i = pick.index(events.len());
            let seq = events.remove(i).seq;
            if seq < n {
                prop_assert_eq!(verify_chain(&events), AuditVerification::Broken { ok: false, first_bad_seq: seq });
            } else {
                prop_assert_eq!(verify_chain(&events), AuditVerification::Intact { ok: true, events: n - 1 });
            }
        }

        /// The same after retention: checking from an anchor `<seq>:<hash>`, any edit or
        /// deletion after it (the first event after the anchor included) is detected, and
        /// so is a wrong anchor.
        #[test]
        fn after_an_anchor_edits_and_deletions_are_detected(
            pruned in proptest::collection::vec(contents(), 1..6),
            kept in proptest::collection::vec(contents(), 2..10),
            pick in any::<proptest::sample::Index>(),
            edit in edit(),
        ) {
            let old = chain_of(&pruned, 1, GENESIS_HASH);
            let anchor = old.last().unwrap().clone();
            let events = chain_of(&kept, anchor.seq + 1, &anchor.hash);
            let fresh = || ChainChecker::after_anchor(anchor.seq, anchor.hash.clone());
            prop_assert_eq!(check_all(&mut fresh(), &events), Ok(events.len() as u64));
            // Checked from the start, the kept events alone do not verify.
            let from_start = verify_chain(&events);
            prop_assert!(
                matches!(from_start, AuditVerification::Broken { .. }),
                "{:?}",
                from_start
            );

            let i = pick.index(events.len());
            let seq = events[i].seq;
            let mut edited = events.clone();
            apply(&mut edited[i], &edit);
            let got = check_all(&mut fresh(), &edited);
            match edit {
                Edit::Seq(_) => prop_assert!(matches!(got, Err(s) if s <= seq), "{:?}", got),
                _ => prop_assert_eq!(got, Err(seq)),
            }

            let j = pick.index(events.len() - 1);
            let mut deleted = events.clone();
            let seq = deleted.remove(j).seq;
            prop_assert_eq!(check_all(&mut fresh(), &deleted), Err(seq));

            let mut wrong = ChainChecker::after_anchor(anchor.seq, old[0].hash.clone());
            if old.len() > 1 {
                prop_assert_eq!(check_all(&mut wrong, &events), Err(anchor.seq + 1));
            }
            let mut wrong = ChainChecker::after_anchor(anchor.seq + 1, anchor.hash.clone());
            prop_assert_eq!(check_all(&mut wrong, &events), Err(anchor.seq + 1));
        }
    }
}
