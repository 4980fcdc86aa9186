//! Export and erasure of personal data through the `Kms` facade, over the memory, SQLite
//! and PostgreSQL stores (PostgreSQL: `KMS_TEST_POSTGRES_URL`): personal fields of audit
//! events are sealed under a person key, readable in listings and exports, unreadable
//! after erasure, and the chain verifies throughout. Also the erasure of an API key's
//! metadata, and the retention of ended sessions.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::net::IpAddr;
use std::sync::Arc;

use kms_core::store::{Mutation, Store, UserRecord, UserStatus};
use kms_core::{
    AuditFilter, AuditVerification, Caller, ErrorCode, Kms, ManualClock, MasterKey, NewApp,
    NewToken, OsRandom, PageRequest, RotateToken, Timestamp,
};
use kms_store::testing::{NoPostgres, ScratchDatabase};
use kms_store::{MemoryStore, PostgresOptions, PostgresStore, SqliteStore};

const IP: &str = "198.51.100.23";

struct Env {
    kms: Kms,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    root: Caller,
    app_id: String,
    _dir: tempfile::TempDir,
    _database: Option<ScratchDatabase>,
}

fn env_with(store: Arc<dyn Store>, master: Option<MasterKey>) -> Env {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix(1_800_000_000)));
    let mut builder = Kms::builder(store.clone())
        .clock(clock.clone())
        .hash_params(kms_core::dangerous::insecure_hash_params());
    if let Some(m) = master {
        builder = builder.master_key(m);
    }
    let kms = builder.build().unwrap();
    let created = kms.initialize().unwrap();
    let root = kms.authenticate(&created.token, None).unwrap();
    let app = kms
        .create_app(
            &root,
            NewApp {
                name: "corp".into(),
                ..NewApp::default()
            },
        )
        .unwrap();
    Env {
        kms,
        store,
        clock,
        root,
        app_id: app.id,
        _dir: tempfile::tempdir().unwrap(),
        _database: None,
    }
}

fn stores() -> Vec<(&'static str, Env)> {
    let master = || Some(MasterKey::generate(&OsRandom).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path().join("kms.db")).unwrap();
    let mut sqlite = env_with(Arc::new(sqlite), master());
    sqlite._dir = dir;
    let mut out = vec![
        ("memory", env_with(Arc::new(MemoryStore::new()), None)),
        ("sqlite", sqlite),
    ];
    match ScratchDatabase::create() {
        Ok(database) => {
            let options = PostgresOptions {
                pool_size: 4,
                ..PostgresOptions::default()
            };
            let store = PostgresStore::open(database.url(), options).unwrap();
            let mut env = env_with(Arc::new(store), master());
            env._database = Some(database);
            out.push(("postgres", env));
        }
        Err(NoPostgres::Skip(notice)) => eprintln!("{notice}"),
        Err(NoPostgres::Fail(message)) => panic!("{message}"),
    }
    out
}

/// A stored user with a session, and that session as a caller from [`IP`].
fn user_with_session(env: &Env, id: &str) -> (UserRecord, Caller) {
    let user = UserRecord {
        id: id.to_owned(),
        app_id: env.app_id.clone(),
        email: Some("ada.lovelace@example.org".into()),
        name: Some("Ada Lovelace".into()),
        status: UserStatus::Active,
        roles: Vec::new(),
        mapped_roles: Vec::new(),
        grants: Vec::new(),
        identities: Vec::new(),
        created_at: env.clock.now_ts(),
        last_login_at: None,
    };
    env.store.apply(&[Mutation::PutUser(user.clone())]).unwrap();
    let token = kms_core::internal::start_session(&env.kms, &user, "idp_test").unwrap();
    let ip: IpAddr = IP.parse().unwrap();
    let caller = env
        .kms
        .authenticate(&token, Some(ip))
        .unwrap()
        .with_request(Some(ip), None);
    (user, caller)
}

trait Now {
    fn now_ts(&self) -> Timestamp;
}

impl Now for ManualClock {
    fn now_ts(&self) -> Timestamp {
        kms_core::Clock::now(self)
    }
}

fn intact(kms: &Kms, root: &Caller) -> bool {
    matches!(
        kms.verify_audit(root).unwrap(),
        AuditVerification::Intact { ok: true, .. }
    )
}

#[test]
fn a_persons_audit_fields_are_sealed_exported_and_shredded_by_erasure() {
    for (name, env) in stores() {
        let (user, session) = user_with_session(&env, "usr_adalovelace0001");
        // The user logs out: an event about them, from their address.
        env.kms.logout(&session).unwrap();
        let raw = env.store.last_audit_event().unwrap().unwrap();
        assert_eq!(raw.action, "session.revoke", "{name}");
        assert_eq!(raw.subject.as_deref(), Some(user.id.as_str()), "{name}");
        assert_eq!(
            raw.ip, None,
            "{name}: the address is sealed, not stored in the clear"
        );
        let sealed = raw.sealed_personal.clone().unwrap();
        assert!(!sealed.contains(IP), "{name}");
        assert!(
            env.store.get_person_key(&user.id).unwrap().is_some(),
            "{name}"
        );

        // Listings and the export open it.
        let page = env
            .kms
            .list_audit(&env.root, AuditFilter::default(), PageRequest::default())
            .unwrap();
        let listed = page.items.iter().find(|e| e.seq == raw.seq).unwrap();
        assert_eq!(listed.ip.as_deref(), Some(IP), "{name}");
        assert_eq!(listed.personal, None, "{name}");
        assert_eq!(
            listed.sealed_personal, None,
            "{name}: the sealed form is not shown"
        );
        let export = env
            .kms
            .export_user(&env.root, &user.id, PageRequest::default())
            .unwrap();
        assert_eq!(
            export.user.email.as_deref(),
            Some("ada.lovelace@example.org")
        );
        assert_eq!(
            export.sessions.len(),
            1,
            "{name}: ended sessions are exported"
        );
        assert!(export.sessions[0].revoked_at.is_some(), "{name}");
        let exported = export
            .audit
            .items
            .iter()
            .find(|e| e.seq == raw.seq)
            .unwrap();
        assert_eq!(exported.ip.as_deref(), Some(IP), "{name}");
        // An admin action on the user concerns them too (target), without their key.
        env.kms
            .update_user(
                &env.root,
                &user.id,
                kms_core::UserUpdate {
                    status: Some("disabled".into()),
                    ..kms_core::UserUpdate::default()
                },
            )
            .unwrap();
        let export = env
            .kms
            .export_user(&env.root, &user.id, PageRequest::default())
            .unwrap();
        assert_eq!(export.audit.items[0].action, "user.update", "{name}");
        assert_eq!(export.audit.items[0].subject, None, "{name}");
        // Paging of the audit part.
        let first = env
            .kms
            .export_user(
                &env.root,
                &user.id,
                PageRequest {
                    limit: Some(1),
                    cursor: None,
                },
            )
            .unwrap();
        assert_eq!(first.audit.items.len(), 1);
        let cursor = first.audit.next_cursor.clone().unwrap();
        let second = env
            .kms
            .export_user(
                &env.root,
                &user.id,
                PageRequest {
                    limit: Some(1),
                    cursor: Some(cursor),
                },
            )
            .unwrap();
        assert!(second.audit.items[0].seq < first.audit.items[0].seq);
        let bad = env.kms.export_user(
            &env.root,
            &user.id,
            PageRequest {
                limit: Some(0),
                cursor: None,
            },
        );
        assert_eq!(bad.unwrap_err().code(), ErrorCode::InvalidRequest);
        assert!(intact(&env.kms, &env.root), "{name}");

        // Erasure: gone, the key destroyed, the fields unreadable, the chain intact.
        let before: Vec<_> = env.store.audit_after(0, 1_000).unwrap();
        env.kms.erase_user(&env.root, &user.id).unwrap();
        assert!(env.store.get_user(&user.id).unwrap().is_none(), "{name}");
        assert!(
            env.store.user_sessions(&user.id).unwrap().is_empty(),
            "{name}"
        );
        assert!(
            env.store.get_person_key(&user.id).unwrap().is_none(),
            "{name}"
        );
        let after: Vec<_> = env.store.audit_after(0, 1_000).unwrap();
        assert_eq!(
            &after[..before.len()],
            &before[..],
            "{name}: no event changed"
        );
        let erase = after.last().unwrap();
        assert_eq!(erase.action, "user.erase");
        let text = serde_json::to_string(erase).unwrap();
        assert!(
            !text.contains("ada.lovelace@") && !text.contains("Ada Lovelace"),
            "{name}: {text}"
        );
        let page = env
            .kms
            .list_audit(&env.root, AuditFilter::default(), PageRequest::default())
            .unwrap();
        let listed = page.items.iter().find(|e| e.seq == raw.seq).unwrap();
        assert_eq!(listed.ip, None, "{name}");
        assert_eq!(
            listed.personal,
            Some(kms_core::privacy::PersonalStatus::Erased),
            "{name}"
        );
        assert!(intact(&env.kms, &env.root), "{name}");
        let gone = env
            .kms
            .export_user(&env.root, &user.id, PageRequest::default());
        assert_eq!(gone.unwrap_err().code(), ErrorCode::NotFound, "{name}");
        assert_eq!(
            env.kms.erase_user(&env.root, &user.id).unwrap_err().code(),
            ErrorCode::NotFound
        );
    }
}

#[test]
fn an_administrators_address_is_not_sealed_under_the_persons_key() {
    for (name, env) in stores() {
        let (user, _session) = user_with_session(&env, "usr_grace0000000001");
        let admin_ip: IpAddr = "203.0.113.9".parse().unwrap();
        let admin = env.root.clone().with_request(Some(admin_ip), None);
        let sessions = env.store.user_sessions(&user.id).unwrap();
        env.kms.revoke_session(&admin, &sessions[0].id).unwrap();
        let raw = env.store.last_audit_event().unwrap().unwrap();
        assert_eq!(raw.subject.as_deref(), Some(user.id.as_str()), "{name}");
        assert_eq!(raw.ip.as_deref(), Some("203.0.113.9"), "{name}");
        assert_eq!(raw.sealed_personal, None, "{name}");
    }
}

#[test]
fn erasing_a_key_removes_its_metadata_and_the_copies_in_its_lineage() {
    for (name, env) in stores() {
        let req: NewToken = serde_json::from_value(serde_json::json!({
            "name": "ci", "scopes": ["token.read"],
            "metadata": {"owner": "ada.lovelace@example.org"},
        }))
        .unwrap();
        let first = env.kms.create_token(&env.root, &env.app_id, req).unwrap();
        let rotated = env
            .kms
            .rotate_token(&env.root, &first.info.id, RotateToken::default())
            .unwrap();
        env.kms.erase_token(&env.root, &rotated.info.id).unwrap();
        assert!(
            env.store.get_token(&rotated.info.id).unwrap().is_none(),
            "{name}"
        );
        let old = env.store.get_token(&first.info.id).unwrap().unwrap();
        assert!(
            old.metadata.is_empty(),
            "{name}: the predecessor's copy is cleared"
        );
        for e in env.store.audit_after(0, 1_000).unwrap() {
            let text = serde_json::to_string(&e).unwrap();
            assert!(!text.contains("ada.lovelace"), "{name}: {text}");
        }
        let erase = env.store.last_audit_event().unwrap().unwrap();
        assert_eq!(erase.action, "token.erase");
        assert_eq!(erase.details["predecessors_cleared"], 1);
        assert!(intact(&env.kms, &env.root), "{name}");
    }
}

#[test]
fn ended_sessions_are_deleted_after_the_session_retention() {
    for (name, env) in stores() {
        let (user, session) = user_with_session(&env, "usr_retention000001");
        env.kms.logout(&session).unwrap();
        let (_, _live) = user_with_session(&env, "usr_retention000002");
        // A day later, a retention of two days keeps the ended session...
        env.clock.advance(86_400);
        let report = env
            .kms
            .apply_retention(None, None, Some(2 * 86_400))
            .unwrap();
        assert_eq!(report.ended_sessions_deleted, 0, "{name}");
        // ...and of half a day deletes it, and the live one's idle end too (30 min idle).
        let report = env.kms.apply_retention(None, None, Some(43_200)).unwrap();
        assert_eq!(report.ended_sessions_deleted, 2, "{name}");
        assert!(
            env.store.user_sessions(&user.id).unwrap().is_empty(),
            "{name}"
        );
        let sweep = env.store.last_audit_event().unwrap().unwrap();
        assert_eq!(sweep.action, "retention.sweep", "{name}");
        assert_eq!(sweep.details["ended_sessions_deleted"], 2, "{name}");
        let again = env.kms.apply_retention(None, None, Some(43_200)).unwrap();
        assert_eq!(again.ended_sessions_deleted, 0, "{name}");
        assert!(intact(&env.kms, &env.root), "{name}");
    }
}

#[test]
fn person_keys_are_listed_for_a_master_key_rotation() {
    // Without a master key the person keys are stored plain; a rotation to a first master
    // key seals them (sealed-to-sealed is `kms_core::privacy`'s unit test).
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("kms.db")).unwrap());
    let env = env_with(store.clone(), None);
    for i in 0..3 {
        let (_, session) = user_with_session(&env, &format!("usr_rotation00000{i}"));
        env.kms.logout(&session).unwrap();
    }
    let listed = env.store.list_person_keys(None, 2).unwrap();
    assert_eq!(listed.len(), 2);
    let rest = env
        .store
        .list_person_keys(Some(&listed[1].subject), 10)
        .unwrap();
    assert_eq!(rest.len(), 1);
    let new = MasterKey::generate(&OsRandom).unwrap();
    let batch: Vec<Mutation> = listed
        .iter()
        .chain(&rest)
        .map(|r| {
            Mutation::UpdatePersonKey(
                kms_core::privacy::reseal_person_key(None, &new, r, &OsRandom).unwrap(),
            )
        })
        .collect();
    env.store.apply(&batch).unwrap();
    // A Kms on the new master key opens every event; one on the old opens none.
    let reopened = Kms::builder(store.clone() as Arc<dyn Store>)
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .master_key(new)
        .build()
        .unwrap();
    let events = reopened
        .list_audit(
            &reopened.operator(),
            AuditFilter::default(),
            PageRequest::default(),
        )
        .unwrap();
    let sealed: Vec<_> = events
        .items
        .iter()
        .filter(|e| e.subject.is_some())
        .collect();
    assert_eq!(sealed.len(), 3);
    assert!(sealed
        .iter()
        .all(|e| e.ip.as_deref() == Some(IP) && e.personal.is_none()));
    let stale = env
        .kms
        .list_audit(&env.root, AuditFilter::default(), PageRequest::default())
        .unwrap();
    assert!(stale
        .items
        .iter()
        .filter(|e| e.subject.is_some())
        .all(|e| e.personal == Some(kms_core::privacy::PersonalStatus::Unavailable)));
}

/// A database written before data subjects existed (schema 8, events hashed the old way):
/// after the upgrade its chain verifies, and new events with sealed fields extend it.
#[test]
fn an_old_chain_verifies_after_the_upgrade_and_new_personal_events_extend_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.db");
    kms_store::migrations::up(&path, Some(8)).unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut prev = kms_core::store::GENESIS_HASH.to_owned();
        for seq in 1..=3u64 {
            let mut e = kms_core::AuditEvent {
                seq,
                at: Timestamp::from_unix(1_700_000_000 + seq as i64),
                actor: "operator".into(),
                action: "app.create".into(),
                target: format!("app_{seq}"),
                outcome: "success".into(),
                ip: Some("192.0.2.44".into()),
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
            conn.execute(
                "INSERT INTO audit_events (seq, at, actor, action, target, outcome, ip, \
                 request_id, app_id, details, prev_hash, hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, NULL, ?8, ?9, ?10)",
                rusqlite::params![
                    seq as i64,
                    e.at.unix(),
                    e.actor,
                    e.action,
                    e.target,
                    e.outcome,
                    e.ip,
                    e.details.to_string(),
                    e.prev_hash,
                    e.hash
                ],
            )
            .unwrap();
        }
    }
    let store = SqliteStore::open(&path).unwrap();
    let env = env_with(
        Arc::new(store),
        Some(MasterKey::generate(&OsRandom).unwrap()),
    );
    assert!(intact(&env.kms, &env.root));
    let (_, session) = user_with_session(&env, "usr_upgrade0000001");
    env.kms.logout(&session).unwrap();
    let last = env.store.last_audit_event().unwrap().unwrap();
    assert!(last.sealed_personal.is_some());
    assert!(intact(&env.kms, &env.root));
}

#[test]
fn a_person_who_erases_themselves_gets_no_person_key_again() {
    for (name, env) in stores() {
        env.kms
            .create_role(
                &env.root,
                kms_core::NewRole {
                    name: "self-service".into(),
                    permissions: vec!["user.read".into(), "user.write".into()],
                    ..Default::default()
                },
            )
            .unwrap();
        let (mut user, _) = user_with_session(&env, "usr_selferasure0001");
        user.roles = vec![kms_core::RoleName::parse("self-service").unwrap()];
        env.store.apply(&[Mutation::PutUser(user.clone())]).unwrap();
        let token = kms_core::internal::start_session(&env.kms, &user, "idp_test").unwrap();
        let ip: IpAddr = IP.parse().unwrap();
        let session = env
            .kms
            .authenticate(&token, Some(ip))
            .unwrap()
            .with_request(Some(ip), None);
        env.kms.erase_user(&session, &user.id).unwrap();
        assert!(
            env.store.get_person_key(&user.id).unwrap().is_none(),
            "{name}: the erased person has a key again"
        );
        let raw = env.store.last_audit_event().unwrap().unwrap();
        assert_eq!(raw.action, "user.erase", "{name}");
        assert!(raw.sealed_personal.is_none(), "{name}");
        assert_eq!(raw.ip, None, "{name}: their own address is left out");
        assert!(intact(&env.kms, &env.root), "{name}");
    }
}
