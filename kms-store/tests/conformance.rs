//! The behaviour every store must share. Each check is written once against `dyn Store`
//! and instantiated for every store by `conformance!` at the bottom.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use kms_core::store::{
    AuditQuery, Identity, IdpProtocol, IdpRecord, IdpStatus, KeyAlgorithm, KeyState, LoginAttempt,
    OidcSettings, Policy, RefreshRecord, RefreshStatus, Revocation, SamlSettings, SessionRecord,
    SessionSelector, SigningKeyRecord, StoreError, TokenRecord, UserRecord, UserStatus,
};
use kms_core::store::{Change, ChangeListener, Mutation, Store, UseOutcome};
use kms_core::token_format::TokenPrefix;
use kms_core::{
    AppStatus, Application, AuditEvent, IpNetwork, Permission, RateLimit, Role, RoleName, Scope,
    Timestamp, TokenLimits, TokenStatus,
};
use kms_store::testing::{NoPostgres, ScratchDatabase};
use kms_store::{MemoryStore, PostgresOptions, PostgresStore, SqliteStore};

// ---------------------------------------------------------------------------------------
// Stores under test

/// A store and whatever must live as long as it (dropped after it: fields drop in order).
struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    _database: Option<ScratchDatabase>,
}

fn memory_store() -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::new()),
        _dir: None,
        _database: None,
    }
}

/// A store in a fresh database of the test server (`KMS_TEST_POSTGRES_URL`); `None`, with
/// a notice, when there is none outside CI.
fn postgres_store() -> Option<Fixture> {
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
    Some(Fixture {
        store: Arc::new(store),
        _dir: None,
        _database: Some(database),
    })
}

fn sqlite_store() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("kms.db")).unwrap();
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
        _database: None,
    }
}

// ---------------------------------------------------------------------------------------
// Builders

fn app(id: &str, name: &str) -> Application {
    Application {
        id: id.to_owned(),
        name: name.to_owned(),
        token_prefix: TokenPrefix::parse("kms").unwrap(),
        status: AppStatus::Active,
        created_at: Timestamp::from_unix(1_800_000_000),
        usage_price: None,
        security: Default::default(),
    }
}

fn token(id: &str, app_id: &str) -> TokenRecord {
    TokenRecord {
        id: id.to_owned(),
        app_id: app_id.to_owned(),
        name: format!("{id} name"),
        secret_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".to_owned(),
        start: "kms_abc".to_owned(),
        status: TokenStatus::Active,
        created_at: Timestamp::from_unix(1_800_000_000),
        expires_at: None,
        revoked_at: None,
        scopes: Vec::new(),
        roles: Vec::new(),
        grants: Vec::new(),
        metadata: serde_json::Map::new(),
        limits: TokenLimits::default(),
        rotated_from: None,
        rotated_to: None,
        last_used_at: None,
    }
}

fn with_grants(mut t: TokenRecord, scopes: &[&str], roles: &[&str]) -> TokenRecord {
    t.scopes = scopes.iter().map(|s| scope(s)).collect();
    t.roles = roles.iter().map(|r| role_name(r)).collect();
    t
}

fn with_uses(mut t: TokenRecord, uses: Option<u64>) -> TokenRecord {
    t.limits.uses = uses;
    t
}

fn scope(s: &str) -> Scope {
    Scope::parse(s).unwrap()
}

fn role_name(s: &str) -> RoleName {
    RoleName::parse(s).unwrap()
}

fn permission(s: &str, implies: &[&str]) -> Permission {
    Permission {
        scope: scope(s),
        description: format!("may {s}"),
        implies: implies.iter().map(|i| scope(i)).collect(),
    }
}

fn role(name: &str, permissions: &[&str], inherits: &[&str]) -> Role {
    Role {
        grants: Vec::new(),
        name: role_name(name),
        description: format!("the {name} role"),
        permissions: permissions.iter().map(|s| scope(s)).collect(),
        inherits: inherits.iter().map(|r| role_name(r)).collect(),
    }
}

fn signing_key(kid: &str, created_at: i64) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.to_owned(),
        algorithm: KeyAlgorithm::EdDSA,
        state: KeyState::Active,
        created_at: Timestamp::from_unix(created_at),
        verify_until: None,
        retired_at: None,
        public_key: vec![7; 32],
        sealed_private: vec![0, 1, 2, 255, 0, 254],
    }
}

fn refresh(id: &str, family_id: &str, expires_at: i64) -> RefreshRecord {
    RefreshRecord {
        id: id.to_owned(),
        family_id: family_id.to_owned(),
        token_id: "tok_1".to_owned(),
        app_id: "app_1".to_owned(),
        secret_hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_owned(),
        scope: "billing.read billing.write".to_owned(),
        audience: "kms".to_owned(),
        status: RefreshStatus::Active,
        created_at: Timestamp::from_unix(1_800_000_000),
        expires_at: Timestamp::from_unix(expires_at),
        spent_at: None,
    }
}

fn revocation(id: &str, expires_at: i64) -> Revocation {
    Revocation {
        id: id.to_owned(),
        expires_at: Timestamp::from_unix(expires_at),
    }
}

fn spend(id: &str, at: i64) -> Mutation {
    Mutation::SpendRefreshToken {
        id: id.to_owned(),
        at: Timestamp::from_unix(at),
    }
}

fn audit_event(seq: u64, actor: &str, action: &str, app_id: Option<&str>) -> AuditEvent {
    AuditEvent {
        seq,
        at: Timestamp::from_unix(1_800_000_000 + seq as i64),
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: format!("target {seq}"),
        outcome: "success".to_owned(),
        ip: Some("2001:db8::1".to_owned()),
        request_id: None,
        app_id: app_id.map(str::to_owned),
        details: serde_json::json!({"seq": seq}),
        prev_hash: "0".repeat(64),
        hash: format!("{seq:064x}"),
        subject: None,
        sealed_personal: None,
        personal: None,
    }
}

fn conflict_message(result: Result<(), StoreError>) -> String {
    match result {
        Err(StoreError::Conflict(message)) => message,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn app_ids(store: &dyn Store, after: Option<&str>, limit: usize) -> Vec<String> {
    let apps = store.list_apps(after, limit).unwrap();
    apps.into_iter().map(|a| a.id).collect()
}

fn token_ids(store: &dyn Store, app_id: &str, after: Option<&str>, limit: usize) -> Vec<String> {
    let tokens = store.list_tokens(app_id, after, limit).unwrap();
    tokens.into_iter().map(|t| t.id).collect()
}

/// Everything observable about a store, for before/after comparisons.
#[derive(Debug, PartialEq)]
struct Snapshot {
    apps: Vec<Application>,
    tokens: Vec<TokenRecord>,
    policy: Policy,
    meta: Vec<Option<String>>,
    grants: Vec<bool>,
    signing_keys: Vec<SigningKeyRecord>,
    refresh_tokens: Vec<Option<RefreshRecord>>,
    revocations: Vec<Revocation>,
    audit: Vec<AuditEvent>,
}

fn snapshot(store: &dyn Store) -> Snapshot {
    let apps = store.list_apps(None, 1000).unwrap();
    let tokens = apps
        .iter()
        .flat_map(|a| store.list_tokens(&a.id, None, 1000).unwrap())
        .collect();
    let meta = ["k1", "k2"]
        .iter()
        .map(|k| store.get_meta(k).unwrap())
        .collect();
    let grants = ["a", "b", "c"]
        .iter()
        .flat_map(|n| {
            [
                store.scope_is_granted(&scope(n)).unwrap(),
                store.role_is_granted(&role_name(n)).unwrap(),
            ]
        })
        .collect();
    let refresh_tokens = ["rt_1", "rt_2", "rt_3", "rt_9"]
        .iter()
        .map(|id| store.get_refresh_token(id).unwrap())
        .collect();
    Snapshot {
        apps,
        tokens,
        policy: store.load_policy().unwrap(),
        meta,
        grants,
        signing_keys: store.list_signing_keys().unwrap(),
        refresh_tokens,
        revocations: store.list_revocations().unwrap(),
        audit: store.audit_after(0, 1000).unwrap(),
    }
}

/// A store holding two apps, three tokens, a permission, a role, a metadata key, a signing
/// key, three refresh tokens in two families, two deny-list entries and an audit event.
fn populate(store: &dyn Store) {
    store
        .apply(&[
            Mutation::CreateMeta {
                key: "k1".to_owned(),
                value: "v1".to_owned(),
            },
            Mutation::InsertApp(app("app_1", "one")),
            Mutation::InsertApp(app("app_2", "two")),
            Mutation::InsertPermission(permission("a", &[])),
            Mutation::PutRole(role("a", &["a"], &[])),
            Mutation::InsertToken(with_grants(token("tok_1", "app_1"), &["a"], &["a"])),
            Mutation::InsertToken(with_grants(token("tok_2", "app_1"), &["b"], &[])),
            Mutation::InsertToken(with_uses(token("tok_3", "app_2"), Some(3))),
            Mutation::PutSigningKey(signing_key("k_1", 100)),
            Mutation::InsertRefreshToken(refresh("rt_1", "fam_1", 2_000)),
            Mutation::InsertRefreshToken(refresh("rt_2", "fam_1", 3_000)),
            Mutation::InsertRefreshToken(refresh("rt_3", "fam_2", 3_000)),
            Mutation::PutRevocation(revocation("jti:a", 2_000)),
            Mutation::PutRevocation(revocation("family:fam_0", 3_000)),
            Mutation::AppendAudit(audit_event(1, "operator", "app.create", Some("app_1"))),
        ])
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// Batches are all or nothing

fn batch_with_a_conflicting_last_mutation_changes_nothing(store: &Arc<dyn Store>) {
    let before = snapshot(store.as_ref());
    let result = store.apply(&[
        Mutation::CreateMeta {
            key: "k1".to_owned(),
            value: "v".to_owned(),
        },
        Mutation::InsertApp(app("app_1", "one")),
        Mutation::InsertPermission(permission("a", &[])),
        Mutation::PutRole(role("a", &["a"], &[])),
        Mutation::InsertToken(with_grants(token("tok_1", "app_1"), &["a"], &["a"])),
        Mutation::InsertApp(app("app_2", "one")),
    ]);
    assert!(matches!(result, Err(StoreError::Conflict(_))));
    assert_eq!(snapshot(store.as_ref()), before);
    assert!(store.get_app("app_1").unwrap().is_none());
    assert!(store.get_token("tok_1").unwrap().is_none());
    assert!(store.get_meta("k1").unwrap().is_none());
}

fn failed_batch_restores_every_kind_of_change(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    let before = snapshot(store.as_ref());
    let mut renamed = app("app_1", "renamed");
    renamed.status = AppStatus::Disabled;
    let result = store.apply(&[
        Mutation::CreateMeta {
            key: "k2".to_owned(),
            value: "v2".to_owned(),
        },
        Mutation::UpdateApp(renamed),
        Mutation::UpdateToken(with_grants(token("tok_1", "app_1"), &["c"], &["c"])),
        Mutation::DeleteToken("tok_2".to_owned()),
        Mutation::DeleteApp("app_2".to_owned()),
        Mutation::DeletePermission(scope("a")),
        Mutation::DeleteRole(role_name("a")),
        Mutation::PutRole(role("b", &[], &[])),
        Mutation::InsertApp(app("app_3", "one")),
        Mutation::PutSigningKey(signing_key("k_2", 50)),
        Mutation::PutSigningKey(SigningKeyRecord {
            state: KeyState::Retired,
            ..signing_key("k_1", 100)
        }),
        spend("rt_1", 1_900),
        Mutation::RevokeRefreshFamily("fam_2".to_owned()),
        Mutation::InsertRefreshToken(refresh("rt_9", "fam_9", 9_000)),
        Mutation::PutRevocation(revocation("jti:b", 9_000)),
        Mutation::PurgeExpired {
            before: Timestamp::from_unix(10_000),
        },
        Mutation::AppendAudit(audit_event(2, "operator", "token.update", None)),
        Mutation::InsertToken(token("tok_1", "app_1")),
    ]);
    assert!(matches!(result, Err(StoreError::Conflict(_))));
    assert_eq!(snapshot(store.as_ref()), before);
    // The indexes were restored too: the old name is still taken, the new one free.
    let taken = store.apply(&[Mutation::InsertApp(app("app_9", "one"))]);
    assert!(matches!(taken, Err(StoreError::Conflict(_))));
    store
        .apply(&[Mutation::InsertApp(app("app_9", "renamed"))])
        .unwrap();
}

fn empty_batch_succeeds(store: &Arc<dyn Store>) {
    store.apply(&[]).unwrap();
    assert!(store.list_apps(None, 10).unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// Conflicts

fn create_meta_conflicts_when_the_key_exists(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    let message = conflict_message(store.apply(&[Mutation::CreateMeta {
        key: "k1".to_owned(),
        value: "other".to_owned(),
    }]));
    assert!(message.contains("k1"), "{message}");
    assert_eq!(store.get_meta("k1").unwrap().as_deref(), Some("v1"));
    assert_eq!(store.get_meta("missing").unwrap(), None);
}

fn insert_app_conflicts_on_a_taken_id_or_name(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    let message = conflict_message(store.apply(&[Mutation::InsertApp(app("app_1", "fresh"))]));
    assert_eq!(message, "an application with id \"app_1\" already exists");
    let message = conflict_message(store.apply(&[Mutation::InsertApp(app("app_9", "one"))]));
    assert_eq!(message, "an application named \"one\" already exists");
    assert!(store.get_app("app_9").unwrap().is_none());
}

fn update_app_conflicts_when_the_name_belongs_to_another_app(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    let message = conflict_message(store.apply(&[Mutation::UpdateApp(app("app_1", "two"))]));
    assert_eq!(message, "an application named \"two\" already exists");
    // Keeping its own name is no conflict, and a rename frees the old name.
    let mut disabled = app("app_1", "one");
    disabled.status = AppStatus::Disabled;
    store
        .apply(&[Mutation::UpdateApp(disabled.clone())])
        .unwrap();
    assert_eq!(store.get_app("app_1").unwrap(), Some(disabled));
    store
        .apply(&[Mutation::UpdateApp(app("app_1", "uno"))])
        .unwrap();
    store
        .apply(&[Mutation::InsertApp(app("app_3", "one"))])
        .unwrap();
}

fn update_app_conflicts_when_the_app_does_not_exist(store: &Arc<dyn Store>) {
    let message = conflict_message(store.apply(&[Mutation::UpdateApp(app("app_x", "x"))]));
    assert_eq!(message, "the application \"app_x\" does not exist");
    assert!(store.get_app("app_x").unwrap().is_none());
}

fn insert_permission_conflicts_when_the_scope_exists(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    let message =
        conflict_message(store.apply(&[Mutation::InsertPermission(permission("a", &[]))]));
    assert!(message.contains("already defined"), "{message}");
}

fn put_role_inserts_or_replaces(store: &Arc<dyn Store>) {
    store
        .apply(&[Mutation::InsertPermission(permission("a", &[]))])
        .unwrap();
    store
        .apply(&[Mutation::PutRole(role("r", &[], &[]))])
        .unwrap();
    let replacement = role("r", &["a"], &[]);
    store
        .apply(&[Mutation::PutRole(replacement.clone())])
        .unwrap();
    let policy = store.load_policy().unwrap();
    assert_eq!(policy.roles.len(), 1);
    assert_eq!(policy.roles[&role_name("r")], replacement);
}

fn insert_token_conflicts_on_a_taken_id(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    let message = conflict_message(store.apply(&[Mutation::InsertToken(token("tok_1", "app_2"))]));
    assert_eq!(message, "a token with id \"tok_1\" already exists");
    assert_eq!(store.get_token("tok_1").unwrap().unwrap().app_id, "app_1");
}

fn tokens_must_belong_to_an_existing_app(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    let message = conflict_message(store.apply(&[Mutation::InsertToken(token("tok_9", "app_x"))]));
    assert_eq!(message, "the application \"app_x\" does not exist");
    let moved = token("tok_1", "app_x");
    let message = conflict_message(store.apply(&[Mutation::UpdateToken(moved)]));
    assert_eq!(message, "the application \"app_x\" does not exist");
}

fn update_token_replaces_an_existing_token_only(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    let mut revoked = with_grants(token("tok_1", "app_1"), &["a"], &[]);
    revoked.status = TokenStatus::Revoked;
    revoked.revoked_at = Some(Timestamp::from_unix(1_800_000_100));
    store
        .apply(&[Mutation::UpdateToken(revoked.clone())])
        .unwrap();
    assert_eq!(store.get_token("tok_1").unwrap(), Some(revoked));

    let message = conflict_message(store.apply(&[Mutation::UpdateToken(token("tok_x", "app_1"))]));
    assert_eq!(message, "the token \"tok_x\" does not exist");
    assert!(store.get_token("tok_x").unwrap().is_none());
}

fn use_limits_beyond_the_stored_range_conflict(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    let huge = with_uses(token("tok_9", "app_1"), Some(u64::MAX));
    let message = conflict_message(store.apply(&[Mutation::InsertToken(huge)]));
    assert!(message.contains("use limit"), "{message}");
    let largest = with_uses(token("tok_9", "app_1"), Some(i64::MAX as u64));
    store
        .apply(&[Mutation::InsertToken(largest.clone())])
        .unwrap();
    assert_eq!(store.get_token("tok_9").unwrap(), Some(largest));
}

// ---------------------------------------------------------------------------------------
// Deletes

fn delete_app_deletes_its_tokens_and_their_grants(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    store
        .apply(&[Mutation::DeleteApp("app_1".to_owned())])
        .unwrap();
    assert!(store.get_app("app_1").unwrap().is_none());
    assert!(store.get_token("tok_1").unwrap().is_none());
    assert!(store.get_token("tok_2").unwrap().is_none());
    assert!(store.list_tokens("app_1", None, 10).unwrap().is_empty());
    assert!(!store.scope_is_granted(&scope("a")).unwrap());
    assert!(!store.role_is_granted(&role_name("a")).unwrap());
    // The other application and its token are untouched, and the name is free again.
    assert!(store.get_app("app_2").unwrap().is_some());
    assert!(store.get_token("tok_3").unwrap().is_some());
    store
        .apply(&[Mutation::InsertApp(app("app_1b", "one"))])
        .unwrap();
}

fn deleting_missing_rows_is_a_no_op(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    let before = snapshot(store.as_ref());
    store
        .apply(&[
            Mutation::DeleteApp("app_x".to_owned()),
            Mutation::DeleteToken("tok_x".to_owned()),
            Mutation::DeletePermission(scope("x")),
            Mutation::DeleteRole(role_name("x")),
        ])
        .unwrap();
    assert_eq!(snapshot(store.as_ref()), before);
}

fn deleted_rows_can_be_inserted_again(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    store
        .apply(&[
            Mutation::DeleteToken("tok_1".to_owned()),
            Mutation::InsertToken(token("tok_1", "app_2")),
            Mutation::DeletePermission(scope("a")),
            Mutation::InsertPermission(permission("a", &[])),
        ])
        .unwrap();
    assert_eq!(store.get_token("tok_1").unwrap().unwrap().app_id, "app_2");
}

// ---------------------------------------------------------------------------------------
// Listings

fn apps_are_listed_by_id_after_the_cursor(store: &Arc<dyn Store>) {
    let ids = ["app_c", "app_a", "app_e", "app_b", "app_d"];
    let batch: Vec<_> = ids
        .iter()
        .map(|id| Mutation::InsertApp(app(id, &format!("{id} name"))))
        .collect();
    store.apply(&batch).unwrap();
    let s = store.as_ref();
    assert_eq!(
        app_ids(s, None, 10),
        ["app_a", "app_b", "app_c", "app_d", "app_e"]
    );
    assert_eq!(app_ids(s, None, 2), ["app_a", "app_b"]);
    assert_eq!(app_ids(s, Some("app_b"), 2), ["app_c", "app_d"]);
    assert_eq!(app_ids(s, Some("app_bb"), 10), ["app_c", "app_d", "app_e"]);
    assert_eq!(app_ids(s, Some("app_e"), 10), Vec::<String>::new());
    assert_eq!(app_ids(s, None, 0), Vec::<String>::new());
    assert_eq!(app_ids(s, Some(""), 1), ["app_a"]);
}

fn tokens_are_listed_per_app_by_id_after_the_cursor(store: &Arc<dyn Store>) {
    store
        .apply(&[
            Mutation::InsertApp(app("app_1", "one")),
            Mutation::InsertApp(app("app_2", "two")),
            Mutation::InsertToken(token("tok_c", "app_1")),
            Mutation::InsertToken(token("tok_a", "app_1")),
            Mutation::InsertToken(token("tok_b", "app_2")),
            Mutation::InsertToken(token("tok_d", "app_1")),
        ])
        .unwrap();
    let s = store.as_ref();
    assert_eq!(token_ids(s, "app_1", None, 10), ["tok_a", "tok_c", "tok_d"]);
    assert_eq!(token_ids(s, "app_1", Some("tok_a"), 1), ["tok_c"]);
    assert_eq!(token_ids(s, "app_1", Some("tok_b"), 10), ["tok_c", "tok_d"]);
    assert_eq!(
        token_ids(s, "app_1", Some("tok_d"), 10),
        Vec::<String>::new()
    );
    assert_eq!(token_ids(s, "app_2", None, 10), ["tok_b"]);
    assert_eq!(token_ids(s, "app_x", None, 10), Vec::<String>::new());
    assert_eq!(token_ids(s, "app_1", None, 0), Vec::<String>::new());
}

fn paging_through_many_rows_visits_each_once(store: &Arc<dyn Store>) {
    let mut batch = vec![Mutation::InsertApp(app("app_1", "one"))];
    batch.extend((0..57).map(|i| Mutation::InsertToken(token(&format!("tok_{i:03}"), "app_1"))));
    store.apply(&batch).unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = token_ids(store.as_ref(), "app_1", cursor.as_deref(), 10);
        if page.is_empty() {
            break;
        }
        cursor = page.last().cloned();
        seen.extend(page);
    }
    let expected: Vec<String> = (0..57).map(|i| format!("tok_{i:03}")).collect();
    assert_eq!(seen, expected);
}

// ---------------------------------------------------------------------------------------
// Grant lookups

fn grant_lookups_follow_token_scopes_and_roles(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    let s = store.as_ref();
    assert!(s.scope_is_granted(&scope("a")).unwrap());
    assert!(s.scope_is_granted(&scope("b")).unwrap());
    assert!(!s.scope_is_granted(&scope("c")).unwrap());
    assert!(s.role_is_granted(&role_name("a")).unwrap());
    assert!(!s.role_is_granted(&role_name("b")).unwrap());
    // A scope and a role of the same name are different grants.
    assert!(!s.role_is_granted(&role_name("b")).unwrap());
    // Direct grants only: a sub-scope is not granted by its parent.
    assert!(!s.scope_is_granted(&scope("a.read")).unwrap());

    // Updating a token replaces its grants.
    let regranted = with_grants(token("tok_1", "app_1"), &["c"], &["c"]);
    s.apply(&[Mutation::UpdateToken(regranted)]).unwrap();
    assert!(!s.scope_is_granted(&scope("a")).unwrap());
    assert!(!s.role_is_granted(&role_name("a")).unwrap());
    assert!(s.scope_is_granted(&scope("c")).unwrap());
    assert!(s.role_is_granted(&role_name("c")).unwrap());
}

fn a_grant_held_by_two_tokens_survives_deleting_one(store: &Arc<dyn Store>) {
    store
        .apply(&[
            Mutation::InsertApp(app("app_1", "one")),
            Mutation::InsertToken(with_grants(token("tok_1", "app_1"), &["a", "a"], &["r"])),
            Mutation::InsertToken(with_grants(token("tok_2", "app_1"), &["a"], &["r", "r"])),
        ])
        .unwrap();
    store
        .apply(&[Mutation::DeleteToken("tok_1".to_owned())])
        .unwrap();
    assert!(store.scope_is_granted(&scope("a")).unwrap());
    assert!(store.role_is_granted(&role_name("r")).unwrap());
    store
        .apply(&[Mutation::DeleteToken("tok_2".to_owned())])
        .unwrap();
    assert!(!store.scope_is_granted(&scope("a")).unwrap());
    assert!(!store.role_is_granted(&role_name("r")).unwrap());
}

// ---------------------------------------------------------------------------------------
// Use counters

fn consume_use_counts_down_and_stops_at_zero(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    store
        .apply(&[Mutation::InsertToken(with_uses(
            token("tok_0", "app_1"),
            Some(0),
        ))])
        .unwrap();
    let s = store.as_ref();
    assert_eq!(s.consume_use("tok_3").unwrap(), UseOutcome::Remaining(2));
    assert_eq!(s.get_token("tok_3").unwrap().unwrap().limits.uses, Some(2));
    assert_eq!(s.consume_use("tok_3").unwrap(), UseOutcome::Remaining(1));
    assert_eq!(s.consume_use("tok_3").unwrap(), UseOutcome::Remaining(0));
    assert_eq!(s.consume_use("tok_3").unwrap(), UseOutcome::Exhausted);
    assert_eq!(s.get_token("tok_3").unwrap().unwrap().limits.uses, Some(0));
    assert_eq!(s.consume_use("tok_0").unwrap(), UseOutcome::Exhausted);
    assert_eq!(s.consume_use("tok_1").unwrap(), UseOutcome::Unlimited);
    assert_eq!(s.get_token("tok_1").unwrap().unwrap().limits.uses, None);
    assert_eq!(s.consume_use("tok_x").unwrap(), UseOutcome::Missing);
    assert_eq!(
        s.list_tokens("app_2", None, 1).unwrap()[0].limits.uses,
        Some(0),
        "listings show the stored counter too"
    );
}

fn concurrent_consumers_spend_each_use_exactly_once(store: &Arc<dyn Store>) {
    store
        .apply(&[
            Mutation::InsertApp(app("app_1", "one")),
            Mutation::InsertToken(with_uses(token("tok_1", "app_1"), Some(100))),
        ])
        .unwrap();
    let outcomes: Vec<UseOutcome> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    (0..20)
                        .map(|_| store.consume_use("tok_1").unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let remaining: BTreeSet<u64> = outcomes
        .iter()
        .filter_map(|o| match o {
            UseOutcome::Remaining(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(
        remaining,
        (0..100).collect(),
        "each count is returned exactly once"
    );
    let exhausted = outcomes
        .iter()
        .filter(|o| **o == UseOutcome::Exhausted)
        .count();
    assert_eq!(exhausted, 60);
    assert_eq!(
        store.get_token("tok_1").unwrap().unwrap().limits.uses,
        Some(0)
    );
}

// ---------------------------------------------------------------------------------------
// Change listeners

/// Records the changes it hears and, on each, what the store shows at that moment.
struct Recorder {
    store: Arc<dyn Store>,
    heard: Mutex<Vec<(Change, usize)>>,
}

impl ChangeListener for Recorder {
    fn on_change(&self, change: &Change) {
        // Calling back into the store must not deadlock, and must see the committed batch.
        let roles = self.store.load_policy().unwrap().roles.len();
        self.heard.lock().unwrap().push((change.clone(), roles));
    }
}

fn heard(recorder: &Recorder) -> Vec<(Change, usize)> {
    std::mem::take(&mut *recorder.heard.lock().unwrap())
}

fn listeners_hear_changes_after_the_commit(store: &Arc<dyn Store>) {
    let recorder = Arc::new(Recorder {
        store: store.clone(),
        heard: Mutex::new(Vec::new()),
    });
    let as_listener: Arc<dyn ChangeListener> = recorder.clone();
    store.subscribe(Arc::downgrade(&as_listener));

    // Insertions announce nothing: no cache can hold what did not exist.
    populate(store.as_ref());
    let after_populate = heard(&recorder);
    assert_eq!(
        after_populate,
        [
            (Change::Policy, 1),
            (Change::Keys, 1),
            (Change::Revocation("jti:a".to_owned()), 1),
            (Change::Revocation("family:fam_0".to_owned()), 1),
        ]
    );

    store
        .apply(&[
            Mutation::PutRole(role("b", &[], &[])),
            Mutation::PutRole(role("c", &[], &[])),
            Mutation::UpdateToken(token("tok_1", "app_1")),
            Mutation::DeleteToken("tok_2".to_owned()),
            Mutation::UpdateApp(app("app_2", "zwei")),
            Mutation::DeleteApp("app_1".to_owned()),
        ])
        .unwrap();
    assert_eq!(
        heard(&recorder),
        [
            (Change::Policy, 3),
            (Change::Token("tok_1".to_owned()), 3),
            (Change::Token("tok_2".to_owned()), 3),
            (Change::App("app_2".to_owned()), 3),
            (Change::App("app_1".to_owned()), 3),
        ]
    );

    // A failed batch committed nothing, so there is nothing to hear.
    let failed = store.apply(&[
        Mutation::DeleteRole(role_name("b")),
        Mutation::InsertApp(app("app_2", "again")),
    ]);
    assert!(failed.is_err());
    assert!(heard(&recorder).is_empty());
}

fn dropped_listeners_are_skipped(store: &Arc<dyn Store>) {
    let recorder = Arc::new(Recorder {
        store: store.clone(),
        heard: Mutex::new(Vec::new()),
    });
    let as_listener: Arc<dyn ChangeListener> = recorder;
    store.subscribe(Arc::downgrade(&as_listener));
    drop(as_listener);
    store
        .apply(&[Mutation::PutRole(role("r", &[], &[]))])
        .unwrap();
    assert_eq!(store.load_policy().unwrap().roles.len(), 1);
}

// ---------------------------------------------------------------------------------------
// Round trips

fn every_token_field_round_trips_unchanged(store: &Arc<dyn Store>) {
    // U+0000 has a check of its own (`a_nul_character_round_trips_or_changes_nothing`).
    let hostile = "Robert'); DROP TABLE tokens;-- \"quoted\" \\ % _ \u{1} ctl";
    let unicode = "clé 🔑 ключ 鍵 \u{202e}reversed";
    let owner = app("app_ünï'; DELETE FROM apps;--", unicode);
    let mut metadata = serde_json::Map::new();
    metadata.insert(hostile.to_owned(), serde_json::json!(unicode));
    metadata.insert(
        "nested".to_owned(),
        serde_json::json!({"list": [1, 2.5, null, true, "x"], "big": u64::MAX, "neg": -7}),
    );
    let full = TokenRecord {
        id: format!("tok_{hostile}"),
        app_id: owner.id.clone(),
        name: format!("{unicode} {hostile}"),
        secret_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".to_owned(),
        start: "kms_🔑'".to_owned(),
        status: TokenStatus::Revoked,
        created_at: Timestamp::from_unix(-86_400),
        expires_at: Some(Timestamp::from_unix(i64::MAX)),
        revoked_at: Some(Timestamp::from_unix(0)),
        scopes: vec![
            scope("billing.invoices.read"),
            scope("a-b_c.d"),
            scope("admin"),
        ],
        roles: vec![role_name("support"), role_name("team.a-1")],
        grants: Vec::new(),
        metadata,
        limits: TokenLimits {
            ratelimit: Some(RateLimit {
                limit: u32::MAX,
                per_seconds: 60,
            }),
            uses: Some(42),
            ip_allow: vec![
                IpNetwork::parse("10.0.0.0/8").unwrap(),
                IpNetwork::parse("2001:db8::/32").unwrap(),
                IpNetwork::parse("192.0.2.7").unwrap(),
            ],
        },
        rotated_from: Some(format!("tok_{unicode}")),
        last_used_at: None,
        rotated_to: Some(hostile.to_owned()),
    };
    let minimal = token("tok_min", &owner.id);
    store
        .apply(&[
            Mutation::InsertApp(owner.clone()),
            Mutation::InsertToken(full.clone()),
            Mutation::InsertToken(minimal.clone()),
            Mutation::CreateMeta {
                key: hostile.to_owned(),
                value: unicode.to_owned(),
            },
        ])
        .unwrap();
    assert_eq!(store.get_app(&owner.id).unwrap(), Some(owner.clone()));
    assert_eq!(store.get_token(&full.id).unwrap(), Some(full.clone()));
    assert_eq!(store.get_token("tok_min").unwrap(), Some(minimal.clone()));
    assert_eq!(
        store.list_tokens(&owner.id, None, 10).unwrap(),
        [full, minimal]
    );
    assert_eq!(store.get_meta(hostile).unwrap().as_deref(), Some(unicode));
    assert!(store
        .scope_is_granted(&scope("billing.invoices.read"))
        .unwrap());
    assert!(store.role_is_granted(&role_name("team.a-1")).unwrap());
}

/// U+0000 in stored text: SQLite and the memory store keep it; PostgreSQL's text cannot hold
/// it, so that store refuses the whole batch with a conflict that says why (never a
/// corrupt-store error, and nothing half-written). Inside JSON (metadata) it is escaped
/// and stored everywhere.
fn a_nul_character_round_trips_or_changes_nothing(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    let before = snapshot(store.as_ref());
    let mut t = token("tok_nul", "app_1");
    t.name = "nul \0 inside".to_owned();
    t.metadata
        .insert("k\0".to_owned(), serde_json::json!("v\0"));
    match store.apply(&[Mutation::InsertToken(t.clone())]) {
        Ok(()) => assert_eq!(store.get_token("tok_nul").unwrap(), Some(t)),
        Err(StoreError::Conflict(message)) => {
            assert!(message.contains("U+0000"), "{message}");
            assert_eq!(snapshot(store.as_ref()), before);
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
    let mut json_only = token("tok_json", "app_1");
    json_only
        .metadata
        .insert("k\0".to_owned(), serde_json::json!("v\0"));
    store
        .apply(&[Mutation::InsertToken(json_only.clone())])
        .unwrap();
    assert_eq!(store.get_token("tok_json").unwrap(), Some(json_only));
}

fn policy_round_trips_unchanged(store: &Arc<dyn Store>) {
    let permissions = vec![
        permission("billing", &[]),
        permission("billing.read", &[]),
        permission("billing.write", &["billing.read"]),
        Permission {
            scope: scope("x"),
            description: "Robert'); DROP TABLE roles;-- 🔑".to_owned(),
            implies: Vec::new(),
        },
    ];
    let roles = vec![
        role("viewer", &["billing.read"], &[]),
        role("support", &["billing", "x"], &["viewer"]),
    ];
    let mut batch: Vec<_> = permissions
        .iter()
        .cloned()
        .map(Mutation::InsertPermission)
        .collect();
    batch.extend(roles.iter().cloned().map(Mutation::PutRole));
    store.apply(&batch).unwrap();
    let expected = Policy {
        permissions: permissions
            .into_iter()
            .map(|p| (p.scope.clone(), p))
            .collect(),
        roles: roles.into_iter().map(|r| (r.name.clone(), r)).collect(),
    };
    assert_eq!(store.load_policy().unwrap(), expected);
}

fn a_healthy_store_answers_ping(store: &Arc<dyn Store>) {
    store.ping().unwrap();
}

// ---------------------------------------------------------------------------------------
// Signing keys, refresh tokens and the deny-list

fn signing_keys_are_upserted_and_listed_oldest_first(store: &Arc<dyn Store>) {
    let newest = signing_key("k_b", 300);
    let oldest = SigningKeyRecord {
        algorithm: KeyAlgorithm::HS256,
        public_key: Vec::new(),
        ..signing_key("k_c", 100)
    };
    let tied = signing_key("k_a", 300);
    store
        .apply(&[
            Mutation::PutSigningKey(newest.clone()),
            Mutation::PutSigningKey(oldest.clone()),
            Mutation::PutSigningKey(tied.clone()),
        ])
        .unwrap();
    // Keys created in the same second list in the order they were added.
    assert_eq!(
        store.list_signing_keys().unwrap(),
        [oldest.clone(), newest.clone(), tied.clone()]
    );

    let demoted = SigningKeyRecord {
        state: KeyState::VerifyOnly,
        verify_until: Some(Timestamp::from_unix(1_000)),
        retired_at: Some(Timestamp::from_unix(-5)),
        ..newest
    };
    store
        .apply(&[Mutation::PutSigningKey(demoted.clone())])
        .unwrap();
    // Replacing a key keeps its place.
    assert_eq!(store.list_signing_keys().unwrap(), [oldest, demoted, tied]);
}

fn refresh_token_insert_conflicts_on_a_taken_id(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    let message =
        conflict_message(store.apply(&[Mutation::InsertRefreshToken(refresh("rt_1", "fam_x", 1))]));
    assert!(message.contains("rt_1"), "{message}");
    assert_eq!(
        store.get_refresh_token("rt_1").unwrap().unwrap().family_id,
        "fam_1"
    );
    assert_eq!(store.get_refresh_token("rt_x").unwrap(), None);
}

fn refresh_records_round_trip_unchanged(store: &Arc<dyn Store>) {
    let record = RefreshRecord {
        status: RefreshStatus::Spent,
        spent_at: Some(Timestamp::from_unix(1_800_000_001)),
        scope: "a 'b' \"c\" 🔑".to_owned(),
        ..refresh("rt_'; DROP TABLE refresh_tokens;--", "fam_ü", i64::MAX)
    };
    store
        .apply(&[Mutation::InsertRefreshToken(record.clone())])
        .unwrap();
    assert_eq!(store.get_refresh_token(&record.id).unwrap(), Some(record));
}

fn a_refresh_token_is_spent_once_and_only_while_active(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    store.apply(&[spend("rt_1", 1_500)]).unwrap();
    let spent = store.get_refresh_token("rt_1").unwrap().unwrap();
    assert_eq!(spent.status, RefreshStatus::Spent);
    assert_eq!(spent.spent_at, Some(Timestamp::from_unix(1_500)));

    let again = conflict_message(store.apply(&[spend("rt_1", 1_600)]));
    assert!(again.contains("already been exchanged"), "{again}");
    assert_eq!(store.get_refresh_token("rt_1").unwrap(), Some(spent));

    store
        .apply(&[Mutation::RevokeRefreshFamily("fam_2".to_owned())])
        .unwrap();
    let revoked = conflict_message(store.apply(&[spend("rt_3", 1_600)]));
    assert!(revoked.contains("revoked"), "{revoked}");
    let missing = conflict_message(store.apply(&[spend("rt_x", 1_600)]));
    assert!(missing.contains("does not exist"), "{missing}");
}

fn concurrent_exchanges_of_one_refresh_token_succeed_once(store: &Arc<dyn Store>) {
    store
        .apply(&[Mutation::InsertRefreshToken(refresh(
            "rt_1", "fam_1", 9_000,
        ))])
        .unwrap();
    let successes = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|i| scope.spawn(move || store.apply(&[spend("rt_1", 1_000 + i)]).is_ok()))
            .collect();
        let outcomes: Vec<bool> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        outcomes.into_iter().filter(|ok| *ok).count()
    });
    assert_eq!(successes, 1);
}

fn revoking_a_family_revokes_every_member_and_nothing_else(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    store.apply(&[spend("rt_1", 1_500)]).unwrap();
    store
        .apply(&[Mutation::RevokeRefreshFamily("fam_1".to_owned())])
        .unwrap();
    for id in ["rt_1", "rt_2"] {
        let r = store.get_refresh_token(id).unwrap().unwrap();
        assert_eq!(r.status, RefreshStatus::Revoked, "{id}");
    }
    // Revoking keeps the record of when it was exchanged.
    let rt_1 = store.get_refresh_token("rt_1").unwrap().unwrap();
    assert_eq!(rt_1.spent_at, Some(Timestamp::from_unix(1_500)));
    let other = store.get_refresh_token("rt_3").unwrap().unwrap();
    assert_eq!(other.status, RefreshStatus::Active);
    store
        .apply(&[Mutation::RevokeRefreshFamily("fam_x".to_owned())])
        .unwrap();
}

fn revocations_are_upserted_and_listed_by_id(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    store
        .apply(&[
            Mutation::PutRevocation(revocation("jti:a", 5_000)),
            Mutation::PutRevocation(revocation("jti:0", 1)),
        ])
        .unwrap();
    assert_eq!(
        store.list_revocations().unwrap(),
        [
            revocation("family:fam_0", 3_000),
            revocation("jti:0", 1),
            revocation("jti:a", 5_000)
        ]
    );
}

fn purge_deletes_only_what_expired_before_the_cut_off(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    store
        .apply(&[Mutation::PurgeExpired {
            before: Timestamp::from_unix(3_000),
        }])
        .unwrap();
    assert_eq!(
        store.list_revocations().unwrap(),
        [revocation("family:fam_0", 3_000)]
    );
    assert_eq!(store.get_refresh_token("rt_1").unwrap(), None);
    assert!(store.get_refresh_token("rt_2").unwrap().is_some());
    assert!(store.get_refresh_token("rt_3").unwrap().is_some());
    // Nothing else is touched.
    assert_eq!(store.list_signing_keys().unwrap().len(), 1);
    assert!(store.get_token("tok_1").unwrap().is_some());
}

fn listeners_hear_key_and_revocation_changes(store: &Arc<dyn Store>) {
    let recorder = Arc::new(Recorder {
        store: store.clone(),
        heard: Mutex::new(Vec::new()),
    });
    let as_listener: Arc<dyn ChangeListener> = recorder.clone();
    store.subscribe(Arc::downgrade(&as_listener));
    store
        .apply(&[
            Mutation::PutSigningKey(signing_key("k_1", 1)),
            Mutation::PutSigningKey(signing_key("k_2", 2)),
            Mutation::InsertRefreshToken(refresh("rt_1", "fam_1", 9_000)),
            spend("rt_1", 10),
            Mutation::RevokeRefreshFamily("fam_1".to_owned()),
            Mutation::PutRevocation(revocation("family:fam_1", 9_000)),
            Mutation::PurgeExpired {
                before: Timestamp::from_unix(0),
            },
        ])
        .unwrap();
    let changes: Vec<Change> = heard(&recorder).into_iter().map(|(c, _)| c).collect();
    assert_eq!(
        changes,
        [Change::Keys, Change::Revocation("family:fam_1".to_owned())]
    );
}

// ---------------------------------------------------------------------------------------
// Users, identity providers, login attempts, sessions and the replay cache

fn identity(idp_id: &str, subject: &str) -> Identity {
    Identity {
        idp_id: idp_id.to_owned(),
        subject: subject.to_owned(),
    }
}

fn user(id: &str, app_id: &str, identities: &[(&str, &str)]) -> UserRecord {
    UserRecord {
        id: id.to_owned(),
        app_id: app_id.to_owned(),
        email: Some(format!("{id}@example.com")),
        name: None,
        status: UserStatus::Active,
        roles: Vec::new(),
        mapped_roles: Vec::new(),
        grants: Vec::new(),
        identities: identities.iter().map(|(i, s)| identity(i, s)).collect(),
        created_at: Timestamp::from_unix(1_800_000_000),
        last_login_at: None,
    }
}

fn oidc(issuer: &str) -> IdpProtocol {
    IdpProtocol::Oidc(OidcSettings {
        issuer: issuer.to_owned(),
        client_id: "kms-client".to_owned(),
        sealed_client_secret: None,
        scopes: vec!["openid".to_owned(), "email".to_owned()],
        groups_claim: None,
        algorithms: vec!["RS256".to_owned()],
        discovery: serde_json::json!({"issuer": issuer}),
        discovered_at: Timestamp::from_unix(1_800_000_000),
    })
}

fn idp(id: &str, app_id: &str, slug: &str) -> IdpRecord {
    IdpRecord {
        id: id.to_owned(),
        app_id: app_id.to_owned(),
        slug: slug.to_owned(),
        status: IdpStatus::Active,
        created_at: Timestamp::from_unix(1_800_000_000),
        role_map: Default::default(),
        default_roles: Vec::new(),
        email_domains: Vec::new(),
        protocol: oidc("https://accounts.example.com"),
    }
}

fn attempt(id: &str, idp_id: &str, expires_at: i64) -> LoginAttempt {
    LoginAttempt {
        id: id.to_owned(),
        idp_id: idp_id.to_owned(),
        browser_hash: "b".repeat(64),
        nonce: Some("n-0S6_WzA2Mj".to_owned()),
        sealed_pkce_verifier: Some("sealed:pkce".to_owned()),
        saml_request_id: None,
        return_to: Some("/dashboard".to_owned()),
        created_at: Timestamp::from_unix(expires_at - 600),
        expires_at: Timestamp::from_unix(expires_at),
    }
}

fn session(id: &str, user_id: &str, idp_id: &str, created_at: i64) -> SessionRecord {
    SessionRecord {
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        app_id: "app_1".to_owned(),
        idp_id: idp_id.to_owned(),
        secret_hash: "5".repeat(64),
        created_at: Timestamp::from_unix(created_at),
        expires_at: Timestamp::from_unix(created_at + 1_000),
        last_used_at: Timestamp::from_unix(created_at),
        ip: Some("192.0.2.1".to_owned()),
        user_agent: None,
        revoked_at: None,
        revoke_reason: None,
        sealed_upstream_refresh: None,
        revalidated_at: None,
    }
}

fn revoke(selector: SessionSelector, at: i64, reason: &str) -> Mutation {
    Mutation::RevokeSessions {
        selector,
        at: Timestamp::from_unix(at),
        reason: reason.to_owned(),
    }
}

fn touch(id: &str, at: i64) -> Mutation {
    Mutation::TouchSession {
        id: id.to_owned(),
        at: Timestamp::from_unix(at),
    }
}

fn claim(id: &str, expires_at: i64) -> Mutation {
    Mutation::ClaimReplay {
        id: id.to_owned(),
        expires_at: Timestamp::from_unix(expires_at),
    }
}

fn user_ids(store: &dyn Store, app_id: &str, after: Option<&str>, limit: usize) -> Vec<String> {
    let users = store.list_users(app_id, after, limit).unwrap();
    users.into_iter().map(|u| u.id).collect()
}

fn session_ids(store: &dyn Store, user_id: &str, now: i64) -> Vec<String> {
    let sessions = store
        .list_sessions(user_id, Timestamp::from_unix(now))
        .unwrap();
    sessions.into_iter().map(|s| s.id).collect()
}

/// Two apps; in `app_1` two providers (`idp_1` "acme", `idp_2` "beta"), two users with
/// identities at them, four sessions (two of `usr_1`, one of `usr_2`, one of `usr_1`
/// through `idp_2`) and two login attempts; in `app_2` one provider, one user and a
/// session.
fn populate_people(store: &dyn Store) {
    populate(store);
    store
        .apply(&[
            Mutation::PutIdp(idp("idp_1", "app_1", "acme")),
            Mutation::PutIdp(idp("idp_2", "app_1", "beta")),
            Mutation::PutIdp(idp("idp_3", "app_2", "gamma")),
            Mutation::PutUser(user(
                "usr_1",
                "app_1",
                &[("idp_1", "alice"), ("idp_2", "a")],
            )),
            Mutation::PutUser(user("usr_2", "app_1", &[("idp_1", "bob")])),
            Mutation::PutUser(user("usr_3", "app_2", &[("idp_3", "carol")])),
            Mutation::InsertSession(session("ses_1", "usr_1", "idp_1", 1_000)),
            Mutation::InsertSession(session("ses_2", "usr_1", "idp_1", 1_100)),
            Mutation::InsertSession(session("ses_3", "usr_2", "idp_1", 1_000)),
            Mutation::InsertSession(session("ses_4", "usr_1", "idp_2", 1_200)),
            Mutation::InsertSession(SessionRecord {
                app_id: "app_2".to_owned(),
                ..session("ses_5", "usr_3", "idp_3", 1_000)
            }),
            Mutation::InsertLoginAttempt(attempt("la_1", "idp_1", 2_000)),
            Mutation::InsertLoginAttempt(attempt("la_2", "idp_2", 3_000)),
            Mutation::InsertLoginAttempt(attempt("la_3", "idp_3", 3_000)),
            claim("saml:idp_3:a1", 2_000),
        ])
        .unwrap();
}

/// Everything observable about the people of [`populate_people`].
#[derive(Debug, PartialEq)]
struct People {
    users: Vec<Vec<UserRecord>>,
    by_identity: Vec<Option<String>>,
    idps: Vec<IdpRecord>,
    slugs: Vec<Option<String>>,
    attempts: Vec<Option<LoginAttempt>>,
    sessions: Vec<Option<SessionRecord>>,
    live: Vec<Vec<String>>,
    roles: Vec<bool>,
}

fn people(store: &dyn Store) -> People {
    let identities = [
        ("idp_1", "alice"),
        ("idp_2", "a"),
        ("idp_1", "bob"),
        ("idp_3", "carol"),
        ("idp_1", "dave"),
    ];
    People {
        users: ["app_1", "app_2", "app_3"]
            .iter()
            .map(|a| store.list_users(a, None, 100).unwrap())
            .collect(),
        by_identity: identities
            .iter()
            .map(|(i, s)| store.user_by_identity(i, s).unwrap().map(|u| u.id))
            .collect(),
        idps: store.list_idps(None).unwrap(),
        slugs: ["acme", "beta", "gamma", "delta"]
            .iter()
            .map(|s| store.idp_by_slug(s).unwrap().map(|i| i.id))
            .collect(),
        attempts: ["la_1", "la_2", "la_3", "la_9"]
            .iter()
            .map(|id| store.get_login_attempt(id).unwrap())
            .collect(),
        sessions: ["ses_1", "ses_2", "ses_3", "ses_4", "ses_5", "ses_9"]
            .iter()
            .map(|id| store.get_session(id).unwrap())
            .collect(),
        live: ["usr_1", "usr_2", "usr_3"]
            .iter()
            .map(|u| session_ids(store, u, 0))
            .collect(),
        roles: ["a", "viewer", "mapped", "default", "grouped"]
            .iter()
            .map(|r| store.role_is_held_by_users(&role_name(r)).unwrap())
            .collect(),
    }
}

fn users_round_trip_with_their_identities_sorted(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    let hostile = "Robert'); DROP TABLE users;-- \"q\" 🔑 ключ";
    let grant: kms_core::ConditionalGrant = serde_json::from_value(
        serde_json::json!({"role": "support", "when": "context.region == \"eu\""}),
    )
    .unwrap();
    let full = UserRecord {
        id: format!("usr_{hostile}"),
        app_id: "app_1".to_owned(),
        email: Some(hostile.to_owned()),
        name: Some("Zoë Ångström".to_owned()),
        status: UserStatus::Disabled,
        roles: vec![role_name("support"), role_name("team.a-1")],
        mapped_roles: vec![role_name("viewer")],
        grants: vec![grant],
        identities: vec![
            identity("idp_b", "z"),
            identity("idp_a", hostile),
            identity("idp_b", "a"),
        ],
        created_at: Timestamp::from_unix(-86_400),
        last_login_at: Some(Timestamp::from_unix(i64::MAX)),
    };
    let minimal = UserRecord {
        email: None,
        ..user("usr_min", "app_1", &[])
    };
    store
        .apply(&[
            Mutation::PutUser(full.clone()),
            Mutation::PutUser(minimal.clone()),
        ])
        .unwrap();
    let mut sorted = full.clone();
    sorted.identities.sort();
    assert_eq!(store.get_user(&full.id).unwrap(), Some(sorted.clone()));
    assert_eq!(store.get_user("usr_min").unwrap(), Some(minimal.clone()));
    assert_eq!(store.get_user("usr_x").unwrap(), None);
    assert_eq!(
        store.user_by_identity("idp_a", hostile).unwrap(),
        Some(sorted.clone())
    );
    // By id: "usr_R..." sorts before "usr_m...".
    assert_eq!(
        store.list_users("app_1", None, 10).unwrap(),
        [sorted, minimal]
    );
    assert_eq!(store.user_by_identity("idp_a", "z").unwrap(), None);
    assert_eq!(store.user_by_identity("idp_x", hostile).unwrap(), None);

    // Putting a user again replaces their identities: the dropped one is free again.
    let moved = UserRecord {
        identities: vec![identity("idp_b", "a")],
        ..full.clone()
    };
    store.apply(&[Mutation::PutUser(moved.clone())]).unwrap();
    assert_eq!(store.get_user(&full.id).unwrap(), Some(moved));
    assert_eq!(store.user_by_identity("idp_a", hostile).unwrap(), None);
    store
        .apply(&[Mutation::PutUser(user(
            "usr_other",
            "app_1",
            &[("idp_a", hostile)],
        ))])
        .unwrap();
    // The same identity twice in one record is kept once.
    let twice = user("usr_twice", "app_1", &[("idp_c", "s"), ("idp_c", "s")]);
    store.apply(&[Mutation::PutUser(twice)]).unwrap();
    assert_eq!(
        store.get_user("usr_twice").unwrap().unwrap().identities,
        [identity("idp_c", "s")]
    );
}

fn users_are_listed_per_app_by_id_after_the_cursor(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    store
        .apply(&[
            Mutation::PutUser(user("usr_c", "app_1", &[])),
            Mutation::PutUser(user("usr_a", "app_1", &[])),
            Mutation::PutUser(user("usr_b", "app_2", &[])),
            Mutation::PutUser(user("usr_d", "app_1", &[])),
        ])
        .unwrap();
    let s = store.as_ref();
    assert_eq!(user_ids(s, "app_1", None, 10), ["usr_a", "usr_c", "usr_d"]);
    assert_eq!(user_ids(s, "app_1", Some("usr_a"), 1), ["usr_c"]);
    assert_eq!(user_ids(s, "app_1", Some("usr_b"), 10), ["usr_c", "usr_d"]);
    assert_eq!(
        user_ids(s, "app_1", Some("usr_d"), 10),
        Vec::<String>::new()
    );
    assert_eq!(user_ids(s, "app_2", None, 10), ["usr_b"]);
    assert_eq!(user_ids(s, "app_x", None, 10), Vec::<String>::new());
    assert_eq!(user_ids(s, "app_1", None, 0), Vec::<String>::new());
    // Moving a user to another application moves it in the listings.
    store
        .apply(&[Mutation::PutUser(user("usr_a", "app_2", &[]))])
        .unwrap();
    assert_eq!(user_ids(s, "app_1", None, 10), ["usr_c", "usr_d"]);
    assert_eq!(user_ids(s, "app_2", None, 10), ["usr_a", "usr_b"]);
}

fn users_and_idps_must_belong_to_an_existing_app(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    let message = conflict_message(store.apply(&[Mutation::PutUser(user("usr_1", "app_x", &[]))]));
    assert_eq!(message, "the application \"app_x\" does not exist");
    let message = conflict_message(store.apply(&[Mutation::PutIdp(idp("idp_1", "app_x", "s"))]));
    assert_eq!(message, "the application \"app_x\" does not exist");
    assert_eq!(store.get_user("usr_1").unwrap(), None);
    assert_eq!(store.get_idp("idp_1").unwrap(), None);
}

fn an_identity_of_another_user_conflicts_and_the_batch_changes_nothing(store: &Arc<dyn Store>) {
    populate_people(store.as_ref());
    let before = (snapshot(store.as_ref()), people(store.as_ref()));
    let message = conflict_message(store.apply(&[
        Mutation::PutUser(user("usr_9", "app_1", &[("idp_1", "dave")])),
        Mutation::PutUser(user("usr_2", "app_1", &[("idp_2", "b")])),
        Mutation::PutUser(user("usr_8", "app_1", &[("idp_1", "alice")])),
    ]));
    assert!(message.contains("linked to another user"), "{message}");
    assert_eq!((snapshot(store.as_ref()), people(store.as_ref())), before);
    // Taking an identity that an earlier mutation of the same batch freed is fine.
    store
        .apply(&[
            Mutation::PutUser(user("usr_2", "app_1", &[])),
            Mutation::PutUser(user("usr_9", "app_1", &[("idp_1", "bob")])),
        ])
        .unwrap();
    let owner = store.user_by_identity("idp_1", "bob").unwrap().unwrap();
    assert_eq!(owner.id, "usr_9");
    // A user keeping their own identity is no conflict.
    store
        .apply(&[Mutation::PutUser(UserRecord {
            status: UserStatus::Disabled,
            ..user("usr_9", "app_1", &[("idp_1", "bob")])
        })])
        .unwrap();
}

fn failed_batch_restores_every_kind_of_people_change(store: &Arc<dyn Store>) {
    populate_people(store.as_ref());
    let before = (snapshot(store.as_ref()), people(store.as_ref()));
    let result = store.apply(&[
        Mutation::PutUser(user("usr_1", "app_1", &[("idp_1", "dave")])),
        Mutation::PutUser(user("usr_9", "app_1", &[("idp_1", "alice")])),
        Mutation::DeleteUser("usr_2".to_owned()),
        Mutation::PutIdp(idp("idp_1", "app_1", "delta")),
        Mutation::PutIdp(idp("idp_9", "app_1", "acme")),
        Mutation::DeleteIdp("idp_2".to_owned()),
        Mutation::InsertLoginAttempt(attempt("la_9", "idp_1", 9_000)),
        Mutation::ConsumeLoginAttempt("la_1".to_owned()),
        Mutation::InsertSession(session("ses_9", "usr_1", "idp_1", 5_000)),
        Mutation::UpdateSession(SessionRecord {
            user_agent: Some("changed".to_owned()),
            ..session("ses_1", "usr_1", "idp_1", 1_000)
        }),
        touch("ses_2", 1_900),
        revoke(SessionSelector::User("usr_1".to_owned()), 1_500, "revoked"),
        claim("saml:idp_1:x", 9_000),
        Mutation::PurgeExpired {
            before: Timestamp::from_unix(10_000),
        },
        Mutation::DeleteApp("app_2".to_owned()),
        Mutation::PutRole(role("mapped", &[], &[])),
        Mutation::ConsumeLoginAttempt("la_1".to_owned()),
    ]);
    assert!(matches!(result, Err(StoreError::Conflict(_))));
    assert_eq!((snapshot(store.as_ref()), people(store.as_ref())), before);
    // The indexes were restored too: the slug and the identity are still taken.
    let slug = store.apply(&[Mutation::PutIdp(idp("idp_8", "app_1", "acme"))]);
    assert!(matches!(slug, Err(StoreError::Conflict(_))));
    let taken = store.apply(&[Mutation::PutUser(user("usr_8", "app_1", &[("idp_2", "a")]))]);
    assert!(matches!(taken, Err(StoreError::Conflict(_))));
    store
        .apply(&[Mutation::PutIdp(idp("idp_8", "app_1", "delta"))])
        .unwrap();
}

fn delete_user_removes_their_sessions_and_identities(store: &Arc<dyn Store>) {
    populate_people(store.as_ref());
    store
        .apply(&[Mutation::DeleteUser("usr_1".to_owned())])
        .unwrap();
    assert_eq!(store.get_user("usr_1").unwrap(), None);
    for id in ["ses_1", "ses_2", "ses_4"] {
        assert_eq!(store.get_session(id).unwrap(), None, "{id}");
    }
    assert_eq!(store.user_by_identity("idp_1", "alice").unwrap(), None);
    assert_eq!(store.user_by_identity("idp_2", "a").unwrap(), None);
    // Others keep theirs, and the freed identity can be linked again.
    assert!(store.get_session("ses_3").unwrap().is_some());
    assert!(store.user_by_identity("idp_1", "bob").unwrap().is_some());
    store
        .apply(&[
            Mutation::PutUser(user("usr_9", "app_1", &[("idp_1", "alice")])),
            Mutation::DeleteUser("usr_x".to_owned()),
        ])
        .unwrap();
    assert_eq!(
        user_ids(store.as_ref(), "app_1", None, 10),
        ["usr_2", "usr_9"]
    );
}

fn idp_slugs_are_unique_and_idps_round_trip(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    let saml = IdpRecord {
        status: IdpStatus::Disabled,
        role_map: [
            (
                "admins".to_owned(),
                vec![role_name("admin"), role_name("support")],
            ),
            ("Ünïcødé 'group'".to_owned(), vec![]),
        ]
        .into_iter()
        .collect(),
        default_roles: vec![role_name("viewer")],
        email_domains: vec!["example.com".to_owned(), "example.org".to_owned()],
        protocol: IdpProtocol::Saml(SamlSettings {
            idp_metadata_xml: "<EntityDescriptor entityID=\"x\">'🔑'</EntityDescriptor>".to_owned(),
            groups_attribute: Some("memberOf".to_owned()),
            allow_idp_initiated: true,
        }),
        ..idp("idp_b", "app_2", "saml-b")
    };
    let oidc_full = IdpRecord {
        protocol: IdpProtocol::Oidc(OidcSettings {
            issuer: "https://login.example.com/tenant/v2.0".to_owned(),
            client_id: "c".to_owned(),
            sealed_client_secret: Some("sealed:secret".to_owned()),
            scopes: vec!["openid".to_owned(), "offline_access".to_owned()],
            groups_claim: Some("groups".to_owned()),
            algorithms: vec!["RS256".to_owned(), "ES256".to_owned(), "EdDSA".to_owned()],
            discovery: serde_json::json!({
                "issuer": "https://login.example.com/tenant/v2.0",
                "jwks_uri": "https://login.example.com/keys",
                "n": [1, -2, 2.5, null, true, u64::MAX],
                "nested": {"z": {}, "a": "ключ"},
            }),
            discovered_at: Timestamp::from_unix(1_800_000_123),
        }),
        ..idp("idp_a", "app_1", "oidc-a")
    };
    store
        .apply(&[
            Mutation::PutIdp(saml.clone()),
            Mutation::PutIdp(oidc_full.clone()),
        ])
        .unwrap();
    assert_eq!(store.get_idp("idp_b").unwrap(), Some(saml.clone()));
    assert_eq!(store.get_idp("idp_a").unwrap(), Some(oidc_full.clone()));
    assert_eq!(store.get_idp("idp_x").unwrap(), None);
    assert_eq!(store.idp_by_slug("saml-b").unwrap(), Some(saml.clone()));
    assert_eq!(store.idp_by_slug("nope").unwrap(), None);
    assert_eq!(
        store.list_idps(None).unwrap(),
        [oidc_full.clone(), saml.clone()]
    );
    assert_eq!(
        store.list_idps(Some("app_2")).unwrap(),
        std::slice::from_ref(&saml)
    );
    assert_eq!(store.list_idps(Some("app_x")).unwrap(), []);

    // Another connection's slug is taken, across applications too.
    let message =
        conflict_message(store.apply(&[Mutation::PutIdp(idp("idp_c", "app_1", "saml-b"))]));
    assert_eq!(
        message,
        "an identity provider with slug \"saml-b\" already exists"
    );
    let message =
        conflict_message(store.apply(&[Mutation::PutIdp(idp("idp_a", "app_1", "saml-b"))]));
    assert!(message.contains("saml-b"), "{message}");
    assert_eq!(store.get_idp("idp_c").unwrap(), None);
    assert_eq!(store.get_idp("idp_a").unwrap(), Some(oidc_full));
    // Keeping its own slug is no conflict; a new slug frees the old one.
    let renamed = idp("idp_a", "app_1", "renamed");
    store
        .apply(&[
            Mutation::PutIdp(idp("idp_a", "app_1", "oidc-a")),
            Mutation::PutIdp(renamed.clone()),
            Mutation::PutIdp(idp("idp_c", "app_1", "oidc-a")),
        ])
        .unwrap();
    assert_eq!(store.idp_by_slug("renamed").unwrap(), Some(renamed));
    assert_eq!(
        store
            .idp_by_slug("oidc-a")
            .unwrap()
            .map(|i| i.id)
            .as_deref(),
        Some("idp_c")
    );
}

fn delete_idp_removes_its_identities_and_attempts_but_keeps_users(store: &Arc<dyn Store>) {
    populate_people(store.as_ref());
    store
        .apply(&[Mutation::DeleteIdp("idp_1".to_owned())])
        .unwrap();
    assert_eq!(store.get_idp("idp_1").unwrap(), None);
    assert_eq!(store.idp_by_slug("acme").unwrap(), None);
    assert_eq!(store.get_login_attempt("la_1").unwrap(), None);
    assert!(store.get_login_attempt("la_2").unwrap().is_some());
    // Users stay, with their other identities; their sessions stay (a RevokeSessions in
    // the same batch ends them).
    let usr_1 = store.get_user("usr_1").unwrap().unwrap();
    assert_eq!(usr_1.identities, [identity("idp_2", "a")]);
    let usr_2 = store.get_user("usr_2").unwrap().unwrap();
    assert!(usr_2.identities.is_empty());
    assert_eq!(store.user_by_identity("idp_1", "alice").unwrap(), None);
    assert_eq!(store.user_by_identity("idp_2", "a").unwrap(), Some(usr_1));
    assert!(store.get_session("ses_1").unwrap().is_some());
    // The slug and the identities are free again.
    store
        .apply(&[
            Mutation::PutIdp(idp("idp_9", "app_1", "acme")),
            Mutation::PutUser(user("usr_9", "app_1", &[("idp_1", "alice")])),
            Mutation::DeleteIdp("idp_x".to_owned()),
        ])
        .unwrap();
}

fn a_login_attempt_is_consumed_once(store: &Arc<dyn Store>) {
    let full = LoginAttempt {
        saml_request_id: Some("_a1b2 'x' 🔑".to_owned()),
        ..attempt("la_1", "idp_1", 2_000)
    };
    let minimal = LoginAttempt {
        nonce: None,
        sealed_pkce_verifier: None,
        return_to: None,
        ..attempt("la_2", "idp_1", 2_000)
    };
    store
        .apply(&[
            Mutation::InsertLoginAttempt(full.clone()),
            Mutation::InsertLoginAttempt(minimal.clone()),
        ])
        .unwrap();
    assert_eq!(store.get_login_attempt("la_1").unwrap(), Some(full.clone()));
    assert_eq!(store.get_login_attempt("la_2").unwrap(), Some(minimal));
    let message = conflict_message(store.apply(&[Mutation::InsertLoginAttempt(attempt(
        "la_1", "idp_2", 9_000,
    ))]));
    assert!(message.contains("already exists"), "{message}");
    assert_eq!(store.get_login_attempt("la_1").unwrap(), Some(full));

    store
        .apply(&[Mutation::ConsumeLoginAttempt("la_1".to_owned())])
        .unwrap();
    assert_eq!(store.get_login_attempt("la_1").unwrap(), None);
    let message =
        conflict_message(store.apply(&[Mutation::ConsumeLoginAttempt("la_1".to_owned())]));
    assert!(message.contains("already used"), "{message}");
    // Twice in one batch: the second fails the batch, so the first is undone.
    let message = conflict_message(store.apply(&[
        Mutation::ConsumeLoginAttempt("la_2".to_owned()),
        Mutation::ConsumeLoginAttempt("la_2".to_owned()),
    ]));
    assert!(message.contains("already used"), "{message}");
    assert!(store.get_login_attempt("la_2").unwrap().is_some());
}

fn concurrent_callbacks_consume_a_login_attempt_once(store: &Arc<dyn Store>) {
    store
        .apply(&[Mutation::InsertLoginAttempt(attempt(
            "la_1", "idp_1", 9_000,
        ))])
        .unwrap();
    let successes = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(move || {
                    store
                        .apply(&[Mutation::ConsumeLoginAttempt("la_1".to_owned())])
                        .is_ok()
                })
            })
            .collect();
        let outcomes: Vec<bool> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        outcomes.into_iter().filter(|ok| *ok).count()
    });
    assert_eq!(successes, 1);
}

fn sessions_need_their_user_and_round_trip(store: &Arc<dyn Store>) {
    populate_people(store.as_ref());
    let message = conflict_message(store.apply(&[Mutation::InsertSession(session(
        "ses_9", "usr_x", "idp_1", 1_000,
    ))]));
    assert_eq!(message, "the user \"usr_x\" does not exist");
    let message = conflict_message(store.apply(&[Mutation::InsertSession(session(
        "ses_1", "usr_2", "idp_1", 5_000,
    ))]));
    assert_eq!(message, "a session with id \"ses_1\" already exists");
    let message = conflict_message(store.apply(&[Mutation::UpdateSession(session(
        "ses_9", "usr_1", "idp_1", 1_000,
    ))]));
    assert_eq!(message, "the session \"ses_9\" does not exist");
    assert_eq!(store.get_session("ses_9").unwrap(), None);
    assert_eq!(
        store.get_session("ses_1").unwrap(),
        Some(session("ses_1", "usr_1", "idp_1", 1_000))
    );

    let full = SessionRecord {
        ip: Some("2001:db8::7".to_owned()),
        user_agent: Some("Mozilla/5.0 'quoted' \"🔑\"".to_owned()),
        revoked_at: Some(Timestamp::from_unix(1_500)),
        revoke_reason: Some("logout".to_owned()),
        sealed_upstream_refresh: Some("sealed:refresh".to_owned()),
        revalidated_at: Some(Timestamp::from_unix(1_400)),
        last_used_at: Timestamp::from_unix(1_450),
        expires_at: Timestamp::from_unix(i64::MAX),
        ..session("ses_1", "usr_1", "idp_1", -5)
    };
    store
        .apply(&[Mutation::UpdateSession(full.clone())])
        .unwrap();
    assert_eq!(store.get_session("ses_1").unwrap(), Some(full));
}

fn touching_a_session_only_moves_forward_and_not_when_revoked(store: &Arc<dyn Store>) {
    populate_people(store.as_ref());
    let last_used = |id: &str| store.get_session(id).unwrap().unwrap().last_used_at.unix();
    store.apply(&[touch("ses_1", 1_050)]).unwrap();
    assert_eq!(last_used("ses_1"), 1_050);
    store.apply(&[touch("ses_1", 1_020)]).unwrap();
    assert_eq!(last_used("ses_1"), 1_050, "never backwards");
    store.apply(&[touch("ses_1", 1_050)]).unwrap();
    assert_eq!(last_used("ses_1"), 1_050);
    store
        .apply(&[revoke(
            SessionSelector::Id("ses_1".to_owned()),
            1_060,
            "logout",
        )])
        .unwrap();
    store.apply(&[touch("ses_1", 1_070)]).unwrap();
    assert_eq!(last_used("ses_1"), 1_050, "not after revocation");
    // A missing session is a no-op, and nothing else moves.
    store.apply(&[touch("ses_x", 1_070)]).unwrap();
    assert_eq!(last_used("ses_2"), 1_100);
    assert_eq!(store.get_session("ses_x").unwrap(), None);
}

fn revoking_sessions_touches_only_the_selected_live_ones(store: &Arc<dyn Store>) {
    populate_people(store.as_ref());
    let get = |id: &str| store.get_session(id).unwrap().unwrap();
    let ended = |id: &str| {
        let s = get(id);
        (s.revoked_at.map(|t| t.unix()), s.revoke_reason)
    };
    store
        .apply(&[revoke(
            SessionSelector::Id("ses_1".to_owned()),
            1_500,
            "logout",
        )])
        .unwrap();
    assert_eq!(ended("ses_1"), (Some(1_500), Some("logout".to_owned())));
    assert_eq!(ended("ses_2"), (None, None));

    // By user: the one already ended keeps its time and reason.
    store
        .apply(&[revoke(
            SessionSelector::User("usr_1".to_owned()),
            1_600,
            "user_disabled",
        )])
        .unwrap();
    assert_eq!(ended("ses_1"), (Some(1_500), Some("logout".to_owned())));
    assert_eq!(
        ended("ses_2"),
        (Some(1_600), Some("user_disabled".to_owned()))
    );
    assert_eq!(
        ended("ses_4"),
        (Some(1_600), Some("user_disabled".to_owned()))
    );
    assert_eq!(ended("ses_3"), (None, None));
    assert_eq!(ended("ses_5"), (None, None));

    // By provider.
    store
        .apply(&[revoke(
            SessionSelector::Idp("idp_1".to_owned()),
            1_700,
            "idp_deleted",
        )])
        .unwrap();
    assert_eq!(
        ended("ses_3"),
        (Some(1_700), Some("idp_deleted".to_owned()))
    );
    assert_eq!(
        ended("ses_2"),
        (Some(1_600), Some("user_disabled".to_owned()))
    );
    assert_eq!(ended("ses_5"), (None, None));
    // Revoking leaves every other field alone; selecting nothing is a no-op.
    assert_eq!(
        SessionRecord {
            revoked_at: None,
            revoke_reason: None,
            ..get("ses_3")
        },
        session("ses_3", "usr_2", "idp_1", 1_000)
    );
    store
        .apply(&[revoke(SessionSelector::User("usr_x".to_owned()), 1, "x")])
        .unwrap();
}

fn sessions_are_listed_live_and_newest_first(store: &Arc<dyn Store>) {
    populate_people(store.as_ref());
    store
        .apply(&[
            Mutation::InsertSession(session("ses_0", "usr_1", "idp_1", 1_100)),
            Mutation::InsertSession(session("ses_6", "usr_1", "idp_1", 900)),
        ])
        .unwrap();
    let s = store.as_ref();
    // Ties on created_at by id.
    assert_eq!(
        session_ids(s, "usr_1", 0),
        ["ses_4", "ses_0", "ses_2", "ses_1", "ses_6"]
    );
    assert_eq!(session_ids(s, "usr_2", 0), ["ses_3"]);
    assert_eq!(session_ids(s, "usr_x", 0), Vec::<String>::new());
    // Past their absolute expiry (expires_at = created_at + 1000; `now` equal is expired).
    assert_eq!(session_ids(s, "usr_1", 2_000), ["ses_4", "ses_0", "ses_2"]);
    assert_eq!(session_ids(s, "usr_1", 2_199), ["ses_4"]);
    assert_eq!(session_ids(s, "usr_1", 2_200), Vec::<String>::new());
    // Revoked ones are not listed, but can still be read.
    s.apply(&[revoke(
        SessionSelector::Id("ses_0".to_owned()),
        1_150,
        "logout",
    )])
    .unwrap();
    assert_eq!(
        session_ids(s, "usr_1", 0),
        ["ses_4", "ses_2", "ses_1", "ses_6"]
    );
    assert!(s.get_session("ses_0").unwrap().is_some());
    let listed = s.list_sessions("usr_2", Timestamp::from_unix(0)).unwrap();
    assert_eq!(listed, [session("ses_3", "usr_2", "idp_1", 1_000)]);
}

fn sealed_identity_records_lists_what_holds_a_sealed_secret(store: &Arc<dyn Store>) {
    populate_people(store.as_ref());
    // Every attempt of populate_people holds a sealed verifier; one without is added.
    let mut plain = attempt("la_4", "idp_1", 3_000);
    plain.sealed_pkce_verifier = None;
    let with_upstream = |id: &str, revoked: bool| SessionRecord {
        sealed_upstream_refresh: Some(format!("sealed:{id}")),
        revoked_at: revoked.then(|| Timestamp::from_unix(1_500)),
        ..session(id, "usr_2", "idp_1", 1_300)
    };
    store
        .apply(&[
            Mutation::InsertLoginAttempt(plain),
            Mutation::InsertSession(with_upstream("ses_7", false)),
            Mutation::InsertSession(with_upstream("ses_6", true)),
        ])
        .unwrap();
    let sealed = store.sealed_identity_records().unwrap();
    assert_eq!(
        sealed
            .login_attempts
            .iter()
            .map(|a| a.id.as_str())
            .collect::<Vec<_>>(),
        ["la_1", "la_2", "la_3"]
    );
    // Ended sessions too: their sealed values must follow a master-key rotation.
    assert_eq!(
        sealed
            .sessions
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["ses_6", "ses_7"]
    );
    assert_eq!(sealed.sessions[1], with_upstream("ses_7", false));
}

fn put_meta_sets_and_replaces_a_value(store: &Arc<dyn Store>) {
    let put = |v: &str| Mutation::PutMeta {
        key: "master_key_set_at".to_owned(),
        value: v.to_owned(),
    };
    store.apply(&[put("2026-01-01T00:00:00Z")]).unwrap();
    store.apply(&[put("2026-12-01T00:00:00Z")]).unwrap();
    assert_eq!(
        store.get_meta("master_key_set_at").unwrap().as_deref(),
        Some("2026-12-01T00:00:00Z")
    );
    // Unlike CreateMeta, and inside a failing batch, nothing sticks.
    let err = store.apply(&[
        put("2027-01-01T00:00:00Z"),
        Mutation::UpdateApp(app("app_missing", "nobody")),
    ]);
    assert!(err.is_err());
    assert_eq!(
        store.get_meta("master_key_set_at").unwrap().as_deref(),
        Some("2026-12-01T00:00:00Z")
    );
}

fn a_replay_id_is_claimed_once(store: &Arc<dyn Store>) {
    store.apply(&[claim("saml:idp_1:id-1", 2_000)]).unwrap();
    let message = conflict_message(store.apply(&[claim("saml:idp_1:id-1", 3_000)]));
    assert!(message.contains("already used"), "{message}");
    let message = conflict_message(store.apply(&[
        claim("saml:idp_1:id-2", 2_000),
        claim("saml:idp_1:id-2", 2_000),
    ]));
    assert!(message.contains("already used"), "{message}");
    // The failed batch remembered nothing.
    store.apply(&[claim("saml:idp_1:id-2", 2_000)]).unwrap();
    // Once purged, an id may be claimed again.
    store
        .apply(&[Mutation::PurgeExpired {
            before: Timestamp::from_unix(2_001),
        }])
        .unwrap();
    store
        .apply(&[
            claim("saml:idp_1:id-1", 9_000),
            claim("saml:idp_1:id-2", 9_000),
        ])
        .unwrap();
}

fn purge_removes_expired_login_attempts_and_replay_entries(store: &Arc<dyn Store>) {
    populate_people(store.as_ref());
    store
        .apply(&[
            claim("r_old", 2_999),
            claim("r_edge", 3_000),
            Mutation::PurgeExpired {
                before: Timestamp::from_unix(3_000),
            },
        ])
        .unwrap();
    assert_eq!(store.get_login_attempt("la_1").unwrap(), None);
    assert!(store.get_login_attempt("la_2").unwrap().is_some());
    assert!(store.get_login_attempt("la_3").unwrap().is_some());
    // Replay entries have no read: their claims tell what is remembered.
    store.apply(&[claim("r_old", 9_000)]).unwrap();
    store.apply(&[claim("saml:idp_3:a1", 9_000)]).unwrap();
    assert!(matches!(
        store.apply(&[claim("r_edge", 9_000)]),
        Err(StoreError::Conflict(_))
    ));
    // People are not touched, even sessions past their expiry.
    assert_eq!(store.list_users("app_1", None, 10).unwrap().len(), 2);
    assert!(store.get_session("ses_1").unwrap().is_some());
    assert_eq!(store.list_idps(None).unwrap().len(), 3);
}

fn delete_app_deletes_its_people(store: &Arc<dyn Store>) {
    populate_people(store.as_ref());
    let other_app = (
        store.list_users("app_2", None, 10).unwrap(),
        store.list_idps(Some("app_2")).unwrap(),
        store.get_session("ses_5").unwrap(),
        store.get_login_attempt("la_3").unwrap(),
    );
    store
        .apply(&[Mutation::DeleteApp("app_1".to_owned())])
        .unwrap();
    assert_eq!(store.list_users("app_1", None, 10).unwrap(), []);
    for id in ["usr_1", "usr_2"] {
        assert_eq!(store.get_user(id).unwrap(), None, "{id}");
    }
    assert_eq!(store.list_idps(Some("app_1")).unwrap(), []);
    assert_eq!(store.idp_by_slug("acme").unwrap(), None);
    for id in ["ses_1", "ses_2", "ses_3", "ses_4"] {
        assert_eq!(store.get_session(id).unwrap(), None, "{id}");
    }
    for id in ["la_1", "la_2"] {
        assert_eq!(store.get_login_attempt(id).unwrap(), None, "{id}");
    }
    assert_eq!(store.user_by_identity("idp_1", "alice").unwrap(), None);
    // The other application's people are untouched.
    assert_eq!(
        (
            store.list_users("app_2", None, 10).unwrap(),
            store.list_idps(Some("app_2")).unwrap(),
            store.get_session("ses_5").unwrap(),
            store.get_login_attempt("la_3").unwrap(),
        ),
        other_app
    );
    // Everything can be made again: slugs and identities are free.
    store
        .apply(&[
            Mutation::InsertApp(app("app_1", "one again")),
            Mutation::PutIdp(idp("idp_1", "app_1", "acme")),
            Mutation::PutUser(user(
                "usr_1",
                "app_1",
                &[("idp_1", "alice"), ("idp_2", "a")],
            )),
            Mutation::InsertSession(session("ses_1", "usr_1", "idp_1", 1_000)),
            Mutation::InsertLoginAttempt(attempt("la_1", "idp_1", 2_000)),
        ])
        .unwrap();
}

fn roles_held_by_users_or_mapped_by_idps_are_found(store: &Arc<dyn Store>) {
    populate(store.as_ref());
    let held = |r: &str| store.role_is_held_by_users(&role_name(r)).unwrap();
    assert!(!held("given"));
    store
        .apply(&[
            Mutation::PutUser(UserRecord {
                roles: vec![role_name("given"), role_name("both")],
                mapped_roles: vec![role_name("mapped"), role_name("both")],
                ..user("usr_1", "app_1", &[])
            }),
            Mutation::PutIdp(IdpRecord {
                role_map: [
                    ("admins".to_owned(), vec![role_name("grouped")]),
                    ("empty".to_owned(), vec![]),
                    ("given".to_owned(), vec![role_name("other")]),
                ]
                .into_iter()
                .collect(),
                default_roles: vec![role_name("default")],
                ..idp("idp_1", "app_1", "acme")
            }),
        ])
        .unwrap();
    for r in ["given", "mapped", "both", "grouped", "default", "other"] {
        assert!(held(r), "{r}");
    }
    // A group name is not a role, nor is a role a token holds.
    for r in ["admins", "empty", "a", "giv", "given.x"] {
        assert!(!held(r), "{r}");
    }
    // Gone once the user and the provider no longer name them (a group called "given"
    // does not hold the role "given").
    store
        .apply(&[Mutation::PutUser(user("usr_1", "app_1", &[]))])
        .unwrap();
    for r in ["given", "mapped", "both"] {
        assert!(!held(r), "{r}");
    }
    for r in ["grouped", "default", "other"] {
        assert!(held(r), "{r}");
    }
    store
        .apply(&[Mutation::DeleteIdp("idp_1".to_owned())])
        .unwrap();
    for r in ["grouped", "default", "other"] {
        assert!(!held(r), "{r}");
    }
}

fn listeners_hear_user_idp_and_session_changes(store: &Arc<dyn Store>) {
    populate_people(store.as_ref());
    let recorder = Arc::new(Recorder {
        store: store.clone(),
        heard: Mutex::new(Vec::new()),
    });
    let as_listener: Arc<dyn ChangeListener> = recorder.clone();
    store.subscribe(Arc::downgrade(&as_listener));
    store
        .apply(&[
            Mutation::InsertLoginAttempt(attempt("la_9", "idp_1", 9_000)),
            Mutation::ConsumeLoginAttempt("la_9".to_owned()),
            Mutation::InsertSession(session("ses_9", "usr_1", "idp_1", 1_000)),
            touch("ses_9", 1_100),
            claim("saml:x", 9_000),
            Mutation::PurgeExpired {
                before: Timestamp::from_unix(0),
            },
        ])
        .unwrap();
    assert!(heard(&recorder).is_empty(), "nothing any cache can hold");
    store
        .apply(&[
            Mutation::PutUser(user("usr_1", "app_1", &[("idp_1", "alice")])),
            Mutation::DeleteUser("usr_2".to_owned()),
            Mutation::PutIdp(idp("idp_2", "app_1", "beta2")),
            Mutation::DeleteIdp("idp_2".to_owned()),
            Mutation::UpdateSession(session("ses_1", "usr_1", "idp_1", 1_000)),
            revoke(SessionSelector::Id("ses_2".to_owned()), 1_500, "logout"),
            revoke(SessionSelector::User("usr_3".to_owned()), 1_500, "revoked"),
            revoke(
                SessionSelector::Idp("idp_1".to_owned()),
                1_500,
                "idp_deleted",
            ),
        ])
        .unwrap();
    let changes: Vec<Change> = heard(&recorder).into_iter().map(|(c, _)| c).collect();
    assert_eq!(
        changes,
        [
            Change::User("usr_1".to_owned()),
            Change::User("usr_2".to_owned()),
            Change::Idp("idp_2".to_owned()),
            Change::Session("ses_1".to_owned()),
            Change::Session("ses_2".to_owned()),
            Change::User("usr_3".to_owned()),
            Change::Idp("idp_1".to_owned()),
        ]
    );
}

// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// Audit log

fn audit_events_append_once_per_sequence_number(store: &Arc<dyn Store>) {
    let first = audit_event(1, "operator", "app.create", None);
    store
        .apply(&[Mutation::AppendAudit(first.clone())])
        .unwrap();
    let twin = audit_event(1, "tok_x", "token.revoke", None);
    let message = conflict_message(store.apply(&[Mutation::AppendAudit(twin)]));
    assert!(message.contains("audit event 1"), "{message}");
    assert_eq!(store.audit_after(0, 10).unwrap(), [first]);
    let huge = audit_event(u64::MAX, "operator", "x", None);
    assert!(matches!(
        store.apply(&[Mutation::AppendAudit(huge)]),
        Err(StoreError::Conflict(_))
    ));
}

fn chained_audit_events_extend_the_head_of_the_chain(store: &Arc<dyn Store>) {
    // What the event carries in seq, prev_hash and hash is ignored.
    let mut chained = Vec::new();
    for i in 0..3u64 {
        let mut e = audit_event(99, "operator", "app.create", None);
        e.target = format!("t{i}");
        store.apply(&[Mutation::ChainAudit(e)]).unwrap();
        let head = store.last_audit_event().unwrap().unwrap();
        assert_eq!(head.seq, i + 1);
        let prev = chained.last().map_or_else(
            || kms_core::store::GENESIS_HASH.to_owned(),
            |p: &AuditEvent| p.hash.clone(),
        );
        assert_eq!(head.prev_hash, prev);
        assert_eq!(head.hash, head.compute_hash());
        chained.push(head);
    }
    assert!(matches!(
        kms_core::store::verify_chain(&chained),
        kms_core::AuditVerification::Intact { ok: true, .. }
    ));
    // Pruned to nothing, the chain goes on from the anchor.
    store
        .apply(&[Mutation::PruneAudit {
            through_seq: 3,
            anchor_hash: chained[2].hash.clone(),
        }])
        .unwrap();
    store
        .apply(&[Mutation::ChainAudit(audit_event(1, "operator", "x", None))])
        .unwrap();
    let next = store.last_audit_event().unwrap().unwrap();
    assert_eq!(
        (next.seq, next.prev_hash.as_str()),
        (4, chained[2].hash.as_str())
    );
}

fn policy_changes_move_the_policy_version_and_stale_expectations_conflict(store: &Arc<dyn Store>) {
    let version = || {
        store
            .get_meta(kms_core::store::POLICY_VERSION_KEY)
            .unwrap()
            .map_or(0, |v| v.parse::<u64>().unwrap())
    };
    let before = version();
    let perm = |scope: &str| Permission {
        scope: Scope::parse(scope).unwrap(),
        description: String::new(),
        implies: Vec::new(),
    };
    store
        .apply(&[
            Mutation::ExpectPolicyVersion(before),
            Mutation::InsertPermission(perm("versioned.a")),
        ])
        .unwrap();
    assert_eq!(version(), before + 1);
    // Validated against the old version: refused, and nothing of the batch applied.
    let message = conflict_message(store.apply(&[
        Mutation::ExpectPolicyVersion(before),
        Mutation::InsertPermission(perm("versioned.b")),
    ]));
    assert!(message.contains("changed meanwhile"), "{message}");
    let policy = store.load_policy().unwrap();
    assert!(!policy
        .permissions
        .contains_key(&Scope::parse("versioned.b").unwrap()));
    assert_eq!(version(), before + 1);
    // Non-policy changes leave the version alone.
    store
        .apply(&[Mutation::CreateMeta {
            key: "unrelated".into(),
            value: "x".into(),
        }])
        .unwrap();
    assert_eq!(version(), before + 1);
}

fn audit_events_round_trip_unchanged(store: &Arc<dyn Store>) {
    let mut event = audit_event(
        7,
        "tok_'; DROP TABLE audit_events;--",
        "token.create",
        Some("app_ü"),
    );
    event.ip = None;
    event.request_id = Some("req 🔑".to_owned());
    event.details = serde_json::json!({
        "z": [1, -2, 2.5, 1e300, null, true, "ключ"],
        "a": {"nested": {"deep": u64::MAX}},
        "empty": {},
    });
    store
        .apply(&[Mutation::AppendAudit(event.clone())])
        .unwrap();
    assert_eq!(store.last_audit_event().unwrap(), Some(event.clone()));
    assert_eq!(store.audit_after(6, 1).unwrap(), [event]);
}

fn audit_listings_filter_page_and_order(store: &Arc<dyn Store>) {
    assert_eq!(store.last_audit_event().unwrap(), None);
    let events = [
        audit_event(1, "operator", "app.create", Some("app_1")),
        audit_event(2, "tok_1", "token.create", Some("app_1")),
        audit_event(3, "tok_1", "token.revoke", Some("app_2")),
        audit_event(4, "operator", "token.create", None),
        audit_event(5, "tok_2", "token.create", Some("app_1")),
    ];
    let batch: Vec<_> = events.iter().cloned().map(Mutation::AppendAudit).collect();
    store.apply(&batch).unwrap();
    let seqs = |q: AuditQuery| -> Vec<u64> {
        store
            .list_audit(&q)
            .unwrap()
            .into_iter()
            .map(|e| e.seq)
            .collect()
    };
    let all = AuditQuery {
        limit: 100,
        ..AuditQuery::default()
    };
    assert_eq!(seqs(all.clone()), [5, 4, 3, 2, 1]);
    assert_eq!(
        seqs(AuditQuery {
            limit: 2,
            ..all.clone()
        }),
        [5, 4]
    );
    assert_eq!(
        seqs(AuditQuery {
            limit: 0,
            ..all.clone()
        }),
        Vec::<u64>::new()
    );
    assert_eq!(
        seqs(AuditQuery {
            before_seq: Some(4),
            limit: 2,
            ..all.clone()
        }),
        [3, 2]
    );
    assert_eq!(
        seqs(AuditQuery {
            before_seq: Some(u64::MAX),
            ..all.clone()
        }),
        [5, 4, 3, 2, 1]
    );
    let action = Some("token.create".to_owned());
    assert_eq!(
        seqs(AuditQuery {
            action: action.clone(),
            ..all.clone()
        }),
        [5, 4, 2]
    );
    assert_eq!(
        seqs(AuditQuery {
            actor: Some("tok_1".to_owned()),
            ..all.clone()
        }),
        [3, 2]
    );
    let since = Some(Timestamp::from_unix(1_800_000_003));
    assert_eq!(
        seqs(AuditQuery {
            since,
            ..all.clone()
        }),
        [5, 4, 3]
    );
    assert_eq!(
        seqs(AuditQuery {
            app_id: Some("app_1".to_owned()),
            ..all.clone()
        }),
        [5, 2, 1]
    );
    let combined = AuditQuery {
        action,
        app_id: Some("app_1".to_owned()),
        before_seq: Some(5),
        ..all
    };
    assert_eq!(seqs(combined), [2]);

    assert_eq!(store.last_audit_event().unwrap(), Some(events[4].clone()));
    assert_eq!(store.audit_after(0, 2).unwrap(), events[..2]);
    assert_eq!(store.audit_after(3, 10).unwrap(), events[3..]);
    assert_eq!(store.audit_after(5, 10).unwrap(), []);
    assert_eq!(store.audit_after(u64::MAX, 10).unwrap(), []);
}

// ---------------------------------------------------------------------------------------
// Capacity
// ---------------------------------------------------------------------------------------

fn capacity_counts_every_row_and_those_created_since(store: &Arc<dyn Store>) {
    use kms_core::store::ObjectCounts;
    populate_people(store.as_ref());
    store
        .apply(&[
            Mutation::InsertToken(TokenRecord {
                created_at: Timestamp::from_unix(1_900_000_000),
                ..token("tok_4", "app_2")
            }),
            Mutation::AppendAudit(audit_event(2, "operator", "token.create", Some("app_2"))),
        ])
        .unwrap();
    let all = store.capacity(Timestamp::from_unix(0)).unwrap();
    let stored = ObjectCounts {
        applications: 2,
        tokens: 4,
        users: 3,
        sessions: 5,
        audit_events: 2,
    };
    assert_eq!(all.stored, stored);
    assert_eq!(all.created_since, stored);
    // Audit event 1 is at 1_800_000_001, event 2 at 1_800_000_002; the rest is older
    // but tok_4.
    let recent = store.capacity(Timestamp::from_unix(1_800_000_002)).unwrap();
    assert_eq!(recent.stored, stored);
    assert_eq!(
        recent.created_since,
        ObjectCounts {
            applications: 0,
            tokens: 1,
            users: 0,
            sessions: 0,
            audit_events: 1,
        }
    );
    let again = store.capacity(Timestamp::from_unix(1_800_000_002)).unwrap();
    assert_eq!(again.stored, recent.stored);
}

/// Instantiates every check above once per store.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod memory {
            $(
                #[test]
                fn $check() {
                    let fixture = super::memory_store();
                    super::$check(&fixture.store);
                }
            )*
        }
        mod sqlite {
            $(
                #[test]
                fn $check() {
                    let fixture = super::sqlite_store();
                    super::$check(&fixture.store);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $check() {
                    if let Some(fixture) = super::postgres_store() {
                        super::$check(&fixture.store);
                    }
                }
            )*
        }
    };
}

conformance!(
    batch_with_a_conflicting_last_mutation_changes_nothing,
    failed_batch_restores_every_kind_of_change,
    empty_batch_succeeds,
    create_meta_conflicts_when_the_key_exists,
    insert_app_conflicts_on_a_taken_id_or_name,
    update_app_conflicts_when_the_name_belongs_to_another_app,
    update_app_conflicts_when_the_app_does_not_exist,
    insert_permission_conflicts_when_the_scope_exists,
    put_role_inserts_or_replaces,
    insert_token_conflicts_on_a_taken_id,
    tokens_must_belong_to_an_existing_app,
    update_token_replaces_an_existing_token_only,
    use_limits_beyond_the_stored_range_conflict,
    delete_app_deletes_its_tokens_and_their_grants,
    deleting_missing_rows_is_a_no_op,
    deleted_rows_can_be_inserted_again,
    apps_are_listed_by_id_after_the_cursor,
    tokens_are_listed_per_app_by_id_after_the_cursor,
    paging_through_many_rows_visits_each_once,
    grant_lookups_follow_token_scopes_and_roles,
    a_grant_held_by_two_tokens_survives_deleting_one,
    consume_use_counts_down_and_stops_at_zero,
    concurrent_consumers_spend_each_use_exactly_once,
    listeners_hear_changes_after_the_commit,
    dropped_listeners_are_skipped,
    every_token_field_round_trips_unchanged,
    a_nul_character_round_trips_or_changes_nothing,
    policy_round_trips_unchanged,
    a_healthy_store_answers_ping,
    signing_keys_are_upserted_and_listed_oldest_first,
    refresh_token_insert_conflicts_on_a_taken_id,
    refresh_records_round_trip_unchanged,
    a_refresh_token_is_spent_once_and_only_while_active,
    concurrent_exchanges_of_one_refresh_token_succeed_once,
    revoking_a_family_revokes_every_member_and_nothing_else,
    revocations_are_upserted_and_listed_by_id,
    purge_deletes_only_what_expired_before_the_cut_off,
    listeners_hear_key_and_revocation_changes,
    audit_events_append_once_per_sequence_number,
    audit_events_round_trip_unchanged,
    audit_listings_filter_page_and_order,
    chained_audit_events_extend_the_head_of_the_chain,
    policy_changes_move_the_policy_version_and_stale_expectations_conflict,
    users_round_trip_with_their_identities_sorted,
    users_are_listed_per_app_by_id_after_the_cursor,
    users_and_idps_must_belong_to_an_existing_app,
    an_identity_of_another_user_conflicts_and_the_batch_changes_nothing,
    failed_batch_restores_every_kind_of_people_change,
    delete_user_removes_their_sessions_and_identities,
    idp_slugs_are_unique_and_idps_round_trip,
    delete_idp_removes_its_identities_and_attempts_but_keeps_users,
    a_login_attempt_is_consumed_once,
    concurrent_callbacks_consume_a_login_attempt_once,
    sessions_need_their_user_and_round_trip,
    touching_a_session_only_moves_forward_and_not_when_revoked,
    revoking_sessions_touches_only_the_selected_live_ones,
    sessions_are_listed_live_and_newest_first,
    a_replay_id_is_claimed_once,
    purge_removes_expired_login_attempts_and_replay_entries,
    delete_app_deletes_its_people,
    roles_held_by_users_or_mapped_by_idps_are_found,
    listeners_hear_user_idp_and_session_changes,
    capacity_counts_every_row_and_those_created_since,
    sealed_identity_records_lists_what_holds_a_sealed_secret,
    put_meta_sets_and_replaces_a_value,
);
