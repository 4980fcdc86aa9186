//! An acknowledged write survives the writer being killed: a child process writes in a loop
//! and reports each write once `apply` has returned; the parent kills it with SIGKILL at an
//! arbitrary moment and checks that the file is intact and holds every reported write.

#![cfg(unix)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kms_core::store::TokenRecord;
use kms_core::store::{AppStore, Mutation, Store, TokenStore};
use kms_core::token_format::TokenPrefix;
use kms_core::{AppStatus, Application, Scope, Timestamp, TokenLimits, TokenStatus};
use kms_store::SqliteStore;

/// Set in the child's environment to the database path; selects the writer role.
const WRITER_DB_ENV: &str = "KMS_STORE_DURABILITY_WRITER_DB";
/// What the writer prints before each committed token id.
const COMMITTED: &str = "committed ";
/// The writer stops by itself after this long, should the parent never kill it.
const WRITER_LIFETIME: Duration = Duration::from_secs(20);

fn app() -> Application {
    Application {
        id: "app_durable".to_owned(),
        name: "durable".to_owned(),
        token_prefix: TokenPrefix::parse("kms").unwrap(),
        status: AppStatus::Active,
        created_at: Timestamp::from_unix(1_800_000_000),
        usage_price: None,
        security: Default::default(),
    }
}

fn token(id: &str) -> TokenRecord {
    TokenRecord {
        id: id.to_owned(),
        app_id: "app_durable".to_owned(),
        name: id.to_owned(),
        secret_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".to_owned(),
        start: "kms_abc".to_owned(),
        status: TokenStatus::Active,
        created_at: Timestamp::from_unix(1_800_000_000),
        expires_at: None,
        revoked_at: None,
        scopes: vec![Scope::parse("billing.read").unwrap()],
        roles: Vec::new(),
        grants: Vec::new(),
        metadata: serde_json::Map::new(),
        limits: TokenLimits::default(),
        rotated_from: None,
        rotated_to: None,
        last_used_at: None,
    }
}

/// The writer's side, run in the child process the test starts (the same test binary,
/// the same test, with the database path in its environment).
///
/// Each batch writes a token and a metadata key in one transaction, then reports the
/// token id on stdout.
fn write_until_killed(path: &std::ffi::OsStr) {
    let store = SqliteStore::open(path).unwrap();
    // Written straight to the process's stdout, past the test harness's capture.
    let mut out = std::io::stdout();
    let deadline = Instant::now() + WRITER_LIFETIME;
    let mut i = 0u64;
    while Instant::now() < deadline {
        let id = format!("tok_{i:08}");
        store
            .apply(&[
                Mutation::InsertToken(token(&id)),
                Mutation::CreateMeta {
                    key: format!("written {id}"),
                    value: id.clone(),
                },
            ])
            .unwrap();
        writeln!(out, "{COMMITTED}{id}").unwrap();
        out.flush().unwrap();
        i += 1;
    }
}

fn integrity_check(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap()
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    // In the child this test started, it is the writer.
    if let Some(path) = std::env::var_os(WRITER_DB_ENV) {
        return write_until_killed(&path);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.db");
    SqliteStore::open(&path)
        .unwrap()
        .apply(&[Mutation::InsertApp(app())])
        .unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "acknowledged_writes_survive_sigkill",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_DB_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (ids_tx, ids) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout);
        let mut line = String::new();
        // A line cut short by the kill has no newline and was never fully reported.
        while lines.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(id) = line
                .strip_suffix('\n')
                .and_then(|l| l.strip_prefix(COMMITTED))
            {
                if ids_tx.send(id.to_owned()).is_err() {
                    break;
                }
            }
            line.clear();
        }
    });

    let first = ids
        .recv_timeout(Duration::from_secs(30))
        .expect("the writer reported no write");
    std::thread::sleep(Duration::from_millis(600));
    child.kill().unwrap(); // SIGKILL: no destructors, no final checkpoint.
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the writer must die mid-run, not finish"
    );
    reader.join().unwrap();
    let mut reported = vec![first];
    reported.extend(ids.try_iter());
    assert!(
        reported.len() > 10,
        "only {} writes reported",
        reported.len()
    );

    assert_eq!(integrity_check(&path), "ok");
    let store = SqliteStore::open(&path).unwrap();
    for id in &reported {
        assert!(
            store.get_token(id).unwrap().is_some(),
            "lost the acknowledged token {id}"
        );
        assert_eq!(
            store.get_meta(&format!("written {id}")).unwrap().as_ref(),
            Some(id)
        );
    }
    // Whatever was written after the last report is whole or absent, never half there.
    let tokens = store.list_tokens("app_durable", None, usize::MAX).unwrap();
    assert!(tokens.len() >= reported.len());
    for t in &tokens {
        assert!(store
            .get_meta(&format!("written {}", t.id))
            .unwrap()
            .is_some());
    }
    assert!(store.get_app("app_durable").unwrap().is_some());
    assert_eq!(integrity_check(&path), "ok");
}
