//! The single sign-on facade over an in-memory provider (no network): a connection's
//! discovery document is fetched at creation, reused, and fetched again once a day; a
//! provider that cannot be reached then keeps the stored one; `return_to` and slugs are
//! checked before anything is stored.

#![cfg(feature = "sso")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use kms_core::sso::{HttpRequest, HttpResponse, HttpTransport, TransportError};
use kms_core::{Kms, ManualClock, MasterKey, NewApp, NewIdp, OsRandom, SsoConfig, Timestamp};
use serde_json::json;

const ISSUER: &str = "https://login.example.com";

/// Answers the discovery document, counting requests; can be switched off.
#[derive(Default)]
struct Provider {
    discoveries: AtomicUsize,
    down: AtomicBool,
}

impl HttpTransport for Provider {
    fn call(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(TransportError("connection refused".to_owned()));
        }
        assert_eq!(
            request.uri().to_string(),
            format!("{ISSUER}/.well-known/openid-configuration")
        );
        self.discoveries.fetch_add(1, Ordering::SeqCst);
        let body = json!({
            "issuer": ISSUER,
            "authorization_endpoint": format!("{ISSUER}/auth"),
            "token_endpoint": format!("{ISSUER}/token"),
            "jwks_uri": format!("{ISSUER}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "EdDSA"],
        });
        Ok(http::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(body.to_string().into_bytes())
            .unwrap())
    }
}

fn service() -> (Kms, Arc<Provider>, Arc<ManualClock>, String) {
    let provider = Arc::new(Provider::default());
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix(1_800_000_000)));
    let store = Arc::new(kms_store::MemoryStore::new());
    let kms = Kms::builder(store)
        .clock(clock.clone())
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .master_key(MasterKey::generate(&OsRandom).unwrap())
        .sso(SsoConfig {
            transport: provider.clone(),
            public_url: "https://kms.example.com/".to_owned(),
        })
        .build()
        .unwrap();
    kms.initialize().unwrap();
    let op = kms.operator();
    let app = kms
        .create_app(
            &op,
            NewApp {
                name: "corp".to_owned(),
                ..Default::default()
            },
        )
        .unwrap();
    (kms, provider, clock, app.id)
}

fn oidc(slug: &str) -> NewIdp {
    NewIdp {
        slug: slug.to_owned(),
        kind: "oidc".to_owned(),
        issuer: Some(ISSUER.to_owned()),
        client_id: Some("kms".to_owned()),
        client_secret: Some("client-secret".to_owned()),
        ..Default::default()
    }
}

#[test]
fn discovery_is_fetched_at_creation_reused_and_refreshed_daily() {
    let (kms, provider, clock, app) = service();
    let op = kms.operator();
    let idp = kms.create_idp(&op, &app, oidc("corp")).unwrap();
    assert_eq!(
        idp.redirect_uri.as_deref(),
        Some("https://kms.example.com/v1/sso/corp/callback")
    );
    assert_eq!(provider.discoveries.load(Ordering::SeqCst), 1);
    let login = kms.sso_login("corp", Some("/home")).unwrap();
    assert!(login.location.starts_with(&format!("{ISSUER}/auth?")));
    assert!(login.location.contains("code_challenge_method=S256"));
    assert_eq!(
        provider.discoveries.load(Ordering::SeqCst),
        1,
        "reused within the day"
    );
    clock.advance(25 * 3600);
    kms.sso_login("corp", None).unwrap();
    assert_eq!(
        provider.discoveries.load(Ordering::SeqCst),
        2,
        "fetched again after a day"
    );
    kms.sso_login("corp", None).unwrap();
    assert_eq!(provider.discoveries.load(Ordering::SeqCst), 2, "and stored");
    // A day later the provider is down: logins still start with the stored document.
    clock.advance(25 * 3600);
    provider.down.store(true, Ordering::SeqCst);
    assert!(kms.sso_login("corp", None).is_ok());
}

#[test]
fn bad_connections_and_redirects_are_refused_and_change_nothing() {
    let (kms, provider, _clock, app) = service();
    let op = kms.operator();
    for bad in ["A", "x", "has space", &"s".repeat(33)] {
        let e = kms.create_idp(&op, &app, oidc(bad)).unwrap_err();
        assert_eq!(e.code(), kms_core::ErrorCode::InvalidRequest, "{bad}");
    }
    let mut plain_http = oidc("plain");
    plain_http.issuer = Some("http://login.example.com".to_owned());
    assert!(kms.create_idp(&op, &app, plain_http).is_err());
    let mut none = oidc("none-alg");
    none.algorithms = Some(vec!["none".to_owned()]);
    assert!(kms.create_idp(&op, &app, none).is_err());
    assert!(kms.list_idps(&op, &app).unwrap().is_empty());
    assert_eq!(provider.discoveries.load(Ordering::SeqCst), 0);
    kms.create_idp(&op, &app, oidc("corp")).unwrap();
    let taken = kms.create_idp(&op, &app, oidc("corp")).unwrap_err();
    assert_eq!(taken.code(), kms_core::ErrorCode::Conflict);
    for evil in [
        "https://evil.example/",
        "//evil.example",
        "/\\evil",
        "relative",
        "/a\nb",
        "/caf\u{e9}",
        "/a b",
    ] {
        let e = kms.sso_login("corp", Some(evil)).unwrap_err();
        assert_eq!(e.code(), kms_core::ErrorCode::InvalidRequest, "{evil:?}");
    }
    assert_eq!(
        kms.sso_login("nope", None).unwrap_err().code(),
        kms_core::ErrorCode::NotFound
    );
}
