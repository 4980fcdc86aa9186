//! The OpenAPI document: describes every endpoint, and the committed `docs/openapi.json`
//! equals the generated one. Run with `KMS_UPDATE_OPENAPI=1` to rewrite the file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::PathBuf;

const ENDPOINTS: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", "/v1/apps"),
    ("get", "/v1/apps"),
    ("get", "/v1/apps/{id}"),
    ("patch", "/v1/apps/{id}"),
    ("delete", "/v1/apps/{id}"),
    ("post", "/v1/apps/{id}/signing-secret"),
    ("post", "/v1/permissions"),
    ("post", "/v1/permissions/bulk"),
    ("get", "/v1/permissions"),
    ("delete", "/v1/permissions/{scope}"),
    ("post", "/v1/roles"),
    ("get", "/v1/roles"),
    ("get", "/v1/roles/{name}"),
    ("patch", "/v1/roles/{name}"),
    ("delete", "/v1/roles/{name}"),
    ("post", "/v1/apps/{app_id}/tokens"),
    ("get", "/v1/apps/{app_id}/tokens"),
    ("get", "/v1/tokens/{id}"),
    ("patch", "/v1/tokens/{id}"),
    ("delete", "/v1/tokens/{id}"),
    ("post", "/v1/tokens/{id}/revoke"),
    ("post", "/v1/tokens/{id}/rotate"),
    ("post", "/v1/verify"),
    ("post", "/v1/auth/token"),
    ("post", "/v1/auth/introspect"),
    ("post", "/v1/auth/revoke"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/v1/keys"),
    ("post", "/v1/keys/rotate"),
    ("get", "/v1/audit"),
    ("get", "/v1/audit/verify"),
    ("get", "/v1/stats"),
    ("get", "/v1/reports/compliance"),
];

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

#[test]
fn the_document_is_openapi_3_1_and_describes_every_endpoint() {
    let doc = kms_server::openapi::document_value().unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for (method, path) in ENDPOINTS {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert!(
            op["responses"].is_object(),
            "{method} {path} has no responses"
        );
        if path.starts_with("/v1") && *path != "/v1/auth/token" {
            assert!(
                op["security"].is_array(),
                "{method} {path} names no security"
            );
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

#[test]
fn the_committed_document_is_current() {
    let generated = kms_server::openapi::document_pretty().unwrap();
    let path = committed_path();
    if std::env::var("KMS_UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is stale; regenerate it with \
         `KMS_UPDATE_OPENAPI=1 cargo test -p kms-server --test openapi`"
    );
}
