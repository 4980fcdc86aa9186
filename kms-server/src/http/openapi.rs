//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers' annotations and
//! the [`crate::wire`] types. A test keeps the committed `docs/openapi.json` equal to it.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
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
        routes::audit::list_audit,
        routes::audit::verify_audit,
    ),
    components(schemas(wire::FieldProblem)),
    modifiers(&BearerAuth),
    tags(
        (name = "operations", description = "Health, readiness, metrics and this document; no token needed"),
        (name = "applications", description = "Applications, the tenant unit (`app.read`, `app.write`)"),
        (name = "permissions", description = "Permission definitions (`permission.read`, `permission.write`)"),
        (name = "roles", description = "Roles (`role.read`, `role.write`)"),
        (name = "tokens", description = "API keys (`token.read`, `token.create`, `token.revoke`)"),
        (name = "verification", description = "Verifying API keys (`token.verify`)"),
        (name = "access tokens", description = "OAuth 2.0 access tokens (EdDSA JWTs), their signing keys and JWKS; the token, introspection and revocation endpoints answer errors in the OAuth shape"),
        (name = "audit", description = "The hash-chained audit log (`audit.read`)"),
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
                    .description(Some("A kms API key: `Authorization: Bearer <token>`"))
                    .build(),
            ),
        );
    }
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

/// The document as pretty-printed JSON with a final newline, as committed in
/// `docs/openapi.json`.
pub fn document_pretty() -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(&document())?;
    text.push('\n');
    Ok(text)
}
