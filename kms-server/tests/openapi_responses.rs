//! Real responses match the committed OpenAPI document: drives the real binary through
//! every documented operation, successes and errors (400, 401, 403, 404, 409), and
//! validates each body against the schema `docs/openapi.json` gives for its method, path
//! and status.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use common::schema::ApiSchema;
use common::{call, init, raw, Raw, Server};
use serde_json::{json, Value};

/// One server and the document its answers are checked against.
struct Api {
    _dir: tempfile::TempDir,
    server: Server,
    schema: ApiSchema,
    root: String,
}

impl Api {
    fn start() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("kms.db");
        let (root, _) = init(&db);
        let server = Server::start(&db);
        Api {
            _dir: dir,
            server,
            schema: ApiSchema::committed(),
            root,
        }
    }

    /// A JSON call of `method path` (concrete), checked against `template` and `status`.
    fn json(
        &self,
        method: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        status: u16,
    ) -> Value {
        let r = call(&self.server.base, method, path, token, body);
        self.checked(method, template, status, &r)
    }

    /// A form-encoded `POST` (the OAuth endpoints), checked like [`Api::json`].
    fn form(&self, path: &str, token: Option<&str>, form: &str, status: u16) -> Value {
        let r = raw(
            &self.server.base,
            "POST",
            path,
            token,
            Some("application/x-www-form-urlencoded"),
            Some(form.as_bytes()),
        );
        self.checked("POST", path, status, &r)
    }

    fn checked(&self, method: &str, template: &str, status: u16, r: &Raw) -> Value {
        self.schema.check(method, template, status, r);
        serde_json::from_str(&r.body).unwrap_or(Value::Null)
    }

    fn root(&self) -> Option<&str> {
        Some(&self.root)
    }
}

#[test]
fn every_documented_operation_answers_what_the_document_describes() {
    let api = Api::start();
    let root = api.root();

    // Operations.
    api.json("GET", "/healthz", "/healthz", None, None, 200);
    api.json("GET", "/readyz", "/readyz", None, None, 200);
    api.json("GET", "/metrics", "/metrics", None, None, 200);
    let doc = api.json("GET", "/openapi.json", "/openapi.json", None, None, 200);
    assert_eq!(doc["openapi"], "3.1.0");

    // Applications.
    let app = api.json(
        "POST",
        "/v1/apps",
        "/v1/apps",
        root,
        Some(&json!({"name": "billing", "token_prefix": "bill"})),
        201,
    );
    let app_id = app["id"].as_str().unwrap().to_owned();
    let app_path = format!("/v1/apps/{app_id}");
    api.json(
        "POST",
        "/v1/apps",
        "/v1/apps",
        root,
        Some(&json!({"name": "billing"})),
        409,
    );
    api.json(
        "POST",
        "/v1/apps",
        "/v1/apps",
        root,
        Some(&json!({"name": "x", "token_prefix": "NO!"})),
        400,
    );
    api.json("GET", "/v1/apps", "/v1/apps", None, None, 401);
    api.json("GET", "/v1/apps", "/v1/apps?limit=1", root, None, 200);
    api.json("GET", "/v1/apps/{id}", &app_path, root, None, 200);
    api.json("GET", "/v1/apps/{id}", "/v1/apps/app_nope", root, None, 404);
    api.json(
        "PATCH",
        "/v1/apps/{id}",
        &app_path,
        root,
        Some(&json!({"ip_allow": ["10.0.0.0/8"]})),
        200,
    );
    api.json(
        "PATCH",
        "/v1/apps/{id}",
        &app_path,
        root,
        Some(&json!({"ip_allow": []})),
        200,
    );
    api.json(
        "POST",
        "/v1/apps/{id}/signing-secret",
        &format!("{app_path}/signing-secret"),
        root,
        None,
        201,
    );

    // Permissions.
    let perm = json!({"scope": "billing.read", "description": "read invoices"});
    api.json(
        "POST",
        "/v1/permissions",
        "/v1/permissions",
        root,
        Some(&perm),
        201,
    );
    api.json(
        "POST",
        "/v1/permissions",
        "/v1/permissions",
        root,
        Some(&perm),
        409,
    );
    api.json(
        "POST",
        "/v1/permissions/bulk",
        "/v1/permissions/bulk",
        root,
        Some(&json!({"permissions": [
            {"scope": "billing.write", "implies": ["billing.read"]},
            {"scope": "billing.refund"},
        ]})),
        201,
    );
    api.json("GET", "/v1/permissions", "/v1/permissions", root, None, 200);

    // Roles.
    let role = api.json(
        "POST",
        "/v1/roles",
        "/v1/roles",
        root,
        Some(&json!({"name": "clerk", "description": "books", "permissions": ["billing.write"]})),
        201,
    );
    assert_eq!(role["name"], "clerk");
    api.json(
        "POST",
        "/v1/roles",
        "/v1/roles",
        root,
        Some(&json!({"name": "ghost", "permissions": ["no.such"]})),
        400,
    );
    api.json("GET", "/v1/roles", "/v1/roles", root, None, 200);
    api.json(
        "GET",
        "/v1/roles/{name}",
        "/v1/roles/clerk",
        root,
        None,
        200,
    );
    api.json(
        "GET",
        "/v1/roles/{name}",
        "/v1/roles/ghost",
        root,
        None,
        404,
    );
    api.json(
        "PATCH",
        "/v1/roles/{name}",
        "/v1/roles/clerk",
        root,
        Some(&json!({"permissions": ["billing.read"]})),
        200,
    );

    // Tokens: a plain one, one with every limit, and a narrow one for 403s.
    let tokens = format!("/v1/apps/{app_id}/tokens");
    let created = api.json(
        "POST",
        "/v1/apps/{app_id}/tokens",
        &tokens,
        root,
        Some(
            &json!({"name": "ci", "scopes": ["billing.read"], "roles": ["clerk"],
                     "expires_in": 3600, "metadata": {"team": "books"}}),
        ),
        201,
    );
    let token = created["token"].as_str().unwrap().to_owned();
    let token_id = created["id"].as_str().unwrap().to_owned();
    let limited = api.json(
        "POST",
        "/v1/apps/{app_id}/tokens",
        &tokens,
        root,
        Some(&json!({"name": "limited", "scopes": ["billing.read"],
                     "ratelimit": {"limit": 100, "per_seconds": 60}, "uses": 5,
                     "ip_allow": ["127.0.0.0/8"]})),
        201,
    );
    let limited_token = limited["token"].as_str().unwrap().to_owned();
    let limited_id = limited["id"].as_str().unwrap().to_owned();
    // Bulk creation (with a conditional grant, so the views carry `grants`) and bulk
    // revocation by filter and by ids.
    let bulk = api.json(
        "POST",
        "/v1/apps/{app_id}/tokens/bulk",
        &format!("{tokens}/bulk"),
        root,
        Some(&json!({"tokens": [
            {"name": "bulk-1", "scopes": ["billing.read"]},
            {"name": "bulk-2", "grants": [{"scope": "billing.read", "when": "context.region == \"eu\""}]}
        ]})),
        201,
    );
    let bulk_id = bulk["items"][0]["id"].as_str().unwrap().to_owned();
    api.json(
        "POST",
        "/v1/tokens/revoke",
        "/v1/tokens/revoke",
        root,
        Some(&json!({"filter": {"app_id": app_id, "name_prefix": "bulk-2"}})),
        200,
    );
    api.json(
        "POST",
        "/v1/tokens/revoke",
        "/v1/tokens/revoke",
        root,
        Some(&json!({"ids": [bulk_id]})),
        200,
    );
    api.json(
        "POST",
        "/v1/tokens/roles",
        "/v1/tokens/roles",
        root,
        Some(&json!({"ids": [bulk_id], "grant": ["clerk"]})),
        200,
    );
    api.json(
        "POST",
        "/v1/permissions",
        "/v1/permissions",
        root,
        Some(&json!({"scope": "scratch.unused"})),
        201,
    );
    api.json(
        "POST",
        "/v1/permissions/bulk-delete",
        "/v1/permissions/bulk-delete",
        root,
        Some(&json!({"scopes": ["scratch.unused"]})),
        200,
    );
    let verifier = api.json(
        "POST",
        "/v1/apps/{app_id}/tokens",
        "/v1/apps/app_system/tokens",
        root,
        Some(&json!({"name": "verifier", "scopes": ["token.verify"]})),
        201,
    );
    let verifier = verifier["token"].as_str().unwrap().to_owned();
    api.json(
        "POST",
        "/v1/apps/{app_id}/tokens",
        &tokens,
        root,
        Some(&json!({"name": "bad", "scopes": ["no.such.scope"]})),
        400,
    );
    api.json(
        "GET",
        "/v1/apps/{app_id}/tokens",
        &tokens,
        Some(&verifier),
        None,
        403,
    );
    let page = api.json(
        "GET",
        "/v1/apps/{app_id}/tokens",
        &format!("{tokens}?limit=1"),
        root,
        None,
        200,
    );
    let cursor = page["next_cursor"].as_str().expect("a second page");
    api.json(
        "GET",
        "/v1/apps/{app_id}/tokens",
        &format!("{tokens}?limit=1&cursor={cursor}"),
        root,
        None,
        200,
    );
    let token_path = format!("/v1/tokens/{token_id}");
    let limited_path = format!("/v1/tokens/{limited_id}");
    api.json("GET", "/v1/tokens/{id}", &token_path, root, None, 200);
    api.json("GET", "/v1/tokens/{id}", &limited_path, root, None, 200);
    api.json(
        "GET",
        "/v1/tokens/{id}",
        "/v1/tokens/tok_nope",
        root,
        None,
        404,
    );
    api.json(
        "PATCH",
        "/v1/tokens/{id}",
        &limited_path,
        root,
        Some(&json!({"name": "limited-2", "uses": 3})),
        200,
    );
    api.json(
        "PATCH",
        "/v1/tokens/{id}",
        &limited_path,
        root,
        Some(&json!({"unknown": 1})),
        400,
    );

    // Verification: valid (with and without limits), invalid, and refused.
    let verify = |body: Value, bearer: &str, status: u16| {
        api.json(
            "POST",
            "/v1/verify",
            "/v1/verify",
            Some(bearer),
            Some(&body),
            status,
        )
    };
    let valid = verify(
        json!({"token": token, "permissions": "billing.read"}),
        &verifier,
        200,
    );
    assert_eq!(valid["code"], "VALID");
    let valid = verify(
        json!({"token": limited_token, "scopes": ["billing.read"], "ip": "127.0.0.1"}),
        &verifier,
        200,
    );
    assert_eq!(valid["code"], "VALID");
    let lacking = verify(
        json!({"token": token, "permissions": "billing.refund"}),
        &verifier,
        200,
    );
    assert_eq!(lacking["code"], "INSUFFICIENT_PERMISSIONS");
    let malformed = verify(json!({"token": "not-a-token"}), &verifier, 200);
    assert_eq!(malformed["code"], "MALFORMED");
    verify(json!({"token": token}), &token, 403);
    verify(json!({"nope": true}), &verifier, 400);

    // Access tokens, introspection, revocation, keys and JWKS.
    let pair = api.form(
        "/v1/auth/token",
        Some(&token),
        "grant_type=api_key&scope=billing.read",
        200,
    );
    let refresh = pair["refresh_token"].as_str().unwrap().to_owned();
    api.form(
        "/v1/auth/token",
        None,
        &format!("grant_type=refresh_token&refresh_token={refresh}"),
        200,
    );
    api.form(
        "/v1/auth/token",
        None,
        &format!("grant_type=refresh_token&refresh_token={refresh}"),
        400,
    );
    api.form("/v1/auth/token", None, "grant_type=api_key", 401);
    // The reuse revoked that family; a fresh pair to introspect.
    let pair = api.form("/v1/auth/token", Some(&token), "grant_type=api_key", 200);
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let active = api.form(
        "/v1/auth/introspect",
        Some(&verifier),
        &format!("token={access}"),
        200,
    );
    assert_eq!(active["active"], true);
    let inactive = api.form("/v1/auth/introspect", Some(&verifier), "token=nope", 200);
    assert_eq!(inactive, json!({"active": false}));
    api.form("/v1/auth/introspect", Some(&token), "token=nope", 403);
    api.form(
        "/v1/auth/revoke",
        Some(&verifier),
        &format!("token={access}"),
        200,
    );
    api.json(
        "GET",
        "/.well-known/jwks.json",
        "/.well-known/jwks.json",
        None,
        None,
        200,
    );
    api.json(
        "POST",
        "/v1/keys/rotate",
        "/v1/keys/rotate",
        root,
        None,
        201,
    );
    api.json("GET", "/v1/keys", "/v1/keys", root, None, 200);
    api.json("GET", "/v1/keys", "/v1/keys", Some(&verifier), None, 403);

    // Rotation, revocation and deletion.
    api.json(
        "POST",
        "/v1/tokens/{id}/rotate",
        &format!("{token_path}/rotate"),
        root,
        Some(&json!({"grace_seconds": 60})),
        201,
    );
    let revoked = api.json(
        "POST",
        "/v1/tokens/{id}/revoke",
        &format!("{limited_path}/revoke"),
        root,
        None,
        200,
    );
    assert_eq!(revoked["status"], "revoked");
    let revoked = verify(json!({"token": limited_token}), &verifier, 200);
    assert_eq!(revoked["code"], "REVOKED");
    api.json("GET", "/v1/tokens/{id}", &limited_path, root, None, 200);
    api.json("DELETE", "/v1/tokens/{id}", &limited_path, root, None, 204);
    api.json("DELETE", "/v1/tokens/{id}", &limited_path, root, None, 404);

    // Definitions in use cannot go; unused ones can.
    api.json(
        "DELETE",
        "/v1/permissions/{scope}",
        "/v1/permissions/billing.read",
        root,
        None,
        409,
    );
    api.json(
        "DELETE",
        "/v1/permissions/{scope}",
        "/v1/permissions/billing.refund",
        root,
        None,
        204,
    );
    api.json(
        "POST",
        "/v1/roles",
        "/v1/roles",
        root,
        Some(&json!({"name": "spare"})),
        201,
    );
    api.json(
        "DELETE",
        "/v1/roles/{name}",
        "/v1/roles/spare",
        root,
        None,
        204,
    );

    // The audit log.
    let events = api.json("GET", "/v1/audit", "/v1/audit?limit=2", root, None, 200);
    let cursor = events["next_cursor"].as_str().expect("more events");
    api.json(
        "GET",
        "/v1/audit",
        &format!("/v1/audit?limit=50&cursor={cursor}&action=token.create"),
        root,
        None,
        200,
    );
    api.json("GET", "/v1/audit", "/v1/audit", Some(&verifier), None, 403);
    let check = api.json(
        "GET",
        "/v1/audit/verify",
        "/v1/audit/verify",
        root,
        None,
        200,
    );
    assert_eq!(check["ok"], true);

    // Capacity and the compliance report (e2e_reports.rs checks their content).
    api.json("GET", "/v1/stats", "/v1/stats", root, None, 200);
    api.json("GET", "/v1/stats", "/v1/stats", Some(&verifier), None, 403);
    let report = api.json(
        "GET",
        "/v1/reports/compliance",
        "/v1/reports/compliance",
        root,
        None,
        200,
    );
    assert_eq!(report["findings"].as_array().map(Vec::len), Some(12));
    api.json(
        "GET",
        "/v1/reports/compliance",
        "/v1/reports/compliance?format=pdf",
        root,
        None,
        400,
    );
    // Usage reports (their counts: e2e_usage.rs).
    let usage = format!("{app_path}/usage");
    api.json("GET", "/v1/apps/{app_id}/usage", &usage, root, None, 200);
    let by_day = format!("{usage}?granularity=day");
    api.json("GET", "/v1/apps/{app_id}/usage", &by_day, root, None, 200);
    let bad = format!("{usage}?granularity=week");
    api.json("GET", "/v1/apps/{app_id}/usage", &bad, root, None, 400);
    let missing = "/v1/apps/app_nope/usage";
    api.json("GET", "/v1/apps/{app_id}/usage", missing, root, None, 404);
    let usage = format!("/v1/tokens/{token_id}/usage");
    api.json("GET", "/v1/tokens/{id}/usage", &usage, root, None, 200);
    let bad = format!("{usage}?from=yesterday");
    api.json("GET", "/v1/tokens/{id}/usage", &bad, root, None, 400);

    // Last, the application.
    api.json("DELETE", "/v1/apps/{id}", &app_path, root, None, 204);
    api.json("DELETE", "/v1/apps/{id}", &app_path, root, None, 404);

    // The people endpoints need real identity providers: `e2e_sso.rs` validates each of
    // their answers against the document (and fails when one is not called there).
    let unchecked: Vec<_> = api
        .schema
        .unchecked()
        .into_iter()
        .filter(|(m, p)| !common::schema::PEOPLE_OPERATIONS.contains(&(m.as_str(), p.as_str())))
        .filter(|(m, p)| !common::schema::PRIVACY_OPERATIONS.contains(&(m.as_str(), p.as_str())))
        .collect();
    assert!(
        unchecked.is_empty(),
        "documented operations this test never called: {unchecked:?}"
    );
}

#[test]
fn the_validation_refuses_an_undocumented_field_a_missing_one_and_a_wrong_type() {
    let schema = ApiSchema::committed();
    let app = json!({"id": "app_1", "name": "billing", "token_prefix": "bill",
                     "status": "active", "created_at": "2026-01-01T00:00:00Z",
                     "ip_allow": [], "require_signed_requests": false});
    schema.validate("GET", "/v1/apps/{id}", 200, &app.to_string());
    let refused = |body: Value| {
        std::panic::catch_unwind(|| schema.validate("GET", "/v1/apps/{id}", 200, &body.to_string()))
            .is_err()
    };
    let mut extra = app.clone();
    extra["secret"] = json!("leaked");
    assert!(refused(extra), "an undocumented field passed");
    let mut missing = app.clone();
    missing
        .as_object_mut()
        .unwrap()
        .remove("require_signed_requests");
    assert!(refused(missing), "a missing required field passed");
    let mut wrong = app;
    wrong["ip_allow"] = json!("10.0.0.0/8");
    assert!(refused(wrong), "a field of the wrong type passed");
    assert!(
        std::panic::catch_unwind(|| schema.validate("DELETE", "/v1/apps/{id}", 204, "{}")).is_err(),
        "a body where none is documented passed"
    );
}
