//! Revocation and every other change to a key reach the very next verification, cached or
//! not, on the real binary: after a policy change, after a concurrent first use, after
//! another tenant's change to its own application. Each of revoke, delete, rotate (grace
//! 0), a token `PATCH` of its limits and disabling the application is checked through
//! `/v1/verify` and through bearer authentication of a management call.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use common::{call, init, Server};
use serde_json::{json, Value};

struct World {
    _dir: tempfile::TempDir,
    server: Server,
    root: String,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("kms.db");
        let (root, _) = init(&db);
        // A long TTL: only invalidation may end a cached entry here.
        let server = Server::start_with(&db, &["--cache-ttl", "600s"], &[]);
        World {
            _dir: dir,
            server,
            root,
        }
    }

    fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let r = call(&self.server.base, method, path, Some(&self.root), body);
        assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.body);
        if r.body.is_empty() {
            Value::Null
        } else {
            r.json()
        }
    }

    fn app(&self, name: &str) -> String {
        self.admin("POST", "/v1/apps", Some(&json!({ "name": name })))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A key that may read its own application (for bearer authentication).
    fn key(&self, app: &str) -> (String, String) {
        let v = self.admin(
            "POST",
            &format!("/v1/apps/{app}/tokens"),
            Some(&json!({"name": "k", "scopes": ["app.read"]})),
        );
        (
            v["id"].as_str().unwrap().to_owned(),
            v["token"].as_str().unwrap().to_owned(),
        )
    }

    /// `/v1/verify` of `token` from `ip`: the answer's code (and uses left).
    fn verify(&self, token: &str) -> (String, Option<u64>) {
        let v = self.admin(
            "POST",
            "/v1/verify",
            Some(&json!({"token": token, "ip": "192.0.2.7"})),
        );
        (
            v["code"].as_str().unwrap().to_owned(),
            v["remaining"].as_u64(),
        )
    }

    /// Bearer authentication: the status of a management call made with `token`.
    fn bearer(&self, token: &str, app: &str) -> u16 {
        call(
            &self.server.base,
            "GET",
            &format!("/v1/apps/{app}"),
            Some(token),
            None,
        )
        .status
    }
}

/// What is done to a cached key, and what the next verification must say.
#[derive(Clone, Copy, Debug)]
enum Change {
    Revoke,
    Delete,
    Rotate,
    NarrowNetwork,
    LimitUses,
    DisableApp,
}

const CHANGES: [Change; 6] = [
    Change::Revoke,
    Change::Delete,
    Change::Rotate,
    Change::NarrowNetwork,
    Change::LimitUses,
    Change::DisableApp,
];

/// What makes the key cached again (under the same digest) before the change.
#[derive(Clone, Copy, Debug)]
enum Trigger {
    None,
    PolicyChange,
    ConcurrentFirstUse,
    OtherTenantRenamesItsApp,
    OtherTenantDeletesItsApp,
}

fn apply(w: &World, change: Change, app: &str, id: &str) {
    match change {
        Change::Revoke => {
            w.admin("POST", &format!("/v1/tokens/{id}/revoke"), None);
        }
        Change::Delete => {
            w.admin("DELETE", &format!("/v1/tokens/{id}"), None);
        }
        Change::Rotate => {
            w.admin(
                "POST",
                &format!("/v1/tokens/{id}/rotate"),
                Some(&json!({"grace_seconds": 0})),
            );
        }
        Change::NarrowNetwork => {
            w.admin(
                "PATCH",
                &format!("/v1/tokens/{id}"),
                Some(&json!({"ip_allow": ["10.0.0.0/8"]})),
            );
        }
        Change::LimitUses => {
            w.admin(
                "PATCH",
                &format!("/v1/tokens/{id}"),
                Some(&json!({"uses": 1})),
            );
        }
        Change::DisableApp => {
            w.admin(
                "PATCH",
                &format!("/v1/apps/{app}"),
                Some(&json!({"status": "disabled"})),
            );
        }
    }
}

/// Uses the key the way the trigger needs, through the path under test, and checks it
/// is valid (and so cached).
fn trigger(w: &World, t: Trigger, token: &str, app: &str, n: usize, by_bearer: bool) {
    let use_once = || {
        if by_bearer {
            assert_eq!(w.bearer(token, app), 200);
        } else {
            assert_eq!(w.verify(token).0, "VALID");
        }
    };
    match t {
        Trigger::None => use_once(),
        Trigger::PolicyChange => {
            use_once();
            w.admin(
                "POST",
                "/v1/permissions",
                Some(&json!({"scope": format!("foo.bar{n}")})),
            );
            use_once();
        }
        Trigger::ConcurrentFirstUse => {
            let barrier = Arc::new(Barrier::new(12));
            thread::scope(|s| {
                for _ in 0..12 {
                    let barrier = barrier.clone();
                    s.spawn(move || {
                        barrier.wait();
                        use_once();
                    });
                }
            });
        }
        Trigger::OtherTenantRenamesItsApp | Trigger::OtherTenantDeletesItsApp => {
            use_once();
            let other = w.app(&format!("other-{n}"));
            if matches!(t, Trigger::OtherTenantRenamesItsApp) {
                let name = format!("renamed-{n}");
                w.admin(
                    "PATCH",
                    &format!("/v1/apps/{other}"),
                    Some(&json!({ "name": name })),
                );
            } else {
                w.admin("DELETE", &format!("/v1/apps/{other}"), None);
            }
            use_once();
        }
    }
}

fn expected_code(change: Change) -> &'static str {
    match change {
        Change::Revoke => "REVOKED",
        Change::Delete => "NOT_FOUND",
        Change::Rotate => "EXPIRED",
        Change::NarrowNetwork => "FORBIDDEN",
        Change::LimitUses => "VALID",
        Change::DisableApp => "DISABLED",
    }
}

fn check_every_change_after(t: Trigger) {
    let w = World::new();
    let mut n = 0;
    for by_bearer in [false, true] {
        for change in CHANGES {
            n += 1;
            let app = w.app(&format!("tenant-{n}"));
            let (id, token) = w.key(&app);
            trigger(&w, t, &token, &app, n, by_bearer);
            apply(&w, change, &app, &id);
            let what = format!("{change:?} after {t:?}, used by bearer: {by_bearer}");
            // Through /v1/verify: the very next verification.
            let (code, remaining) = w.verify(&token);
            assert_eq!(code, expected_code(change), "{what}");
            if let Change::LimitUses = change {
                assert_eq!(remaining, Some(0), "{what}: the new use limit applies");
                assert_eq!(w.verify(&token).0, "USAGE_EXCEEDED", "{what}");
            }
            // Through bearer authentication: refused (a use-limited key has none left;
            // the narrowed network excludes loopback).
            assert_eq!(w.bearer(&token, &app), 401, "{what}: bearer");
        }
    }
}

#[test]
fn every_change_reaches_a_cached_key_at_once() {
    check_every_change_after(Trigger::None);
}

#[test]
fn every_change_reaches_a_key_cached_again_after_a_policy_change() {
    check_every_change_after(Trigger::PolicyChange);
}

#[test]
fn every_change_reaches_a_key_after_a_concurrent_first_use() {
    check_every_change_after(Trigger::ConcurrentFirstUse);
}

#[test]
fn another_tenants_rename_does_not_switch_off_revocation() {
    check_every_change_after(Trigger::OtherTenantRenamesItsApp);
}

#[test]
fn another_tenants_deletion_does_not_switch_off_revocation() {
    check_every_change_after(Trigger::OtherTenantDeletesItsApp);
}

/// The report's trials: a fresh key verified by 12 clients at once, then revoked, must be
/// refused every time (5 of 10 trials still verified before the fix).
#[test]
fn a_concurrently_first_used_key_is_refused_after_revocation_in_every_trial() {
    let w = World::new();
    let app = w.app("trials");
    for trial in 0..10 {
        let (id, token) = w.key(&app);
        trigger(
            &w,
            Trigger::ConcurrentFirstUse,
            &token,
            &app,
            trial,
            trial % 2 == 1,
        );
        apply(&w, Change::Revoke, &app, &id);
        assert_eq!(w.verify(&token).0, "REVOKED", "trial {trial}");
        assert_eq!(w.bearer(&token, &app), 401, "trial {trial}");
    }
}
