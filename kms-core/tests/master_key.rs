//! Rotation of the master key through the public API, on a real SQLite file: every sealed
//! secret is re-sealed in one transaction, the old key opens nothing afterwards, tokens
//! signed before keep verifying, and a rotation that fails changes nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use kms_core::store::{IdpProtocol, IdpRecord, OidcSettings, SessionRecord, UserRecord};
use kms_core::store::{Mutation, Store};
use kms_core::{Kms, MasterKey, NewApp, NewToken, OsRandom, Timestamp, MASTER_KEY_SET_AT_KEY};
use kms_store::SqliteStore;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn build(store: Arc<dyn Store>, key: &MasterKey) -> kms_core::Result<Kms> {
    Kms::builder(store)
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .master_key(key.clone())
        .build()
}

struct Seeded {
    root_token: String,
    user_id: String,
    api_key: String,
    app_id: String,
    idp_id: String,
    session_id: String,
    jwt: String,
}

/// An initialised database with one secret of every sealed kind.
fn seed(kms: &Kms, store: &Arc<dyn Store>, key: &MasterKey) -> Seeded {
    let root_token = kms.initialize().unwrap().token;
    let root = kms.operator();
    let app = kms
        .create_app(
            &root,
            NewApp {
                name: "billing".into(),
                ..Default::default()
            },
        )
        .unwrap();
    kms.rotate_request_signing_secret(&root, &app.id).unwrap();
    let token = kms
        .create_token(
            &root,
            &app.id,
            NewToken {
                name: "svc".into(),
                scopes: vec!["app.read".into()],
                ..Default::default()
            },
        )
        .unwrap();
    let jwt = kms
        .issue_access_token(&token.token, None, None, None)
        .unwrap()
        .unwrap()
        .access_token;
    let now = Timestamp::from_unix(1_900_000_000);
    let idp_id = "idp_rotation0001".to_owned();
    let user_id = "usr_rotation0001".to_owned();
    let session_id = "ses_rotation0001".to_owned();
    let seal =
        |context: &str, plain: &str| b64(&key.seal(context, plain.as_bytes(), &OsRandom).unwrap());
    let idp = IdpRecord {
        id: idp_id.clone(),
        app_id: app.id.clone(),
        slug: "corp".into(),
        status: kms_core::store::IdpStatus::Active,
        created_at: now,
        role_map: BTreeMap::new(),
        default_roles: vec![],
        email_domains: vec![],
        protocol: IdpProtocol::Oidc(OidcSettings {
            issuer: "https://idp.example".into(),
            client_id: "kms".into(),
            sealed_client_secret: Some(seal(&format!("{idp_id}:client_secret"), "client-secret")),
            scopes: vec!["openid".into()],
            groups_claim: None,
            algorithms: vec!["RS256".into()],
            discovery: serde_json::json!({}),
            discovered_at: now,
        }),
    };
    let user = UserRecord {
        id: user_id.clone(),
        app_id: app.id.clone(),
        email: None,
        name: None,
        status: kms_core::store::UserStatus::Active,
        roles: vec![],
        mapped_roles: vec![],
        grants: vec![],
        identities: vec![],
        created_at: now,
        last_login_at: None,
    };
    let session = SessionRecord {
        id: session_id.clone(),
        user_id: user_id.clone(),
        app_id: app.id.clone(),
        idp_id: idp_id.clone(),
        secret_hash: "00".repeat(32),
        created_at: now,
        expires_at: now.plus_secs(3600),
        last_used_at: now,
        ip: None,
        user_agent: None,
        revoked_at: None,
        revoke_reason: None,
        sealed_upstream_refresh: Some(seal(&format!("{session_id}:upstream"), "upstream-refresh")),
        revalidated_at: Some(now),
    };
    store
        .apply(&[
            Mutation::PutIdp(idp),
            Mutation::PutUser(user),
            Mutation::InsertSession(session),
        ])
        .unwrap();
    // The user logs out from an address: the event's personal fields (the address) are
    // sealed under the user's person key, itself sealed under the master key.
    let user_record = store.get_user(&user_id).unwrap().unwrap();
    let session_token = kms_core::internal::start_session(kms, &user_record, &idp_id).unwrap();
    let ip: std::net::IpAddr = "203.0.113.7".parse().unwrap();
    let user_caller = kms
        .authenticate(&session_token, Some(ip))
        .unwrap()
        .with_request(Some(ip), None);
    kms.logout(&user_caller).unwrap();
    Seeded {
        root_token,
        user_id,
        api_key: token.token,
        app_id: app.id,
        idp_id,
        session_id,
        jwt,
    }
}

/// Whether `key` opens every sealed secret in the store.
fn opens_everything(store: &Arc<dyn Store>, key: &MasterKey, s: &Seeded) -> bool {
    let keys = store.list_signing_keys().unwrap();
    assert!(!keys.is_empty());
    let signing = keys
        .iter()
        .all(|k| key.open(&k.kid, &k.sealed_private).is_ok());
    let app = store.get_app(&s.app_id).unwrap().unwrap();
    let request = key
        .open(
            &format!("signing:{}", s.app_id),
            app.security.signing_secret.as_ref().unwrap(),
        )
        .is_ok();
    let idp = store.get_idp(&s.idp_id).unwrap().unwrap();
    let IdpProtocol::Oidc(oidc) = idp.protocol else {
        panic!("not OIDC")
    };
    let client = key
        .open(
            &format!("{}:client_secret", s.idp_id),
            &unb64(oidc.sealed_client_secret.as_ref().unwrap()),
        )
        .is_ok_and(|p| p == b"client-secret");
    let session = store.get_session(&s.session_id).unwrap().unwrap();
    let upstream = key
        .open(
            &format!("{}:upstream", s.session_id),
            &unb64(session.sealed_upstream_refresh.as_ref().unwrap()),
        )
        .is_ok_and(|p| p == b"upstream-refresh");
    let all = [signing, request, client, upstream];
    assert!(
        all.iter().all(|b| *b) || all.iter().all(|b| !*b),
        "some secrets open and some do not: {all:?}"
    );
    signing
}

#[test]
fn rotation_reseals_everything_and_the_old_key_opens_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("kms.db")).unwrap());
    let old = MasterKey::generate(&OsRandom).unwrap();
    let new = MasterKey::generate(&OsRandom).unwrap();
    let kms = build(store.clone(), &old).unwrap();
    let seeded = seed(&kms, &store, &old);
    assert!(opens_everything(&store, &old, &seeded));

    let report = kms.rotate_master_key(&new).unwrap();
    assert_eq!(report.signing_keys, 1);
    assert_eq!(report.request_signing_secrets, 1);
    assert_eq!(report.client_secrets, 1);
    assert_eq!(report.upstream_tokens, 1);
    assert_eq!(report.person_keys, 1);
    assert_eq!(
        store.get_meta(MASTER_KEY_SET_AT_KEY).unwrap().as_deref(),
        Some(report.set_at.as_str())
    );

    // Reopened from the file: the new key opens everything, the old nothing.
    drop(kms);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("kms.db")).unwrap());
    assert!(opens_everything(&store, &new, &seeded));
    assert!(!opens_everything(&store, &old, &seeded));
    let err = build(store.clone(), &old).unwrap_err().to_string();
    assert!(err.contains("master key cannot open"), "{err}");
    let kms = build(store.clone(), &new).unwrap();
    // The signing key is the same key, re-sealed: a token signed before still verifies,
    // and new ones are issued.
    kms.validate_access_token(&seeded.jwt, None).unwrap();
    kms.issue_access_token(&seeded.api_key, None, None, None)
        .unwrap()
        .unwrap();
    // The person key opens under the new master key: the address reads back.
    let caller = kms.authenticate(&seeded.root_token, None).unwrap();
    let about = kms
        .list_audit(
            &caller,
            kms_core::AuditFilter {
                action: Some("session.revoke".into()),
                ..Default::default()
            },
            kms_core::PageRequest::default(),
        )
        .unwrap();
    assert_eq!(about.items.len(), 1);
    assert_eq!(
        about.items[0].subject.as_deref(),
        Some(seeded.user_id.as_str())
    );
    assert_eq!(about.items[0].ip.as_deref(), Some("203.0.113.7"));
    assert!(
        about.items[0].personal.is_none(),
        "{:?}",
        about.items[0].personal
    );
    let events = store
        .list_audit(&kms_core::store::AuditQuery {
            action: Some("master_key.rotate".into()),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor, "operator");
    assert_eq!(
        kms.master_key_set_at().unwrap().unwrap().to_rfc3339(),
        report.set_at
    );
    // Rotating to the key in use is refused.
    assert!(kms.rotate_master_key(&new).is_err());
}

#[test]
fn a_rotation_that_fails_leaves_the_old_key_working() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    let old = MasterKey::generate(&OsRandom).unwrap();
    let new = MasterKey::generate(&OsRandom).unwrap();
    let kms = build(store.clone(), &old).unwrap();
    let seeded = seed(&kms, &store, &old);
    // A sealed value the old key cannot open (altered at rest) stops the rotation after
    // part of the batch was prepared: nothing may be written.
    let mut app = store.get_app(&seeded.app_id).unwrap().unwrap();
    let mut bad = app.security.signing_secret.clone().unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    app.security.signing_secret = Some(bad);
    let good = store.get_app(&seeded.app_id).unwrap().unwrap();
    store.apply(&[Mutation::UpdateApp(app)]).unwrap();
    let err = kms.rotate_master_key(&new).unwrap_err().to_string();
    assert!(err.contains("cannot be opened"), "{err}");
    assert!(err.contains(&seeded.app_id), "{err}");
    store.apply(&[Mutation::UpdateApp(good)]).unwrap();
    drop(kms);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    assert!(opens_everything(&store, &old, &seeded));
    assert!(store.get_meta(MASTER_KEY_SET_AT_KEY).unwrap().is_none());
    build(store.clone(), &old).unwrap();
    assert!(build(store, &new).is_err());
}
