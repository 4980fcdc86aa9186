//! Bulk operations over HTTP against the real binary: many tokens created in one call, all
//! or nothing, and revoked by ids or by a filter, each audited as one change.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use common::{call, init, Server};
use serde_json::{json, Value};

fn code(base: &str, root: &str, token: &str) -> String {
    let r = call(
        base,
        "POST",
        "/v1/verify",
        Some(root),
        Some(&json!({ "token": token })),
    );
    r.json()["code"].as_str().unwrap().to_owned()
}

#[test]
fn tokens_are_created_and_revoked_in_bulk_all_or_nothing() {
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
        Some(&json!({"name": "bulk"})),
    )
    .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tokens_path = format!("/v1/apps/{app}/tokens");
    let bulk_path = format!("{tokens_path}/bulk");
    let count = |base: &str| {
        call(
            base,
            "GET",
            &format!("{tokens_path}?limit=1000"),
            Some(&root),
            None,
        )
        .json()["items"]
            .as_array()
            .unwrap()
            .len()
    };
    // One bad request in the batch: nothing is created, and the error names it.
    let bad = json!({"tokens": [
        {"name": "ci-1", "scopes": ["app.read"]},
        {"name": "ci-2", "scopes": ["app.read"]},
        {"name": "ci-3", "scopes": ["no.such.scope"]},
    ]});
    let r = call(base, "POST", &bulk_path, Some(&root), Some(&bad));
    let v = r.assert_error(400, "invalid_request");
    assert!(
        v["error"]["details"]
            .to_string()
            .contains("tokens[2].scopes[0]"),
        "{v}"
    );
    assert_eq!(count(base), 0);
    for body in [
        json!({"tokens": []}),
        json!({"tokens": [{"name": "x"}], "extra": 1}),
    ] {
        let r = call(base, "POST", &bulk_path, Some(&root), Some(&body));
        assert_eq!(r.status, 400, "{body}: {}", r.body);
    }
    // Twenty tokens at once.
    let many: Vec<Value> = (0..20)
        .map(|i| {
            let team = if i % 2 == 0 { "red" } else { "blue" };
            json!({"name": format!("ci-{i}"), "scopes": ["app.read"], "metadata": {"team": team}})
        })
        .collect();
    let r = call(
        base,
        "POST",
        &bulk_path,
        Some(&root),
        Some(&json!({"tokens": many})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let items = r.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 20);
    let plaintexts: Vec<String> = items
        .iter()
        .map(|t| t["token"].as_str().unwrap().to_owned())
        .collect();
    let ids: Vec<String> = items
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(items[3]["name"], "ci-3");
    for t in &plaintexts {
        assert_eq!(code(base, &root, t), "VALID");
    }
    assert_eq!(count(base), 20);
    // Revoke by filter: the red team (10 tokens).
    let r = call(
        base,
        "POST",
        "/v1/tokens/revoke",
        Some(&root),
        Some(
            &json!({"filter": {"app_id": app, "name_prefix": "ci-", "metadata": {"team": "red"}}}),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["revoked"], 10);
    for (i, t) in plaintexts.iter().enumerate() {
        let want = if i % 2 == 0 { "REVOKED" } else { "VALID" };
        assert_eq!(code(base, &root, t), want, "token {i}");
    }
    // Revoke by ids: one already revoked is not counted again; an unknown id refuses all.
    let r = call(
        base,
        "POST",
        "/v1/tokens/revoke",
        Some(&root),
        Some(&json!({"ids": [ids[1], ids[3], "tok_doesnotexist00000"]})),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(code(base, &root, &plaintexts[1]), "VALID");
    let r = call(
        base,
        "POST",
        "/v1/tokens/revoke",
        Some(&root),
        Some(&json!({"ids": [ids[0], ids[1], ids[3]]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["revoked"], 2);
    assert_eq!(code(base, &root, &plaintexts[3]), "REVOKED");
    let r = call(
        base,
        "POST",
        "/v1/tokens/revoke",
        Some(&root),
        Some(&json!({"ids": [ids[5]], "filter": {"app_id": app}})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // Each bulk call is one audit event naming every token.
    let audit = call(base, "GET", "/v1/audit?limit=50", Some(&root), None).json();
    let events = audit["items"].as_array().unwrap();
    let created = events
        .iter()
        .filter(|e| e["action"] == "token.bulk_create")
        .count();
    let revoked = events
        .iter()
        .filter(|e| e["action"] == "token.bulk_revoke")
        .count();
    assert_eq!((created, revoked), (1, 2), "{audit}");
    assert!(!events.iter().any(|e| e["action"] == "token.create"));
    assert!(!audit.to_string().contains(&plaintexts[0]));
    let chain = call(base, "GET", "/v1/audit/verify", Some(&root), None).json();
    assert_eq!(chain["ok"], true);
}

/// The CLI counterparts read CSV or JSON and refuse a bad file whole.
#[test]
fn the_cli_creates_from_csv_and_json_and_revokes_many() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    init(&db);
    let csv = dir.path().join("tokens.csv");
    std::fs::write(
        &csv,
        "name,scopes,roles\nci-a,app.read token.read,\nci-b,app.read,\n",
    )
    .unwrap();
    let out = common::run(
        &db,
        &[
            "token",
            "create-many",
            "--app",
            "app_system",
            "--file",
            csv.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let v = out.json();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["scopes"], json!(["app.read", "token.read"]));
    let ids: Vec<&str> = items.iter().map(|t| t["id"].as_str().unwrap()).collect();
    let bad = dir.path().join("tokens.json");
    std::fs::write(
        &bad,
        r#"[{"name": "ok"}, {"name": "bad", "scopes": ["nope.nope"]}]"#,
    )
    .unwrap();
    let out = common::run(
        &db,
        &[
            "token",
            "create-many",
            "--app",
            "app_system",
            "--file",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("tokens[1].scopes[0]"), "{}", out.stderr);
    let out = common::run(&db, &["token", "revoke-many", "--ids", &ids.join(",")]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.json()["revoked"], 2);
}

/// Whether `text` carries progress output: carriage returns, terminal escapes, or the
/// progress messages of the bulk commands.
fn has_progress(text: &str) -> bool {
    text.contains('\r')
        || text.contains('\u{1b}')
        || [
            "kms: reading",
            "kms: checking",
            "kms: creating",
            "kms: created",
            "kms: revoking",
            "kms: revoked",
        ]
        .iter()
        .any(|m| text.contains(m))
}

/// Off a terminal (stderr a pipe, as in every script) the bulk commands show no progress,
/// and stdout is the JSON answer alone, one line.
#[test]
fn the_bulk_cli_commands_show_no_progress_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    init(&db);
    let list = dir.path().join("tokens.json");
    std::fs::write(
        &list,
        r#"[{"name": "p-1"}, {"name": "p-2", "scopes": ["app.read"]}, {"name": "p-3"}]"#,
    )
    .unwrap();
    let args = [
        "token",
        "create-many",
        "--app",
        "app_system",
        "--file",
        list.to_str().unwrap(),
    ];
    let out = common::run(&db, &args);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        !has_progress(&out.stderr),
        "progress off a terminal: {:?}",
        out.stderr
    );
    assert!(
        !has_progress(&out.stdout),
        "progress on stdout: {:?}",
        out.stdout
    );
    assert_eq!(out.stdout.lines().count(), 1, "{:?}", out.stdout);
    assert!(out.stdout.ends_with('\n'));
    let created = out.json();
    let ids: Vec<&str> = created["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{created}");
    let out = common::run(&db, &["token", "revoke-many", "--ids", &ids.join(",")]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        !has_progress(&out.stderr),
        "progress off a terminal: {:?}",
        out.stderr
    );
    assert_eq!(out.stdout.lines().count(), 1, "{:?}", out.stdout);
    assert_eq!(out.json()["revoked"], 3);
}

/// On a terminal (stderr a pseudo-terminal, through `script`) the bulk commands draw their
/// progress on stderr, and stdout (here a file) still gets the JSON answer alone.
#[test]
fn on_a_terminal_the_bulk_cli_commands_show_progress_on_stderr_only() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        common::cannot_run("`script` (util-linux) gives the command a terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    init(&db);
    let list = dir.path().join("tokens.csv");
    std::fs::write(&list, "name,scopes,roles\nt-1,app.read,\nt-2,,\n").unwrap();
    let quote =
        |p: &std::path::Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let run_on_terminal = |command: String, answer: &std::path::Path| {
        let mut cmd = std::process::Command::new("script");
        for (k, _) in std::env::vars() {
            if k.starts_with("KMS_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .env("KMS_INSECURE_FAST_HASH", "1")
            .env("TERM", "xterm")
            .args(["-q", "-e", "-c"])
            .arg(format!("{command} > {}", quote(answer)))
            .arg("/dev/null")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let screen = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{screen}");
        let answer = std::fs::read_to_string(answer).unwrap();
        (screen, answer)
    };
    let bin = quote(std::path::Path::new(common::kms_bin()));
    let answer_file = dir.path().join("created.json");
    let (screen, answer) = run_on_terminal(
        format!(
            "{bin} token create-many --app app_system --file {} --db {}",
            quote(&list),
            quote(&db)
        ),
        &answer_file,
    );
    assert!(screen.contains("kms: created 2 tokens"), "{screen:?}");
    assert!(!has_progress(&answer), "progress on stdout: {answer:?}");
    assert_eq!(answer.lines().count(), 1, "{answer:?}");
    let created: Value = serde_json::from_str(answer.trim()).unwrap();
    let ids: Vec<&str> = created["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{created}");
    let answer_file = dir.path().join("revoked.json");
    let (screen, answer) = run_on_terminal(
        format!(
            "{bin} token revoke-many --ids {} --db {}",
            ids.join(","),
            quote(&db)
        ),
        &answer_file,
    );
    assert!(screen.contains("kms: revoked 2 tokens"), "{screen:?}");
    assert!(!has_progress(&answer), "progress on stdout: {answer:?}");
    let revoked: Value = serde_json::from_str(answer.trim()).unwrap();
    assert_eq!(revoked["revoked"], 2, "{revoked}");
}

/// Roles granted and withdrawn on many tokens, and permissions deleted together, each all
/// or nothing and one audit event.
#[test]
fn roles_change_on_many_tokens_and_permissions_go_together() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start(&db);
    let base = &server.base;
    for body in [
        json!({"scope": "docs.read"}),
        json!({"scope": "docs.write", "implies": ["docs.read"]}),
    ] {
        let r = call(base, "POST", "/v1/permissions", Some(&root), Some(&body));
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = call(
        base,
        "POST",
        "/v1/roles",
        Some(&root),
        Some(&json!({"name": "reader", "permissions": ["docs.read"]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let app = call(
        base,
        "POST",
        "/v1/apps",
        Some(&root),
        Some(&json!({"name": "roles"})),
    )
    .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tokens: Vec<Value> = (0..4)
        .map(|i| json!({"name": format!("svc-{i}")}))
        .collect();
    let made = call(
        base,
        "POST",
        &format!("/v1/apps/{app}/tokens/bulk"),
        Some(&root),
        Some(&json!({"tokens": tokens})),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let plaintexts: Vec<String> = made.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token"].as_str().unwrap().to_owned())
        .collect();
    let can_read = |t: &str| {
        call(
            base,
            "POST",
            "/v1/verify",
            Some(&root),
            Some(&json!({"token": t, "permissions": "docs.read"})),
        )
        .json()["code"]
            == "VALID"
    };
    assert!(!can_read(&plaintexts[0]));
    // Unknown role: nothing changes.
    let r = call(
        base,
        "POST",
        "/v1/tokens/roles",
        Some(&root),
        Some(&json!({"filter": {"app_id": app}, "grant": ["nobody"]})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = call(
        base,
        "POST",
        "/v1/tokens/roles",
        Some(&root),
        Some(&json!({"filter": {"app_id": app, "name_prefix": "svc-"}, "grant": ["reader"]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["changed"], 4);
    assert!(
        plaintexts.iter().all(|t| can_read(t)),
        "granted, and cached keys heard it"
    );
    // While tokens hold the role, its permission cannot go; withdraw it first.
    let r = call(
        base,
        "POST",
        "/v1/permissions/bulk-delete",
        Some(&root),
        Some(&json!({"scopes": ["docs.read", "docs.write"]})),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    let r = call(
        base,
        "POST",
        "/v1/tokens/roles",
        Some(&root),
        Some(&json!({"filter": {"app_id": app}, "withdraw": ["reader"]})),
    );
    assert_eq!(r.json()["changed"], 4, "{}", r.body);
    assert!(!can_read(&plaintexts[2]));
    let r = call(base, "DELETE", "/v1/roles/reader", Some(&root), None);
    assert_eq!(r.status, 204, "{}", r.body);
    // docs.write implies docs.read: alone, docs.read cannot go; together they can.
    let r = call(
        base,
        "POST",
        "/v1/permissions/bulk-delete",
        Some(&root),
        Some(&json!({"scopes": ["docs.read"]})),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    let r = call(
        base,
        "POST",
        "/v1/permissions/bulk-delete",
        Some(&root),
        Some(&json!({"scopes": ["docs.read", "nope.nope"]})),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = call(
        base,
        "POST",
        "/v1/permissions/bulk-delete",
        Some(&root),
        Some(&json!({"scopes": ["docs.read", "docs.write"]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["deleted"], 2);
    let left = call(base, "GET", "/v1/permissions?limit=1000", Some(&root), None).body;
    assert!(!left.contains("docs."), "{left}");
    let audit = call(base, "GET", "/v1/audit?limit=50", Some(&root), None).json();
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "token.bulk_roles").count(),
        2
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "permission.bulk_delete")
            .count(),
        1
    );
}
