//! The privacy behaviour every store must share (person keys, audit events about a person,
//! a user's sessions, ended sessions, erasure), written once against `dyn Store` and run on
//! the memory, SQLite and PostgreSQL stores (PostgreSQL: `KMS_TEST_POSTGRES_URL`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::Arc;

use kms_core::store::{
    Mutation, PersonKeyRecord, SessionRecord, Store, StoreError, TokenRecord, UserRecord,
    UserStatus,
};
use kms_core::token_format::TokenPrefix;
use kms_core::{AppStatus, Application, AuditEvent, Timestamp, TokenLimits, TokenStatus};
use kms_store::testing::{NoPostgres, ScratchDatabase};
use kms_store::{MemoryStore, PostgresOptions, PostgresStore, SqliteStore};

struct Fixture {
    store: Arc<dyn Store>,
    dir: Option<tempfile::TempDir>,
    _database: Option<ScratchDatabase>,
}

fn fixtures() -> Vec<(&'static str, Fixture)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path().join("kms.db")).unwrap();
    let mut out = vec![
        (
            "memory",
            Fixture {
                store: Arc::new(MemoryStore::new()),
                dir: None,
                _database: None,
            },
        ),
        (
            "sqlite",
            Fixture {
                store: Arc::new(sqlite),
                dir: Some(dir),
                _database: None,
            },
        ),
    ];
    match ScratchDatabase::create() {
        Ok(database) => {
            let options = PostgresOptions {
                pool_size: 4,
                ..PostgresOptions::default()
            };
            let store = PostgresStore::open(database.url(), options).unwrap();
            out.push((
                "postgres",
                Fixture {
                    store: Arc::new(store),
                    dir: None,
                    _database: Some(database),
                },
            ));
        }
        Err(NoPostgres::Skip(notice)) => eprintln!("{notice}"),
        Err(NoPostgres::Fail(message)) => panic!("{message}"),
    }
    out
}

fn app() -> Application {
    Application {
        id: "app_1".to_owned(),
        name: "one".to_owned(),
        token_prefix: TokenPrefix::parse("kms").unwrap(),
        status: AppStatus::Active,
        created_at: Timestamp::from_unix(1_800_000_000),
        security: Default::default(),
        usage_price: None,
    }
}

fn user(id: &str) -> UserRecord {
    UserRecord {
        id: id.to_owned(),
        app_id: "app_1".to_owned(),
        email: Some("erasable-q7x2k@example.org".to_owned()),
        name: Some("Erasable Person".to_owned()),
        status: UserStatus::Active,
        roles: Vec::new(),
        mapped_roles: Vec::new(),
        grants: Vec::new(),
        identities: vec![kms_core::store::Identity {
            idp_id: "idp_1".to_owned(),
            subject: format!("subject-of-{id}"),
        }],
        created_at: Timestamp::from_unix(1_800_000_000),
        last_login_at: None,
    }
}

fn session(id: &str, user_id: &str, created: i64) -> SessionRecord {
    SessionRecord {
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        app_id: "app_1".to_owned(),
        idp_id: "idp_1".to_owned(),
        secret_hash: "5".repeat(64),
        created_at: Timestamp::from_unix(created),
        expires_at: Timestamp::from_unix(created + 1_000),
        last_used_at: Timestamp::from_unix(created),
        ip: Some("192.0.2.1".to_owned()),
        user_agent: Some("Agent-q7x2k".to_owned()),
        revoked_at: None,
        revoke_reason: None,
        sealed_upstream_refresh: None,
        revalidated_at: None,
    }
}

fn key(subject: &str, stored: &str) -> PersonKeyRecord {
    PersonKeyRecord {
        subject: subject.to_owned(),
        stored_key: stored.to_owned(),
        created_at: Timestamp::from_unix(1_800_000_000),
    }
}

fn event(seq: u64, actor: &str, target: &str, subject: Option<&str>) -> AuditEvent {
    AuditEvent {
        seq,
        at: Timestamp::from_unix(1_800_000_000 + seq as i64),
        actor: actor.to_owned(),
        action: "x.y".to_owned(),
        target: target.to_owned(),
        outcome: "success".to_owned(),
        ip: None,
        request_id: None,
        app_id: None,
        details: serde_json::json!({}),
        prev_hash: "0".repeat(64),
        hash: format!("{seq:064x}"),
        subject: subject.map(str::to_owned),
        sealed_personal: subject.map(|_| format!("c2VhbGVk{seq}")),
        personal: None,
    }
}

fn token(id: &str) -> TokenRecord {
    TokenRecord {
        id: id.to_owned(),
        app_id: "app_1".to_owned(),
        name: "t".to_owned(),
        secret_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".to_owned(),
        start: "kms_abc".to_owned(),
        status: TokenStatus::Active,
        created_at: Timestamp::from_unix(1_800_000_000),
        expires_at: None,
        revoked_at: None,
        scopes: Vec::new(),
        roles: Vec::new(),
        grants: Vec::new(),
        metadata: serde_json::from_value(serde_json::json!({"owner": "meta-q7x2k"})).unwrap(),
        limits: TokenLimits::default(),
        rotated_from: None,
        rotated_to: None,
        last_used_at: None,
    }
}

#[test]
fn person_keys_insert_once_update_only_existing_and_list_by_subject() {
    for (name, f) in fixtures() {
        let s = &f.store;
        s.apply(&[
            Mutation::InsertPersonKey(key("usr_b", "plain:b")),
            Mutation::InsertPersonKey(key("usr_a", "plain:a")),
            Mutation::InsertPersonKey(key("usr_c", "plain:c")),
        ])
        .unwrap();
        assert!(
            matches!(
                s.apply(&[Mutation::InsertPersonKey(key("usr_a", "plain:other"))]),
                Err(StoreError::Conflict(_))
            ),
            "{name}"
        );
        assert_eq!(
            s.get_person_key("usr_a").unwrap().unwrap().stored_key,
            "plain:a"
        );
        s.apply(&[Mutation::UpdatePersonKey(key("usr_a", "sealed:new"))])
            .unwrap();
        assert_eq!(
            s.get_person_key("usr_a").unwrap().unwrap(),
            key("usr_a", "sealed:new"),
            "{name}"
        );
        assert!(
            matches!(
                s.apply(&[Mutation::UpdatePersonKey(key("usr_zz", "plain:z"))]),
                Err(StoreError::Conflict(_))
            ),
            "{name}"
        );
        let page: Vec<String> = s
            .list_person_keys(None, 2)
            .unwrap()
            .into_iter()
            .map(|k| k.subject)
            .collect();
        assert_eq!(page, ["usr_a", "usr_b"], "{name}");
        let rest: Vec<String> = s
            .list_person_keys(Some("usr_b"), 10)
            .unwrap()
            .into_iter()
            .map(|k| k.subject)
            .collect();
        assert_eq!(rest, ["usr_c"], "{name}");
        assert!(s.get_person_key("usr_none").unwrap().is_none());
    }
}

#[test]
fn audit_events_concerning_ids_match_subject_actor_or_target_newest_first() {
    for (name, f) in fixtures() {
        let s = &f.store;
        let events = [
            event(1, "operator", "usr_a", None),
            event(2, "usr_a", "tok_1", Some("usr_a")),
            event(3, "operator", "ses_a1", None),
            event(4, "operator", "tok_2", None),
            event(5, "anonymous", "usr_b", Some("usr_b")),
            event(6, "system", "ses_x", Some("usr_a")),
        ];
        let batch: Vec<_> = events.iter().cloned().map(Mutation::AppendAudit).collect();
        s.apply(&batch).unwrap();
        let ids = vec!["usr_a".to_owned(), "ses_a1".to_owned()];
        let seqs = |before, limit| -> Vec<u64> {
            s.audit_concerning(&ids, before, limit)
                .unwrap()
                .into_iter()
                .map(|e| e.seq)
                .collect()
        };
        assert_eq!(seqs(None, 10), [6, 3, 2, 1], "{name}");
        assert_eq!(seqs(None, 2), [6, 3], "{name}");
        assert_eq!(seqs(Some(3), 10), [2, 1], "{name}");
        assert_eq!(seqs(Some(u64::MAX), 1), [6], "{name}");
        let read = s.audit_concerning(&ids, None, 10).unwrap();
        assert_eq!(
            read[0], events[5],
            "{name}: subject and sealed fields round-trip"
        );
        assert!(s.audit_concerning(&[], None, 10).unwrap().is_empty());
    }
}

#[test]
fn a_users_sessions_are_listed_ended_or_not_and_ended_ones_found_for_retention() {
    for (name, f) in fixtures() {
        let s = &f.store;
        s.apply(&[
            Mutation::InsertApp(app()),
            Mutation::PutUser(user("usr_a")),
            Mutation::PutUser(user("usr_b")),
            Mutation::InsertSession(session("ses_old", "usr_a", 1_000)),
            Mutation::InsertSession(session("ses_new", "usr_a", 5_000)),
            Mutation::InsertSession(session("ses_b", "usr_b", 9_000)),
            Mutation::RevokeSessions {
                selector: kms_core::store::SessionSelector::Id("ses_new".into()),
                at: Timestamp::from_unix(5_100),
                reason: "logout".into(),
            },
        ])
        .unwrap();
        let ids: Vec<String> = s
            .user_sessions("usr_a")
            .unwrap()
            .into_iter()
            .map(|x| x.id)
            .collect();
        assert_eq!(
            ids,
            ["ses_new", "ses_old"],
            "{name}: newest first, revoked included"
        );
        let ended = |before: i64, used: i64| {
            s.ended_sessions(Timestamp::from_unix(before), Timestamp::from_unix(used), 10)
                .unwrap()
        };
        // ses_old expires at 2000, ses_new was revoked at 5100, ses_b is live.
        assert_eq!(ended(2_001, 0), ["ses_old"], "{name}");
        assert_eq!(ended(5_101, 0), ["ses_new", "ses_old"], "{name}");
        assert_eq!(
            ended(0, 9_001),
            ["ses_b", "ses_new", "ses_old"],
            "{name}: idle"
        );
        assert_eq!(
            s.ended_sessions(Timestamp::from_unix(99_999), Timestamp::from_unix(0), 1)
                .unwrap()
                .len(),
            1
        );
        s.apply(&[
            Mutation::DeleteSession("ses_old".into()),
            Mutation::DeleteSession("ses_missing".into()),
        ])
        .unwrap();
        assert!(s.get_session("ses_old").unwrap().is_none(), "{name}");
        assert!(s.get_session("ses_new").unwrap().is_some(), "{name}");
    }
}

#[test]
fn erasing_a_person_deletes_user_identities_sessions_and_key_and_scrubs_the_file() {
    for (name, f) in fixtures() {
        let s = &f.store;
        s.apply(&[
            Mutation::InsertApp(app()),
            Mutation::PutUser(user("usr_a")),
            Mutation::PutUser(user("usr_b")),
            Mutation::InsertSession(session("ses_a", "usr_a", 1_000)),
            Mutation::InsertPersonKey(key("usr_a", "plain:a")),
            Mutation::InsertPersonKey(key("usr_b", "plain:b")),
            Mutation::InsertToken(token("tok_1")),
        ])
        .unwrap();
        let erase = Mutation::ErasePerson("usr_a".into());
        assert!(erase.erases());
        s.apply(&[erase, Mutation::EraseToken("tok_1".into())])
            .unwrap();
        assert!(s.get_user("usr_a").unwrap().is_none(), "{name}");
        assert!(s
            .user_by_identity("idp_1", "subject-of-usr_a")
            .unwrap()
            .is_none());
        assert!(s.get_session("ses_a").unwrap().is_none(), "{name}");
        assert!(s.get_person_key("usr_a").unwrap().is_none(), "{name}");
        assert!(s.get_token("tok_1").unwrap().is_none(), "{name}");
        assert!(s.get_user("usr_b").unwrap().is_some(), "{name}");
        assert!(s.get_person_key("usr_b").unwrap().is_some(), "{name}");
        // Erasing what is gone changes nothing.
        s.apply(&[Mutation::ErasePerson("usr_a".into())]).unwrap();
        if let Some(dir) = &f.dir {
            // usr_b's rows are still there, usr_a's are zeroed, and the log is truncated.
            let mut all = Vec::new();
            for suffix in ["kms.db", "kms.db-wal"] {
                if let Ok(bytes) = std::fs::read(dir.path().join(suffix)) {
                    all.extend(bytes);
                }
            }
            let has = |n: &str| all.windows(n.len()).any(|w| w == n.as_bytes());
            assert!(has("subject-of-usr_b"), "{name}");
            for gone in ["subject-of-usr_a", "Agent-q7x2k", "meta-q7x2k", "plain:a"] {
                assert!(!has(gone), "{name}: {gone} is still in the files");
            }
            let wal = std::fs::metadata(dir.path().join("kms.db-wal")).map_or(0, |m| m.len());
            assert_eq!(wal, 0, "{name}: the write-ahead log is truncated");
        }
    }
}

#[test]
fn a_failed_erasure_batch_changes_nothing() {
    for (name, f) in fixtures() {
        let s = &f.store;
        s.apply(&[
            Mutation::InsertApp(app()),
            Mutation::PutUser(user("usr_a")),
            Mutation::InsertSession(session("ses_a", "usr_a", 1_000)),
            Mutation::InsertPersonKey(key("usr_a", "plain:a")),
        ])
        .unwrap();
        let failed = s.apply(&[
            Mutation::ErasePerson("usr_a".into()),
            Mutation::DeleteSession("ses_a".into()),
            Mutation::InsertPersonKey(key("usr_x", "plain:x")),
            Mutation::InsertPersonKey(key("usr_x", "plain:x")),
        ]);
        assert!(matches!(failed, Err(StoreError::Conflict(_))), "{name}");
        assert!(s.get_user("usr_a").unwrap().is_some(), "{name}");
        assert!(s.get_session("ses_a").unwrap().is_some(), "{name}");
        assert!(s.get_person_key("usr_a").unwrap().is_some(), "{name}");
        assert!(s.get_person_key("usr_x").unwrap().is_none(), "{name}");
    }
}
