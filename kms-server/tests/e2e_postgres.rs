//! `kms` on PostgreSQL, with real processes: `init` and `serve` on a `postgres://` URL
//! behave as on SQLite, and several `kms serve` nodes on one database share its tokens and
//! extend one audit chain. The server comes from `KMS_TEST_POSTGRES_URL`; each test makes
//! its own database (see `kms_store::testing`). Without it the tests fail under `CI=true`
//! and are skipped with a notice elsewhere.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::thread;

use common::{call, kms, Output, Server};
use kms_store::testing::{NoPostgres, ScratchDatabase};
use serde_json::json;

/// The master key every node is given (base64 of 32 bytes).
const MASTER_KEY: &str = "a21zLXRlc3QtbWFzdGVyLWtleS0zMi1ieXRlcy0hISE=";

fn database() -> Option<ScratchDatabase> {
    match ScratchDatabase::create() {
        Ok(database) => Some(database),
        Err(NoPostgres::Skip(notice)) => {
            eprintln!("{notice}");
            None
        }
        Err(NoPostgres::Fail(message)) => panic!("{message}"),
    }
}

/// `kms ARGS --db URL`, with the shared master key unless `with_key` is false.
fn run(url: &str, args: &[&str], with_key: bool) -> Output {
    let mut cmd = kms();
    cmd.args(args).arg("--db").arg(url).stdin(Stdio::null());
    if with_key {
        cmd.env("KMS_MASTER_KEY", MASTER_KEY);
    }
    let out = cmd.output().expect("run kms");
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn serve(url: &str) -> Server {
    Server::start_with(
        Path::new(url),
        &["--rate-limit-per-ip", "100000"],
        &[("KMS_MASTER_KEY", MASTER_KEY)],
    )
}

fn init(url: &str) -> String {
    let out = run(url, &["init"], true);
    assert!(out.status.success(), "kms init failed: {}", out.stderr);
    let v = out.json();
    assert!(v["token_id"].as_str().unwrap().starts_with("tok_"), "{v}");
    v["root_token"].as_str().unwrap().to_owned()
}

fn create_app(base: &str, root: &str, name: &str) -> String {
    let r = call(
        base,
        "POST",
        "/v1/apps",
        Some(root),
        Some(&json!({ "name": name })),
    );
    assert_eq!(r.status, 201, "create {name}: {}", r.body);
    r.json()["id"].as_str().unwrap().to_owned()
}

/// Creates a token in `app`: (id, plaintext).
fn create_token(base: &str, root: &str, app: &str) -> (String, String) {
    let r = call(
        base,
        "POST",
        &format!("/v1/apps/{app}/tokens"),
        Some(root),
        Some(&json!({"name": "ci", "scopes": ["app.read"], "roles": []})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

fn verify(base: &str, root: &str, token: &str) -> String {
    let r = call(
        base,
        "POST",
        "/v1/verify",
        Some(root),
        Some(&json!({ "token": token })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["code"].as_str().unwrap().to_owned()
}

#[test]
fn init_and_serve_on_a_postgresql_url_create_verify_and_revoke() {
    let Some(db) = database() else { return };
    let root = init(db.url());
    let again = run(db.url(), &["init"], true);
    assert!(!again.status.success(), "a second init must be refused");

    let server = serve(db.url());
    let app = create_app(&server.base, &root, "billing");
    let (id, token) = create_token(&server.base, &root, &app);
    assert_eq!(verify(&server.base, &root, &token), "VALID");
    let r = call(
        &server.base,
        "POST",
        &format!("/v1/tokens/{id}/revoke"),
        Some(&root),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(verify(&server.base, &root, &token), "REVOKED");
    let ready = call(&server.base, "GET", "/readyz", None, None);
    assert_eq!(ready.status, 200, "{}", ready.body);

    let status = run(db.url(), &["migrate", "status"], true);
    assert!(status.status.success(), "{}", status.stderr);
    let v = status.json();
    assert_eq!(v["version"], v["latest"], "{v}");
}

#[test]
fn a_postgresql_node_without_a_master_key_stops_saying_so() {
    let Some(db) = database() else { return };
    for command in ["init", "serve"] {
        let out = run(db.url(), &[command], false);
        assert!(!out.status.success(), "kms {command} started without a key");
        assert!(
            out.stderr.contains("KMS_MASTER_KEY") && out.stderr.contains("every node"),
            "kms {command}: {}",
            out.stderr
        );
    }
}

#[test]
fn two_nodes_starting_together_on_an_empty_database_initialise_it_once() {
    let Some(db) = database() else { return };
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| serve(db.url()));
        let b = s.spawn(|| serve(db.url()));
        (a.join().unwrap(), b.join().unwrap())
    });
    let shown = [a.logs(), b.logs()]
        .iter()
        .filter(|logs| logs.contains("\"root_token\""))
        .count();
    assert_eq!(shown, 1, "A:\n{}\nB:\n{}", a.logs(), b.logs());
}

#[test]
fn two_nodes_on_one_database_share_tokens_and_extend_one_audit_chain() {
    let Some(db) = database() else { return };
    let root = init(db.url());
    let a = serve(db.url());
    let b = serve(db.url());

    // A token created through A verifies on B, which has never seen it (cold).
    let app = create_app(&a.base, &root, "shared");
    let (_, token) = create_token(&a.base, &root, &app);
    assert_eq!(verify(&b.base, &root, &token), "VALID");

    // Concurrent writes through both nodes: every one acknowledged, one chain.
    const EACH: usize = 40;
    thread::scope(|s| {
        for (node, server) in [("a", &a), ("b", &b)] {
            let root = &root;
            s.spawn(move || {
                for i in 0..EACH {
                    create_app(&server.base, root, &format!("{node}-{i}"));
                }
            });
        }
    });
    for server in [&a, &b] {
        let verdict = call(&server.base, "GET", "/v1/audit/verify", Some(&root), None).json();
        assert_eq!(verdict["ok"], true, "{verdict}");
        assert!(
            verdict["events"].as_u64().unwrap() >= (2 * EACH + 2) as u64,
            "{verdict}"
        );
    }
    let apps = call(&b.base, "GET", "/v1/apps?limit=200", Some(&root), None).json();
    // The system application, "shared" and every created one.
    assert_eq!(
        apps["items"].as_array().unwrap().len(),
        2 * EACH + 2,
        "{apps}"
    );
    let audit = run(db.url(), &["audit", "verify"], true);
    assert!(audit.status.success(), "{}{}", audit.stdout, audit.stderr);
}

/// Every node hears every change: a key cached on node B is refused there within a second
/// of its revocation, deletion or its application being disabled through node A, though
/// B's cache would keep it for ten minutes; a permission created through A is usable on B.
#[test]
fn a_change_through_one_node_reaches_another_nodes_cache_within_a_second() {
    let Some(db) = database() else { return };
    let root = init(db.url());
    let serve_cached = || {
        Server::start_with(
            Path::new(db.url()),
            &["--rate-limit-per-ip", "100000", "--cache-ttl", "600s"],
            &[("KMS_MASTER_KEY", MASTER_KEY)],
        )
    };
    let (a, b) = (serve_cached(), serve_cached());
    let within_a_second = |token: &str, want: &str, what: &str| {
        let start = std::time::Instant::now();
        loop {
            let got = verify(&b.base, &root, token);
            if got == want {
                return;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(1),
                "{what}: node B still answers {got} after a second"
            );
            thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let app = create_app(&a.base, &root, "propagated");
    let cases: [(&str, &str); 3] = [
        ("revoke", "REVOKED"),
        ("delete", "NOT_FOUND"),
        ("disable", "DISABLED"),
    ];
    for (change, want) in cases {
        let (id, token) = create_token(&a.base, &root, &app);
        assert_eq!(verify(&b.base, &root, &token), "VALID"); // cached on B
        let r = match change {
            "revoke" => call(
                &a.base,
                "POST",
                &format!("/v1/tokens/{id}/revoke"),
                Some(&root),
                None,
            ),
            "delete" => call(
                &a.base,
                "DELETE",
                &format!("/v1/tokens/{id}"),
                Some(&root),
                None,
            ),
            _ => call(
                &a.base,
                "PATCH",
                &format!("/v1/apps/{app}"),
                Some(&root),
                Some(&json!({"status": "disabled"})),
            ),
        };
        assert!(r.status < 300, "{change}: {}", r.body);
        within_a_second(&token, want, change);
    }
    // A policy change through A: B compiles the new permission and can grant it.
    let r = call(
        &a.base,
        "POST",
        "/v1/permissions",
        Some(&root),
        Some(&json!({"scope": "reports.read"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let other = create_app(&b.base, &root, "second");
    let start = std::time::Instant::now();
    loop {
        let r = call(
            &b.base,
            "POST",
            &format!("/v1/apps/{other}/tokens"),
            Some(&root),
            Some(&json!({"name": "r", "scopes": ["reports.read"]})),
        );
        if r.status == 201 {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(1),
            "node B does not know reports.read after a second: {}",
            r.body
        );
        thread::sleep(std::time::Duration::from_millis(20));
    }
}
