//! End-to-end tests of signed requests against the real binary: an application that
//! requires them gets a signing secret once, and every call on its behalf (management
//! calls, verification, the OAuth endpoints, refresh-token grants) must carry a valid,
//! fresh, unreplayed signature over the exact request.

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
            &token_body(
                "svc",
                &["app.read", "token.create", "token.read", "token.verify"],
            ),
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
        grants: Vec::new(),
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

/// A JSON `POST` with `bearer` (if any), signed with `signing` = (nonce, secret) if given.
fn post(
    e: &Env,
    path: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
    signing: Option<(&str, &str)>,
) -> Raw {
    let body = serde_json::to_vec(body).unwrap();
    let auth = bearer.map(|b| format!("Bearer {b}"));
    let ts = now().to_string();
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let signature;
    if let Some((nonce, secret)) = signing {
        signature = sign_request(
            secret.as_bytes(),
            &SignedRequest {
                method: "POST",
                path,
                query: "",
                timestamp: now(),
                nonce,
                body: &body,
            },
        );
        headers.extend([
            ("X-KMS-Timestamp", ts.as_str()),
            ("X-KMS-Nonce", nonce),
            ("X-KMS-Signature", signature.as_str()),
        ]);
    }
    send(
        &ureq::agent(),
        &e.server.base,
        "POST",
        path,
        &headers,
        Some(&body),
    )
}

/// Asserts the OAuth shape of a refused signature: 401 `invalid_client` naming `code`.
fn assert_oauth_refused(r: &Raw, code: &str) {
    assert_eq!(r.status, 401, "{}", r.body);
    let v = r.json();
    assert_eq!(v["error"], "invalid_client", "{}", r.body);
    let description = v["error_description"].as_str().unwrap_or_default();
    assert!(description.contains(code), "{}", r.body);
    assert_eq!(v.as_object().map(|o| o.len()), Some(2), "{}", r.body);
}

#[test]
fn verification_introspection_and_revocation_by_a_signing_apps_tokens_must_be_signed() {
    let e = env();
    let me = Some(e.token.as_str());
    let asked = serde_json::json!({"token": e.token});
    let unsigned = post(&e, "/v1/verify", me, &asked, None);
    assert_refused(&unsigned, "signature_missing");
    let signed = post(
        &e,
        "/v1/verify",
        me,
        &asked,
        Some(("nonce-verify-01", &e.secret)),
    );
    assert_eq!(signed.status, 200, "{}", signed.body);
    assert_eq!(signed.json()["code"], "VALID");

    let grant = serde_json::json!({"grant_type": "api_key"});
    let issued = post(
        &e,
        "/v1/auth/token",
        me,
        &grant,
        Some(("nonce-grant-01", &e.secret)),
    );
    assert_eq!(issued.status, 200, "{}", issued.body);
    let access = issued.json()["access_token"].as_str().unwrap().to_owned();
    let about = serde_json::json!({"token": access});

    let r = post(&e, "/v1/auth/introspect", me, &about, None);
    assert_oauth_refused(&r, "signature_missing");
    let r = post(&e, "/v1/auth/revoke", me, &about, None);
    assert_oauth_refused(&r, "signature_missing");
    let r = post(
        &e,
        "/v1/auth/introspect",
        me,
        &about,
        Some(("nonce-intro-01", "wrong")),
    );
    assert_oauth_refused(&r, "signature_invalid");
    let r = post(
        &e,
        "/v1/auth/introspect",
        me,
        &about,
        Some(("nonce-intro-02", &e.secret)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["active"],
        true,
        "the refused revocation revoked nothing"
    );
    let r = post(
        &e,
        "/v1/auth/revoke",
        me,
        &about,
        Some(("nonce-revoke-01", &e.secret)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(
        &e,
        "/v1/auth/introspect",
        me,
        &about,
        Some(("nonce-intro-03", &e.secret)),
    );
    assert_eq!(r.json(), serde_json::json!({"active": false}));

    // The system application does not require signatures.
    let root = Some(e.root.as_str());
    let r = post(&e, "/v1/verify", root, &asked, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(&e, "/v1/auth/introspect", root, &about, None);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn token_grants_for_a_signing_app_must_be_signed_and_an_unsigned_refresh_spends_nothing() {
    let e = env();
    let me = Some(e.token.as_str());
    let grant = serde_json::json!({"grant_type": "api_key"});
    let r = post(&e, "/v1/auth/token", me, &grant, None);
    assert_oauth_refused(&r, "signature_missing");
    let r = post(
        &e,
        "/v1/auth/token",
        me,
        &grant,
        Some(("nonce-grant-11", &e.secret)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();

    // A refresh carries no bearer: its family's application decides.
    let exchange = serde_json::json!({"grant_type": "refresh_token", "refresh_token": refresh});
    let r = post(&e, "/v1/auth/token", None, &exchange, None);
    assert_oauth_refused(&r, "signature_missing");
    let r = post(
        &e,
        "/v1/auth/token",
        None,
        &exchange,
        Some(("nonce-refresh-1", "wrong")),
    );
    assert_oauth_refused(&r, "signature_invalid");
    // The refused attempts spent nothing: the signed exchange is not taken for reuse.
    let nonce = "nonce-refresh-2";
    let r = post(
        &e,
        "/v1/auth/token",
        None,
        &exchange,
        Some((nonce, &e.secret)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let next = r.json()["refresh_token"].as_str().unwrap().to_owned();
    // A replay of that exchange is refused as a replay, before it can count as reuse and
    // revoke the family.
    let r = post(
        &e,
        "/v1/auth/token",
        None,
        &exchange,
        Some((nonce, &e.secret)),
    );
    assert_oauth_refused(&r, "signature_replayed");
    let exchange = serde_json::json!({"grant_type": "refresh_token", "refresh_token": next});
    let r = post(
        &e,
        "/v1/auth/token",
        None,
        &exchange,
        Some(("nonce-refresh-3", &e.secret)),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // A refresh token that names no family is refused as a grant, as before.
    let bogus = serde_json::json!({"grant_type": "refresh_token", "refresh_token": "kmsrt_nope"});
    let r = post(&e, "/v1/auth/token", None, &bogus, None);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_grant");
}
