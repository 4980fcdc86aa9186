//! The compliance report and capacity statistics through the public API, on the memory
//! store with a manual clock (so keys and users can age by months in a test).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::Arc;

use kms_core::store::{Mutation, Store, TokenStore, UserRecord, UserStatus};
use kms_core::{
    Caller, ComplianceReport, ComplianceSettings, ErrorCode, FindingStatus, Kms, ManualClock,
    NewApp, NewToken, Timestamp,
};
use kms_store::MemoryStore;

const T0: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

struct Env {
    kms: Kms,
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
    root: Caller,
    root_id: String,
}

fn env() -> Env {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix(T0)));
    let kms = Kms::builder(store.clone() as Arc<dyn Store>)
        .clock(clock.clone())
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .build()
        .unwrap();
    let created = kms.initialize().unwrap();
    let root = kms.authenticate(&created.token, None).unwrap();
    Env {
        kms,
        store,
        clock,
        root,
        root_id: created.info.id,
    }
}

fn token(e: &Env, app: &str, name: &str, scopes: &[&str], expires_in: Option<i64>) -> String {
    e.kms
        .create_token(
            &e.root,
            app,
            NewToken {
                name: name.to_owned(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                expires_in,
                ..Default::default()
            },
        )
        .unwrap()
        .info
        .id
}

fn user(id: &str, app: &str, status: UserStatus, created: i64, login: Option<i64>) -> Mutation {
    Mutation::PutUser(UserRecord {
        id: id.to_owned(),
        app_id: app.to_owned(),
        email: Some(format!("{id}@example.com")),
        name: None,
        status,
        roles: Vec::new(),
        mapped_roles: Vec::new(),
        grants: Vec::new(),
        identities: Vec::new(),
        created_at: Timestamp::from_unix(created),
        last_login_at: login.map(Timestamp::from_unix),
    })
}

fn items(report: &ComplianceReport, id: &str) -> Vec<String> {
    let mut v = report.finding(id).unwrap().items.clone();
    v.sort();
    v
}

#[test]
fn months_later_old_unused_keys_and_idle_users_are_findings_and_expired_keys_are_not() {
    let e = env();
    let app = e
        .kms
        .create_app(
            &e.root,
            NewApp {
                name: "billing".to_owned(),
                ..Default::default()
            },
        )
        .unwrap()
        .id;
    let forever = token(&e, &app, "forever", &["app.read"], None);
    let _short = token(&e, &app, "short", &["admin"], Some(10 * DAY));
    e.store
        .apply(&[
            user(
                "usr_idle",
                &app,
                UserStatus::Active,
                T0 - 200 * DAY,
                Some(T0 - 100 * DAY),
            ),
            user(
                "usr_new",
                &app,
                UserStatus::Active,
                T0 - 200 * DAY,
                Some(T0 + 99 * DAY),
            ),
            user("usr_never", &app, UserStatus::Active, T0 - 200 * DAY, None),
            user("usr_off", &app, UserStatus::Disabled, T0 - 200 * DAY, None),
        ])
        .unwrap();

    let fresh = e
        .kms
        .compliance_report(&e.root, &ComplianceSettings::default())
        .unwrap();
    assert_eq!(fresh.finding("tokens_unused_90d").unwrap().count, 0);
    assert_eq!(
        items(&fresh, "admin_tokens").len(),
        2,
        "the root and the short-lived admin key"
    );

    e.clock.advance(100 * DAY);
    let settings = ComplianceSettings {
        max_token_age_secs: 50 * DAY,
        ..ComplianceSettings::default()
    };
    let report = e.kms.compliance_report(&e.root, &settings).unwrap();
    let mut both = vec![e.root_id.clone(), forever.clone()];
    both.sort();
    // The short-lived admin key expired: it is in no finding.
    assert_eq!(items(&report, "tokens_without_expiry"), both);
    assert_eq!(items(&report, "tokens_over_max_age"), both);
    assert_eq!(items(&report, "tokens_unused_90d"), both);
    assert_eq!(items(&report, "admin_tokens"), vec![e.root_id.clone()]);
    let admin = report.finding("admin_tokens").unwrap();
    assert_eq!((admin.status, admin.limit), (FindingStatus::Pass, 1));
    assert_eq!(
        items(&report, "users_without_login_90d"),
        vec!["usr_idle".to_owned(), "usr_never".to_owned()]
    );
    // No master key: no signing key, nothing to age.
    let signing = report.finding("signing_key_age").unwrap();
    assert_eq!((signing.count, signing.status), (0, FindingStatus::Pass));
    let master = report.finding("master_key_age").unwrap();
    assert_eq!(master.details["age_days"], 100);
    assert_eq!(master.status, FindingStatus::Pass);
    let chain = report.finding("audit_chain").unwrap();
    assert_eq!(chain.status, FindingStatus::Pass);
    assert_eq!(chain.details["ok"], true);
    // A key used yesterday is not unused, however old it is.
    let mut used = e.store.get_token(&forever).unwrap().unwrap();
    used.last_used_at = Some(Timestamp::from_unix(T0 + 99 * DAY));
    e.store.apply(&[Mutation::UpdateToken(used)]).unwrap();
    let report = e.kms.compliance_report(&e.root, &settings).unwrap();
    assert_eq!(items(&report, "tokens_unused_90d"), vec![e.root_id.clone()]);
    assert_eq!(items(&report, "tokens_over_max_age"), both);

    // Retention kept forever passes; a short one fails.
    assert_eq!(
        report.finding("audit_retention").unwrap().status,
        FindingStatus::Pass
    );
    let short = ComplianceSettings {
        audit_retention_secs: Some(30 * DAY),
        ..ComplianceSettings::default()
    };
    let report = e.kms.compliance_report(&e.root, &short).unwrap();
    let retention = report.finding("audit_retention").unwrap();
    assert_eq!(retention.status, FindingStatus::Fail);
    assert_eq!(retention.details["audit_retention_days"], 30);
    assert_eq!(report.status, FindingStatus::Fail);
    assert_eq!(
        report.summary.passed + report.summary.failed,
        report.findings.len() as u64
    );
    assert_eq!(
        report
            .findings
            .iter()
            .map(|f| f.id.as_str())
            .collect::<Vec<_>>(),
        kms_core::FINDING_IDS.to_vec()
    );
}

#[test]
fn thresholds_turn_a_failure_into_a_pass_and_items_are_bounded() {
    let e = env();
    let many = kms_core::MAX_FINDING_ITEMS + 5;
    e.store
        .apply(
            &(0..many)
                .map(|i| {
                    user(
                        &format!("usr_{i:05}"),
                        "app_system",
                        UserStatus::Active,
                        T0 - 200 * DAY,
                        None,
                    )
                })
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let strict = e
        .kms
        .compliance_report(&e.root, &ComplianceSettings::default())
        .unwrap();
    let idle = strict.finding("users_without_login_90d").unwrap();
    assert_eq!(idle.count, many as u64);
    assert_eq!(idle.items.len(), kms_core::MAX_FINDING_ITEMS);
    assert!(idle.items_truncated);
    assert_eq!(idle.status, FindingStatus::Fail);

    let mut lenient = ComplianceSettings::default();
    lenient
        .allowed
        .insert("users_without_login_90d".to_owned(), many as u64);
    let report = e.kms.compliance_report(&e.root, &lenient).unwrap();
    assert_eq!(
        report.finding("users_without_login_90d").unwrap().status,
        FindingStatus::Pass
    );
}

#[test]
fn stats_count_what_the_store_holds_and_growth_covers_the_last_week() {
    let e = env();
    token(&e, "app_system", "a", &[], None);
    let now = e.kms.stats(&e.root).unwrap();
    assert_eq!((now.applications, now.tokens, now.users), (1, 2, 0));
    assert_eq!(now.growth_per_day.tokens, 2.0 / 7.0);
    assert!(now.audit_events >= 2);
    assert_eq!(
        now.database_bytes, 0,
        "the memory store has no database file"
    );
    e.clock.advance(8 * DAY);
    let later = e.kms.stats(&e.root).unwrap();
    assert_eq!(later.tokens, 2);
    assert_eq!(later.growth_per_day.tokens, 0.0);
}

#[test]
fn only_system_callers_holding_audit_read_get_stats_or_reports() {
    let e = env();
    let app = e
        .kms
        .create_app(
            &e.root,
            NewApp {
                name: "tenant".to_owned(),
                ..Default::default()
            },
        )
        .unwrap()
        .id;
    let tenant = e
        .kms
        .create_token(
            &e.root,
            &app,
            NewToken {
                name: "auditor".to_owned(),
                scopes: vec!["audit.read".to_owned()],
                ..Default::default()
            },
        )
        .unwrap()
        .token;
    let tenant = e.kms.authenticate(&tenant, None).unwrap();
    let settings = ComplianceSettings::default();
    let refused = e.kms.compliance_report(&tenant, &settings).unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Forbidden);
    assert_eq!(
        e.kms.stats(&tenant).unwrap_err().code(),
        ErrorCode::Forbidden
    );
    let reader = e
        .kms
        .create_token(
            &e.root,
            "app_system",
            NewToken {
                name: "reader".to_owned(),
                scopes: vec!["app.read".to_owned()],
                ..Default::default()
            },
        )
        .unwrap()
        .token;
    let reader = e.kms.authenticate(&reader, None).unwrap();
    assert_eq!(
        e.kms.stats(&reader).unwrap_err().code(),
        ErrorCode::Forbidden
    );
}
