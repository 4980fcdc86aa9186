//! End-to-end tests of access tokens (JWT), signing keys, JWKS and the audit log over
//! HTTP, against the real binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use common::{call, init, raw, Raw, Server};
use kms_server::wire::{AuditQueryParams, NewAppBody, NewTokenBody};
use serde_json::json;

struct Env {
    _dir: tempfile::TempDir,
    server: Server,
    root: String,
    api_key: String,
    app_id: String,
}

fn env() -> Env {
    env_with(&[])
}

fn env_with(args: &[&str]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    assert!(
        dir.path().join("kms.db.key").exists(),
        "init creates the master key file"
    );
    let server = Server::start_with(&db, args, &[]);
    let admin = server.client(&root);
    let app = admin
        .create_app(&NewAppBody {
            name: "jwt".into(),
            token_prefix: None,
            ..Default::default()
        })
        .unwrap();
    let api_key = admin
        .create_token(
            &app.id,
            &NewTokenBody {
                name: "svc".into(),
                scopes: vec!["app.read".into(), "token.read".into()],
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
        .unwrap()
        .token;
    Env {
        _dir: dir,
        server,
        root,
        api_key,
        app_id: app.id,
    }
}

#[test]
fn api_keys_exchange_for_access_tokens_that_introspect_and_revoke() {
    let e = env();
    let svc = e.server.client(&e.api_key);
    let pair = svc.access_token(Some("app.read"), Some("billing")).unwrap();
    assert_eq!(pair.token_type, "Bearer");
    assert_eq!(pair.scope, "app.read");
    assert!(pair.expires_in > 0);
    assert_eq!(pair.access_token.matches('.').count(), 2, "a JWT");

    let jwks = e.server.anonymous().jwks().unwrap();
    assert!(!jwks["keys"].as_array().unwrap().is_empty());
    assert!(!jwks.to_string().contains("\"d\""), "no private material");

    let admin = e.server.client(&e.root);
    let active = admin.introspect(&pair.access_token).unwrap();
    assert!(active.active);
    assert_eq!(active.scope.as_deref(), Some("app.read"));
    admin.revoke_access_token(&pair.access_token).unwrap();
    let r = raw(
        &e.server.base,
        "POST",
        "/v1/auth/introspect",
        Some(&e.root),
        Some("application/json"),
        Some(format!(r#"{{"token": "{}"}}"#, pair.access_token).as_bytes()),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"active": false}));
    assert_eq!(
        admin.introspect("not-a-token").unwrap(),
        kms_server::wire::IntrospectionBody {
            active: false,
            scope: None,
            client_id: None,
            sub: None,
            aud: None,
            iss: None,
            exp: None,
            iat: None,
            nbf: None,
            jti: None,
            token_type: None,
            app_id: None,
        }
    );
}

#[test]
fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let e = env();
    let svc = e.server.client(&e.api_key);
    let first = svc.access_token(None, None).unwrap();
    let anon = e.server.anonymous();
    let second = anon
        .refresh_access_token(&first.refresh_token, None)
        .unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    let reuse = anon
        .refresh_access_token(&first.refresh_token, None)
        .unwrap_err();
    assert_eq!(reuse.status(), Some(400));
    assert_eq!(reuse.code(), Some("invalid_grant"));
    // The whole family is gone.
    let after = anon
        .refresh_access_token(&second.refresh_token, None)
        .unwrap_err();
    assert_eq!(after.code(), Some("invalid_grant"));
}

#[test]
fn the_token_endpoint_answers_oauth_errors() {
    let e = env();
    let base = &e.server.base;
    let form = Some("application/x-www-form-urlencoded");
    let r = raw(
        base,
        "POST",
        "/v1/auth/token",
        Some(&e.api_key),
        form,
        Some(b"grant_type=password"),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "unsupported_grant_type");
    let r = raw(
        base,
        "POST",
        "/v1/auth/token",
        None,
        form,
        Some(b"grant_type=api_key"),
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_client");
    let r = raw(
        base,
        "POST",
        "/v1/auth/token",
        Some(&e.api_key),
        form,
        Some(b"grant_type=api_key&scope=admin"),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_scope");
    let r = raw(
        base,
        "POST",
        "/v1/auth/token",
        None,
        form,
        Some(b"grant_type=refresh_token&refresh_token=kmsrt_nope"),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");
    let r = raw(
        base,
        "POST",
        "/v1/auth/introspect",
        None,
        form,
        Some(b"token=x"),
    );
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].is_string());
}

#[test]
fn keys_rotate_and_stay_published_until_retired() {
    let e = env();
    let admin = e.server.client(&e.root);
    let before = admin.list_keys().unwrap();
    assert_eq!(before.items.len(), 1);
    assert_eq!(before.items[0].state, "active");
    let r = raw(
        &e.server.base,
        "POST",
        "/v1/keys/rotate",
        Some(&e.root),
        None,
        None,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let after = admin.list_keys().unwrap();
    assert_eq!(after.items.len(), 2);
    assert_eq!(after.items[0].state, "active");
    assert_eq!(after.items[1].state, "verify-only");
    assert_eq!(
        e.server.anonymous().jwks().unwrap()["keys"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Without the scope: 403.
    let err = e.server.client(&e.api_key).list_keys().unwrap_err();
    assert_eq!(err.status(), Some(403));
}

#[test]
fn the_audit_log_lists_events_with_request_ids_and_verifies() {
    let e = env();
    let admin = e.server.client(&e.root);
    let r = common::call(
        &e.server.base,
        "POST",
        "/v1/apps",
        Some(&e.root),
        Some(&serde_json::json!({"name": "audited"})),
    );
    assert_eq!(r.status, 201);
    let request_id = r.request_id.clone().unwrap();
    let page = admin
        .list_audit(&AuditQueryParams {
            action: Some("app.create".into()),
            ..Default::default()
        })
        .unwrap();
    let event = page
        .items
        .iter()
        .find(|ev| ev.request_id.as_deref() == Some(request_id.as_str()))
        .unwrap_or_else(|| panic!("no event with request id {request_id}: {page:?}"));
    assert_eq!(event.outcome, "success");
    assert_eq!(event.ip.as_deref(), Some("127.0.0.1"));
    let all = admin
        .list_audit(&AuditQueryParams {
            limit: Some(2),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.items.len(), 2);
    assert!(all.items[0].seq > all.items[1].seq, "newest first");
    assert!(all.next_cursor.is_some());
    let check = admin.verify_audit().unwrap();
    assert!(check.ok);
    assert!(check.events.unwrap() >= 3);
    assert!(!serde_json::to_string(&page).unwrap().contains(&e.api_key));
}

// Issue 12 over HTTP: refreshes grant what the key holds now under its current limits, in
// one branch per family; revocations are audited once.

/// `POST /v1/auth/token`, form-encoded, with `bearer` as the Authorization.
fn token_call(e: &Env, bearer: Option<&str>, form: &str) -> Raw {
    raw(
        &e.server.base,
        "POST",
        "/v1/auth/token",
        bearer,
        Some("application/x-www-form-urlencoded"),
        Some(form.as_bytes()),
    )
}

fn refresh_call(e: &Env, refresh_token: &str) -> Raw {
    token_call(
        e,
        None,
        &format!("grant_type=refresh_token&refresh_token={refresh_token}"),
    )
}

fn exchange(e: &Env, api_key: &str) -> serde_json::Value {
    let r = token_call(e, Some(api_key), "grant_type=api_key");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn refreshed(e: &Env, refresh_token: &serde_json::Value) -> serde_json::Value {
    let r = refresh_call(e, refresh_token.as_str().unwrap());
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn assert_invalid_grant(r: &Raw) {
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_grant", "{}", r.body);
    assert!(r.json()["error_description"].is_string());
}

/// An API key in the test application: (token, id).
fn new_key(e: &Env, body: serde_json::Value) -> (String, String) {
    let r = call(
        &e.server.base,
        "POST",
        &format!("/v1/apps/{}/tokens", e.app_id),
        Some(&e.root),
        Some(&body),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    (
        v["token"].as_str().unwrap().to_owned(),
        v["id"].as_str().unwrap().to_owned(),
    )
}

fn admin(e: &Env, method: &str, path: &str, body: serde_json::Value) {
    let r = call(&e.server.base, method, path, Some(&e.root), Some(&body));
    assert!(
        (200..300).contains(&r.status),
        "{method} {path}: {}",
        r.body
    );
}

fn audit_events(e: &Env, action: &str) -> Vec<kms_server::wire::AuditEventView> {
    e.server
        .client(&e.root)
        .list_audit(&AuditQueryParams {
            action: Some(action.into()),
            ..Default::default()
        })
        .unwrap()
        .items
}

#[test]
fn a_refresh_over_http_grants_no_permission_the_role_lost() {
    let e = env();
    admin(
        &e,
        "POST",
        "/v1/permissions",
        json!({"scope": "billing.read"}),
    );
    admin(
        &e,
        "POST",
        "/v1/roles",
        json!({"name": "accountant", "permissions": ["app.read", "billing.read"]}),
    );
    let (key, _) = new_key(&e, json!({"name": "acct", "roles": ["accountant"]}));
    let first = exchange(&e, &key);
    assert_eq!(first["scope"], "app.read billing.read");
    admin(
        &e,
        "PATCH",
        "/v1/roles/accountant",
        json!({"permissions": ["app.read"]}),
    );
    let verify = call(
        &e.server.base,
        "POST",
        "/v1/verify",
        Some(&e.root),
        Some(&json!({"token": key, "scopes": ["billing.read"]})),
    );
    assert_eq!(verify.json()["code"], "INSUFFICIENT_PERMISSIONS");
    let second = refreshed(&e, &first["refresh_token"]);
    assert_eq!(second["scope"], "app.read");
    let introspected = e
        .server
        .client(&e.root)
        .introspect(second["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(introspected.scope.as_deref(), Some("app.read"));
}

#[test]
fn a_refresh_over_http_keeps_the_family_expiry() {
    let e = env();
    let first = exchange(&e, &e.api_key);
    let admin = e.server.client(&e.root);
    let exp = |t: &serde_json::Value| admin.introspect(t.as_str().unwrap()).unwrap().exp;
    let family_end = exp(&first["refresh_token"]);
    // Past a second boundary, so a renewed expiry would differ.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = refreshed(&e, &first["refresh_token"]);
    assert_eq!(exp(&second["refresh_token"]), family_end);
}

#[test]
fn inside_the_overlap_window_over_http_a_refresh_token_has_one_successor() {
    let e = env_with(&["--refresh-overlap", "30s"]);
    let first = exchange(&e, &e.api_key);
    let a = refreshed(&e, &first["refresh_token"]);
    let b = refreshed(&e, &first["refresh_token"]);
    let c = refreshed(&e, &first["refresh_token"]);
    assert_eq!(a["refresh_token"], b["refresh_token"]);
    assert_eq!(a["refresh_token"], c["refresh_token"]);
    let next = refreshed(&e, &a["refresh_token"]);
    // Its successor was used: a copy of the first token presented now is reuse, and the
    // whole family goes.
    assert_invalid_grant(&refresh_call(&e, first["refresh_token"].as_str().unwrap()));
    assert_invalid_grant(&refresh_call(&e, next["refresh_token"].as_str().unwrap()));
    let admin = e.server.client(&e.root);
    assert!(
        !admin
            .introspect(next["access_token"].as_str().unwrap())
            .unwrap()
            .active
    );
    assert_eq!(audit_events(&e, "refresh.reuse").len(), 1);
}

#[test]
fn token_exchanges_over_http_spend_uses() {
    let e = env();
    let (key, _) = new_key(
        &e,
        json!({"name": "once", "scopes": ["app.read"], "uses": 1}),
    );
    let first = exchange(&e, &key);
    let verify = call(
        &e.server.base,
        "POST",
        "/v1/verify",
        Some(&e.root),
        Some(&json!({"token": key})),
    );
    assert_eq!(verify.json()["code"], "USAGE_EXCEEDED", "{}", verify.body);
    let again = token_call(&e, Some(&key), "grant_type=api_key");
    assert_eq!(again.status, 401, "{}", again.body);
    assert_eq!(again.json()["error"], "invalid_client");
    assert_invalid_grant(&refresh_call(&e, first["refresh_token"].as_str().unwrap()));
}

#[test]
fn a_refresh_over_http_rechecks_the_current_allow_list_and_rate_limit() {
    let e = env();
    let (key, id) = new_key(&e, json!({"name": "net", "scopes": ["app.read"]}));
    let first = exchange(&e, &key);
    admin(
        &e,
        "PATCH",
        &format!("/v1/tokens/{id}"),
        json!({"ip_allow": ["10.0.0.0/8"]}),
    );
    // The test client is on 127.0.0.1, outside the narrowed list.
    assert_invalid_grant(&refresh_call(&e, first["refresh_token"].as_str().unwrap()));
    assert_eq!(
        token_call(&e, Some(&key), "grant_type=api_key").status,
        401,
        "the API-key grant is refused from outside too"
    );
    admin(
        &e,
        "PATCH",
        &format!("/v1/tokens/{id}"),
        json!({"ip_allow": null, "ratelimit": {"limit": 1, "per_seconds": 3600}}),
    );
    // The refused refresh spent nothing; the rate limit now allows one exchange.
    let second = refreshed(&e, &first["refresh_token"]);
    let limited = refresh_call(&e, second["refresh_token"].as_str().unwrap());
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.json()["error"], "rate_limited");
    assert!(limited.header("retry-after").is_some());
}

#[test]
fn revocations_over_http_are_audited_once() {
    let e = env();
    let pair = exchange(&e, &e.api_key);
    let admin = e.server.client(&e.root);
    let access = pair["access_token"].as_str().unwrap();
    let refresh = pair["refresh_token"].as_str().unwrap();
    admin.revoke_access_token(access).unwrap();
    admin.revoke_access_token(access).unwrap();
    let events = audit_events(&e, "access.revoke");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].ip.as_deref(), Some("127.0.0.1"));
    assert!(events[0].request_id.is_some());
    for _ in 0..3 {
        admin.revoke_access_token(refresh).unwrap();
    }
    assert_eq!(audit_events(&e, "refresh.revoke").len(), 1);
    let all = serde_json::to_string(&audit_events(&e, "access.revoke")).unwrap();
    assert!(!all.contains(access) && !all.contains(&refresh[6..]));
    assert!(admin.verify_audit().unwrap().ok);
}
