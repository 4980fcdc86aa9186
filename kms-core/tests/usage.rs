//! Usage counting through the public API (ADR 0015): verifications counted by hour and
//! code, flushed into the store, `last_used_at` written at most once a minute, access
//! tokens counted for their key, and nothing at all with counting off.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::Arc;

use kms_core::store::{Store, TokenStore};
use kms_core::{Kms, ManualClock, MasterKey, OsRandom, Timestamp, UsageQuery};
use kms_store::MemoryStore;

/// 2026-12-01T10:59:30Z: thirty seconds before an hour turns.
const NOW: i64 = 1_796_122_770;

struct Env {
    kms: Kms,
    clock: Arc<ManualClock>,
    store: Arc<MemoryStore>,
    app: String,
    token_id: String,
    token: String,
}

fn env(counting: bool) -> Env {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix(NOW)));
    let kms = Kms::builder(store.clone() as Arc<dyn Store>)
        .clock(clock.clone())
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .master_key(MasterKey::generate(&OsRandom).unwrap())
        .usage_counting(counting)
        .build()
        .unwrap();
    kms.initialize().unwrap();
    let op = kms.operator();
    let app = kms
        .create_app(
            &op,
            serde_json::from_value(serde_json::json!({"name": "a"})).unwrap(),
        )
        .unwrap();
    let token = kms
        .create_token(
            &op,
            &app.id,
            serde_json::from_value(serde_json::json!({"name": "t", "scopes": ["app.read"]}))
                .unwrap(),
        )
        .unwrap();
    Env {
        kms,
        clock,
        store,
        app: app.id,
        token_id: token.info.id,
        token: token.token,
    }
}

fn query(from: &str, to: &str) -> UsageQuery {
    UsageQuery {
        from: Some(from.to_owned()),
        to: Some(to.to_owned()),
        granularity: None,
    }
}

#[test]
fn verifications_are_filed_under_the_hour_they_happened_in() {
    let e = env(true);
    let op = e.kms.operator();
    let q = kms_core::PermissionQuery::parse("app.write").unwrap();
    for _ in 0..3 {
        assert!(e.kms.verify_token(&e.token, None, None).unwrap().is_valid());
    }
    e.clock.advance(60); // 11:00:30, the next hour
    assert!(!e
        .kms
        .verify_token(&e.token, Some(&q), None)
        .unwrap()
        .is_valid());
    let report = |kms: &Kms| {
        kms.app_usage(
            &op,
            &e.app,
            &query("2026-12-01T10:00:00Z", "2026-12-01T12:00:00Z"),
        )
        .unwrap()
    };
    assert_eq!(report(&e.kms).totals.total, 0, "nothing before the flush");
    let flushed = e.kms.flush_usage().unwrap();
    assert_eq!(flushed.verifications, 4);
    let r = report(&e.kms);
    assert_eq!(r.series.len(), 2);
    assert_eq!(r.series[0].by_code.get("VALID"), Some(&3));
    assert_eq!(
        r.series[1].by_code.get("INSUFFICIENT_PERMISSIONS"),
        Some(&1)
    );
    let by_token = e
        .kms
        .token_usage(
            &op,
            &e.token_id,
            &query("2026-12-01T10:00:00Z", "2026-12-01T12:00:00Z"),
        )
        .unwrap();
    assert_eq!(by_token.totals, r.totals);
    assert_eq!(e.kms.flush_usage().unwrap().verifications, 0, "drained");
}

#[test]
fn last_use_is_written_at_most_once_a_minute() {
    let e = env(true);
    let last = || {
        e.store
            .get_token(&e.token_id)
            .unwrap()
            .unwrap()
            .last_used_at
    };
    assert_eq!(last(), None);
    e.kms.verify_token(&e.token, None, None).unwrap();
    assert_eq!(e.kms.flush_usage().unwrap().tokens_touched, 1);
    let first = last().unwrap();
    assert_eq!(first.unix() % 60, 0, "to the minute");
    assert_eq!(first.unix(), NOW - NOW % 60);
    e.clock.advance(10); // the same minute
    e.kms.verify_token(&e.token, None, None).unwrap();
    assert_eq!(e.kms.flush_usage().unwrap().tokens_touched, 0);
    e.clock.advance(60);
    e.kms.verify_token(&e.token, None, None).unwrap();
    assert_eq!(e.kms.flush_usage().unwrap().tokens_touched, 1);
    assert_eq!(last().unwrap().unix(), first.unix() + 60);
    // The view carries it.
    let info = e.kms.get_token(&e.kms.operator(), &e.token_id).unwrap();
    assert_eq!(info.last_used_at, last());
}

#[test]
fn access_token_validations_count_for_their_key() {
    let e = env(true);
    let issued = e
        .kms
        .issue_access_token(&e.token, None, None, None)
        .unwrap()
        .unwrap();
    e.kms.flush_usage().unwrap();
    for _ in 0..2 {
        e.kms
            .validate_access_token(&issued.access_token, None)
            .unwrap();
    }
    assert_eq!(e.kms.flush_usage().unwrap().verifications, 2);
    let r = e
        .kms
        .token_usage(&e.kms.operator(), &e.token_id, &UsageQuery::default())
        .unwrap();
    assert_eq!(r.totals.by_code.get("VALID"), Some(&2));
}

#[test]
fn with_counting_off_nothing_is_counted_or_touched() {
    let e = env(false);
    for _ in 0..3 {
        e.kms.verify_token(&e.token, None, None).unwrap();
    }
    assert_eq!(
        e.kms.flush_usage().unwrap(),
        kms_core::UsageFlushed::default()
    );
    let r = e
        .kms
        .app_usage(&e.kms.operator(), &e.app, &UsageQuery::default())
        .unwrap();
    assert_eq!(r.totals.total, 0);
    assert_eq!(
        e.store
            .get_token(&e.token_id)
            .unwrap()
            .unwrap()
            .last_used_at,
        None
    );
}

#[test]
fn retention_deletes_old_buckets_once_and_audits_the_sweep() {
    let e = env(true);
    let op = e.kms.operator();
    e.kms.verify_token(&e.token, None, None).unwrap();
    e.kms.flush_usage().unwrap();
    let sweeps = || {
        e.kms
            .list_audit(
                &op,
                kms_core::AuditFilter {
                    action: Some("retention.sweep".to_owned()),
                    ..Default::default()
                },
                kms_core::PageRequest::default(),
            )
            .unwrap()
            .items
    };
    let day = 86_400;
    assert_eq!(e.kms.apply_usage_retention(400 * day).unwrap(), 0);
    assert!(sweeps().is_empty(), "nothing to delete, nothing written");
    e.clock.advance(401 * day);
    e.kms.verify_token(&e.token, None, None).unwrap();
    e.kms.flush_usage().unwrap();
    assert_eq!(e.kms.apply_usage_retention(400 * day).unwrap(), 1);
    let events = sweeps();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].target, "usage");
    assert_eq!(events[0].details["usage_buckets_deleted"], 1);
    assert_eq!(e.kms.apply_usage_retention(400 * day).unwrap(), 0);
    assert_eq!(sweeps().len(), 1);
    // The recent hour is kept.
    let r = e
        .kms
        .app_usage(&op, &e.app, &UsageQuery::default())
        .unwrap();
    assert_eq!(r.totals.total, 1);
}
