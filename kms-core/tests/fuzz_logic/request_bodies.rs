//! Request bodies: the first byte picks a request type (`'0'` NewApp, `'1'` AppUpdate,
//! `'2'` NewPermission, `'3'` NewRole, `'4'` RoleUpdate, `'5'` NewToken, `'6'` TokenUpdate,
//! `'7'` RotateToken, `'8'` VerifyRequest), the rest is its JSON. Whatever
//! `serde_json` accepts then runs through the facade, as the operator, on a fresh memory
//! store holding one application, role and token, so validation and the operation run.
//! Nothing may panic; errors are the caller's (never `INTERNAL`) and never carry a secret;
//! what is accepted is stored as given and behaves as asked.

use std::sync::Arc;

use kms_core::{
    AppStatus, AppUpdate, Caller, Error, ErrorCode, Kms, ManualClock, NewApp, NewPermission,
    NewRole, NewToken, RoleUpdate, RotateToken, Timestamp, TokenUpdate, VerifyCode, VerifyRequest,
};
use kms_store::MemoryStore;
use serde::de::DeserializeOwned;

/// In a `VerifyRequest`, this token text stands for the fixture's real token.
pub(crate) const REAL_TOKEN: &str = "$TOKEN";
/// The fixture's role, the target of `RoleUpdate`.
pub(crate) const ROLE: &str = "billing-reader";

struct World {
    kms: Kms,
    op: Caller,
    app_id: String,
    token: String,
    token_id: String,
}

impl World {
    fn new() -> World {
        let kms = Kms::builder(Arc::new(MemoryStore::new()))
            .clock(Arc::new(ManualClock::new(Timestamp::from_unix(
                1_800_000_000,
            ))))
            .hash_params(kms_core::dangerous::insecure_hash_params())
            .build()
            .expect("kms builds");
        kms.initialize().expect("initialize");
        let op = kms.operator();
        let app = kms
            .create_app(&op, body(r#"{"name": "fuzz-app"}"#))
            .expect("app");
        kms.create_permission(&op, body(r#"{"scope": "billing.read"}"#))
            .expect("permission");
        kms.create_permission(
            &op,
            body(r#"{"scope": "billing.write", "implies": ["billing.read"]}"#),
        )
        .expect("permission");
        kms.create_role(
            &op,
            body(r#"{"name": "billing-reader", "permissions": ["billing.read"]}"#),
        )
        .expect("role");
        let created = kms
            .create_token(
                &op,
                &app.id,
                body(
                    r#"{"name": "fixture", "scopes": ["billing.write"],
                        "roles": ["billing-reader"], "metadata": {"team": "a"}}"#,
                ),
            )
            .expect("token");
        World {
            kms,
            op,
            app_id: app.id,
            token: created.token,
            token_id: created.info.id,
        }
    }

    fn verify_code(&self, token: &str) -> VerifyCode {
        self.kms
            .verify_token(token, None, None)
            .expect("the memory store does not fail")
            .code()
    }

    /// A refusal is the caller's fault, said without secrets.
    fn check_error(&self, e: &Error) {
        assert!(
            !matches!(e.code(), ErrorCode::Internal | ErrorCode::Unavailable),
            "bad input caused a server-side error: {e}"
        );
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains(&self.token),
            "an error names the token: {text}"
        );
        let secret = &self.token[self.token.len() - 37..self.token.len() - 6];
        assert!(!text.contains(secret), "an error names the secret: {text}");
    }
}

fn body<T: DeserializeOwned>(json: &str) -> T {
    serde_json::from_str(json).expect("fixture JSON is valid")
}

pub(crate) fn run(data: &[u8]) {
    let Some((&kind, json)) = data.split_first() else {
        return;
    };
    // Kinds count from ASCII '0' so seeds are plain text: `5{"name": ...}` is a NewToken.
    match kind.wrapping_sub(b'0') % 9 {
        0 => with::<NewApp>(json, new_app),
        1 => with::<AppUpdate>(json, app_update),
        2 => with::<NewPermission>(json, new_permission),
        3 => with::<NewRole>(json, new_role),
        4 => with::<RoleUpdate>(json, role_update),
        5 => with::<NewToken>(json, new_token),
        6 => with::<TokenUpdate>(json, token_update),
        7 => with::<RotateToken>(json, rotate_token),
        _ => with::<VerifyRequest>(json, verify),
    }
}

/// Builds the world only for bodies that deserialize, so garbage stays cheap.
fn with<T: DeserializeOwned>(json: &[u8], op: fn(&World, T)) {
    if let Ok(req) = serde_json::from_slice::<T>(json) {
        op(&World::new(), req);
    }
}

fn new_app(w: &World, req: NewApp) {
    let (name, prefix) = (req.name.clone(), req.token_prefix.clone());
    match w.kms.create_app(&w.op, req) {
        Ok(app) => {
            assert_eq!(app.name, name);
            assert_eq!(
                app.token_prefix.as_str(),
                prefix.as_deref().unwrap_or("kms")
            );
            assert_eq!(w.kms.get_app(&w.op, &app.id).ok(), Some(app));
        }
        Err(e) => w.check_error(&e),
    }
}

fn app_update(w: &World, req: AppUpdate) {
    let name = req.name.clone();
    match w.kms.update_app(&w.op, &w.app_id, req) {
        Ok(app) => {
            if let Some(n) = name {
                assert_eq!(app.name, n);
            }
            // Verified without a client address: an application allow-list refuses it.
            let expected = match app.status {
                AppStatus::Disabled => VerifyCode::Disabled,
                _ if !app.security.ip_allow.is_empty() => VerifyCode::Forbidden,
                _ => VerifyCode::Valid,
            };
            assert_eq!(w.verify_code(&w.token), expected);
        }
        Err(e) => w.check_error(&e),
    }
}

fn new_permission(w: &World, req: NewPermission) {
    let (scope, description) = (req.scope.clone(), req.description.clone());
    match w.kms.create_permission(&w.op, req) {
        Ok(p) => {
            assert_eq!(p.scope.as_str(), scope);
            assert_eq!(p.description, description.unwrap_or_default());
            let listed = w.kms.list_permissions(&w.op).expect("list permissions");
            assert!(listed.contains(&p));
        }
        Err(e) => w.check_error(&e),
    }
}

fn new_role(w: &World, req: NewRole) {
    let (name, description) = (req.name.clone(), req.description.clone());
    match w.kms.create_role(&w.op, req) {
        Ok(role) => {
            assert_eq!(role.name.as_str(), name);
            assert_eq!(role.description, description.unwrap_or_default());
            assert_eq!(w.kms.get_role(&w.op, &name).ok(), Some(role));
        }
        Err(e) => w.check_error(&e),
    }
}

fn role_update(w: &World, req: RoleUpdate) {
    match w.kms.update_role(&w.op, ROLE, req) {
        Ok(role) => {
            assert_eq!(w.kms.get_role(&w.op, ROLE).ok(), Some(role));
            assert_eq!(w.verify_code(&w.token), VerifyCode::Valid);
        }
        Err(e) => w.check_error(&e),
    }
}

fn new_token(w: &World, req: NewToken) {
    let (name, fenced) = (
        req.name.clone(),
        req.ip_allow.as_ref().is_some_and(|n| !n.is_empty()),
    );
    match w.kms.create_token(&w.op, &w.app_id, req) {
        Ok(created) => {
            assert_eq!(created.info.name, name);
            assert!(!format!("{:?}", created.info).contains(&created.token));
            let expected = if fenced {
                VerifyCode::Forbidden
            } else {
                VerifyCode::Valid
            };
            assert_eq!(w.verify_code(&created.token), expected);
        }
        Err(e) => w.check_error(&e),
    }
}

fn token_update(w: &World, req: TokenUpdate) {
    match w.kms.update_token(&w.op, &w.token_id, req) {
        Ok(info) => {
            let expected = if info.ip_allow.is_empty() {
                VerifyCode::Valid
            } else {
                VerifyCode::Forbidden
            };
            assert_eq!(w.verify_code(&w.token), expected);
        }
        Err(e) => w.check_error(&e),
    }
}

fn rotate_token(w: &World, req: RotateToken) {
    let grace = req.grace_seconds.unwrap_or(0);
    match w.kms.rotate_token(&w.op, &w.token_id, req) {
        Ok(created) => {
            assert_eq!(w.verify_code(&created.token), VerifyCode::Valid);
            let old = if grace > 0 {
                VerifyCode::Valid
            } else {
                VerifyCode::Expired
            };
            assert_eq!(w.verify_code(&w.token), old);
        }
        Err(e) => w.check_error(&e),
    }
}

fn verify(w: &World, mut req: VerifyRequest) {
    if req.token == REAL_TOKEN {
        req.token = w.token.clone();
    }
    match w.kms.verify(&w.op, &req) {
        Ok(v) => {
            if v.is_valid() {
                assert_eq!(req.token, w.token, "another string verified as the token");
            }
            let shown = serde_json::to_string(&v.to_response()).expect("response serializes");
            assert!(!shown.contains(&w.token));
        }
        Err(e) => w.check_error(&e),
    }
}
