//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers' annotations and
//! the [`crate::wire`] types. A test keeps the committed `docs/openapi.json` equal to it.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use utoipa::openapi::schema::{AdditionalProperties, Schema};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, RefOr};
use utoipa::{Modify, OpenApi};

use crate::http::routes;
use crate::wire;

/// The OpenAPI description of the API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "kms",
        description = "API keys and authorization. Every `/v1` call needs `Authorization: Bearer <token>`; errors share one body shape (`ErrorBody`) and every response carries `x-request-id`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        routes::health::healthz,
        routes::health::readyz,
        routes::health::metrics,
        routes::docs::openapi_json,
        routes::apps::create_app,
        routes::apps::list_apps,
        routes::apps::get_app,
        routes::apps::update_app,
        routes::apps::delete_app,
        routes::apps::rotate_signing_secret,
        routes::permissions::create_permission,
        routes::permissions::create_permissions,
        routes::permissions::list_permissions,
        routes::permissions::delete_permission,
        routes::roles::create_role,
        routes::roles::list_roles,
        routes::roles::get_role,
        routes::roles::update_role,
        routes::roles::delete_role,
        routes::tokens::create_token,
        routes::tokens::create_tokens,
        routes::tokens::revoke_tokens,
        routes::tokens::change_token_roles,
        routes::permissions::delete_permissions,
        routes::tokens::list_tokens,
        routes::tokens::get_token,
        routes::tokens::update_token,
        routes::tokens::revoke_token,
        routes::tokens::rotate_token,
        routes::tokens::delete_token,
        routes::verify::verify,
        routes::oauth::token,
        routes::oauth::introspect,
        routes::oauth::revoke,
        routes::oauth::jwks,
        routes::keys::list_keys,
        routes::keys::rotate_keys,
        routes::people::create_idp,
        routes::people::list_idps,
        routes::people::get_idp,
        routes::people::update_idp,
        routes::people::delete_idp,
        routes::people::discover,
        routes::people::login,
        routes::people::oidc_callback,
        routes::people::saml_acs,
        routes::people::saml_metadata,
        routes::people::list_users,
        routes::people::get_user,
        routes::people::update_user,
        routes::people::delete_user,
        routes::people::change_user_roles,
        routes::people::list_user_sessions,
        routes::people::revoke_user_sessions,
        routes::people::revoke_session,
        routes::people::me,
        routes::people::my_sessions,
        routes::people::logout,
        routes::audit::list_audit,
        routes::audit::verify_audit,
        routes::reports::stats,
        routes::reports::compliance,
        routes::usage::app_usage,
        routes::usage::token_usage,
        routes::privacy::export_user,
    ),
    components(schemas(wire::FieldProblem)),
    modifiers(&BearerAuth, &ClosedResponses),
    tags(
        (name = "operations", description = "Health, readiness, metrics and this document; no token needed"),
        (name = "applications", description = "Applications, the tenant unit (`app.read`, `app.write`)"),
        (name = "permissions", description = "Permission definitions (`permission.read`, `permission.write`)"),
        (name = "roles", description = "Roles (`role.read`, `role.write`)"),
        (name = "tokens", description = "API keys (`token.read`, `token.create`, `token.revoke`)"),
        (name = "verification", description = "Verifying API keys (`token.verify`)"),
        (name = "access tokens", description = "OAuth 2.0 access tokens (EdDSA JWTs), their signing keys and JWKS; the token, introspection and revocation endpoints answer errors in the OAuth shape"),
        (name = "audit", description = "The hash-chained audit log (`audit.read`)"),
        (name = "identity providers", description = "OpenID Connect and SAML connections per application (`idp.read`, `idp.write`)"),
        (name = "single sign-on", description = "Logins through an application's identity providers; called by browsers and providers, no token needed"),
        (name = "users", description = "People of an application (`user.read`, `user.write`)"),
        (name = "sessions", description = "Users' sessions (`session.read`, `session.revoke`), and the caller's own"),
    ),
)]
#[derive(Debug)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A kms API key or session token: `Authorization: Bearer <token>` (browsers may send the session as the `kms_session` cookie instead)"))
                    .build(),
            ),
        );
    }
}

/// Response bodies are closed: the server sends no field its schema does not name, so the
/// schemas of response bodies (and of the objects they contain) say
/// `additionalProperties: false`, and the end-to-end tests that validate real responses
/// against the document catch a field sent but not documented. The wire types' serde
/// stays open, so an older client still reads a newer server's answers.
///
/// `CreatedTokenView` is `TokenView` flattened with `token`; closing `TokenView` would
/// refuse `token` inside an `allOf`, so its schema is written out as `TokenView`'s
/// properties plus `token`.
struct ClosedResponses;

impl Modify for ClosedResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let referenced = response_schemas(openapi);
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        if let Some(RefOr::T(Schema::Object(view))) = components.schemas.get("TokenView") {
            let token = ObjectBuilder::new()
                .schema_type(utoipa::openapi::Type::String)
                .description(Some(
                    "The plaintext token. Store it now; it cannot be shown again.",
                ))
                .build();
            let mut created = view.clone();
            created.description = Some(
                "A token just created or rotated, with its plaintext (shown this once).".to_owned(),
            );
            created.properties.insert("token".to_owned(), token.into());
            created.required.insert(0, "token".to_owned());
            components.schemas.insert(
                "CreatedTokenView".to_owned(),
                Schema::Object(created).into(),
            );
        }
        for name in referenced {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(&name) {
                object.additional_properties =
                    Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
    }
}

/// The component schemas that response bodies use, directly or inside one another.
fn response_schemas(openapi: &utoipa::openapi::OpenApi) -> BTreeSet<String> {
    const PREFIX: &str = "#/components/schemas/";
    fn refs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v.as_str()) {
                        ("$ref", Some(r)) => {
                            if let Some(name) = r.strip_prefix(PREFIX) {
                                out.push(name.to_owned());
                            }
                        }
                        _ => refs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut todo = Vec::new();
    for item in openapi.paths.paths.values() {
        let ops = [
            &item.get,
            &item.put,
            &item.post,
            &item.delete,
            &item.patch,
            &item.head,
        ];
        for op in ops.into_iter().flatten() {
            if let Ok(responses) = serde_json::to_value(&op.responses) {
                refs(&responses, &mut todo);
            }
        }
    }
    let schemas = openapi.components.as_ref().map(|c| &c.schemas);
    let mut seen = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = schemas.and_then(|s| s.get(&name)) {
            if let Ok(value) = serde_json::to_value(schema) {
                refs(&value, &mut todo);
            }
        }
    }
    seen
}

/// The document, with the crate's version.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The document as JSON.
pub fn document_value() -> Result<serde_json::Value, serde_json::Error> {
    serde_json::to_value(document())
}

/// The document as compact JSON (the bytes of [`document_value`]), built once:
/// `GET /openapi.json` serves them.
pub fn document_bytes() -> Result<&'static [u8], &'static serde_json::Error> {
    static BYTES: OnceLock<Result<Vec<u8>, serde_json::Error>> = OnceLock::new();
    BYTES
        .get_or_init(|| document_value().and_then(|doc| serde_json::to_vec(&doc)))
        .as_ref()
        .map(Vec::as_slice)
}

/// The document as pretty-printed JSON with a final newline, as committed in
/// `docs/openapi.json`.
pub fn document_pretty() -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(&document())?;
    text.push('\n');
    Ok(text)
}
