//! The floor `POST /v1/verify` is compared with: a bare axum handler that reads the request
//! body and answers with fixed bytes, on the same runtime flavour as `kms serve`
//! (tokio multi-thread, one worker per core) and the same `axum::serve` setup (connect
//! info, no TCP_NODELAY change).
//!
//! ```text
//! bare_axum --listen 127.0.0.1:0 --body-file verify-response.json
//! ```
//!
//! The response carries the body of a real kms verification (`--body-file`; by default a
//! typical one) and the same headers kms sends (security headers, `cache-control`, a
//! request id of the same length), so both servers put the same bytes on the wire. Prints
//! `listening on ADDR` on stderr, like `kms serve`.

use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::body::Bytes;
use axum::http::header::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use clap::Parser;

/// A bare axum server answering `POST /v1/verify` with fixed bytes.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The response body; by default a typical kms verification.
    #[arg(long)]
    body_file: Option<PathBuf>,
}

const TYPICAL_BODY: &str = r#"{"valid":true,"code":"VALID","token_id":"tok_fIj7qvMGX7","app_id":"app_ST91txYnljBoR0yE","name":"t1","scopes":["app.read","token.verify"],"roles":[],"expires_at":null,"metadata":{}}"#;

/// The headers kms sends with a verification, with fixed values.
const HEADERS: [(&str, &str); 7] = [
    ("referrer-policy", "no-referrer"),
    ("content-security-policy", "default-src 'none'"),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
    ("x-request-id", "req_000000000000000000000000"),
    ("content-type", "application/json"),
];

#[derive(Clone)]
struct Fixed {
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
}

async fn verify(axum::extract::State(fixed): axum::extract::State<Fixed>, body: Bytes) -> Response {
    drop(body);
    let mut response = fixed.body.clone().into_response();
    let headers = response.headers_mut();
    for (name, value) in &fixed.headers {
        headers.insert(name.clone(), value.clone());
    }
    response
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let body = match &args.body_file {
        Some(path) => Bytes::from(std::fs::read(path)?.trim_ascii_end().to_vec()),
        None => Bytes::from_static(TYPICAL_BODY.as_bytes()),
    };
    let headers = HEADERS
        .iter()
        .map(|(n, v)| Ok((HeaderName::from_static(n), HeaderValue::from_str(v)?)))
        .collect::<Result<Vec<_>, Box<dyn Error>>>()?;
    let app = Router::new()
        .route("/v1/verify", post(verify))
        .with_state(Fixed { body, headers });
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
