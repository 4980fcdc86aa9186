//! The `Kms` facade, driven through its public API over the memory, SQLite and PostgreSQL
//! stores (PostgreSQL: a fresh database of the test server, `KMS_TEST_POSTGRES_URL`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::Arc;

use kms_core::store::Store;
use kms_core::{
    AppStatus, AppUpdate, Caller, ErrorCode, Kms, ManualClock, NewApp, NewPermission, NewRole,
    NewToken, PageRequest, PermissionQuery, RoleUpdate, RotateToken, Timestamp, TokenUpdate,
    VerifyCode, VerifyRequest,
};
use kms_store::testing::{NoPostgres, ScratchDatabase};
use kms_store::{MemoryStore, PostgresOptions, PostgresStore, SqliteStore};

struct Env {
    kms: Kms,
    clock: Arc<ManualClock>,
    root: Caller,
    root_token: String,
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    /// Dropped after `kms` (fields drop in order), which holds the store.
    _database: Option<ScratchDatabase>,
}

fn env_with(store: Arc<dyn Store>, dir: tempfile::TempDir, db: std::path::PathBuf) -> Env {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix(1_800_000_000)));
    let kms = Kms::builder(store)
        .clock(clock.clone())
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .build()
        .unwrap();
    let created = kms.initialize().unwrap();
    let root = kms.authenticate(&created.token, None).unwrap();
    Env {
        kms,
        clock,
        root,
        root_token: created.token,
        _dir: dir,
        db,
        _database: None,
    }
}

fn memory() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("unused.db");
    env_with(Arc::new(MemoryStore::new()), dir, db)
}

fn sqlite() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let store = SqliteStore::open(&db).unwrap();
    env_with(Arc::new(store), dir, db)
}

/// An environment on a fresh PostgreSQL database; `None`, with a notice, when there is no
/// test server outside CI.
fn postgres() -> Option<Env> {
    let database = match ScratchDatabase::create() {
        Ok(database) => database,
        Err(NoPostgres::Skip(notice)) => {
            eprintln!("{notice}");
            return None;
        }
        Err(NoPostgres::Fail(message)) => panic!("{message}"),
    };
    let options = PostgresOptions {
        pool_size: 4,
        ..PostgresOptions::default()
    };
    let store = PostgresStore::open(database.url(), options).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("unused.db");
    let mut env = env_with(Arc::new(store), dir, db);
    env._database = Some(database);
    Some(env)
}

/// Runs each behaviour against every store.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod memory_store { $( #[test] fn $name() { super::$name(super::memory()); } )* }
        mod sqlite_store { $( #[test] fn $name() { super::$name(super::sqlite()); } )* }
        mod postgres_store {
            $( #[test] fn $name() { if let Some(env) = super::postgres() { super::$name(env); } } )*
        }
    };
}

on_every_store!(
    second_initialisation_is_refused_and_changes_nothing,
    valid_token_verifies_with_its_permissions,
    unknown_id_and_wrong_secret_give_the_same_code,
    revoked_token_fails_verification_immediately_even_when_cached,
    rotation_keeps_the_old_token_for_the_grace_period_only,
    deleting_a_token_or_disabling_its_app_takes_effect_at_once,
    a_disabled_application_gets_no_new_or_rotated_tokens,
    expired_token_fails,
    a_caller_cannot_grant_what_it_does_not_hold,
    tenants_see_nothing_of_each_other,
    bad_input_lists_every_field_and_changes_nothing,
    bulk_permissions_are_all_or_nothing,
    implication_cycles_are_rejected_naming_the_cycle,
    granted_permission_cannot_be_deleted,
    role_changes_apply_to_cached_tokens_at_once,
    uses_are_spent_only_by_valid_verifications,
    network_allow_list_is_enforced,
    token_listing_paginates,
    malformed_tokens_never_reach_the_store,
    rate_limit_refuses_past_the_quota,
    every_management_change_is_audited_in_a_verifiable_chain,
    retention_prunes_old_audit_events_and_keeps_the_chain_verifiable,
);

fn app(e: &Env, name: &str) -> String {
    e.kms
        .create_app(
            &e.root,
            NewApp {
                name: name.into(),
                token_prefix: Some("bill".into()),
                ..Default::default()
            },
        )
        .unwrap()
        .id
}

fn token(e: &Env, app_id: &str, scopes: &[&str], roles: &[&str]) -> kms_core::CreatedToken {
    e.kms
        .create_token(
            &e.root,
            app_id,
            NewToken {
                name: "ci".into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                roles: roles.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )
        .unwrap()
}

fn verify(e: &Env, t: &str, q: Option<&str>) -> VerifyCode {
    let q = q.map(|q| PermissionQuery::parse(q).unwrap());
    e.kms.verify_token(t, q.as_ref(), None).unwrap().code()
}

fn second_initialisation_is_refused_and_changes_nothing(e: Env) {
    let err = e.kms.initialize().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict);
    assert_eq!(verify(&e, &e.root_token, Some("admin")), VerifyCode::Valid);
    assert_eq!(e.kms.list_permissions(&e.root).unwrap().len(), 20);
}

fn valid_token_verifies_with_its_permissions(e: Env) {
    let a = app(&e, "billing");
    let t = token(&e, &a, &["app.read", "token.verify"], &[]);
    assert!(t.token.starts_with("bill_"));
    assert_eq!(t.info.start, t.token[..8]);
    assert_eq!(verify(&e, &t.token, None), VerifyCode::Valid);
    assert_eq!(
        verify(&e, &t.token, Some("app.read AND token.verify")),
        VerifyCode::Valid
    );
    assert_eq!(
        verify(&e, &t.token, Some("app.write OR token.verify")),
        VerifyCode::Valid
    );
    assert_eq!(
        verify(&e, &t.token, Some("app.write")),
        VerifyCode::InsufficientPermissions
    );
    // Served from the cache the second time, same answer.
    let before = e.kms.cache_stats();
    let v = e.kms.verify_token(&t.token, None, None).unwrap();
    assert!(e.kms.cache_stats().hits > before.hits);
    assert_eq!(v.app_id(), Some(a.as_str()));
    assert!(v.allows("app.read") && !v.allows("app.write"));
}

fn unknown_id_and_wrong_secret_give_the_same_code(e: Env) {
    let a = app(&e, "billing");
    let t = token(&e, &a, &["app.read"], &[]);
    // Same id, different secret, valid checksum: regenerate the checksum over a changed secret.
    let wrong_secret = reforge(&t.token, |body| {
        body.replace_range(20..21, if &body[20..21] == "A" { "B" } else { "A" })
    });
    let unknown_id = reforge(&t.token, |body| {
        body.replace_range(5..6, if &body[5..6] == "A" { "B" } else { "A" })
    });
    let a_code = e.kms.verify_token(&wrong_secret, None, None).unwrap();
    let b_code = e.kms.verify_token(&unknown_id, None, None).unwrap();
    assert_eq!(a_code.code(), VerifyCode::NotFound);
    assert_eq!(b_code.code(), VerifyCode::NotFound);
    assert_eq!(a_code.to_response(), b_code.to_response());
    assert_eq!(
        serde_json::to_value(a_code.to_response()).unwrap(),
        serde_json::json!({"valid": false, "code": "NOT_FOUND"})
    );
}

/// Changes the body of a token and recomputes a valid checksum, as an attacker could.
fn reforge(token: &str, change: impl FnOnce(&mut String)) -> String {
    let mut body = token[..token.len() - 6].to_owned();
    change(&mut body);
    let mut v = crc32fast::hash(body.as_bytes()) as u64;
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut sum = [b'0'; 6];
    for slot in sum.iter_mut().rev() {
        *slot = alphabet[(v % 62) as usize];
        v /= 62;
    }
    body.push_str(std::str::from_utf8(&sum).unwrap());
    assert!(kms_core::token_format::parse(&body).is_ok());
    body
}

fn revoked_token_fails_verification_immediately_even_when_cached(e: Env) {
    let a = app(&e, "billing");
    let t = token(&e, &a, &["app.read"], &[]);
    assert_eq!(verify(&e, &t.token, None), VerifyCode::Valid);
    assert_eq!(verify(&e, &t.token, None), VerifyCode::Valid);
    let info = e.kms.revoke_token(&e.root, &t.info.id).unwrap();
    assert_eq!(info.status, "revoked");
    assert_eq!(verify(&e, &t.token, None), VerifyCode::Revoked);
    // Idempotent.
    assert_eq!(
        e.kms.revoke_token(&e.root, &t.info.id).unwrap().status,
        "revoked"
    );
    let v = e.kms.verify_token(&t.token, None, None).unwrap();
    assert_eq!(
        serde_json::to_value(v.to_response()).unwrap(),
        serde_json::json!({"valid": false, "code": "REVOKED", "token_id": t.info.id})
    );
}

fn rotation_keeps_the_old_token_for_the_grace_period_only(e: Env) {
    let a = app(&e, "billing");
    let old = token(&e, &a, &["app.read"], &[]);
    assert_eq!(verify(&e, &old.token, None), VerifyCode::Valid);
    let new = e
        .kms
        .rotate_token(
            &e.root,
            &old.info.id,
            RotateToken {
                grace_seconds: Some(60),
            },
        )
        .unwrap();
    assert_ne!(new.token, old.token);
    assert_eq!(new.info.scopes, old.info.scopes);
    assert_eq!(new.info.rotated_from.as_deref(), Some(old.info.id.as_str()));
    assert_eq!(verify(&e, &old.token, None), VerifyCode::Valid);
    assert_eq!(verify(&e, &new.token, None), VerifyCode::Valid);
    e.clock.advance(61);
    assert_eq!(verify(&e, &old.token, None), VerifyCode::Expired);
    assert_eq!(verify(&e, &new.token, None), VerifyCode::Valid);
    let err = e
        .kms
        .rotate_token(&e.root, &old.info.id, RotateToken::default())
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict);
}

fn deleting_a_token_or_disabling_its_app_takes_effect_at_once(e: Env) {
    let a = app(&e, "billing");
    let t1 = token(&e, &a, &["app.read"], &[]);
    let t2 = token(&e, &a, &["app.read"], &[]);
    assert_eq!(verify(&e, &t1.token, None), VerifyCode::Valid);
    assert_eq!(verify(&e, &t2.token, None), VerifyCode::Valid);
    e.kms.delete_token(&e.root, &t1.info.id).unwrap();
    assert_eq!(verify(&e, &t1.token, None), VerifyCode::NotFound);
    let disabled = e
        .kms
        .update_app(
            &e.root,
            &a,
            AppUpdate {
                status: Some("disabled".into()),
                name: None,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(disabled.status, AppStatus::Disabled);
    assert_eq!(verify(&e, &t2.token, None), VerifyCode::Disabled);
    e.kms
        .update_app(
            &e.root,
            &a,
            AppUpdate {
                status: Some("active".into()),
                name: None,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(verify(&e, &t2.token, None), VerifyCode::Valid);
    e.kms.delete_app(&e.root, &a).unwrap();
    assert_eq!(verify(&e, &t2.token, None), VerifyCode::NotFound);
    assert_eq!(
        e.kms.get_app(&e.root, &a).unwrap_err().code(),
        ErrorCode::NotFound
    );
}

fn a_disabled_application_gets_no_new_or_rotated_tokens(e: Env) {
    let a = app(&e, "billing");
    let t = token(&e, &a, &["app.read"], &[]);
    let disable = |status: &str| {
        e.kms
            .update_app(
                &e.root,
                &a,
                AppUpdate {
                    status: Some(status.into()),
                    ..Default::default()
                },
            )
            .unwrap()
    };
    disable("disabled");
    let before = e
        .kms
        .list_tokens(&e.root, &a, PageRequest::default())
        .unwrap()
        .items
        .len();
    let create = e.kms.create_token(
        &e.root,
        &a,
        NewToken {
            name: "new".into(),
            ..Default::default()
        },
    );
    assert_eq!(create.unwrap_err().code(), ErrorCode::Conflict);
    let rotate = e
        .kms
        .rotate_token(&e.root, &t.info.id, RotateToken::default());
    assert_eq!(rotate.unwrap_err().code(), ErrorCode::Conflict);
    // Nothing changed: no new token, the old one not marked rotated.
    let after = e
        .kms
        .list_tokens(&e.root, &a, PageRequest::default())
        .unwrap();
    assert_eq!(after.items.len(), before);
    assert!(e
        .kms
        .get_token(&e.root, &t.info.id)
        .unwrap()
        .rotated_to
        .is_none());
    disable("active");
    assert_eq!(verify(&e, &t.token, None), VerifyCode::Valid);
}

fn expired_token_fails(e: Env) {
    let a = app(&e, "billing");
    let t = e
        .kms
        .create_token(
            &e.root,
            &a,
            NewToken {
                name: "short".into(),
                expires_in: Some(10),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(verify(&e, &t.token, None), VerifyCode::Valid);
    e.clock.advance(10);
    assert_eq!(verify(&e, &t.token, None), VerifyCode::Expired);
    assert_eq!(
        e.kms.get_token(&e.root, &t.info.id).unwrap().status,
        "expired"
    );
}

fn a_caller_cannot_grant_what_it_does_not_hold(e: Env) {
    let a = app(&e, "billing");
    let minter = token(&e, &a, &["token.create", "app.read"], &[]);
    let caller = e.kms.authenticate(&minter.token, None).unwrap();
    let err = e
        .kms
        .create_token(
            &caller,
            &a,
            NewToken {
                name: "x".into(),
                scopes: vec!["admin".into()],
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Forbidden);
    assert!(
        matches!(err, kms_core::Error::Forbidden { ref required } if required == "admin"),
        "{err:?}"
    );
    e.kms
        .create_role(
            &e.root,
            NewRole {
                name: "writer".into(),
                permissions: vec!["app.write".into()],
                ..Default::default()
            },
        )
        .unwrap();
    let err = e
        .kms
        .create_token(
            &caller,
            &a,
            NewToken {
                name: "x".into(),
                roles: vec!["writer".into()],
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, kms_core::Error::Forbidden { ref required } if required == "app.write"),
        "{err:?}"
    );
    // What it holds, it may pass on.
    e.kms
        .create_token(
            &caller,
            &a,
            NewToken {
                name: "x".into(),
                scopes: vec!["app.read".into()],
                ..Default::default()
            },
        )
        .unwrap();
    // And a tenant may not define roles at all.
    let err = e
        .kms
        .create_role(
            &caller,
            NewRole {
                name: "mine".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Forbidden);
}

fn tenants_see_nothing_of_each_other(e: Env) {
    let a = app(&e, "a");
    let b = app(&e, "b");
    let ta = token(
        &e,
        &a,
        &[
            "app.read",
            "token.read",
            "token.create",
            "token.revoke",
            "token.verify",
        ],
        &[],
    );
    let tb = token(&e, &b, &["app.read"], &[]);
    let ca = e.kms.authenticate(&ta.token, None).unwrap();
    assert!(!ca.is_system());
    let apps = e.kms.list_apps(&ca, PageRequest::default()).unwrap();
    assert_eq!(
        apps.items.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
        [a.as_str()]
    );
    assert_eq!(
        e.kms.get_app(&ca, &b).unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        e.kms.get_token(&ca, &tb.info.id).unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        e.kms.revoke_token(&ca, &tb.info.id).unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        e.kms
            .list_tokens(&ca, &b, PageRequest::default())
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
    let err = e
        .kms
        .create_token(
            &ca,
            &b,
            NewToken {
                name: "x".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    let v = e
        .kms
        .verify(
            &ca,
            &VerifyRequest {
                token: tb.token.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(v.code(), VerifyCode::NotFound);
    assert_eq!(v.token_id(), None);
    let v = e
        .kms
        .verify(
            &ca,
            &VerifyRequest {
                token: ta.token.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(v.code(), VerifyCode::Valid);
    // B's token still works for B.
    assert_eq!(verify(&e, &tb.token, None), VerifyCode::Valid);
}

fn bad_input_lists_every_field_and_changes_nothing(e: Env) {
    let a = app(&e, "billing");
    let err = e
        .kms
        .create_token(
            &e.root,
            &a,
            NewToken {
                name: "".into(),
                scopes: vec!["Bad Scope".into(), "app.read".into(), "nope.never".into()],
                roles: vec!["ghost".into()],
                expires_in: Some(-5),
                uses: Some(0),
                ip_allow: Some(vec!["10.0.0.0/99".into()]),
                ..Default::default()
            },
        )
        .unwrap_err();
    let kms_core::Error::InvalidRequest { fields } = err else {
        panic!("{err:?}")
    };
    let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
    for expected in [
        "name",
        "scopes[0]",
        "scopes[2]",
        "roles[0]",
        "expires_in",
        "uses",
        "ip_allow[0]",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(e
        .kms
        .list_tokens(&e.root, &a, PageRequest::default())
        .unwrap()
        .items
        .is_empty());
    for bad in ["", "A", "toolongprefixxxxx", "1ab"] {
        let err = e
            .kms
            .create_app(
                &e.root,
                NewApp {
                    name: "x".into(),
                    token_prefix: Some(bad.into()),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRequest, "{bad}");
    }
    let err = e
        .kms
        .create_app(
            &e.root,
            NewApp {
                name: "billing".into(),
                token_prefix: None,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict);
    assert_eq!(
        e.kms
            .list_apps(&e.root, PageRequest::default())
            .unwrap()
            .items
            .len(),
        2
    );
    let err = e.kms.verify(
        &e.root,
        &VerifyRequest {
            token: "x".into(),
            permissions: Some("a AND (b".into()),
            ..Default::default()
        },
    );
    assert_eq!(err.unwrap_err().code(), ErrorCode::InvalidRequest);
}

fn bulk_permissions_are_all_or_nothing(e: Env) {
    let p = |s: &str, implies: &[&str]| NewPermission {
        scope: s.into(),
        description: None,
        implies: implies.iter().map(|x| x.to_string()).collect(),
    };
    let err = e
        .kms
        .create_permissions(
            &e.root,
            vec![
                p("billing.read", &[]),
                p("billing.write", &["billing.read"]),
                p("Bad!", &[]),
            ],
        )
        .unwrap_err();
    let kms_core::Error::InvalidRequest { fields } = err else {
        panic!()
    };
    assert_eq!(fields[0].field, "permissions[2].scope");
    assert_eq!(e.kms.list_permissions(&e.root).unwrap().len(), 20);
    let made = e
        .kms
        .create_permissions(
            &e.root,
            vec![
                p("billing.read", &[]),
                p("billing.write", &["billing.read"]),
            ],
        )
        .unwrap();
    assert_eq!(made.len(), 2);
    assert_eq!(e.kms.list_permissions(&e.root).unwrap().len(), 22);
    let err = e
        .kms
        .create_permission(&e.root, p("billing.read", &[]))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict);
}

fn implication_cycles_are_rejected_naming_the_cycle(e: Env) {
    let p = |s: &str, implies: &[&str]| NewPermission {
        scope: s.into(),
        description: None,
        implies: implies.iter().map(|x| x.to_string()).collect(),
    };
    e.kms.create_permission(&e.root, p("x.a", &[])).unwrap();
    e.kms
        .create_permission(&e.root, p("x.b", &["x.a"]))
        .unwrap();
    e.kms
        .create_role(
            &e.root,
            NewRole {
                name: "one".into(),
                permissions: vec!["x.a".into()],
                ..Default::default()
            },
        )
        .unwrap();
    e.kms
        .create_role(
            &e.root,
            NewRole {
                name: "two".into(),
                inherits: vec!["one".into()],
                ..Default::default()
            },
        )
        .unwrap();
    let err = e
        .kms
        .update_role(
            &e.root,
            "one",
            RoleUpdate {
                inherits: Some(vec!["two".into()]),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
    assert!(err.to_string().contains("one -> two -> one"), "{err}");
    assert!(e.kms.get_role(&e.root, "one").unwrap().inherits.is_empty());
    let two = e.kms.get_role(&e.root, "two").unwrap();
    assert_eq!(
        two.effective.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        ["x.a"]
    );
}

fn granted_permission_cannot_be_deleted(e: Env) {
    let a = app(&e, "billing");
    e.kms
        .create_permission(
            &e.root,
            NewPermission {
                scope: "reports.read".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let t = token(&e, &a, &["reports.read"], &[]);
    let err = e
        .kms
        .delete_permission(&e.root, "reports.read")
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict);
    e.kms.delete_token(&e.root, &t.info.id).unwrap();
    e.kms.delete_permission(&e.root, "reports.read").unwrap();
    assert_eq!(
        e.kms
            .delete_permission(&e.root, "reports.read")
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
}

fn role_changes_apply_to_cached_tokens_at_once(e: Env) {
    let a = app(&e, "billing");
    e.kms
        .create_role(
            &e.root,
            NewRole {
                name: "viewer".into(),
                permissions: vec!["app.read".into()],
                ..Default::default()
            },
        )
        .unwrap();
    e.kms
        .create_role(
            &e.root,
            NewRole {
                name: "support".into(),
                inherits: vec!["viewer".into()],
                ..Default::default()
            },
        )
        .unwrap();
    let t = token(&e, &a, &[], &["support"]);
    assert_eq!(verify(&e, &t.token, Some("app.read")), VerifyCode::Valid);
    assert_eq!(verify(&e, &t.token, Some("app.read")), VerifyCode::Valid);
    e.kms
        .update_role(
            &e.root,
            "viewer",
            RoleUpdate {
                permissions: Some(vec!["token.read".into()]),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        verify(&e, &t.token, Some("app.read")),
        VerifyCode::InsufficientPermissions
    );
    assert_eq!(verify(&e, &t.token, Some("token.read")), VerifyCode::Valid);
    assert_eq!(
        e.kms.delete_role(&e.root, "viewer").unwrap_err().code(),
        ErrorCode::Conflict
    );
}

fn uses_are_spent_only_by_valid_verifications(e: Env) {
    let a = app(&e, "billing");
    let t = e
        .kms
        .create_token(
            &e.root,
            &a,
            NewToken {
                name: "twice".into(),
                scopes: vec!["app.read".into()],
                uses: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        verify(&e, &t.token, Some("app.write")),
        VerifyCode::InsufficientPermissions
    );
    let v = e.kms.verify_token(&t.token, None, None).unwrap();
    assert_eq!((v.code(), v.remaining()), (VerifyCode::Valid, Some(1)));
    let v = e.kms.verify_token(&t.token, None, None).unwrap();
    assert_eq!((v.code(), v.remaining()), (VerifyCode::Valid, Some(0)));
    assert_eq!(verify(&e, &t.token, None), VerifyCode::UsageExceeded);
    let refilled = e
        .kms
        .update_token(
            &e.root,
            &t.info.id,
            TokenUpdate {
                uses: Some(Some(5)),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(refilled.uses, Some(5));
    assert_eq!(verify(&e, &t.token, None), VerifyCode::Valid);
}

fn network_allow_list_is_enforced(e: Env) {
    let a = app(&e, "billing");
    let t = e
        .kms
        .create_token(
            &e.root,
            &a,
            NewToken {
                name: "net".into(),
                ip_allow: Some(vec!["10.0.0.0/8".into(), "2001:db8::/32".into()]),
                ..Default::default()
            },
        )
        .unwrap();
    let at = |ip: &str| {
        e.kms
            .verify_token(&t.token, None, Some(ip.parse().unwrap()))
            .unwrap()
            .code()
    };
    assert_eq!(at("10.1.2.3"), VerifyCode::Valid);
    assert_eq!(at("2001:db8::7"), VerifyCode::Valid);
    assert_eq!(at("192.168.0.1"), VerifyCode::Forbidden);
    assert_eq!(at("2001:db9::7"), VerifyCode::Forbidden);
    assert_eq!(verify(&e, &t.token, None), VerifyCode::Forbidden);
}

fn token_listing_paginates(e: Env) {
    let a = app(&e, "billing");
    let mut ids: Vec<String> = (0..7).map(|_| token(&e, &a, &[], &[]).info.id).collect();
    ids.sort();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = e
            .kms
            .list_tokens(
                &e.root,
                &a,
                PageRequest {
                    limit: Some(3),
                    cursor: cursor.clone(),
                },
            )
            .unwrap();
        seen.extend(page.items.iter().map(|t| t.id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let err = e
        .kms
        .list_tokens(
            &e.root,
            &a,
            PageRequest {
                limit: Some(0),
                cursor: None,
            },
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
}

fn malformed_tokens_never_reach_the_store(e: Env) {
    for bad in [
        "",
        "kms_",
        "hello",
        &"x".repeat(10_000),
        "kms_0000000000000000000000000000000000000000000000",
    ] {
        assert_eq!(verify(&e, bad, None), VerifyCode::Malformed);
    }
    assert_eq!(
        e.kms.authenticate("nope", None).unwrap_err().code(),
        ErrorCode::Unauthenticated
    );
}

#[test]
fn plaintext_secrets_never_reach_the_sqlite_file() {
    let e = sqlite();
    let a = app(&e, "billing");
    let mut secrets = vec![e.root_token.clone()];
    for _ in 0..5 {
        let t = token(&e, &a, &["app.read"], &[]);
        assert_eq!(verify(&e, &t.token, None), VerifyCode::Valid);
        secrets.push(t.token);
    }
    let holder = e.kms.authenticate(&secrets[1], None).unwrap();
    let rotated = e
        .kms
        .rotate_token(&e.root, holder.token_id().unwrap(), RotateToken::default())
        .unwrap();
    secrets.push(rotated.token);
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", e.db.display());
        if let Ok(b) = std::fs::read(&path) {
            bytes.extend(b);
        }
    }
    assert!(!bytes.is_empty());
    for s in &secrets {
        let parsed = kms_core::token_format::parse(s).unwrap();
        for needle in [s.as_str(), parsed.secret()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "a secret reached the database file"
            );
        }
    }
}

#[test]
fn production_hash_parameters_are_used_by_default() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let kms = Kms::builder(store.clone()).build().unwrap();
    let root = kms.initialize().unwrap();
    let rec = store.get_token(&root.info.id).unwrap().unwrap();
    assert!(
        rec.secret_hash
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        rec.secret_hash
    );
    assert_eq!(
        kms.verify_token(&root.token, None, None).unwrap().code(),
        VerifyCode::Valid
    );
}

fn rate_limit_refuses_past_the_quota(e: Env) {
    let a = app(&e, "billing");
    let t = e
        .kms
        .create_token(
            &e.root,
            &a,
            NewToken {
                name: "limited".into(),
                ratelimit: Some(kms_core::RateLimitInput {
                    limit: 2,
                    per_seconds: 3600,
                }),
                ..Default::default()
            },
        )
        .unwrap();
    let other = token(&e, &a, &[], &[]);
    assert_eq!(verify(&e, &t.token, None), VerifyCode::Valid);
    assert_eq!(verify(&e, &t.token, None), VerifyCode::Valid);
    assert_eq!(verify(&e, &t.token, None), VerifyCode::RateLimited);
    assert_eq!(verify(&e, &other.token, None), VerifyCode::Valid);
    let err = e
        .kms
        .update_token(
            &e.root,
            &t.info.id,
            TokenUpdate {
                ratelimit: Some(Some(kms_core::RateLimitInput {
                    limit: 0,
                    per_seconds: 0,
                })),
                ..Default::default()
            },
        )
        .unwrap_err();
    let kms_core::Error::InvalidRequest { fields } = err else {
        panic!()
    };
    assert_eq!(fields.len(), 2);
}

fn every_management_change_is_audited_in_a_verifiable_chain(e: Env) {
    let root = e
        .root
        .clone()
        .with_request(Some("10.1.2.3".parse().unwrap()), Some("req-1".into()));
    let a = e
        .kms
        .create_app(
            &root,
            NewApp {
                name: "billing".into(),
                token_prefix: None,
                ..Default::default()
            },
        )
        .unwrap()
        .id;
    let t = e
        .kms
        .create_token(
            &root,
            &a,
            NewToken {
                name: "ci".into(),
                ..Default::default()
            },
        )
        .unwrap();
    e.kms.revoke_token(&root, &t.info.id).unwrap();
    e.kms
        .create_role(
            &root,
            NewRole {
                name: "r".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let page = e
        .kms
        .list_audit(
            &root,
            kms_core::AuditFilter::default(),
            PageRequest::default(),
        )
        .unwrap();
    let actions: Vec<&str> = page.items.iter().map(|ev| ev.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "role.put",
            "token.revoke",
            "token.create",
            "app.create",
            "system.init"
        ]
    );
    let newest = &page.items[0];
    assert_eq!(newest.actor, root.token_id().unwrap());
    assert_eq!(newest.ip.as_deref(), Some("10.1.2.3"));
    assert_eq!(newest.request_id.as_deref(), Some("req-1"));
    assert_eq!(
        e.kms.verify_audit(&root).unwrap(),
        kms_core::AuditVerification::Intact {
            ok: true,
            events: 5
        }
    );
    let filtered = e
        .kms
        .list_audit(
            &root,
            kms_core::AuditFilter {
                action: Some("token.create".into()),
                ..Default::default()
            },
            PageRequest::default(),
        )
        .unwrap();
    assert_eq!(filtered.items.len(), 1);
    let paged = e
        .kms
        .list_audit(
            &root,
            kms_core::AuditFilter::default(),
            PageRequest {
                limit: Some(2),
                cursor: None,
            },
        )
        .unwrap();
    let rest = e
        .kms
        .list_audit(
            &root,
            kms_core::AuditFilter::default(),
            PageRequest {
                limit: Some(10),
                cursor: paged.next_cursor,
            },
        )
        .unwrap();
    assert_eq!(rest.items.len(), 3);
    // No event carries the token's plaintext.
    let all = serde_json::to_string(&page.items).unwrap();
    assert!(!all.contains(&t.token) && !all.contains(&e.root_token));
    // A failed change writes no event.
    let _ = e
        .kms
        .create_app(
            &root,
            NewApp {
                name: "billing".into(),
                token_prefix: None,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(
        e.kms
            .list_audit(
                &root,
                kms_core::AuditFilter::default(),
                PageRequest::default()
            )
            .unwrap()
            .items
            .len(),
        5
    );
}

#[derive(Default)]
struct Sink(std::sync::Mutex<Vec<kms_core::SecurityEvent>>);

impl kms_core::SecurityEventSink for Sink {
    fn on_security_event(&self, event: &kms_core::SecurityEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

#[test]
fn repeated_failures_lock_out_the_source_and_are_audited() {
    let sink = Arc::new(Sink::default());
    let kms = Kms::builder(Arc::new(MemoryStore::new()))
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .lockout_policy(kms_core::LockoutPolicy {
            threshold: 3,
            window_secs: 60,
            lockout_secs: 120,
        })
        .security_event_sink(sink.clone())
        .build()
        .unwrap();
    let root_token = kms.initialize().unwrap().token;
    let attacker: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    let honest: std::net::IpAddr = "198.51.100.1".parse().unwrap();
    let op = kms.operator();
    let app = kms
        .create_app(
            &op,
            NewApp {
                name: "a".into(),
                token_prefix: None,
                ..Default::default()
            },
        )
        .unwrap();
    let fresh = kms
        .create_token(
            &op,
            &app.id,
            NewToken {
                name: "t".into(),
                ..Default::default()
            },
        )
        .unwrap()
        .token;
    // The honest client's key is verified (and cached) before the attack.
    assert!(kms.authenticate(&root_token, Some(honest)).is_ok());
    for _ in 0..3 {
        assert_eq!(
            kms.verify_token("kms_garbage", None, Some(attacker))
                .unwrap()
                .code(),
            VerifyCode::Malformed
        );
    }
    // The locked source gets no argon2 work: an uncached key is refused...
    let locked = kms.verify_token(&fresh, None, Some(attacker)).unwrap();
    assert_eq!(locked.code(), VerifyCode::RateLimited);
    assert!(locked.retry_after_secs().is_some_and(|s| s > 0 && s <= 120));
    let err = kms.authenticate(&fresh, Some(attacker)).unwrap_err();
    assert!(
        matches!(err, kms_core::Error::RateLimited { retry_after_secs } if retry_after_secs > 0)
    );
    // ...but a correct, cached key is not a guess and still passes.
    assert!(kms.authenticate(&root_token, Some(attacker)).is_ok());
    // Other sources are unaffected.
    assert!(kms.authenticate(&fresh, Some(honest)).is_ok());
    assert_eq!(
        sink.0.lock().unwrap().as_slice(),
        [kms_core::SecurityEvent::Lockout {
            source: format!("ip:{attacker}")
        }]
    );
    let events = kms
        .list_audit(
            &op,
            kms_core::AuditFilter {
                action: Some("security.lockout".into()),
                ..Default::default()
            },
            PageRequest::default(),
        )
        .unwrap();
    assert_eq!(events.items.len(), 1);
    assert_eq!(events.items[0].outcome, "failure");
    // Failures before the lockout are audited aggregated: one event for the window.
    let failures = kms
        .list_audit(
            &op,
            kms_core::AuditFilter {
                action: Some("auth.failure".into()),
                ..Default::default()
            },
            PageRequest::default(),
        )
        .unwrap();
    assert_eq!(failures.items.len(), 1);
    assert_eq!(failures.items[0].target, format!("ip:{attacker}"));
}

#[test]
fn guessing_secrets_for_one_token_id_never_refuses_its_holder_and_is_audited() {
    let kms = Kms::builder(Arc::new(MemoryStore::new()))
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .cache_capacity(0) // the holder is never helped by a cached entry here
        .lockout_policy(kms_core::LockoutPolicy {
            threshold: 3,
            window_secs: 60,
            lockout_secs: 120,
        })
        .build()
        .unwrap();
    let root = kms.initialize().unwrap().token;
    let root_id = kms
        .authenticate(&root, None)
        .unwrap()
        .token_id()
        .unwrap()
        .to_owned();
    let guesser: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    for i in 0..5 {
        let guess = reforge(&root, |body| {
            body.replace_range(20..22, ["AA", "BB", "CC", "DD", "EE"][i])
        });
        // Guesses without a source (in-process) are never refused: there is nobody to
        // lock but the id, and the id's holder did nothing.
        assert_eq!(
            kms.verify_token(&guess, None, None).unwrap().code(),
            VerifyCode::NotFound
        );
        // Guesses from an address lock that address out after the threshold.
        let from_guesser = kms
            .verify_token(&guess, None, Some(guesser))
            .unwrap()
            .code();
        let expected = if i < 3 {
            VerifyCode::NotFound
        } else {
            VerifyCode::RateLimited
        };
        assert_eq!(from_guesser, expected, "guess {i}");
    }
    // The holder, uncached, from anywhere else or from nowhere: accepted.
    assert_eq!(
        kms.verify_token(&root, None, None).unwrap().code(),
        VerifyCode::Valid
    );
    let elsewhere: std::net::IpAddr = "198.51.100.1".parse().unwrap();
    assert!(kms.authenticate(&root, Some(elsewhere)).is_ok());
    // The campaign against the id is audited once, naming the id.
    let op = kms.operator();
    let events = kms
        .list_audit(
            &op,
            kms_core::AuditFilter {
                action: Some("security.guessing".into()),
                ..Default::default()
            },
            PageRequest::default(),
        )
        .unwrap();
    assert_eq!(events.items.len(), 1, "{:?}", events.items);
    assert_eq!(events.items[0].target, root_id);
}

#[test]
fn a_tenant_cannot_lock_out_another_key_by_its_id_and_locks_only_itself() {
    let kms = Kms::builder(Arc::new(MemoryStore::new()))
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .cache_capacity(0)
        .lockout_policy(kms_core::LockoutPolicy {
            threshold: 3,
            window_secs: 60,
            lockout_secs: 120,
        })
        .build()
        .unwrap();
    let root = kms.initialize().unwrap().token;
    let op = kms.operator();
    let tenant_app = kms
        .create_app(
            &op,
            NewApp {
                name: "t".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let verifier = kms
        .create_token(
            &op,
            &tenant_app.id,
            NewToken {
                name: "v".into(),
                scopes: vec!["token.verify".into()],
                ..Default::default()
            },
        )
        .unwrap();
    let tenant = kms.authenticate(&verifier.token, None).unwrap();
    // Forged tokens carrying the root token's id, without an address in the request.
    for i in 0..10 {
        let forged = reforge(&root, |body| body.replace_range(20..22, &format!("{i:02}")));
        let req = VerifyRequest {
            token: forged,
            ..Default::default()
        };
        let code = kms.verify(&tenant, &req).unwrap().code();
        assert!(
            matches!(code, VerifyCode::NotFound | VerifyCode::RateLimited),
            "{code:?}"
        );
    }
    // The root token is not refused, anywhere.
    assert!(kms.authenticate(&root, None).is_ok());
    assert!(kms
        .authenticate(&root, Some("192.0.2.1".parse().unwrap()))
        .is_ok());
    // The tenant that sent the guesses is the one locked out of cold verifications.
    let own = kms
        .create_token(
            &op,
            &tenant_app.id,
            NewToken {
                name: "u".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let req = VerifyRequest {
        token: own.token,
        ..Default::default()
    };
    assert_eq!(
        kms.verify(&tenant, &req).unwrap().code(),
        VerifyCode::RateLimited
    );
    // The failures are audited once per window, attributed to the tenant's key, in its
    // application.
    let failures = kms
        .list_audit(
            &op,
            kms_core::AuditFilter {
                action: Some("auth.failure".into()),
                ..Default::default()
            },
            PageRequest::default(),
        )
        .unwrap();
    assert_eq!(failures.items.len(), 1, "{:?}", failures.items);
    let event = &failures.items[0];
    assert_eq!(event.actor, verifier.info.id);
    assert_eq!(event.app_id.as_deref(), Some(tenant_app.id.as_str()));
    assert_eq!(event.target, format!("caller:{}", verifier.info.id));
}

fn retention_prunes_old_audit_events_and_keeps_the_chain_verifiable(e: Env) {
    let a = app(&e, "billing");
    let short = e
        .kms
        .create_token(
            &e.root,
            &a,
            NewToken {
                name: "short".into(),
                expires_in: Some(60),
                ..Default::default()
            },
        )
        .unwrap();
    e.clock.advance(10 * 86_400);
    let keep = token(&e, &a, &[], &[]);
    let before = e
        .kms
        .list_audit(
            &e.root,
            kms_core::AuditFilter::default(),
            PageRequest::default(),
        )
        .unwrap()
        .items
        .len();
    let report = e
        .kms
        .apply_retention(Some(86_400), Some(86_400), None)
        .unwrap();
    assert_eq!(
        report.audit_events_pruned, 3,
        "init, app and first token events"
    );
    let after = e
        .kms
        .list_audit(
            &e.root,
            kms_core::AuditFilter::default(),
            PageRequest::default(),
        )
        .unwrap();
    assert_eq!(after.items.len(), before - 3 + 1, "the sweep audits itself");
    assert!(matches!(
        e.kms.verify_audit(&e.root).unwrap(),
        kms_core::AuditVerification::Intact { ok: true, .. }
    ));
    assert_eq!(
        e.kms.get_token(&e.root, &short.info.id).unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(verify(&e, &keep.token, None), VerifyCode::Valid);
    // Deleting an event after the anchor is still detected.
    let second = e.kms.apply_retention(Some(86_400), None, None).unwrap();
    assert_eq!(second.audit_events_pruned, 0);
}

#[test]
fn editing_or_deleting_audit_rows_in_the_sqlite_file_is_detected() {
    let e = sqlite();
    let a = app(&e, "billing");
    for _ in 0..3 {
        token(&e, &a, &[], &[]);
    }
    assert!(matches!(
        e.kms.verify_audit(&e.root).unwrap(),
        kms_core::AuditVerification::Intact { events: 5, .. }
    ));
    let db = rusqlite::Connection::open(&e.db).unwrap();
    db.execute(
        "UPDATE audit_events SET actor = 'someone-else' WHERE seq = 3",
        [],
    )
    .unwrap();
    assert_eq!(
        e.kms.verify_audit(&e.root).unwrap(),
        kms_core::AuditVerification::Broken {
            ok: false,
            first_bad_seq: 3
        }
    );
    db.execute("DELETE FROM audit_events WHERE seq = 3", [])
        .unwrap();
    assert_eq!(
        e.kms.verify_audit(&e.root).unwrap(),
        kms_core::AuditVerification::Broken {
            ok: false,
            first_bad_seq: 3
        }
    );
}

#[test]
fn rotating_or_loosening_a_more_powerful_token_is_escalation() {
    let e = memory();
    let a = app(&e, "billing");
    let strong = token(&e, &a, &["app.write", "token.create"], &[]);
    let weak = token(&e, &a, &["token.create"], &[]);
    let weak_caller = e.kms.authenticate(&weak.token, None).unwrap();
    let err = e
        .kms
        .rotate_token(&weak_caller, &strong.info.id, RotateToken::default())
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Forbidden);
    // A system-application token with only token.create cannot take over the root token.
    let system_weak = token(&e, kms_core::SYSTEM_APP_ID, &["token.create"], &[]);
    let system_weak = e.kms.authenticate(&system_weak.token, None).unwrap();
    let root_id = e.root.token_id().unwrap().to_owned();
    let root_rotate = e
        .kms
        .rotate_token(&system_weak, &root_id, RotateToken::default())
        .unwrap_err();
    assert_eq!(root_rotate.code(), ErrorCode::Forbidden);
    let loosen = TokenUpdate {
        uses: Some(None),
        ..Default::default()
    };
    assert_eq!(
        e.kms
            .update_token(&weak_caller, &strong.info.id, loosen)
            .unwrap_err()
            .code(),
        ErrorCode::Forbidden
    );
    // Its own kind it may rotate.
    let peer = token(&e, &a, &["token.create"], &[]);
    e.kms
        .rotate_token(&weak_caller, &peer.info.id, RotateToken::default())
        .unwrap();
}

#[test]
fn a_tenant_cannot_lock_out_an_address_for_anyone_else() {
    let kms = Kms::builder(Arc::new(MemoryStore::new()))
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .lockout_policy(kms_core::LockoutPolicy {
            threshold: 3,
            window_secs: 60,
            lockout_secs: 120,
        })
        .build()
        .unwrap();
    kms.initialize().unwrap();
    let op = kms.operator();
    let mk = |name: &str| {
        let app = kms
            .create_app(
                &op,
                NewApp {
                    name: name.into(),
                    ..Default::default()
                },
            )
            .unwrap();
        let verifier = kms
            .create_token(
                &op,
                &app.id,
                NewToken {
                    name: "v".into(),
                    scopes: vec!["token.verify".into()],
                    ..Default::default()
                },
            )
            .unwrap();
        let user = kms
            .create_token(
                &op,
                &app.id,
                NewToken {
                    name: "u".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        (kms.authenticate(&verifier.token, None).unwrap(), user.token)
    };
    let (evil, _) = mk("evil");
    let (good, good_user) = mk("good");
    let victim = "198.51.100.7".to_string();
    for _ in 0..5 {
        let req = VerifyRequest {
            token: "kms_garbage".into(),
            ip: Some(victim.clone()),
            ..Default::default()
        };
        kms.verify(&evil, &req).unwrap();
    }
    let req = VerifyRequest {
        token: good_user,
        ip: Some(victim.clone()),
        ..Default::default()
    };
    assert_eq!(kms.verify(&good, &req).unwrap().code(), VerifyCode::Valid);
    assert!(kms
        .authenticate(
            &kms.initialize()
                .err()
                .map(|_| String::new())
                .unwrap_or_default(),
            Some(victim.parse().unwrap())
        )
        .is_err());
}

#[test]
fn a_cached_key_expires_from_the_cache_at_its_ttl() {
    let kms = Kms::builder(Arc::new(MemoryStore::new()))
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .cache_ttl(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let root = kms.initialize().unwrap().token;
    assert!(kms.verify_token(&root, None, None).unwrap().is_valid());
    let after_first = kms.cache_stats();
    assert!(kms.verify_token(&root, None, None).unwrap().is_valid());
    assert_eq!(
        kms.cache_stats().hits,
        after_first.hits + 1,
        "the second is a hit"
    );
    std::thread::sleep(std::time::Duration::from_millis(600));
    // Past the TTL the fast path cannot answer, and the full path reads the store again.
    assert!(kms.try_verify_token_cached(&root, None, None).is_none());
    let misses = kms.cache_stats().misses;
    assert!(kms.verify_token(&root, None, None).unwrap().is_valid());
    assert!(kms.cache_stats().misses > misses, "{:?}", kms.cache_stats());
}

#[test]
fn a_repeated_revoke_drops_an_entry_cached_before_another_process_revoked() {
    // Two services over one SQLite file, as a server and the `kms` CLI: neither hears the
    // other's changes through the store's change hook.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let open = || {
        Kms::builder(Arc::new(SqliteStore::open(&db).unwrap()))
            .hash_params(kms_core::dangerous::insecure_hash_params())
            .cache_ttl(std::time::Duration::from_secs(600))
            .build()
            .unwrap()
    };
    let server = open();
    server.initialize().unwrap();
    let op = server.operator();
    let app = server
        .create_app(
            &op,
            NewApp {
                name: "a".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let key = server
        .create_token(
            &op,
            &app.id,
            NewToken {
                name: "k".into(),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(server
        .verify_token(&key.token, None, None)
        .unwrap()
        .is_valid());
    let cli = open();
    cli.revoke_token(&cli.operator(), &key.info.id).unwrap();
    // The server still answers from its cache: it has not heard.
    assert!(server
        .verify_token(&key.token, None, None)
        .unwrap()
        .is_valid());
    // Revoking again on the server changes nothing in the store, and still drops the entry.
    let again = server.revoke_token(&op, &key.info.id).unwrap();
    assert_eq!(again.status, "revoked");
    assert_eq!(
        server.verify_token(&key.token, None, None).unwrap().code(),
        VerifyCode::Revoked
    );
}

#[test]
fn policy_changes_by_two_writers_on_one_file_are_validated_against_each_other() {
    // Two services over one SQLite file (a server and the `kms` CLI): neither hears the
    // other's changes, so each validates against what it loaded; the store's policy version
    // makes a change validated against a stale view be retried against the current one.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let open = || {
        Kms::builder(Arc::new(SqliteStore::open(&db).unwrap()))
            .hash_params(kms_core::dangerous::insecure_hash_params())
            .build()
            .unwrap()
    };
    let a = open();
    a.initialize().unwrap();
    let b = open();
    let (op_a, op_b) = (a.operator(), b.operator());
    a.create_permission(
        &op_a,
        NewPermission {
            scope: "reports.read".into(),
            description: None,
            implies: vec![],
        },
    )
    .unwrap();
    // B has not heard of reports.read, yet its role granting it is accepted: the first
    // attempt is refused as stale and retried against the current policy.
    b.create_role(
        &op_b,
        NewRole {
            name: "analyst".into(),
            description: None,
            permissions: vec!["reports.read".into()],
            inherits: vec![],
            grants: Vec::new(),
        },
    )
    .unwrap();
    // A, which has not heard of the role, may not delete the permission it grants: its
    // stale view says nothing grants it, the store's version says look again.
    let err = a.delete_permission(&op_a, "reports.read").unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err}");
    assert!(err.to_string().contains("analyst"), "{err}");
    let fresh = open();
    let policy = fresh.list_roles(&fresh.operator()).unwrap();
    assert_eq!(policy.len(), 1);
    assert_eq!(policy[0].permissions[0].as_str(), "reports.read");
    assert!(fresh
        .list_permissions(&fresh.operator())
        .unwrap()
        .iter()
        .any(|p| p.scope.as_str() == "reports.read"));
    assert!(matches!(
        fresh.verify_audit(&fresh.operator()).unwrap(),
        kms_core::AuditVerification::Intact { ok: true, .. }
    ));
}

#[test]
fn descriptions_keep_line_breaks_and_refuse_other_control_characters_on_every_store() {
    let kms = Kms::builder(Arc::new(MemoryStore::new()))
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .build()
        .unwrap();
    kms.initialize().unwrap();
    let op = kms.operator();
    let permission = |scope: &str, description: &str| {
        kms.create_permission(
            &op,
            NewPermission {
                scope: scope.into(),
                description: Some(description.into()),
                implies: vec![],
            },
        )
    };
    let kept = permission("notes.read", "first line\nsecond\tline").unwrap();
    assert_eq!(kept.description, "first line\nsecond\tline");
    // U+0000 cannot be stored in a PostgreSQL text column: refused alike everywhere.
    for bad in ["nul \u{0} inside", "bell \u{7}", "escape \u{1b}[31m"] {
        let err = permission("notes.write", bad).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRequest, "{bad:?}");
    }
    assert!(kms
        .list_permissions(&op)
        .unwrap()
        .iter()
        .all(|p| p.scope.as_str() != "notes.write"));
}

/// In process: a conditional grant holds only in a context that satisfies it, and a bad
/// context is refused as the HTTP API refuses it.
#[test]
fn in_process_verification_takes_a_context() {
    let kms = Kms::builder(Arc::new(kms_store::MemoryStore::new()))
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .build()
        .unwrap();
    kms.initialize().unwrap();
    let op = kms.operator();
    let req: kms_core::NewToken = serde_json::from_value(serde_json::json!({
        "name": "c",
        "grants": [{"scope": "app.read", "when": "context.region == \"eu\""}]
    }))
    .unwrap();
    let token = kms
        .create_token(&op, kms_core::SYSTEM_APP_ID, req)
        .unwrap()
        .token;
    let query = kms_core::PermissionQuery::parse("app.read").unwrap();
    let ctx = |v: serde_json::Value| v.as_object().unwrap().clone();
    let eu = kms
        .verify_token_in_context(
            &token,
            Some(&query),
            None,
            &ctx(serde_json::json!({"region": "eu"})),
        )
        .unwrap();
    assert!(eu.is_valid() && eu.allows("app.read"));
    let us = kms
        .verify_token_in_context(
            &token,
            Some(&query),
            None,
            &ctx(serde_json::json!({"region": "us"})),
        )
        .unwrap();
    assert_eq!(us.code(), kms_core::VerifyCode::InsufficientPermissions);
    assert!(!kms
        .verify_token(&token, None, None)
        .unwrap()
        .allows("app.read"));
    assert!(kms
        .verify_token_in_context(&token, None, None, &ctx(serde_json::json!({"bad name": 1})))
        .is_err());
}
