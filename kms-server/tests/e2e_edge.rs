//! End-to-end tests of the server's edge against the real binary, over raw TCP: slow
//! clients are disconnected, connections are limited overall and per client address (over
//! plain HTTP and TLS), and nothing a client sends grows the metrics' label sets.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{init, Server};

/// How long a connection the server should close may stay open before the test fails:
/// generous next to the 1 s header read timeout the tests configure.
const CLOSED_WITHIN: Duration = Duration::from_secs(8);

fn fresh() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    init(&db);
    (dir, db)
}

fn address(server: &Server) -> SocketAddr {
    server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("the server's address")
}

/// Whether the server closed (or reset) `stream` within `within`; reads and discards
/// whatever it sends first.
fn closed_by_server(stream: &mut impl Read, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}

fn connect(addr: SocketAddr, within: Duration) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(within)).unwrap();
    stream
}

/// Sends a whole `GET path` on `stream` and returns the status line of the answer.
fn get_on(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: kms\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or_default().to_owned()
}

/// One request with any method, on its own connection: the status line, or `closed`.
fn request(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut stream = connect(addr, Duration::from_secs(30));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: kms\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.lines()
        .next()
        .map_or_else(|| "closed".to_owned(), str::to_owned)
}

#[test]
fn a_client_that_stalls_in_its_request_line_is_disconnected() {
    let (_dir, db) = fresh();
    let server = Server::start_with(&db, &[], &[("KMS_HEADER_READ_TIMEOUT", "1s")]);
    let addr = address(&server);

    let mut stalled = connect(addr, CLOSED_WITHIN);
    stalled.write_all(b"GET / HT").unwrap();
    let mut silent = connect(addr, CLOSED_WITHIN);
    assert!(
        closed_by_server(&mut stalled, CLOSED_WITHIN),
        "half a request line held the connection open"
    );
    assert!(
        closed_by_server(&mut silent, CLOSED_WITHIN),
        "a connection that never sent a byte stayed open"
    );

    // A kept-alive connection that goes idle after its answer is closed too.
    let mut idle = connect(addr, CLOSED_WITHIN);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: kms\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(
        closed_by_server(&mut idle, CLOSED_WITHIN),
        "an idle keep-alive connection stayed open"
    );

    // Whole requests are still answered.
    let mut normal = connect(addr, Duration::from_secs(30));
    assert_eq!(get_on(&mut normal, "/healthz"), "HTTP/1.1 200 OK");
}

#[test]
fn connections_over_the_per_address_limit_are_refused_while_the_first_still_work() {
    let (_dir, db) = fresh();
    let server = Server::start_with(
        &db,
        &[],
        &[
            ("KMS_MAX_CONNECTIONS_PER_IP", "3"),
            ("KMS_HEADER_READ_TIMEOUT", "60s"),
        ],
    );
    let addr = address(&server);
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| connect(addr, Duration::from_secs(30)))
        .collect();
    // Accepted in order: by the time the fourth is looked at, the first three count.
    let mut extra = connect(addr, CLOSED_WITHIN);
    assert!(
        closed_by_server(&mut extra, CLOSED_WITHIN),
        "a connection over the per-address limit was kept"
    );
    for stream in &mut held {
        assert_eq!(get_on(stream, "/healthz"), "HTTP/1.1 200 OK");
    }
    drop(held);
    // Their places are given back once the server has closed them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut again = connect(addr, Duration::from_secs(30));
        let status = get_on(&mut again, "/healthz");
        if status == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(Instant::now() < deadline, "places were never given back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn connections_over_the_total_limit_are_refused() {
    let (_dir, db) = fresh();
    let server = Server::start_with(
        &db,
        &[],
        &[
            ("KMS_MAX_CONNECTIONS", "2"),
            ("KMS_HEADER_READ_TIMEOUT", "60s"),
        ],
    );
    let addr = address(&server);
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| connect(addr, Duration::from_secs(30)))
        .collect();
    let mut extra = connect(addr, CLOSED_WITHIN);
    assert!(
        closed_by_server(&mut extra, CLOSED_WITHIN),
        "a connection over the total limit was kept"
    );
    for stream in &mut held {
        assert_eq!(get_on(stream, "/healthz"), "HTTP/1.1 200 OK");
    }
}

fn tls_server(
    db: &std::path::Path,
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (Server, Arc<tokio_rustls::rustls::ClientConfig>) {
    use tokio_rustls::rustls;
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = Server::start_with(
        db,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        env,
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (server, Arc::new(config))
}

type TlsStream =
    tokio_rustls::rustls::StreamOwned<tokio_rustls::rustls::ClientConnection, TcpStream>;

/// A TLS connection whose handshake has completed.
fn tls_connect(
    addr: SocketAddr,
    config: &Arc<tokio_rustls::rustls::ClientConfig>,
    read_timeout: Duration,
) -> TlsStream {
    use tokio_rustls::rustls;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    let mut tcp = connect(addr, read_timeout);
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    rustls::StreamOwned::new(conn, tcp)
}

#[test]
fn over_tls_stalled_handshakes_and_headers_are_disconnected_and_limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    init(&db);
    let (server, config) = tls_server(
        &db,
        dir.path(),
        &[
            ("KMS_HEADER_READ_TIMEOUT", "1s"),
            ("KMS_MAX_CONNECTIONS_PER_IP", "3"),
        ],
    );
    let addr = address(&server);

    // A handshake that never starts, and one that stops halfway through its first record.
    let mut silent = connect(addr, Duration::from_secs(5));
    let mut half_hello = connect(addr, Duration::from_secs(5));
    half_hello
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    // A completed handshake, then half a request line.
    let mut stalled = tls_connect(addr, &config, Duration::from_secs(5));
    stalled.write_all(b"GET / HT").unwrap();
    stalled.flush().unwrap();
    // The limit counts connections from their first byte, handshakes included.
    let mut extra = connect(addr, Duration::from_secs(5));
    assert!(
        closed_by_server(&mut extra, Duration::from_secs(5)),
        "a fourth connection from one address was kept"
    );
    // Within 5 s of a 1 s timeout (the handshake limit was a fixed 10 s).
    assert!(
        closed_by_server(&mut silent, Duration::from_secs(5)),
        "a silent TLS client stayed connected"
    );
    assert!(
        closed_by_server(&mut half_hello, Duration::from_secs(5)),
        "a stalled TLS handshake stayed connected"
    );
    assert!(
        closed_by_server(&mut stalled, Duration::from_secs(5)),
        "half a request line over TLS held the connection open"
    );

    // Their places are free again: a whole request over TLS is answered.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut normal = tls_connect(addr, &config, Duration::from_secs(30));
        normal
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: kms\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = normal.read_to_end(&mut answer);
        if answer.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "TLS requests are not answered");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The label sets of the request metrics in a `/metrics` text, and the values seen for
/// `method` and `route`.
struct RequestSeries {
    series: BTreeSet<String>,
    methods: BTreeSet<String>,
    routes: BTreeSet<String>,
}

fn request_series(addr: SocketAddr) -> RequestSeries {
    let mut stream = connect(addr, Duration::from_secs(30));
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: kms\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let mut out = RequestSeries {
        series: BTreeSet::new(),
        methods: BTreeSet::new(),
        routes: BTreeSet::new(),
    };
    for line in text.lines() {
        let Some(rest) = line
            .strip_prefix("kms_http_requests_total{")
            .or_else(|| line.strip_prefix("kms_http_request_duration_seconds_count{"))
        else {
            continue;
        };
        let labels = rest.split('}').next().unwrap_or_default();
        out.series.insert(format!(
            "{}{{{labels}}}",
            &line[..line.len() - rest.len() - 1]
        ));
        for pair in labels.split(',') {
            if let Some(v) = pair.strip_prefix("method=") {
                out.methods.insert(v.trim_matches('"').to_owned());
            }
            if let Some(v) = pair.strip_prefix("route=") {
                out.routes.insert(v.trim_matches('"').to_owned());
            }
        }
    }
    out
}

#[test]
fn random_methods_and_paths_add_a_bounded_number_of_metric_series() {
    let (_dir, db) = fresh();
    let server = Server::start(&db);
    let addr = address(&server);
    assert_eq!(request(addr, "GET", "/healthz"), "HTTP/1.1 200 OK");
    let before = request_series(addr);

    for i in 0..150 {
        // Extension methods (tokens), on unknown paths and on real routes.
        let method = format!("M{i}X{}", i * 7919 % 1000);
        let path = format!("/no/such/{i}/{}", i * 31);
        for path in [path.as_str(), "/healthz", "/v1/apps", "/v1/tokens/tok_x"] {
            let status = request(addr, &method, path);
            assert!(
                status.starts_with("HTTP/1.1 4"),
                "{method} {path}: {status}"
            );
        }
        let status = request(addr, "GET", &format!("/random/{i}?q={i}"));
        assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    }
    let after = request_series(addr);

    let standard: BTreeSet<&str> = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "other",
    ]
    .into_iter()
    .collect();
    for method in &after.methods {
        assert!(standard.contains(method.as_str()), "method label {method}");
    }
    for route in &after.routes {
        assert!(
            route == "unmatched" || !route.contains("no/such") && !route.contains("random"),
            "route label {route}"
        );
    }
    let added = after.series.difference(&before.series).count();
    // One method label and a few statuses per route, whatever was sent.
    assert!(
        added <= 20,
        "{added} new series: {:?}",
        after.series.difference(&before.series).collect::<Vec<_>>()
    );
}
