//! Headers every response carries (tower-http's `SetResponseHeaderLayer`, each set only
//! when the handler did not set it): nothing the server says may be cached (token creation
//! and rotation answer with secrets), sniffed as another content type, framed, given a
//! referrer, or run as active content. Over TLS, browsers are also told to keep to HTTPS.
//! No `Server` header is sent.

use axum::http::{header, HeaderName, HeaderValue};

/// The headers set on every response, in the order they are applied.
pub const ALWAYS: [(HeaderName, &str); 5] = [
    (header::CACHE_CONTROL, "no-store"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::CONTENT_SECURITY_POLICY, "default-src 'none'"),
    (header::REFERRER_POLICY, "no-referrer"),
];

/// `Strict-Transport-Security`, sent only when serving TLS.
pub const HSTS: &str = "max-age=31536000; includeSubDomains";

/// Makes the HSTS header when `tls` is true.
#[derive(Debug, Clone, Copy)]
pub struct Hsts {
    /// Whether the server speaks TLS.
    pub tls: bool,
}

impl<T> tower_http::set_header::MakeHeaderValue<T> for Hsts {
    fn make_header_value(&mut self, _: &T) -> Option<HeaderValue> {
        self.tls.then(|| HeaderValue::from_static(HSTS))
    }
}
