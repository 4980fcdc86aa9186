//! Guarding your own axum routes with kms, in-process.
//!
//! Builds a `Kms` over an in-memory store, issues two tokens, serves two routes guarded by
//! scope on an ephemeral port, and calls them: the token with `billing.read` gets the
//! invoices, the other gets `403`, and no token gets `401`.
//!
//! Run with `cargo run -p kms-server --example guarded_app`.

use std::sync::Arc;

use axum::routing::get;
use axum::{Extension, Router};
use kms_core::{Kms, NewApp, NewPermission, NewToken, Verification};
use kms_server::guard::RequireScopeLayer;

async fn invoices(Extension(verified): Extension<Verification>) -> String {
    format!(
        "invoices for application {}\n",
        verified.app_id().unwrap_or("?")
    )
}

async fn refunds() -> &'static str {
    "refund issued\n"
}

fn status_of(url: &str, token: Option<&str>) -> u16 {
    let mut req = ureq::get(url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(_) => 0,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The service, with its definitions: in a real application, a SqliteStore and
    // permissions managed with `kms permission create` or the HTTP API.
    let kms = Kms::builder(Arc::new(kms_store::MemoryStore::new())).build()?;
    kms.initialize()?;
    let op = kms.operator();
    for scope in ["billing.read", "billing.refund"] {
        kms.create_permission(
            &op,
            NewPermission {
                scope: scope.into(),
                description: None,
                implies: vec![],
            },
        )?;
    }
    let app = kms.create_app(
        &op,
        NewApp {
            name: "billing".into(),
            token_prefix: Some("bill".into()),
            ..Default::default()
        },
    )?;
    let issue = |scopes: &[&str]| {
        kms.create_token(
            &op,
            &app.id,
            NewToken {
                name: "example".into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )
        .map(|created| created.token)
    };
    let reader = issue(&["billing.read"])?;
    let refunder = issue(&["billing.refund"])?;

    // Each route states what it needs; the guard does the rest.
    let routes = Router::new()
        .route(
            "/invoices",
            get(invoices).route_layer(RequireScopeLayer::new(kms.clone(), "billing.read")?),
        )
        .route(
            "/refunds",
            get(refunds).route_layer(RequireScopeLayer::new(
                kms.clone(),
                "billing.refund AND billing.read",
            )?),
        );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, routes).await });

    let report = tokio::task::spawn_blocking(move || {
        [
            (
                "GET /invoices with billing.read",
                status_of(&format!("{base}/invoices"), Some(&reader)),
            ),
            (
                "GET /invoices with billing.refund",
                status_of(&format!("{base}/invoices"), Some(&refunder)),
            ),
            (
                "GET /refunds with billing.read",
                status_of(&format!("{base}/refunds"), Some(&reader)),
            ),
            (
                "GET /invoices without a token",
                status_of(&format!("{base}/invoices"), None),
            ),
        ]
    })
    .await?;
    for (what, status) in report {
        println!("{what}: {status}");
    }
    server.abort();
    Ok(())
}
