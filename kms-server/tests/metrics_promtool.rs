//! What `/metrics` serves passes Prometheus's own checker, `promtool check metrics`, in both
//! formats: the Prometheus text format (no `Accept`, or `text/plain`) and OpenMetrics (when
//! asked for, as Prometheus asks), which a real Prometheus scrapes without error. Needs
//! `promtool` and `prometheus` (Debian's `prometheus` package;
//! `.ci/run` installs it): missing, the test fails under `CI=true` and is skipped elsewhere.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{call, init, send, Server};
use serde_json::json;

fn promtool_check(exposition: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn promtool_accepts_both_formats_of_metrics() {
    for tool in ["promtool", "prometheus"] {
        if Command::new(tool).arg("--version").output().is_err() {
            common::cannot_run(&format!(
                "{tool} is not installed (Debian package `prometheus`)"
            ));
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let server = Server::start(&db);
    // Traffic in every family: requests, verifications, store calls, cache hits.
    let r = call(
        &server.base,
        "POST",
        "/v1/apps",
        Some(&root),
        Some(&json!({"name": "m"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    for _ in 0..2 {
        call(
            &server.base,
            "POST",
            "/v1/verify",
            Some(&root),
            Some(&json!({"token": root})),
        );
    }
    call(&server.base, "GET", "/v1/nowhere", None, None);
    // Counts the capacity gauges now (the minute's refresh may not have run yet).
    let r = call(&server.base, "GET", "/v1/stats", Some(&root), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let agent = ureq::agent();
    let text = send(&agent, &server.base, "GET", "/metrics", &[], None);
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        text.body.contains("# TYPE kms_http_requests_total counter"),
        "{}",
        text.body
    );
    assert!(!text.body.contains("# EOF"));
    // Process metrics under their standard names, the blocking pool, business counters.
    for family in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "kms_blocking_queued",
        "kms_blocking_running",
        "kms_signing_key_age_seconds",
        "kms_stored_tokens",
        "kms_database_size_bytes",
        "kms_capacity_updated_timestamp_seconds",
    ] {
        assert!(
            text.body.contains(&format!("\n{family} ")),
            "{family} missing:\n{}",
            text.body
        );
    }
    assert!(
        text.body
            .contains(r#"kms_audit_events_total{action="app.create",outcome="success"} 1"#),
        "{}",
        text.body
    );
    let (ok, said) = promtool_check(&text.body);
    assert!(
        ok,
        "promtool refused the text format: {said}\n{}",
        text.body
    );
    let open = send(
        &agent,
        &server.base,
        "GET",
        "/metrics",
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
        None,
    );
    assert!(open
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/openmetrics-text")));
    assert!(open.body.ends_with("# EOF\n"), "{}", open.body);
    // promtool lints only the text format; Prometheus itself scrapes OpenMetrics (it asks
    // for it first): a real Prometheus scraping the server must see no error.
    scraped_by_prometheus(&server.base);
}

/// Runs Prometheus against `base` (scrape every second) until the target is up with kms
/// samples and no scrape error.
fn scraped_by_prometheus(base: &str) {
    let dir = tempfile::tempdir().unwrap();
    let target = base.trim_start_matches("http://");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: kms\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run prometheus");
    let api = format!("http://127.0.0.1:{port}");
    let start = std::time::Instant::now();
    let outcome = loop {
        let targets = ureq::get(&format!("{api}/api/v1/targets"))
            .call()
            .ok()
            .and_then(|r| r.into_json::<serde_json::Value>().ok());
        let active = targets
            .as_ref()
            .and_then(|t| t["data"]["activeTargets"].get(0).cloned());
        if let Some(t) = active.filter(|t| t["health"] == "up") {
            let samples = ureq::get(&format!("{api}/api/v1/query"))
                .query("query", "kms_http_requests_total")
                .call()
                .ok()
                .and_then(|r| r.into_json::<serde_json::Value>().ok());
            if samples.is_some_and(|s| {
                s["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty())
            }) {
                break Ok(t);
            }
        }
        if start.elapsed() > std::time::Duration::from_secs(30) {
            break Err(format!("not scraped within 30 s: {targets:?}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let target = outcome.unwrap();
    assert_eq!(target["lastError"], "", "{target}");
}
