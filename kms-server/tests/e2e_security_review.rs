//! The security review's defects (issue 12) that live in the key, role and application
//! rules, reproduced over HTTP against the real binary: lockouts by someone else's guesses,
//! restricted keys shedding their restrictions, audit noise and silently ignored fields,
//! probing other tenants' application names, demoting a stronger role.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use common::{call, init, Server};
use serde_json::{json, Value};

struct World {
    _dir: tempfile::TempDir,
    server: Server,
    root: String,
}

impl World {
    fn new(args: &[&str]) -> World {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("kms.db");
        let (root, _) = init(&db);
        let server = Server::start_with(&db, args, &[]);
        World {
            _dir: dir,
            server,
            root,
        }
    }

    fn call(&self, token: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let r = call(&self.server.base, method, path, Some(token), body);
        let v = if r.body.is_empty() {
            Value::Null
        } else {
            r.json()
        };
        (r.status, v)
    }

    fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, v) = self.call(&self.root, method, path, body);
        assert!(status < 300, "{method} {path}: {status} {v}");
        v
    }

    fn app(&self, name: &str) -> String {
        self.ok("POST", "/v1/apps", Some(&json!({ "name": name })))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A key of `app` made by root: (id, plaintext).
    fn key(&self, app: &str, body: Value) -> (String, String) {
        let v = self.ok("POST", &format!("/v1/apps/{app}/tokens"), Some(&body));
        (
            v["id"].as_str().unwrap().to_owned(),
            v["token"].as_str().unwrap().to_owned(),
        )
    }

    fn audit(&self, action: &str) -> Vec<Value> {
        self.ok("GET", &format!("/v1/audit?action={action}&limit=100"), None)["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn audit_count(&self) -> usize {
        self.ok("GET", "/v1/audit?limit=1000", None)["items"]
            .as_array()
            .unwrap()
            .len()
    }
}

/// `token` with another secret and a valid checksum: the same id, a wrong secret.
fn same_id_other_secret(token: &str, n: usize) -> String {
    let body = &token[..token.len() - 6];
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut forged = body[..body.len() - 2].to_owned();
    let tail = [alphabet[n % 62], alphabet[(n / 62 + 7) % 62]];
    forged.push_str(std::str::from_utf8(&tail).unwrap());
    if forged == body {
        forged.pop();
        forged.push(if body.ends_with('z') { 'y' } else { 'z' });
    }
    let mut v = u64::from(crc32fast::hash(forged.as_bytes()));
    let mut sum = [b'0'; 6];
    for slot in sum.iter_mut().rev() {
        *slot = alphabet[(v % 62) as usize];
        v /= 62;
    }
    forged.push_str(std::str::from_utf8(&sum).unwrap());
    forged
}

// 2. Any tenant could lock out any key by its id, the root token included.
#[test]
fn forged_tokens_carrying_the_root_tokens_id_do_not_lock_the_root_token_out() {
    let w = World::new(&["--lockout-threshold", "10", "--cache-capacity", "0"]);
    let app = w.app("tenant");
    let (verifier_id, verifier) = w.key(&app, json!({"name": "v", "scopes": ["token.verify"]}));
    for i in 0..12 {
        let forged = same_id_other_secret(&w.root, i);
        let (status, v) = w.call(
            &verifier,
            "POST",
            "/v1/verify",
            Some(&json!({ "token": forged })),
        );
        assert_eq!(status, 200, "{v}");
        assert!(
            v["code"] == "NOT_FOUND" || v["code"] == "RATE_LIMITED",
            "{v}"
        );
    }
    // The root token, never cached here (capacity 0), still works.
    let (status, v) = w.call(&w.root, "GET", "/v1/apps", None);
    assert_eq!(status, 200, "{v}");
    // The tenant that sent the forgeries is the one locked out of cold verifications.
    let (_, own) = w.key(&app, json!({"name": "u"}));
    let (status, v) = w.call(
        &verifier,
        "POST",
        "/v1/verify",
        Some(&json!({ "token": own })),
    );
    assert_eq!(
        (status, v["code"].as_str()),
        (200, Some("RATE_LIMITED")),
        "{v}"
    );
    // The failures are audited once for the window and once for the lockout, attributed
    // to the tenant's key in its application, not one event per forged id.
    let failures = w.audit("auth.failure");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["actor"], verifier_id.as_str());
    let lockouts = w.audit("security.lockout");
    assert_eq!(lockouts.len(), 1, "{lockouts:?}");
    assert_eq!(lockouts[0]["actor"], verifier_id.as_str());
    // The tenant sees its own failures in its audit log.
    let reader = w
        .key(&app, json!({"name": "r", "scopes": ["audit.read"]}))
        .1;
    let (status, seen) = w.call(&reader, "GET", "/v1/audit?action=auth.failure", None);
    assert_eq!(status, 200);
    assert_eq!(seen["items"].as_array().unwrap().len(), 1, "{seen}");
}

// 3. A restricted key could shed its restrictions.
#[test]
fn a_restricted_key_cannot_loosen_its_own_limits_or_mint_a_looser_child() {
    let w = World::new(&[]);
    let app = w.app("restricted");
    let (id, key) = w.key(
        &app,
        json!({
            "name": "limited",
            "scopes": ["token.create", "token.read"],
            "uses": 100,
            "ip_allow": ["127.0.0.0/8"],
            "ratelimit": {"limit": 1000, "per_seconds": 86400},
            "expires_in": 120,
        }),
    );
    let refused = |method: &str, path: &str, body: Value, limit: &str| {
        let (status, v) = w.call(&key, method, path, Some(&body));
        assert_eq!(status, 403, "{body}: {v}");
        assert_eq!(v["error"]["code"], "forbidden", "{v}");
        assert_eq!(v["error"]["details"]["limit"], limit, "{v}");
    };
    // On itself: no limit may be removed or widened.
    let me = format!("/v1/tokens/{id}");
    refused("PATCH", &me, json!({"uses": null}), "uses");
    refused("PATCH", &me, json!({"uses": 1000}), "uses");
    refused("PATCH", &me, json!({"ip_allow": null}), "ip_allow");
    refused("PATCH", &me, json!({"ip_allow": ["0.0.0.0/0"]}), "ip_allow");
    refused("PATCH", &me, json!({"ratelimit": null}), "ratelimit");
    refused(
        "PATCH",
        &me,
        json!({"ratelimit": {"limit": 1000, "per_seconds": 60}}),
        "ratelimit",
    );
    let (_, mine) = w.call(&w.root, "GET", &me, None);
    assert_eq!(mine["uses"], 100, "{mine}");
    // A child may not outlive it or have looser limits.
    let tight = json!({
        "name": "child",
        "scopes": ["token.read"],
        "uses": 10,
        "ip_allow": ["127.0.0.1/32"],
        "ratelimit": {"limit": 10, "per_seconds": 86400},
        "expires_in": 60,
    });
    let children = format!("/v1/apps/{app}/tokens");
    let loosen = |field: &str, value: Value| {
        let mut body = tight.clone();
        match value {
            Value::Null => {
                body.as_object_mut().unwrap().remove(field);
            }
            v => body[field] = v,
        }
        body
    };
    refused(
        "POST",
        &children,
        loosen("expires_in", Value::Null),
        "expires_at",
    );
    refused(
        "POST",
        &children,
        loosen("expires_in", json!(3600)),
        "expires_at",
    );
    refused("POST", &children, loosen("uses", Value::Null), "uses");
    refused("POST", &children, loosen("uses", json!(101)), "uses");
    refused(
        "POST",
        &children,
        loosen("ip_allow", Value::Null),
        "ip_allow",
    );
    refused(
        "POST",
        &children,
        loosen("ip_allow", json!(["10.0.0.0/8"])),
        "ip_allow",
    );
    refused(
        "POST",
        &children,
        loosen("ratelimit", Value::Null),
        "ratelimit",
    );
    // As tight as itself or tighter: fine; and it may tighten itself.
    let (status, v) = w.call(&key, "POST", &children, Some(&tight));
    assert_eq!(status, 201, "{v}");
    let (status, v) = w.call(&key, "PATCH", &me, Some(&json!({"uses": 50})));
    assert_eq!(status, 200, "{v}");
    // Rotating itself does not extend its life past its own expiry.
    let before = mine["expires_at"].as_str().unwrap().to_owned();
    let (status, rotated) = w.call(
        &key,
        "POST",
        &format!("/v1/tokens/{id}/rotate"),
        Some(&json!({"grace_seconds": 0})),
    );
    assert_eq!(status, 201, "{rotated}");
    assert!(
        rotated["expires_at"].as_str().unwrap() <= before.as_str(),
        "{rotated} outlives {before}"
    );
}

// 8. Audit gaps and noise: no-op changes, ignored fields.
#[test]
fn a_patch_that_changes_nothing_writes_no_audit_event() {
    let w = World::new(&[]);
    let app = w.app("quiet");
    let (id, _) = w.key(&app, json!({"name": "k"}));
    let role = "quiet-role";
    w.ok(
        "POST",
        "/v1/roles",
        Some(&json!({"name": role, "permissions": ["app.read"]})),
    );
    let before = w.audit_count();
    w.ok("PATCH", &format!("/v1/tokens/{id}"), Some(&json!({})));
    w.ok(
        "PATCH",
        &format!("/v1/tokens/{id}"),
        Some(&json!({"name": "k"})),
    );
    w.ok("PATCH", &format!("/v1/apps/{app}"), Some(&json!({})));
    w.ok(
        "PATCH",
        &format!("/v1/apps/{app}"),
        Some(&json!({"status": "active"})),
    );
    w.ok("PATCH", &format!("/v1/roles/{role}"), Some(&json!({})));
    assert_eq!(w.audit_count(), before);
    // A real change is audited.
    w.ok(
        "PATCH",
        &format!("/v1/tokens/{id}"),
        Some(&json!({"name": "k2"})),
    );
    assert_eq!(w.audit_count(), before + 1);
}

#[test]
fn a_patch_with_fields_it_cannot_change_is_refused_naming_them() {
    let w = World::new(&[]);
    let app = w.app("strict");
    let (id, token) = w.key(&app, json!({"name": "k", "scopes": ["app.read"]}));
    let before = w.audit_count();
    let (status, v) = w.call(
        &w.root,
        "PATCH",
        &format!("/v1/tokens/{id}"),
        Some(&json!({"status": "revoked", "expires_in": 1, "scopes": ["admin"], "name": "x"})),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_request");
    let named: Vec<&str> = v["error"]["details"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    for field in ["status", "expires_in", "scopes"] {
        assert!(named.contains(&field), "{field} not named: {v}");
    }
    // Nothing changed and nothing was audited.
    let (_, after) = w.call(&w.root, "GET", &format!("/v1/tokens/{id}"), None);
    assert_eq!(after["name"], "k");
    assert_eq!(w.audit_count(), before);
    let (_, verdict) = w.call(
        &w.root,
        "POST",
        "/v1/verify",
        Some(&json!({"token": token})),
    );
    assert_eq!(verdict["code"], "VALID");
    // Applications and roles alike.
    let (status, v) = w.call(
        &w.root,
        "PATCH",
        &format!("/v1/apps/{app}"),
        Some(&json!({"token_prefix": "other"})),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["details"]["fields"][0]["field"], "token_prefix");
}

// 10. Other tenants' application names could be probed.
#[test]
fn a_tenant_cannot_probe_other_tenants_application_names() {
    let w = World::new(&[]);
    let mine = w.app("mine");
    w.app("secret-project");
    let (_, tenant) = w.key(&mine, json!({"name": "w", "scopes": ["app.write"]}));
    let rename = |name: &str| {
        w.call(
            &tenant,
            "PATCH",
            &format!("/v1/apps/{mine}"),
            Some(&json!({ "name": name })),
        )
    };
    let taken = rename("secret-project");
    let free = rename("nobody-has-this");
    assert_eq!(taken.0, 403, "{}", taken.1);
    // The same answer whether the name exists or not, and it never names it.
    assert_eq!(taken.0, free.0);
    assert_eq!(taken.1["error"]["message"], free.1["error"]["message"]);
    assert!(!taken.1.to_string().contains("secret-project"));
    // The tenant may still change its own application's other settings.
    let (status, v) = w.call(
        &tenant,
        "PATCH",
        &format!("/v1/apps/{mine}"),
        Some(&json!({"ip_allow": ["127.0.0.0/8"]})),
    );
    assert_eq!(status, 200, "{v}");
}

// 11. A role.write holder could demote a role stronger than itself.
#[test]
fn a_role_writer_cannot_demote_a_role_stronger_than_itself() {
    let w = World::new(&[]);
    w.ok(
        "POST",
        "/v1/roles",
        Some(&json!({"name": "superuser", "permissions": ["admin"]})),
    );
    let (_, writer) = w.key(
        "app_system",
        json!({"name": "rw", "scopes": ["role.write", "app.read"]}),
    );
    let (status, v) = w.call(
        &writer,
        "PATCH",
        "/v1/roles/superuser",
        Some(&json!({"permissions": ["app.read"]})),
    );
    assert_eq!(status, 403, "{v}");
    let (status, v) = w.call(&writer, "DELETE", "/v1/roles/superuser", None);
    assert_eq!(status, 403, "{v}");
    let (_, role) = w.call(&w.root, "GET", "/v1/roles/superuser", None);
    assert_eq!(role["permissions"], json!(["admin"]));
    // A role within its reach it may change.
    w.ok(
        "POST",
        "/v1/roles",
        Some(&json!({"name": "viewer", "permissions": ["app.read"]})),
    );
    let (status, v) = w.call(
        &writer,
        "PATCH",
        "/v1/roles/viewer",
        Some(&json!({"permissions": ["role.read"]})),
    );
    assert_eq!(status, 200, "{v}");
}
