//! Usage analytics over the real binary (issue 17, ADR 0015): verifications counted per
//! token and application by outcome code, flushed to the database, read back as usage
//! reports (hour and day buckets, totals, trend, cost), tenant-scoped, with clear 400s for
//! bad periods, `last_used_at` on tokens, counts that survive a graceful restart, the
//! `kms usage` commands, and (with PostgreSQL) two servers summing into one database.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::schema::ApiSchema;
use common::{call, init, run, Server};
use serde_json::{json, Value};

/// Polls `path` until `done` holds for its answer (the flush runs every second here), or
/// fails after 60 s with the last answer.
fn until(server: &Server, token: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = call(&server.base, "GET", path, Some(token), None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let v = r.json();
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{path} never got there: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn created(server: &Server, token: &str, path: &str, body: Value) -> Value {
    let r = call(&server.base, "POST", path, Some(token), Some(&body));
    assert_eq!(r.status, 201, "{path}: {}", r.body);
    r.json()
}

fn verify(server: &Server, root: &str, token: &str, permissions: Option<&str>) -> String {
    let mut body = json!({ "token": token });
    if let Some(p) = permissions {
        body["permissions"] = json!(p);
    }
    let r = call(&server.base, "POST", "/v1/verify", Some(root), Some(&body));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["code"].as_str().unwrap().to_owned()
}

fn total(v: &Value) -> u64 {
    v["totals"]["total"].as_u64().unwrap()
}

/// The state the tests share: an application with two tokens, one revoked.
struct Tenant {
    app: String,
    live_id: String,
    live: String,
    revoked_id: String,
    revoked: String,
}

fn tenant(server: &Server, root: &str, name: &str) -> Tenant {
    let app = created(server, root, "/v1/apps", json!({ "name": name }));
    let app = app["id"].as_str().unwrap().to_owned();
    let tokens = format!("/v1/apps/{app}/tokens");
    let live = created(
        server,
        root,
        &tokens,
        json!({"name": "live", "scopes": ["app.read"]}),
    );
    let revoked = created(
        server,
        root,
        &tokens,
        json!({"name": "old", "scopes": ["app.read"]}),
    );
    let revoked_id = revoked["id"].as_str().unwrap().to_owned();
    let r = call(
        &server.base,
        "POST",
        &format!("/v1/tokens/{revoked_id}/revoke"),
        Some(root),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    Tenant {
        app,
        live_id: live["id"].as_str().unwrap().to_owned(),
        live: live["token"].as_str().unwrap().to_owned(),
        revoked_id,
        revoked: revoked["token"].as_str().unwrap().to_owned(),
    }
}

#[test]
fn verifications_are_counted_by_code_and_reported_per_application_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start_with(&db, &["--usage-flush-interval", "1s"], &[]);
    let schema = ApiSchema::committed();
    let t = tenant(&server, &root, "metered");

    for _ in 0..5 {
        assert_eq!(verify(&server, &root, &t.live, Some("app.read")), "VALID");
    }
    for _ in 0..2 {
        assert_eq!(
            verify(&server, &root, &t.live, Some("app.write")),
            "INSUFFICIENT_PERMISSIONS"
        );
    }
    for _ in 0..3 {
        assert_eq!(verify(&server, &root, &t.revoked, None), "REVOKED");
    }
    // Verdicts that name no key of the application are counted nowhere.
    assert_eq!(verify(&server, &root, "garbage", None), "MALFORMED");

    let app_usage = format!("/v1/apps/{}/usage", t.app);
    let v = until(&server, &root, &app_usage, |v| total(v) >= 10);
    assert_eq!(v["granularity"], "hour");
    assert_eq!(
        v["totals"],
        json!({"total": 10, "by_code": {"VALID": 5, "INSUFFICIENT_PERMISSIONS": 2, "REVOKED": 3}})
    );
    // 24 hours back from now, in whole hours: 24 or 25 buckets, empty ones included.
    let series = v["series"].as_array().unwrap();
    assert!((24..=25).contains(&series.len()), "{}", series.len());
    let summed: u64 = series.iter().map(|b| b["total"].as_u64().unwrap()).sum();
    assert_eq!(summed, 10);
    let last = series.last().unwrap();
    assert_eq!(last["total"], 10, "everything happened this hour: {v}");
    assert!(series[0]["start"].as_str().unwrap().ends_with(":00:00Z"));
    assert_eq!(series[0]["total"], 0);
    assert_eq!(series[0]["by_code"], json!({}));
    assert_eq!(v["trend"]["previous_period_total"], 0);
    assert_eq!(
        v["trend"]["change_ratio"],
        Value::Null,
        "nothing before: no ratio"
    );
    assert!(v.get("cost").is_none(), "no price, no cost: {v}");
    let r = call(&server.base, "GET", &app_usage, Some(&root), None);
    schema.check("get", "/v1/apps/{app_id}/usage", 200, &r);

    let token_usage = format!("/v1/tokens/{}/usage", t.live_id);
    let r = call(&server.base, "GET", &token_usage, Some(&root), None);
    schema.check("get", "/v1/tokens/{id}/usage", 200, &r);
    assert_eq!(
        r.json()["totals"],
        json!({"total": 7, "by_code": {"VALID": 5, "INSUFFICIENT_PERMISSIONS": 2}})
    );
    let r = call(
        &server.base,
        "GET",
        &format!("/v1/tokens/{}/usage", t.revoked_id),
        Some(&root),
        None,
    );
    assert_eq!(
        r.json()["totals"],
        json!({"total": 3, "by_code": {"REVOKED": 3}})
    );

    // Day buckets: the last 30 days in whole days.
    let r = call(
        &server.base,
        "GET",
        &format!("{app_usage}?granularity=day"),
        Some(&root),
        None,
    );
    let days = r.json();
    assert_eq!(days["granularity"], "day");
    let series = days["series"].as_array().unwrap();
    assert!((30..=31).contains(&series.len()), "{}", series.len());
    assert!(series[0]["start"].as_str().unwrap().ends_with("T00:00:00Z"));
    assert_eq!(series.last().unwrap()["total"], 10);
    assert_eq!(days["totals"]["total"], 10);

    // The trend: the hour after this one against this one (all of the counts).
    let this_hour = v["series"].as_array().unwrap().last().unwrap()["start"]
        .as_str()
        .unwrap()
        .to_owned();
    let next_hour = kms_core::Timestamp::parse_rfc3339(&this_hour)
        .unwrap()
        .plus_secs(3600);
    let later = format!(
        "{app_usage}?from={}&to={}",
        next_hour.to_rfc3339(),
        next_hour.plus_secs(3600).to_rfc3339()
    );
    let v = call(&server.base, "GET", &later, Some(&root), None).json();
    assert_eq!(v["totals"]["total"], 0);
    assert_eq!(v["series"].as_array().unwrap().len(), 1);
    assert_eq!(v["trend"]["previous_period_total"], 10);
    assert_eq!(v["trend"]["change_ratio"], -1.0);

    // A price per thousand valid verifications: the cost of the period, exact.
    let r = call(
        &server.base,
        "PATCH",
        &format!("/v1/apps/{}", t.app),
        Some(&root),
        Some(&json!({"usage_price": {"per_thousand": "0.40", "currency": "EUR"}})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    schema.check("patch", "/v1/apps/{id}", 200, &r);
    assert_eq!(
        r.json()["usage_price"],
        json!({"per_thousand": "0.40", "currency": "EUR"})
    );
    let v = call(&server.base, "GET", &app_usage, Some(&root), None).json();
    assert_eq!(
        v["cost"],
        json!({"billable_units": 5, "amount": "0.002", "currency": "EUR"})
    );
    for bad in [
        json!({"usage_price": {"per_thousand": "0.1234567", "currency": "EUR"}}),
        json!({"usage_price": {"per_thousand": "-1", "currency": "EUR"}}),
        json!({"usage_price": {"per_thousand": "1", "currency": "euro"}}),
        json!({"usage_price": {"per_thousand": 0.4, "currency": "EUR"}}),
    ] {
        let r = call(
            &server.base,
            "PATCH",
            &format!("/v1/apps/{}", t.app),
            Some(&root),
            Some(&bad),
        );
        r.assert_error(400, "invalid_request");
    }
    let r = call(
        &server.base,
        "PATCH",
        &format!("/v1/apps/{}", t.app),
        Some(&root),
        Some(&json!({"usage_price": null})),
    );
    assert!(r.json().get("usage_price").is_none(), "{}", r.body);
    let v = call(&server.base, "GET", &app_usage, Some(&root), None).json();
    assert!(v.get("cost").is_none());

    // last_used_at: set (to the minute) on the key used, null on the one never valid.
    let live = call(
        &server.base,
        "GET",
        &format!("/v1/tokens/{}", t.live_id),
        Some(&root),
        None,
    )
    .json();
    let used = live["last_used_at"].as_str().unwrap();
    assert!(used.ends_with(":00Z"), "{used}");
    let revoked = call(
        &server.base,
        "GET",
        &format!("/v1/tokens/{}", t.revoked_id),
        Some(&root),
        None,
    )
    .json();
    assert_eq!(revoked["last_used_at"], Value::Null);

    // Bad periods: a clear 400 naming the parameter.
    for (query, field) in [
        ("granularity=week", "granularity"),
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", "from"),
        ("from=2026-12-01T00:00:00Z&to=2026-12-01T00:00:00Z", "from"),
        ("from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("colour=blue", "query"),
    ] {
        let path = format!("{app_usage}?{query}");
        let r = call(&server.base, "GET", &path, Some(&root), None);
        let err = r.assert_error(400, "invalid_request");
        assert!(err.to_string().contains(field), "{query}: {err}");
        schema.check("get", "/v1/apps/{app_id}/usage", 400, &r);
        let r = call(
            &server.base,
            "GET",
            &format!("{token_usage}?{query}"),
            Some(&root),
            None,
        );
        r.assert_error(400, "invalid_request");
    }

    // Tenants: another application's caller sees neither the application nor its tokens;
    // a caller of the application without the scope is refused.
    let other = tenant(&server, &root, "other");
    let outsider = created(
        &server,
        &root,
        &format!("/v1/apps/{}/tokens", other.app),
        json!({"name": "reader", "scopes": ["app.read", "token.read"]}),
    );
    let outsider = outsider["token"].as_str().unwrap();
    let r = call(&server.base, "GET", &app_usage, Some(outsider), None);
    r.assert_error(404, "not_found");
    let r = call(&server.base, "GET", &token_usage, Some(outsider), None);
    r.assert_error(404, "not_found");
    schema.check("get", "/v1/tokens/{id}/usage", 404, &r);
    let own = call(
        &server.base,
        "GET",
        &format!("/v1/apps/{}/usage", other.app),
        Some(outsider),
        None,
    );
    assert_eq!(own.status, 200, "{}", own.body);
    assert_eq!(total(&own.json()), 0);
    let bare = created(
        &server,
        &root,
        &format!("/v1/apps/{}/tokens", t.app),
        json!({"name": "bare", "scopes": []}),
    );
    let bare = bare["token"].as_str().unwrap();
    let r = call(&server.base, "GET", &app_usage, Some(bare), None);
    r.assert_error(403, "forbidden");
    let r = call(&server.base, "GET", &token_usage, Some(bare), None);
    r.assert_error(403, "forbidden");
    let r = call(
        &server.base,
        "GET",
        "/v1/tokens/tok_nope/usage",
        Some(&root),
        None,
    );
    r.assert_error(404, "not_found");
}

#[test]
fn counts_survive_a_graceful_restart_and_counting_can_be_off() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    // A flush interval far longer than the test: only the shutdown flush writes.
    let long = ["--usage-flush-interval", "1h"];
    let mut server = Server::start_with(&db, &long, &[]);
    let t = tenant(&server, &root, "restarted");
    for _ in 0..4 {
        assert_eq!(verify(&server, &root, &t.live, None), "VALID");
    }
    assert_eq!(verify(&server, &root, &t.revoked, None), "REVOKED");
    let app_usage = format!("/v1/apps/{}/usage", t.app);
    let before = call(&server.base, "GET", &app_usage, Some(&root), None).json();
    assert_eq!(total(&before), 0, "nothing flushed yet: {before}");
    assert!(server.stop().success(), "{}", server.logs());

    let mut server = Server::start_with(&db, &long, &[]);
    let after = call(&server.base, "GET", &app_usage, Some(&root), None).json();
    assert_eq!(
        after["totals"],
        json!({"total": 5, "by_code": {"VALID": 4, "REVOKED": 1}}),
        "the shutdown flush wrote them"
    );
    let live = call(
        &server.base,
        "GET",
        &format!("/v1/tokens/{}", t.live_id),
        Some(&root),
        None,
    )
    .json();
    assert!(live["last_used_at"].is_string(), "{live}");
    assert!(server.stop().success());

    // The same numbers from the command line.
    let out = run(&db, &["usage", "app", &t.app]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.json()["totals"], after["totals"]);
    let out = run(&db, &["usage", "token", &t.live_id, "--granularity", "day"]);
    assert!(out.status.success(), "{}", out.stderr);
    let v = out.json();
    assert_eq!(v["granularity"], "day");
    assert_eq!(v["totals"], json!({"total": 4, "by_code": {"VALID": 4}}));
    let out = run(&db, &["usage", "app", &t.app, "--granularity", "week"]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("granularity"), "{}", out.stderr);
    let out = run(&db, &["usage", "token", "tok_nope"]);
    assert!(!out.status.success());

    // Off: nothing is counted, nothing moves.
    let mut server = Server::start_with(&db, &["--usage-counting", "false"], &[]);
    for _ in 0..3 {
        assert_eq!(verify(&server, &root, &t.live, None), "VALID");
    }
    assert!(server.stop().success());
    let out = run(&db, &["usage", "app", &t.app]);
    assert_eq!(out.json()["totals"]["total"], 5);
}

/// Two servers on one PostgreSQL database (`KMS_TEST_POSTGRES_URL`; skipped without one
/// outside CI), each verifying: the report on either counts every verification of both.
#[test]
fn two_servers_on_one_postgres_database_sum_their_counts() {
    let database = match kms_store::testing::ScratchDatabase::create() {
        Ok(database) => database,
        Err(kms_store::testing::NoPostgres::Skip(notice)) => return eprintln!("{notice}"),
        Err(kms_store::testing::NoPostgres::Fail(message)) => panic!("{message}"),
    };
    let db = Path::new(database.url());
    let key = [(
        "KMS_MASTER_KEY",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    )];
    let flags = ["--usage-flush-interval", "1s", "--rate-limit-per-ip", "0"];
    // The first initialises the database and prints the root token once.
    let one = Server::start_with(db, &flags, &key);
    let root = one
        .logs()
        .lines()
        .find(|l| l.contains("\"root_token\""))
        .map(|l| serde_json::from_str::<Value>(l.trim()).unwrap())
        .and_then(|v| v["root_token"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no root token in {}", one.logs()));
    let two = Server::start_with(db, &flags, &key);
    let t = tenant(&one, &root, "shared");
    for _ in 0..6 {
        assert_eq!(verify(&one, &root, &t.live, None), "VALID");
    }
    for _ in 0..4 {
        assert_eq!(verify(&two, &root, &t.live, None), "VALID");
    }
    assert_eq!(verify(&two, &root, &t.revoked, None), "REVOKED");
    let path = format!("/v1/apps/{}/usage", t.app);
    for server in [&one, &two] {
        let v = until(server, &root, &path, |v| total(v) >= 11);
        assert_eq!(
            v["totals"],
            json!({"total": 11, "by_code": {"VALID": 10, "REVOKED": 1}})
        );
    }
}
