//! Shared harness of the end-to-end tests: runs the real `kms` binary on a fresh database
//! and an ephemeral loopback port, and drives it over HTTP.

#![allow(dead_code, reason = "each test binary uses part of the harness")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test harness"
)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub(crate) mod idp;
pub(crate) mod schema;

use kms_server::client::KmsClient;
use serde_json::Value;

/// A test that cannot run on this machine: a failure under `CI=true` (CI installs what every
/// test needs, so a missing piece there is a broken install step), a visible note otherwise.
pub(crate) fn cannot_run(why: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "this test cannot run here, and under CI=true that fails: {why}"
    );
    eprintln!("NOTICE: not run on this machine: {why}");
}

/// The `kms` binary under test.
pub(crate) fn kms_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kms")
}

/// A `kms` command with a clean environment: no inherited `KMS_*`, cheap hashing.
pub(crate) fn kms() -> Command {
    let mut cmd = Command::new(kms_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("KMS_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("KMS_INSECURE_FAST_HASH", "1");
    cmd
}

/// The output of a finished command.
pub(crate) struct Output {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Output {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {:?}", self.stdout))
    }
}

/// Runs `kms ARGS` with the database `db`.
pub(crate) fn run(db: &Path, args: &[&str]) -> Output {
    let out = kms()
        .args(args)
        .arg("--db")
        .arg(db)
        .stdin(Stdio::null())
        .output()
        .expect("run kms");
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `kms ARGS --db DB` with extra environment and `input` on its stdin.
pub(crate) fn run_input(db: &Path, args: &[&str], env: &[(&str, &str)], input: &str) -> Output {
    use std::io::Write as _;
    let mut cmd = kms();
    cmd.args(args)
        .arg("--db")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run kms");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait for kms");
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `kms init`: returns (root token, token id).
pub(crate) fn init(db: &Path) -> (String, String) {
    let out = run(db, &["init"]);
    assert!(out.status.success(), "init failed: {}", out.stderr);
    let v = out.json();
    (
        v["root_token"].as_str().unwrap().to_owned(),
        v["token_id"].as_str().unwrap().to_owned(),
    )
}

/// A running `kms serve`.
pub(crate) struct Server {
    child: Option<Child>,
    pub(crate) base: String,
    pub(crate) db: PathBuf,
    logs: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `kms serve` on `db` with extra arguments and environment.
    pub(crate) fn start_with(db: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_on(db, "127.0.0.1:0", args, env)
    }

    /// Starts `kms serve` on `db`, listening on `listen`.
    pub(crate) fn start_on(db: &Path, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = kms();
        cmd.arg("serve")
            .arg("--db")
            .arg(db)
            .arg("--listen")
            .arg(listen)
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Server::spawn(cmd, db)
    }

    /// Spawns `cmd`, which runs `kms serve` on `db` (itself, or through a wrapper that
    /// ends by exec'ing it), and waits until it listens.
    pub(crate) fn spawn(mut cmd: Command, db: &Path) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn kms serve");
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut stdout = child.stdout.take().unwrap();
        let sink = logs.clone();
        thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            sink.lock().unwrap().push_str(&text);
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("kms serve did not start; logs:\n{}", logs.lock().unwrap());
            }
        };
        Server {
            child: Some(child),
            base: format!("http://{addr}"),
            db: db.to_path_buf(),
            logs,
        }
    }

    /// Starts `kms serve` on `db`.
    pub(crate) fn start(db: &Path) -> Server {
        Server::start_with(db, &[], &[])
    }

    /// A client with no token.
    pub(crate) fn anonymous(&self) -> KmsClient {
        KmsClient::new(self.base.clone())
    }

    /// A client sending `token`.
    pub(crate) fn client(&self, token: &str) -> KmsClient {
        KmsClient::new(self.base.clone()).with_token(token)
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Everything the server wrote on stdout and stderr so far.
    pub(crate) fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Sends `signal` (`TERM`, `INT`) and waits for the exit.
    pub(crate) fn stop_with(&mut self, signal: &str) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{signal} failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Give the reader threads a moment to drain the pipes.
                thread::sleep(Duration::from_millis(100));
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("kms serve did not stop after SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server with SIGTERM.
    pub(crate) fn stop(&mut self) -> ExitStatus {
        self.stop_with("TERM")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A raw HTTP call with `ureq`: (status, headers of interest, body as JSON or text).
pub(crate) struct Raw {
    pub(crate) status: u16,
    pub(crate) body: String,
    pub(crate) request_id: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
}

impl Raw {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the API's error shape with `status` and `code`, and that the body's
    /// request id equals the header's.
    pub(crate) fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "body: {}", self.body);
        let v = self.json();
        let e = &v["error"];
        assert_eq!(e["code"], code, "body: {}", self.body);
        assert!(e["message"].is_string(), "body: {}", self.body);
        assert!(e["retryable"].is_boolean(), "body: {}", self.body);
        assert!(e["details"].is_object(), "body: {}", self.body);
        let id = self.request_id.as_deref().expect("x-request-id header");
        assert_eq!(e["request_id"], id, "body: {}", self.body);
        v
    }
}

pub(crate) fn raw(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Option<&[u8]>,
) -> Raw {
    let mut headers = Vec::new();
    let auth = token.map(|t| format!("Bearer {t}"));
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    if let Some(ct) = content_type {
        headers.push(("Content-Type", ct));
    }
    send(&ureq::agent(), base, method, path, &headers, body)
}

/// A raw call through `agent` with any headers.
pub(crate) fn send(
    agent: &ureq::Agent,
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Raw {
    let mut req = agent
        .request(method, &format!("{base}{path}"))
        .timeout(Duration::from_secs(30));
    for (name, value) in headers {
        req = req.set(name, value);
    }
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .filter_map(|n| response.header(&n).map(|v| (n.clone(), v.to_owned())))
        .collect();
    let request_id = response.header("x-request-id").map(str::to_owned);
    let body = response.into_string().unwrap_or_default();
    Raw {
        status,
        body,
        request_id,
        headers,
    }
}

/// A raw JSON call.
pub(crate) fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Raw {
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
    raw(
        base,
        method,
        path,
        token,
        body.map(|_| "application/json"),
        bytes.as_deref(),
    )
}

/// Every file of the database (main, WAL, shared memory) as bytes.
pub(crate) fn database_bytes(db: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(bytes) = std::fs::read(PathBuf::from(p)) {
            all.extend_from_slice(&bytes);
        }
    }
    all
}

/// Asserts no secret appears in `haystack`, nor its secret part (after the prefix).
pub(crate) fn assert_no_secrets(what: &str, haystack: &[u8], secrets: &[String]) {
    assert!(!secrets.is_empty());
    for s in secrets {
        let needles = [s.as_bytes().to_vec(), secret_tail(s).as_bytes().to_vec()];
        for n in needles {
            assert!(
                !haystack.windows(n.len()).any(|w| w == n.as_slice()),
                "a secret token appears in {what}"
            );
        }
    }
}

/// The last 30 characters of a token: its secret and checksum, which no store should hold.
fn secret_tail(token: &str) -> &str {
    let n = token.len();
    &token[n.saturating_sub(30)..]
}
