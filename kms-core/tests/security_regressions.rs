//! Security invariants, through the public API:
//! - no issued secret (API keys and their secret part, refresh tokens, access tokens, the
//!   master key) ends up in the database files, in `Debug` output, in error messages or in
//!   audit events;
//! - hostile text (SQL injection, bidi overrides, confusables, emoji) is stored and returned
//!   verbatim, and only control characters are refused, as `INVALID_REQUEST`;
//! - an unknown token id and a wrong secret take exactly the same path through the store;
//! - deeply nested JSON is refused by the recursion limit, without a stack overflow.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

#[path = "support/counting_store.rs"]
mod counting_store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use counting_store::CountingStore;
use kms_core::store::{Store, TokenStore};
use kms_core::token_format::{self, TokenPrefix};
use kms_core::{
    AppUpdate, Application, AuditFilter, AuditVerification, Caller, ErrorCode, Kms, ManualClock,
    MasterKey, NewApp, NewPermission, NewRole, NewToken, OsRandom, PageRequest, RoleUpdate,
    RotateToken, Timestamp, TokenUpdate, VerifyCode, VerifyRequest, MAX_PAGE_LIMIT,
};
use kms_store::{MemoryStore, SqliteStore};

const NOW: i64 = 1_800_000_000;

fn kms_over(store: Arc<dyn Store>, master: Option<MasterKey>) -> Kms {
    let mut b = Kms::builder(store)
        .clock(Arc::new(ManualClock::new(Timestamp::from_unix(NOW))))
        .hash_params(kms_core::dangerous::insecure_hash_params());
    if let Some(m) = master {
        b = b.master_key(m);
    }
    b.build().unwrap()
}

fn json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// The secret part of an API key: the 31 characters before the 6-character checksum.
fn secret_of(token: &str) -> &str {
    token_format::parse(token).unwrap().secret()
}

/// The same token id with another secret and a valid checksum: a wrong secret, not a typo.
fn with_wrong_secret(token: &str) -> String {
    let parsed = token_format::parse(token).unwrap();
    let flipped: String = parsed
        .secret()
        .chars()
        .map(|c| if c == 'a' { 'b' } else { 'a' })
        .collect();
    let body = format!("{}_{}{}", parsed.prefix(), parsed.lookup_id(), flipped);
    let mut v = crc32fast::hash(body.as_bytes()) as u64;
    let base62 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut sum = [b'0'; 6];
    for slot in sum.iter_mut().rev() {
        *slot = base62[(v % 62) as usize];
        v /= 62;
    }
    let wrong = format!("{body}{}", String::from_utf8_lossy(&sum));
    assert!(token_format::parse(&wrong).is_ok());
    wrong
}

/// Everything a scenario issued that must stay secret, and everything it showed.
#[derive(Default)]
struct Exposure {
    secrets: Vec<(String, String)>,
    shown: Vec<(String, String)>,
}

impl Exposure {
    fn secret(&mut self, what: &str, s: &str) {
        self.secrets.push((what.to_owned(), s.to_owned()));
    }

    fn api_key(&mut self, what: &str, token: &str) {
        self.secret(what, token);
        self.secret(&format!("{what} (secret part)"), secret_of(token));
    }

    fn refresh_token(&mut self, what: &str, token: &str) {
        self.secret(what, token);
        // kmsrt_<16 id><32 secret>
        self.secret(&format!("{what} (secret part)"), &token[token.len() - 32..]);
    }

    fn debug(&mut self, what: &str, v: &impl std::fmt::Debug) {
        self.shown
            .push((format!("{what} (Debug)"), format!("{v:?}")));
    }

    fn json(&mut self, what: &str, v: &impl serde::Serialize) {
        self.shown
            .push((format!("{what} (JSON)"), serde_json::to_string(v).unwrap()));
    }

    fn error(&mut self, what: &str, e: &(impl std::fmt::Display + std::fmt::Debug)) {
        self.shown.push((format!("{what} (error)"), format!("{e}")));
        self.debug(what, e);
    }

    fn assert_nothing_leaked(&self) {
        let mut leaks = Vec::new();
        for (shown_what, text) in &self.shown {
            for (secret_what, secret) in &self.secrets {
                if text.contains(secret.as_str()) {
                    leaks.push(format!("{shown_what} contains the {secret_what}"));
                }
            }
        }
        assert!(leaks.is_empty(), "{leaks:#?}");
    }

    fn assert_not_in_file(&self, path: &Path) {
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("{} cannot be scanned: {e}", path.display()));
        for (what, secret) in &self.secrets {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "{} contains the {what}",
                path.display()
            );
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The database file and whichever of its companions (WAL, shared memory, journal) exist
/// now; the main file must.
fn database_files(db: &Path) -> Vec<PathBuf> {
    assert!(db.exists(), "{} does not exist", db.display());
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", db.display())))
        .filter(|p| p.exists())
        .collect()
}

#[test]
fn no_issued_secret_appears_at_rest_in_debug_output_errors_or_audit_events() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    let master = MasterKey::generate(&OsRandom).unwrap();
    let mut x = Exposure::default();
    x.secret("master key", &master.to_base64());
    let kms = kms_over(store, Some(master.clone()));
    x.debug("kms", &kms);
    x.debug("master key", &master);

    // Initialisation, applications, permissions, roles.
    let root_token = kms.initialize().unwrap();
    x.api_key("root token", &root_token.token);
    x.debug("created root token", &root_token);
    let root = kms.authenticate(&root_token.token, None).unwrap();
    x.debug("root caller", &root);
    let billing = kms
        .create_app(&root, json(serde_json::json!({"name": "billing"})))
        .unwrap();
    let shop = kms
        .create_app(
            &root,
            json(serde_json::json!({"name": "shop", "token_prefix": "shop"})),
        )
        .unwrap();
    x.debug("app", &billing);
    x.debug("app", &shop);
    for p in [
        serde_json::json!({"scope": "billing.read", "description": "read"}),
        serde_json::json!({"scope": "billing.write", "implies": ["billing.read"]}),
    ] {
        let p = kms.create_permission(&root, json(p)).unwrap();
        x.debug("permission", &p);
    }
    let role = kms
        .create_role(
            &root,
            json(serde_json::json!({"name": "billing-reader", "permissions": ["billing.read"]})),
        )
        .unwrap();
    x.debug("role", &role);

    // API keys: created, verified, rotated, revoked, updated.
    let t1 = kms
        .create_token(
            &root,
            &billing.id,
            json(serde_json::json!({
                "name": "writer", "scopes": ["billing.write"], "metadata": {"team": "a"},
            })),
        )
        .unwrap();
    let t2 = kms
        .create_token(
            &root,
            &shop.id,
            json(serde_json::json!({
                "name": "reader", "roles": ["billing-reader"], "uses": 5,
                "ratelimit": {"limit": 100, "per_seconds": 60},
            })),
        )
        .unwrap();
    let t3 = kms
        .create_token(
            &root,
            &billing.id,
            json(serde_json::json!({
                "name": "jwt-client", "scopes": ["app.read", "token.read", "token.verify"],
            })),
        )
        .unwrap();
    for (what, t) in [
        ("api key t1", &t1),
        ("api key t2", &t2),
        ("api key t3", &t3),
    ] {
        x.api_key(what, &t.token);
        x.debug("created token", t);
        x.debug("token info", &t.info);
        x.json("token info", &t.info);
    }
    let request = VerifyRequest {
        token: t1.token.clone(),
        permissions: Some("billing.read".into()),
        ..Default::default()
    };
    x.debug("verify request", &request);
    let v = kms.verify(&root, &request).unwrap();
    assert_eq!(v.code(), VerifyCode::Valid);
    x.debug("verification", &v);
    x.json("verify response", &v.to_response());
    let v = kms.verify_token(&t2.token, None, None).unwrap();
    assert_eq!(v.code(), VerifyCode::Valid);
    x.debug("verification", &v);
    let wrong = with_wrong_secret(&t1.token);
    x.api_key("wrong secret presented", &wrong);
    let v = kms.verify_token(&wrong, None, None).unwrap();
    assert_eq!(v.code(), VerifyCode::NotFound);
    x.debug("verification of a wrong secret", &v);
    x.json("response to a wrong secret", &v.to_response());
    x.error(
        "authenticate with a wrong secret",
        &kms.authenticate(&wrong, None).unwrap_err(),
    );

    let r1 = kms
        .rotate_token(
            &root,
            &t1.info.id,
            RotateToken {
                grace_seconds: Some(60),
            },
        )
        .unwrap();
    x.api_key("rotated api key", &r1.token);
    x.debug("rotated token", &r1);
    x.debug(
        "revoked token",
        &kms.revoke_token(&root, &t2.info.id).unwrap(),
    );
    let v = kms.verify_token(&t2.token, None, None).unwrap();
    assert_eq!(v.code(), VerifyCode::Revoked);
    x.debug("verification of a revoked key", &v);
    x.error(
        "authenticate with a revoked key",
        &kms.authenticate(&t2.token, None).unwrap_err(),
    );
    let updated = kms
        .update_token(
            &root,
            &t3.info.id,
            TokenUpdate {
                name: Some("jwt client".into()),
                ..Default::default()
            },
        )
        .unwrap();
    x.debug("updated token", &updated);
    x.debug("token", &kms.get_token(&root, &t1.info.id).unwrap());
    x.debug(
        "token list",
        &kms.list_tokens(&root, &billing.id, PageRequest::default())
            .unwrap(),
    );
    // Access tokens: issue, validate, refresh, reuse, introspect, revoke.
    let issued = kms
        .issue_access_token(&t3.token, None, None, None)
        .unwrap()
        .unwrap();
    x.secret("access token", &issued.access_token);
    x.refresh_token("refresh token", &issued.refresh_token);
    x.debug("token response", &issued);
    let claims = kms
        .validate_access_token(&issued.access_token, None)
        .unwrap();
    x.debug("access claims", &claims);
    x.json("access claims", &claims);
    let refreshed = kms
        .refresh_access_token(&issued.refresh_token, None, None)
        .unwrap()
        .unwrap();
    x.secret("refreshed access token", &refreshed.access_token);
    x.refresh_token("refreshed refresh token", &refreshed.refresh_token);
    x.debug("refreshed token response", &refreshed);
    x.error(
        "refresh token reuse",
        &kms.refresh_access_token(&issued.refresh_token, None, None)
            .unwrap()
            .unwrap_err(),
    );
    let second = kms
        .issue_access_token(&t3.token, Some("app.read"), None, None)
        .unwrap()
        .unwrap();
    x.secret("second access token", &second.access_token);
    x.refresh_token("second refresh token", &second.refresh_token);
    for (what, token) in [
        ("access token", &second.access_token),
        ("refresh token", &second.refresh_token),
    ] {
        let i = kms.introspect(&root, token).unwrap();
        x.debug(&format!("introspection of an {what}"), &i);
        x.json(&format!("introspection of an {what}"), &i);
    }
    kms.revoke_access_token(&root, &second.access_token)
        .unwrap();
    x.error(
        "validation of a revoked access token",
        &kms.validate_access_token(&second.access_token, None)
            .unwrap_err(),
    );
    kms.revoke_access_token(&root, &second.refresh_token)
        .unwrap();
    x.error(
        "issue with a wrong api key",
        &kms.issue_access_token(&wrong, None, None, None)
            .unwrap()
            .unwrap_err(),
    );
    x.error(
        "issue with a wider scope",
        &kms.issue_access_token(&t3.token, Some("admin"), None, None)
            .unwrap()
            .unwrap_err(),
    );
    x.debug("signing keys", &kms.list_keys(&root).unwrap());
    x.json("jwks", &kms.jwks());
    x.debug("cache stats", &kms.cache_stats());

    // The audit log, every page of it.
    let mut cursor = None;
    let mut events = 0;
    loop {
        let page = kms
            .list_audit(
                &root,
                AuditFilter::default(),
                PageRequest {
                    limit: Some(MAX_PAGE_LIMIT),
                    cursor,
                },
            )
            .unwrap();
        events += page.items.len();
        for e in &page.items {
            x.debug("audit event", e);
            x.json("audit event", e);
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert!(events >= 10, "the scenario wrote {events} audit events");
    x.debug("audit verification", &kms.verify_audit(&root).unwrap());

    x.assert_nothing_leaked();

    // At rest: the database and its WAL, while open and after closing.
    let raw_master = base64::engine::general_purpose::STANDARD
        .decode(master.to_base64())
        .unwrap();
    let files = database_files(&db);
    let db_bytes = std::fs::read(&db).unwrap();
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let wal_bytes = std::fs::read(wal).unwrap_or_default();
    assert!(
        contains(&db_bytes, b"jwt-client") || contains(&wal_bytes, b"jwt-client"),
        "the scenario's data is not in the files read"
    );
    for f in &files {
        x.assert_not_in_file(f);
        if let Ok(bytes) = std::fs::read(f) {
            assert!(
                !contains(&bytes, &raw_master),
                "{} holds the master key",
                f.display()
            );
        }
    }
    drop(kms);
    for f in &database_files(&db) {
        x.assert_not_in_file(f);
    }
}

#[test]
fn a_plaintext_key_pasted_into_another_field_is_not_echoed_in_errors() {
    // Error messages end up in logs; a key pasted where an id or scope belongs (a common
    // slip: `kms tokens get <the key>`) must not be copied there.
    let kms = kms_over(Arc::new(MemoryStore::new()), None);
    let root = kms.initialize().unwrap();
    let op = kms.operator();
    let app = kms
        .create_app(&op, json(serde_json::json!({"name": "home"})))
        .unwrap();
    let key = kms
        .create_token(&op, &app.id, json(serde_json::json!({"name": "k"})))
        .unwrap()
        .token;
    let mut x = Exposure::default();
    x.api_key("api key", &key);
    x.api_key("root token", &root.token);
    x.error("get_token", &kms.get_token(&op, &key).unwrap_err());
    x.error("revoke_token", &kms.revoke_token(&op, &key).unwrap_err());
    x.error(
        "rotate_token",
        &kms.rotate_token(&op, &key, RotateToken::default())
            .unwrap_err(),
    );
    x.error("delete_token", &kms.delete_token(&op, &key).unwrap_err());
    x.error("get_app", &kms.get_app(&op, &root.token).unwrap_err());
    x.error(
        "create_token with the key as a scope",
        &kms.create_token(
            &op,
            &app.id,
            NewToken {
                name: "x".into(),
                scopes: vec![key.clone()],
                ..Default::default()
            },
        )
        .unwrap_err(),
    );
    x.error(
        "verify with the key as a query",
        &kms.verify(
            &op,
            &VerifyRequest {
                token: key.clone(),
                permissions: Some(key.clone()),
                ..Default::default()
            },
        )
        .unwrap_err(),
    );
    x.assert_nothing_leaked();
}

#[test]
fn a_mangled_key_pasted_into_another_field_is_not_echoed_either() {
    // A key cut short by a bad copy, or glued to neighbouring text, fails its checksum but
    // still carries the whole secret part.
    let kms = kms_over(Arc::new(MemoryStore::new()), None);
    kms.initialize().unwrap();
    let op = kms.operator();
    let app = kms
        .create_app(&op, json(serde_json::json!({"name": "home"})))
        .unwrap();
    let key = kms
        .create_token(&op, &app.id, json(serde_json::json!({"name": "k"})))
        .unwrap()
        .token;
    let mut x = Exposure::default();
    x.secret("secret part of the api key", secret_of(&key));
    let mangled = [
        ("cut short", key[..key.len() - 1].to_owned()),
        ("glued to a word", format!("x{key}")),
        (
            "with a typo in the checksum",
            format!("{}0", &key[..key.len() - 1]),
        ),
    ];
    for (how, text) in &mangled {
        x.error(
            &format!("get_token given a key {how}"),
            &kms.get_token(&op, text).unwrap_err(),
        );
        x.error(
            &format!("create_token given a key {how} as a scope"),
            &kms.create_token(
                &op,
                &app.id,
                NewToken {
                    name: "x".into(),
                    scopes: vec![text.clone()],
                    ..Default::default()
                },
            )
            .unwrap_err(),
        );
    }
    x.assert_nothing_leaked();
}

/// Text that has broken or fooled systems before, none of it a control character.
const HOSTILE: &[&str] = &[
    "'; DROP TABLE tokens; --",
    "Robert'); DROP TABLE students; --",
    "\" OR 1=1 --",
    "\u{202E}gnp.exe",
    "\u{0430}dmin",
    "p\u{0430}yp\u{0430}l",
    "🎉 launch 👩\u{200D}👩\u{200D}👧",
    "ad\u{200B}min\u{FEFF}",
    "%s%n{}\\\"`$(id)`",
    "名前 اسم שם",
];

/// Text with control characters: names refuse it; free text may keep it verbatim.
const CONTROL: &[&str] = &["a\0b", "tab\there", "line\nbreak", "bell\u{7}", "c1\u{85}"];

/// `Some` when stored; a refusal must be `INVALID_REQUEST` and only for control characters.
fn stored<T>(what: &str, input: &str, r: kms_core::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::InvalidRequest, "{what} {input:?}: {e}");
            assert!(
                input.chars().any(char::is_control),
                "{what} {input:?} was refused: {e}"
            );
            None
        }
    }
}

fn must_refuse<T: std::fmt::Debug>(what: &str, input: &str, r: kms_core::Result<T>) {
    let e = r.expect_err(&format!("{what} {input:?} was accepted"));
    assert_eq!(e.code(), ErrorCode::InvalidRequest, "{what} {input:?}: {e}");
}

#[test]
fn hostile_text_is_stored_verbatim_and_only_control_characters_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let kms = kms_over(Arc::new(SqliteStore::open(&db).unwrap()), None);
    kms.initialize().unwrap();
    let op = kms.operator();
    let home = kms
        .create_app(&op, json(serde_json::json!({"name": "home"})))
        .unwrap();
    let keeper = kms
        .create_token(&op, &home.id, json(serde_json::json!({"name": "keeper"})))
        .unwrap();
    let mut expected_apps: BTreeMap<String, String> = BTreeMap::new();
    let mut expected_tokens: BTreeMap<String, (String, serde_json::Value)> = BTreeMap::new();
    let mut expected_descriptions: BTreeMap<String, String> = BTreeMap::new();
    for (i, s) in HOSTILE.iter().chain(CONTROL).enumerate() {
        let s = *s;
        let control = s.chars().any(char::is_control);

        // Application names, created and renamed.
        let r = kms.create_app(
            &op,
            NewApp {
                name: s.to_owned(),
                ..Default::default()
            },
        );
        if control {
            must_refuse("app name", s, r);
        } else if let Some(app) = stored("app name", s, r) {
            assert_eq!(app.name, s);
            expected_apps.insert(app.id.clone(), s.to_owned());
            let renamed = format!("{s} #{i}");
            let app = kms
                .update_app(
                    &op,
                    &app.id,
                    AppUpdate {
                        name: Some(renamed.clone()),
                        ..Default::default()
                    },
                )
                .unwrap();
            assert_eq!(app.name, renamed);
            expected_apps.insert(app.id.clone(), renamed);
        }

        // Token names, created and renamed.
        let r = kms.create_token(
            &op,
            &home.id,
            NewToken {
                name: s.to_owned(),
                ..Default::default()
            },
        );
        if control {
            must_refuse("token name", s, r);
            must_refuse(
                "token rename",
                s,
                kms.update_token(
                    &op,
                    &keeper.info.id,
                    TokenUpdate {
                        name: Some(s.to_owned()),
                        ..Default::default()
                    },
                ),
            );
        } else if let Some(t) = stored("token name", s, r) {
            assert_eq!(t.info.name, s);
            expected_tokens.insert(t.info.id.clone(), (s.to_owned(), serde_json::json!({})));
        }

        // Metadata: values and keys.
        let mut metadata = serde_json::Map::new();
        metadata.insert("note".into(), s.into());
        metadata.insert(s.to_owned(), serde_json::json!([s, {"nested": s}]));
        let r = kms.create_token(
            &op,
            &home.id,
            NewToken {
                name: format!("meta {i}"),
                metadata: Some(metadata.clone()),
                ..Default::default()
            },
        );
        if let Some(t) = stored("metadata", s, r) {
            assert_eq!(t.info.metadata, metadata);
            let v = kms.verify_token(&t.token, None, None).unwrap();
            assert_eq!(
                serde_json::to_value(v.to_response()).unwrap()["metadata"],
                serde_json::Value::Object(metadata.clone())
            );
            expected_tokens.insert(
                t.info.id.clone(),
                (format!("meta {i}"), serde_json::Value::Object(metadata)),
            );
        }

        // Descriptions of permissions and roles.
        let scope = format!("hostile.p{i}");
        let r = kms.create_permission(
            &op,
            NewPermission {
                scope: scope.clone(),
                description: Some(s.to_owned()),
                implies: vec![],
            },
        );
        if let Some(p) = stored("permission description", s, r) {
            assert_eq!(p.description, s);
            expected_descriptions.insert(scope, s.to_owned());
        }
        let name = format!("hostile-r{i}");
        let r = kms.create_role(
            &op,
            NewRole {
                name: name.clone(),
                description: Some(s.to_owned()),
                ..Default::default()
            },
        );
        if let Some(role) = stored("role description", s, r) {
            assert_eq!(role.description, s);
            expected_descriptions.insert(name.clone(), s.to_owned());
            let twice = format!("{s}{s}");
            let r = kms.update_role(
                &op,
                &name,
                RoleUpdate {
                    description: Some(twice.clone()),
                    ..Default::default()
                },
            );
            if let Some(role) = stored("role description update", &twice, r) {
                assert_eq!(role.description, twice);
                expected_descriptions.insert(name, twice);
            }
        }
    }

    // Read everything back from disk through a second service over the same file.
    let reread = kms_over(Arc::new(SqliteStore::open(&db).unwrap()), None);
    let rop = reread.operator();
    let permissions = reread.list_permissions(&rop).unwrap();
    let roles = reread.list_roles(&rop).unwrap();
    for (name, description) in &expected_descriptions {
        let stored = permissions
            .iter()
            .find(|p| p.scope.as_str() == name)
            .map(|p| &p.description)
            .or_else(|| {
                roles
                    .iter()
                    .find(|r| r.name.as_str() == name)
                    .map(|r| &r.description)
            });
        assert_eq!(stored, Some(description), "description of {name}");
    }
    for (id, name) in &expected_apps {
        assert_eq!(&reread.get_app(&rop, id).unwrap().name, name);
    }
    for (id, (name, metadata)) in &expected_tokens {
        let t = reread.get_token(&rop, id).unwrap();
        assert_eq!(&t.name, name);
        if metadata != &serde_json::json!({}) {
            assert_eq!(&serde_json::Value::Object(t.metadata), metadata);
        }
    }
    // The tables are all still there and working.
    let listed = reread
        .list_tokens(
            &rop,
            &home.id,
            PageRequest {
                limit: Some(MAX_PAGE_LIMIT),
                cursor: None,
            },
        )
        .unwrap();
    assert_eq!(listed.items.len(), expected_tokens.len() + 1);
    let v = reread.verify_token(&keeper.token, None, None).unwrap();
    assert_eq!(v.code(), VerifyCode::Valid);
    assert!(matches!(
        reread.verify_audit(&rop).unwrap(),
        AuditVerification::Intact { .. }
    ));
}

struct Counted {
    kms: Kms,
    store: Arc<CountingStore>,
    op: Caller,
    home_key: String,
    other_key: String,
    tenant: Caller,
}

/// A service with the verified-key cache off, so every verification takes the cold path;
/// two applications, a key in each, and a caller of the first that may verify.
fn counted() -> Counted {
    let store = Arc::new(CountingStore::new());
    let kms = Kms::builder(store.clone())
        .clock(Arc::new(ManualClock::new(Timestamp::from_unix(NOW))))
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .cache_capacity(0)
        .build()
        .unwrap();
    kms.initialize().unwrap();
    let op = kms.operator();
    let home = kms
        .create_app(&op, json(serde_json::json!({"name": "home"})))
        .unwrap();
    let other = kms
        .create_app(&op, json(serde_json::json!({"name": "other"})))
        .unwrap();
    let key = |app: &Application, scopes: serde_json::Value| {
        kms.create_token(
            &op,
            &app.id,
            json(serde_json::json!({"name": "k", "scopes": scopes})),
        )
        .unwrap()
        .token
    };
    let home_key = key(&home, serde_json::json!(["app.read"]));
    let other_key = key(&other, serde_json::json!(["app.read"]));
    let service_key = key(&home, serde_json::json!(["token.verify"]));
    let tenant = kms.authenticate(&service_key, None).unwrap();
    Counted {
        kms,
        store,
        op,
        home_key,
        other_key,
        tenant,
    }
}

/// A token whose id exists nowhere.
fn unknown_id(prefix: &str) -> String {
    token_format::generate(&TokenPrefix::parse(prefix).unwrap(), &OsRandom)
        .unwrap()
        .into_plaintext()
}

#[test]
fn unknown_id_and_wrong_secret_take_the_same_path_through_the_store() {
    let c = counted();
    let unknown = unknown_id("kms");
    let wrong = with_wrong_secret(&c.home_key);

    let mut runs = Vec::new();
    for token in [&unknown, &wrong] {
        c.store.take();
        let v = c.kms.verify_token(token, None, None).unwrap();
        runs.push((c.store.take(), v.to_response()));
    }
    assert_eq!(runs[0].1, runs[1].1, "the responses differ");
    assert_eq!(runs[0].0, runs[1].0, "the store calls differ");
    assert_eq!(
        runs[0].0.iter().filter(|m| **m == "get_token").count(),
        1,
        "one lookup each: {:?}",
        runs[0].0
    );

    // The same through the operator's verify and through authentication.
    let mut verifies = Vec::new();
    let mut auths = Vec::new();
    for token in [&unknown, &wrong] {
        c.store.take();
        let req = VerifyRequest {
            token: token.clone(),
            ..Default::default()
        };
        let v = c.kms.verify(&c.op, &req).unwrap();
        verifies.push((c.store.take(), v.to_response()));
        let e = c.kms.authenticate(token, None).unwrap_err();
        auths.push((c.store.take(), e.code(), e.to_string()));
    }
    assert_eq!(verifies[0], verifies[1]);
    assert_eq!(auths[0], auths[1]);
}

/// The argon2id work `f` does on this thread (counted by kms-core's thread-local test hook).
fn hash_work<T>(f: impl FnOnce() -> T) -> (kms_core::internal::HashWork, T) {
    let before = kms_core::internal::hash_work_on_this_thread();
    let out = f();
    let after = kms_core::internal::hash_work_on_this_thread();
    let work = kms_core::internal::HashWork {
        verifications: after.verifications - before.verifications,
        cost: after.cost - before.cost,
    };
    (work, out)
}

/// m × t × p of a stored PHC string (`$argon2id$v=19$m=64,t=1,p=1$...`).
fn phc_cost(phc: &str) -> u64 {
    let params = phc.split('$').nth(3).unwrap();
    params
        .split(',')
        .map(|kv| kv.split_once('=').unwrap().1.parse::<u64>().unwrap())
        .product()
}

#[test]
fn unknown_id_and_wrong_secret_do_the_same_hashing_work() {
    let c = counted();
    let unknown = unknown_id("kms");
    let wrong = with_wrong_secret(&c.home_key);
    let home_id = format!(
        "tok_{}",
        token_format::parse(&c.home_key).unwrap().lookup_id()
    );
    let stored = c.store.inner.get_token(&home_id).unwrap().unwrap();
    // One argon2id verification at the cost of a real stored hash, and nothing else.
    let one = kms_core::internal::HashWork {
        verifications: 1,
        cost: phc_cost(&stored.secret_hash),
    };
    assert_eq!(one.cost, 64, "the test parameters: m=64, t=1, p=1");

    // The counter sees work: the right secret (cache off) costs one verification too, and
    // a malformed token, refused before the store, costs none.
    let (work, v) = hash_work(|| c.kms.verify_token(&c.home_key, None, None).unwrap());
    assert_eq!((work, v.code()), (one, VerifyCode::Valid));
    let (work, v) = hash_work(|| c.kms.verify_token("kms_not-a-token", None, None).unwrap());
    assert_eq!(
        (work, v.code()),
        (
            kms_core::internal::HashWork::default(),
            VerifyCode::Malformed
        )
    );

    for token in [&unknown, &wrong] {
        let (work, v) = hash_work(|| c.kms.verify_token(token, None, None).unwrap());
        assert_eq!(
            (work, v.code()),
            (one, VerifyCode::NotFound),
            "verify_token"
        );
        let req = VerifyRequest {
            token: token.clone(),
            ..Default::default()
        };
        let (work, v) = hash_work(|| c.kms.verify(&c.op, &req).unwrap());
        assert_eq!((work, v.code()), (one, VerifyCode::NotFound), "verify");
        let (work, e) = hash_work(|| c.kms.authenticate(token, None).unwrap_err());
        assert_eq!((work, e.code()), (one, ErrorCode::Unauthenticated), "auth");
    }

    // A tenant asking about another tenant's key pays the same, whether its secret is
    // right or wrong, as for an unknown id.
    for token in [&unknown, &with_wrong_secret(&c.other_key), &c.other_key] {
        let req = VerifyRequest {
            token: token.clone(),
            ..Default::default()
        };
        let (work, v) = hash_work(|| c.kms.verify(&c.tenant, &req).unwrap());
        assert_eq!((work, v.code()), (one, VerifyCode::NotFound), "tenant");
    }
}

#[test]
fn a_tenant_cannot_tell_another_tenants_key_from_an_unknown_id() {
    let c = counted();
    let candidates = [
        ("unknown id", unknown_id("kms")),
        ("own key, wrong secret", with_wrong_secret(&c.home_key)),
        (
            "another tenant's key, wrong secret",
            with_wrong_secret(&c.other_key),
        ),
    ];
    // The first failure of the tenant's counting window is audited (once per window,
    // whatever the token): spend it first, so the candidates are compared alike.
    let warm_up = VerifyRequest {
        token: unknown_id("kms"),
        ..Default::default()
    };
    c.kms.verify(&c.tenant, &warm_up).unwrap();
    let mut runs = Vec::new();
    for (what, token) in &candidates {
        c.store.take();
        let req = VerifyRequest {
            token: token.clone(),
            ..Default::default()
        };
        let v = c.kms.verify(&c.tenant, &req).unwrap();
        assert_eq!(v.code(), VerifyCode::NotFound, "{what}");
        runs.push((*what, c.store.take(), v.to_response()));
    }
    for r in &runs[1..] {
        assert_eq!(r.2, runs[0].2, "{} answers unlike {}", r.0, runs[0].0);
        assert_eq!(
            r.1, runs[0].1,
            "{} calls the store unlike {}",
            r.0, runs[0].0
        );
    }
    // Another tenant's key with its right secret is still not found.
    let req = VerifyRequest {
        token: c.other_key.clone(),
        ..Default::default()
    };
    let v = c.kms.verify(&c.tenant, &req).unwrap();
    assert_eq!(v.to_response(), runs[0].2);
}

#[test]
fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
    let depth = 100_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    // A small stack: only a bounded recursion depth fits, 100,000 levels would not.
    let outcome = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || {
            let mut errors = Vec::new();
            for nested in [&arrays, &objects] {
                let bodies = [
                    nested.clone(),
                    format!(r#"{{"name": "x", "metadata": {{"d": {nested}}}}}"#),
                    format!(r#"{{"name": "x", "scopes": {nested}}}"#),
                ];
                for body in &bodies {
                    let e = serde_json::from_str::<NewToken>(body)
                        .expect_err("a 100,000-deep document was accepted");
                    errors.push(e.to_string());
                }
                let e = serde_json::from_str::<VerifyRequest>(nested).unwrap_err();
                errors.push(e.to_string());
            }
            errors
        })
        .unwrap()
        .join()
        .expect("the parser overflowed its stack");
    // The documents nested inside a field reach the recursion limit; a bare one is refused
    // even sooner, as the wrong type.
    for e in [&outcome[1], &outcome[5]] {
        assert!(e.contains("recursion limit"), "{e}");
    }
    assert!(outcome.iter().all(|e| e.len() < 256), "{outcome:?}");
}

#[test]
fn oversized_text_is_refused_with_a_short_error() {
    let kms = kms_over(Arc::new(MemoryStore::new()), None);
    kms.initialize().unwrap();
    let op = kms.operator();
    let app = kms
        .create_app(&op, json(serde_json::json!({"name": "home"})))
        .unwrap();
    let huge = "x".repeat(1 << 20);
    let mut metadata = serde_json::Map::new();
    metadata.insert("blob".into(), huge.clone().into());
    let attempts = [
        kms.create_app(
            &op,
            NewApp {
                name: huge.clone(),
                ..Default::default()
            },
        )
        .map(|_| ()),
        kms.create_token(
            &op,
            &app.id,
            NewToken {
                name: huge.clone(),
                ..Default::default()
            },
        )
        .map(|_| ()),
        kms.create_token(
            &op,
            &app.id,
            NewToken {
                name: "x".into(),
                metadata: Some(metadata),
                ..Default::default()
            },
        )
        .map(|_| ()),
        kms.create_token(
            &op,
            &app.id,
            NewToken {
                name: "x".into(),
                scopes: vec![huge.clone()],
                ..Default::default()
            },
        )
        .map(|_| ()),
        kms.create_token(
            &op,
            &app.id,
            NewToken {
                name: "x".into(),
                scopes: vec!["app.read".into(); 10_000],
                ..Default::default()
            },
        )
        .map(|_| ()),
        kms.create_permission(
            &op,
            NewPermission {
                scope: "big".into(),
                description: Some(huge.clone()),
                implies: vec![],
            },
        )
        .map(|_| ()),
        kms.verify(
            &op,
            &VerifyRequest {
                token: "kms_x".into(),
                permissions: Some(huge.clone()),
                ..Default::default()
            },
        )
        .map(|_| ()),
    ];
    for (i, r) in attempts.into_iter().enumerate() {
        let e = r.expect_err(&format!("oversized attempt {i} was accepted"));
        assert_eq!(e.code(), ErrorCode::InvalidRequest, "attempt {i}: {e}");
        assert!(e.to_string().len() < 1024, "attempt {i}: a long error");
    }
}
