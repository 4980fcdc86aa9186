//! Single sign-on against real identity providers on loopback: panva's `oidc-provider` and
//! a SAML IdP built on `samlify` (both under `tests/idp/`), through the real `kms` binary.
//! The whole flow (login, callback or ACS, the session as bearer and as cookie, `/v1/me`,
//! verification, logout, disabling a user) and the attack list of the issue: replayed and
//! tampered state, a callback without the browser cookie, a wrong `iss`, tampered ID
//! tokens (`alg: none`, HS256, wrong nonce, wrong audience, expired), a key rotation at the
//! provider, replayed, unsigned, altered, wrapped, expired, misaddressed and unsolicited
//! SAML responses, an open redirect. Then the database, its WAL and the logs are scanned
//! for session tokens, client secrets and upstream tokens.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use common::idp::{query_param, saml_form, Browser, OidcIdp, SamlIdp};
use common::schema::{ApiSchema, PEOPLE_OPERATIONS};
use common::{call, init, Raw, Server};
use serde_json::{json, Value};

const CLIENT_SECRET: &str = "oidc-client-secret-9f3b2c71d8e4";

/// The operations only the SAML test reaches.
const SAML_ONLY: &[(&str, &str)] = &[
    ("post", "/v1/sso/{slug}/acs"),
    ("get", "/v1/sso/{slug}/metadata"),
];

/// `call` checked against the OpenAPI document for `template`.
#[allow(clippy::too_many_arguments, reason = "a call and its check")]
fn checked(
    schema: &ApiSchema,
    base: &str,
    method: &str,
    template: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Raw {
    let r = call(base, method, path, token, body);
    schema.validate(method, template, r.status, &r.body);
    r
}

/// Fails unless every operation of `ops` was checked against the document.
fn all_checked(schema: &ApiSchema, ops: &[(&str, &str)]) {
    let missing: Vec<_> = ops
        .iter()
        .filter(|(m, p)| !schema.was_checked(m, p))
        .collect();
    assert!(
        missing.is_empty(),
        "people operations never checked: {missing:?}"
    );
}

/// An application with a `support` role, and the server.
fn setup() -> (tempfile::TempDir, Server, String, String) {
    setup_with(&[])
}

/// [`setup`] with extra `kms serve` arguments.
fn setup_with(args: &[&str]) -> (tempfile::TempDir, Server, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    // The attack list fails many logins from one address; the lockout is tested on its own.
    let mut all = vec!["--lockout-threshold", "40"];
    all.extend_from_slice(args);
    let server = Server::start_with(&db, &all, &[]);
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
        Some(&json!({"name": "support", "permissions": ["token.read", "user.read", "app.read"]})),
    );
    assert_eq!(role.status, 201, "{}", role.body);
    (dir, server, root, app_id)
}

/// Runs a login from `login_url` up to the callback, which is returned unvisited.
fn oidc_until_callback(browser: &mut Browser, login_url: &str, callback_prefix: &str) -> String {
    let (_, visited) = browser.follow(login_url, 12, &[callback_prefix]);
    let last = visited.last().unwrap().clone();
    assert!(
        last.starts_with(callback_prefix),
        "the login did not reach the callback: {visited:?}"
    );
    last
}

fn status_of(base: &str, root: &str, token: &str) -> Value {
    call(
        base,
        "POST",
        "/v1/verify",
        Some(root),
        Some(&json!({ "token": token })),
    )
    .json()
}

#[test]
fn openid_connect_login_sessions_and_the_attacks_on_it() {
    let (dir, server, root, app_id) = setup();
    let base = server.base.clone();
    let callback = format!("{base}/v1/sso/corp/callback");
    let Some(provider) = OidcIdp::start(&[json!({
        "client_id": "kms",
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [callback],
    })]) else {
        return;
    };
    // The connection: discovery fetched, URLs built from the public URL.
    let schema = ApiSchema::committed();
    let created = checked(
        &schema,
        &base,
        "POST",
        "/v1/apps/{app_id}/idps",
        &format!("/v1/apps/{app_id}/idps"),
        Some(&root),
        Some(&json!({
            "slug": "corp", "kind": "oidc", "issuer": provider.issuer(),
            "client_id": "kms", "client_secret": CLIENT_SECRET,
            "scopes": ["openid", "email", "profile", "groups"],
            "groups_claim": "groups", "role_map": {"admins": ["support"]},
            "default_roles": [], "email_domains": ["example.com"],
        })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let idp = created.json();
    assert_eq!(idp["redirect_uri"], callback.as_str());
    assert_eq!(
        idp["login_url"],
        format!("{base}/v1/sso/corp/login").as_str()
    );
    assert_eq!(idp["status"], "active");
    assert!(idp.get("client_secret").is_none());
    assert!(!created.body.contains(CLIENT_SECRET));
    // A wrong issuer, an unknown role, a role map beyond the caller: refused.
    let bad = checked(
        &schema,
        &base,
        "POST",
        "/v1/apps/{app_id}/idps",
        &format!("/v1/apps/{app_id}/idps"),
        Some(&root),
        Some(
            &json!({"slug": "other", "kind": "oidc", "issuer": "http://127.0.0.1:9/none",
                     "client_id": "x"}),
        ),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    let bad = call(
        &base,
        "POST",
        &format!("/v1/apps/{app_id}/idps"),
        Some(&root),
        Some(
            &json!({"slug": "other", "kind": "oidc", "issuer": provider.issuer(),
                     "client_id": "x", "role_map": {"g": ["no-such-role"]}}),
        ),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    // Discovery by email domain.
    let found = checked(
        &schema,
        &base,
        "GET",
        "/v1/sso/discover",
        "/v1/sso/discover?email=alice@example.com",
        None,
        None,
    );
    let idp_id = idp["id"].as_str().unwrap().to_owned();
    let listed = checked(
        &schema,
        &base,
        "GET",
        "/v1/apps/{app_id}/idps",
        &format!("/v1/apps/{app_id}/idps"),
        Some(&root),
        None,
    );
    assert_eq!(listed.json()["items"][0]["id"], idp_id.as_str());
    let one = checked(
        &schema,
        &base,
        "GET",
        "/v1/idps/{id}",
        &format!("/v1/idps/{idp_id}"),
        Some(&root),
        None,
    );
    assert_eq!(one.status, 200);
    let patched_idp = checked(
        &schema,
        &base,
        "PATCH",
        "/v1/idps/{id}",
        &format!("/v1/idps/{idp_id}"),
        Some(&root),
        Some(&json!({"email_domains": ["example.com", "example.org"]})),
    );
    assert_eq!(patched_idp.status, 200, "{}", patched_idp.body);
    assert_eq!(patched_idp.json()["email_domains"][1], "example.org");
    assert_eq!(found.status, 200, "{}", found.body);
    let login_url = found.json()["login_url"].as_str().unwrap().to_owned();
    assert_eq!(
        call(
            &base,
            "GET",
            "/v1/sso/discover?email=bob@else.org",
            None,
            None
        )
        .status,
        404
    );

    // The flow: authorization request with PKCE S256, state, nonce.
    let mut browser = Browser::new();
    let first = browser.get(&login_url);
    schema.validate("GET", "/v1/sso/{slug}/login", first.status, &first.body);
    assert_eq!(first.status, 302, "{}", first.body);
    let to_provider = first.location().unwrap();
    assert!(to_provider.starts_with(provider.issuer()));
    assert_eq!(
        query_param(&to_provider, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        query_param(&to_provider, "response_type").as_deref(),
        Some("code")
    );
    assert!(query_param(&to_provider, "nonce").is_some());
    assert!(query_param(&to_provider, "state").is_some());
    let binding = first.set_cookies().join(" ");
    assert!(
        binding.contains("kms_login=") && binding.contains("HttpOnly"),
        "{binding}"
    );
    let (_, visited) = browser.follow(&to_provider, 12, &[&callback]);
    let back = visited.last().unwrap().clone();
    assert!(back.starts_with(&callback), "{visited:?}");
    assert!(
        query_param(&back, "iss").is_some(),
        "RFC 9207 iss expected: {back}"
    );
    let done = browser.get(&back);
    schema.validate("GET", "/v1/sso/{slug}/callback", done.status, &done.body);
    assert_eq!(done.status, 200, "{}", done.body);
    let login = done.json();
    let session_token = login["session_token"].as_str().unwrap().to_owned();
    assert!(session_token.len() <= 64);
    assert!(session_token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    assert_eq!(login["user"]["email"], "alice@example.com");
    assert!(login["user"]["roles"]
        .as_array()
        .unwrap()
        .contains(&json!("support")));
    let cookies = done.set_cookies().join(" | ");
    assert!(
        cookies.contains("kms_session=")
            && cookies.contains("HttpOnly")
            && cookies.contains("SameSite=Lax"),
        "{cookies}"
    );
    let user_id = login["user"]["id"].as_str().unwrap().to_owned();
    assert!(user_id.starts_with("usr_"));

    // The session as a bearer, and as the cookie.
    let me = checked(
        &schema,
        &base,
        "GET",
        "/v1/me",
        "/v1/me",
        Some(&session_token),
        None,
    );
    let mine = checked(
        &schema,
        &base,
        "GET",
        "/v1/me/sessions",
        "/v1/me/sessions",
        Some(&session_token),
        None,
    );
    assert_eq!(
        mine.json()["items"].as_array().unwrap().len(),
        1,
        "{}",
        mine.body
    );
    let users = checked(
        &schema,
        &base,
        "GET",
        "/v1/apps/{app_id}/users",
        &format!("/v1/apps/{app_id}/users"),
        Some(&root),
        None,
    );
    assert_eq!(
        users.json()["items"].as_array().unwrap().len(),
        1,
        "{}",
        users.body
    );
    let user = checked(
        &schema,
        &base,
        "GET",
        "/v1/users/{id}",
        &format!("/v1/users/{user_id}"),
        Some(&root),
        None,
    );
    assert_eq!(user.json()["identities"][0]["idp_id"], idp_id.as_str());
    assert_eq!(user.json()["mapped_roles"], json!(["support"]));
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["user"]["id"], user_id.as_str());
    assert!(!me.body.contains(&session_token));
    let me_cookie = browser.get(&format!("{base}/v1/me"));
    assert_eq!(me_cookie.status, 200, "{}", me_cookie.body);
    // It holds the mapped role's scopes, inside its own application only.
    let apps = call(
        &base,
        "GET",
        &format!("/v1/apps/{app_id}"),
        Some(&session_token),
        None,
    );
    assert_eq!(apps.status, 200, "{}", apps.body);
    let denied = call(&base, "GET", "/v1/audit", Some(&session_token), None);
    assert_eq!(denied.status, 403, "{}", denied.body);
    // A cookie-authenticated change needs a matching Origin (CSRF).
    let csrf = browser.post_form(&format!("{base}/v1/auth/logout"), &[]);
    assert_eq!(csrf.status, 403, "{}", csrf.body);
    // Verification answers for sessions as for keys.
    let v = status_of(&base, &root, &session_token);
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["kind"], "session");
    assert_eq!(v["user_id"], user_id.as_str());
    assert_eq!(v["app_id"], app_id.as_str());
    assert!(v["session_id"].as_str().unwrap().starts_with("ses_"));
    assert_eq!(status_of(&base, &root, &root)["kind"], "api_key");

    // A replayed callback: the attempt was used.
    let replay = browser.get(&back);
    assert_eq!(replay.status, 400, "{}", replay.body);

    // A callback from another browser (no login cookie), a tampered state.
    let mut other = Browser::new();
    let back2 = oidc_until_callback(&mut other, &login_url, &callback);
    let mut thief = Browser::new();
    assert_eq!(thief.get(&back2).status, 400);
    let state = query_param(&back2, "state").unwrap();
    let tampered = back2.replace(&state, &format!("{state}x"));
    assert_eq!(other.get(&tampered).status, 400);
    // The thief's try did not use up the attempt: its owner still signs in with it.
    assert_eq!(other.get(&back2).status, 200);
    // A wrong iss (mix-up attack).
    let mut mixed = Browser::new();
    let back3 = oidc_until_callback(&mut mixed, &login_url, &callback);
    let wrong = with_param(&back3, "iss", "http://127.0.0.1:1/evil");
    assert_ne!(wrong, back3);
    assert_eq!(mixed.get(&wrong).status, 400);

    // Tampered ID tokens: refused with 401, no session.
    for mode in [
        "alg_none",
        "hs256",
        "wrong_nonce",
        "wrong_aud",
        "expired",
        "bad_signature",
        "wrong_iss",
    ] {
        provider.mode(mode);
        let mut b = Browser::new();
        let back = oidc_until_callback(&mut b, &login_url, &callback);
        let r = b.get(&back);
        assert_eq!(r.status, 401, "{mode}: {}", r.body);
        assert!(
            r.set_cookies()
                .iter()
                .all(|c| !c.starts_with("kms_session=Ses_")),
            "{mode}"
        );
    }
    provider.mode("normal");

    // A key rotation at the provider: the unknown kid makes kms fetch the key set again.
    provider.rotate_keys();
    let mut b = Browser::new();
    let back = oidc_until_callback(&mut b, &login_url, &callback);
    let r = b.get(&back);
    assert_eq!(r.status, 200, "after a key rotation: {}", r.body);

    // return_to: relative paths only, and the login then redirects there.
    for evil in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
    ] {
        let r = Browser::new().get(&format!("{login_url}?return_to={}", urlencode(evil)));
        assert_eq!(r.status, 400, "{evil}: {}", r.body);
    }
    let mut b = Browser::new();
    let back = oidc_until_callback(
        &mut b,
        &format!("{login_url}?return_to=%2Fconsole%2Fhome"),
        &callback,
    );
    let r = b.get(&back);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/console/home"));

    // Sessions of the user, revoking one, groups absent leave mapped roles alone.
    let sessions = checked(
        &schema,
        &base,
        "GET",
        "/v1/users/{id}/sessions",
        &format!("/v1/users/{user_id}/sessions"),
        Some(&root),
        None,
    );
    assert_eq!(sessions.status, 200, "{}", sessions.body);
    assert!(sessions.json()["items"].as_array().unwrap().len() >= 2);
    assert!(!sessions.body.contains("Ses_"));
    let session_id = v["session_id"].as_str().unwrap().to_owned();
    let revoked = checked(
        &schema,
        &base,
        "POST",
        "/v1/sessions/{id}/revoke",
        &format!("/v1/sessions/{session_id}/revoke"),
        Some(&root),
        None,
    );
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert_eq!(
        call(&base, "GET", "/v1/me", Some(&session_token), None).status,
        401
    );
    assert_eq!(status_of(&base, &root, &session_token)["valid"], false);

    // Logout through the cookie with the right Origin.
    let mut b = Browser::new();
    let back = oidc_until_callback(&mut b, &login_url, &callback);
    let token2 = b.get(&back).json()["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = call_with_origin(&base, "/v1/auth/logout", &token2, &base);
    assert_eq!(out.0, 204);
    schema.validate("POST", "/v1/auth/logout", out.0, &out.1);
    assert_eq!(
        call(&base, "GET", "/v1/me", Some(&token2), None).status,
        401
    );

    // Disabling the user ends every session and refuses logins (403).
    let mut b = Browser::new();
    let back = oidc_until_callback(&mut b, &login_url, &callback);
    let token3 = b.get(&back).json()["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Given roles are kept apart from mapped ones; the caller must hold what it gives.
    let given = checked(
        &schema,
        &base,
        "PATCH",
        "/v1/users/{id}",
        &format!("/v1/users/{user_id}"),
        Some(&root),
        Some(&json!({"roles": ["support"]})),
    );
    assert_eq!(
        given.json()["given_roles"],
        json!(["support"]),
        "{}",
        given.body
    );
    // Roles on many users at once: all or nothing, one audit event.
    let bulk = checked(
        &schema,
        &base,
        "POST",
        "/v1/users/roles",
        "/v1/users/roles",
        Some(&root),
        Some(&json!({"ids": [user_id], "withdraw": ["support"]})),
    );
    assert_eq!(bulk.status, 200, "{}", bulk.body);
    assert_eq!(bulk.json()["changed"], 1);
    let refused = call(
        &base,
        "POST",
        "/v1/users/roles",
        Some(&root),
        Some(&json!({"ids": [user_id, "usr_missing"], "grant": ["support"]})),
    );
    assert_eq!(refused.status, 404, "{}", refused.body);
    let after = call(
        &base,
        "GET",
        &format!("/v1/users/{user_id}"),
        Some(&root),
        None,
    )
    .json();
    assert_eq!(after["given_roles"], json!([]), "nothing changed: {after}");
    // A conditional grant on the user: the session holds audit.read only from the EU.
    let cond = checked(
        &schema,
        &base,
        "PATCH",
        "/v1/users/{id}",
        &format!("/v1/users/{user_id}"),
        Some(&root),
        Some(&json!({"grants": [{"scope": "audit.read", "when": "context.region == \"eu\""}]})),
    );
    assert_eq!(cond.status, 200, "{}", cond.body);
    assert_eq!(cond.json()["grants"][0]["scope"], "audit.read");
    let ask = |context: Value| {
        call(
            &base,
            "POST",
            "/v1/verify",
            Some(&root),
            Some(&json!({"token": token3, "scopes": ["audit.read"], "context": context})),
        )
        .json()["code"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(ask(json!({"region": "eu"})), "VALID");
    assert_eq!(ask(json!({"region": "us"})), "INSUFFICIENT_PERMISSIONS");
    let plain_scope = call(
        &base,
        "PATCH",
        &format!("/v1/users/{user_id}"),
        Some(&root),
        Some(&json!({"grants": [{"scope": "audit.read"}]})),
    );
    assert_eq!(plain_scope.status, 400, "{}", plain_scope.body);
    let unknown = call(
        &base,
        "PATCH",
        &format!("/v1/users/{user_id}"),
        Some(&root),
        Some(&json!({"roles": ["nope"]})),
    );
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    let patched = checked(
        &schema,
        &base,
        "PATCH",
        "/v1/users/{id}",
        &format!("/v1/users/{user_id}"),
        Some(&root),
        Some(&json!({"status": "disabled"})),
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(
        call(&base, "GET", "/v1/me", Some(&token3), None).status,
        401
    );
    let mut b = Browser::new();
    let back = oidc_until_callback(&mut b, &login_url, &callback);
    assert_eq!(b.get(&back).status, 403);

    let all = checked(
        &schema,
        &base,
        "POST",
        "/v1/users/{id}/sessions/revoke",
        &format!("/v1/users/{user_id}/sessions/revoke"),
        Some(&root),
        None,
    );
    assert_eq!(all.status, 200, "{}", all.body);
    assert!(all.json()["revoked"].is_u64());
    let gone = checked(
        &schema,
        &base,
        "DELETE",
        "/v1/users/{id}",
        &format!("/v1/users/{user_id}"),
        Some(&root),
        None,
    );
    assert_eq!(gone.status, 204);
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

    // Failed logins count against the client address: enough of them lock it out (429),
    // even for a callback that would succeed.
    let mut b = Browser::new();
    let pending = oidc_until_callback(&mut b, &login_url, &callback);
    let mut last = 0;
    for i in 0..45 {
        last = Browser::new()
            .get(&format!("{callback}?code=x&state=guess{i}"))
            .status;
        if last == 429 {
            break;
        }
    }
    assert_eq!(last, 429, "failed logins never locked the address out");
    let locked = b.get(&pending);
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert!(locked.header("retry-after").is_some());
    let metrics = call(&base, "GET", "/metrics", None, None).body;
    assert!(
        metrics.contains("kms_sso_logins_total{kind=\"oidc\",outcome=\"success\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("kms_sso_logins_total{kind=\"oidc\",outcome=\"failure\"}"));

    // The audit log has the logins, failures with their reason.
    let audit = call(
        &base,
        "GET",
        "/v1/audit?action=sso.login",
        Some(&root),
        None,
    )
    .json();
    let events = audit["items"].as_array().unwrap();
    assert!(events.iter().any(|e| e["outcome"] == "success"));
    assert!(events.iter().any(|e| e["outcome"] == "failure"));

    let doomed = checked(
        &schema,
        &base,
        "DELETE",
        "/v1/idps/{id}",
        &format!("/v1/idps/{idp_id}"),
        Some(&root),
        None,
    );
    assert_eq!(doomed.status, 204);
    let saml_only: Vec<_> = PEOPLE_OPERATIONS
        .iter()
        .filter(|op| !SAML_ONLY.contains(op))
        .copied()
        .collect();
    all_checked(&schema, &saml_only);

    // No secret at rest or in the logs.
    let logs = server.logs();
    scan_for_secrets(
        dir.path(),
        &logs,
        &[&session_token, &token2, &token3, CLIENT_SECRET],
    );
}

#[test]
fn offline_access_sessions_are_rechecked_at_the_provider() {
    let (dir, server, root, app_id) = setup_with(&["--sso-revalidate", "1s"]);
    let base = server.base.clone();
    let callback = format!("{base}/v1/sso/corp/callback");
    let Some(provider) = OidcIdp::start(&[json!({
        "client_id": "kms",
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [callback],
    })]) else {
        return;
    };
    let created = call(
        &base,
        "POST",
        &format!("/v1/apps/{app_id}/idps"),
        Some(&root),
        Some(&json!({
            "slug": "corp", "kind": "oidc", "issuer": provider.issuer(),
            "client_id": "kms", "client_secret": CLIENT_SECRET,
            "scopes": ["openid", "email", "profile", "groups", "offline_access"],
            "groups_claim": "groups", "role_map": {"admins": ["support"]},
        })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let login_url = created.json()["login_url"].as_str().unwrap().to_owned();
    let mut b = Browser::new();
    let back = oidc_until_callback(&mut b, &login_url, &callback);
    let done = b.get(&back);
    assert_eq!(done.status, 200, "{}", done.body);
    let token = done.json()["session_token"].as_str().unwrap().to_owned();
    let sealed: Option<String> = rusqlite::Connection::open(dir.path().join("kms.db"))
        .unwrap()
        .query_row("SELECT sealed_upstream_refresh FROM sessions", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(
        sealed.is_some(),
        "the provider's refresh token was not kept (sealed)"
    );
    let before = provider.stats()["token_requests"].as_u64().unwrap();
    // Past the interval, a use re-checks the user with the refresh token: still fine.
    std::thread::sleep(std::time::Duration::from_millis(1_300));
    assert_eq!(call(&base, "GET", "/v1/me", Some(&token), None).status, 200);
    let after = provider.stats()["token_requests"].as_u64().unwrap();
    assert!(
        after > before,
        "no refresh-token grant was made ({before} -> {after})"
    );
    // The provider stops honouring the refresh token: the next re-check ends the session.
    provider.revoke_refresh();
    std::thread::sleep(std::time::Duration::from_millis(1_300));
    let me = call(&base, "GET", "/v1/me", Some(&token), None);
    assert_eq!(me.status, 401, "{}", me.body);
    assert_eq!(status_of(&base, &root, &token)["code"], "REVOKED");
    let audit = call(
        &base,
        "GET",
        "/v1/audit?action=session.revoke",
        Some(&root),
        None,
    )
    .json();
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["details"]["reason"] == "upstream_refused"),
        "{audit}"
    );
    scan_for_secrets(dir.path(), &server.logs(), &[&token, CLIENT_SECRET]);
}

/// The master key's custody with real sealed secrets: a client secret given sealed in the
/// connection's JSON file (`kms config seal`, `kms idp create`), a provider's refresh token
/// kept sealed by an `offline_access` session; `kms master-key rotate` re-seals both, and
/// after a restart with the new key the session is re-checked at the provider (both secrets
/// opened) and a new login exchanges its code with the client secret.
#[test]
fn a_master_key_rotation_keeps_client_secrets_and_upstream_tokens_working() {
    let (dir, mut server, _root, app_id) = setup_with(&["--sso-revalidate", "1s"]);
    let base = server.base.clone();
    let listen = base.trim_start_matches("http://").to_owned();
    let callback = format!("{base}/v1/sso/corp/callback");
    let Some(provider) = OidcIdp::start(&[json!({
        "client_id": "kms",
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [callback],
    })]) else {
        return;
    };
    let db = dir.path().join("kms.db");
    let sealed = common::run_input(
        &db,
        &["config", "seal", "--setting", "idp_client_secret"],
        &[],
        CLIENT_SECRET,
    );
    assert!(sealed.status.success(), "{}", sealed.stderr);
    let sealed = sealed.stdout.trim().to_owned();
    assert!(!sealed.contains(CLIENT_SECRET));
    let body = dir.path().join("idp.json");
    std::fs::write(
        &body,
        json!({"slug": "corp", "kind": "oidc", "issuer": provider.issuer(),
               "client_id": "kms", "client_secret": sealed,
               "scopes": ["openid", "email", "profile", "groups", "offline_access"],
               "groups_claim": "groups"})
        .to_string(),
    )
    .unwrap();
    let out = common::run(
        &db,
        &[
            "idp",
            "create",
            "--app",
            &app_id,
            "--public-url",
            &base,
            body.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let login_url = out.json()["login_url"].as_str().unwrap().to_owned();
    // The code exchange needs the client secret as given, unsealed.
    let mut b = Browser::new();
    let back = oidc_until_callback(&mut b, &login_url, &callback);
    let done = b.get(&back);
    assert_eq!(done.status, 200, "{}", done.body);
    let token = done.json()["session_token"].as_str().unwrap().to_owned();
    server.stop();

    let new_key = dir.path().join("new.key");
    let out = common::run(
        &db,
        &[
            "master-key",
            "rotate",
            "--new-key-file",
            new_key.to_str().unwrap(),
            "--generate",
        ],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["client_secrets"], 1, "{report}");
    assert_eq!(report["upstream_tokens"], 1, "{report}");

    let server = Server::start_on(
        &db,
        &listen,
        &[
            "--sso-revalidate",
            "1s",
            "--master-key-file",
            new_key.to_str().unwrap(),
        ],
        &[],
    );
    let before = provider.stats()["token_requests"].as_u64().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1_300));
    assert_eq!(call(&base, "GET", "/v1/me", Some(&token), None).status, 200);
    let after = provider.stats()["token_requests"].as_u64().unwrap();
    assert!(
        after > before,
        "the session was not re-checked ({before} -> {after})"
    );
    let mut b = Browser::new();
    let back = oidc_until_callback(&mut b, &login_url, &callback);
    assert_eq!(b.get(&back).status, 200);
    scan_for_secrets(dir.path(), &server.logs(), &[&token, CLIENT_SECRET]);
}

/// A fresh SAML session on a server started with `args`: (server, dir, root, token).
fn saml_session(args: &[&str]) -> Option<(tempfile::TempDir, Server, String, String, SamlIdp)> {
    let (dir, server, root, app_id) = setup_with(args);
    let base = server.base.clone();
    let idp = SamlIdp::start()?;
    let created = call(
        &base,
        "POST",
        &format!("/v1/apps/{app_id}/idps"),
        Some(&root),
        Some(&json!({"slug": "life", "kind": "saml", "idp_metadata_xml": idp.metadata_xml()})),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let metadata = call(&base, "GET", "/v1/sso/life/metadata", None, None);
    idp.set_sp(&metadata.body);
    let login_url = created.json()["login_url"].as_str().unwrap().to_owned();
    let mut b = Browser::new();
    let (page, _) = b.follow(&login_url, 5, &[]);
    let (action, response, relay) = saml_form(&page.body).unwrap();
    let done = b.post_form(
        &action,
        &[("SAMLResponse", &response), ("RelayState", &relay)],
    );
    assert_eq!(done.status, 200, "{}", done.body);
    let token = done.json()["session_token"].as_str().unwrap().to_owned();
    Some((dir, server, root, token, idp))
}

#[test]
fn sessions_end_when_idle_and_at_their_lifetime() {
    let pause = |ms| std::thread::sleep(std::time::Duration::from_millis(ms));
    // Idle timeout 3 s: used every 1.2 s it lives on; left alone, it ends.
    let Some((_dir, server, root, token, _idp)) = saml_session(&["--session-idle-timeout", "3s"])
    else {
        return;
    };
    for _ in 0..4 {
        pause(1_200);
        assert_eq!(
            call(&server.base, "GET", "/v1/me", Some(&token), None).status,
            200
        );
    }
    pause(4_500);
    assert_eq!(
        call(&server.base, "GET", "/v1/me", Some(&token), None).status,
        401
    );
    assert_eq!(status_of(&server.base, &root, &token)["code"], "EXPIRED");
    // Lifetime 3 s: however much it is used.
    let Some((_dir2, server2, root2, token2, _idp2)) = saml_session(&["--session-ttl", "3s"])
    else {
        return;
    };
    pause(1_500);
    assert_eq!(
        call(&server2.base, "GET", "/v1/me", Some(&token2), None).status,
        200
    );
    pause(2_500);
    assert_eq!(
        call(&server2.base, "GET", "/v1/me", Some(&token2), None).status,
        401
    );
    assert_eq!(status_of(&server2.base, &root2, &token2)["code"], "EXPIRED");
}

#[test]
fn saml_login_and_the_attacks_on_it() {
    let (dir, server, root, app_id) = setup();
    let base = server.base.clone();
    let schema = ApiSchema::committed();
    let Some(idp) = SamlIdp::start() else {
        return;
    };
    let created = call(
        &base,
        "POST",
        &format!("/v1/apps/{app_id}/idps"),
        Some(&root),
        Some(&json!({
            "slug": "corp-saml", "kind": "saml", "idp_metadata_xml": idp.metadata_xml(),
            "groups_attribute": "groups", "role_map": {"admins": ["support"]},
            "default_roles": [], "email_domains": [],
        })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let info = created.json();
    let acs = format!("{base}/v1/sso/corp-saml/acs");
    assert_eq!(info["acs_url"], acs.as_str());
    assert_eq!(
        info["sp_entity_id"],
        format!("{base}/v1/sso/corp-saml/metadata").as_str()
    );
    assert_eq!(info["metadata_url"], info["sp_entity_id"]);
    let metadata = checked(
        &schema,
        &base,
        "GET",
        "/v1/sso/{slug}/metadata",
        "/v1/sso/corp-saml/metadata",
        None,
        None,
    );
    assert_eq!(metadata.status, 200);
    assert!(
        metadata.body.contains("EntityDescriptor"),
        "{}",
        metadata.body
    );
    idp.set_sp(&metadata.body);
    let login_url = info["login_url"].as_str().unwrap().to_owned();

    let saml_login = |browser: &mut Browser| -> (String, String, String) {
        let (page, visited) = browser.follow(&login_url, 5, &[]);
        assert_eq!(page.status, 200, "{visited:?}: {}", page.body);
        saml_form(&page.body).expect("the IdP answers with a form")
    };

    let mut browser = Browser::new();
    let (action, response, relay) = saml_login(&mut browser);
    assert_eq!(action, acs);
    let done = browser.post_form(
        &action,
        &[("SAMLResponse", &response), ("RelayState", &relay)],
    );
    schema.validate("POST", "/v1/sso/{slug}/acs", done.status, &done.body);
    assert_eq!(done.status, 200, "{}", done.body);
    let login = done.json();
    let token = login["session_token"].as_str().unwrap().to_owned();
    assert_eq!(login["user"]["email"], "alice@example.com");
    assert!(login["user"]["roles"]
        .as_array()
        .unwrap()
        .contains(&json!("support")));
    assert_eq!(status_of(&base, &root, &token)["kind"], "session");

    // The same response again: replayed.
    let replay = browser.post_form(
        &action,
        &[("SAMLResponse", &response), ("RelayState", &relay)],
    );
    assert_eq!(replay.status, 400, "{}", replay.body);
    // A response to another request: the attempt and the response do not match.
    let mut b1 = Browser::new();
    let (_, _first_response, relay1) = saml_login(&mut b1);
    let mut b2 = Browser::new();
    let (_, second_response, _) = saml_login(&mut b2);
    let crossed = b1.post_form(
        &acs,
        &[("SAMLResponse", &second_response), ("RelayState", &relay1)],
    );
    assert!(
        crossed.status == 401 || crossed.status == 400,
        "{}",
        crossed.body
    );

    for mode in [
        "unsigned_assertion",
        "altered_name_id",
        "wrapped_signature",
        "wrapped_signature_extensions",
        "expired",
        "wrong_audience",
        "wrong_in_response_to",
        "not_yet_valid",
    ] {
        idp.mode(mode);
        let mut b = Browser::new();
        let (action, response, relay) = saml_login(&mut b);
        let r = b.post_form(
            &action,
            &[("SAMLResponse", &response), ("RelayState", &relay)],
        );
        assert!(
            r.status == 401 || r.status == 400,
            "{mode}: {} {}",
            r.status,
            r.body
        );
        assert!(
            r.set_cookies()
                .iter()
                .all(|c| !c.starts_with("kms_session=Ses_")),
            "{mode}"
        );
    }
    idp.mode("normal");
    // Unsolicited (IdP-initiated) responses are off unless the connection enables them.
    let unsolicited = idp.idp_initiated(&acs);
    let r = Browser::new().post_form(&acs, &[("SAMLResponse", &unsolicited)]);
    assert_eq!(r.status, 400, "{}", r.body);
    // A missing login cookie.
    let mut b = Browser::new();
    let (action, response, relay) = saml_login(&mut b);
    b.clear_cookies();
    let r = b.post_form(
        &action,
        &[("SAMLResponse", &response), ("RelayState", &relay)],
    );
    assert_eq!(r.status, 400, "{}", r.body);

    // The same from the command line, on the database the server uses.
    let db = dir.path().join("kms.db");
    let body = dir.path().join("idp.json");
    std::fs::write(
        &body,
        json!({"slug": "cli-saml", "kind": "saml", "idp_metadata_xml": idp.metadata_xml(),
               "email_domains": ["cli.example"]})
        .to_string(),
    )
    .unwrap();
    let out = common::run(
        &db,
        &[
            "idp",
            "create",
            "--app",
            &app_id,
            "--public-url",
            &base,
            body.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        out.json()["acs_url"],
        format!("{base}/v1/sso/cli-saml/acs").as_str()
    );
    let out = common::run(
        &db,
        &["idp", "list", "--app", &app_id, "--public-url", &base],
    );
    assert_eq!(
        out.json()["items"].as_array().unwrap().len(),
        2,
        "{}",
        out.stdout
    );
    let out = common::run(&db, &["user", "list", "--app", &app_id]);
    let user_id = out.json()["items"][0]["id"].as_str().unwrap().to_owned();
    let out = common::run(&db, &["session", "list", "--user", &user_id]);
    assert!(
        !out.json()["items"].as_array().unwrap().is_empty(),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains(&token));
    let out = common::run(&db, &["user", "update", &user_id, "--role", "support"]);
    assert_eq!(
        out.json()["given_roles"],
        json!(["support"]),
        "{}",
        out.stderr
    );
    let bad = common::run(&db, &["user", "update", &user_id, "--status", "sleepy"]);
    assert!(!bad.status.success());
    let found = call(
        &base,
        "GET",
        "/v1/sso/discover?email=x@cli.example",
        None,
        None,
    );
    assert_eq!(
        found.json()["login_url"],
        format!("{base}/v1/sso/cli-saml/login").as_str()
    );

    // Deleting the provider ends its sessions.
    let idp_id = info["id"].as_str().unwrap();
    assert_eq!(
        call(
            &base,
            "DELETE",
            &format!("/v1/idps/{idp_id}"),
            Some(&root),
            None
        )
        .status,
        204
    );
    assert_eq!(call(&base, "GET", "/v1/me", Some(&token), None).status, 401);

    all_checked(&schema, SAML_ONLY);
    scan_for_secrets(dir.path(), &server.logs(), &[&token]);
}

/// The same flow on PostgreSQL (users, identities, sessions, attempts and the replay cache
/// in the shared database): login, the session verifies, is listed, and revoking it takes
/// effect.
#[test]
fn openid_connect_login_on_postgresql() {
    use kms_store::testing::{NoPostgres, ScratchDatabase};
    let database = match ScratchDatabase::create() {
        Ok(database) => database,
        Err(NoPostgres::Skip(notice)) => {
            common::cannot_run(&notice);
            return;
        }
        Err(NoPostgres::Fail(message)) => panic!("{message}"),
    };
    const MASTER_KEY: &str = "a21zLXRlc3QtbWFzdGVyLWtleS0zMi1ieXRlcy0hISE=";
    let url = database.url().to_owned();
    let server = Server::start_with(
        std::path::Path::new(&url),
        &["--lockout-threshold", "40"],
        &[("KMS_MASTER_KEY", MASTER_KEY)],
    );
    let base = server.base.clone();
    let logs = server.logs();
    let root = logs
        .lines()
        .find_map(|l| {
            serde_json::from_str::<Value>(l).ok()?["root_token"]
                .as_str()
                .map(str::to_owned)
        })
        .expect("the root token on stderr");
    let app = call(
        &base,
        "POST",
        "/v1/apps",
        Some(&root),
        Some(&json!({"name": "pg"})),
    );
    let app_id = app.json()["id"].as_str().unwrap().to_owned();
    let callback = format!("{base}/v1/sso/pg-corp/callback");
    let Some(provider) = OidcIdp::start(&[json!({
        "client_id": "kms",
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [callback],
    })]) else {
        return;
    };
    let created = call(
        &base,
        "POST",
        &format!("/v1/apps/{app_id}/idps"),
        Some(&root),
        Some(
            &json!({"slug": "pg-corp", "kind": "oidc", "issuer": provider.issuer(),
                     "client_id": "kms", "client_secret": CLIENT_SECRET}),
        ),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let login_url = created.json()["login_url"].as_str().unwrap().to_owned();
    let mut b = Browser::new();
    let back = oidc_until_callback(&mut b, &login_url, &callback);
    let done = b.get(&back);
    assert_eq!(done.status, 200, "{}", done.body);
    let token = done.json()["session_token"].as_str().unwrap().to_owned();
    let user_id = done.json()["user"]["id"].as_str().unwrap().to_owned();
    assert_eq!(b.get(&back).status, 400, "a replayed callback");
    let v = status_of(&base, &root, &token);
    assert_eq!(v["kind"], "session", "{v}");
    // A second node on the same database, its cache warm with the session.
    let other = Server::start_with(
        std::path::Path::new(&url),
        &["--lockout-threshold", "40", "--cache-ttl", "600s"],
        &[("KMS_MASTER_KEY", MASTER_KEY)],
    );
    assert_eq!(
        call(&other.base, "GET", "/v1/me", Some(&token), None).status,
        200
    );
    assert_eq!(
        call(&other.base, "GET", "/v1/me", Some(&token), None).status,
        200
    );
    let all = call(
        &base,
        "POST",
        &format!("/v1/users/{user_id}/sessions/revoke"),
        Some(&root),
        None,
    );
    assert_eq!(all.json()["revoked"], 1, "{}", all.body);
    assert_eq!(call(&base, "GET", "/v1/me", Some(&token), None).status, 401);
    // The other node hears it (pg_notify) and drops the cached session within a second.
    let started = std::time::Instant::now();
    while call(&other.base, "GET", "/v1/me", Some(&token), None).status != 401 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "the other node still accepts a revoked session"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `POST path` with a bearer token sent as the session cookie and an `Origin`.
fn call_with_origin(base: &str, path: &str, session: &str, origin: &str) -> (u16, String) {
    let r = ureq::post(&format!("{base}{path}"))
        .set("Cookie", &format!("kms_session={session}"))
        .set("Origin", origin)
        .call();
    match r {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{e}"),
    }
}

/// `url` with the query parameter `name` set to `value` (others kept).
fn with_param(url: &str, name: &str, value: &str) -> String {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut parts: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with(&format!("{name}=")))
        .map(str::to_owned)
        .collect();
    parts.push(format!("{name}={}", urlencode(value)));
    format!("{path}?{}", parts.join("&"))
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// No secret in the database files (and WAL) or the logs.
fn scan_for_secrets(dir: &std::path::Path, logs: &str, secrets: &[&str]) {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            files.push(path);
        }
    }
    assert!(files
        .iter()
        .any(|f| f.to_string_lossy().ends_with("kms.db")));
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        for secret in secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a secret is stored in plaintext in {}",
                file.display()
            );
        }
    }
    for secret in secrets {
        assert!(!logs.contains(secret), "a secret is in the logs");
    }
}
