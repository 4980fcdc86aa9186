//! `kms backup`, `kms restore` and `kms db check` on the real binary: a backup taken while a
//! server writes under load holds every change acknowledged before it began and restores
//! to a server whose audit chain verifies; the refusals (an existing target, a damaged or
//! foreign file, a PostgreSQL URL) change nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::{call, init, run, Server};
use serde_json::json;

/// Writers over HTTP during the backup.
const WRITERS: usize = 4;

fn key_file(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".key");
    PathBuf::from(p)
}

/// What a writer had acknowledged, and when.
struct Acked {
    at: Instant,
    app: String,
    token: String,
}

#[test]
fn a_backup_under_load_restores_every_change_acknowledged_before_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start_with(&db, &["--rate-limit-per-ip", "1000000"], &[]);
    let base = server.base.clone();
    let stop = AtomicBool::new(false);
    let acked = Mutex::new(Vec::<Acked>::new());
    let backup_file = dir.path().join("backups").join("kms-backup.db");
    std::fs::create_dir(backup_file.parent().unwrap()).unwrap();

    let (began, out) = thread::scope(|s| {
        for w in 0..WRITERS {
            let (base, root, stop, acked) = (&base, &root, &stop, &acked);
            s.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("w{w}-{i}");
                    let r = call(
                        base,
                        "POST",
                        "/v1/apps",
                        Some(root),
                        Some(&json!({"name": name})),
                    );
                    assert_eq!(r.status, 201, "create {name}: {}", r.body);
                    let app = r.json()["id"].as_str().unwrap().to_owned();
                    let r = call(
                        base,
                        "POST",
                        &format!("/v1/apps/{app}/tokens"),
                        Some(root),
                        Some(&json!({"name": format!("t-{name}")})),
                    );
                    assert_eq!(r.status, 201, "token of {name}: {}", r.body);
                    let token = r.json()["id"].as_str().unwrap().to_owned();
                    let at = Instant::now();
                    acked.lock().unwrap().push(Acked { at, app, token });
                    i += 1;
                }
            });
        }
        // Let the load build up, then back up in the middle of it.
        thread::sleep(Duration::from_millis(1500));
        let began = Instant::now();
        let out = run(&db, &["backup", "--to", backup_file.to_str().unwrap()]);
        // Writes go on after the backup too.
        thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        (began, out)
    });
    assert!(out.status.success(), "kms backup failed: {}", out.stderr);
    let summary = out.json();
    assert_eq!(summary["integrity"], "ok", "{summary}");
    assert!(summary["pages"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["seconds"].as_f64().is_some(), "{summary}");
    assert_eq!(
        summary["bytes"].as_u64().unwrap(),
        std::fs::metadata(&backup_file).unwrap().len(),
        "{summary}"
    );
    let acked = acked.into_inner().unwrap();
    let before: Vec<&Acked> = acked.iter().filter(|a| a.at < began).collect();
    let after = acked.len() - before.len();
    assert!(
        before.len() >= 10 && after > 0,
        "the backup ran under load: {} changes before it, {after} after",
        before.len()
    );
    // Every change made an audit event; the backup holds at least those acknowledged.
    assert!(
        summary["audit_events"].as_u64().unwrap() >= 2 * before.len() as u64,
        "{summary}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the backup is private: {mode:o}");
    }
    drop(server);

    let restored = dir.path().join("restored").join("kms.db");
    std::fs::create_dir(restored.parent().unwrap()).unwrap();
    let out = run(
        &restored,
        &["restore", "--from", backup_file.to_str().unwrap()],
    );
    assert!(out.status.success(), "kms restore failed: {}", out.stderr);
    let report = out.json();
    assert_eq!(report["audit_chain"]["ok"], true, "{report}");
    // The master key travels apart from the backup; the restored server needs the same one.
    std::fs::copy(key_file(&db), key_file(&restored)).unwrap();
    let server = Server::start_with(&restored, &["--rate-limit-per-ip", "1000000"], &[]);
    for a in &before {
        let r = call(
            &server.base,
            "GET",
            &format!("/v1/apps/{}", a.app),
            Some(&root),
            None,
        );
        assert_eq!(
            r.status, 200,
            "app {} acknowledged before the backup: {}",
            a.app, r.body
        );
        let r = call(
            &server.base,
            "GET",
            &format!("/v1/tokens/{}", a.token),
            Some(&root),
            None,
        );
        assert_eq!(r.status, 200, "token {}: {}", a.token, r.body);
    }
    let verdict = call(&server.base, "GET", "/v1/audit/verify", Some(&root), None).json();
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert_eq!(verdict["events"], summary["audit_events"], "{verdict}");
    let leftovers: Vec<_> = [backup_file.parent().unwrap(), restored.parent().unwrap()]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn backup_and_restore_refuse_an_existing_target_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    init(&db);
    let copy = dir.path().join("copy.db");
    std::fs::write(&copy, b"an older backup").unwrap();
    let out = run(&db, &["backup", "--to", copy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert_eq!(std::fs::read(&copy).unwrap(), b"an older backup");

    let out = run(&db, &["backup", "--to", copy.to_str().unwrap(), "--force"]);
    assert!(out.status.success(), "{}", out.stderr);

    // A target holding a database is refused without --force, kept as it was.
    let other = dir.path().join("other.db");
    init(&other);
    let before = std::fs::read(&other).unwrap();
    let out = run(&other, &["restore", "--from", copy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("not empty") && out.stderr.contains("--force"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(&other).unwrap(), before);
    // ... and refused even with it while a server has it open.
    let server = Server::start(&other);
    let out = run(
        &other,
        &["restore", "--from", copy.to_str().unwrap(), "--force"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("another process"), "{}", out.stderr);
    drop(server);
    let out = run(
        &other,
        &["restore", "--from", copy.to_str().unwrap(), "--force"],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        run(&other, &["db", "check"]).status.code(),
        Some(0),
        "the replaced database checks clean"
    );
}

#[test]
fn restore_refuses_damaged_and_foreign_files_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    init(&db);
    for i in 0..50 {
        let out = run(&db, &["app", "create", "--name", &format!("app-{i}")]);
        assert!(out.status.success(), "{}", out.stderr);
    }
    let target = dir.path().join("restored.db");

    // Not SQLite at all.
    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "these are not the pages you are looking for\n".repeat(200),
    )
    .unwrap();
    let out = run(&target, &["restore", "--from", text.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("not a SQLite database"),
        "{}",
        out.stderr
    );

    // SQLite, but not kms.
    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
        .unwrap();
    let out = run(&target, &["restore", "--from", foreign.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("not a kms database"), "{}", out.stderr);

    // A kms database with damaged pages: every page after the schema overwritten.
    let copy = dir.path().join("copy.db");
    let out = run(&db, &["backup", "--to", copy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", out.stderr);
    let mut bytes = std::fs::read(&copy).unwrap();
    let page = 4096;
    assert!(bytes.len() > 4 * page, "{} bytes", bytes.len());
    for b in &mut bytes[2 * page..] {
        *b = 0x5a;
    }
    let damaged = dir.path().join("damaged.db");
    std::fs::write(&damaged, &bytes).unwrap();
    let out = run(&target, &["restore", "--from", damaged.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("damaged"), "{}", out.stderr);
    let out = run(&damaged, &["db", "check"]);
    assert_eq!(out.status.code(), Some(5), "{}", out.stderr);
    assert_eq!(out.json()["ok"], false);

    // A copy whose audit chain was edited.
    let edited = dir.path().join("edited.db");
    std::fs::copy(&copy, &edited).unwrap();
    let conn = rusqlite::Connection::open(&edited).unwrap();
    let n = conn
        .execute(
            "UPDATE audit_events SET target = 'app_nobody' WHERE seq = 3",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    let out = run(&target, &["restore", "--from", edited.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("audit chain") && out.stderr.contains("broken at event 3"),
        "{}",
        out.stderr
    );

    assert!(!target.exists(), "no refusal created the target");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains("restored") || n.contains(".partial"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn db_check_reports_integrity_migrations_and_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    init(&db);
    let out = run(&db, &["db", "check"]);
    assert!(out.status.success(), "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["integrity"]["ok"], true, "{report}");
    assert_eq!(report["migrations"]["ok"], true, "{report}");
    assert_eq!(report["audit_chain"]["ok"], true, "{report}");

    // One step down: the schema is not current, and the chain is not read (opening the
    // file would migrate it).
    let out = run(&db, &["migrate", "down"]);
    assert!(out.status.success(), "{}", out.stderr);
    let before = std::fs::read(&db).unwrap();
    let out = run(&db, &["db", "check"]);
    assert_eq!(out.status.code(), Some(5), "{}", out.stderr);
    assert!(out.stderr.contains("not applied"), "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["migrations"]["ok"], false, "{report}");
    assert_eq!(report["audit_chain"]["checked"], false, "{report}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "a check changes nothing"
    );
    let out = run(&db, &["migrate", "up"]);
    assert!(out.status.success(), "{}", out.stderr);

    for name in ["one", "two"] {
        let out = run(&db, &["app", "create", "--name", name]);
        assert!(out.status.success(), "{}", out.stderr);
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n = conn
        .execute(
            "UPDATE audit_events SET target = 'app_nobody' WHERE seq = 2",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    let out = run(&db, &["db", "check"]);
    assert_eq!(out.status.code(), Some(5), "{}", out.stderr);
    assert!(out.stderr.contains("broken at event 2"), "{}", out.stderr);
    assert_eq!(out.json()["audit_chain"]["first_bad_seq"], 2);

    let out = run(&dir.path().join("missing.db"), &["db", "check"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("no database"), "{}", out.stderr);
}

#[test]
fn backup_and_restore_on_postgresql_point_to_the_runbook() {
    let dir = tempfile::tempdir().unwrap();
    let url = "postgres://kms:secret-password@127.0.0.1:1/kms";
    let file = dir.path().join("copy.db");
    for args in [
        vec!["backup", "--to", file.to_str().unwrap()],
        vec!["restore", "--from", file.to_str().unwrap()],
    ] {
        let out = common::kms()
            .args(&args)
            .args(["--db", url])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("pg_dump") && stderr.contains("backup-and-restore.md"),
            "{stderr}"
        );
        assert!(!stderr.contains("secret-password"), "{stderr}");
    }
    assert!(!file.exists());
}
