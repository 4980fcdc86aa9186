//! `/ui`: the administration console, a browser client of this same HTTP API (issue 19).
//!
//! The console is a handful of static files under `kms-server/ui/` (hand-written ES modules
//! and one style sheet, no build step), compiled into the binary with `include_bytes!`, so
//! `cargo build` alone produces it and nothing is fetched at run time. Every answer carries
//! the console's own Content-Security-Policy ([`CONSOLE_CSP`]: scripts, styles and
//! connections from this origin only, no inline code); the edge adds the other security
//! headers. Assets are revalidated with an `ETag` (a hash computed at compile time), never
//! cached blindly, so an upgraded server serves its new console at once. The console holds
//! no privilege of its own: it signs in with the session cookie or a pasted token and calls
//! `/v1` like any client.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;

/// The Content-Security-Policy of every console answer: nothing inline, nothing from
/// another origin, no framing.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// How console assets may be cached: kept, but revalidated (by `ETag`) before each use.
const CACHE_CONTROL: &str = "no-cache";

/// One file of the console.
#[derive(Debug)]
pub struct Asset {
    /// Its path below `/ui/`.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
    /// Its strong `ETag`, quoted.
    etag: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// FNV-1a (64 bits) of `bytes`: a change detector for `ETag`s, evaluated at compile time.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `"` + 16 hexadecimal digits of `hash` + `"`.
const fn etag_bytes(hash: u64) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((hash >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! assets {
    ($( $path:literal => $content_type:expr ),* $(,)?) => {
        /// Every file of the console, served under `/ui/`.
        pub static ASSETS: &[Asset] = &[
            $( Asset {
                path: $path,
                content_type: $content_type,
                bytes: include_bytes!(concat!("../../../ui/", $path)),
                etag: {
                    const TAG: [u8; 18] =
                        etag_bytes(fnv1a(include_bytes!(concat!("../../../ui/", $path))));
                    match std::str::from_utf8(&TAG) {
                        Ok(tag) => tag,
                        Err(_) => "\"0\"",
                    }
                },
            }, )*
        ];
    };
}

assets! {
    "index.html" => HTML,
    "console.css" => CSS,
    "icon.svg" => SVG,
    "app.js" => JS,
    "api.js" => JS,
    "dom.js" => JS,
    "chart.js" => JS,
    "pages/signin.js" => JS,
    "pages/apps.js" => JS,
    "pages/tokens.js" => JS,
    "pages/permissions.js" => JS,
    "pages/roles.js" => JS,
    "pages/people.js" => JS,
    "pages/audit.js" => JS,
    "pages/usage.js" => JS,
    "pages/compliance.js" => JS,
    "pages/keys.js" => JS,
}

/// The asset at `path` below `/ui/` (the empty path is the console's page).
pub fn asset(path: &str) -> Option<&'static Asset> {
    let path = if path.is_empty() { "index.html" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

/// `GET /ui` and `GET /ui/`: the console's page.
pub async fn index(headers: HeaderMap) -> Response {
    serve("", &headers)
}

/// `GET /ui/{*path}`: one of the console's files; an unknown one is `404 not_found`.
pub async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, request: &HeaderMap) -> Response {
    let Some(asset) = asset(path) else {
        return ApiError::no_route(&format!("/ui/{path}")).into_response();
    };
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == asset.etag
        });
    let headers = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONSOLE_CSP),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        ),
        (header::ETAG, HeaderValue::from_static(asset.etag)),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (
        headers,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.bytes,
    )
        .into_response()
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use super::*;

    fn text(asset: &Asset) -> &'static str {
        std::str::from_utf8(asset.bytes).unwrap()
    }

    #[test]
    fn every_file_of_the_ui_directory_is_served_and_nothing_else() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        let mut on_disk = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let rel = path.strip_prefix(&root).unwrap();
                    on_disk.push(rel.to_str().unwrap().replace('\\', "/"));
                }
            }
        }
        on_disk.sort();
        let mut served: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        served.sort();
        assert_eq!(on_disk, served);
    }

    #[test]
    fn etags_differ_between_files_and_are_quoted_hex() {
        let mut tags: Vec<&str> = ASSETS.iter().map(|a| a.etag).collect();
        for tag in &tags {
            assert_eq!(tag.len(), 18, "{tag}");
            assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
        }
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }

    /// What the CSP forbids anyway, and what would put data into the page as markup or
    /// keep a token beyond the tab, never appears in the console's own files.
    #[test]
    fn no_inline_code_no_markup_from_strings_no_persistent_storage() {
        for a in ASSETS.iter().filter(|a| a.content_type != SVG) {
            let t = text(a);
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "localStorage",
                "sessionStorage",
                "document.cookie",
                "eval(",
                "new Function",
                " style=\"",
                " onclick=",
                "javascript:",
            ] {
                assert!(!t.contains(banned), "{} contains {banned}", a.path);
            }
        }
        let index = text(asset("").unwrap());
        // Exactly one script, a module from this origin, and no inline style block.
        assert_eq!(index.matches("<script").count(), 1);
        assert!(index.contains("<script type=\"module\" src=\"/ui/app.js\"></script>"));
        assert!(!index.contains("<style"));
    }

    #[tokio::test]
    async fn assets_carry_their_type_the_console_csp_and_an_etag() {
        let response = serve("app.js", &HeaderMap::new());
        assert_eq!(response.status(), StatusCode::OK);
        let h = response.headers();
        assert_eq!(h[header::CONTENT_TYPE], JS);
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONSOLE_CSP);
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        let etag = h[header::ETAG].clone();

        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag);
        let response = serve("app.js", &again);
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            response.headers()[header::CONTENT_SECURITY_POLICY],
            CONSOLE_CSP
        );

        let mut stale = HeaderMap::new();
        stale.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"0\""));
        assert_eq!(serve("app.js", &stale).status(), StatusCode::OK);

        assert_eq!(
            serve("", &HeaderMap::new()).headers()[header::CONTENT_TYPE],
            HTML
        );
        assert_eq!(
            serve("console.css", &HeaderMap::new()).headers()[header::CONTENT_TYPE],
            CSS
        );
    }

    #[tokio::test]
    async fn an_unknown_or_escaping_path_is_not_found() {
        for path in [
            "nope.js",
            "../Cargo.toml",
            "pages/../app.js",
            "index.html/",
            "APP.JS",
        ] {
            assert_eq!(
                serve(path, &HeaderMap::new()).status(),
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
    }
}
