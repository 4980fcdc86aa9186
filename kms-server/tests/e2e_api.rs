//! End-to-end tests of the HTTP API: the real `kms` binary on a fresh database, driven over
//! HTTP the way a client would, with the typed client and raw requests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::collections::BTreeSet;
use std::thread;
use std::time::Duration;

use common::{call, init, raw, Server};
use kms_server::client::{ClientError, KmsClient};
use kms_server::wire::{
    AppPatchBody, NewAppBody, NewPermissionBody, NewRoleBody, NewTokenBody, PageQuery,
    RateLimitBody, RolePatchBody, RotateBody, TokenPatchBody, VerifyBody,
};
use serde_json::{json, Value};

struct Fixture {
    _dir: tempfile::TempDir,
    server: Server,
    root: String,
    secrets: Vec<String>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("kms.db");
        let (root, _) = init(&db);
        let server = Server::start(&db);
        Fixture {
            _dir: dir,
            server,
            secrets: vec![root.clone()],
            root,
        }
    }

    fn admin(&self) -> KmsClient {
        self.server.client(&self.root)
    }

    fn base(&self) -> &str {
        &self.server.base
    }

    fn app(&self, name: &str, prefix: Option<&str>) -> String {
        self.admin()
            .create_app(&NewAppBody {
                name: name.into(),
                token_prefix: prefix.map(str::to_owned),
                ..Default::default()
            })
            .unwrap()
            .id
    }

    /// Issues a token in `app` with `scopes` and remembers its secret.
    fn token(&mut self, app: &str, scopes: &[&str]) -> (String, String) {
        let created = self
            .admin()
            .create_token(app, &token_body("t", scopes))
            .unwrap();
        self.secrets.push(created.token.clone());
        (created.info.id, created.token)
    }
}

fn token_body(name: &str, scopes: &[&str]) -> NewTokenBody {
    NewTokenBody {
        name: name.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        roles: vec![],
        expires_in: None,
        expires_at: None,
        metadata: None,
        ratelimit: None,
        uses: None,
        ip_allow: None,
        grants: Vec::new(),
    }
}

fn verify_body(token: &str, permissions: Option<&str>) -> VerifyBody {
    VerifyBody {
        token: token.into(),
        permissions: permissions.map(str::to_owned),
        ..Default::default()
    }
}

fn api_code(err: &ClientError) -> (u16, String) {
    (
        err.status().unwrap_or(0),
        err.code().unwrap_or("").to_owned(),
    )
}

#[test]
fn operations_endpoints_need_no_token() {
    let f = Fixture::new();
    let anon = f.server.anonymous();
    assert_eq!(anon.healthz().unwrap().status, "ok");
    assert_eq!(anon.readyz().unwrap().status, "ready");
    let doc = anon.openapi().unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/v1/verify"]["post"].is_object());
    // A verification so the counters have something to show.
    f.admin().verify(&verify_body("kms_nope", None)).unwrap();
    let metrics = anon.metrics().unwrap();
    assert!(metrics.contains("kms_http_requests_total{"), "{metrics}");
    assert!(metrics.contains(r#"route="/v1/verify""#), "{metrics}");
    assert!(metrics.contains("kms_http_request_duration_seconds_bucket"));
    assert!(
        metrics.contains(r#"kms_verifications_total{code="MALFORMED"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("kms_cache_hits_total"), "{metrics}");
    assert!(
        metrics.contains("kms_store_operation_duration_seconds_bucket"),
        "{metrics}"
    );
    let r = raw(f.base(), "GET", "/metrics", None, None, None);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
}

#[test]
fn every_response_carries_a_request_id_equal_to_the_error_body() {
    let f = Fixture::new();
    let ok = raw(f.base(), "GET", "/healthz", None, None, None);
    assert!(ok.request_id.as_deref().is_some_and(|id| !id.is_empty()));
    let err = raw(f.base(), "GET", "/v1/apps", None, None, None);
    err.assert_error(401, "unauthenticated");

    // A sane client id is kept and echoed.
    let resp = ureq::get(&format!("{}/v1/apps/nope", f.base()))
        .set("x-request-id", "trace-abc.123")
        .set("Authorization", &format!("Bearer {}", f.root))
        .call();
    let Err(ureq::Error::Status(404, resp)) = resp else {
        panic!("expected 404")
    };
    assert_eq!(resp.header("x-request-id"), Some("trace-abc.123"));
    let body: Value = resp.into_json().unwrap();
    assert_eq!(body["error"]["request_id"], "trace-abc.123");
    assert_eq!(body["error"]["code"], "not_found");
}

#[test]
fn bad_credentials_are_unauthenticated() {
    let mut f = Fixture::new();
    let app = f.app("creds", None);
    let (id, token) = f.token(&app, &["app.read"]);
    let base = f.base().to_owned();
    for (name, header) in [
        ("missing", None),
        ("wrong scheme", Some(format!("Basic {token}"))),
        ("empty", Some("Bearer ".to_owned())),
        ("malformed", Some("Bearer not-a-token".to_owned())),
        (
            "bad checksum",
            // The last character changed (to `x`, or `y` when it already was `x`).
            Some(format!(
                "Bearer {}{}",
                &token[..token.len() - 1],
                if token.ends_with('x') { 'y' } else { 'x' }
            )),
        ),
        (
            "unknown",
            Some("Bearer kms_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned()),
        ),
    ] {
        let mut req = ureq::get(&format!("{base}/v1/apps"));
        if let Some(h) = &header {
            req = req.set("Authorization", h);
        }
        match req.call() {
            Err(ureq::Error::Status(401, resp)) => {
                assert!(resp.header("www-authenticate").is_some());
                let body: Value = resp.into_json().unwrap();
                assert_eq!(body["error"]["code"], "unauthenticated", "{name}");
            }
            other => panic!("{name}: expected 401, got {other:?}"),
        }
    }
    // Valid, then revoked.
    let user = f.server.client(&token);
    assert!(user.get_app(&app).is_ok());
    f.admin().revoke_token(&id).unwrap();
    assert_eq!(
        api_code(&user.get_app(&app).unwrap_err()),
        (401, "unauthenticated".into())
    );
}

#[test]
fn expired_tokens_are_unauthenticated() {
    let mut f = Fixture::new();
    let app = f.app("exp", None);
    let mut body = token_body("short", &["app.read"]);
    body.expires_in = Some(1);
    let created = f.admin().create_token(&app, &body).unwrap();
    f.secrets.push(created.token.clone());
    assert!(created.info.expires_at.is_some());
    thread::sleep(Duration::from_millis(2100));
    let err = f.server.client(&created.token).get_app(&app).unwrap_err();
    assert_eq!(api_code(&err), (401, "unauthenticated".into()));
    let v = f
        .admin()
        .verify(&verify_body(&created.token, None))
        .unwrap();
    assert_eq!(v.code, "EXPIRED");
    assert_eq!(
        f.admin().get_token(&created.info.id).unwrap().status,
        "expired"
    );
}

#[test]
fn applications_round_trip() {
    let f = Fixture::new();
    let admin = f.admin();
    let created = raw(
        f.base(),
        "POST",
        "/v1/apps",
        Some(&f.root),
        Some("application/json"),
        Some(br#"{"name": "billing", "token_prefix": "bill"}"#),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let app = created.json();
    assert_eq!(app["name"], "billing");
    assert_eq!(app["token_prefix"], "bill");
    assert_eq!(app["status"], "active");
    assert!(app["created_at"].as_str().unwrap().ends_with('Z'));
    let id = app["id"].as_str().unwrap().to_owned();

    let default_prefix = admin
        .create_app(&NewAppBody {
            name: "other".into(),
            token_prefix: None,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(default_prefix.token_prefix, "kms");

    let listed = call(f.base(), "GET", "/v1/apps", Some(&f.root), None);
    assert_eq!(listed.status, 200);
    let listed = listed.json();
    assert!(listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["id"] == id.as_str()));
    assert!(listed.as_object().unwrap().contains_key("next_cursor"));

    assert_eq!(admin.get_app(&id).unwrap().name, "billing");
    let patched = admin
        .update_app(
            &id,
            &AppPatchBody {
                name: Some("billing-2".into()),
                status: Some("disabled".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        (patched.name.as_str(), patched.status.as_str()),
        ("billing-2", "disabled")
    );

    let dup = admin
        .create_app(&NewAppBody {
            name: "other".into(),
            token_prefix: None,
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(api_code(&dup), (409, "conflict".into()));

    let del = call(
        f.base(),
        "DELETE",
        &format!("/v1/apps/{id}"),
        Some(&f.root),
        None,
    );
    assert_eq!(del.status, 204);
    assert!(del.body.is_empty());
    assert_eq!(
        api_code(&admin.get_app(&id).unwrap_err()),
        (404, "not_found".into())
    );
}

#[test]
fn invalid_fields_are_each_listed() {
    let f = Fixture::new();
    let r = call(
        f.base(),
        "POST",
        "/v1/apps",
        Some(&f.root),
        Some(&json!({"name": "", "token_prefix": "9Bad!"})),
    );
    let v = r.assert_error(400, "invalid_request");
    let fields: BTreeSet<String> = v["error"]["details"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        fields.contains("name") && fields.contains("token_prefix"),
        "{v}"
    );

    let r = call(
        f.base(),
        "POST",
        "/v1/permissions",
        Some(&f.root),
        Some(&json!({"scope": "Bad Scope..", "implies": ["ok.read", "NOPE"]})),
    );
    let v = r.assert_error(400, "invalid_request");
    let text = v["error"]["details"]["fields"].to_string();
    assert!(
        text.contains("\"scope\"") && text.contains("implies[1]"),
        "{v}"
    );

    // A missing required field and a wrong type are named too.
    let r = call(
        f.base(),
        "POST",
        "/v1/apps",
        Some(&f.root),
        Some(&json!({"token_prefix": "ab"})),
    );
    let v = r.assert_error(400, "invalid_request");
    assert_eq!(v["error"]["details"]["fields"][0]["field"], "name");
    let r = call(
        f.base(),
        "POST",
        "/v1/apps",
        Some(&f.root),
        Some(&json!({"name": 7})),
    );
    let v = r.assert_error(400, "invalid_request");
    assert_eq!(v["error"]["details"]["fields"][0]["field"], "name");
}

#[test]
fn malformed_bodies_wrong_types_and_oversized_bodies_are_refused() {
    let f = Fixture::new();
    let t = Some(f.root.as_str());
    let r = raw(
        f.base(),
        "POST",
        "/v1/apps",
        t,
        Some("application/json"),
        Some(b"{\"name\": "),
    );
    let v = r.assert_error(400, "invalid_request");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON"),
        "{v}"
    );
    let r = raw(
        f.base(),
        "POST",
        "/v1/apps",
        t,
        Some("application/json"),
        Some(b"{nope}"),
    );
    r.assert_error(400, "invalid_request");

    let r = raw(
        f.base(),
        "POST",
        "/v1/apps",
        t,
        Some("text/plain"),
        Some(br#"{"name":"x"}"#),
    );
    r.assert_error(415, "unsupported_media_type");
    let r = raw(
        f.base(),
        "POST",
        "/v1/apps",
        t,
        None,
        Some(br#"{"name":"x"}"#),
    );
    r.assert_error(415, "unsupported_media_type");
    let r = raw(
        f.base(),
        "POST",
        "/v1/apps",
        t,
        Some("application/x-www-form-urlencoded"),
        Some(b"name=x"),
    );
    r.assert_error(415, "unsupported_media_type");

    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let r = raw(
        f.base(),
        "POST",
        "/v1/apps",
        t,
        Some("application/json"),
        Some(big.as_bytes()),
    );
    r.assert_error(413, "payload_too_large");

    // Nothing was created by any of them.
    let apps = f.admin().list_apps(&PageQuery::default()).unwrap();
    assert!(apps.items.iter().all(|a| a.name != "x"));
}

#[test]
fn unknown_routes_and_wrong_methods_answer_in_the_error_shape() {
    let f = Fixture::new();
    let r = raw(f.base(), "GET", "/v2/nothing", None, None, None);
    r.assert_error(404, "not_found");
    let r = raw(f.base(), "GET", "/v1/nothing", Some(&f.root), None, None);
    r.assert_error(404, "not_found");
    let r = raw(
        f.base(),
        "PUT",
        "/v1/apps",
        Some(&f.root),
        Some("application/json"),
        Some(b"{}"),
    );
    r.assert_error(405, "method_not_allowed");
    assert!(
        r.header("allow")
            .is_some_and(|a| a.contains("GET") && a.contains("POST")),
        "{:?}",
        r.headers
    );
    let r = raw(f.base(), "DELETE", "/healthz", None, None, None);
    r.assert_error(405, "method_not_allowed");
}

#[test]
fn permissions_are_created_listed_and_deleted() {
    let mut f = Fixture::new();
    let admin = f.admin();
    let p = admin
        .create_permission(&NewPermissionBody {
            scope: "billing.read".into(),
            description: Some("read invoices".into()),
            implies: vec![],
        })
        .unwrap();
    assert_eq!(p.scope, "billing.read");
    let r = call(
        f.base(),
        "POST",
        "/v1/permissions",
        Some(&f.root),
        Some(
            &json!({"scope": "billing.invoices.read", "description": "d", "implies": ["billing.read"]}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["implies"], json!(["billing.read"]));

    // Bulk: all or nothing.
    let bulk = call(
        f.base(),
        "POST",
        "/v1/permissions/bulk",
        Some(&f.root),
        Some(
            &json!({"permissions": [{"scope": "crm.read"}, {"scope": "crm.write", "implies": ["crm.read"]}]}),
        ),
    );
    assert_eq!(bulk.status, 201, "{}", bulk.body);
    assert_eq!(bulk.json()["items"].as_array().unwrap().len(), 2);
    let bad_bulk = admin
        .create_permissions(&[
            NewPermissionBody {
                scope: "ops.read".into(),
                description: None,
                implies: vec![],
            },
            NewPermissionBody {
                scope: "BAD".into(),
                description: None,
                implies: vec![],
            },
        ])
        .unwrap_err();
    assert_eq!(api_code(&bad_bulk), (400, "invalid_request".into()));
    let all = admin.list_permissions().unwrap();
    assert!(all.next_cursor.is_none());
    let scopes: BTreeSet<_> = all.items.iter().map(|p| p.scope.clone()).collect();
    for s in [
        "admin",
        "app.read",
        "token.verify",
        "billing.read",
        "crm.write",
    ] {
        assert!(scopes.contains(s), "{s} missing");
    }
    assert!(!scopes.contains("ops.read"), "bulk must be all or nothing");

    // An implication cycle is refused.
    let cycle = call(
        f.base(),
        "POST",
        "/v1/permissions",
        Some(&f.root),
        Some(&json!({"scope": "billing.read", "implies": ["billing.invoices.read"]})),
    );
    assert!(cycle.status == 400 || cycle.status == 409, "{}", cycle.body);

    // Deleting a granted permission conflicts; once nothing grants it, it goes.
    let app = f.app("perm", None);
    let (tid, _) = f.token(&app, &["crm.read"]);
    let r = call(
        f.base(),
        "DELETE",
        "/v1/permissions/crm.read",
        Some(&f.root),
        None,
    );
    r.assert_error(409, "conflict");
    admin.delete_token(&tid).unwrap();
    admin.delete_permission("crm.write").unwrap();
    let r = call(
        f.base(),
        "DELETE",
        "/v1/permissions/crm.read",
        Some(&f.root),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let r = call(
        f.base(),
        "DELETE",
        "/v1/permissions/crm.read",
        Some(&f.root),
        None,
    );
    r.assert_error(404, "not_found");
}

#[test]
fn roles_are_managed_and_cycles_refused() {
    let f = Fixture::new();
    let admin = f.admin();
    let viewer = admin
        .create_role(&NewRoleBody {
            name: "viewer".into(),
            description: None,
            permissions: vec!["app.read".into()],
            inherits: vec![],
            grants: vec![],
        })
        .unwrap();
    assert!(viewer.effective.contains(&"app.read".to_owned()));
    let r = call(
        f.base(),
        "POST",
        "/v1/roles",
        Some(&f.root),
        Some(&json!({"name": "support", "permissions": ["token.read"], "inherits": ["viewer"]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let support = r.json();
    assert_eq!(support["inherits"], json!(["viewer"]));
    let eff: Vec<&str> = support["effective"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        eff.contains(&"app.read") && eff.contains(&"token.read"),
        "{support}"
    );

    let unknown = call(
        f.base(),
        "POST",
        "/v1/roles",
        Some(&f.root),
        Some(&json!({"name": "x", "permissions": ["no.such"], "inherits": ["ghost"]})),
    );
    unknown.assert_error(400, "invalid_request");

    let cycle = admin
        .update_role(
            "viewer",
            &RolePatchBody {
                description: None,
                permissions: None,
                inherits: Some(vec!["support".into()]),
                grants: None,
            },
        )
        .unwrap_err();
    assert_eq!(api_code(&cycle), (400, "invalid_request".into()));

    let listed = call(f.base(), "GET", "/v1/roles", Some(&f.root), None).json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    assert!(listed["next_cursor"].is_null());
    assert_eq!(admin.get_role("support").unwrap().name, "support");
    let updated = admin
        .update_role(
            "support",
            &RolePatchBody {
                description: Some("helpdesk".into()),
                permissions: None,
                inherits: None,
                grants: None,
            },
        )
        .unwrap();
    assert_eq!(updated.description, "helpdesk");
    let r = call(f.base(), "DELETE", "/v1/roles/support", Some(&f.root), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        api_code(&admin.get_role("support").unwrap_err()),
        (404, "not_found".into())
    );
}

#[test]
fn tokens_live_their_whole_life_over_http() {
    let mut f = Fixture::new();
    let app = f.app("life", Some("life"));
    let r = call(
        f.base(),
        "POST",
        &format!("/v1/apps/{app}/tokens"),
        Some(&f.root),
        Some(
            &json!({"name": "ci", "scopes": ["app.read"], "roles": [], "expires_in": 3600, "metadata": {"team": "ci"}}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let created = r.json();
    let token = created["token"].as_str().unwrap().to_owned();
    f.secrets.push(token.clone());
    assert!(token.starts_with("life_"));
    for key in [
        "id",
        "token",
        "app_id",
        "name",
        "scopes",
        "roles",
        "created_at",
        "expires_at",
        "start",
    ] {
        assert!(created.get(key).is_some(), "{key} missing in {created}");
    }
    assert!(token.starts_with(created["start"].as_str().unwrap()));
    let id = created["id"].as_str().unwrap().to_owned();

    let shown = call(
        f.base(),
        "GET",
        &format!("/v1/tokens/{id}"),
        Some(&f.root),
        None,
    );
    assert_eq!(shown.status, 200);
    assert!(!shown.body.contains(&token[token.len() - 20..]));
    assert!(!shown.body.contains("argon2"));
    assert!(shown.json().get("token").is_none());

    let patched = f
        .admin()
        .update_token(
            &id,
            &TokenPatchBody {
                name: Some("ci-2".into()),
                ratelimit: Some(Some(RateLimitBody {
                    limit: 100,
                    per_seconds: 60,
                })),
                uses: Some(Some(10)),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(patched.name, "ci-2");
    assert_eq!(patched.uses, Some(10));
    let cleared = f
        .admin()
        .update_token(
            &id,
            &TokenPatchBody {
                uses: Some(None),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(cleared.uses, None);
    assert!(cleared.ratelimit.is_some(), "absent fields stay unchanged");

    // Rotation: a new secret, same grants; the old one works through the grace period.
    let r = call(
        f.base(),
        "POST",
        &format!("/v1/tokens/{id}/rotate"),
        Some(&f.root),
        Some(&json!({"grace_seconds": 3600})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let rotated = r.json();
    let new_token = rotated["token"].as_str().unwrap().to_owned();
    f.secrets.push(new_token.clone());
    assert_ne!(new_token, token);
    assert_eq!(rotated["scopes"], json!(["app.read"]));
    assert_eq!(rotated["metadata"], json!({"team": "ci"}));
    let admin = f.admin();
    assert_eq!(
        admin.verify(&verify_body(&token, None)).unwrap().code,
        "VALID"
    );
    assert_eq!(
        admin.verify(&verify_body(&new_token, None)).unwrap().code,
        "VALID"
    );

    // Rotation without a body: the old one stops at once.
    let newest = raw(
        f.base(),
        "POST",
        &format!("/v1/tokens/{}/rotate", rotated["id"].as_str().unwrap()),
        Some(&f.root),
        None,
        None,
    );
    assert_eq!(newest.status, 201, "{}", newest.body);
    f.secrets
        .push(newest.json()["token"].as_str().unwrap().to_owned());
    let old = admin.verify(&verify_body(&new_token, None)).unwrap();
    assert_ne!(old.code, "VALID");

    // Revocation is idempotent and answers the token.
    for _ in 0..2 {
        let r = raw(
            f.base(),
            "POST",
            &format!("/v1/tokens/{id}/revoke"),
            Some(&f.root),
            None,
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["status"], "revoked");
    }
    assert_eq!(
        admin.verify(&verify_body(&token, None)).unwrap().code,
        "REVOKED"
    );

    let r = call(
        f.base(),
        "DELETE",
        &format!("/v1/tokens/{id}"),
        Some(&f.root),
        None,
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        api_code(&admin.get_token(&id).unwrap_err()),
        (404, "not_found".into())
    );
}

#[test]
fn listings_paginate() {
    let mut f = Fixture::new();
    let app = f.app("pages", None);
    let mut ids = BTreeSet::new();
    for _ in 0..7 {
        ids.insert(f.token(&app, &["app.read"]).0);
    }
    let admin = f.admin();
    let mut seen = BTreeSet::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = admin
            .list_tokens(
                &app,
                &PageQuery {
                    limit: Some(3),
                    cursor: cursor.clone(),
                },
            )
            .unwrap();
        assert!(page.items.len() <= 3);
        for t in &page.items {
            assert!(seen.insert(t.id.clone()), "duplicate across pages");
        }
        pages += 1;
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(seen, ids);
    assert!(pages >= 3);

    for _ in 0..3 {
        f.app(
            &format!("app-{}", f.secrets.len() + seen.len() + pages),
            None,
        );
        pages += 1;
    }
    let first = admin
        .list_apps(&PageQuery {
            limit: Some(2),
            cursor: None,
        })
        .unwrap();
    assert_eq!(first.items.len(), 2);
    let second = admin
        .list_apps(&PageQuery {
            limit: Some(2),
            cursor: first.next_cursor.clone(),
        })
        .unwrap();
    assert!(second
        .items
        .iter()
        .all(|a| first.items.iter().all(|b| b.id != a.id)));

    let r = raw(
        f.base(),
        "GET",
        &format!("/v1/apps/{app}/tokens?limit=abc"),
        Some(&f.root),
        None,
        None,
    );
    r.assert_error(400, "invalid_request");
    let r = raw(
        f.base(),
        "GET",
        &format!("/v1/apps/{app}/tokens?limit=0"),
        Some(&f.root),
        None,
        None,
    );
    r.assert_error(400, "invalid_request");
}

#[test]
fn verification_answers_every_code() {
    let mut f = Fixture::new();
    let app = f.app("verify", Some("ver"));
    let admin = f.admin();
    let (id, token) = f.token(&app, &["app.read"]);

    let r = call(
        f.base(),
        "POST",
        "/v1/verify",
        Some(&f.root),
        Some(&json!({"token": token, "permissions": "app.read"})),
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["valid"], true);
    assert_eq!(v["code"], "VALID");
    assert_eq!(v["token_id"], id.as_str());
    assert_eq!(v["app_id"], app.as_str());
    for key in ["name", "scopes", "roles", "expires_at", "metadata"] {
        assert!(v.get(key).is_some(), "{key} missing in {v}");
    }

    let check = |token: &str, permissions: Option<&str>, code: &str| {
        let v = admin.verify(&verify_body(token, permissions)).unwrap();
        assert_eq!(v.code, code, "{v:?}");
        assert_eq!(v.valid, code == "VALID");
        if !v.valid {
            assert!(v.app_id.is_none() && v.scopes.is_none() && v.metadata.is_none());
        }
        v
    };
    check("garbage", None, "MALFORMED");
    let mut wrong = token.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    check(&wrong, None, "MALFORMED");
    check(
        "kms_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        None,
        "MALFORMED",
    );
    check(&token, Some("app.write"), "INSUFFICIENT_PERMISSIONS");
    check(
        &token,
        Some("app.read AND (app.write OR app.read)"),
        "VALID",
    );
    let v = admin
        .verify(&VerifyBody {
            token: token.clone(),
            scopes: Some(vec!["app.read".into()]),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(v.code, "VALID");

    // Unknown id with a valid checksum: NOT_FOUND. Build one by rotating and deleting.
    let (gone_id, gone) = f.token(&app, &["app.read"]);
    admin.delete_token(&gone_id).unwrap();
    check(&gone, None, "NOT_FOUND");

    // Network allow-list.
    let mut body = token_body("net", &["app.read"]);
    body.ip_allow = Some(vec!["10.0.0.0/8".into()]);
    let net = admin.create_token(&app, &body).unwrap();
    f.secrets.push(net.token.clone());
    let v = admin
        .verify(&VerifyBody {
            token: net.token.clone(),
            ip: Some("192.168.1.1".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(v.code, "FORBIDDEN");
    let v = admin
        .verify(&VerifyBody {
            token: net.token.clone(),
            ip: Some("10.1.2.3".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(v.code, "VALID");

    // Uses.
    let mut body = token_body("uses", &["app.read"]);
    body.uses = Some(2);
    let limited = admin.create_token(&app, &body).unwrap();
    f.secrets.push(limited.token.clone());
    assert_eq!(check(&limited.token, None, "VALID").remaining, Some(1));
    assert_eq!(check(&limited.token, None, "VALID").remaining, Some(0));
    check(&limited.token, None, "USAGE_EXCEEDED");

    // Rate limit.
    let mut body = token_body("rate", &["app.read"]);
    body.ratelimit = Some(RateLimitBody {
        limit: 2,
        per_seconds: 60,
    });
    let rated = admin.create_token(&app, &body).unwrap();
    f.secrets.push(rated.token.clone());
    check(&rated.token, None, "VALID");
    check(&rated.token, None, "VALID");
    check(&rated.token, None, "RATE_LIMITED");

    // Revoked, then a disabled application.
    admin.revoke_token(&id).unwrap();
    let v = check(&token, None, "REVOKED");
    assert_eq!(v.token_id.as_deref(), Some(id.as_str()));
    let (_, other) = f.token(&app, &["app.read"]);
    admin
        .update_app(
            &app,
            &AppPatchBody {
                name: None,
                status: Some("disabled".into()),
                ..Default::default()
            },
        )
        .unwrap();
    check(&other, None, "DISABLED");

    // A bad query is the caller's mistake: 400.
    let r = call(
        f.base(),
        "POST",
        "/v1/verify",
        Some(&f.root),
        Some(&json!({"token": other, "permissions": "a AND (("})),
    );
    r.assert_error(400, "invalid_request");
}

#[test]
fn tenants_are_isolated() {
    let mut f = Fixture::new();
    let a = f.app("tenant-a", Some("ta"));
    let b = f.app("tenant-b", Some("tb"));
    let all = [
        "app.read",
        "app.write",
        "token.read",
        "token.create",
        "token.revoke",
        "token.verify",
    ];
    let (_, a_token) = f.token(&a, &all);
    let (b_id, b_token) = f.token(&b, &["app.read"]);
    let alice = f.server.client(&a_token);

    // A sees itself only.
    assert_eq!(alice.get_app(&a).unwrap().id, a);
    let listed = alice.list_apps(&PageQuery::default()).unwrap();
    assert_eq!(
        listed
            .items
            .iter()
            .map(|x| x.id.clone())
            .collect::<Vec<_>>(),
        vec![a.clone()]
    );
    for err in [
        alice.get_app(&b).map(|_| ()).unwrap_err(),
        alice.get_token(&b_id).map(|_| ()).unwrap_err(),
        alice
            .list_tokens(&b, &PageQuery::default())
            .map(|_| ())
            .unwrap_err(),
        alice.revoke_token(&b_id).map(|_| ()).unwrap_err(),
        alice.delete_token(&b_id).unwrap_err(),
        alice
            .create_token(&b, &token_body("x", &["app.read"]))
            .map(|_| ())
            .unwrap_err(),
        alice
            .update_app(
                &b,
                &AppPatchBody {
                    name: Some("mine".into()),
                    status: None,
                    ..Default::default()
                },
            )
            .map(|_| ())
            .unwrap_err(),
    ] {
        assert_eq!(api_code(&err), (404, "not_found".into()), "{err}");
    }
    // Deleting applications is for system callers only.
    assert_eq!(alice.delete_app(&b).unwrap_err().status(), Some(403));
    assert!(f.admin().get_app(&b).is_ok());
    // B's token is NOT_FOUND to A's verifier, and nothing was spent or changed.
    assert_eq!(
        alice.verify(&verify_body(&b_token, None)).unwrap().code,
        "NOT_FOUND"
    );
    assert_eq!(
        f.admin().verify(&verify_body(&b_token, None)).unwrap().code,
        "VALID"
    );
    assert_eq!(f.admin().get_token(&b_id).unwrap().status, "active");
}

#[test]
fn privilege_escalation_is_refused() {
    let mut f = Fixture::new();
    let app = f.app("esc", None);
    let (_, limited) = f.token(&app, &["token.create", "app.read"]);
    let user = f.server.client(&limited);

    let err = user
        .create_token(&app, &token_body("more", &["admin"]))
        .unwrap_err();
    assert_eq!(api_code(&err), (403, "forbidden".into()));
    let r = call(
        f.base(),
        "POST",
        &format!("/v1/apps/{app}/tokens"),
        Some(&limited),
        Some(&json!({"name": "more", "scopes": ["app.write"]})),
    );
    let v = r.assert_error(403, "forbidden");
    assert!(v["error"]["details"]["required"].is_string(), "{v}");

    // Lacking the scope for a call at all.
    let r = call(
        f.base(),
        "POST",
        "/v1/apps",
        Some(&limited),
        Some(&json!({"name": "nope"})),
    );
    let v = r.assert_error(403, "forbidden");
    assert_eq!(v["error"]["details"]["required"], "app.write");
    let r = call(
        f.base(),
        "POST",
        "/v1/verify",
        Some(&limited),
        Some(&json!({"token": limited})),
    );
    r.assert_error(403, "forbidden");

    // Within its own power it may create.
    let ok = user
        .create_token(&app, &token_body("same", &["app.read"]))
        .unwrap();
    f.secrets.push(ok.token);
}

#[test]
fn concurrent_requests_are_all_served() {
    let mut f = Fixture::new();
    let app = f.app("busy", None);
    let (_, token) = f.token(&app, &["app.read"]);
    let base = f.base().to_owned();
    let root = f.root.clone();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let base = base.clone();
            let root = root.clone();
            let token = token.clone();
            let app = app.clone();
            thread::spawn(move || {
                let admin = KmsClient::new(base).with_token(root);
                let mut issued = Vec::new();
                for j in 0..5 {
                    let v = admin
                        .verify(&verify_body(&token, Some("app.read")))
                        .unwrap();
                    assert_eq!(v.code, "VALID");
                    let c = admin
                        .create_token(&app, &token_body(&format!("c{i}-{j}"), &["app.read"]))
                        .unwrap();
                    issued.push(c.token);
                }
                issued
            })
        })
        .collect();
    for h in handles {
        f.secrets.extend(h.join().unwrap());
    }
    let mut count = 0;
    let mut cursor = None;
    loop {
        let page = f
            .admin()
            .list_tokens(
                &app,
                &PageQuery {
                    limit: Some(100),
                    cursor,
                },
            )
            .unwrap();
        count += page.items.len();
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(count, 1 + 8 * 5);
}

#[test]
fn no_secret_reaches_the_database_or_the_logs() {
    let mut f = Fixture::new();
    let app = f.app("secrets", Some("sec"));
    for i in 0..5 {
        let (id, token) = f.token(&app, &["app.read"]);
        f.admin()
            .verify(&verify_body(&token, Some("app.read")))
            .unwrap();
        // Use it as a bearer too, including failing calls, which are logged.
        let _ = f.server.client(&token).get_app(&app);
        let _ = f.server.client(&token).create_app(&NewAppBody {
            name: format!("n{i}"),
            token_prefix: None,
            ..Default::default()
        });
        if i % 2 == 0 {
            let rotated = f
                .admin()
                .rotate_token(
                    &id,
                    Some(&RotateBody {
                        grace_seconds: Some(60),
                    }),
                )
                .unwrap();
            f.secrets.push(rotated.token);
        }
    }
    let r = raw(
        f.base(),
        "GET",
        "/v1/apps",
        Some("kms_not_a_real_token"),
        None,
        None,
    );
    assert_eq!(r.status, 401);
    let status = f.server.stop();
    assert!(status.success(), "{status:?}");
    let logs = f.server.logs();
    assert!(logs.contains("listening on"), "{logs}");
    common::assert_no_secrets("the server's output", logs.as_bytes(), &f.secrets);
    common::assert_no_secrets(
        "the database files",
        &common::database_bytes(&f.server.db),
        &f.secrets,
    );
}

#[test]
fn repeated_failures_lock_the_source_out_with_429() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start_with(
        &db,
        &["--lockout-threshold", "3", "--lockout-duration", "60s"],
        &[],
    );
    for _ in 0..3 {
        let r = raw(
            &server.base,
            "GET",
            "/v1/apps",
            Some("kms_garbage"),
            None,
            None,
        );
        r.assert_error(401, "unauthenticated");
    }
    // Now even a valid token from this address waits.
    let r = raw(&server.base, "GET", "/v1/apps", Some(&root), None, None);
    let v = r.assert_error(429, "rate_limited");
    assert_eq!(v["error"]["retryable"], true);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let metrics = server.anonymous().metrics().unwrap();
    assert!(
        metrics.contains(r#"kms_security_events_total{event="lockout"}"#),
        "{metrics}"
    );
    assert!(server.logs().contains("security event"));
}
