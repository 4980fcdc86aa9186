//! End-to-end tests of the `kms` command line: init, serve (start, restart, shutdown,
//! configuration errors), operator commands and migrations.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::process::Stdio;

use common::{init, kms, run, Server};
use kms_server::wire::{NewAppBody, NewTokenBody, VerifyBody};

fn db_in(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("kms.db")
}

#[test]
fn init_prints_one_json_object_and_refuses_a_second_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let out = run(&db, &["init"]);
    assert!(out.status.success(), "{}", out.stderr);
    let v = out.json();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 2, "{v}");
    let root = obj["root_token"].as_str().unwrap().to_owned();
    assert!(obj["token_id"].as_str().unwrap().starts_with("tok_"));
    assert!(
        !out.stderr.contains(&root),
        "the root token goes to stdout only"
    );

    let before = std::fs::read(&db).unwrap();
    let again = run(&db, &["init"]);
    assert!(!again.status.success());
    assert!(again.stdout.trim().is_empty(), "{}", again.stdout);
    assert!(
        again.stderr.contains("already initialised"),
        "{}",
        again.stderr
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "a second init changes nothing"
    );

    // The first root token still works.
    let verdict = run(&db, &["verify", &root]).json();
    assert_eq!(verdict["code"], "VALID");
}

#[test]
fn serve_initialises_an_empty_database_and_prints_the_root_token_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let mut server = Server::start(&db);
    let logs = server.logs();
    let line = logs
        .lines()
        .find(|l| l.starts_with(r#"{"root_token""#))
        .unwrap_or_else(|| panic!("no root token line in {logs}"));
    let printed: serde_json::Value = serde_json::from_str(line).unwrap();
    let root = printed["root_token"].as_str().unwrap().to_owned();
    assert!(printed["token_id"].as_str().unwrap().starts_with("tok_"));
    let client = server.client(&root);
    let app = client
        .create_app(&NewAppBody {
            name: "a".into(),
            token_prefix: None,
            ..Default::default()
        })
        .unwrap();
    assert!(app.id.starts_with("app_"));
    assert!(server.stop().success());
    assert_eq!(
        server.logs().matches(&root).count(),
        1,
        "printed exactly once"
    );

    // A second start on the now-initialised database prints no token.
    let server = Server::start(&db);
    assert!(!server.logs().contains("root token"), "{}", server.logs());
}

#[test]
fn data_survives_a_restart_and_shutdown_is_graceful() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let (root, _) = init(&db);
    let mut server = Server::start(&db);
    let client = server.client(&root);
    let app = client
        .create_app(&NewAppBody {
            name: "keep".into(),
            token_prefix: Some("keep".into()),
            ..Default::default()
        })
        .unwrap();
    let token = client
        .create_token(
            &app.id,
            &NewTokenBody {
                name: "k".into(),
                scopes: vec!["app.read".into()],
                roles: vec![],
                expires_in: None,
                expires_at: None,
                metadata: None,
                ratelimit: None,
                uses: None,
                ip_allow: None,
                grants: Vec::new(),
            },
        )
        .unwrap();
    assert!(server.stop_with("INT").success(), "SIGINT exits 0");

    let mut server = Server::start(&db);
    let client = server.client(&root);
    assert_eq!(client.get_app(&app.id).unwrap().name, "keep");
    let v = client
        .verify(&VerifyBody {
            token: token.token.clone(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(v.code, "VALID");
    assert!(server.stop().success(), "SIGTERM exits 0");
    let logs = server.logs();
    assert!(!logs.contains(&token.token));
    assert!(!logs.contains(&root));
}

#[test]
fn bad_configuration_stops_the_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let out = kms()
        .args(["serve", "--db"])
        .arg(&db)
        .env("KMS_LISTEN", "nonsense")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid listen address in KMS_LISTEN"),
        "{stderr}"
    );

    let out = kms()
        .args(["serve", "--log-format", "xml", "--db"])
        .arg(&db)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-format"));

    let cfg = dir.path().join("kms.toml");
    std::fs::write(&cfg, "body_limit = \"huge\"\n").unwrap();
    let out = kms()
        .args(["serve", "--db"])
        .arg(&db)
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid body limit in `body_limit` of"),
        "{stderr}"
    );
}

#[test]
fn configuration_file_and_json_logs_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let (root, _) = init(&db);
    let cfg = dir.path().join("kms.toml");
    std::fs::write(&cfg, "body_limit = \"1KiB\"\nlog_format = \"json\"\n").unwrap();
    let cfg_arg = cfg.to_string_lossy().into_owned();
    let server = Server::start_with(&db, &["--config", &cfg_arg], &[]);
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(2000));
    let r = common::raw(
        &server.base,
        "POST",
        "/v1/apps",
        Some(&root),
        Some("application/json"),
        Some(big.as_bytes()),
    );
    r.assert_error(413, "payload_too_large");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let logs = server.logs();
    let json_lines = logs
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .count();
    assert!(json_lines >= 1, "{logs}");
}

#[test]
fn operator_commands_manage_a_local_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    init(&db);
    let ok = |args: &[&str]| {
        let out = run(&db, args);
        assert!(out.status.success(), "kms {args:?}: {}", out.stderr);
        out.json()
    };

    let app = ok(&[
        "app",
        "create",
        "--name",
        "billing",
        "--token-prefix",
        "bill",
    ]);
    let app_id = app["id"].as_str().unwrap().to_owned();
    assert_eq!(app["token_prefix"], "bill");
    assert!(ok(&["app", "list"])["items"].as_array().unwrap().len() >= 2);
    assert_eq!(ok(&["app", "get", &app_id])["name"], "billing");
    assert_eq!(
        ok(&["app", "update", &app_id, "--name", "billing2"])["name"],
        "billing2"
    );

    ok(&[
        "permission",
        "create",
        "billing.read",
        "--description",
        "read",
    ]);
    let p = ok(&[
        "permission",
        "create",
        "billing.invoices.read",
        "--implies",
        "billing.read",
    ]);
    assert_eq!(p["implies"], serde_json::json!(["billing.read"]));
    let perms = ok(&["permission", "list"]);
    assert!(perms["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["scope"] == "billing.read"));

    let role = ok(&[
        "role",
        "create",
        "reader",
        "--permissions",
        "billing.read,app.read",
    ]);
    assert!(role["effective"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == "billing.read"));
    assert_eq!(ok(&["role", "get", "reader"])["name"], "reader");
    assert_eq!(ok(&["role", "list"])["items"].as_array().unwrap().len(), 1);

    let created = ok(&[
        "token",
        "create",
        "--app",
        &app_id,
        "--name",
        "ci",
        "--roles",
        "reader",
        "--scopes",
        "billing.invoices.read",
        "--expires-in",
        "3600",
        "--metadata",
        r#"{"team":"ci"}"#,
        "--uses",
        "5",
        "--ratelimit",
        "10/60",
        "--ip-allow",
        "10.0.0.0/8",
    ]);
    let token = created["token"].as_str().unwrap().to_owned();
    let token_id = created["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("bill_"));
    let listed = ok(&["token", "list", "--app", &app_id]);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(&token));

    let v = ok(&[
        "verify",
        &token,
        "--permissions",
        "billing.read",
        "--ip",
        "10.1.1.1",
    ]);
    assert_eq!(v["code"], "VALID");
    assert_eq!(v["remaining"], 4);
    let v = ok(&["verify", &token, "--scopes", "admin", "--ip", "10.1.1.1"]);
    assert_eq!(v["code"], "INSUFFICIENT_PERMISSIONS");
    // Token from stdin, and --fail-invalid.
    let out = kms()
        .args(["verify", "-", "--fail-invalid", "--db"])
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"kms_garbage\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("MALFORMED"));

    let rotated = ok(&["token", "rotate", &token_id, "--grace-seconds", "60"]);
    let new_token = rotated["token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, token);
    let revoked = ok(&["token", "revoke", rotated["id"].as_str().unwrap()]);
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(ok(&["verify", &new_token])["code"], "REVOKED");

    // Errors: non-zero with a clear message on stderr, nothing on stdout.
    let bad = run(&db, &["app", "create", "--name", "", "--token-prefix", "9"]);
    assert!(!bad.status.success());
    assert!(
        bad.stderr.contains("name") && bad.stderr.contains("token_prefix"),
        "{}",
        bad.stderr
    );
    assert!(bad.stdout.is_empty());
    let missing = run(&db, &["app", "get", "app_nope"]);
    assert!(!missing.status.success());

    let granted = run(&db, &["role", "delete", "reader"]);
    assert!(!granted.status.success(), "a granted role cannot go");
    ok(&["token", "delete", &token_id]);
    ok(&["app", "delete", &app_id]);
    assert!(!run(&db, &["app", "get", &app_id]).status.success());
    ok(&["role", "delete", "reader"]);

    // The database never holds the plaintext.
    common::assert_no_secrets(
        "the database files",
        &common::database_bytes(&db),
        &[token, new_token],
    );
}

#[test]
fn operator_commands_refuse_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let out = run(&db, &["app", "list"]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("kms init"), "{}", out.stderr);
    assert!(!db.exists(), "nothing was created");
}

#[test]
fn migrations_go_down_and_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    init(&db);
    let status = run(&db, &["migrate", "status"]);
    assert!(status.status.success(), "{}", status.stderr);
    let s = status.json();
    let latest = s["latest"].as_u64().unwrap();
    assert_eq!(s["version"], latest);
    assert!(s["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["applied"] == true));

    let down = run(&db, &["migrate", "down"]);
    assert!(down.status.success(), "{}", down.stderr);
    assert_eq!(down.json()["version"], latest - 1);
    let up = run(&db, &["migrate", "up"]);
    assert!(up.status.success(), "{}", up.stderr);
    assert_eq!(up.json()["version"], latest);
    assert_eq!(up.json()["applied"], serde_json::json!([latest]));
}

#[test]
fn help_is_available_everywhere() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["init", "--help"],
        vec!["app", "--help"],
        vec!["app", "create", "--help"],
        vec!["permission", "create", "--help"],
        vec!["role", "create", "--help"],
        vec!["token", "create", "--help"],
        vec!["token", "rotate", "--help"],
        vec!["verify", "--help"],
        vec!["migrate", "down", "--help"],
    ] {
        let out = kms().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
    let out = kms().args(["serve", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("KMS_LISTEN") && text.contains("KMS_DB"),
        "{text}"
    );
    assert!(
        !text.contains("insecure"),
        "the test-only switch stays hidden"
    );
}

#[test]
fn default_argon2_parameters_work_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let mut cmd = kms();
    cmd.env_remove("KMS_INSECURE_FAST_HASH");
    let out = cmd.arg("init").arg("--db").arg(&db).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = v["root_token"].as_str().unwrap().to_owned();
    let server = Server::start_with(&db, &[], &[("KMS_INSECURE_FAST_HASH", "0")]);
    let client = server.client(&root);
    let app = client
        .create_app(&NewAppBody {
            name: "slow".into(),
            token_prefix: None,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(client.get_app(&app.id).unwrap().name, "slow");
    let bytes = common::database_bytes(&db);
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("$argon2id$v=19$m=19456,t=2,p=1$"),
        "OWASP parameters in the stored hash"
    );
}

#[test]
fn audit_verify_checks_the_chain_and_fails_on_an_edited_event() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    init(&db);
    for name in ["one", "two"] {
        let out = run(&db, &["app", "create", "--name", name]);
        assert!(out.status.success(), "{}", out.stderr);
    }
    let out = run(&db, &["audit", "verify"]);
    assert!(out.status.success(), "{}", out.stderr);
    let v = out.json();
    assert_eq!(v["ok"], true, "{v}");
    let events = v["events"].as_u64().unwrap();
    assert!(events >= 3, "{v}");

    // Someone with write access to the file rewrites what an event says.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let edited = conn
        .execute(
            "UPDATE audit_events SET target = 'app_nothing_to_see' WHERE seq = 2",
            [],
        )
        .unwrap();
    assert_eq!(edited, 1);
    drop(conn);
    let out = run(&db, &["audit", "verify"]);
    // A broken chain has its own exit status (4), apart from `verify --fail-invalid`'s 3.
    assert_eq!(out.status.code(), Some(4), "{}", out.stderr);
    let v = out.json();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["first_bad_seq"], 2, "{v}");
}
