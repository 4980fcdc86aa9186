//! End-to-end tests of signing keys and access-token settings against the real binary:
//! where the master key comes from (and what happens when it is wrong), `kms keys`,
//! scheduled rotation, JWT settings, forged tokens, and an independent validator in
//! another language (PyJWT) that needs nothing but the JWKS.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::{init, kms, raw, run, Output, Server};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

fn random_master_key() -> String {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).unwrap();
    STANDARD.encode(bytes)
}

/// Runs `kms ARGS --db DB` with extra environment; fails the test if it runs for more than
/// 30 s (a server that should have refused to start).
fn run_env(db: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = kms();
    cmd.args(args)
        .arg("--db")
        .arg(db)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kms {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn keys_list(db: &Path, env: &[(&str, &str)]) -> Vec<Value> {
    let out = run_env(db, &["keys", "list"], env);
    assert!(out.status.success(), "{}", out.stderr);
    out.json()["items"].as_array().unwrap().clone()
}

/// The JSON of one part of a JWT.
fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn encode_part(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn hs256(key: &[u8], signing_input: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(signing_input.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

fn introspect(server: &Server, root: &str, token: &str) -> Value {
    let r = raw(
        &server.base,
        "POST",
        "/v1/auth/introspect",
        Some(root),
        FORM,
        Some(format!("token={token}").as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

#[test]
fn the_master_key_can_come_from_the_environment_without_a_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let key = random_master_key();
    let env = [("KMS_MASTER_KEY", key.as_str())];
    let out = run_env(&db, &["init"], &env);
    assert!(out.status.success(), "{}", out.stderr);
    let root = out.json()["root_token"].as_str().unwrap().to_owned();
    assert!(
        !dir.path().join("kms.db.key").exists(),
        "no key file is written when KMS_MASTER_KEY is set"
    );
    let server = Server::start_with(&db, &[], &env);
    let pair = server.client(&root).access_token(None, None).unwrap();
    assert!(introspect(&server, &root, &pair.access_token)["active"] == true);
    assert!(
        !server.logs().contains(&key),
        "the master key is never logged"
    );

    // Both sources at once are refused.
    let key_file = dir.path().join("other.key");
    let out = run_env(
        &db,
        &[
            "keys",
            "list",
            "--master-key-file",
            key_file.to_str().unwrap(),
        ],
        &env,
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("given twice"), "{}", out.stderr);
    // A malformed key is refused without echoing it.
    let out = run_env(&db, &["keys", "list"], &[("KMS_MASTER_KEY", "c2VjcmV0")]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("KMS_MASTER_KEY"), "{}", out.stderr);
    assert!(!out.stderr.contains("c2VjcmV0"), "{}", out.stderr);
}

#[test]
fn a_missing_key_file_is_created_owner_only_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let out = run(&db, &["init"]);
    assert!(out.status.success(), "{}", out.stderr);
    let key_file = dir.path().join("kms.db.key");
    assert!(key_file.exists());
    assert!(out.stderr.contains("WARN"), "{}", out.stderr);
    assert!(out.stderr.contains("master key"), "{}", out.stderr);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn a_wrong_or_lost_master_key_stops_the_start_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    init(&db);
    let key_file = dir.path().join("kms.db.key");
    let original_key = std::fs::read(&key_file).unwrap();
    let keys_before = keys_list(&db, &[]);

    // Another key, from the environment.
    let wrong = random_master_key();
    let out = run_env(
        &db,
        &["serve", "--listen", "127.0.0.1:0"],
        &[("KMS_MASTER_KEY", &wrong)],
    );
    assert!(!out.status.success(), "serve must not start");
    assert!(!out.stderr.contains("listening on"), "{}", out.stderr);
    assert!(out.stderr.contains("master key"), "{}", out.stderr);
    assert!(out.stderr.contains("nothing was changed"), "{}", out.stderr);
    assert!(!out.stderr.contains(&wrong));

    // Another key file.
    let other = dir.path().join("other.key");
    std::fs::write(&other, format!("{}\n", random_master_key())).unwrap();
    let out = run_env(
        &db,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--master-key-file",
            other.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("master key"), "{}", out.stderr);

    // The key file is gone: no new key is made for a database whose keys need the old one.
    std::fs::rename(&key_file, dir.path().join("kms.db.key.bak")).unwrap();
    let out = run_env(&db, &["serve", "--listen", "127.0.0.1:0"], &[]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    assert!(!key_file.exists(), "no replacement key file was created");
    std::fs::rename(dir.path().join("kms.db.key.bak"), &key_file).unwrap();

    assert_eq!(std::fs::read(&key_file).unwrap(), original_key);
    assert_eq!(
        keys_list(&db, &[]),
        keys_before,
        "the key ring is unchanged"
    );
}

#[test]
fn operators_list_and_rotate_keys_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    init(&db);
    let before = keys_list(&db, &[]);
    assert_eq!(before.len(), 1);
    assert_eq!(before[0]["state"], "active");
    assert!(
        !before[0].to_string().contains("sealed"),
        "no private material"
    );

    let out = run(
        &db,
        &[
            "keys",
            "rotate",
            "--access-token-ttl",
            "60",
            "--jwt-leeway",
            "0",
        ],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let new = out.json();
    assert_eq!(new["state"], "active");
    assert_ne!(new["kid"], before[0]["kid"]);

    let after = keys_list(&db, &[]);
    assert_eq!(after.len(), 2);
    assert_eq!(after[0]["kid"], new["kid"], "newest first");
    assert_eq!(after[1]["state"], "verify-only");
    assert!(after[1]["verify_until"].is_string());

    // Rotation needs the master key.
    std::fs::remove_file(dir.path().join("kms.db.key")).unwrap();
    let out = run(&db, &["keys", "rotate"]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("master key"), "{}", out.stderr);
}

#[test]
fn keys_rotate_on_schedule_and_retire_after_the_token_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start_with(
        &db,
        &[
            "--key-rotation-interval",
            "1",
            "--access-token-ttl",
            "1",
            "--jwt-leeway",
            "0",
        ],
        &[],
    );
    let admin = server.client(&root);
    let deadline = Instant::now() + Duration::from_secs(15);
    let keys = loop {
        let keys = admin.list_keys().unwrap().items;
        if keys.len() >= 3 && keys.iter().any(|k| k.state == "retired") {
            break keys;
        }
        assert!(Instant::now() < deadline, "no scheduled rotation: {keys:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(keys.iter().filter(|k| k.state == "active").count(), 1);
    let jwks = server.anonymous().jwks().unwrap();
    let published: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    for k in &keys {
        assert_eq!(
            published.contains(&k.kid.as_str()),
            k.state != "retired",
            "JWKS lists active and verify-only keys only: {k:?}"
        );
    }
    // Tokens are signed by the current key.
    let pair = admin.access_token(None, None).unwrap();
    let kid = jwt_part(&pair.access_token, 0)["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let now = admin.list_keys().unwrap().items;
    assert!(now.iter().any(|k| k.kid == kid && k.state != "retired"));
}

#[test]
fn issuer_audience_and_lifetimes_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start_with(
        &db,
        &[
            "--jwt-issuer",
            "https://kms.test",
            "--access-token-ttl",
            "120",
        ],
        &[("KMS_JWT_AUDIENCE", "billing-api"), ("KMS_JWT_LEEWAY", "0")],
    );
    let pair = server.client(&root).access_token(None, None).unwrap();
    assert_eq!(pair.expires_in, 120);
    let claims = jwt_part(&pair.access_token, 1);
    assert_eq!(claims["iss"], "https://kms.test");
    assert_eq!(claims["aud"], "billing-api");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );
    assert_eq!(
        introspect(&server, &root, &pair.access_token)["active"],
        true
    );

    // A short lifetime without leeway: the token is inactive once it expired.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start_with(&db, &["--access-token-ttl", "1", "--jwt-leeway", "0"], &[]);
    let pair = server.client(&root).access_token(None, None).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        introspect(&server, &root, &pair.access_token),
        json!({"active": false})
    );
}

#[test]
fn forged_access_tokens_introspect_as_inactive() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start(&db);
    let token = server
        .client(&root)
        .access_token(None, None)
        .unwrap()
        .access_token;
    assert_eq!(introspect(&server, &root, &token)["active"], true);

    let header = jwt_part(&token, 0);
    let kid = header["kid"].as_str().unwrap().to_owned();
    let payload_part = token.split('.').nth(1).unwrap().to_owned();
    let signature_part = token.split('.').nth(2).unwrap().to_owned();
    let jwks = server.anonymous().jwks().unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap()
        .clone();
    let public_x = jwk["x"].as_str().unwrap().to_owned();

    let mut forged = Vec::new();
    // alg none, no signature.
    let none = encode_part(&json!({"alg": "none", "typ": "at+jwt", "kid": kid}));
    forged.push(("alg none", format!("{none}.{payload_part}.")));
    // HS256 keyed with the public key (raw bytes, and its JWK text).
    let hs = encode_part(&json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}));
    let input = format!("{hs}.{payload_part}");
    let raw_public = URL_SAFE_NO_PAD.decode(&public_x).unwrap();
    forged.push((
        "HS256 with the public key bytes",
        format!("{input}.{}", hs256(&raw_public, &input)),
    ));
    forged.push((
        "HS256 with the public JWK text",
        format!("{input}.{}", hs256(public_x.as_bytes(), &input)),
    ));
    forged.push((
        "HS256 with the whole JWK",
        format!("{input}.{}", hs256(jwk.to_string().as_bytes(), &input)),
    ));
    // A kid that names no key of the ring.
    let mut unknown = header.clone();
    unknown["kid"] = json!("k_0000000000000000");
    forged.push((
        "unknown kid",
        format!("{}.{payload_part}.{signature_part}", encode_part(&unknown)),
    ));
    // Header without kid.
    let mut no_kid = header.clone();
    no_kid.as_object_mut().unwrap().remove("kid");
    forged.push((
        "no kid",
        format!("{}.{payload_part}.{signature_part}", encode_part(&no_kid)),
    ));
    // A tampered payload with the original signature.
    let mut claims = jwt_part(&token, 1);
    claims["scope"] = json!("admin token.create");
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 86_400);
    let header_part = token.split('.').next().unwrap();
    forged.push((
        "tampered payload",
        format!("{header_part}.{}.{signature_part}", encode_part(&claims)),
    ));

    for (what, t) in &forged {
        assert_eq!(
            introspect(&server, &root, t),
            json!({"active": false}),
            "{what}"
        );
    }
    // The genuine token is still active: the forgeries did not disturb it.
    assert_eq!(introspect(&server, &root, &token)["active"], true);
}

#[test]
fn pyjwt_validates_access_tokens_with_only_the_jwks() {
    let have_python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_python {
        common::cannot_run("python3 not found, so the PyJWT interop test does not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start_with(&db, &["--jwt-issuer", "https://kms.interop"], &[]);
    let token = server
        .client(&root)
        .access_token(Some("app.read token.read"), Some("interop-api"))
        .unwrap()
        .access_token;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jwks_interop.py");
    let out = Command::new("python3")
        .args([
            script,
            &server.base,
            &token,
            "https://kms.interop",
            "interop-api",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.code() == Some(3) && stdout.starts_with("SKIP") {
        common::cannot_run(&format!(
            "{stdout}install with `pip install pyjwt cryptography` (.ci/run does)"
        ));
        return;
    }
    assert!(
        out.status.success(),
        "jwks_interop.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("interop ok"), "{stdout}");
}

/// The master key from a command (a secret manager's CLI): `kms init` and `kms keys` use
/// it, no key file is created, the key opens what it sealed on the next start, and a
/// failing command stops the start with its own message, never its output.
#[test]
fn the_master_key_comes_from_a_command() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let key = random_master_key();
    let key_file = dir.path().join("vault-secret");
    std::fs::write(&key_file, &key).unwrap();
    let command = format!("cat {}", key_file.display());
    let env = [("KMS_MASTER_KEY_COMMAND", command.as_str())];
    let out = run_env(&db, &["init"], &env);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        !dir.path().join("kms.db.key").exists(),
        "no key file beside the database"
    );
    let rotated = run_env(&db, &["keys", "rotate"], &env);
    assert!(rotated.status.success(), "{}", rotated.stderr);
    let keys = keys_list(&db, &env);
    assert!(keys.iter().any(|k| k["state"] == "active"), "{keys:?}");
    // The same key from the flag works too; a different key cannot open the sealed keys.
    let flag = run_env(
        &db,
        &["keys", "list", "--master-key-command", &command],
        &[],
    );
    assert!(flag.status.success(), "{}", flag.stderr);
    let other = format!("printf %s {}", random_master_key());
    let wrong = run_env(
        &db,
        &["keys", "rotate"],
        &[("KMS_MASTER_KEY_COMMAND", &other)],
    );
    assert!(!wrong.status.success());
    // Failures say what went wrong, with the command's stderr line but never its stdout.
    let failing = "echo leaked-output; echo vault: permission denied >&2; exit 3";
    let out = run_env(
        &db,
        &["keys", "rotate"],
        &[("KMS_MASTER_KEY_COMMAND", failing)],
    );
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("the master-key command failed"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("vault: permission denied"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("leaked-output"), "{}", out.stderr);
    let garbage = run_env(
        &db,
        &["keys", "rotate"],
        &[("KMS_MASTER_KEY_COMMAND", "echo not-a-key")],
    );
    assert!(
        garbage.stderr.contains("printed no base64 key"),
        "{}",
        garbage.stderr
    );
    assert!(!garbage.stderr.contains("not-a-key"), "{}", garbage.stderr);
    // Given twice: refused before anything runs.
    let twice = run_env(
        &db,
        &["keys", "list"],
        &[
            ("KMS_MASTER_KEY_COMMAND", command.as_str()),
            ("KMS_MASTER_KEY", key.as_str()),
        ],
    );
    assert!(!twice.status.success());
    assert!(twice.stderr.contains("given twice"), "{}", twice.stderr);
}
