//! Fault injection against the real `kms` binary: a store that fails (database locked by
//! another process, a full disk, write I/O errors) makes the server answer
//! `503 unavailable` with `Retry-After`, change nothing, and recover by itself once the
//! store does; `kill -9` during a write burst loses no acknowledged write and leaves a
//! database that passes `PRAGMA integrity_check`.
//!
//! Every fault is real, not simulated: the lock is a second SQLite connection holding the
//! write lock; the I/O errors come from lowering the server's `RLIMIT_FSIZE` with
//! `prlimit` (every file write then fails with `EFBIG`, which SQLite reports as
//! `SQLITE_IOERR_WRITE`); the full disk is a small tmpfs, mounted in a private mount
//! namespace for the server alone and filled up from outside (`ENOSPC`, `SQLITE_FULL`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{call, init, kms_bin, Raw, Server};
use serde_json::{json, Value};

/// A `GET` that must answer 200; its JSON body.
fn get(base: &str, root: &str, path: &str) -> Value {
    let r = call(base, "GET", path, Some(root), None);
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    r.json()
}

/// Everything the API lets an administrator see, for before/after comparisons: the
/// applications, the tokens of each, permissions, roles, signing keys, the audit log and
/// the audit chain's verdict.
fn snapshot(base: &str, root: &str) -> Value {
    let apps = get(base, root, "/v1/apps?limit=200");
    assert!(apps["next_cursor"].is_null(), "too many apps for one page");
    let mut tokens = serde_json::Map::new();
    for app in apps["items"].as_array().unwrap() {
        let id = app["id"].as_str().unwrap();
        let page = get(base, root, &format!("/v1/apps/{id}/tokens?limit=200"));
        assert!(
            page["next_cursor"].is_null(),
            "too many tokens for one page"
        );
        tokens.insert(id.to_owned(), page["items"].clone());
    }
    let audit = get(base, root, "/v1/audit?limit=200");
    json!({
        "apps": apps["items"],
        "tokens": tokens,
        "permissions": get(base, root, "/v1/permissions")["items"],
        "roles": get(base, root, "/v1/roles")["items"],
        "keys": get(base, root, "/v1/keys")["items"],
        "audit": audit["items"],
        "audit_verify": get(base, root, "/v1/audit/verify"),
    })
}

/// The number of audit events and that the chain verifies.
fn audit_events(base: &str, root: &str) -> u64 {
    let v = get(base, root, "/v1/audit/verify");
    assert_eq!(v["ok"], true, "audit chain: {v}");
    v["events"].as_u64().unwrap()
}

/// The three management writes the faults are tried on: create an application, a token in
/// `app`, a permission; `tag` makes their names unique.
fn writes(base: &str, root: &str, app: &str, tag: &str) -> Vec<(&'static str, Raw)> {
    vec![
        (
            "create app",
            call(
                base,
                "POST",
                "/v1/apps",
                Some(root),
                Some(&json!({"name": format!("app-{tag}")})),
            ),
        ),
        (
            "create token",
            call(
                base,
                "POST",
                &format!("/v1/apps/{app}/tokens"),
                Some(root),
                Some(&json!({"name": format!("tok-{tag}"), "scopes": ["app.read"]})),
            ),
        ),
        (
            "create permission",
            call(
                base,
                "POST",
                "/v1/permissions",
                Some(root),
                Some(&json!({"scope": format!("faults.{tag}"), "description": "fault test"})),
            ),
        ),
    ]
}

/// Asserts `503 unavailable`, retryable, with a `Retry-After` of at least one second.
fn assert_unavailable(what: &str, r: &Raw) {
    let v = r.assert_error(503, "unavailable");
    assert_eq!(v["error"]["retryable"], true, "{what}: {}", r.body);
    let retry_after = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: 503 without Retry-After"));
    let secs: u64 = retry_after.parse().expect("Retry-After in seconds");
    assert!(secs >= 1, "{what}: Retry-After {secs}");
}

/// Asserts every write was refused with `503 unavailable`.
fn assert_all_unavailable(attempts: &[(&str, Raw)]) {
    for (what, r) in attempts {
        assert_unavailable(what, r);
    }
}

/// Asserts the server logged the store failure with SQLite's own words for it, so the 503s
/// came from the fault under test and nothing else.
fn assert_logged(server: &Server, sqlite_message: &str) {
    let logs = server.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("store unavailable") && l.contains(sqlite_message)),
        "no `store unavailable ... {sqlite_message}` in the logs:\n{logs}"
    );
}

/// The sum of `kms_store_errors_total` over its labels, from `/metrics`.
fn store_errors(base: &str) -> f64 {
    let r = call(base, "GET", "/metrics", None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
        .lines()
        .filter(|l| l.starts_with("kms_store_errors_total"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// Asserts every write succeeded (201).
fn assert_all_created(attempts: &[(&str, Raw)]) {
    for (what, r) in attempts {
        assert_eq!(r.status, 201, "{what} after recovery: {}", r.body);
    }
}

/// An application and a token in it (scope `app.read`) made before the fault; the token's
/// plaintext, verified once so it is known to work.
struct Existing {
    app: String,
    secret: String,
}

fn existing(base: &str, root: &str) -> Existing {
    let app = call(
        base,
        "POST",
        "/v1/apps",
        Some(root),
        Some(&json!({"name": "existing", "token_prefix": "ex"})),
    );
    assert_eq!(app.status, 201, "{}", app.body);
    let app = app.json()["id"].as_str().unwrap().to_owned();
    let token = call(
        base,
        "POST",
        &format!("/v1/apps/{app}/tokens"),
        Some(root),
        Some(&json!({"name": "existing", "scopes": ["app.read"]})),
    );
    assert_eq!(token.status, 201, "{}", token.body);
    let secret = token.json()["token"].as_str().unwrap().to_owned();
    assert_verifies(base, root, &secret);
    Existing { app, secret }
}

/// Asserts `secret` verifies with `app.read`.
fn assert_verifies(base: &str, root: &str, secret: &str) {
    let r = call(
        base,
        "POST",
        "/v1/verify",
        Some(root),
        Some(&json!({"token": secret, "permissions": "app.read"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["code"], "VALID", "{v}");
}

/// `PRAGMA integrity_check` of the file at `db`, with no server running on it. Read-only,
/// so the write-ahead log a killed server left is read but not checkpointed away: the next
/// server recovers it itself.
fn integrity_check(db: &Path) -> String {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let conn = rusqlite::Connection::open_with_flags(db, flags).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap()
}

/// A command with the same clean environment as the harness's `kms`.
fn clean(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars() {
        if k.starts_with("KMS_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("KMS_INSECURE_FAST_HASH", "1");
    cmd
}

/// `prlimit --pid PID --fsize=SOFT:` (the soft limit only, so it can be raised again).
fn set_file_size_limit(pid: u32, soft: &str) {
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--fsize={soft}:"))
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success(), "prlimit --fsize={soft}: failed");
}

#[test]
fn a_locked_database_answers_503_changes_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start(&db);
    let base = server.base.as_str();
    let ex = existing(base, &root);
    let before = snapshot(base, &root);
    let events = audit_events(base, &root);

    // Another process takes SQLite's write lock and writes, the way a second writer or a
    // long `sqlite3` session would.
    let errors = store_errors(base);
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch(
        "BEGIN IMMEDIATE; INSERT INTO meta (key, value) VALUES ('e2e_faults_lock', 'held');",
    )
    .unwrap();

    // Each write waits out the store's busy timeout, then is refused: 503, not a hang
    // until the request timeout (the harness gives up after 30 s).
    let attempts = writes(base, &root, &ex.app, "locked");
    assert_all_unavailable(&attempts);
    assert_logged(&server, "database is locked");
    // What the runbook tells operators to alert on.
    assert!(
        store_errors(base) >= errors + 3.0,
        "kms_store_errors_total did not rise"
    );

    // WAL mode: readers are not blocked by a writer, so reads, verification and readiness
    // carry on while the lock is held.
    assert_verifies(base, &root, &ex.secret);
    let ready = call(base, "GET", "/readyz", None, None);
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(
        snapshot(base, &root),
        before,
        "a refused write changed something"
    );

    // The lock goes away; the same requests succeed on the same server.
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    let attempts = writes(base, &root, &ex.app, "locked");
    assert_all_created(&attempts);
    assert_eq!(audit_events(base, &root), events + 3);
    assert_verifies(base, &root, &ex.secret);
}

/// A write that outlives `--request-timeout` while its store call waits for the lock is not
/// answered `503` (it could still commit, and the client's retry would apply it twice): the
/// server answers with the write's real outcome once the store call ends. Here the lock is
/// released after the timeout: the write commits once and the client is told so (201).
#[test]
fn a_write_outliving_the_request_timeout_is_answered_with_its_real_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    // Shorter than the store's 5 s busy timeout, so the request timeout passes first.
    let server = Server::start_with(&db, &["--request-timeout", "1s"], &[]);
    let base = server.base.clone();
    let apps_before = get(&base, &root, "/v1/apps?limit=200")["items"]
        .as_array()
        .unwrap()
        .len();
    let events = audit_events(&base, &root);

    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch(
        "BEGIN IMMEDIATE; INSERT INTO meta (key, value) VALUES ('e2e_faults_lock', 'held');",
    )
    .unwrap();
    let (b, r) = (base.clone(), root.clone());
    let writer = thread::spawn(move || {
        call(
            &b,
            "POST",
            "/v1/apps",
            Some(&r),
            Some(&json!({"name": "outlived"})),
        )
    });
    // Past the request timeout, inside the store's busy wait.
    thread::sleep(Duration::from_millis(2500));
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    let answer = writer.join().unwrap();
    assert_eq!(answer.status, 201, "{}", answer.body);
    let apps = get(&base, &root, "/v1/apps?limit=200");
    let named: Vec<&Value> = apps["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"] == "outlived")
        .collect();
    assert_eq!(named.len(), 1, "{apps}");
    assert_eq!(named[0]["id"], answer.json()["id"]);
    assert_eq!(apps["items"].as_array().unwrap().len(), apps_before + 1);
    assert_eq!(audit_events(&base, &root), events + 1);
}

/// `kms serve` on `db` through `sh`, with `SIGXFSZ` ignored so that writes past the file
/// size limit fail with `EFBIG` instead of killing the process.
fn serve_ignoring_sigxfsz(db: &Path) -> Server {
    let mut cmd = clean("sh");
    cmd.arg("-c")
        .arg(r#"trap '' XFSZ; exec "$0" "$@""#)
        .arg(kms_bin())
        .arg("serve")
        .arg("--db")
        .arg(db)
        .arg("--listen")
        .arg("127.0.0.1:0");
    Server::spawn(cmd, db)
}

#[test]
fn write_io_errors_answer_503_change_nothing_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let mut server = serve_ignoring_sigxfsz(&db);
    let base = server.base.clone();
    let ex = existing(&base, &root);
    let before = snapshot(&base, &root);
    let events = audit_events(&base, &root);

    // From now on every write to a regular file fails with EFBIG (SQLITE_IOERR_WRITE).
    set_file_size_limit(server.pid(), "0");
    let attempts = writes(&base, &root, &ex.app, "ioerr");
    assert_all_unavailable(&attempts);
    assert_logged(&server, "disk I/O error");
    assert_verifies(&base, &root, &ex.secret);
    assert_eq!(
        snapshot(&base, &root),
        before,
        "a failed write changed something"
    );

    set_file_size_limit(server.pid(), "unlimited");
    let attempts = writes(&base, &root, &ex.app, "ioerr");
    assert_all_created(&attempts);
    assert_eq!(audit_events(&base, &root), events + 3);
    assert_verifies(&base, &root, &ex.secret);

    assert!(server.stop().success(), "logs:\n{}", server.logs());
    assert_eq!(integrity_check(&db), "ok");
}

/// Runs `kms serve` in a private user and mount namespace on a fresh tmpfs of `size` at
/// `mount_point`, with the database inside it; `None` when this system does not allow
/// unprivileged namespaces.
fn serve_on_tmpfs(mount_point: &Path, size: &str) -> Option<Server> {
    let unshare = [
        "--user",
        "--map-root-user",
        "--mount",
        "--propagation",
        "private",
    ];
    let probe = Command::new("unshare")
        .args(unshare)
        .args(["sh", "-c", r#"mount -t tmpfs -o size=1m tmpfs "$0""#])
        .arg(mount_point)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        return None;
    }
    let db = mount_point.join("kms.db");
    let mut cmd = clean("unshare");
    cmd.args(unshare)
        .arg("sh")
        .arg("-c")
        .arg(r#"mount -t tmpfs -o "size=$1" tmpfs "$0" && shift && trap '' XFSZ && exec "$@""#)
        .arg(mount_point)
        .arg(size)
        .arg(kms_bin())
        .arg("serve")
        .arg("--db")
        .arg(&db)
        .arg("--listen")
        .arg("127.0.0.1:0");
    Some(Server::spawn(cmd, &db))
}

/// The root token `kms serve` printed when it initialised an empty database.
fn printed_root_token(logs: &str) -> String {
    let line = logs
        .lines()
        .find(|l| l.starts_with("{\"root_token\""))
        .unwrap_or_else(|| panic!("no root token in the logs:\n{logs}"));
    let v: Value = serde_json::from_str(line).unwrap();
    v["root_token"].as_str().unwrap().to_owned()
}

/// Fills the file system holding `path` with a file at `path`, until it is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(
                e.raw_os_error(),
                Some(28), // ENOSPC
                "filling the tmpfs failed with {e}"
            );
            break;
        }
    }
    // Whatever a partial chunk left over goes too.
    while f.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
}

#[test]
fn a_full_disk_answers_503_changes_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = serve_on_tmpfs(dir.path(), "16m") else {
        common::cannot_run(
            "this system does not allow `unshare --user --mount` and a tmpfs mount; \
             the full-disk case is not exercised",
        );
        return;
    };
    let base = server.base.as_str();
    let root = printed_root_token(&server.logs());
    let ex = existing(base, &root);
    let before = snapshot(base, &root);
    let events = audit_events(base, &root);

    // The server's tmpfs, seen from outside its mount namespace.
    let filler: PathBuf = PathBuf::from(format!("/proc/{}/root", server.pid()))
        .join(dir.path().strip_prefix("/").unwrap())
        .join("filler");
    fill(&filler);

    let attempts = writes(base, &root, &ex.app, "full");
    assert_all_unavailable(&attempts);
    assert_logged(&server, "database or disk is full");
    assert_verifies(base, &root, &ex.secret);
    assert_eq!(
        snapshot(base, &root),
        before,
        "a failed write changed something"
    );

    std::fs::remove_file(&filler).unwrap();
    let attempts = writes(base, &root, &ex.app, "full");
    assert_all_created(&attempts);
    assert_eq!(audit_events(base, &root), events + 3);
    assert_verifies(base, &root, &ex.secret);
}

/// What the writers of one burst saw.
#[derive(Default)]
struct Acked {
    scopes: Vec<String>,
    tokens: Vec<String>,
    /// Responses that were neither a 201 nor a lost connection.
    unexpected: Vec<String>,
}

/// One writer of a burst: creates permissions and tokens as fast as it can until the
/// server goes away (or `stop`), counting acknowledgements in `acks`.
fn writer(
    base: String,
    root: String,
    app: String,
    tag: String,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
) -> Acked {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build();
    let auth = format!("Bearer {root}");
    let mut out = Acked::default();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let scope = format!("burst.{tag}.n{i}");
        let (url, body) = if i.is_multiple_of(2) {
            (
                format!("{base}/v1/permissions"),
                json!({"scope": scope, "description": "burst"}),
            )
        } else {
            (
                format!("{base}/v1/apps/{app}/tokens"),
                json!({"name": format!("burst-{tag}-{i}"), "scopes": ["app.read"]}),
            )
        };
        let result = agent
            .post(&url)
            .set("Authorization", &auth)
            .send_json(&body);
        match result {
            Ok(r) if r.status() == 201 => {
                // Acknowledged only once the whole body arrived.
                let Ok(v) = r.into_json::<Value>() else { break };
                if i.is_multiple_of(2) {
                    assert_eq!(v["scope"], scope.as_str());
                    out.scopes.push(scope);
                } else {
                    out.tokens.push(v["id"].as_str().unwrap().to_owned());
                }
                acks.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => out.unexpected.push(format!("{}: {}", r.status(), url)),
            Err(ureq::Error::Status(code, r)) => out.unexpected.push(format!(
                "{code}: {url}: {}",
                r.into_string().unwrap_or_default()
            )),
            // The server is gone: whatever was in flight was never acknowledged.
            Err(ureq::Error::Transport(_)) => break,
        }
    }
    out
}

#[test]
fn kill_9_during_a_write_burst_loses_no_acknowledged_write() {
    const CYCLES: usize = 4;
    const WRITERS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    // No per-address rate limit: the burst comes from one address.
    let args = ["--rate-limit-per-ip", "0"];
    let mut server = Server::start_with(&db, &args, &[]);
    let app = {
        let r = call(
            &server.base,
            "POST",
            "/v1/apps",
            Some(&root),
            Some(&json!({"name": "burst"})),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["id"].as_str().unwrap().to_owned()
    };
    let mut all_scopes = Vec::new();
    let mut all_tokens = Vec::new();
    for cycle in 0..CYCLES {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (base, root, app) = (server.base.clone(), root.clone(), app.clone());
                let tag = format!("c{cycle}w{w}");
                let (stop, acks) = (stop.clone(), acks.clone());
                thread::spawn(move || writer(base, root, app, tag, stop, acks))
            })
            .collect();
        // Kill at a different point of each burst, once some writes were acknowledged.
        let target = 20 + 25 * cycle;
        let deadline = Instant::now() + Duration::from_secs(60);
        while acks.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "the burst made no progress");
            thread::sleep(Duration::from_millis(2));
        }
        let status = server.stop_with("KILL");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{status}"
        );
        stop.store(true, Ordering::Relaxed);
        let mut acked = Acked::default();
        for h in handles {
            let a = h.join().unwrap();
            acked.scopes.extend(a.scopes);
            acked.tokens.extend(a.tokens);
            acked.unexpected.extend(a.unexpected);
        }
        assert!(
            acked.unexpected.is_empty(),
            "cycle {cycle}: {:?}",
            acked.unexpected
        );
        assert!(acked.scopes.len() + acked.tokens.len() >= target);

        // The file as the killed server left it, before anything opens it again.
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        assert!(wal.exists(), "cycle {cycle}: the killed server left no WAL");
        assert_eq!(integrity_check(&db), "ok", "cycle {cycle}");
        assert!(wal.exists(), "cycle {cycle}: the check removed the WAL");

        server = Server::start_with(&db, &args, &[]);
        all_scopes.extend(acked.scopes);
        all_tokens.extend(acked.tokens);
        let base = server.base.as_str();
        let listed = get(base, &root, "/v1/permissions");
        let listed: std::collections::BTreeSet<&str> = listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["scope"].as_str().unwrap())
            .collect();
        for scope in &all_scopes {
            assert!(
                listed.contains(scope.as_str()),
                "cycle {cycle}: acknowledged permission {scope} is lost"
            );
        }
        for id in &all_tokens {
            let r = call(base, "GET", &format!("/v1/tokens/{id}"), Some(&root), None);
            assert_eq!(
                r.status, 200,
                "cycle {cycle}: acknowledged token {id} is lost: {}",
                r.body
            );
        }
        audit_events(base, &root);
        eprintln!(
            "cycle {cycle}: killed after {} acknowledged writes; all present",
            all_scopes.len() + all_tokens.len()
        );
    }
    assert!(server.stop().success(), "logs:\n{}", server.logs());
    assert_eq!(integrity_check(&db), "ok");
}

/// `/readyz` answers 503 while the store cannot serve (here: another process moved the
/// schema to a version this binary does not know, as a newer node's migration would), and
/// 200 again once it can; `/healthz` (liveness) stays 200 throughout.
#[test]
fn readiness_answers_503_while_the_store_cannot_serve_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (_root, _) = init(&db);
    let server = Server::start(&db);
    let base = server.base.as_str();
    assert_eq!(call(base, "GET", "/readyz", None, None).status, 200);
    let other = rusqlite::Connection::open(&db).unwrap();
    other
        .execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (999, '2026-12-01T00:00:00Z')",
            [],
        )
        .unwrap();
    let ready = call(base, "GET", "/readyz", None, None);
    ready.assert_error(503, "unavailable");
    assert!(ready.header("retry-after").is_some());
    assert_eq!(call(base, "GET", "/healthz", None, None).status, 200);
    other
        .execute("DELETE FROM schema_migrations WHERE version = 999", [])
        .unwrap();
    let ready = call(base, "GET", "/readyz", None, None);
    assert_eq!(ready.status, 200, "{}", ready.body);
}
