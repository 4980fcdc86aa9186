//! Distributed tracing end to end: `kms serve --otlp-endpoint` against a real OTLP/HTTP
//! receiver (a small Python server decoding the protobuf with `opentelemetry-proto` from
//! PyPI). The spans arrive, named by route, continuing the caller's `traceparent` (same
//! trace id, the caller's span as parent), with store calls and argon2id as children; a
//! request without `traceparent` starts a trace of its own; the trace id is in the JSON log
//! lines. Needs python3 with `opentelemetry-proto` (`.ci/run` installs it): missing, the
//! test fails under `CI=true` and is skipped elsewhere.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{call, init, send, Server};
use serde_json::{json, Value};

struct Receiver {
    child: Child,
    port: u16,
    out: std::path::PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn receiver(dir: &std::path::Path) -> Option<Receiver> {
    let have = Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.proto.collector.trace.v1.trace_service_pb2",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        common::cannot_run("python3 with opentelemetry-proto (pip install opentelemetry-proto)");
        return None;
    }
    let out = dir.join("spans.jsonl");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp_receiver.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(&out)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the receiver");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    Some(Receiver { child, port, out })
}

/// The spans received so far.
fn spans(r: &Receiver) -> Vec<Value> {
    std::fs::read_to_string(&r.out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until `pick` finds what it looks for among the received spans.
fn wait_for<T>(r: &Receiver, what: &str, pick: impl Fn(&[Value]) -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(found) = pick(&spans(r)) {
            return found;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: not received; got {:#?}",
            spans(r)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn spans_reach_a_real_otlp_receiver_continuing_the_callers_trace() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rx) = receiver(dir.path()) else {
        return;
    };
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let endpoint = format!("http://127.0.0.1:{}", rx.port);
    let server = Server::start_with(
        &db,
        &["--otlp-endpoint", &endpoint, "--log-format", "json"],
        &[],
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let auth = format!("Bearer {root}");
    let agent = ureq::agent();
    let body = serde_json::to_vec(&json!({"name": "traced"})).unwrap();
    let r = send(
        &agent,
        &server.base,
        "POST",
        "/v1/apps",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("traceparent", &traceparent),
        ],
        Some(&body),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let app = r.json()["id"].as_str().unwrap().to_owned();
    // The request's span: the caller's trace, the caller's span as parent, named by route.
    let request = wait_for(&rx, "the request span", |spans| {
        spans
            .iter()
            .find(|s| s["trace_id"] == trace_id && s["name"] == "POST /v1/apps")
            .cloned()
    });
    assert_eq!(request["parent_span_id"], caller_span, "{request}");
    assert_eq!(request["service"], "kms");
    assert_eq!(request["kind"], 2, "a server span: {request}"); // SPAN_KIND_SERVER
                                                                // Its store calls are its children.
    let store = wait_for(&rx, "a store span", |spans| {
        spans
            .iter()
            .find(|s| {
                s["trace_id"] == trace_id
                    && s["parent_span_id"] == request["span_id"]
                    && s["name"].as_str().is_some_and(|n| n == "apply")
            })
            .cloned()
    });
    assert_eq!(store["attributes"]["operation"], "apply", "{store}");
    // A cold verification without traceparent: a new trace, argon2id under the request.
    let r = call(
        &server.base,
        "POST",
        &format!("/v1/apps/{app}/tokens"),
        Some(&root),
        Some(&json!({"name": "t", "scopes": []})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let r = call(
        &server.base,
        "POST",
        "/v1/verify",
        Some(&root),
        Some(&json!({ "token": token })),
    );
    assert_eq!(r.json()["code"], "VALID", "{}", r.body);
    let (verify, hash) = wait_for(&rx, "argon2id under a verification", |spans| {
        let verify = spans
            .iter()
            .find(|s| s["name"] == "POST /v1/verify" && s["parent_span_id"] == "")?;
        let hash = spans.iter().find(|s| {
            s["name"] == "argon2id"
                && s["trace_id"] == verify["trace_id"]
                && s["attributes"]["operation"] == "verify"
        })?;
        Some((verify.clone(), hash.clone()))
    });
    assert_ne!(verify["trace_id"], trace_id);
    assert_eq!(hash["parent_span_id"], verify["span_id"], "{hash}");
    // The JSON log line of the traced request carries its trace id.
    let logs = server.logs();
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["span"]["route"] == "/v1/apps" && l["span"]["trace_id"] == trace_id);
    assert!(line.is_some(), "no log line with the trace id:\n{logs}");
    assert!(!logs.contains(&token) && !logs.contains(&root));
    assert!(!std::fs::read_to_string(&rx.out).unwrap().contains(&token));
}
