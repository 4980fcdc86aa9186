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
    Caller, Introspection, JwtError, JwtSettings, Kms, ManualClock, MasterKey, NewApp, NewToken,
    OAuthError, OsRandom, Timestamp, TokenResponse,
};
use kms_store::{MemoryStore, SqliteStore};

struct Env {
    kms: Kms,
    clock: Arc<ManualClock>,
    root: Caller,
    api_key: String,
    api_key_id: String,
    app_id: String,
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
        .hash_params(kms_core::dangerous::insecure_hash_params())
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
        app_id: app.id,
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
        .refresh_access_token(&t.refresh_token, Some("token.read"), None)
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
        .refresh_access_token(&first.refresh_token, None, None)
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
        .refresh_access_token(&first.refresh_token, None, None)
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
        .refresh_access_token(&second.refresh_token, None, None)
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
        .refresh_access_token(&first.refresh_token, None, None)
        .unwrap()
        .unwrap();
    e.kms
        .refresh_access_token(&first.refresh_token, None, None)
        .unwrap()
        .unwrap();
    e.clock.advance(11);
    assert!(e
        .kms
        .refresh_access_token(&first.refresh_token, None, None)
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
        e.kms
            .refresh_access_token(&t.refresh_token, None, None)
            .unwrap(),
        Err(OAuthError::InvalidGrant(_))
    ));
    // In-process validation refuses it too, as introspection does.
    assert_eq!(
        e.kms
            .validate_access_token(&t.access_token, None)
            .unwrap_err(),
        kms_core::JwtError::Revoked
    );
}

#[test]
fn in_process_validation_refuses_tokens_of_a_dead_key_or_disabled_application() {
    let e = env();
    let t = issue(&e, None);
    assert!(e.kms.validate_access_token(&t.access_token, None).is_ok());
    e.kms
        .update_app(
            &e.root,
            &e.app_id,
            serde_json::from_value(serde_json::json!({"status": "disabled"})).unwrap(),
        )
        .unwrap();
    assert_eq!(
        e.kms
            .validate_access_token(&t.access_token, None)
            .unwrap_err(),
        kms_core::JwtError::Revoked
    );
    e.kms
        .update_app(
            &e.root,
            &e.app_id,
            serde_json::from_value(serde_json::json!({"status": "active"})).unwrap(),
        )
        .unwrap();
    assert!(e.kms.validate_access_token(&t.access_token, None).is_ok());
    e.kms.delete_token(&e.root, &e.api_key_id).unwrap();
    assert_eq!(
        e.kms
            .validate_access_token(&t.access_token, None)
            .unwrap_err(),
        kms_core::JwtError::Revoked
    );
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
        .refresh_access_token(&t.refresh_token, None, None)
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

// Issue 12: a refresh grants no more than the key holds now, within the family's lifetime,
// under the key's current limits; one live branch per family; revocations audited once.

fn refresh(e: &Env, token: &str) -> Result<TokenResponse, OAuthError> {
    e.kms.refresh_access_token(token, None, None).unwrap()
}

fn refresh_from(
    e: &Env,
    token: &str,
    ip: &str,
) -> kms_core::Result<Result<TokenResponse, OAuthError>> {
    e.kms
        .refresh_access_token(token, None, Some(ip.parse().unwrap()))
}

/// A new API key in the test application.
fn key_with(e: &Env, req: NewToken) -> (String, String) {
    let k = e.kms.create_token(&e.root, &e.app_id, req).unwrap();
    (k.token, k.info.id)
}

fn define_billing(e: &Env) {
    e.kms
        .create_permission(
            &e.root,
            kms_core::NewPermission {
                scope: "billing.read".into(),
                ..Default::default()
            },
        )
        .unwrap();
}

fn audit_count(e: &Env, action: &str) -> usize {
    e.kms
        .list_audit(
            &e.root,
            kms_core::AuditFilter {
                action: Some(action.into()),
                ..Default::default()
            },
            kms_core::PageRequest {
                limit: Some(100),
                ..Default::default()
            },
        )
        .unwrap()
        .items
        .len()
}

fn refresh_exp(e: &Env, token: &str) -> i64 {
    match e.kms.introspect(&e.root, token).unwrap() {
        Introspection::Active { exp, .. } => exp,
        other => panic!("inactive refresh token: {other:?}"),
    }
}

#[test]
fn refresh_grants_no_permission_the_role_lost() {
    let e = env();
    define_billing(&e);
    e.kms
        .create_role(
            &e.root,
            kms_core::NewRole {
                name: "accountant".into(),
                permissions: vec!["app.read".into(), "billing.read".into()],
                ..Default::default()
            },
        )
        .unwrap();
    let (key, _) = key_with(
        &e,
        NewToken {
            name: "acct".into(),
            roles: vec!["accountant".into()],
            ..Default::default()
        },
    );
    let first = e
        .kms
        .issue_access_token(&key, None, None, None)
        .unwrap()
        .unwrap();
    assert_eq!(first.scope, "app.read billing.read");
    let set_role = |perms: &[&str]| {
        e.kms
            .update_role(
                &e.root,
                "accountant",
                kms_core::RoleUpdate {
                    permissions: Some(perms.iter().map(|p| p.to_string()).collect()),
                    ..Default::default()
                },
            )
            .unwrap();
    };
    set_role(&["app.read"]);
    assert!(!e
        .kms
        .verify_token(&key, None, None)
        .unwrap()
        .allows("billing.read"));
    let second = refresh(&e, &first.refresh_token).unwrap();
    assert_eq!(second.scope, "app.read");
    let claims = e
        .kms
        .validate_access_token(&second.access_token, None)
        .unwrap();
    assert_eq!(claims.scope, "app.read");
    // Asking for it explicitly does not bring it back either.
    let narrowed = e
        .kms
        .refresh_access_token(&second.refresh_token, Some("billing.read"), None)
        .unwrap()
        .unwrap();
    assert_eq!(narrowed.scope, "");
    // The family's ceiling is the first exchange's scope: given back, it is granted again.
    set_role(&["app.read", "billing.read"]);
    let again = refresh(&e, &narrowed.refresh_token).unwrap();
    assert_eq!(again.scope, "app.read billing.read");
}

#[test]
fn a_permission_deleted_from_the_policy_disappears_from_every_family() {
    let e = env();
    define_billing(&e);
    let (admin_key, _) = key_with(
        &e,
        NewToken {
            name: "ops".into(),
            scopes: vec!["admin".into()],
            ..Default::default()
        },
    );
    let first = e
        .kms
        .issue_access_token(&admin_key, Some("app.read billing.read"), None, None)
        .unwrap()
        .unwrap();
    assert_eq!(first.scope, "app.read billing.read");
    e.kms.delete_permission(&e.root, "billing.read").unwrap();
    let second = refresh(&e, &first.refresh_token).unwrap();
    assert_eq!(second.scope, "app.read");
    // And an exchange cannot ask for a scope the policy does not define.
    assert!(matches!(
        e.kms
            .issue_access_token(&admin_key, Some("billing.read"), None, None)
            .unwrap(),
        Err(OAuthError::InvalidScope(_))
    ));
}

#[test]
fn a_refresh_grants_nothing_the_first_exchange_did_not() {
    let e = env();
    let first = issue(&e, Some("app.read"));
    let second = refresh(&e, &first.refresh_token).unwrap();
    assert_eq!(second.scope, "app.read");
    let err = e
        .kms
        .refresh_access_token(&second.refresh_token, Some("token.read"), None)
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, OAuthError::InvalidScope(_)));
}

#[test]
fn refresh_never_extends_the_family_lifetime() {
    let e = env();
    let first = issue(&e, None);
    let family_end = refresh_exp(&e, &first.refresh_token);
    e.clock.advance(29 * 24 * 3600);
    let second = refresh(&e, &first.refresh_token).unwrap();
    assert_eq!(refresh_exp(&e, &second.refresh_token), family_end);
    e.clock.advance(24 * 3600);
    assert!(matches!(
        refresh(&e, &second.refresh_token),
        Err(OAuthError::InvalidGrant(_))
    ));
}

#[test]
fn refresh_fails_when_the_key_expired_was_deleted_or_its_application_is_disabled() {
    let e = env();
    let (short, _) = key_with(
        &e,
        NewToken {
            name: "short".into(),
            scopes: vec!["app.read".into()],
            expires_in: Some(3600),
            ..Default::default()
        },
    );
    let t = e
        .kms
        .issue_access_token(&short, None, None, None)
        .unwrap()
        .unwrap();
    e.clock.advance(3601);
    assert!(matches!(
        refresh(&e, &t.refresh_token),
        Err(OAuthError::InvalidGrant(_))
    ));

    let (doomed, doomed_id) = key_with(
        &e,
        NewToken {
            name: "doomed".into(),
            scopes: vec!["app.read".into()],
            ..Default::default()
        },
    );
    let t = e
        .kms
        .issue_access_token(&doomed, None, None, None)
        .unwrap()
        .unwrap();
    e.kms.delete_token(&e.root, &doomed_id).unwrap();
    assert!(matches!(
        refresh(&e, &t.refresh_token),
        Err(OAuthError::InvalidGrant(_))
    ));

    let t = issue(&e, None);
    e.kms
        .update_app(
            &e.root,
            &e.app_id,
            kms_core::AppUpdate {
                status: Some("disabled".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(matches!(
        refresh(&e, &t.refresh_token),
        Err(OAuthError::InvalidGrant(_))
    ));
}

#[test]
fn exchanges_inside_the_overlap_window_yield_one_successor() {
    let e = env_on(Arc::new(MemoryStore::new()), 30);
    let first = issue(&e, None);
    let a = refresh(&e, &first.refresh_token).unwrap();
    let b = refresh(&e, &first.refresh_token).unwrap();
    let c = refresh(&e, &first.refresh_token).unwrap();
    assert_eq!(a.refresh_token, b.refresh_token);
    assert_eq!(a.refresh_token, c.refresh_token);
    // Each exchange still gets its own access token, in the same family.
    assert_ne!(a.access_token, b.access_token);
    assert!(e.kms.validate_access_token(&b.access_token, None).is_ok());
    // One branch: its successor refreshes once; presenting it again later is reuse.
    let next = refresh(&e, &a.refresh_token).unwrap();
    e.clock.advance(31);
    assert!(matches!(
        refresh(&e, &b.refresh_token),
        Err(OAuthError::InvalidGrant(_))
    ));
    assert!(matches!(
        refresh(&e, &next.refresh_token),
        Err(OAuthError::InvalidGrant(_))
    ));
    assert_eq!(
        e.kms.validate_access_token(&c.access_token, None),
        Err(JwtError::Revoked)
    );
}

#[test]
fn inside_the_window_a_token_whose_successor_was_used_is_reuse() {
    let e = env_on(Arc::new(MemoryStore::new()), 30);
    let first = issue(&e, None);
    let a = refresh(&e, &first.refresh_token).unwrap();
    let next = refresh(&e, &a.refresh_token).unwrap();
    // A stolen copy of the first token, presented inside its window, starts no branch.
    assert!(matches!(
        refresh(&e, &first.refresh_token),
        Err(OAuthError::InvalidGrant(_))
    ));
    assert!(matches!(
        refresh(&e, &next.refresh_token),
        Err(OAuthError::InvalidGrant(_))
    ));
    assert_eq!(
        e.kms.validate_access_token(&next.access_token, None),
        Err(JwtError::Revoked)
    );
}

#[test]
fn the_overlap_successor_is_in_no_stored_record_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    let e = env_on(store, 30);
    let first = issue(&e, None);
    let a = refresh(&e, &first.refresh_token).unwrap();
    let b = refresh(&e, &first.refresh_token).unwrap();
    assert_eq!(a.refresh_token, b.refresh_token);
    drop(e.kms);
    let mut bytes = Vec::new();
    for suffix in ["", "-wal"] {
        if let Ok(b) = std::fs::read(format!("{}{suffix}", db.display())) {
            bytes.extend(b);
        }
    }
    let secret = &a.refresh_token["kmsrt_".len() + 16..];
    assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
}

#[test]
fn exchanging_an_api_key_spends_a_use() {
    let e = env();
    let (key, _) = key_with(
        &e,
        NewToken {
            name: "once".into(),
            scopes: vec!["app.read".into()],
            uses: Some(1),
            ..Default::default()
        },
    );
    assert!(e
        .kms
        .issue_access_token(&key, None, None, None)
        .unwrap()
        .is_ok());
    assert_eq!(
        e.kms.verify_token(&key, None, None).unwrap().code(),
        kms_core::VerifyCode::UsageExceeded
    );
    assert!(e
        .kms
        .issue_access_token(&key, None, None, None)
        .unwrap()
        .is_err());
}

#[test]
fn a_refused_exchange_spends_no_use() {
    let e = env();
    let (key, _) = key_with(
        &e,
        NewToken {
            name: "once".into(),
            scopes: vec!["app.read".into()],
            uses: Some(1),
            ..Default::default()
        },
    );
    assert!(matches!(
        e.kms
            .issue_access_token(&key, Some("admin"), None, None)
            .unwrap(),
        Err(OAuthError::InvalidScope(_))
    ));
    assert_eq!(
        e.kms.verify_token(&key, None, None).unwrap().code(),
        kms_core::VerifyCode::Valid
    );
}

#[test]
fn each_refresh_spends_a_use() {
    let e = env();
    let (key, _) = key_with(
        &e,
        NewToken {
            name: "twice".into(),
            scopes: vec!["app.read".into()],
            uses: Some(2),
            ..Default::default()
        },
    );
    let first = e
        .kms
        .issue_access_token(&key, None, None, None)
        .unwrap()
        .unwrap();
    let second = refresh(&e, &first.refresh_token).unwrap();
    assert!(matches!(
        refresh(&e, &second.refresh_token),
        Err(OAuthError::InvalidGrant(_))
    ));
    assert_eq!(
        e.kms.verify_token(&key, None, None).unwrap().code(),
        kms_core::VerifyCode::UsageExceeded
    );
}

#[test]
fn refresh_rechecks_the_current_network_allow_lists() {
    let e = env();
    let first = e
        .kms
        .issue_access_token(&e.api_key, None, None, Some("192.0.2.7".parse().unwrap()))
        .unwrap()
        .unwrap();
    e.kms
        .update_token(
            &e.root,
            &e.api_key_id,
            kms_core::TokenUpdate {
                ip_allow: Some(Some(vec!["10.0.0.0/8".into()])),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(matches!(
        refresh_from(&e, &first.refresh_token, "192.0.2.7").unwrap(),
        Err(OAuthError::InvalidGrant(_))
    ));
    // Without a known address, a non-empty allow-list admits nothing.
    assert!(matches!(
        refresh(&e, &first.refresh_token),
        Err(OAuthError::InvalidGrant(_))
    ));
    // Refused attempts spent nothing: from inside the network it refreshes.
    let second = refresh_from(&e, &first.refresh_token, "10.1.2.3")
        .unwrap()
        .unwrap();
    // The application's allow-list applies as well.
    e.kms
        .update_app(
            &e.root,
            &e.app_id,
            kms_core::AppUpdate {
                ip_allow: Some(vec!["10.9.0.0/16".into()]),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(matches!(
        refresh_from(&e, &second.refresh_token, "10.1.2.3").unwrap(),
        Err(OAuthError::InvalidGrant(_))
    ));
    assert!(refresh_from(&e, &second.refresh_token, "10.9.1.1")
        .unwrap()
        .is_ok());
}

#[test]
fn refresh_applies_the_key_rate_limit() {
    let e = env();
    let (key, _) = key_with(
        &e,
        NewToken {
            name: "slow".into(),
            scopes: vec!["app.read".into()],
            ratelimit: Some(kms_core::RateLimitInput {
                limit: 2,
                per_seconds: 3600,
            }),
            ..Default::default()
        },
    );
    let first = e
        .kms
        .issue_access_token(&key, None, None, None)
        .unwrap()
        .unwrap();
    let second = refresh(&e, &first.refresh_token).unwrap();
    assert!(matches!(
        e.kms
            .refresh_access_token(&second.refresh_token, None, None),
        Err(kms_core::Error::RateLimited { .. })
    ));
    assert!(matches!(
        e.kms.issue_access_token(&key, None, None, None),
        Err(kms_core::Error::RateLimited { .. })
    ));
}

#[test]
fn revoking_an_access_token_is_audited_once() {
    let e = env();
    let t = issue(&e, None);
    e.kms.revoke_access_token(&e.root, &t.access_token).unwrap();
    e.kms.revoke_access_token(&e.root, &t.access_token).unwrap();
    assert_eq!(audit_count(&e, "access.revoke"), 1);
    let claims_jti = parts(&t.access_token).1["jti"].as_str().unwrap().to_owned();
    let events = e
        .kms
        .list_audit(
            &e.root,
            kms_core::AuditFilter {
                action: Some("access.revoke".into()),
                ..Default::default()
            },
            Default::default(),
        )
        .unwrap();
    assert_eq!(events.items[0].target, claims_jti);
    assert_eq!(events.items[0].app_id.as_deref(), Some(e.app_id.as_str()));
    assert!(!serde_json::to_string(&events)
        .unwrap()
        .contains(&t.access_token));
}

#[test]
fn revoking_a_revoked_family_again_writes_no_event() {
    let e = env();
    let t = issue(&e, None);
    for _ in 0..3 {
        e.kms
            .revoke_access_token(&e.root, &t.refresh_token)
            .unwrap();
    }
    assert_eq!(audit_count(&e, "refresh.revoke"), 1);
    // Nor does revoking an access token of that family, already dead with it.
    e.kms.revoke_access_token(&e.root, &t.access_token).unwrap();
    assert_eq!(audit_count(&e, "access.revoke"), 0);
    // Reuse of a revoked family's token is no new reuse event either.
    assert!(matches!(
        refresh(&e, &t.refresh_token),
        Err(OAuthError::InvalidGrant(_))
    ));
    assert_eq!(audit_count(&e, "refresh.reuse"), 0);
}

#[test]
fn concurrent_exchanges_inside_the_window_share_one_successor() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("kms.db")).unwrap());
    let e = env_on(store, 30);
    let first = issue(&e, None);
    let barrier = std::sync::Barrier::new(4);
    let successors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    refresh(&e, &first.refresh_token).unwrap().refresh_token
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        successors.iter().all(|t| t == &successors[0]),
        "{successors:?}"
    );
    assert!(refresh(&e, &successors[0]).is_ok());
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
        .refresh_access_token(&pair.refresh_token, None, None)
        .unwrap()
        .is_ok());
    // The operator has no API key to exchange.
    assert!(matches!(
        e.kms.issue_access_token_for(&e.root, None, None).unwrap(),
        Err(kms_core::OAuthError::InvalidClient(_))
    ));
}
