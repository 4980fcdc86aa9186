//! End-to-end tests of access tokens (JWT), signing keys, JWKS and the audit log over
//! HTTP, against the real binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use common::{init, raw, Server};
use kms_server::wire::{AuditQueryParams, NewAppBody, NewTokenBody};

struct Env {
    _dir: tempfile::TempDir,
    server: Server,
    root: String,
    api_key: String,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    assert!(
        dir.path().join("kms.db.key").exists(),
        "init creates the master key file"
    );
    let server = Server::start(&db);
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
            },
        )
        .unwrap()
        .token;
    Env {
        _dir: dir,
        server,
        root,
        api_key,
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
