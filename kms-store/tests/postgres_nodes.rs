//! The PostgreSQL store as one node of several: a notification that never arrived is
//! noticed through the change counter, and a read replica serves listings while
//! everything else stays on the primary. Against the server of `KMS_TEST_POSTGRES_URL`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kms_core::store::{AppStore, Change, ChangeListener, Mutation, Store};
use kms_core::store::{
    IdpProtocol, IdpRecord, IdpStatus, SamlSettings, SessionRecord, SessionSelector, UserRecord,
    UserStatus,
};
use kms_core::Timestamp;
use kms_core::{Kms, NewApp};
use kms_store::testing::{NoPostgres, ScratchDatabase};
use kms_store::{PostgresOptions, PostgresStore};

fn database() -> Option<ScratchDatabase> {
    match ScratchDatabase::create() {
        Ok(db) => Some(db),
        Err(NoPostgres::Skip(notice)) => {
            eprintln!("{notice}");
            None
        }
        Err(NoPostgres::Fail(message)) => panic!("{message}"),
    }
}

#[derive(Default)]
struct Heard(Mutex<Vec<Change>>);

impl ChangeListener for Heard {
    fn on_change(&self, change: &Change) {
        self.0.lock().unwrap().push(change.clone());
    }
}

/// A batch committed without its notification (as if the listener lost it in a network
/// blip) is noticed within a few seconds by comparing the change counter: the node
/// flushes (a policy and a key change: every cache dropped, definitions reloaded).
#[test]
fn a_missed_notification_is_noticed_through_the_change_counter() {
    let Some(db) = database() else { return };
    let store = PostgresStore::open(db.url(), PostgresOptions::default()).unwrap();
    let heard = Arc::new(Heard::default());
    let listener: Arc<dyn ChangeListener> = heard.clone();
    store.subscribe(Arc::downgrade(&listener));
    // Another "node" commits a change and advances the counter, but no notification is
    // sent.
    let mut other = postgres::Client::connect(db.url(), postgres::NoTls).unwrap();
    other
        .batch_execute(
            "INSERT INTO meta (key, value) VALUES ('change_seq', '1') \
             ON CONFLICT (key) DO UPDATE SET value = (meta.value::BIGINT + 1)::TEXT",
        )
        .unwrap();
    let start = Instant::now();
    loop {
        if heard.0.lock().unwrap().contains(&Change::Policy) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "no flush after {:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(heard.0.lock().unwrap().contains(&Change::Keys));
    // A change that was notified is heard as itself, and no flush follows it.
    heard.0.lock().unwrap().clear();
    let writer = PostgresStore::open(db.url(), PostgresOptions::default()).unwrap();
    let kms = Kms::builder(Arc::new(writer)).build().unwrap();
    kms.initialize().unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let heard = heard.0.lock().unwrap().clone();
    // Initialising announces the new permissions (a policy change), and nothing more: a
    // flush would add a key change.
    assert_eq!(
        heard,
        vec![Change::Policy],
        "a flush after a notified change"
    );
}

fn kms_on(url: &str) -> Kms {
    let store = PostgresStore::open(url, PostgresOptions::default()).unwrap();
    let kms = Kms::builder(Arc::new(store)).build().unwrap();
    kms.initialize().unwrap();
    kms
}

fn new_app(name: &str) -> NewApp {
    serde_json::from_value(serde_json::json!({ "name": name })).unwrap()
}

/// With a replica, listings read the replica (here a database that holds other rows, so
/// the answer shows where it came from) and everything else the primary; a replica that
/// cannot be reached is skipped for the primary.
#[test]
fn listings_go_to_the_replica_and_everything_else_to_the_primary() {
    let (Some(primary), Some(replica)) = (database(), database()) else {
        return;
    };
    let on_primary = kms_on(primary.url());
    let on_replica = kms_on(replica.url());
    let p = on_primary
        .create_app(&on_primary.operator(), new_app("on-primary"))
        .unwrap();
    let r = on_replica
        .create_app(&on_replica.operator(), new_app("on-replica"))
        .unwrap();
    let options = PostgresOptions::default();
    let store = PostgresStore::open(primary.url(), options.clone())
        .unwrap()
        .with_replica(replica.url(), &options)
        .unwrap();
    let names: Vec<String> = store
        .list_apps(None, 100)
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert!(names.contains(&"on-replica".to_owned()), "{names:?}");
    assert!(!names.contains(&"on-primary".to_owned()), "{names:?}");
    assert!(store.get_app(&p.id).unwrap().is_some());
    assert!(store.get_app(&r.id).unwrap().is_none());
    // A replica that is down: listings come from the primary.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let short = PostgresOptions {
        connect_timeout: Duration::from_millis(500),
        ..PostgresOptions::default()
    };
    let store = PostgresStore::open(primary.url(), options)
        .unwrap()
        .with_replica(
            &format!("postgres://postgres@127.0.0.1:{port}/none"),
            &short,
        )
        .unwrap();
    let names: Vec<String> = store
        .list_apps(None, 100)
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert!(names.contains(&"on-primary".to_owned()), "{names:?}");
}

fn people_batch() -> Vec<Mutation> {
    vec![
        Mutation::PutIdp(IdpRecord {
            id: "idp_1".to_owned(),
            app_id: "app_1".to_owned(),
            slug: "acme".to_owned(),
            status: IdpStatus::Active,
            created_at: Timestamp::from_unix(1_800_000_000),
            role_map: Default::default(),
            default_roles: Vec::new(),
            email_domains: Vec::new(),
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
            identities: Vec::new(),
            created_at: Timestamp::from_unix(1_800_000_000),
            last_login_at: None,
        }),
    ]
}

fn session(id: &str) -> SessionRecord {
    SessionRecord {
        id: id.to_owned(),
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
    }
}

/// Waits until `heard` holds `expected` (in order, nothing else), or fails after a while.
fn wait_for(heard: &Heard, expected: &[Change]) {
    let start = Instant::now();
    loop {
        if heard.0.lock().unwrap().as_slice() == expected {
            return;
        }
        let so_far = heard.0.lock().unwrap().clone();
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "heard {so_far:?}, expected {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Changes to users, providers and sessions written through one node reach the listeners
/// of another node on the same database through its notifications.
#[test]
fn another_node_hears_user_idp_and_session_changes() {
    let Some(db) = database() else { return };
    let writer = PostgresStore::open(db.url(), PostgresOptions::default()).unwrap();
    let reader = PostgresStore::open(db.url(), PostgresOptions::default()).unwrap();
    let heard = Arc::new(Heard::default());
    let listener: Arc<dyn ChangeListener> = heard.clone();
    reader.subscribe(Arc::downgrade(&listener));

    let mut setup = vec![Mutation::InsertApp(kms_core::Application {
        id: "app_1".to_owned(),
        name: "one".to_owned(),
        token_prefix: kms_core::token_format::TokenPrefix::parse("kms").unwrap(),
        status: kms_core::AppStatus::Active,
        created_at: Timestamp::from_unix(1_800_000_000),
        usage_price: None,
        security: Default::default(),
    })];
    setup.extend(people_batch());
    setup.push(Mutation::InsertSession(session("ses_1")));
    setup.push(Mutation::InsertSession(session("ses_2")));
    writer.apply(&setup).unwrap();
    wait_for(
        &heard,
        &[
            Change::Idp("idp_1".to_owned()),
            Change::User("usr_1".to_owned()),
        ],
    );
    heard.0.lock().unwrap().clear();

    writer
        .apply(&[
            Mutation::UpdateSession(SessionRecord {
                user_agent: Some("curl".to_owned()),
                ..session("ses_1")
            }),
            Mutation::RevokeSessions {
                selector: SessionSelector::Id("ses_2".to_owned()),
                at: Timestamp::from_unix(1_800_000_100),
                reason: "logout".to_owned(),
            },
            Mutation::RevokeSessions {
                selector: SessionSelector::User("usr_1".to_owned()),
                at: Timestamp::from_unix(1_800_000_200),
                reason: "user_disabled".to_owned(),
            },
            Mutation::RevokeSessions {
                selector: SessionSelector::Idp("idp_1".to_owned()),
                at: Timestamp::from_unix(1_800_000_300),
                reason: "idp_deleted".to_owned(),
            },
            Mutation::DeleteIdp("idp_1".to_owned()),
            Mutation::DeleteUser("usr_1".to_owned()),
        ])
        .unwrap();
    wait_for(
        &heard,
        &[
            Change::Session("ses_1".to_owned()),
            Change::Session("ses_2".to_owned()),
            Change::User("usr_1".to_owned()),
            Change::Idp("idp_1".to_owned()),
            Change::User("usr_1".to_owned()),
        ],
    );
    // The reader sees what the writer committed.
    assert!(reader.get_app("app_1").unwrap().is_some());
}
