//! End-to-end tests of capacity statistics (`GET /v1/stats`, `kms stats`, the capacity
//! gauges of `/metrics`) and the compliance report (`GET /v1/reports/compliance` in JSON
//! and HTML, `kms report compliance` in JSON, HTML and Markdown), over the real binary.
//! The HTML page is rendered by a real headless Chromium and its content read back.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::schema::ApiSchema;
use common::{assert_no_secrets, call, init, raw, run, Raw, Server};
use serde_json::{json, Value};

const DAY: i64 = 86_400;

fn create_app(s: &Server, root: &str, name: &str) -> String {
    let r = call(
        &s.base,
        "POST",
        "/v1/apps",
        Some(root),
        Some(&json!({ "name": name })),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["id"].as_str().unwrap().to_owned()
}

/// Creates a token in `app`; returns (id, plaintext).
fn create_token(s: &Server, root: &str, app: &str, body: Value) -> (String, String) {
    let r = call(
        &s.base,
        "POST",
        &format!("/v1/apps/{app}/tokens"),
        Some(root),
        Some(&body),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

/// Runs `sql` on the database file, as someone with the file would (to age records).
fn sql(db: &Path, statement: &str) -> usize {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn.execute(statement, []).unwrap()
}

/// The value of the sample `name` (no labels) in a Prometheus text exposition.
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

#[test]
fn stats_count_exactly_what_was_created_and_feed_the_capacity_gauges() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start(&db);
    let schema = ApiSchema::committed();

    let before = call(&server.base, "GET", "/v1/stats", Some(&root), None);
    schema.check("GET", "/v1/stats", 200, &before);
    let before = before.json();
    assert_eq!(
        before["applications"], 1,
        "the system application: {before}"
    );
    assert_eq!(before["tokens"], 1, "the root token: {before}");
    assert_eq!(before["users"], 0);
    assert_eq!(before["sessions"], 0);
    let events_before = before["audit_events"].as_u64().unwrap();
    assert!(events_before >= 1, "{before}");

    let a = create_app(&server, &root, "billing");
    let b = create_app(&server, &root, "search");
    for (app, name) in [(&a, "one"), (&a, "two"), (&b, "three")] {
        create_token(&server, &root, app, json!({ "name": name }));
    }

    let client = server.client(&root);
    let stats = client.stats().unwrap();
    assert_eq!(stats.applications, 3);
    assert_eq!(stats.tokens, 4);
    assert_eq!((stats.users, stats.sessions), (0, 0));
    // Each creation is one audit event.
    assert_eq!(stats.audit_events, events_before + 5);
    assert!(stats.database_bytes >= 4096, "{stats:?}");
    assert_eq!(stats.growth_window_days, 7);
    // Everything was created within the window.
    assert_eq!(stats.growth_per_day.tokens, 4.0 / 7.0);
    assert_eq!(stats.growth_per_day.applications, 3.0 / 7.0);
    assert_eq!(stats.growth_per_day.users, 0.0);

    // The answer refreshed the gauges.
    let metrics = client.metrics().unwrap();
    assert_eq!(
        gauge(&metrics, "kms_stored_applications"),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(gauge(&metrics, "kms_stored_tokens"), Some(4.0));
    assert_eq!(gauge(&metrics, "kms_stored_users"), Some(0.0));
    assert_eq!(gauge(&metrics, "kms_stored_sessions"), Some(0.0));
    assert_eq!(
        gauge(&metrics, "kms_stored_audit_events"),
        Some(stats.audit_events as f64)
    );
    assert_eq!(
        gauge(&metrics, "kms_database_size_bytes"),
        Some(stats.database_bytes as f64)
    );
    assert!(gauge(&metrics, "kms_capacity_updated_timestamp_seconds").is_some());

    // The CLI counts the same (the audit log may have grown by nothing since).
    let out = run(&db, &["stats"]);
    assert!(out.status.success(), "{}", out.stderr);
    let cli = out.json();
    assert_eq!(cli["applications"], 3);
    assert_eq!(cli["tokens"], 4);
    assert_eq!(cli["audit_events"], stats.audit_events);

    // Numbers over every application: tenants are refused, strangers unauthenticated.
    let (_, tenant) = create_token(
        &server,
        &root,
        &a,
        json!({ "name": "auditor", "scopes": ["audit.read"] }),
    );
    let r = call(&server.base, "GET", "/v1/stats", Some(&tenant), None);
    r.assert_error(403, "forbidden");
    schema.check("GET", "/v1/stats", 403, &r);
    call(&server.base, "GET", "/v1/stats", None, None).assert_error(401, "unauthenticated");
}

/// What the compliance test seeds, with the secrets that must not leak.
struct Seeded {
    root_id: String,
    billing: String,
    locked: String,
    no_expiry: String,
    locked_no_expiry: String,
    admin: String,
    admin_by_role: String,
    old: String,
    revoked: String,
    verifier: String,
    kid: String,
    secrets: Vec<String>,
}

/// The thresholds and retention the server and the CLI both run with.
const REPORT_FLAGS: [&str; 6] = [
    "--report-max-token-age",
    "100d",
    "--report-thresholds",
    "admin_tokens=3,refresh_token_reuse=1",
    "--report-period",
    "7d",
];

fn seed(server: &Server, root: &str, root_id: &str) -> Seeded {
    let base = &server.base;
    let billing = create_app(server, root, "billing");
    let locked = create_app(server, root, "locked");
    let r = call(
        base,
        "PATCH",
        &format!("/v1/apps/{locked}"),
        Some(root),
        Some(&json!({ "ip_allow": ["10.0.0.0/8"] })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(
        base,
        "POST",
        "/v1/roles",
        Some(root),
        Some(&json!({ "name": "superuser", "permissions": ["admin"] })),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    let hour = json!(3600);
    let mut secrets = vec![root.to_owned()];
    let mut token = |app: &str, body: Value| {
        let (id, secret) = create_token(server, root, app, body);
        secrets.push(secret.clone());
        (id, secret)
    };
    let (no_expiry, _) = token(
        &billing,
        json!({ "name": "forever", "scopes": ["app.read"] }),
    );
    let (admin, _) = token(
        &billing,
        json!({ "name": "admin", "scopes": ["admin"], "expires_in": hour }),
    );
    let (admin_by_role, _) = token(
        &billing,
        json!({ "name": "via-role", "roles": ["superuser"], "expires_in": hour }),
    );
    let (old, _) = token(
        &billing,
        json!({ "name": "old", "scopes": ["app.read"], "expires_in": 30 * DAY }),
    );
    let (revoked, _) = token(&billing, json!({ "name": "revoked", "scopes": ["admin"] }));
    let (verifier, verifier_secret) = token(
        &billing,
        json!({ "name": "verifier", "scopes": ["token.verify"], "expires_in": hour }),
    );
    let (deleted, deleted_secret) = token(&billing, json!({ "name": "gone", "expires_in": hour }));
    let (_, exchanger) = token(
        &billing,
        json!({ "name": "exchanger", "scopes": ["app.read"], "expires_in": hour }),
    );
    let (locked_no_expiry, _) = token(&locked, json!({ "name": "inside" }));

    let r = call(
        base,
        "POST",
        &format!("/v1/tokens/{revoked}/revoke"),
        Some(root),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(
        base,
        "DELETE",
        &format!("/v1/tokens/{deleted}"),
        Some(root),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);

    // A lockout: the verifying service presents an unknown token until it is locked out
    // (threshold 2).
    for _ in 0..3 {
        let r = call(
            base,
            "POST",
            "/v1/verify",
            Some(&verifier_secret),
            Some(&json!({ "token": deleted_secret })),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_ne!(r.json()["valid"], true);
    }

    // Refresh-token reuse: a spent refresh token presented again.
    let form = |bearer: Option<&str>, body: &str| {
        raw(
            base,
            "POST",
            "/v1/auth/token",
            bearer,
            Some("application/x-www-form-urlencoded"),
            Some(body.as_bytes()),
        )
    };
    let pair = form(Some(&exchanger), "grant_type=api_key");
    assert_eq!(pair.status, 200, "{}", pair.body);
    let first = pair.json()["refresh_token"].as_str().unwrap().to_owned();
    secrets.push(first.clone());
    let refresh = format!("grant_type=refresh_token&refresh_token={first}");
    let next = form(None, &refresh);
    assert_eq!(next.status, 200, "{}", next.body);
    secrets.push(next.json()["refresh_token"].as_str().unwrap().to_owned());
    let reuse = form(None, &refresh);
    assert_eq!(reuse.status, 400, "{}", reuse.body);

    // Age what the report measures: the old key (200 days), the signing key (100 days)
    // and the master key (set in 2020).
    let db = &server.db;
    assert_eq!(
        sql(
            db,
            &format!(
                "UPDATE tokens SET created_at = created_at - {} WHERE id = '{old}'",
                200 * DAY
            )
        ),
        1
    );
    assert_eq!(
        sql(
            db,
            &format!(
                "UPDATE signing_keys SET created_at = created_at - {} WHERE state = 'active'",
                100 * DAY
            )
        ),
        1
    );
    assert_eq!(
        sql(
            db,
            "UPDATE meta SET value = '2020-01-01T00:00:00Z' WHERE key = 'initialized_at'"
        ),
        1
    );
    let keys = call(base, "GET", "/v1/keys", Some(root), None).json();
    let kid = keys["items"][0]["kid"].as_str().unwrap().to_owned();

    Seeded {
        root_id: root_id.to_owned(),
        billing,
        locked,
        no_expiry,
        locked_no_expiry,
        admin,
        admin_by_role,
        old,
        revoked,
        verifier,
        kid,
        secrets,
    }
}

fn finding<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no finding {id} in {report}"))
}

fn items(f: &Value) -> Vec<String> {
    let mut v: Vec<String> = f["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

/// Checks every finding of `report` against what [`seed`] made.
fn check_findings(report: &Value, s: &Seeded) {
    let expect = |id: &str, status: &str, listed: Vec<String>| {
        let f = finding(report, id);
        assert_eq!(f["status"], status, "{id}: {f}");
        assert_eq!(f["count"], listed.len(), "{id}: {f}");
        assert_eq!(items(f), listed, "{id}: {f}");
        assert_eq!(f["items_truncated"], false, "{id}");
        assert!(f["title"].as_str().is_some_and(|t| !t.is_empty()), "{id}");
    };
    expect(
        "tokens_without_expiry",
        "fail",
        sorted(&[&s.root_id, &s.no_expiry, &s.locked_no_expiry]),
    );
    expect("tokens_over_max_age", "fail", sorted(&[&s.old]));
    expect("tokens_unused_90d", "fail", sorted(&[&s.old]));
    expect(
        "admin_tokens",
        "pass",
        sorted(&[&s.root_id, &s.admin, &s.admin_by_role]),
    );
    assert_eq!(finding(report, "admin_tokens")["limit"], 3);
    expect(
        "apps_without_network_allow_list",
        "fail",
        sorted(&["app_system", &s.billing]),
    );
    expect("signing_key_age", "fail", vec![s.kid.clone()]);
    assert_eq!(
        finding(report, "signing_key_age")["details"]["age_days"],
        100
    );
    expect("master_key_age", "fail", vec!["master_key".to_owned()]);
    assert_eq!(
        finding(report, "master_key_age")["details"]["set_at_source"],
        "initialized_at"
    );
    expect("audit_chain", "pass", Vec::new());
    assert_eq!(finding(report, "audit_chain")["details"]["ok"], true);
    expect(
        "audit_retention",
        "fail",
        vec!["audit_retention".to_owned()],
    );
    assert_eq!(
        finding(report, "audit_retention")["details"]["audit_retention_days"],
        30
    );
    let retention = &finding(report, "audit_retention")["details"];
    assert_eq!(
        retention["usage_retention_days"], 400,
        "the default: {retention}"
    );
    assert_eq!(
        retention["session_retention_days"],
        Value::Null,
        "kept: {retention}"
    );
    let lockouts = finding(report, "lockouts");
    assert_eq!(lockouts["status"], "fail", "{lockouts}");
    assert_eq!(lockouts["count"], 1, "{lockouts}");
    assert_eq!(lockouts["details"]["events"], 1, "{lockouts}");
    assert!(
        lockouts["items"][0].as_str().unwrap().contains(&s.verifier),
        "the locked source is the verifying service: {lockouts}"
    );
    let reuse = finding(report, "refresh_token_reuse");
    assert_eq!(
        (reuse["status"].as_str(), reuse["count"].as_u64()),
        (Some("pass"), Some(1))
    );
    expect("users_without_login_90d", "pass", Vec::new());

    // Revoked keys are no finding; the application with an allow-list is none either.
    let text = report.to_string();
    assert!(
        !text.contains(&s.revoked),
        "a revoked key is listed: {text}"
    );
    assert!(
        !text.contains(&s.locked),
        "the locked-down app is listed: {text}"
    );
    assert_eq!(report["status"], "fail");
    assert_eq!(report["summary"]["failed"], 8, "{text}");
    assert_eq!(report["summary"]["passed"], 4, "{text}");
    assert_eq!(report["findings"].as_array().unwrap().len(), 12);
}

/// A headless Chromium that loads `page` (a file) and prints the DOM it built; returns
/// (DOM, browser log). Under CI a missing browser fails the test.
fn render_in_chromium(page: &Path, profile: &Path) -> Option<(String, String)> {
    let Some(browser) = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok()
        })
    else {
        common::cannot_run("no chromium to render the HTML report (apt-get install chromium)");
        return None;
    };
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed: {log}");
    assert!(dom.contains("</html>"), "chromium printed no DOM: {log}");
    Some((dom, log))
}

/// The section of `finding` in the rendered DOM.
fn section<'a>(dom: &'a str, finding: &str) -> &'a str {
    let start = dom
        .find(&format!("data-finding=\"{finding}\""))
        .unwrap_or_else(|| panic!("no section for {finding}"));
    let end = dom[start..].find("</section>").unwrap() + start;
    &dom[start..end]
}

fn check_rendered(dom: &str, log: &str, report: &Value) {
    assert!(dom.contains("<h1>Compliance report</h1>"), "{dom}");
    assert!(!dom.contains("<script"), "{dom}");
    // The style applied under the page's CSP: no refusal in the browser's console.
    assert!(
        !log.contains("Content Security Policy"),
        "the browser refused part of the page: {log}"
    );
    for f in report["findings"].as_array().unwrap() {
        let id = f["id"].as_str().unwrap();
        let s = section(dom, id);
        let title = f["title"].as_str().unwrap();
        assert!(
            s.contains(title),
            "{id}: the title {title:?} is not shown: {s}"
        );
        assert!(
            s.contains(&format!("<dd class=\"count\">{}</dd>", f["count"])),
            "{id}: the count is not shown: {s}"
        );
        assert!(
            s.contains(&format!(
                "<span class=\"status {0}\">{0}</span>",
                f["status"].as_str().unwrap()
            )),
            "{id}: the status is not shown: {s}"
        );
        for item in f["items"].as_array().unwrap() {
            assert!(
                s.contains(&format!("<code>{}</code>", item.as_str().unwrap())),
                "{id}: {item} is not listed: {s}"
            );
        }
    }
    assert!(dom.contains("<span class=\"status fail\" id=\"overall\">fail</span>"));
}

#[test]
fn the_compliance_report_finds_what_an_auditor_looks_for_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, root_id) = init(&db);
    let mut args = vec!["--lockout-threshold", "2", "--audit-retention", "30d"];
    args.extend(REPORT_FLAGS);
    let server = Server::start_with(&db, &args, &[]);
    let s = seed(&server, &root, &root_id);
    let schema = ApiSchema::committed();

    // JSON, the default; decoded into the client's types too.
    let r = call(
        &server.base,
        "GET",
        "/v1/reports/compliance",
        Some(&root),
        None,
    );
    schema.check("GET", "/v1/reports/compliance", 200, &r);
    let report = r.json();
    check_findings(&report, &s);
    let typed = server.client(&root).compliance_report().unwrap();
    assert_eq!(typed.findings.len(), 12);
    let json_again = call(
        &server.base,
        "GET",
        "/v1/reports/compliance?format=json",
        Some(&root),
        None,
    );
    check_findings(&json_again.json(), &s);

    // HTML: one page, its own CSP, rendered by a real browser.
    let html = raw(
        &server.base,
        "GET",
        "/v1/reports/compliance?format=html",
        Some(&root),
        None,
        None,
    );
    assert_eq!(html.status, 200, "{}", html.body);
    assert_eq!(
        html.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = html.header("content-security-policy").unwrap();
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-"),
        "{csp}"
    );
    assert!(!csp.contains("script"), "{csp}");
    assert_eq!(html.header("x-content-type-options"), Some("nosniff"));
    let page = dir.path().join("report.html");
    std::fs::write(&page, &html.body).unwrap();
    if let Some((dom, log)) = render_in_chromium(&page, &dir.path().join("chromium")) {
        check_rendered(&dom, &log, &report);
    }

    // Refusals.
    call(
        &server.base,
        "GET",
        "/v1/reports/compliance?format=pdf",
        Some(&root),
        None,
    )
    .assert_error(400, "invalid_request");
    let (_, tenant) = create_token(
        &server,
        &root,
        &s.billing,
        json!({ "name": "auditor", "scopes": ["audit.read"], "expires_in": 60 }),
    );
    let r = call(
        &server.base,
        "GET",
        "/v1/reports/compliance",
        Some(&tenant),
        None,
    );
    r.assert_error(403, "forbidden");
    schema.check("GET", "/v1/reports/compliance", 403, &r);
    call(&server.base, "GET", "/v1/reports/compliance", None, None)
        .assert_error(401, "unauthenticated");

    // The command line: the same findings, in JSON (to a file), Markdown and HTML.
    let cli = |extra: &[&str]| -> common::Output {
        let mut a = vec!["report", "compliance"];
        a.extend(REPORT_FLAGS);
        a.extend(extra);
        let out = common::kms()
            .args(&a)
            .arg("--db")
            .arg(&db)
            .env("KMS_AUDIT_RETENTION", "30d")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        common::Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let file: PathBuf = dir.path().join("report.json");
    let out = cli(&["--format", "json", "--output", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    let from_cli: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    check_findings(&from_cli, &s);

    let md = cli(&["--format", "md"]);
    assert!(md.status.success(), "{}", md.stderr);
    assert!(
        md.stdout.starts_with("# Compliance report\n"),
        "{}",
        md.stdout
    );
    assert!(
        md.stdout
            .contains("| API keys without an expiry | tokens\\_without\\_expiry | FAIL | 3 | 0 |"),
        "{}",
        md.stdout
    );
    assert!(
        md.stdout.contains(
            "| Audit chain intact (no event altered or removed) | audit\\_chain | PASS | 0 | 0 |"
        ),
        "{}",
        md.stdout
    );
    assert!(
        md.stdout
            .contains(&format!("  - {}", s.old.replace('_', "\\_"))),
        "{}",
        md.stdout
    );

    let cli_html = cli(&["--format", "html"]);
    assert!(cli_html.status.success(), "{}", cli_html.stderr);
    assert!(cli_html.stdout.starts_with("<!DOCTYPE html>"));

    let bad = cli(&["--format", "pdf"]);
    assert_eq!(bad.status.code(), Some(2), "{}", bad.stderr);

    // Someone with the file rewrites an event: the report says where the chain breaks.
    assert_eq!(
        sql(
            &db,
            "UPDATE audit_events SET target = 'nothing to see' WHERE seq = 2"
        ),
        1
    );
    let tampered = cli(&["--format", "json"]);
    assert!(tampered.status.success(), "{}", tampered.stderr);
    let tampered: Value = serde_json::from_str(&tampered.stdout).unwrap();
    let chain = finding(&tampered, "audit_chain");
    assert_eq!(chain["status"], "fail", "{chain}");
    assert_eq!(items(chain), vec!["2".to_owned()]);
    assert_eq!(chain["details"]["first_bad_seq"], 2);

    // Counts and ids only: no token, refresh token or hash in any form of the report.
    let mut everything = Vec::new();
    for body in [
        &r_body(&json_again),
        &html.body,
        &md.stdout,
        &cli_html.stdout,
    ] {
        everything.extend_from_slice(body.as_bytes());
    }
    everything.extend(std::fs::read(&file).unwrap());
    assert_no_secrets("the compliance report", &everything, &s.secrets);
    assert!(!String::from_utf8_lossy(&everything).contains("$argon2id$"));
}

fn r_body(r: &Raw) -> String {
    r.body.clone()
}

#[test]
fn a_browser_shows_hostile_values_as_text() {
    use kms_core::{ComplianceReport, ComplianceSummary, Finding, FindingStatus, ReportPeriod};
    let hostile = "<script>document.title='owned'</script><img src=x onerror=alert(1)>";
    let report = ComplianceReport {
        generated_at: kms_core::Timestamp::from_unix(1_800_000_000),
        status: FindingStatus::Fail,
        period: ReportPeriod {
            from: kms_core::Timestamp::from_unix(1_799_000_000),
            to: kms_core::Timestamp::from_unix(1_800_000_000),
        },
        summary: ComplianceSummary {
            passed: 0,
            failed: 1,
        },
        findings: vec![Finding {
            id: "lockouts".into(),
            title: format!("Lockouts {hostile}"),
            status: FindingStatus::Fail,
            count: 1,
            limit: 0,
            items: vec![format!("ip:{hostile}")],
            items_truncated: false,
            details: serde_json::Map::from_iter([("note".to_owned(), json!(hostile))]),
        }],
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("hostile.html");
    std::fs::write(&page, kms_server::ops::reports::html(&report)).unwrap();
    let Some((dom, log)) = render_in_chromium(&page, &dir.path().join("chromium")) else {
        return;
    };
    assert!(!dom.contains("<script"), "{dom}");
    assert!(!dom.contains("<img"), "{dom}");
    assert!(!dom.contains("owned</title>"), "{dom}");
    // The values are there, as text.
    assert!(
        dom.contains(
            "&lt;script&gt;document.title='owned'&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
        ),
        "{dom}"
    );
    assert!(!log.contains("Content Security Policy"), "{log}");
}

#[test]
fn stats_and_the_report_work_on_postgresql() {
    use kms_store::testing::{NoPostgres, ScratchDatabase};
    const MASTER_KEY: &str = "a21zLXRlc3QtbWFzdGVyLWtleS0zMi1ieXRlcy0hISE=";
    let database = match ScratchDatabase::create() {
        Ok(database) => database,
        Err(NoPostgres::Skip(notice)) => {
            eprintln!("{notice}");
            return;
        }
        Err(NoPostgres::Fail(message)) => panic!("{message}"),
    };
    let url = database.url();
    let server = Server::start_with(Path::new(url), &[], &[("KMS_MASTER_KEY", MASTER_KEY)]);
    let logs = server.logs();
    let root = logs
        .lines()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| v["root_token"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no root token in the logs: {logs}"));
    let app = create_app(&server, &root, "billing");
    create_token(&server, &root, &app, json!({ "name": "a" }));
    let stats = server.client(&root).stats().unwrap();
    assert_eq!((stats.applications, stats.tokens), (2, 2));
    assert!(
        stats.database_bytes > 1_000_000,
        "pg_database_size: {stats:?}"
    );
    let report = server.client(&root).compliance_report().unwrap();
    let no_expiry = report
        .findings
        .iter()
        .find(|f| f.id == "tokens_without_expiry")
        .unwrap();
    assert_eq!(no_expiry.count, 2);
    let chain = report
        .findings
        .iter()
        .find(|f| f.id == "audit_chain")
        .unwrap();
    assert_eq!(chain.status, "pass");
}
