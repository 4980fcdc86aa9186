//! The administration console at `/ui` against the real binary: how its files are served
//! (types, the console's CSP, the security headers, ETags, 404), and the console itself in
//! a real browser — headless Chromium driven by Selenium from `tests/console/console_test.py`,
//! with axe-core checking every page. Where the browser, its driver, Selenium or axe-core
//! is missing the browser test does not run: a note, or a failure under `CI=true`
//! (`.ci/run` installs them).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::idp::OidcIdp;
use common::{call, init, raw, Server};
use serde_json::json;

const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

fn console_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/console")
}

#[test]
fn the_console_is_served_with_its_csp_types_security_headers_and_etags() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    init(&db);
    let server = Server::start(&db);
    let base = &server.base;

    for (path, content_type) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/pages/roles.js", "text/javascript; charset=utf-8"),
        ("/ui/console.css", "text/css; charset=utf-8"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let r = raw(base, "GET", path, None, None, None);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(content_type), "{path}");
        assert_eq!(
            r.header("content-security-policy"),
            Some(CONSOLE_CSP),
            "{path}"
        );
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{path}");
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
        assert!(r.header("x-request-id").is_some(), "{path}");
        let etag = r.header("etag").unwrap().to_owned();
        let again = common::send(
            &ureq::agent(),
            base,
            "GET",
            path,
            &[("If-None-Match", etag.as_str())],
            None,
        );
        assert_eq!(again.status, 304, "{path}");
        assert!(again.body.is_empty(), "{path}");
    }
    let page = raw(base, "GET", "/ui/", None, None, None).body;
    assert!(page.contains("<script type=\"module\" src=\"/ui/app.js\"></script>"));

    // An unknown file is the API's 404, with the API's strict CSP.
    let missing = raw(base, "GET", "/ui/nope.js", None, None, None);
    missing.assert_error(404, "not_found");
    assert_eq!(
        missing.header("content-security-policy"),
        Some("default-src 'none'")
    );
    // The console changes nothing about the API's own headers, and opens no way in: the
    // API still wants a credential.
    let api = raw(base, "GET", "/v1/apps", None, None, None);
    api.assert_error(401, "unauthenticated");
    assert_eq!(
        api.header("content-security-policy"),
        Some("default-src 'none'")
    );
    assert_eq!(api.header("cache-control"), Some("no-store"));
    // HEAD answers the headers alone; only GET and HEAD are served.
    let head = raw(base, "HEAD", "/ui/app.js", None, None, None);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-security-policy"), Some(CONSOLE_CSP));
    assert!(head.body.is_empty());
    let post = raw(base, "POST", "/ui/app.js", None, None, Some(b"x"));
    assert_eq!(post.status, 405);
}

/// Why the browser test cannot run here, if it cannot.
fn browser_missing() -> Option<String> {
    let python = Command::new("python3")
        .args(["-c", "import selenium"])
        .output();
    match python {
        Err(_) => return Some("python3 not found".to_owned()),
        Ok(out) if !out.status.success() => {
            return Some(
                "the Python package selenium is not installed (python3 -m pip install selenium)"
                    .to_owned(),
            )
        }
        Ok(_) => {}
    }
    let has = |cmd: &str| {
        Command::new(cmd)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has("chromium") && !has("chromium-browser") && !has("google-chrome") {
        return Some("no Chromium (apt-get install chromium)".to_owned());
    }
    if !has("chromedriver") {
        return Some("no chromedriver (apt-get install chromium-driver)".to_owned());
    }
    if !console_dir()
        .join("node_modules/axe-core/axe.min.js")
        .is_file()
    {
        return Some("axe-core is not installed (npm ci in kms-server/tests/console)".to_owned());
    }
    None
}

#[test]
fn the_console_does_the_daily_work_in_a_real_browser() {
    if let Some(why) = browser_missing() {
        common::cannot_run(&format!(
            "{why}, so the console's browser test does not run"
        ));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start(&db);

    // A small policy made through the API before the browser looks at it: nested scopes,
    // and roles inheriting in a diamond.
    let r = call(
        &server.base,
        "POST",
        "/v1/permissions/bulk",
        Some(&root),
        Some(&json!({"permissions": [
            {"scope": "billing.read", "description": "read billing"},
            {"scope": "billing.invoices.read", "description": "read invoices", "implies": ["billing.read"]},
            {"scope": "billing.invoices.write", "description": "issue invoices", "implies": ["billing.invoices.read"]},
        ]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    for body in [
        json!({"name": "viewer", "permissions": ["app.read", "token.read"]}),
        json!({"name": "support", "permissions": ["audit.read"], "inherits": ["viewer"]}),
        json!({"name": "billing-clerk", "permissions": ["billing.invoices.write"], "inherits": ["viewer"]}),
        json!({"name": "operator", "permissions": ["key.read"], "inherits": ["support", "billing-clerk"]}),
    ] {
        let r = call(&server.base, "POST", "/v1/roles", Some(&root), Some(&body));
        assert_eq!(r.status, 201, "{}", r.body);
    }

    run_console_test(&server, &root, "admin", "console-screenshots");
}

/// Runs `console_test.py --scenario SCENARIO` against `server`, screenshots into
/// `$CARGO_TARGET_TMPDIR/SHOTS`; fails the test with its output and the server's logs.
fn run_console_test(server: &Server, root: &str, scenario: &str, shots: &str) {
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(shots);
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("python3")
        .arg(console_dir().join("console_test.py"))
        .arg("--base")
        .arg(&server.base)
        .arg("--axe")
        .arg(console_dir().join("node_modules/axe-core/axe.min.js"))
        .arg("--screenshots")
        .arg(&shots)
        .arg("--scenario")
        .arg(scenario)
        .env("KMS_CONSOLE_TEST_TOKEN", root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("screenshots of every page: {}", shots.display());
    assert!(
        out.status.success(),
        "console_test.py --scenario {scenario} failed:\n{stdout}\n{stderr}\nserver logs:\n{}",
        server.logs()
    );
    assert!(stdout.contains("test passed"), "{stdout}\n{stderr}");
    println!("{stdout}");
}

#[test]
fn the_console_signs_in_with_single_sign_on_in_a_real_browser() {
    if let Some(why) = browser_missing() {
        common::cannot_run(&format!(
            "{why}, so the console's browser test does not run"
        ));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start(&db);
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
    let role = json!({"name": "support",
        "permissions": ["app.read", "token.read", "user.read", "session.read"]});
    let r = call(&base, "POST", "/v1/roles", Some(&root), Some(&role));
    assert_eq!(r.status, 201, "{}", r.body);
    let secret = "console-test-client-secret";
    let Some(provider) = OidcIdp::start(&[json!({
        "client_id": "kms",
        "client_secret": secret,
        "redirect_uris": [format!("{base}/v1/sso/corp/callback")],
    })]) else {
        return;
    };
    // alice@example.com in group admins is the provider's next user.
    let idp = call(
        &base,
        "POST",
        &format!("/v1/apps/{app_id}/idps"),
        Some(&root),
        Some(&json!({
            "slug": "corp", "kind": "oidc", "issuer": provider.issuer(),
            "client_id": "kms", "client_secret": secret,
            "scopes": ["openid", "email", "profile", "groups"],
            "groups_claim": "groups", "role_map": {"admins": ["support"]},
            "email_domains": ["example.com"],
        })),
    );
    assert_eq!(idp.status, 201, "{}", idp.body);
    run_console_test(&server, &root, "sso", "console-screenshots-sso");
}
