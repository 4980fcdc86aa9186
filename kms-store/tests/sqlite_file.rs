//! The SQLite database as a file: who may read it, what survives a reopen, and how bad
//! files and rows are reported.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use kms_core::store::{AppStore, Mutation, Store, TokenStore, UseOutcome};
use kms_core::store::{StoreError, TokenRecord};
use kms_core::token_format::TokenPrefix;
use kms_core::TokenStatus;
use kms_core::{AppStatus, Application, Timestamp, TokenLimits};
use kms_store::SqliteStore;

fn app() -> Application {
    Application {
        id: "app_1".to_owned(),
        name: "one".to_owned(),
        token_prefix: TokenPrefix::parse("kms").unwrap(),
        status: AppStatus::Active,
        created_at: Timestamp::from_unix(1_800_000_000),
        usage_price: None,
        security: Default::default(),
    }
}

fn token() -> TokenRecord {
    TokenRecord {
        id: "tok_1".to_owned(),
        app_id: "app_1".to_owned(),
        name: "ci".to_owned(),
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
        limits: TokenLimits {
            uses: Some(5),
            ..TokenLimits::default()
        },
        rotated_from: None,
        rotated_to: None,
        last_used_at: None,
    }
}

#[cfg(unix)]
#[test]
fn a_new_database_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.db");
    let store = SqliteStore::open(&path).unwrap();
    store.apply(&[Mutation::InsertApp(app())]).unwrap();
    for file in ["kms.db", "kms.db-wal", "kms.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}: {mode:o}");
    }
}

#[test]
fn data_and_spent_uses_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .apply(&[Mutation::InsertApp(app()), Mutation::InsertToken(token())])
            .unwrap();
        store.consume_use("tok_1").unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.get_app("app_1").unwrap(), Some(app()));
    assert_eq!(
        store.get_token("tok_1").unwrap().unwrap().limits.uses,
        Some(4)
    );
}

#[test]
fn a_file_that_is_not_a_database_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.db");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    assert!(matches!(
        SqliteStore::open(&path),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn an_unopenable_path_is_reported_as_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let missing_dir = dir.path().join("no").join("such").join("kms.db");
    let err = SqliteStore::open(missing_dir).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
}

#[test]
fn undecodable_rows_are_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.db");
    let store = SqliteStore::open(&path).unwrap();
    store
        .apply(&[Mutation::InsertApp(app()), Mutation::InsertToken(token())])
        .unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE tokens SET scopes = '[\"Not A Scope\"]'", [])
        .unwrap();
    conn.execute("UPDATE apps SET status = 'paused'", [])
        .unwrap();
    assert!(matches!(
        store.get_token("tok_1"),
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.list_tokens("app_1", None, 10),
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.get_app("app_1"),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn stores_sharing_one_file_spend_each_use_exactly_once() {
    // Two stores on one file stand in for two processes: each has its own connection, so
    // only SQLite's locking keeps them from spending the same use twice.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.db");
    let first = SqliteStore::open(&path).unwrap();
    let second = SqliteStore::open(&path).unwrap();
    let mut limited = token();
    limited.limits.uses = Some(60);
    first
        .apply(&[Mutation::InsertApp(app()), Mutation::InsertToken(limited)])
        .unwrap();
    let remaining: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = [&first, &second, &first, &second]
            .into_iter()
            .map(|store| {
                scope.spawn(move || {
                    (0..20)
                        .filter_map(|_| match store.consume_use("tok_1").unwrap() {
                            UseOutcome::Remaining(n) => Some(n),
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let mut remaining = remaining;
    remaining.sort_unstable();
    assert_eq!(remaining, (0..60).collect::<Vec<_>>());
    assert_eq!(
        second.get_token("tok_1").unwrap().unwrap().limits.uses,
        Some(0)
    );
}

#[test]
fn stores_sharing_one_file_see_each_others_commits_and_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.db");
    let first = SqliteStore::open(&path).unwrap();
    let second = SqliteStore::open(&path).unwrap();
    first.apply(&[Mutation::InsertApp(app())]).unwrap();
    assert_eq!(second.get_app("app_1").unwrap(), Some(app()));
    let again = second.apply(&[Mutation::InsertApp(app())]);
    assert!(matches!(again, Err(StoreError::Conflict(_))));
}
