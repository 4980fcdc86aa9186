//! End-to-end tests of signed requests against the real binary: an application that
//! requires them gets a signing secret once, and every management call by its tokens must
//! carry a valid, fresh, unreplayed signature over the exact request.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use common::{init, send, Raw, Server};
use kms_core::request_signing::{sign_request, SignedRequest};
use kms_server::wire::{AuditQueryParams, NewAppBody, NewTokenBody, PageQuery};

struct Env {
    _dir: tempfile::TempDir,
    server: Server,
    root: String,
    app: String,
    token: String,
    secret: String,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start(&db);
    let admin = server.client(&root);
    let app = admin
        .create_app(&NewAppBody {
            name: "signed".into(),
            require_signed_requests: Some(true),
            ..Default::default()
        })
        .unwrap();
    assert!(app.require_signed_requests);
    let token = admin
        .create_token(
            &app.id,
            &token_body("svc", &["app.read", "token.create", "token.read"]),
        )
        .unwrap()
        .token;
    let secret = admin.rotate_signing_secret(&app.id).unwrap().secret;
    Env {
        _dir: dir,
        server,
        root,
        app: app.id,
        token,
        secret,
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
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A request signed by `secret` over `signed_body`, sending `body` (they differ only to
/// tamper), with the given timestamp and nonce.
#[allow(
    clippy::too_many_arguments,
    reason = "each part of a signed request varies"
)]
fn signed(
    e: &Env,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    signed_body: &[u8],
    timestamp: i64,
    nonce: &str,
    secret: &str,
) -> Raw {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let signature = sign_request(
        secret.as_bytes(),
        &SignedRequest {
            method,
            path,
            query,
            timestamp,
            nonce,
            body: signed_body,
        },
    );
    let auth = format!("Bearer {}", e.token);
    let ts = timestamp.to_string();
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("X-KMS-Timestamp", ts.as_str()),
        ("X-KMS-Nonce", nonce),
        ("X-KMS-Signature", signature.as_str()),
    ];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    send(
        &ureq::agent(),
        &e.server.base,
        method,
        path_and_query,
        &headers,
        (!body.is_empty()).then_some(body),
    )
}

fn assert_refused(r: &Raw, code: &str) {
    let v = r.assert_error(401, "unauthenticated");
    assert_eq!(v["error"]["details"]["signature"], code, "{}", r.body);
}

#[test]
fn signed_calls_pass_including_bodies_and_queries() {
    let e = env();
    let client = e.server.client(&e.token).with_signing_secret(&e.secret);
    assert_eq!(client.get_app(&e.app).unwrap().id, e.app);
    let created = client
        .create_token(&e.app, &token_body("child", &["app.read"]))
        .unwrap();
    assert_eq!(created.info.app_id, e.app);
    let page = client
        .list_tokens(
            &e.app,
            &PageQuery {
                limit: Some(5),
                cursor: None,
            },
        )
        .unwrap();
    assert_eq!(page.items.len(), 2);
    // The query's pairs are signed sorted, whatever order they are sent in.
    let path = format!("/v1/apps/{}/tokens?limit=5&extra=1", e.app);
    let body = b"";
    let r = signed(
        &e,
        "GET",
        &path,
        body,
        body,
        now(),
        "nonce-query-1",
        &e.secret,
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn unsigned_and_malformed_calls_are_refused_with_distinct_codes() {
    let e = env();
    let path = format!("/v1/apps/{}", e.app);
    let unsigned = common::raw(&e.server.base, "GET", &path, Some(&e.token), None, None);
    assert_refused(&unsigned, "signature_missing");

    let auth = format!("Bearer {}", e.token);
    let ts = now().to_string();
    for (timestamp, nonce, signature) in [
        (ts.as_str(), "nonce-malformed-1", "not-hex"),
        (ts.as_str(), "short", &"ab".repeat(32)),
        ("soon", "nonce-malformed-2", &"ab".repeat(32)),
    ] {
        let r = send(
            &ureq::agent(),
            &e.server.base,
            "GET",
            &path,
            &[
                ("Authorization", &auth),
                ("X-KMS-Timestamp", timestamp),
                ("X-KMS-Nonce", nonce),
                ("X-KMS-Signature", signature),
            ],
            None,
        );
        assert_refused(&r, "signature_malformed");
    }
    // The system application does not require signatures: its tokens call unsigned.
    let r = common::raw(&e.server.base, "GET", &path, Some(&e.root), None, None);
    assert_eq!(r.status, 200);
}

#[test]
fn stale_signatures_are_refused() {
    let e = env();
    let path = format!("/v1/apps/{}", e.app);
    for timestamp in [now() - 3600, now() + 3600] {
        let r = signed(
            &e,
            "GET",
            &path,
            b"",
            b"",
            timestamp,
            "nonce-stale-01",
            &e.secret,
        );
        assert_refused(&r, "signature_stale");
    }
}

#[test]
fn replayed_requests_are_refused() {
    let e = env();
    let path = format!("/v1/apps/{}", e.app);
    let ts = now();
    let first = signed(&e, "GET", &path, b"", b"", ts, "nonce-replay-01", &e.secret);
    assert_eq!(first.status, 200, "{}", first.body);
    let again = signed(&e, "GET", &path, b"", b"", ts, "nonce-replay-01", &e.secret);
    assert_refused(&again, "signature_replayed");
}

#[test]
fn tampered_bodies_and_paths_are_refused() {
    let e = env();
    let path = format!("/v1/apps/{}/tokens", e.app);
    let good = serde_json::to_vec(&token_body("ok", &["app.read"])).unwrap();
    let evil = serde_json::to_vec(&token_body("evil", &["app.read", "token.create"])).unwrap();
    let r = signed(
        &e,
        "POST",
        &path,
        &evil,
        &good,
        now(),
        "nonce-tamper-01",
        &e.secret,
    );
    assert_refused(&r, "signature_invalid");
    // Signed for another path.
    let other = format!("/v1/apps/{}", e.app);
    let sig_for_other = sign_request(
        e.secret.as_bytes(),
        &SignedRequest {
            method: "GET",
            path: &other,
            query: "",
            timestamp: now(),
            nonce: "nonce-tamper-02",
            body: b"",
        },
    );
    let auth = format!("Bearer {}", e.token);
    let ts = now().to_string();
    let r = send(
        &ureq::agent(),
        &e.server.base,
        "GET",
        &format!("{path}?limit=1"),
        &[
            ("Authorization", &auth),
            ("X-KMS-Timestamp", &ts),
            ("X-KMS-Nonce", "nonce-tamper-02"),
            ("X-KMS-Signature", &sig_for_other),
        ],
        None,
    );
    assert_refused(&r, "signature_invalid");
    // Nothing was created by the refused call.
    let tokens = e
        .server
        .client(&e.root)
        .list_tokens(&e.app, &PageQuery::default())
        .unwrap();
    assert!(tokens.items.iter().all(|t| t.name != "evil"));
    // The genuine body passes.
    let r = signed(
        &e,
        "POST",
        &path,
        &good,
        &good,
        now(),
        "nonce-tamper-03",
        &e.secret,
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

#[test]
fn a_new_secret_replaces_the_old_and_is_shown_once() {
    let e = env();
    let admin = e.server.client(&e.root);
    let r = common::raw(
        &e.server.base,
        "POST",
        &format!("/v1/apps/{}/signing-secret", e.app),
        Some(&e.root),
        None,
        None,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let new_secret = r.json()["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, e.secret);

    let path = format!("/v1/apps/{}", e.app);
    let old = signed(
        &e,
        "GET",
        &path,
        b"",
        b"",
        now(),
        "nonce-rotate-01",
        &e.secret,
    );
    assert_refused(&old, "signature_invalid");
    let new = signed(
        &e,
        "GET",
        &path,
        b"",
        b"",
        now(),
        "nonce-rotate-02",
        &new_secret,
    );
    assert_eq!(new.status, 200, "{}", new.body);

    // Without app.write: 403; the secret appears in no audit event and no log line.
    let err = e
        .server
        .client(&e.token)
        .with_signing_secret(&new_secret)
        .rotate_signing_secret(&e.app)
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    let audit = admin.list_audit(&AuditQueryParams::default()).unwrap();
    let text = serde_json::to_string(&audit).unwrap();
    assert!(text.contains("app.signing_secret.rotate"), "{text}");
    for s in [&e.secret, &new_secret] {
        assert!(!text.contains(s.as_str()));
        assert!(!e.server.logs().contains(s.as_str()));
    }
}
