//! Data-protection requests through the real `kms` binary: a person signs in through a
//! real SAML identity provider (`tests/idp/saml.mjs`) with a distinctive email, name,
//! NameID and browser; their data is exported (`GET /v1/users/{id}/export`), then erased
//! (`DELETE /v1/users/{id}?erase=true`): 204, the user and the export 404, the audit chain
//! still verifies, and the database file, its write-ahead log and shared memory, and the
//! server's logs hold none of those values any more. The same for an API key's metadata
//! (`DELETE /v1/tokens/{id}?erase=true`), and the retention of ended sessions, its sweep
//! audited. The CLI's `kms user export` and `kms user delete --erase` too.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::idp::{saml_form, Browser, SamlIdp};
use common::schema::{ApiSchema, PRIVACY_OPERATIONS};
use common::{call, init, run, Server};
use serde_json::{json, Value};

const EMAIL: &str = "ada.q7x2k@privacy-test.example";
const NAME: &str = "Ada Zq7x2k Lovelace";
/// The NameID (emailAddress format, so kms takes the email from it, as the IdP's default
/// user does): the identity's subject and the email at once.
const NAME_ID: &str = EMAIL;
const USER_AGENT: &str = "PrivacyProbe/7.3 (q7x2k; erasure test)";
const TOKEN_METADATA: &str = "owner-q7x2k-metadata@privacy-test.example";

/// An application `corp` with a SAML connection `corp` to a fresh test IdP.
fn setup(args: &[&str]) -> Option<(tempfile::TempDir, Server, String, String, SamlIdp)> {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start_with(&db, args, &[]);
    let base = server.base.clone();
    let app = call(
        &base,
        "POST",
        "/v1/apps",
        Some(&root),
        Some(&json!({"name": "corp"})),
    );
    assert_eq!(app.status, 201, "{}", app.body);
    let app_id = app.json()["id"].as_str().unwrap().to_owned();
    let role = call(
        &base,
        "POST",
        "/v1/roles",
        Some(&root),
        Some(&json!({"name": "support", "permissions": ["app.read"]})),
    );
    assert_eq!(role.status, 201, "{}", role.body);
    let idp = SamlIdp::start()?;
    let created = call(
        &base,
        "POST",
        &format!("/v1/apps/{app_id}/idps"),
        Some(&root),
        Some(&json!({"slug": "corp", "kind": "saml", "idp_metadata_xml": idp.metadata_xml()})),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let metadata = call(&base, "GET", "/v1/sso/corp/metadata", None, None);
    idp.set_sp(&metadata.body);
    Some((dir, server, root, app_id, idp))
}

/// Signs the distinctive person in from a browser sending [`USER_AGENT`]: (session token,
/// user id).
fn login(base: &str, idp: &SamlIdp) -> (String, String) {
    idp.next_user(json!({"name_id": NAME_ID, "email": EMAIL, "name": NAME, "groups": []}));
    let mut browser = Browser::with_user_agent(USER_AGENT);
    let (page, _) = browser.follow(&format!("{base}/v1/sso/corp/login"), 5, &[]);
    let (action, response, relay) = saml_form(&page.body).unwrap();
    let done = browser.post_form(
        &action,
        &[("SAMLResponse", &response), ("RelayState", &relay)],
    );
    assert_eq!(done.status, 200, "{}", done.body);
    let v = done.json();
    (
        v["session_token"].as_str().unwrap().to_owned(),
        v["user"]["id"].as_str().unwrap().to_owned(),
    )
}

/// Every file of the database directory and the logs: none holds any of `needles`; with
/// `wal`, the write-ahead log must be among the files (a running server keeps it).
fn assert_nowhere(dir: &Path, logs: &str, needles: &[&str], wal: bool) {
    let mut scanned = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle:?} is still in {}",
                path.display()
            );
        }
        scanned.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    assert!(scanned.iter().any(|f| f == "kms.db"), "{scanned:?}");
    assert!(
        !wal || scanned.iter().any(|f| f == "kms.db-wal"),
        "{scanned:?}"
    );
    for needle in needles {
        assert!(!logs.contains(needle), "{needle:?} is in the server's logs");
    }
}

fn bytes_contain(path: &Path, needle: &str) -> bool {
    std::fs::read(path)
        .unwrap()
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn audit_items(base: &str, root: &str) -> Vec<Value> {
    let page = call(base, "GET", "/v1/audit?limit=1000", Some(root), None);
    assert_eq!(page.status, 200, "{}", page.body);
    page.json()["items"].as_array().unwrap().clone()
}

#[test]
fn a_person_is_exported_then_erased_and_nothing_of_them_remains_on_disk() {
    let Some((dir, server, root, app_id, idp)) = setup(&[]) else {
        return;
    };
    let base = server.base.clone();
    let schema = ApiSchema::committed();

    // Two logins; the first session logs out; an administrator gives a role.
    let (first, user_id) = login(&base, &idp);
    let (_second, again) = login(&base, &idp);
    assert_eq!(again, user_id, "the same identity is the same user");
    assert_eq!(call(&base, "GET", "/v1/me", Some(&first), None).status, 200);
    assert_eq!(
        call(&base, "POST", "/v1/auth/logout", Some(&first), None).status,
        204
    );
    let patched = call(
        &base,
        "PATCH",
        &format!("/v1/users/{user_id}"),
        Some(&root),
        Some(&json!({"roles": ["support"]})),
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    // The audit events hold the personal fields sealed: not in the clear in the file.
    let db = dir.path().join("kms.db");
    let stored: Vec<u8> = common::database_bytes(&db);
    // The scan below can see them: before the erasure the profile is in the files.
    let clear = String::from_utf8_lossy(&stored).into_owned();
    assert!(clear.contains(EMAIL) && clear.contains(USER_AGENT) && clear.contains(NAME));
    assert!(!String::from_utf8_lossy(&stored).contains(&format!("\"user_agent\":\"{USER_AGENT}")));

    // The export: profile, identities, sessions with address and browser, roles, events.
    let export_path = format!("/v1/users/{user_id}/export");
    let export = call(&base, "GET", &export_path, Some(&root), None);
    schema.validate("GET", "/v1/users/{id}/export", export.status, &export.body);
    assert_eq!(export.status, 200, "{}", export.body);
    let e = export.json();
    assert_eq!(e["user"]["id"], user_id.as_str());
    assert_eq!(e["user"]["email"], EMAIL);
    assert_eq!(e["user"]["name"], NAME);
    assert_eq!(e["user"]["identities"][0]["subject"], NAME_ID);
    assert_eq!(e["user"]["given_roles"], json!(["support"]));
    let sessions = e["sessions"].as_array().unwrap();
    assert_eq!(
        sessions.len(),
        2,
        "ended sessions are exported too: {sessions:?}"
    );
    assert!(sessions
        .iter()
        .all(|s| s["user_agent"] == USER_AGENT && s["ip"] == "127.0.0.1"));
    assert!(sessions.iter().any(|s| s["revoke_reason"] == "logout"));
    let events = e["audit"]["items"].as_array().unwrap();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["user.update", "session.revoke", "sso.login", "sso.login"],
        "{events:?}"
    );
    let logins: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "sso.login")
        .collect();
    for l in &logins {
        assert_eq!(l["subject"], user_id.as_str());
        assert_eq!(l["ip"], "127.0.0.1", "{l}");
        assert_eq!(l["details"]["email"], EMAIL, "{l}");
        assert_eq!(l["details"]["user_agent"], USER_AGENT, "{l}");
        assert!(l.get("personal").is_none(), "{l}");
    }
    // The audit part pages.
    let page = call(
        &base,
        "GET",
        &format!("{export_path}?limit=1"),
        Some(&root),
        None,
    );
    assert_eq!(page.status, 200, "{}", page.body);
    let cursor = page.json()["audit"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let next = call(
        &base,
        "GET",
        &format!("{export_path}?limit=1&cursor={cursor}"),
        Some(&root),
        None,
    );
    assert_eq!(next.json()["audit"]["items"][0]["action"], "session.revoke");
    let bad = call(
        &base,
        "GET",
        &format!("{export_path}?limit=0"),
        Some(&root),
        None,
    );
    schema.validate("GET", "/v1/users/{id}/export", bad.status, &bad.body);
    assert_eq!(bad.status, 400, "{}", bad.body);
    let missing = call(
        &base,
        "GET",
        "/v1/users/usr_nobody/export",
        Some(&root),
        None,
    );
    schema.validate(
        "GET",
        "/v1/users/{id}/export",
        missing.status,
        &missing.body,
    );
    assert_eq!(missing.status, 404);
    // `user.read` is needed: the person's own session does not hold it.
    let (own, _) = login(&base, &idp);
    let denied = call(&base, "GET", &export_path, Some(&own), None);
    assert_eq!(denied.status, 403, "{}", denied.body);

    // The erasure.
    let erased = call(
        &base,
        "DELETE",
        &format!("/v1/users/{user_id}?erase=true"),
        Some(&root),
        None,
    );
    assert_eq!(erased.status, 204, "{}", erased.body);
    assert_eq!(
        call(
            &base,
            "GET",
            &format!("/v1/users/{user_id}"),
            Some(&root),
            None
        )
        .status,
        404
    );
    assert_eq!(
        call(&base, "GET", &export_path, Some(&root), None).status,
        404
    );
    assert_eq!(call(&base, "GET", "/v1/me", Some(&own), None).status, 401);
    let verify = call(&base, "GET", "/v1/audit/verify", Some(&root), None);
    assert_eq!(verify.json()["ok"], true, "{}", verify.body);
    let items = audit_items(&base, &root);
    let logins: Vec<&Value> = items
        .iter()
        .filter(|e| e["action"] == "sso.login")
        .collect();
    assert_eq!(logins.len(), 3);
    for l in &logins {
        assert_eq!(l["personal"], "erased", "{l}");
        assert_eq!(l["ip"], Value::Null, "{l}");
        assert!(l["details"].get("email").is_none(), "{l}");
    }
    let erase = items.iter().find(|e| e["action"] == "user.erase").unwrap();
    assert_eq!(erase["target"], user_id.as_str());
    assert!(!erase.to_string().contains("q7x2k"), "{erase}");

    // An API key's metadata, rotated once (the rotation copies it), then erased.
    let created = call(
        &base,
        "POST",
        &format!("/v1/apps/{app_id}/tokens"),
        Some(&root),
        Some(&json!({"name": "ci", "scopes": ["user.read"],
                     "metadata": {"owner": TOKEN_METADATA}})),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let old_id = created.json()["id"].as_str().unwrap().to_owned();
    let rotated = call(
        &base,
        "POST",
        &format!("/v1/tokens/{old_id}/rotate"),
        Some(&root),
        Some(&json!({"grace_seconds": 600})),
    );
    assert_eq!(rotated.status, 201, "{}", rotated.body);
    let new_id = rotated.json()["id"].as_str().unwrap().to_owned();
    assert!(
        bytes_contain(&db, TOKEN_METADATA)
            || bytes_contain(&dir.path().join("kms.db-wal"), TOKEN_METADATA)
    );
    let gone = call(
        &base,
        "DELETE",
        &format!("/v1/tokens/{new_id}?erase=true"),
        Some(&root),
        None,
    );
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert_eq!(
        call(
            &base,
            "GET",
            &format!("/v1/tokens/{new_id}"),
            Some(&root),
            None
        )
        .status,
        404
    );
    let old = call(
        &base,
        "GET",
        &format!("/v1/tokens/{old_id}"),
        Some(&root),
        None,
    );
    assert_eq!(old.json()["metadata"], json!({}), "{}", old.body);
    let bad = call(
        &base,
        "DELETE",
        &format!("/v1/tokens/{old_id}?erase=maybe"),
        Some(&root),
        None,
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    let verify = call(&base, "GET", "/v1/audit/verify", Some(&root), None);
    assert_eq!(verify.json()["ok"], true, "{}", verify.body);

    // Nothing of the person or the metadata is left in the files or the logs.
    assert_nowhere(
        dir.path(),
        &server.logs(),
        &[EMAIL, NAME, NAME_ID, USER_AGENT, TOKEN_METADATA],
        true,
    );
    let unchecked: Vec<_> = PRIVACY_OPERATIONS
        .iter()
        .filter(|(m, p)| !schema.was_checked(m, p))
        .collect();
    assert!(unchecked.is_empty(), "{unchecked:?}");
}

#[test]
fn ended_sessions_are_swept_after_the_session_retention_and_the_sweep_is_audited() {
    let Some((_dir, server, root, _app_id, idp)) = setup(&["--session-retention", "1s"]) else {
        return;
    };
    let base = server.base.clone();
    let (token, user_id) = login(&base, &idp);
    let (_live, _) = login(&base, &idp);
    assert_eq!(
        call(&base, "POST", "/v1/auth/logout", Some(&token), None).status,
        204
    );
    let export_path = format!("/v1/users/{user_id}/export");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sessions = call(&base, "GET", &export_path, Some(&root), None).json()["sessions"]
            .as_array()
            .unwrap()
            .len();
        if sessions == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ended session was never swept"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let sweeps: Vec<Value> = audit_items(&base, &root)
        .into_iter()
        .filter(|e| e["action"] == "retention.sweep")
        .collect();
    assert!(
        sweeps
            .iter()
            .any(|s| s["details"]["ended_sessions_deleted"].as_u64() >= Some(1)),
        "{sweeps:?}"
    );
}

#[test]
fn the_cli_exports_and_erases_a_person() {
    let Some((dir, mut server, _root, _app_id, idp)) = setup(&[]) else {
        return;
    };
    let (_token, user_id) = login(&server.base.clone(), &idp);
    server.stop();
    let db = dir.path().join("kms.db");
    let out = run(&db, &["user", "export", &user_id, "--limit", "10"]);
    assert!(out.status.success(), "{}", out.stderr);
    let e = out.json();
    assert_eq!(e["user"]["email"], EMAIL);
    assert_eq!(e["audit"]["items"][0]["details"]["user_agent"], USER_AGENT);
    let out = run(&db, &["user", "delete", &user_id, "--erase"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.json()["erased"], true);
    let out = run(&db, &["user", "export", &user_id]);
    assert!(!out.status.success());
    let out = run(&db, &["audit", "verify"]);
    assert!(out.status.success(), "{} {}", out.stdout, out.stderr);
    assert_eq!(out.json()["ok"], true);
    assert_nowhere(dir.path(), "", &[EMAIL, NAME, NAME_ID, USER_AGENT], false);
}
