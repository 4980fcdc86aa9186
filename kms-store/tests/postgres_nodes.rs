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

use kms_core::store::{AppStore, Change, ChangeListener, Store};
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
