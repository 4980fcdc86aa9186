//! Several processes writing one SQLite file at once — a busy server and operator commands
//! beside it — each get every write acknowledged, and the audit log stays one contiguous
//! chain that verifies: the chain head is read inside the transaction that appends to it,
//! not under an in-process lock.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{call, init, run, Server};
use serde_json::json;

/// How long the writers keep writing.
const WRITING: Duration = Duration::from_secs(3);

#[test]
fn a_server_and_operator_commands_writing_one_file_lose_nothing_and_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    // The client here is a test, not a flood: lift the per-address management limit.
    let server = Server::start_with(&db, &["--rate-limit-per-ip", "100000"], &[]);
    let base = server.base.clone();

    let (http_names, cli_names) = thread::scope(|s| {
        // Over HTTP: the server writes as fast as one client can make it.
        let http = s.spawn(|| {
            let mut names = Vec::new();
            let start = Instant::now();
            let mut i = 0;
            while start.elapsed() < WRITING {
                let name = format!("http-{i}");
                let r = call(
                    &base,
                    "POST",
                    "/v1/apps",
                    Some(&root),
                    Some(&json!({ "name": name })),
                );
                assert_eq!(r.status, 201, "HTTP create {name}: {}", r.body);
                names.push(name);
                i += 1;
            }
            names
        });
        // Beside it, two operator processes at a time on the same file.
        let cli: Vec<_> = (0..2)
            .map(|worker| {
                let db = db.clone();
                s.spawn(move || {
                    let mut names = Vec::new();
                    let start = Instant::now();
                    let mut i = 0;
                    while start.elapsed() < WRITING {
                        let name = format!("cli-{worker}-{i}");
                        let out = run(&db, &["app", "create", "--name", &name]);
                        assert!(
                            out.status.success(),
                            "kms app create {name} failed: {}",
                            out.stderr
                        );
                        names.push(name);
                        i += 1;
                    }
                    names
                })
            })
            .collect();
        let http = http.join().unwrap();
        let cli: Vec<String> = cli.into_iter().flat_map(|h| h.join().unwrap()).collect();
        (http, cli)
    });
    assert!(!http_names.is_empty() && !cli_names.is_empty());
    eprintln!(
        "{} HTTP and {} command-line creates in {WRITING:?}",
        http_names.len(),
        cli_names.len()
    );

    // Every acknowledged write is there.
    let mut present = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/apps?limit=200&cursor={c}"),
            None => "/v1/apps?limit=200".to_owned(),
        };
        let page = call(&base, "GET", &path, Some(&root), None).json();
        for a in page["items"].as_array().unwrap() {
            present.insert(a["name"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    for name in http_names.iter().chain(&cli_names) {
        assert!(
            present.contains(name),
            "{name} was acknowledged but is missing"
        );
    }
    // One contiguous chain, verified by the server and by the command line.
    let verdict = call(&base, "GET", "/v1/audit/verify", Some(&root), None).json();
    assert_eq!(verdict["ok"], true, "{verdict}");
    let creates = http_names.len() + cli_names.len();
    assert!(
        verdict["events"].as_u64().unwrap() >= creates as u64,
        "{verdict}: fewer events than the {creates} creates"
    );
    let audit = run(&db, &["audit", "verify"]);
    assert!(audit.status.success(), "{}{}", audit.stdout, audit.stderr);
}
