//! The usage store every store must share (ADR 0015): hourly buckets added in place, read
//! back per application and per token, purged by retention, and the last use of tokens
//! that only moves forward. Each check is written once against `dyn Store` and run for
//! the memory, SQLite and PostgreSQL stores.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::Arc;

use kms_core::store::{
    Mutation, Store, TokenRecord, TokenTouch, UsageCount, UsageRow, UsageSubject,
};
use kms_core::token_format::TokenPrefix;
use kms_core::{AppStatus, Application, Timestamp, TokenLimits, TokenStatus, UsagePrice};
use kms_store::testing::{NoPostgres, ScratchDatabase};
use kms_store::{MemoryStore, PostgresOptions, PostgresStore, SqliteStore};

struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    _database: Option<ScratchDatabase>,
}

fn scratch_database() -> Option<ScratchDatabase> {
    match ScratchDatabase::create() {
        Ok(database) => Some(database),
        Err(NoPostgres::Skip(notice)) => {
            eprintln!("{notice}");
            None
        }
        Err(NoPostgres::Fail(message)) => panic!("{message}"),
    }
}

fn memory_store() -> Option<Fixture> {
    Some(Fixture {
        store: Arc::new(MemoryStore::new()),
        _dir: None,
        _database: None,
    })
}

fn sqlite_store() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("kms.db")).unwrap();
    Some(Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
        _database: None,
    })
}

fn postgres_store() -> Option<Fixture> {
    let database = scratch_database()?;
    let store = PostgresStore::open(database.url(), PostgresOptions::default()).unwrap();
    Some(Fixture {
        store: Arc::new(store),
        _dir: None,
        _database: Some(database),
    })
}

const HOUR: i64 = 3600;
const T0: i64 = 1_800_000_000 - 1_800_000_000 % HOUR;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix(secs)
}

fn app(id: &str) -> Application {
    Application {
        id: id.to_owned(),
        name: format!("{id} name"),
        token_prefix: TokenPrefix::parse("kms").unwrap(),
        status: AppStatus::Active,
        created_at: at(T0),
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
        created_at: at(T0),
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

fn count(app_id: &str, token_id: &str, start: i64, code: &str, n: u64) -> UsageCount {
    UsageCount {
        app_id: app_id.to_owned(),
        token_id: token_id.to_owned(),
        bucket_start: at(start),
        code: code.to_owned(),
        count: n,
    }
}

fn row(start: i64, code: &str, n: u64) -> UsageRow {
    UsageRow {
        bucket_start: at(start),
        code: code.to_owned(),
        count: n,
    }
}

fn setup(store: &dyn Store) {
    store
        .apply(&[
            Mutation::InsertApp(app("app_a")),
            Mutation::InsertApp(app("app_b")),
            Mutation::InsertToken(token("tok_a1", "app_a")),
            Mutation::InsertToken(token("tok_a2", "app_a")),
            Mutation::InsertToken(token("tok_b1", "app_b")),
        ])
        .unwrap();
}

fn adds_sum_into_buckets_read_per_app_and_per_token(store: &Arc<dyn Store>) {
    setup(store.as_ref());
    let first = [
        count("app_a", "tok_a1", T0, "VALID", 3),
        count("app_a", "tok_a1", T0, "REVOKED", 1),
        count("app_a", "tok_a2", T0, "VALID", 2),
        count("app_a", "tok_a1", T0 + HOUR, "VALID", 5),
        count("app_a", "", T0 + HOUR, "VALID", 7),
        count("app_b", "tok_b1", T0, "VALID", 11),
    ];
    store.add_usage(&first, &[]).unwrap();
    // A second flush (another node's, say) adds to the same buckets.
    store
        .add_usage(&[count("app_a", "tok_a1", T0, "VALID", 4)], &[])
        .unwrap();

    let app_a = store
        .usage(UsageSubject::App("app_a"), at(T0), at(T0 + 2 * HOUR))
        .unwrap();
    assert_eq!(
        app_a,
        [
            row(T0, "REVOKED", 1),
            row(T0, "VALID", 9),
            row(T0 + HOUR, "VALID", 12),
        ]
    );
    let tok = store
        .usage(UsageSubject::Token("tok_a1"), at(T0), at(T0 + 2 * HOUR))
        .unwrap();
    assert_eq!(
        tok,
        [
            row(T0, "REVOKED", 1),
            row(T0, "VALID", 7),
            row(T0 + HOUR, "VALID", 5)
        ]
    );
    // `to` is exclusive, `from` inclusive.
    let first_hour = store
        .usage(UsageSubject::Token("tok_a1"), at(T0), at(T0 + HOUR))
        .unwrap();
    assert_eq!(first_hour.len(), 2);
    let second_hour = store
        .usage(UsageSubject::App("app_a"), at(T0 + HOUR), at(T0 + 5 * HOUR))
        .unwrap();
    assert_eq!(second_hour, [row(T0 + HOUR, "VALID", 12)]);
    // Another tenant's counts are its own.
    let app_b = store
        .usage(UsageSubject::App("app_b"), at(T0), at(T0 + 2 * HOUR))
        .unwrap();
    assert_eq!(app_b, [row(T0, "VALID", 11)]);
    assert!(store
        .usage(UsageSubject::Token("tok_missing"), at(T0), at(T0 + HOUR))
        .unwrap()
        .is_empty());
}

fn last_use_only_moves_forward(store: &Arc<dyn Store>) {
    setup(store.as_ref());
    let touch = |id: &str, secs: i64| TokenTouch {
        token_id: id.to_owned(),
        at: at(secs),
    };
    let last = |id: &str| store.get_token(id).unwrap().unwrap().last_used_at;
    assert_eq!(last("tok_a1"), None);
    store
        .add_usage(&[], &[touch("tok_a1", T0 + 120), touch("tok_missing", T0)])
        .unwrap();
    assert_eq!(last("tok_a1"), Some(at(T0 + 120)));
    store.add_usage(&[], &[touch("tok_a1", T0 + 60)]).unwrap();
    assert_eq!(last("tok_a1"), Some(at(T0 + 120)), "never backwards");
    // A write of the token read before the touch does not undo it either.
    let mut stale = token("tok_a1", "app_a");
    stale.name = "renamed".to_owned();
    store.apply(&[Mutation::UpdateToken(stale)]).unwrap();
    let now = store.get_token("tok_a1").unwrap().unwrap();
    assert_eq!(now.name, "renamed");
    assert_eq!(now.last_used_at, Some(at(T0 + 120)));
    let mut later = now.clone();
    later.last_used_at = Some(at(T0 + 600));
    store.apply(&[Mutation::UpdateToken(later)]).unwrap();
    assert_eq!(last("tok_a1"), Some(at(T0 + 600)));
    assert_eq!(last("tok_a2"), None);
}

fn retention_purges_old_buckets_and_a_failed_batch_keeps_them(store: &Arc<dyn Store>) {
    setup(store.as_ref());
    store
        .add_usage(
            &[
                count("app_a", "tok_a1", T0 - 2 * HOUR, "VALID", 1),
                count("app_a", "tok_a1", T0 - HOUR, "VALID", 2),
                count("app_a", "tok_a1", T0, "VALID", 3),
            ],
            &[],
        )
        .unwrap();
    assert_eq!(store.usage_buckets_before(at(T0)).unwrap(), 2);
    assert_eq!(store.usage_buckets_before(at(T0 - 2 * HOUR)).unwrap(), 0);
    // A batch that fails purges nothing.
    let failed = store.apply(&[
        Mutation::PurgeUsage { before: at(T0) },
        Mutation::InsertApp(app("app_a")),
    ]);
    assert!(failed.is_err());
    assert_eq!(store.usage_buckets_before(at(T0)).unwrap(), 2);
    store
        .apply(&[Mutation::PurgeUsage { before: at(T0) }])
        .unwrap();
    assert_eq!(store.usage_buckets_before(at(T0)).unwrap(), 0);
    let left = store
        .usage(UsageSubject::App("app_a"), at(T0 - 5 * HOUR), at(T0 + HOUR))
        .unwrap();
    assert_eq!(left, [row(T0, "VALID", 3)]);
}

fn an_application_usage_price_round_trips(store: &Arc<dyn Store>) {
    let mut priced = app("app_p");
    priced.usage_price = Some(UsagePrice::parse("0.40", "EUR").unwrap());
    store.apply(&[Mutation::InsertApp(priced.clone())]).unwrap();
    assert_eq!(store.get_app("app_p").unwrap(), Some(priced.clone()));
    let mut cleared = priced;
    cleared.usage_price = None;
    store
        .apply(&[Mutation::UpdateApp(cleared.clone())])
        .unwrap();
    assert_eq!(store.get_app("app_p").unwrap(), Some(cleared));
}

macro_rules! usage_conformance {
    ($($check:ident),* $(,)?) => {
        $(
            mod $check {
                #[test]
                fn memory() {
                    let fixture = super::memory_store().unwrap();
                    super::$check(&fixture.store);
                }
                #[test]
                fn sqlite() {
                    let fixture = super::sqlite_store().unwrap();
                    super::$check(&fixture.store);
                }
                #[test]
                fn postgres() {
                    if let Some(fixture) = super::postgres_store() {
                        super::$check(&fixture.store);
                    }
                }
            }
        )*
    };
}

usage_conformance!(
    adds_sum_into_buckets_read_per_app_and_per_token,
    last_use_only_moves_forward,
    retention_purges_old_buckets_and_a_failed_batch_keeps_them,
    an_application_usage_price_round_trips,
);

/// Two stores (two nodes) on one PostgreSQL database, flushing the same buckets at the
/// same time from several threads each: every count arrives, none twice.
#[test]
fn two_postgres_stores_adding_at_once_sum_exactly() {
    let Some(database) = scratch_database() else {
        return;
    };
    let open = || -> Arc<dyn Store> {
        Arc::new(PostgresStore::open(database.url(), PostgresOptions::default()).unwrap())
    };
    let (one, two) = (open(), open());
    setup(one.as_ref());
    const FLUSHES: u64 = 25;
    let threads: Vec<_> = [one.clone(), two.clone(), one.clone(), two.clone()]
        .into_iter()
        .enumerate()
        .map(|(i, store)| {
            std::thread::spawn(move || {
                for _ in 0..FLUSHES {
                    // Both codes and both tokens, in sorted order, as a flush gives them.
                    let batch = [
                        count("app_a", "tok_a1", T0, "REVOKED", 1),
                        count("app_a", "tok_a1", T0, "VALID", 2),
                        count("app_a", "tok_a2", T0, "VALID", i as u64 + 1),
                    ];
                    store
                        .add_usage(
                            &batch,
                            &[TokenTouch {
                                token_id: "tok_a1".to_owned(),
                                at: at(T0 + 60 * i as i64),
                            }],
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for store in [&one, &two] {
        let rows = store
            .usage(UsageSubject::App("app_a"), at(T0), at(T0 + HOUR))
            .unwrap();
        assert_eq!(
            rows,
            [
                row(T0, "REVOKED", 4 * FLUSHES),
                row(T0, "VALID", 4 * 2 * FLUSHES + (1 + 2 + 3 + 4) * FLUSHES),
            ]
        );
        assert_eq!(
            store.get_token("tok_a1").unwrap().unwrap().last_used_at,
            Some(at(T0 + 180)),
            "the latest touch wins"
        );
    }
}
