//! The HTTP transport single sign-on runs over: blocking ureq calls to identity providers
//! (discovery, key sets, the token endpoint, userinfo), made from the blocking pool. It
//! never follows redirects, bounds each call's time, and reads at most 1 MiB of a body.

use std::io::Read;
use std::time::Duration;

use kms_core::sso::{HttpRequest, HttpResponse, HttpTransport, TransportError};

/// Longest body read from a provider.
const MAX_BODY: u64 = 1024 * 1024;

/// Calls identity providers over HTTP(S).
#[derive(Debug, Clone)]
pub struct UreqTransport {
    agent: ureq::Agent,
}

impl UreqTransport {
    /// A transport whose calls each take at most `timeout`.
    pub fn new(timeout: Duration) -> Self {
        UreqTransport {
            agent: ureq::AgentBuilder::new()
                .timeout(timeout)
                .redirects(0)
                .user_agent(concat!("kms/", env!("CARGO_PKG_VERSION")))
                .build(),
        }
    }
}

impl HttpTransport for UreqTransport {
    fn call(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let (parts, body) = request.into_parts();
        let url = parts.uri.to_string();
        let mut call = self.agent.request(parts.method.as_str(), &url);
        for (name, value) in &parts.headers {
            if let Ok(value) = value.to_str() {
                call = call.set(name.as_str(), value);
            }
        }
        let response = match call.send_bytes(&body) {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => {
                return Err(TransportError(format!(
                    "{} could not be reached ({})",
                    parts.uri.host().unwrap_or("the provider"),
                    t.kind()
                )))
            }
        };
        let status = response.status();
        let headers: Vec<(String, String)> = response
            .headers_names()
            .into_iter()
            .filter_map(|n| response.header(&n).map(|v| (n.clone(), v.to_owned())))
            .collect();
        let mut bytes = Vec::new();
        response
            .into_reader()
            .take(MAX_BODY + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| TransportError(format!("reading the provider's answer failed: {e}")))?;
        if bytes.len() as u64 > MAX_BODY {
            return Err(TransportError(
                "the provider's answer is larger than 1 MiB".to_owned(),
            ));
        }
        let mut builder = axum::http::Response::builder().status(status);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        builder
            .body(bytes)
            .map_err(|e| TransportError(format!("the provider's answer is not HTTP: {e}")))
    }
}
