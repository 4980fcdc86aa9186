//! Conditions on grants over HTTP against the real binary, as "Conditions on grants" of
//! API.md states them: grants with `when` on token creation, `context` on verify, missing
//! data never granting, positioned errors, the views showing the grants, and nothing
//! changed for tokens and requests without them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use common::{call, init, Server};
use serde_json::{json, Value};

fn verify(base: &str, root: &str, body: Value) -> Value {
    let r = call(base, "POST", "/v1/verify", Some(root), Some(&body));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

#[test]
fn conditional_grants_hold_only_while_their_condition_does() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start(&db);
    let base = &server.base;
    for scope in ["billing.read", "billing.write"] {
        let r = call(
            base,
            "POST",
            "/v1/permissions",
            Some(&root),
            Some(&json!({"scope": scope})),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = call(
        base,
        "POST",
        "/v1/roles",
        Some(&root),
        Some(&json!({"name": "support", "permissions": ["billing.write"]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let app = call(
        base,
        "POST",
        "/v1/apps",
        Some(&root),
        Some(&json!({"name": "c"})),
    )
    .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = call(
        base,
        "POST",
        &format!("/v1/apps/{app}/tokens"),
        Some(&root),
        Some(&json!({
            "name": "conditional",
            "scopes": ["app.read"],
            "metadata": {"customer": "acme"},
            "grants": [
                {"scope": "billing.read", "when": "context.region in [\"eu\", \"us\"]"},
                {"role": "support", "when": "principal.metadata.customer == context.owner AND request.ip within \"10.0.0.0/8\""},
                {"scope": "token.read"}
            ]
        })),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    let (id, token) = (
        created["id"].as_str().unwrap().to_owned(),
        created["token"].as_str().unwrap().to_owned(),
    );
    // A grant without `when` is the same as listing it in scopes.
    assert!(
        created["scopes"]
            .as_array()
            .unwrap()
            .contains(&json!("token.read")),
        "{created}"
    );
    assert_eq!(created["grants"].as_array().unwrap().len(), 2, "{created}");
    let shown = call(base, "GET", &format!("/v1/tokens/{id}"), Some(&root), None).json();
    assert_eq!(shown["grants"], created["grants"]);
    assert_eq!(
        shown["grants"][0]["when"],
        "context.region in [\"eu\", \"us\"]"
    );

    // The context decides.
    let eu = verify(
        base,
        &root,
        json!({"token": token, "permissions": "billing.read", "context": {"region": "eu"}}),
    );
    assert_eq!(eu["code"], "VALID", "{eu}");
    assert!(eu["scopes"]
        .as_array()
        .unwrap()
        .contains(&json!("billing.read")));
    let asia = verify(
        base,
        &root,
        json!({"token": token, "permissions": "billing.read", "context": {"region": "asia"}}),
    );
    assert_eq!(asia["code"], "INSUFFICIENT_PERMISSIONS", "{asia}");
    // Missing data never grants; without a query the token is valid, without the scope.
    let none = verify(
        base,
        &root,
        json!({"token": token, "permissions": "billing.read"}),
    );
    assert_eq!(none["code"], "INSUFFICIENT_PERMISSIONS", "{none}");
    let plain = verify(base, &root, json!({"token": token}));
    assert_eq!(plain["code"], "VALID");
    assert!(
        !plain["scopes"]
            .as_array()
            .unwrap()
            .contains(&json!("billing.read")),
        "{plain}"
    );
    // The role's grant needs the metadata to match the context and the address.
    let ok = verify(
        base,
        &root,
        json!({"token": token, "permissions": "billing.write", "ip": "10.1.2.3", "context": {"owner": "acme"}}),
    );
    assert_eq!(ok["code"], "VALID", "{ok}");
    for (ip, owner) in [("10.1.2.3", "other"), ("192.0.2.1", "acme")] {
        let v = verify(
            base,
            &root,
            json!({"token": token, "permissions": "billing.write", "ip": ip, "context": {"owner": owner}}),
        );
        assert_eq!(v["code"], "INSUFFICIENT_PERMISSIONS", "{ip} {owner}: {v}");
    }
    let no_ip = verify(
        base,
        &root,
        json!({"token": token, "permissions": "billing.write", "context": {"owner": "acme"}}),
    );
    assert_eq!(no_ip["code"], "INSUFFICIENT_PERMISSIONS");

    // Bad conditions and contexts: 400 naming the field and the position; nothing made.
    let before = call(
        base,
        "GET",
        &format!("/v1/apps/{app}/tokens"),
        Some(&root),
        None,
    )
    .json();
    let r = call(
        base,
        "POST",
        &format!("/v1/apps/{app}/tokens"),
        Some(&root),
        Some(
            &json!({"name": "bad", "grants": [{"scope": "billing.read", "when": "context.region = \"eu\""}]}),
        ),
    );
    let v = r.assert_error(400, "invalid_request");
    let detail = v["error"]["details"].to_string();
    assert!(
        detail.contains("grants[0].when") && detail.contains("position 15"),
        "{v}"
    );
    for bad in [
        json!([{"scope": "billing.read", "role": "support", "when": "time.hour > 1"}]),
        json!([{"scope": "nope.unknown", "when": "time.hour > 1"}]),
        json!([{"role": "nobody", "when": "time.hour > 1"}]),
        json!([{"scope": "billing.read", "when": "local(\"Mars/Base\").hour == 1"}]),
        json!([{"scope": "billing.read", "extra": 1}]),
    ] {
        let r = call(
            base,
            "POST",
            &format!("/v1/apps/{app}/tokens"),
            Some(&root),
            Some(&json!({"name": "bad", "grants": bad})),
        );
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    for context in [
        json!({"bad-name": 1}),
        json!({"x": {"nested": 1}}),
        json!({"x": null}),
    ] {
        let r = call(
            base,
            "POST",
            "/v1/verify",
            Some(&root),
            Some(&json!({"token": token, "context": context})),
        );
        assert_eq!(r.status, 400, "{context}: {}", r.body);
    }
    let after = call(
        base,
        "GET",
        &format!("/v1/apps/{app}/tokens"),
        Some(&root),
        None,
    )
    .json();
    assert_eq!(
        before["items"].as_array().unwrap().len(),
        after["items"].as_array().unwrap().len()
    );

    // No one hands out what it does not hold, under any condition: a token holding only
    // app.read and token.create cannot grant billing.read conditionally.
    let r = call(
        base,
        "POST",
        &format!("/v1/apps/{app}/tokens"),
        Some(&root),
        Some(&json!({"name": "creator", "scopes": ["token.create", "token.read"]})),
    );
    let creator = r.json()["token"].as_str().unwrap().to_owned();
    let r = call(
        base,
        "POST",
        &format!("/v1/apps/{app}/tokens"),
        Some(&creator),
        Some(
            &json!({"name": "escalate", "grants": [{"scope": "billing.read", "when": "time.hour >= 0"}]}),
        ),
    );
    r.assert_error(403, "forbidden");
    // A permission a conditional grant names cannot be deleted.
    let r = call(
        base,
        "DELETE",
        "/v1/permissions/billing.read",
        Some(&root),
        None,
    );
    assert_eq!(r.status, 409, "{}", r.body);
    // Rotation keeps the grants.
    let r = call(
        base,
        "POST",
        &format!("/v1/tokens/{id}/rotate"),
        Some(&root),
        Some(&json!({"grace_seconds": 0})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["grants"], created["grants"]);
}

#[test]
fn time_conditions_and_named_zones() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start(&db);
    let base = &server.base;
    let app = call(
        base,
        "POST",
        "/v1/apps",
        Some(&root),
        Some(&json!({"name": "t"})),
    )
    .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Conditions that always / never hold, whatever the hour.
    let r = call(
        base,
        "POST",
        &format!("/v1/apps/{app}/tokens"),
        Some(&root),
        Some(&json!({"name": "t", "grants": [
            {"scope": "app.read", "when": "time.hour >= 0 AND local(\"Europe/Berlin\").hour < 24 AND time.date >= \"2000-01-01\""},
            {"scope": "token.read", "when": "time.weekday in [\"none\"] OR NOT time.hour >= 0"}
        ]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let v = verify(
        base,
        &root,
        json!({"token": token, "permissions": "app.read"}),
    );
    assert_eq!(v["code"], "VALID", "{v}");
    let v = verify(
        base,
        &root,
        json!({"token": token, "permissions": "token.read"}),
    );
    assert_eq!(v["code"], "INSUFFICIENT_PERMISSIONS", "{v}");
}

/// Decision logs: one JSON line per decision with the query, the context names (not their
/// values unless asked), the decision and the code; never the token.
#[test]
fn decisions_are_logged_without_secrets_or_context_values() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start_with(
        &db,
        &["--decision-log", "true", "--log-format", "json"],
        &[],
    );
    let base = &server.base;
    let app = call(
        base,
        "POST",
        "/v1/apps",
        Some(&root),
        Some(&json!({"name": "d"})),
    )
    .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = call(
        base,
        "POST",
        &format!("/v1/apps/{app}/tokens"),
        Some(&root),
        Some(
            &json!({"name": "t", "grants": [{"scope": "app.read", "when": "context.region == \"eu-secret-value\""}]}),
        ),
    );
    let token = r.json()["token"].as_str().unwrap().to_owned();
    for region in ["eu-secret-value", "elsewhere"] {
        verify(
            base,
            &root,
            json!({"token": token, "permissions": "app.read", "context": {"region": region}}),
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let decisions = loop {
        let logs = server.logs();
        let lines: Vec<Value> = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["target"] == "kms::decision")
            .collect();
        if lines.len() >= 2 || std::time::Instant::now() > deadline {
            assert!(!logs.contains(&token), "the token is in the logs");
            assert!(
                !logs.contains("eu-secret-value\""),
                "a context value is in the logs"
            );
            break lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    let fields = &decisions[0]["fields"];
    assert_eq!(fields["query"], "app.read", "{fields}");
    assert_eq!(fields["context_keys"], "region");
    assert_eq!(fields["decision"], "allow");
    assert_eq!(fields["code"], "VALID");
    assert_eq!(fields["app_id"], app.as_str());
    assert_eq!(decisions[1]["fields"]["code"], "INSUFFICIENT_PERMISSIONS");
}

/// Reads the JSON lines of `path` until there are `n` of them (or 5 s have passed).
fn file_lines(path: &std::path::Path, n: usize) -> (String, Vec<Value>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return (text, lines);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `--decision-log-file`: the decisions go to that file, one JSON object per line with the
/// log line's fields, instead of the structured log; the file is created with mode 0600
/// and appended to by a later start; context values only with `--decision-log-values`;
/// never the token.
#[test]
fn decisions_are_appended_to_a_file_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let file = dir.path().join("decisions.jsonl");
    let (root, _) = init(&db);
    let path = file.to_str().unwrap();
    let mut server = Server::start_with(
        &db,
        &["--decision-log-file", path, "--log-format", "json"],
        &[],
    );
    let base = server.base.clone();
    let app = call(
        &base,
        "POST",
        "/v1/apps",
        Some(&root),
        Some(&json!({"name": "d"})),
    )
    .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = call(
        &base,
        "POST",
        &format!("/v1/apps/{app}/tokens"),
        Some(&root),
        Some(
            &json!({"name": "t", "grants": [{"scope": "app.read", "when": "context.region == \"eu-secret-value\""}]}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    for (region, code) in [
        ("eu-secret-value", "VALID"),
        ("elsewhere", "INSUFFICIENT_PERMISSIONS"),
    ] {
        let v = verify(
            &base,
            &root,
            json!({"token": token, "permissions": "app.read",
                "context": {"region": region, "tenant": "acme-secret"}}),
        );
        assert_eq!(v["code"], code, "{v}");
    }
    let (text, lines) = file_lines(&file, 2);
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        !text.contains(&token),
        "the token is in the decision log file"
    );
    assert!(
        !text.contains("eu-secret-value") && !text.contains("acme-secret"),
        "a context value is in the decision log file: {text}"
    );
    let first = &lines[0];
    assert_eq!(first["query"], "app.read", "{first}");
    assert_eq!(first["context_keys"], "region,tenant", "{first}");
    assert_eq!(first["context"], "", "{first}");
    assert_eq!(first["decision"], "allow");
    assert_eq!(first["code"], "VALID");
    assert_eq!(first["app_id"], app.as_str());
    assert_eq!(first["caller_app"], "app_system");
    assert!(
        first["token_id"].as_str().unwrap().starts_with("tok_"),
        "{first}"
    );
    assert!(
        first["timestamp"].as_str().unwrap().ends_with('Z'),
        "{first}"
    );
    assert_eq!(lines[1]["decision"], "deny");
    assert_eq!(lines[1]["code"], "INSUFFICIENT_PERMISSIONS");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the file was created with mode {mode:o}"
        );
    }
    // The file instead of the structured log, not both.
    let logs = server.logs();
    assert!(!logs.contains("kms::decision"), "{logs}");
    assert!(!logs.contains(&token), "the token is in the logs");
    server.stop();

    // A second start appends; with --decision-log-values the values are there too.
    let server = Server::start_with(
        &db,
        &["--decision-log-file", path, "--decision-log-values", "true"],
        &[],
    );
    verify(
        &server.base,
        &root,
        json!({"token": token, "permissions": "app.read", "context": {"region": "eu-secret-value"}}),
    );
    let (text, lines) = file_lines(&file, 3);
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], *first, "the earlier records are kept");
    let context: Value = serde_json::from_str(lines[2]["context"].as_str().unwrap()).unwrap();
    assert_eq!(context, json!({"region": "eu-secret-value"}));
    assert!(
        !text.contains(&token),
        "the token is in the decision log file"
    );
}

/// A decision log file that cannot be opened stops the start, naming the setting.
#[test]
fn an_unwritable_decision_log_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    init(&db);
    let missing = dir.path().join("no/such/dir/decisions.jsonl");
    let mut child = common::kms()
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .arg("--decision-log-file")
        .arg(&missing)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("kms serve started with a decision log file it cannot open");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("decision_log_file"), "{stderr}");
    assert!(!missing.exists());
}

/// A role's own conditional grants (`grants` on role creation): they hold for every token
/// with the role, through inheritance, and through a conditional grant of the role (both
/// conditions must hold); the views show them.
#[test]
fn roles_carry_conditional_grants() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start(&db);
    let base = &server.base;
    let r = call(
        base,
        "POST",
        "/v1/permissions",
        Some(&root),
        Some(&json!({"scope": "reports.read"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = call(
        base,
        "POST",
        "/v1/roles",
        Some(&root),
        Some(&json!({"name": "analyst", "permissions": ["app.read"],
            "grants": [{"scope": "reports.read", "when": "context.region == \"eu\""}]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["grants"][0]["scope"], "reports.read", "{}", r.body);
    let r = call(
        base,
        "POST",
        "/v1/roles",
        Some(&root),
        Some(&json!({"name": "lead", "inherits": ["analyst"]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let shown = call(base, "GET", "/v1/roles/analyst", Some(&root), None).json();
    assert_eq!(
        shown["grants"][0]["when"], "context.region == \"eu\"",
        "{shown}"
    );
    // A role's grant must name a scope, with a condition.
    for bad in [
        json!([{"role": "lead", "when": "time.hour > 0"}]),
        json!([{"scope": "reports.read"}]),
    ] {
        let r = call(
            base,
            "POST",
            "/v1/roles",
            Some(&root),
            Some(&json!({"name": "bad", "grants": bad})),
        );
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    let app = call(
        base,
        "POST",
        "/v1/apps",
        Some(&root),
        Some(&json!({"name": "r"})),
    )
    .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let make = |body: Value| {
        let r = call(
            base,
            "POST",
            &format!("/v1/apps/{app}/tokens"),
            Some(&root),
            Some(&body),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["token"].as_str().unwrap().to_owned()
    };
    let held = make(json!({"name": "held", "roles": ["lead"]}));
    let conditional = make(
        json!({"name": "cond", "grants": [{"role": "analyst", "when": "context.team == \"data\""}]}),
    );
    let check = |token: &str, context: Value| {
        verify(
            base,
            &root,
            json!({"token": token, "permissions": "reports.read", "context": context}),
        )["code"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(check(&held, json!({"region": "eu"})), "VALID");
    assert_eq!(
        check(&held, json!({"region": "us"})),
        "INSUFFICIENT_PERMISSIONS"
    );
    assert_eq!(
        check(&conditional, json!({"region": "eu", "team": "data"})),
        "VALID"
    );
    assert_eq!(
        check(&conditional, json!({"region": "eu", "team": "ops"})),
        "INSUFFICIENT_PERMISSIONS"
    );
    assert_eq!(
        check(&conditional, json!({"team": "data"})),
        "INSUFFICIENT_PERMISSIONS"
    );
    // A change of the role's grants reaches cached keys at once.
    let r = call(
        base,
        "PATCH",
        "/v1/roles/analyst",
        Some(&root),
        Some(&json!({"grants": []})),
    );
    assert!(r.status < 300, "{}", r.body);
    assert_eq!(
        check(&held, json!({"region": "eu"})),
        "INSUFFICIENT_PERMISSIONS"
    );
    // The scope a role's grant named can be deleted only once no role names it.
    let r = call(
        base,
        "DELETE",
        "/v1/permissions/reports.read",
        Some(&root),
        None,
    );
    assert!(r.status == 204, "{}", r.body);
}

/// PATCH replaces a token's conditional grants.
#[test]
fn patch_replaces_the_conditional_grants() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start(&db);
    let base = &server.base;
    let app = call(
        base,
        "POST",
        "/v1/apps",
        Some(&root),
        Some(&json!({"name": "p"})),
    )
    .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = call(
        base,
        "POST",
        &format!("/v1/apps/{app}/tokens"),
        Some(&root),
        Some(&json!({"name": "t"})),
    );
    let v = r.json();
    let (id, token) = (
        v["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    );
    let code = |ctx: Value| {
        verify(
            base,
            &root,
            json!({"token": token, "permissions": "app.read", "context": ctx}),
        )["code"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(code(json!({"tier": "gold"})), "INSUFFICIENT_PERMISSIONS"); // cached now
    let r = call(
        base,
        "PATCH",
        &format!("/v1/tokens/{id}"),
        Some(&root),
        Some(&json!({"grants": [{"scope": "app.read", "when": "context.tier == \"gold\""}]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["grants"][0]["scope"], "app.read");
    assert_eq!(code(json!({"tier": "gold"})), "VALID");
    assert_eq!(code(json!({"tier": "tin"})), "INSUFFICIENT_PERMISSIONS");
    let r = call(
        base,
        "PATCH",
        &format!("/v1/tokens/{id}"),
        Some(&root),
        Some(&json!({"grants": []})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json().get("grants").is_none());
    assert_eq!(code(json!({"tier": "gold"})), "INSUFFICIENT_PERMISSIONS");
}
