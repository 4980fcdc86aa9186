//! Validates real responses against the committed `docs/openapi.json`: given a method, a
//! path template and a status, finds the documented response schema (its `$ref`s to
//! `#/components/schemas/...` resolved against the document) and checks a body with a
//! JSON Schema 2020-12 validator (OpenAPI 3.1's schema dialect).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::{json, Value};

use super::Raw;

/// The committed OpenAPI document, and which operations have been checked against it.
/// The operations on users, identity providers, single sign-on and sessions, whose answers
/// `e2e_sso.rs` checks against the document (they need real identity providers).
pub(crate) const PEOPLE_OPERATIONS: &[(&str, &str)] = &[
    ("post", "/v1/apps/{app_id}/idps"),
    ("get", "/v1/apps/{app_id}/idps"),
    ("get", "/v1/idps/{id}"),
    ("patch", "/v1/idps/{id}"),
    ("delete", "/v1/idps/{id}"),
    ("get", "/v1/sso/discover"),
    ("get", "/v1/sso/{slug}/login"),
    ("get", "/v1/sso/{slug}/callback"),
    ("post", "/v1/sso/{slug}/acs"),
    ("get", "/v1/sso/{slug}/metadata"),
    ("get", "/v1/apps/{app_id}/users"),
    ("get", "/v1/users/{id}"),
    ("patch", "/v1/users/{id}"),
    ("delete", "/v1/users/{id}"),
    ("post", "/v1/users/roles"),
    ("get", "/v1/users/{id}/sessions"),
    ("post", "/v1/users/{id}/sessions/revoke"),
    ("post", "/v1/sessions/{id}/revoke"),
    ("get", "/v1/me"),
    ("get", "/v1/me/sessions"),
    ("post", "/v1/auth/logout"),
];

/// Operations `e2e_privacy.rs` validates against the document (they need a user, which
/// needs a real identity provider).
pub(crate) const PRIVACY_OPERATIONS: &[(&str, &str)] = &[("get", "/v1/users/{id}/export")];

pub(crate) struct ApiSchema {
    doc: Value,
    checked: Mutex<BTreeSet<(String, String)>>,
}

impl ApiSchema {
    /// Reads `docs/openapi.json`.
    pub(crate) fn committed() -> ApiSchema {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        ApiSchema {
            doc: serde_json::from_str(&text).expect("docs/openapi.json is JSON"),
            checked: Mutex::new(BTreeSet::new()),
        }
    }

    /// The documented response of `method path` (a template: `/v1/tokens/{id}`) for
    /// `status`: the exact status, else its class (`4XX`), else `default`.
    pub(crate) fn response(&self, method: &str, path: &str, status: u16) -> &Value {
        let op = &self.doc["paths"][path][method.to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{method} {path} is not in docs/openapi.json"
        );
        let responses = &op["responses"];
        let class = format!("{}XX", status / 100);
        [status.to_string(), class, "default".to_owned()]
            .iter()
            .map(|key| &responses[key])
            .find(|r| r.is_object())
            .unwrap_or_else(|| panic!("{method} {path} documents no {status} response"))
    }

    /// The schema of the documented JSON body of `method path` for `status`, as a
    /// standalone JSON Schema (the document's components alongside, so that its `$ref`s
    /// resolve), or `None` when the response is documented without a body.
    pub(crate) fn body_schema(&self, method: &str, path: &str, status: u16) -> Option<Value> {
        let response = self.response(method, path, status);
        let content = response.get("content")?;
        // A text body (`/metrics`) is validated as one JSON string.
        let schema = [
            "application/json",
            "text/plain",
            "application/samlmetadata+xml",
        ]
        .iter()
        .find_map(|ct| content.get(*ct).and_then(|c| c.get("schema")))
        .unwrap_or_else(|| {
            panic!("{method} {path} {status}: the documented body is neither JSON nor text")
        });
        let mut standalone = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"].clone(),
        });
        match schema {
            Value::Object(fields) => {
                for (k, v) in fields {
                    standalone[k] = v.clone();
                }
            }
            other => panic!("{method} {path} {status}: the schema is not an object: {other}"),
        }
        Some(standalone)
    }

    /// Panics unless `body` is what `method path` documents for `status`: JSON matching
    /// its schema, or empty when no body is documented.
    pub(crate) fn validate(&self, method: &str, path: &str, status: u16, body: &str) {
        self.checked
            .lock()
            .unwrap()
            .insert((method.to_ascii_lowercase(), path.to_owned()));
        let Some(schema) = self.body_schema(method, path, status) else {
            assert!(
                body.is_empty(),
                "{method} {path} {status} documents no body, but the server sent {body:?}"
            );
            return;
        };
        let text = self.response(method, path, status)["content"]
            .get("application/json")
            .is_none();
        let instance: Value = if text {
            Value::String(body.to_owned())
        } else {
            serde_json::from_str(body).unwrap_or_else(|e| {
                panic!("{method} {path} {status}: the body is not JSON ({e}): {body:?}")
            })
        };
        let validator = jsonschema::draft202012::new(&schema).unwrap_or_else(|e| {
            panic!("{method} {path} {status}: the documented schema does not compile: {e}")
        });
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| format!("  at {}: {e}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status}: the response does not match docs/openapi.json:\n{}\nbody: {body}",
            errors.join("\n")
        );
    }

    /// [`ApiSchema::validate`] of a raw response, which must have `status`.
    pub(crate) fn check(&self, method: &str, path: &str, status: u16, raw: &Raw) {
        assert_eq!(raw.status, status, "{method} {path}: body {}", raw.body);
        self.validate(method, path, status, &raw.body);
    }

    /// Whether `method path` (lower-case method, template path) was checked.
    pub(crate) fn was_checked(&self, method: &str, path: &str) -> bool {
        self.checked
            .lock()
            .unwrap()
            .contains(&(method.to_owned(), path.to_owned()))
    }

    /// Every operation of the document (`(method, path)`) not yet checked.
    pub(crate) fn unchecked(&self) -> Vec<(String, String)> {
        let checked = self.checked.lock().unwrap();
        let mut missing = Vec::new();
        for (path, ops) in self.doc["paths"].as_object().into_iter().flatten() {
            for method in ops.as_object().into_iter().flatten().map(|(m, _)| m) {
                let key = (method.clone(), path.clone());
                if method != "parameters" && !checked.contains(&key) {
                    missing.push(key);
                }
            }
        }
        missing
    }
}
