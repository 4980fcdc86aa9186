//! The embedders' scope guard, in-process: 401 without a valid token, 403 without the
//! scope, the handler with the verification otherwise.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use kms_core::{Kms, NewApp, NewPermission, NewToken, Verification};
use kms_server::guard::RequireScopeLayer;
use tower::ServiceExt;

struct World {
    kms: Kms,
    reader: String,
    other: String,
}

fn world() -> World {
    let kms = Kms::builder(Arc::new(kms_store::MemoryStore::new()))
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .build()
        .unwrap();
    kms.initialize().unwrap();
    let op = kms.operator();
    kms.create_permission(
        &op,
        NewPermission {
            scope: "billing.read".into(),
            description: None,
            implies: vec![],
        },
    )
    .unwrap();
    let app = kms
        .create_app(
            &op,
            NewApp {
                name: "billing".into(),
                token_prefix: Some("bill".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let token = |scopes: &[&str]| {
        kms.create_token(
            &op,
            &app.id,
            NewToken {
                name: "t".into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )
        .unwrap()
        .token
    };
    let reader = token(&["billing.read"]);
    let other = token(&["app.read"]);
    World { kms, reader, other }
}

fn app(kms: Kms) -> Router {
    async fn invoices(Extension(v): Extension<Verification>) -> String {
        format!("invoices of {}", v.app_id().unwrap_or_default())
    }
    Router::new()
        .route("/invoices", get(invoices))
        .route_layer(RequireScopeLayer::new(kms, "billing.read").unwrap())
}

async fn get_with(app: Router, bearer: Option<&str>) -> Response {
    let mut req = Request::get("/invoices");
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap()
}

async fn json(response: Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn a_token_with_the_scope_reaches_the_handler() {
    let w = world();
    let response = get_with(app(w.kms.clone()), Some(&w.reader)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&bytes).starts_with("invoices of app_"));
}

#[tokio::test]
async fn a_token_without_the_scope_is_forbidden() {
    let w = world();
    let response = get_with(app(w.kms.clone()), Some(&w.other)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = json(response).await;
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(body["error"]["details"]["required"], "billing.read");
    assert_eq!(body["error"]["request_id"], id.as_str());
}

#[tokio::test]
async fn missing_or_bad_tokens_are_unauthenticated() {
    let w = world();
    for bearer in [
        None,
        Some("nonsense"),
        Some("kms_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ] {
        let response = get_with(app(w.kms.clone()), bearer).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{bearer:?}");
        assert_eq!(json(response).await["error"]["code"], "unauthenticated");
    }
}

#[test]
fn a_bad_query_is_refused_when_the_guard_is_built() {
    let w = world();
    assert!(RequireScopeLayer::new(w.kms, "billing.read AND (").is_err());
}

/// A guard with a context built from the request: a conditional grant holds only for
/// requests whose header satisfies it, answered from the cache after the first.
#[tokio::test]
async fn the_guard_gives_conditional_grants_a_context_from_the_request() {
    let w = world();
    let op = w.kms.operator();
    let req: NewToken = serde_json::from_value(serde_json::json!({
        "name": "eu-only",
        "grants": [{"scope": "billing.read", "when": "context.region == \"eu\""}]
    }))
    .unwrap();
    let token = w
        .kms
        .create_token(&op, kms_core::SYSTEM_APP_ID, req)
        .unwrap()
        .token;
    let app = Router::new()
        .route("/invoices", get(|| async { "ok" }))
        .route_layer(
            RequireScopeLayer::new(w.kms.clone(), "billing.read")
                .unwrap()
                .with_context(|req| {
                    let mut ctx = serde_json::Map::new();
                    if let Some(region) =
                        req.headers().get("x-region").and_then(|v| v.to_str().ok())
                    {
                        ctx.insert("region".into(), serde_json::json!(region));
                    }
                    ctx
                }),
        );
    let call = |region: Option<&'static str>| {
        let app = app.clone();
        let token = token.clone();
        async move {
            let mut req =
                Request::get("/invoices").header("authorization", format!("Bearer {token}"));
            if let Some(r) = region {
                req = req.header("x-region", r);
            }
            app.oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap()
                .status()
        }
    };
    for _ in 0..2 {
        assert_eq!(call(Some("eu")).await, StatusCode::OK);
        assert_eq!(call(Some("us")).await, StatusCode::FORBIDDEN);
        assert_eq!(call(None).await, StatusCode::FORBIDDEN);
    }
    // Without a context extractor, conditional grants never hold.
    let plain = get_with(self::app(w.kms.clone()), Some(&token)).await;
    assert_eq!(plain.status(), StatusCode::FORBIDDEN);
}
