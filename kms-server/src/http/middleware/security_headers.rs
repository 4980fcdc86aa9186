//! Headers every response carries, each set only when the handler did not set it: nothing
//! the server says may be cached (token creation and rotation answer with secrets), sniffed
//! as another content type, framed, given a referrer, or run as active content. Over TLS,
//! browsers are also told to keep to HTTPS. No `Server` header is sent.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};

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

/// Sets every header of [`ALWAYS`] (and [`HSTS`] when `tls`) that `headers` lacks.
pub fn apply(headers: &mut HeaderMap, tls: bool) {
    for (name, value) in ALWAYS {
        headers
            .entry(name)
            .or_insert_with(|| HeaderValue::from_static(value));
    }
    if tls {
        headers
            .entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert_with(|| HeaderValue::from_static(HSTS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_headers_are_set_and_present_ones_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        apply(&mut headers, false);
        assert_eq!(headers[header::CACHE_CONTROL], "max-age=60");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert!(!headers.contains_key(header::STRICT_TRANSPORT_SECURITY));
        apply(&mut headers, true);
        assert_eq!(headers[header::STRICT_TRANSPORT_SECURITY], HSTS);
    }
}
