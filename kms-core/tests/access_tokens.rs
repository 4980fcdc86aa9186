//! Access tokens through the public API: issue, validate, refresh rotation and reuse,
//! revocation, introspection, key rotation, and the attacks of RFC 8725.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::Arc;

use base64::Engine;
use kms_core::store::Store;
use kms_core::{
    Caller, HashParams, Introspection, JwtError, JwtSettings, Kms, ManualClock, MasterKey, NewApp,
    NewToken, OAuthError, OsRandom, Timestamp, TokenResponse,
};
use kms_store::{MemoryStore, SqliteStore};

struct Env {
    kms: Kms,
    clock: Arc<ManualClock>,
    root: Caller,
    api_key: String,
    api_key_id: String,
    store: Arc<dyn Store>,
    master: MasterKey,
}

fn build(
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    master: MasterKey,
    overlap: i64,
) -> kms_core::Result<Kms> {
    Kms::builder(store)
        .clock(clock)
        .hash_params(HashParams::insecure_for_tests())
        .master_key(master)
        .jwt_settings(JwtSettings {
            refresh_overlap_secs: overlap,
            ..Default::default()
        })
        .build()
}

fn env_on(store: Arc<dyn Store>, overlap: i64) -> Env {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )));
    let master = MasterKey::generate(&OsRandom).unwrap();
    let kms = build(store.clone(), clock.clone(), master.clone(), overlap).unwrap();
    kms.initialize().unwrap();
    let root = kms.operator();
    let app = kms
        .create_app(
            &root,
            NewApp {
                name: "billing".into(),
                token_prefix: None,
                ..Default::default()
            },
        )
        .unwrap();
    let key = kms
        .create_token(
            &root,
            &app.id,
            NewToken {
                name: "svc".into(),
                scopes: vec!["app.read".into(), "token.read".into()],
                ..Default::default()
            },
        )
        .unwrap();
    Env {
        kms,
        clock,
        root,
        api_key: key.token,
        api_key_id: key.info.id,
        store,
        master,
    }
}

fn env() -> Env {
    env_on(Arc::new(MemoryStore::new()), 0)
}

fn issue(e: &Env, scope: Option<&str>) -> TokenResponse {
    e.kms
        .issue_access_token(&e.api_key, scope, None, None)
        .unwrap()
        .unwrap()
}

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn parts(jwt: &str) -> (serde_json::Value, serde_json::Value, String) {
    let p: Vec<&str> = jwt.split('.').collect();
    let d = |s: &str| {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .unwrap(),
        )
        .unwrap()
    };
    (d(p[0]), d(p[1]), p[2].to_owned())
}

#[test]
fn issued_tokens_carry_the_documented_header_and_claims() {
    let e = env();
    let t = issue(&e, None);
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(t.expires_in, 900);
    assert_eq!(t.scope, "app.read token.read");
    let (h, c, _) = parts(&t.access_token);
    assert_eq!(h["alg"], "EdDSA");
    assert_eq!(h["typ"], "at+jwt");
    assert!(h["kid"].is_string());
    for claim in [
        "iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope", "app_id",
    ] {
        assert!(!c[claim].is_null(), "{claim} missing");
    }
    assert_eq!(c["sub"], e.api_key_id.as_str());
    let claims = e.kms.validate_access_token(&t.access_token, None).unwrap();
    assert_eq!(claims.scope, "app.read token.read");
    let jwks = e.kms.jwks();
    assert_eq!(jwks["keys"][0]["kid"], h["kid"]);
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
}

#[test]
fn scope_may_be_narrowed_never_widened() {
    let e = env();
    assert_eq!(issue(&e, Some("app.read")).scope, "app.read");
    let err = e
        .kms
        .issue_access_token(&e.api_key, Some("app.read admin"), None, None)
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, OAuthError::InvalidScope(_)));
    let bad = e
        .kms
        .issue_access_token("kms_nope", None, None, None)
        .unwrap()
        .unwrap_err();
    assert!(matches!(bad, OAuthError::InvalidClient(_)));
    let t = issue(&e, Some("app.read"));
    let err = e
        .kms
        .refresh_access_token(&t.refresh_token, Some("token.read"))
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, OAuthError::InvalidScope(_)));
}

#[test]
fn refresh_rotates_and_reuse_revokes_the_family() {
    let e = env();
    let first = issue(&e, None);
    let second = e
        .kms
        .refresh_access_token(&first.refresh_token, None)
        .unwrap()
        .unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert!(e
        .kms
        .validate_access_token(&second.access_token, None)
        .is_ok());
    // Reusing the spent one: invalid_grant, and every token of the family dies.
    let reuse = e
        .kms
        .refresh_access_token(&first.refresh_token, None)
        .unwrap()
        .unwrap_err();
    assert!(matches!(reuse, OAuthError::InvalidGrant(_)));
    assert_eq!(
        e.kms.validate_access_token(&first.access_token, None),
        Err(JwtError::Revoked)
    );
    assert_eq!(
        e.kms.validate_access_token(&second.access_token, None),
        Err(JwtError::Revoked)
    );
    let after = e
        .kms
        .refresh_access_token(&second.refresh_token, None)
        .unwrap()
        .unwrap_err();
    assert!(matches!(after, OAuthError::InvalidGrant(_)));
    // Another family is untouched.
    let other = issue(&e, None);
    assert!(e
        .kms
        .validate_access_token(&other.access_token, None)
        .is_ok());
}

#[test]
fn overlap_window_tolerates_a_retry() {
    let e = env_on(Arc::new(MemoryStore::new()), 10);
    let first = issue(&e, None);
    e.kms
        .refresh_access_token(&first.refresh_token, None)
        .unwrap()
        .unwrap();
    e.kms
        .refresh_access_token(&first.refresh_token, None)
        .unwrap()
        .unwrap();
    e.clock.advance(11);
    assert!(e
        .kms
        .refresh_access_token(&first.refresh_token, None)
        .unwrap()
        .is_err());
}

#[test]
fn revocation_and_introspection() {
    let e = env();
    let t = issue(&e, None);
    let Introspection::Active {
        sub, token_type, ..
    } = e.kms.introspect(&e.root, &t.access_token).unwrap()
    else {
        panic!("inactive")
    };
    assert_eq!(
        (sub.as_str(), token_type),
        (e.api_key_id.as_str(), "Bearer")
    );
    assert!(matches!(
        e.kms.introspect(&e.root, &t.refresh_token).unwrap(),
        Introspection::Active { .. }
    ));
    e.kms.revoke_access_token(&e.root, &t.access_token).unwrap();
    let inactive = e.kms.introspect(&e.root, &t.access_token).unwrap();
    assert_eq!(
        serde_json::to_value(&inactive).unwrap(),
        serde_json::json!({"active": false})
    );
    assert_eq!(
        e.kms.validate_access_token(&t.access_token, None),
        Err(JwtError::Revoked)
    );
    // Unknown tokens revoke silently and introspect inactive.
    e.kms.revoke_access_token(&e.root, "garbage").unwrap();
    assert_eq!(
        e.kms.introspect(&e.root, "garbage").unwrap(),
        Introspection::inactive()
    );
}

#[test]
fn revoking_the_api_key_makes_its_access_tokens_inactive() {
    let e = env();
    let t = issue(&e, None);
    e.kms.revoke_token(&e.root, &e.api_key_id).unwrap();
    assert_eq!(
        e.kms.introspect(&e.root, &t.access_token).unwrap(),
        Introspection::inactive()
    );
    assert!(matches!(
        e.kms.refresh_access_token(&t.refresh_token, None).unwrap(),
        Err(OAuthError::InvalidGrant(_))
    ));
}

#[test]
fn expiry_and_not_before_use_the_leeway() {
    let e = env();
    let t = issue(&e, None);
    e.clock.advance(900 + 29);
    assert!(e.kms.validate_access_token(&t.access_token, None).is_ok());
    e.clock.advance(2);
    assert_eq!(
        e.kms.validate_access_token(&t.access_token, None),
        Err(JwtError::Expired)
    );
    let e = env();
    e.clock.advance(3600);
    let future = issue(&e, None);
    e.clock.advance(-3600);
    assert_eq!(
        e.kms.validate_access_token(&future.access_token, None),
        Err(JwtError::NotYetValid)
    );
}

#[test]
fn rfc8725_attacks_are_rejected() {
    let e = env();
    let t = issue(&e, None);
    let (h, c, sig) = parts(&t.access_token);
    // alg: none
    let mut none = h.clone();
    none["alg"] = "none".into();
    assert!(e
        .kms
        .validate_access_token(&format!("{}.{}.", b64(&none), b64(&c)), None)
        .is_err());
    // HS256 "signed" with the public key
    let mut hs = h.clone();
    hs["alg"] = "HS256".into();
    let public = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(e.kms.jwks()["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let signing_input = format!("{}.{}", b64(&hs), b64(&c));
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&public).unwrap();
    mac.update(signing_input.as_bytes());
    let forged = format!(
        "{signing_input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );
    assert_eq!(
        e.kms.validate_access_token(&forged, None),
        Err(JwtError::Malformed)
    );
    // unknown kid
    let mut kid = h.clone();
    kid["kid"] = "k_doesnotexist".into();
    assert_eq!(
        e.kms
            .validate_access_token(&format!("{}.{}.{sig}", b64(&kid), b64(&c)), None),
        Err(JwtError::UnknownKey)
    );
    // missing typ
    let mut typ = h.clone();
    typ.as_object_mut().unwrap().remove("typ");
    assert!(e
        .kms
        .validate_access_token(&format!("{}.{}.{sig}", b64(&typ), b64(&c)), None)
        .is_err());
    // tampered payload
    let mut wider = c.clone();
    wider["scope"] = "admin".into();
    assert_eq!(
        e.kms
            .validate_access_token(&format!("{}.{}.{sig}", b64(&h), b64(&wider)), None),
        Err(JwtError::BadSignature)
    );
    // wrong audience
    assert_eq!(
        e.kms
            .validate_access_token(&t.access_token, Some("someone-else")),
        Err(JwtError::Claims)
    );
    // garbage
    for g in ["", "a.b.c", "....", &"x".repeat(10_000)] {
        assert!(e.kms.validate_access_token(g, None).is_err());
    }
}

#[test]
fn rotated_keys_verify_until_retired() {
    let e = env();
    let old = issue(&e, None);
    let new_key = e.kms.rotate_keys(&e.root).unwrap();
    let fresh = issue(&e, None);
    assert_eq!(parts(&fresh.access_token).0["kid"], new_key.kid.as_str());
    assert!(e.kms.validate_access_token(&old.access_token, None).is_ok());
    assert_eq!(e.kms.jwks()["keys"].as_array().unwrap().len(), 2);
    let states: Vec<&str> = e
        .kms
        .list_keys(&e.root)
        .unwrap()
        .iter()
        .map(|k| k.state)
        .collect();
    assert_eq!(states, ["active", "verify-only"]);
    e.clock.advance(900 + 31);
    assert_eq!(e.kms.retire_due_keys().unwrap(), 1);
    assert_eq!(e.kms.jwks()["keys"].as_array().unwrap().len(), 1);
    assert_eq!(
        e.kms.validate_access_token(&old.access_token, None),
        Err(JwtError::UnknownKey)
    );
}

#[test]
fn wrong_master_key_stops_the_start_and_the_database_never_holds_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    let e = env_on(store, 0);
    let t = issue(&e, None);
    let r = e
        .kms
        .refresh_access_token(&t.refresh_token, None)
        .unwrap()
        .unwrap();
    drop(e.kms);
    let _ = &e.store;
    let wrong = MasterKey::generate(&OsRandom).unwrap();
    let again: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    let err = build(again.clone(), e.clock.clone(), wrong, 0).unwrap_err();
    assert!(err.to_string().contains("master key"), "{err}");
    assert!(build(again, e.clock.clone(), e.master.clone(), 0).is_ok());
    let mut bytes = Vec::new();
    for suffix in ["", "-wal"] {
        if let Ok(b) = std::fs::read(format!("{}{suffix}", db.display())) {
            bytes.extend(b);
        }
    }
    let master_b64 = e.master.to_base64();
    for secret in [
        t.refresh_token.as_str(),
        &t.refresh_token[16..],
        r.refresh_token.as_str(),
        master_b64.as_str(),
    ] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a secret reached the database"
        );
    }
}

#[test]
fn application_allow_list_applies_to_all_its_tokens() {
    let e = env();
    let app = e
        .kms
        .list_apps(&e.root, Default::default())
        .unwrap()
        .items
        .into_iter()
        .find(|a| a.name == "billing")
        .unwrap();
    let upd = kms_core::AppUpdate {
        ip_allow: Some(vec!["10.0.0.0/8".into()]),
        ..Default::default()
    };
    assert_eq!(
        e.kms
            .update_app(&e.root, &app.id, upd)
            .unwrap()
            .security
            .ip_allow
            .len(),
        1
    );
    let at = |ip: &str| {
        e.kms
            .verify_token(&e.api_key, None, Some(ip.parse().unwrap()))
            .unwrap()
            .code()
    };
    assert_eq!(at("10.9.9.9"), kms_core::VerifyCode::Valid);
    assert_eq!(at("192.0.2.1"), kms_core::VerifyCode::Forbidden);
    let bad = kms_core::AppUpdate {
        ip_allow: Some(vec!["nonsense".into()]),
        ..Default::default()
    };
    assert!(matches!(
        e.kms.update_app(&e.root, &app.id, bad),
        Err(kms_core::Error::InvalidRequest { .. })
    ));
}

#[test]
fn applications_may_require_signed_requests() {
    use kms_core::request_signing::{sign_request, SignatureError, SignedRequest};
    let e = env();
    let app = e
        .kms
        .list_apps(&e.root, Default::default())
        .unwrap()
        .items
        .into_iter()
        .find(|a| a.name == "billing")
        .unwrap();
    let caller = e.kms.authenticate(&e.api_key, None).unwrap();
    let now = kms_core::Clock::now(&*e.clock).unix();
    let req = SignedRequest {
        method: "GET",
        path: "/v1/apps",
        query: "",
        timestamp: now,
        nonce: "nonce-000001",
        body: b"",
    };
    // Not required yet: anything passes.
    assert_eq!(
        e.kms.check_signed_request(&caller, &req, "").unwrap(),
        Ok(())
    );
    let secret = e
        .kms
        .rotate_request_signing_secret(&e.root, &app.id)
        .unwrap();
    let upd = kms_core::AppUpdate {
        require_signed_requests: Some(true),
        ..Default::default()
    };
    e.kms.update_app(&e.root, &app.id, upd).unwrap();
    // Each request authenticates afresh and sees the application as it is now.
    let caller = e.kms.authenticate(&e.api_key, None).unwrap();
    assert!(caller.requires_signed_requests());
    assert_eq!(
        e.kms.check_signed_request(&caller, &req, "").unwrap(),
        Err(SignatureError::Missing)
    );
    let sig = sign_request(secret.as_bytes(), &req);
    assert_eq!(
        e.kms.check_signed_request(&caller, &req, &sig).unwrap(),
        Ok(())
    );
    assert_eq!(
        e.kms.check_signed_request(&caller, &req, &sig).unwrap(),
        Err(SignatureError::Replayed)
    );
    let tampered = SignedRequest {
        body: b"{}",
        nonce: "nonce-000002",
        ..req
    };
    assert_eq!(
        e.kms
            .check_signed_request(&caller, &tampered, &sig)
            .unwrap(),
        Err(SignatureError::BadSignature)
    );
    // The operator is never asked to sign, and the secret is in no stored record in plaintext.
    assert_eq!(
        e.kms.check_signed_request(&e.root, &tampered, "").unwrap(),
        Ok(())
    );
    let stored = e.store.get_app(&app.id).unwrap().unwrap();
    let sealed = stored.security.signing_secret.clone().unwrap();
    assert!(!sealed.windows(secret.len()).any(|w| w == secret.as_bytes()));
    assert!(!serde_json::to_string(&stored)
        .unwrap()
        .contains("signing_secret"));
}

#[test]
fn a_refresh_token_needs_the_signature_its_familys_application_requires() {
    use kms_core::request_signing::{sign_request, SignatureError, SignedRequest};
    let e = env();
    let app = e
        .kms
        .list_apps(&e.root, Default::default())
        .unwrap()
        .items
        .into_iter()
        .find(|a| a.name == "billing")
        .unwrap();
    let caller = e.kms.authenticate(&e.api_key, None).unwrap();
    let pair = e
        .kms
        .issue_access_token_for(&caller, None, None)
        .unwrap()
        .unwrap();
    let now = kms_core::Clock::now(&*e.clock).unix();
    let req = SignedRequest {
        method: "POST",
        path: "/v1/auth/token",
        query: "",
        timestamp: now,
        nonce: "nonce-refresh-01",
        body: b"{}",
    };
    // Not required: anything passes, and a token naming no family is left to the grant.
    assert_eq!(
        e.kms
            .check_signed_refresh(&pair.refresh_token, &req, "")
            .unwrap(),
        Ok(())
    );
    let secret = e
        .kms
        .rotate_request_signing_secret(&e.root, &app.id)
        .unwrap();
    let upd = kms_core::AppUpdate {
        require_signed_requests: Some(true),
        ..Default::default()
    };
    e.kms.update_app(&e.root, &app.id, upd).unwrap();
    // The family's application as it is now decides, though the refresh carries no bearer.
    assert_eq!(
        e.kms
            .check_signed_refresh(&pair.refresh_token, &req, "")
            .unwrap(),
        Err(SignatureError::Missing)
    );
    assert_eq!(
        e.kms
            .check_signed_refresh("kmsrt_unknown", &req, "")
            .unwrap(),
        Ok(())
    );
    let sig = sign_request(secret.as_bytes(), &req);
    assert_eq!(
        e.kms
            .check_signed_refresh(&pair.refresh_token, &req, &sig)
            .unwrap(),
        Ok(())
    );
    // Checking spent nothing but the nonce: the refresh token still exchanges.
    assert!(e
        .kms
        .refresh_access_token(&pair.refresh_token, None)
        .unwrap()
        .is_ok());
    // The operator has no API key to exchange.
    assert!(matches!(
        e.kms.issue_access_token_for(&e.root, None, None).unwrap(),
        Err(kms_core::OAuthError::InvalidClient(_))
    ));
}
