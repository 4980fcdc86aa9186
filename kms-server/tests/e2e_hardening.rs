//! End-to-end tests of the server's hardening against the real binary: security headers,
//! TLS, the network deny-list with v4 and v6, `X-Forwarded-For` trusted only from
//! configured proxies, the rate limit per client address, and signed webhook alerts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use common::{call, init, raw, send, Raw, Server};
use hmac::{Hmac, Mac};
use kms_server::wire::AuditQueryParams;
use serde_json::{json, Value};
use sha2::Sha256;

const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("content-security-policy", "default-src 'none'"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

fn fresh() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    (dir, db, root)
}

fn assert_security_headers(r: &Raw, tls: bool) {
    for (name, value) in SECURITY_HEADERS {
        if name == "cache-control" && r.status == 200 && r.header(name).is_some() {
            // Handlers may choose their own caching (the JWKS is public).
            continue;
        }
        assert_eq!(r.header(name), Some(value), "{name} on a {}", r.status);
    }
    assert_eq!(
        r.header("strict-transport-security").is_some(),
        tls,
        "HSTS exactly when serving TLS (status {})",
        r.status
    );
    assert!(r.header("server").is_none(), "no Server header");
    assert!(r.request_id.is_some());
}

/// A GET through `agent` with one extra header.
fn get_with(agent: &ureq::Agent, base: &str, path: &str, token: &str, header: (&str, &str)) -> Raw {
    let auth = format!("Bearer {token}");
    send(
        agent,
        base,
        "GET",
        path,
        &[("Authorization", &auth), header],
        None,
    )
}

/// The client address recorded for the newest `app.create` audit event.
fn audited_ip_of_last_app_create(server: &Server, root: &str) -> Option<String> {
    let page = server
        .client(root)
        .list_audit(&AuditQueryParams {
            action: Some("app.create".into()),
            limit: Some(1),
            ..Default::default()
        })
        .unwrap();
    page.items[0].ip.clone()
}

#[test]
fn every_response_carries_the_security_headers() {
    let (_dir, db, root) = fresh();
    let server = Server::start(&db);
    let base = &server.base;
    let responses = [
        raw(base, "GET", "/healthz", None, None, None),
        raw(base, "GET", "/v1/apps", Some(&root), None, None),
        raw(base, "GET", "/v1/apps", None, None, None),
        raw(base, "GET", "/no/such/route", None, None, None),
        raw(base, "DELETE", "/healthz", None, None, None),
        raw(
            base,
            "POST",
            "/v1/apps",
            Some(&root),
            Some("text/plain"),
            Some(b"x"),
        ),
        raw(base, "GET", "/.well-known/jwks.json", None, None, None),
        raw(base, "GET", "/metrics", None, None, None),
    ];
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 401, 404, 405, 415, 200, 200]);
    for r in &responses {
        assert_security_headers(r, false);
    }
}

#[test]
fn tls_serves_https_with_hsts_and_refuses_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let (root, _) = init(&db);
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = Server::start_with(
        &db,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    let https = server.base.replacen("http://", "https://", 1);

    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let agent = ureq::AgentBuilder::new()
        .tls_config(Arc::new(config))
        .build();

    let health = send(&agent, &https, "GET", "/healthz", &[], None);
    assert_eq!(health.status, 200, "{}", health.body);
    assert_security_headers(&health, true);
    let hsts = health.header("strict-transport-security").unwrap();
    assert!(hsts.starts_with("max-age="), "{hsts}");

    let auth = format!("Bearer {root}");
    let created = send(
        &agent,
        &https,
        "POST",
        "/v1/apps",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(br#"{"name": "over-tls"}"#),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let denied = send(&agent, &https, "GET", "/v1/apps", &[], None);
    denied.assert_error(401, "unauthenticated");
    assert_security_headers(&denied, true);
    // The certificate's expiry is in the metrics (rcgen's default: the year 4096).
    let metrics = send(&agent, &https, "GET", "/metrics", &[], None).body;
    let expiry: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kms_tls_certificate_expiry_timestamp_seconds "))
        .unwrap_or_else(|| panic!("no certificate expiry in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(expiry, 67_090_118_400, "4096-01-01T00:00:00Z");

    // Plain HTTP on the TLS port gets no answer.
    let plain = ureq::get(&format!("{}/healthz", server.base))
        .timeout(Duration::from_secs(5))
        .call();
    assert!(
        matches!(plain, Err(ureq::Error::Transport(_))),
        "plain HTTP must fail"
    );
    // A client that does not trust the certificate refuses the server.
    let untrusting = ureq::get(&format!("{https}/healthz"))
        .timeout(Duration::from_secs(5))
        .call();
    assert!(matches!(untrusting, Err(ureq::Error::Transport(_))));
}

#[test]
fn half_a_tls_configuration_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let out = common::kms()
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env("KMS_TLS_CERT", dir.path().join("cert.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
    // Unreadable files name themselves, before the database is created.
    let out = common::kms()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent/c.pem",
        ])
        .args(["--tls-key", "/nonexistent/k.pem", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/c.pem"), "{stderr}");
    assert!(!db.exists(), "nothing was created");
}

#[test]
fn denied_networks_are_refused_before_authentication_v4() {
    let (_dir, db, root) = fresh();
    let server = Server::start_with(&db, &["--deny-network", "10.0.0.0/8,127.0.0.0/8"], &[]);
    for (path, token) in [("/healthz", None), ("/v1/apps", Some(root.as_str()))] {
        let r = raw(&server.base, "GET", path, token, None, None);
        let v = r.assert_error(403, "forbidden");
        assert_eq!(v["error"]["details"]["network"], "denied");
        assert_security_headers(&r, false);
    }
}

#[test]
fn denied_networks_are_refused_v6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        common::cannot_run("no IPv6 loopback here, so the IPv6 deny-list is not exercised");
        return;
    }
    let (_dir, db, root) = fresh();
    let denied = Server::start_on(&db, "[::1]:0", &["--deny-network", "::1/128"], &[]);
    assert!(denied.base.starts_with("http://[::1]:"), "{}", denied.base);
    raw(&denied.base, "GET", "/v1/apps", Some(&root), None, None).assert_error(403, "forbidden");
    drop(denied);
    let allowed = Server::start_on(&db, "[::1]:0", &["--deny-network", "2001:db8::/32"], &[]);
    let r = raw(&allowed.base, "GET", "/v1/apps", Some(&root), None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(
        &allowed.base,
        "POST",
        "/v1/apps",
        Some(&root),
        Some(&json!({"name": "from-v6"})),
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        audited_ip_of_last_app_create(&allowed, &root).as_deref(),
        Some("::1")
    );
}

#[test]
fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let (_dir, db, root) = fresh();
    let server = Server::start_with(&db, &["--deny-network", "203.0.113.0/24"], &[]);
    let agent = ureq::agent();
    // Claiming a denied address does not get the caller refused...
    let r = get_with(
        &agent,
        &server.base,
        "/v1/apps",
        &root,
        ("X-Forwarded-For", "203.0.113.9"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // ...and claiming another address is not believed either.
    let auth = format!("Bearer {root}");
    let r = send(
        &agent,
        &server.base,
        "POST",
        "/v1/apps",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("X-Forwarded-For", "198.51.100.77"),
        ],
        Some(br#"{"name": "spoofed"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        audited_ip_of_last_app_create(&server, &root).as_deref(),
        Some("127.0.0.1")
    );
}

#[test]
fn forwarded_for_from_a_trusted_proxy_names_the_client() {
    let (_dir, db, root) = fresh();
    let server = Server::start_with(
        &db,
        &["--trusted-proxy", "127.0.0.1/32"],
        &[("KMS_DENY_NETWORKS", "203.0.113.0/24, 2001:db8::/32")],
    );
    let agent = ureq::agent();
    for client in ["203.0.113.9", "2001:db8::7", "198.51.100.1, 203.0.113.9"] {
        let r = get_with(
            &agent,
            &server.base,
            "/v1/apps",
            &root,
            ("X-Forwarded-For", client),
        );
        r.assert_error(403, "forbidden");
    }
    // The right-most untrusted hop is the client, whatever it claims further left.
    let r = get_with(
        &agent,
        &server.base,
        "/healthz",
        &root,
        ("X-Forwarded-For", "203.0.113.9, 198.51.100.1"),
    );
    assert_eq!(r.status, 200);
    let auth = format!("Bearer {root}");
    let r = send(
        &agent,
        &server.base,
        "POST",
        "/v1/apps",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("X-Forwarded-For", "198.51.100.1"),
        ],
        Some(br#"{"name": "proxied"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        audited_ip_of_last_app_create(&server, &root).as_deref(),
        Some("198.51.100.1")
    );
}

#[test]
fn management_calls_are_rate_limited_per_client_address() {
    let (_dir, db, root) = fresh();
    let server = Server::start_with(
        &db,
        &[
            "--rate-limit-per-ip",
            "1",
            "--rate-limit-burst",
            "3",
            "--trusted-proxy",
            "127.0.0.1/32",
        ],
        &[],
    );
    let agent = ureq::agent();
    let xff = |ip| ("X-Forwarded-For", ip);
    for _ in 0..3 {
        let r = get_with(&agent, &server.base, "/v1/apps", &root, xff("198.51.100.1"));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = get_with(&agent, &server.base, "/v1/apps", &root, xff("198.51.100.1"));
    let v = r.assert_error(429, "rate_limited");
    assert_eq!(v["error"]["retryable"], true);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_security_headers(&r, false);
    // Unauthenticated attempts spend the same budget: the limit runs before authentication.
    let r = get_with(
        &agent,
        &server.base,
        "/v1/apps",
        "kms_guess",
        xff("198.51.100.1"),
    );
    r.assert_error(429, "rate_limited");

    // Another client address has its own budget.
    let r = get_with(&agent, &server.base, "/v1/apps", &root, xff("198.51.100.2"));
    assert_eq!(r.status, 200);
    // Verification, the OAuth endpoints and operations are not limited per address.
    let auth = format!("Bearer {root}");
    for _ in 0..5 {
        let body = format!(r#"{{"token": "{root}"}}"#);
        let r = send(
            &agent,
            &server.base,
            "POST",
            "/v1/verify",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
                xff("198.51.100.1"),
            ],
            Some(body.as_bytes()),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let r = send(
            &agent,
            &server.base,
            "GET",
            "/healthz",
            &[xff("198.51.100.1")],
            None,
        );
        assert_eq!(r.status, 200);
    }
    let r = send(
        &agent,
        &server.base,
        "POST",
        "/v1/auth/token",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-www-form-urlencoded"),
            xff("198.51.100.1"),
        ],
        Some(b"grant_type=api_key"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let metrics = server.anonymous().metrics().unwrap();
    assert!(
        metrics.contains(r#"kms_http_refused_total{reason="rate_limited"}"#),
        "{metrics}"
    );
}

/// One request received by the test webhook.
struct Received {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// A webhook receiver on loopback answering each request with the next status of
/// `statuses` (then 200).
fn webhook_receiver(statuses: Vec<u16>) -> (String, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/kms", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            assert!(
                request_line.starts_with("POST /hooks/kms "),
                "{request_line}"
            );
            let mut headers = BTreeMap::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (k, v) = line.split_once(':').unwrap();
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
            let len: usize = headers["content-length"].parse().unwrap();
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let status = statuses.next().unwrap_or(200);
            write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let _ = tx.send(Received { headers, body });
        }
    });
    (url, rx)
}

#[test]
fn lockouts_are_alerted_to_a_signed_webhook_with_retries() {
    let secret = "whsec_0123456789abcdef";
    let (url, received) = webhook_receiver(vec![500]);
    let (_dir, db, _root) = fresh();
    let server = Server::start_with(
        &db,
        &["--lockout-threshold", "2", "--alert-webhook", &url],
        &[("KMS_ALERT_WEBHOOK_SECRET", secret)],
    );
    for _ in 0..2 {
        raw(
            &server.base,
            "GET",
            "/v1/apps",
            Some("kms_garbage"),
            None,
            None,
        )
        .assert_error(401, "unauthenticated");
    }
    // The first delivery is answered 500; the retry succeeds.
    let first = received.recv_timeout(Duration::from_secs(10)).unwrap();
    let retry = received.recv_timeout(Duration::from_secs(10)).unwrap();
    for r in [&first, &retry] {
        assert_eq!(r.headers["content-type"], "application/json");
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&r.body);
        let expected = base16ct::lower::encode_string(&mac.finalize().into_bytes());
        assert_eq!(
            r.headers["x-kms-webhook-signature"],
            format!("sha256={expected}")
        );
    }
    assert_eq!(first.body, retry.body, "a retry resends the same alert");
    let alert: Value = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(alert["event"], "lockout");
    assert_eq!(alert["source"], "ip:127.0.0.1");
    assert!(alert["id"].as_str().unwrap().starts_with("alert_"));
    let at = alert["at"].as_str().unwrap();
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = server.anonymous().metrics().unwrap();
        if metrics.contains(r#"kms_alerts_total{outcome="delivered"} 1"#) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !server.logs().contains(secret),
        "the secret is never logged"
    );
}

#[test]
fn a_sealed_webhook_secret_in_the_configuration_file_signs_alerts() {
    let secret = "whsec_sealed_0123456789abcdef";
    let (url, received) = webhook_receiver(vec![]);
    let (dir, db, _root) = fresh();
    let out = common::run_input(
        &db,
        &["config", "seal", "--setting", "alert_webhook_secret"],
        &[],
        secret,
    );
    assert!(out.status.success(), "{}", out.stderr);
    let sealed = out.stdout.trim().to_owned();
    assert!(sealed.starts_with("sealed:v1:"), "{sealed}");
    assert!(!sealed.contains(secret));
    let config = dir.path().join("kms.toml");
    std::fs::write(
        &config,
        format!("alert_webhook = \"{url}\"\nalert_webhook_secret = \"{sealed}\"\nlockout_threshold = 2\n"),
    )
    .unwrap();
    let config_flag = ["--config", config.to_str().unwrap()];
    let server = Server::start_with(&db, &config_flag, &[]);
    for _ in 0..2 {
        raw(
            &server.base,
            "GET",
            "/v1/apps",
            Some("kms_garbage"),
            None,
            None,
        )
        .assert_error(401, "unauthenticated");
    }
    let alert = received.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&alert.body);
    let expected = base16ct::lower::encode_string(&mac.finalize().into_bytes());
    assert_eq!(
        alert.headers["x-kms-webhook-signature"],
        format!("sha256={expected}")
    );
    assert!(!server.logs().contains(secret));
    drop(server);
    // Under another master key the value does not open: the start stops, naming the
    // setting, never the value.
    let other = dir.path().join("other.key");
    std::fs::write(&other, "a21zLXRlc3QtbWFzdGVyLWtleS0zMi1ieXRlcy0hISE=\n").unwrap();
    let out = common::kms()
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .args(config_flag)
        .args(["--master-key-file", other.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("alert_webhook_secret") && stderr.contains("does not open"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&sealed) && !stderr.contains(secret),
        "{stderr}"
    );
}

#[test]
fn an_alert_webhook_without_a_secret_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::kms()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--alert-webhook", "http://127.0.0.1:9/hook", "--db"])
        .arg(dir.path().join("kms.db"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("KMS_ALERT_WEBHOOK_SECRET"), "{stderr}");
}

#[test]
fn retention_deletes_old_audit_events_and_expired_tokens_keeping_the_chain_verifiable() {
    let (_dir, db, root) = fresh();
    let server = Server::start_with(
        &db,
        &["--audit-retention", "2s"],
        &[("KMS_EXPIRED_TOKEN_RETENTION", "1")],
    );
    let admin = server.client(&root);
    let app = admin
        .create_app(&kms_server::wire::NewAppBody {
            name: "short-lived".into(),
            ..Default::default()
        })
        .unwrap();
    let token = admin
        .create_token(
            &app.id,
            &kms_server::wire::NewTokenBody {
                name: "brief".into(),
                scopes: vec!["app.read".into()],
                roles: vec![],
                expires_in: Some(1),
                expires_at: None,
                metadata: None,
                ratelimit: None,
                uses: None,
                ip_allow: None,
                grants: Vec::new(),
            },
        )
        .unwrap();
    let created = AuditQueryParams {
        action: Some("app.create".into()),
        ..Default::default()
    };
    assert_eq!(admin.list_audit(&created).unwrap().items.len(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let audit_gone = admin.list_audit(&created).unwrap().items.is_empty();
        let token_gone = admin
            .get_token(&token.info.id)
            .is_err_and(|e| e.status() == Some(404));
        if audit_gone && token_gone {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run (audit gone: {audit_gone}, token gone: {token_gone})"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let check = admin.verify_audit().unwrap();
    assert!(
        check.ok,
        "the chain still verifies from its anchor: {check:?}"
    );
}

#[test]
fn an_application_allow_list_limits_where_its_tokens_work_v4_and_v6() {
    let (_dir, db, root) = fresh();
    let server = Server::start_with(&db, &["--trusted-proxy", "127.0.0.1/32"], &[]);
    let admin = server.client(&root);
    let app = admin
        .create_app(&kms_server::wire::NewAppBody {
            name: "fenced".into(),
            ip_allow: Some(vec!["10.0.0.0/8".into(), "2001:db8::/32".into()]),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(app.ip_allow, ["10.0.0.0/8", "2001:db8::/32"]);
    let token = admin
        .create_token(
            &app.id,
            &kms_server::wire::NewTokenBody {
                name: "svc".into(),
                scopes: vec!["app.read".into(), "token.verify".into()],
                roles: vec![],
                expires_in: None,
                expires_at: None,
                metadata: None,
                ratelimit: None,
                uses: None,
                ip_allow: None,
                grants: Vec::new(),
            },
        )
        .unwrap()
        .token;
    // Verification on behalf of end users: their address is checked against the list.
    for (ip, code) in [
        ("10.1.2.3", "VALID"),
        ("192.0.2.1", "FORBIDDEN"),
        ("2001:db8::1", "VALID"),
        ("2001:db9::1", "FORBIDDEN"),
    ] {
        let r = call(
            &server.base,
            "POST",
            "/v1/verify",
            Some(&root),
            Some(&json!({"token": token, "ip": ip})),
        );
        assert_eq!(r.json()["code"], code, "{ip}");
    }
    // The application's own management calls: from the client address (here named by a
    // trusted proxy).
    let agent = ureq::agent();
    let path = format!("/v1/apps/{}", app.id);
    let r = get_with(
        &agent,
        &server.base,
        &path,
        &token,
        ("X-Forwarded-For", "10.9.9.9"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = get_with(
        &agent,
        &server.base,
        &path,
        &token,
        ("X-Forwarded-For", "198.51.100.4"),
    );
    r.assert_error(401, "unauthenticated");
    let r = raw(&server.base, "GET", &path, Some(&token), None, None);
    r.assert_error(401, "unauthenticated");
    // The list can be changed.
    let patched = admin
        .update_app(
            &app.id,
            &kms_server::wire::AppPatchBody {
                ip_allow: Some(vec![]),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(patched.ip_allow.is_empty());
    let r = raw(&server.base, "GET", &path, Some(&token), None, None);
    assert_eq!(r.status, 200, "{}", r.body);
}
