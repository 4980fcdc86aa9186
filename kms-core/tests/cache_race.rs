//! A cold verification that read the store before a revocation and caches its (stale)
//! verdict after it must not bring the revoked key back: the cache's epoch guard. The
//! interleaving is forced, not hoped for: the verifying thread is stopped inside its store
//! lookup (after reading the token, before caching it) while the revocation lands.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

#[path = "support/counting_store.rs"]
mod counting_store;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use counting_store::CountingStore;
use kms_core::{Kms, VerifyCode};

/// What the revoking side does while the verifier is stopped.
#[derive(Clone, Copy, Debug)]
enum Landing {
    Revoke,
    Delete,
    DisableApp,
    NewPermission,
}

fn race(change: Landing) {
    let store = Arc::new(CountingStore::new());
    let kms = Kms::builder(store.clone())
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .build()
        .unwrap();
    kms.initialize().unwrap();
    let op = kms.operator();
    let app = kms
        .create_app(
            &op,
            serde_json::from_value(serde_json::json!({"name": "a"})).unwrap(),
        )
        .unwrap();
    let created = kms
        .create_token(
            &op,
            &app.id,
            serde_json::from_value(serde_json::json!({"name": "k", "scopes": ["app.read"]}))
                .unwrap(),
        )
        .unwrap();

    // Stop the verifier right after its application lookup: it has read the token and the
    // application (both active) and checked the secret, and has not cached anything yet.
    let (paused_tx, paused_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let verifier_thread = Arc::new(Mutex::new(None));
    let (paused_tx, go_rx) = (Mutex::new(Some(paused_tx)), Mutex::new(go_rx));
    let watched = verifier_thread.clone();
    store.set_hook(Some(Arc::new(move |method| {
        let on_verifier = *watched.lock().unwrap() == Some(thread::current().id());
        if on_verifier && method == "get_app" {
            if let Some(tx) = paused_tx.lock().unwrap().take() {
                tx.send(()).unwrap();
                go_rx.lock().unwrap().recv().unwrap();
            }
        }
    })));

    let verifier = {
        let (kms, token, me) = (kms.clone(), created.token.clone(), verifier_thread.clone());
        thread::spawn(move || {
            *me.lock().unwrap() = Some(thread::current().id());
            kms.verify_token(&token, None, None).unwrap().code()
        })
    };
    paused_rx.recv().unwrap();
    let expected = match change {
        Landing::Revoke => {
            kms.revoke_token(&op, &created.info.id).unwrap();
            VerifyCode::Revoked
        }
        Landing::Delete => {
            kms.delete_token(&op, &created.info.id).unwrap();
            VerifyCode::NotFound
        }
        Landing::DisableApp => {
            kms.update_app(
                &op,
                &app.id,
                serde_json::from_value(serde_json::json!({"status": "disabled"})).unwrap(),
            )
            .unwrap();
            VerifyCode::Disabled
        }
        Landing::NewPermission => {
            // A new permission: the key's verdict stays valid, but what it was cached
            // under (the old policy's generation) is gone.
            kms.create_permission(
                &op,
                serde_json::from_value(serde_json::json!({"scope": "extra"})).unwrap(),
            )
            .unwrap();
            VerifyCode::Valid
        }
    };
    go_tx.send(()).unwrap();
    // The racing verification read the store first: its own verdict may be the old one.
    let raced = verifier.join().unwrap();
    assert!(
        raced == VerifyCode::Valid || raced == expected,
        "{change:?}: {raced:?}"
    );
    store.set_hook(None);

    // The next verification, on the fast path and in full, sees the change.
    if let Some(v) = kms.try_verify_token_cached(&created.token, None, None) {
        assert_eq!(v.unwrap().code(), expected, "{change:?}: fast path");
    }
    let v = kms.verify_token(&created.token, None, None).unwrap();
    assert_eq!(v.code(), expected, "{change:?}");
    if let Landing::NewPermission = change {
        // The stale entry (compiled under the old policy) was not kept: the scope list is
        // the new policy's.
        assert!(v.allows("app.read"));
    }
}

#[test]
fn a_revocation_landing_during_a_cold_verification_is_not_undone_by_its_cache_insert() {
    race(Landing::Revoke);
}

#[test]
fn a_deletion_landing_during_a_cold_verification_is_not_undone_by_its_cache_insert() {
    race(Landing::Delete);
}

#[test]
fn disabling_the_application_during_a_cold_verification_is_not_undone_by_its_cache_insert() {
    race(Landing::DisableApp);
}

#[test]
fn a_policy_change_during_a_cold_verification_leaves_a_usable_key() {
    race(Landing::NewPermission);
}
