//! End-to-end tests of the master key's custody against the real binary: rotation
//! (`kms master-key rotate`), escrow in shares (`split`, `combine`), and signed audit
//! checkpoints that detect deleted newest events (`--audit-checkpoint-file`,
//! `kms audit verify --checkpoint`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{init, raw, run, run_input, Output, Server};
use serde_json::Value;

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

fn run_env(db: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    run_input(db, args, env, "")
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

#[cfg(unix)]
fn assert_owner_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
}

#[test]
fn rotating_the_master_key_reseals_everything_and_the_old_key_opens_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let old_key = dir.path().join("kms.db.key");
    let new_key = dir.path().join("new.key");

    let mut server = Server::start(&db);
    let admin = server.client(&root);
    let app = admin
        .create_app(&kms_server::wire::NewAppBody {
            name: "billing".into(),
            ..Default::default()
        })
        .unwrap();
    admin.rotate_signing_secret(&app.id).unwrap();
    let jwt = admin.access_token(None, None).unwrap().access_token;
    // While a server has the file open the rotation is refused: it would go on sealing
    // under the old key.
    let out = run(
        &db,
        &[
            "master-key",
            "rotate",
            "--new-key-file",
            new_key.to_str().unwrap(),
            "--generate",
        ],
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("stop every node"), "{}", out.stderr);
    assert!(!new_key.exists(), "nothing was created");
    server.stop();

    let out = run(
        &db,
        &[
            "master-key",
            "rotate",
            "--new-key-file",
            new_key.to_str().unwrap(),
            "--generate",
        ],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["signing_keys"], 1, "{report}");
    assert_eq!(report["request_signing_secrets"], 1, "{report}");
    assert!(out.stderr.contains("restart every node"), "{}", out.stderr);
    #[cfg(unix)]
    assert_owner_only(&new_key);
    let new_text = std::fs::read_to_string(&new_key).unwrap();
    assert!(!out.stdout.contains(new_text.trim()) && !out.stderr.contains(new_text.trim()));

    // The old key (the default key file) opens nothing any more: the start stops.
    let out = run_env(&db, &["keys", "list"], &[]);
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(out.stderr.contains("master key"), "{}", out.stderr);
    // The new one opens everything; a token signed before the rotation still verifies.
    let new_flag = ["--master-key-file", new_key.to_str().unwrap()];
    let server = Server::start_with(&db, &new_flag, &[]);
    assert_eq!(introspect(&server, &root, &jwt)["active"], true);
    let admin = server.client(&root);
    admin.access_token(None, None).unwrap();
    let events = admin
        .list_audit(&kms_server::wire::AuditQueryParams {
            action: Some("master_key.rotate".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(events.items.len(), 1);
    drop(server);

    // Rotating to the key in use, or from a file that holds no key, changes nothing.
    let mut args = vec!["master-key", "rotate", "--new-key-file"];
    args.push(new_key.to_str().unwrap());
    args.extend(new_flag);
    let out = run(&db, &args);
    assert!(!out.status.success());
    assert!(out.stderr.contains("in use"), "{}", out.stderr);
    let junk = dir.path().join("junk.key");
    std::fs::write(&junk, "not a key\n").unwrap();
    let mut args = vec!["master-key", "rotate", "--new-key-file"];
    args.push(junk.to_str().unwrap());
    args.extend(new_flag);
    let out = run(&db, &args);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("base64 key of 32 bytes"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("not a key"), "{}", out.stderr);
    let out = run(
        &db,
        &[
            "keys",
            "list",
            "--master-key-file",
            new_key.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(std::fs::read_to_string(&old_key).is_ok());
}

#[test]
fn any_threshold_of_shares_gives_the_master_key_back_and_fewer_give_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    init(&db);
    let key = std::fs::read_to_string(dir.path().join("kms.db.key")).unwrap();
    let key = key.trim();

    let out = run(
        &db,
        &["master-key", "split", "--shares", "5", "--threshold", "3"],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let shares: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(shares.len(), 5, "{}", out.stdout);
    assert!(!out.stdout.contains(key), "a share is not the key");
    for pick in [[0, 1, 2], [0, 2, 4], [4, 3, 1]] {
        let input: Vec<&str> = pick.iter().map(|&i| shares[i]).collect();
        let out = run_input(&db, &["master-key", "combine"], &[], &input.join("\n"));
        assert!(out.status.success(), "{}", out.stderr);
        assert_eq!(out.stdout.trim(), key);
    }
    // Two of three: refused, and no key printed.
    let out = run_input(
        &db,
        &["master-key", "combine"],
        &[],
        &format!("{}\n{}\n", shares[1], shares[3]),
    );
    assert!(!out.status.success());
    assert!(out.stdout.trim().is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("3 needed"), "{}", out.stderr);
    // A mistyped share: refused.
    let mut typo = shares[2].to_owned().into_bytes();
    let i = typo.len() - 14;
    typo[i] = if typo[i] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).unwrap();
    let out = run_input(
        &db,
        &["master-key", "combine"],
        &[],
        &format!("{}\n{}\n{typo}\n", shares[0], shares[1]),
    );
    assert!(!out.status.success());
    assert!(out.stdout.trim().is_empty());
    // To a new owner-only file.
    let file = dir.path().join("recovered.key");
    let out = run_input(
        &db,
        &["master-key", "combine", "--output", file.to_str().unwrap()],
        &[],
        &shares[2..].join("\n"),
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(!out.stdout.contains(key));
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), key);
    #[cfg(unix)]
    assert_owner_only(&file);
    // The recovered key runs the database.
    let out = run(
        &db,
        &["keys", "list", "--master-key-file", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", out.stderr);
}

fn checkpoint_lines(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn signed_checkpoints_detect_the_deletion_of_the_newest_audit_events() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let file = dir.path().join("checkpoints.jsonl");
    let file_flag = file.to_str().unwrap();
    let mut server = Server::start_with(
        &db,
        &[
            "--audit-checkpoint-file",
            file_flag,
            "--audit-checkpoint-every",
            "3",
        ],
        &[],
    );
    let admin = server.client(&root);
    for i in 0..7 {
        admin
            .create_app(&kms_server::wire::NewAppBody {
                name: format!("app{i}"),
                ..Default::default()
            })
            .unwrap();
    }
    // A checkpoint once three events accumulated, within the poll interval.
    let deadline = Instant::now() + Duration::from_secs(10);
    while checkpoint_lines(&file).is_empty() {
        assert!(Instant::now() < deadline, "no checkpoint written");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();
    #[cfg(unix)]
    assert_owner_only(&file);
    let lines = checkpoint_lines(&file);
    let newest = lines.last().unwrap();
    let head = admin_head(&db);
    // The last one, written at shutdown, is the head.
    assert_eq!(newest["seq"], head, "{lines:?}");
    assert!(newest["jws"].as_str().unwrap().split('.').count() == 3);

    let out = run(&db, &["audit", "verify", "--checkpoint", file_flag]);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    assert_eq!(out.json()["ok"], true);

    // Delete the two newest events, as an attacker with the file would: the chain alone
    // still verifies; the checkpoints do not.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute("DELETE FROM audit_events WHERE seq > ?1", [head - 2])
            .unwrap();
    }
    let out = run(&db, &["audit", "verify"]);
    assert!(out.status.success(), "{}", out.stdout);
    assert_eq!(out.json()["ok"], true);
    let out = run(&db, &["audit", "verify", "--checkpoint", file_flag]);
    assert_eq!(out.status.code(), Some(4), "{}{}", out.stdout, out.stderr);
    let verdict = out.json();
    assert_eq!(verdict["ok"], false);
    assert!(
        verdict["problem"]
            .as_str()
            .unwrap()
            .contains("were deleted"),
        "{verdict}"
    );
    // A server started now says so in its log at once.
    let mut server = Server::start_with(&db, &["--audit-checkpoint-file", file_flag], &[]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.logs().contains("beyond the chain's head") {
        assert!(Instant::now() < deadline, "{}", server.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();

    // A forged checkpoint (payload changed, signature kept) is refused.
    let mut forged = newest.clone();
    let jws = forged["jws"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = jws.split('.').collect();
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: Value = serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
    payload["seq"] = Value::from(1);
    forged["jws"] = Value::from(format!(
        "{}.{}.{}",
        parts[0],
        engine.encode(serde_json::to_vec(&payload).unwrap()),
        parts[2]
    ));
    let forged_file = dir.path().join("forged.jsonl");
    std::fs::write(&forged_file, format!("{forged}\n")).unwrap();
    let out = run(
        &db,
        &[
            "audit",
            "verify",
            "--checkpoint",
            forged_file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(
        out.json()["problem"]
            .as_str()
            .unwrap()
            .contains("signature does not verify"),
        "{}",
        out.stdout
    );
    // Garbage in the file is a clear error, not a verdict.
    std::fs::write(&forged_file, "{not json\n").unwrap();
    let out = run(
        &db,
        &[
            "audit",
            "verify",
            "--checkpoint",
            forged_file.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("line 1"), "{}", out.stderr);
}

/// The newest audit `seq` in the database file.
fn admin_head(db: &Path) -> u64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT MAX(seq) FROM audit_events", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap() as u64
}
