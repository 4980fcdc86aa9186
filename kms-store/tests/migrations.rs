//! The migration runner: up, down, status, targets, and refusing what it does not know.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::path::Path;

use kms_core::store::{AppStore, IdentityStore, Mutation, Store, TokenStore};
use kms_core::store::{
    IdpProtocol, IdpRecord, IdpStatus, SamlSettings, SessionRecord, StoreError, TokenRecord,
    UserRecord, UserStatus,
};
use kms_core::token_format::TokenPrefix;
use kms_core::TokenStatus;
use kms_core::{AppStatus, Application, Scope, Timestamp, TokenLimits};
use kms_store::migrations::{self, MIGRATIONS};
use kms_store::testing::{NoPostgres, ScratchDatabase};
use kms_store::{PostgresOptions, PostgresStore, SqliteStore};

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
        scopes: vec![Scope::parse("billing.read").unwrap()],
        roles: vec![kms_core::RoleName::parse("support").unwrap()],
        grants: Vec::new(),
        metadata: serde_json::Map::new(),
        limits: TokenLimits::default(),
        rotated_from: None,
        rotated_to: None,
        last_used_at: None,
    }
}

/// The names of every table, index and trigger, sorted.
fn schema_objects(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT type || ' ' || name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY 1")
        .unwrap();
    let names = stmt.query_map([], |row| row.get(0)).unwrap();
    names.collect::<Result<_, _>>().unwrap()
}

/// The full schema text, to compare states exactly.
fn schema_sql(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT coalesce(sql, name) FROM sqlite_master ORDER BY type, name")
        .unwrap();
    let sql = stmt.query_map([], |row| row.get(0)).unwrap();
    sql.collect::<Result<_, _>>().unwrap()
}

fn applied(path: &Path) -> Vec<u32> {
    let status = migrations::status(path).unwrap();
    status
        .into_iter()
        .filter(|m| m.applied)
        .map(|m| m.version)
        .collect()
}

fn all_versions() -> Vec<u32> {
    MIGRATIONS.iter().map(|m| m.version).collect()
}

#[test]
fn down_to_zero_removes_every_table_and_up_restores_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.db");
    let store = SqliteStore::open(&path).unwrap();
    store
        .apply(&[Mutation::InsertApp(app()), Mutation::InsertToken(token())])
        .unwrap();
    let full_schema = schema_objects(&path);
    assert!(
        full_schema.contains(&"table tokens".to_owned()),
        "{full_schema:?}"
    );
    assert!(store
        .migration_status()
        .unwrap()
        .iter()
        .all(|m| m.applied && m.applied_at.is_some()));

    let mut reverted = all_versions();
    reverted.reverse();
    assert_eq!(store.migrate_down(0).unwrap(), reverted);
    assert_eq!(schema_objects(&path), ["table schema_migrations"]);
    assert!(store.migration_status().unwrap().iter().all(|m| !m.applied));

    assert_eq!(store.migrate_up(None).unwrap(), all_versions());
    assert_eq!(schema_objects(&path), full_schema);
    // The tables are new and empty, and the store works on them.
    assert!(store.get_app("app_1").unwrap().is_none());
    store.apply(&[Mutation::InsertApp(app())]).unwrap();
    store.ping().unwrap();
}

#[test]
fn each_down_step_exactly_undoes_its_up_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.db");
    // The schema before each migration, by version (numbers need not be contiguous while
    // branches that each took a number are being merged).
    let mut schema_at = std::collections::BTreeMap::new();
    for m in MIGRATIONS {
        migrations::up(&path, Some(m.version - 1)).unwrap();
        schema_at.insert(m.version, schema_sql(&path));
        assert_eq!(migrations::up(&path, Some(m.version)).unwrap(), [m.version]);
    }
    for m in MIGRATIONS.iter().rev() {
        assert_eq!(migrations::down(&path, m.version - 1).unwrap(), [m.version]);
        let before = &schema_at[&m.version];
        assert_eq!(
            &schema_sql(&path),
            before,
            "migration {} ({})",
            m.version,
            m.name
        );
    }
}

#[test]
fn migrating_to_a_target_stops_there_and_repeats_are_no_ops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.db");
    assert_eq!(migrations::up(&path, Some(1)).unwrap(), [1]);
    assert_eq!(applied(&path), [1]);
    assert_eq!(migrations::up(&path, Some(1)).unwrap(), Vec::<u32>::new());
    assert_eq!(migrations::up(&path, None).unwrap(), all_versions()[1..]);
    assert_eq!(migrations::up(&path, None).unwrap(), Vec::<u32>::new());
    // Up never goes down, and down never goes up.
    assert_eq!(migrations::up(&path, Some(1)).unwrap(), Vec::<u32>::new());
    assert_eq!(applied(&path), all_versions());
    assert_eq!(migrations::down(&path, 1).unwrap().last(), Some(&2));
    assert_eq!(applied(&path), [1]);
    assert_eq!(migrations::down(&path, 1).unwrap(), Vec::<u32>::new());
}

#[test]
fn open_migrates_a_partly_migrated_database_to_the_latest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.db");
    migrations::up(&path, Some(1)).unwrap();
    let store = SqliteStore::open(&path).unwrap();
    store.ping().unwrap();
    assert_eq!(applied(&path), all_versions());
}

#[test]
fn reapplying_the_grants_migration_rebuilds_the_index_from_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.db");
    let store = SqliteStore::open(&path).unwrap();
    store
        .apply(&[Mutation::InsertApp(app()), Mutation::InsertToken(token())])
        .unwrap();
    let grants = MIGRATIONS
        .iter()
        .find(|m| m.name == "token grants index")
        .unwrap();
    store.migrate_down(grants.version - 1).unwrap();
    store.migrate_up(None).unwrap();
    assert!(store
        .scope_is_granted(&Scope::parse("billing.read").unwrap())
        .unwrap());
    assert!(store
        .role_is_granted(&kms_core::RoleName::parse("support").unwrap())
        .unwrap());
    assert!(!store
        .scope_is_granted(&Scope::parse("billing").unwrap())
        .unwrap());
}

#[test]
fn a_store_below_the_latest_schema_is_not_ready() {
    let store = SqliteStore::open_in_memory().unwrap();
    store.ping().unwrap();
    store.migrate_down(1).unwrap();
    assert!(matches!(store.ping(), Err(StoreError::Unavailable { .. })));
    store.migrate_up(None).unwrap();
    store.ping().unwrap();
}

#[test]
fn unknown_targets_are_refused() {
    let store = SqliteStore::open_in_memory().unwrap();
    let beyond = migrations::latest_version() + 1;
    assert!(matches!(
        store.migrate_up(Some(beyond)),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.migrate_down(beyond),
        Err(StoreError::Conflict(_))
    ));
    store.ping().unwrap();
}

#[test]
fn a_database_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.db");
    migrations::up(&path, None).unwrap();
    let future = migrations::latest_version() + 1;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 0)",
            [future],
        )
        .unwrap();
    match SqliteStore::open(&path) {
        Err(StoreError::Conflict(message)) => assert!(message.contains("upgrade kms"), "{message}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        migrations::down(&path, 0),
        Err(StoreError::Conflict(_))
    ));
    let status = migrations::status(&path).unwrap();
    let last = status.last().unwrap();
    assert_eq!((last.version, last.applied), (future, true));
    assert_eq!(last.name, "unknown to this build");
}

#[test]
fn status_and_down_do_not_create_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.db");
    assert!(matches!(
        migrations::status(&path),
        Err(StoreError::Unavailable { .. })
    ));
    assert!(matches!(
        migrations::down(&path, 0),
        Err(StoreError::Unavailable { .. })
    ));
    assert!(!path.exists());
}

#[test]
fn status_of_a_fresh_file_lists_every_migration_unapplied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.db");
    std::fs::File::create(&path).unwrap();
    let status = migrations::status(&path).unwrap();
    assert_eq!(status.len(), MIGRATIONS.len());
    assert!(status.iter().all(|m| !m.applied && m.applied_at.is_none()));
}

/// The migration that adds users, identity providers, login attempts, sessions and the
/// replay cache, and the tables it makes.
const PEOPLE: &str = "users, identity providers, login attempts and sessions";
const PEOPLE_TABLES: &[&str] = &[
    "users",
    "user_identities",
    "idps",
    "login_attempts",
    "sessions",
    "sso_replay",
];

/// A user with an identity at a provider, and a session of theirs.
fn people() -> Vec<Mutation> {
    vec![
        Mutation::PutIdp(IdpRecord {
            id: "idp_1".to_owned(),
            app_id: "app_1".to_owned(),
            slug: "acme".to_owned(),
            status: IdpStatus::Active,
            created_at: Timestamp::from_unix(1_800_000_000),
            role_map: Default::default(),
            default_roles: Vec::new(),
            email_domains: vec!["example.com".to_owned()],
            protocol: IdpProtocol::Saml(SamlSettings {
                idp_metadata_xml: "<EntityDescriptor/>".to_owned(),
                groups_attribute: None,
                allow_idp_initiated: false,
            }),
        }),
        Mutation::PutUser(UserRecord {
            id: "usr_1".to_owned(),
            app_id: "app_1".to_owned(),
            email: None,
            name: None,
            status: UserStatus::Active,
            roles: Vec::new(),
            mapped_roles: Vec::new(),
            grants: Vec::new(),
            identities: vec![kms_core::store::Identity {
                idp_id: "idp_1".to_owned(),
                subject: "alice".to_owned(),
            }],
            created_at: Timestamp::from_unix(1_800_000_000),
            last_login_at: None,
        }),
        Mutation::InsertSession(SessionRecord {
            id: "ses_1".to_owned(),
            user_id: "usr_1".to_owned(),
            app_id: "app_1".to_owned(),
            idp_id: "idp_1".to_owned(),
            secret_hash: "0".repeat(64),
            created_at: Timestamp::from_unix(1_800_000_000),
            expires_at: Timestamp::from_unix(1_800_086_400),
            last_used_at: Timestamp::from_unix(1_800_000_000),
            ip: None,
            user_agent: None,
            revoked_at: None,
            revoke_reason: None,
            sealed_upstream_refresh: None,
            revalidated_at: None,
        }),
        Mutation::ClaimReplay {
            id: "saml:idp_1:a".to_owned(),
            expires_at: Timestamp::from_unix(1_800_000_600),
        },
    ]
}

#[test]
fn the_people_migration_drops_only_its_tables_and_brings_them_back_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.db");
    let store = SqliteStore::open(&path).unwrap();
    let mut batch = vec![Mutation::InsertApp(app()), Mutation::InsertToken(token())];
    batch.extend(people());
    store.apply(&batch).unwrap();
    assert!(store.get_user("usr_1").unwrap().is_some());
    let full_schema = schema_objects(&path);
    for table in PEOPLE_TABLES {
        assert!(full_schema.contains(&format!("table {table}")), "{table}");
    }
    let m = MIGRATIONS.iter().find(|m| m.name == PEOPLE).unwrap();
    // Going below the people migration reverts every later one too, newest first.
    let later: Vec<u32> = MIGRATIONS
        .iter()
        .map(|x| x.version)
        .filter(|v| *v >= m.version)
        .collect();
    let reverted: Vec<u32> = later.iter().rev().copied().collect();

    assert_eq!(store.migrate_down(m.version - 1).unwrap(), reverted);
    let schema = schema_objects(&path);
    for table in PEOPLE_TABLES {
        assert!(!schema.contains(&format!("table {table}")), "{table}");
    }
    assert!(matches!(store.ping(), Err(StoreError::Unavailable { .. })));
    // What came before is untouched (read raw: later migrations, gone too, add columns the
    // store's reads name).
    let tokens: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM tokens WHERE id = 'tok_1'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(tokens, 1);

    assert_eq!(store.migrate_up(None).unwrap(), later);
    assert_eq!(schema_objects(&path), full_schema);
    store.ping().unwrap();
    assert!(store.get_user("usr_1").unwrap().is_none());
    store.apply(&people()).unwrap();
    assert_eq!(
        store
            .list_sessions("usr_1", Timestamp::from_unix(0))
            .unwrap()
            .len(),
        1
    );
}

/// The same on PostgreSQL, against the server of `KMS_TEST_POSTGRES_URL` (skipped without
/// one outside CI).
#[test]
fn the_people_migration_goes_down_and_up_on_postgres() {
    let database = match ScratchDatabase::create() {
        Ok(database) => database,
        Err(NoPostgres::Skip(notice)) => return eprintln!("{notice}"),
        Err(NoPostgres::Fail(message)) => panic!("{message}"),
    };
    let store = PostgresStore::open(database.url(), PostgresOptions::default()).unwrap();
    let mut batch = vec![Mutation::InsertApp(app()), Mutation::InsertToken(token())];
    batch.extend(people());
    store.apply(&batch).unwrap();
    let mut client = postgres::Client::connect(database.url(), postgres::NoTls).unwrap();
    let tables = |client: &mut postgres::Client| -> Vec<bool> {
        PEOPLE_TABLES
            .iter()
            .map(|t| {
                let row = client
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[t])
                    .unwrap();
                row.get(0)
            })
            .collect()
    };
    assert!(tables(&mut client).iter().all(|t| *t));
    let m = kms_store::postgres::migrations::MIGRATIONS
        .iter()
        .find(|m| m.name == PEOPLE)
        .unwrap();
    let later: Vec<u32> = kms_store::postgres::migrations::MIGRATIONS
        .iter()
        .map(|x| x.version)
        .filter(|v| *v >= m.version)
        .collect();
    let reverted: Vec<u32> = later.iter().rev().copied().collect();

    assert_eq!(store.migrate_down(m.version - 1).unwrap(), reverted);
    assert!(tables(&mut client).iter().all(|t| !*t));
    let tokens: i64 = client
        .query_one("SELECT count(*) FROM tokens WHERE id = 'tok_1'", &[])
        .unwrap()
        .get(0);
    assert_eq!(tokens, 1);
    assert!(matches!(store.ping(), Err(StoreError::Unavailable { .. })));

    assert_eq!(store.migrate_up(None).unwrap(), later);
    assert!(tables(&mut client).iter().all(|t| *t));
    store.ping().unwrap();
    assert!(store.get_user("usr_1").unwrap().is_none());
    store.apply(&people()).unwrap();
    assert!(store.get_user("usr_1").unwrap().is_some());
}
