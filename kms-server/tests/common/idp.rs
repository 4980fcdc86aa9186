//! Real identity providers for the end-to-end tests of single sign-on, started on loopback
//! by the tests themselves, and a tiny cookie-keeping browser to drive them.
//!
//! - [`OidcIdp`]: `kms-server/tests/idp/oidc.mjs`, an OpenID Connect provider on panva's
//!   `oidc-provider` (code flow, PKCE required, RFC 9207 `iss`, refresh tokens), with a
//!   non-interactive login for the "next user" and a control API under `/__test/`.
//! - [`SamlIdp`]: `kms-server/tests/idp/saml.mjs`, a SAML 2.0 IdP on `samlify`
//!   (HTTP-Redirect AuthnRequests, signed assertions by HTTP-POST, tampering modes).
//! - [`Browser`]: blocking HTTP over `ureq` with a cookie jar per host:port, redirects
//!   followed only on request ([`Browser::follow`]), and [`saml_form`] to read the IdP's
//!   auto-submitting form.
//!
//! Both fixtures need Node.js and `npm ci` in `kms-server/tests/idp` (`.ci/run` does it);
//! without them `start` returns `None` after [`super::cannot_run`], which fails under
//! `CI=true`. The node process is killed when the handle is dropped. See
//! `kms-server/tests/idp/README.md` for the control API.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use url::Url;

/// How long a fixture may take to print its "listening" line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of every HTTP call of the harness.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The directory of the Node project (`package.json`, `oidc.mjs`, `saml.mjs`).
pub(crate) fn idp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("idp")
}

/// Whether `node` runs and `npm ci` has installed `package` in [`idp_dir`]; else the reason.
fn prerequisites(package: &str) -> Result<(), String> {
    let node = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Err(
            "node (Node.js 20 or later) not found, so the identity-provider \
                    fixtures do not run"
                .to_owned(),
        );
    }
    let installed = idp_dir().join("node_modules").join(package);
    if !installed.is_dir() {
        return Err(format!(
            "{} is missing: run `npm ci --no-audit --no-fund` in kms-server/tests/idp",
            installed.display()
        ));
    }
    Ok(())
}

/// A node fixture process: its first stdout line (JSON), its stderr, killed on drop.
#[derive(Debug)]
struct NodeProcess {
    child: Option<Child>,
    ready: Value,
    logs: Arc<Mutex<String>>,
}

impl NodeProcess {
    /// Runs `node script` in [`idp_dir`] with `env`, and waits for its one JSON line.
    /// `None` when the process did not start or printed no JSON line (the test then fails
    /// with the logs: the fixture is broken, which no machine excuses).
    fn start(what: &str, script: &str, env: &[(&str, String)]) -> Option<NodeProcess> {
        let mut cmd = Command::new("node");
        cmd.arg(script)
            .current_dir(idp_dir())
            .env("PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let spawned = cmd.spawn();
        assert!(spawned.is_ok(), "cannot spawn node {script}: {spawned:?}");
        let mut child = spawned.ok()?;
        let logs = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let sink = logs.clone();
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut l) = sink.lock() {
                        l.push_str(&line);
                        l.push('\n');
                    }
                }
            });
        }
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            let sink = logs.clone();
            thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                if let Some(Ok(first)) = lines.next() {
                    let _ = tx.send(first);
                }
                // Anything else on stdout breaks the contract: keep it for the logs.
                for line in lines.map_while(Result::ok) {
                    if let Ok(mut l) = sink.lock() {
                        l.push_str("stdout: ");
                        l.push_str(&line);
                        l.push('\n');
                    }
                }
            });
        }
        let ready = rx
            .recv_timeout(START_TIMEOUT)
            .ok()
            .and_then(|line| serde_json::from_str::<Value>(&line).ok());
        let mut process = NodeProcess {
            child: Some(child),
            ready: Value::Null,
            logs,
        };
        if ready.is_none() {
            process.kill();
        }
        assert!(
            ready.is_some(),
            "the {what} fixture did not start; its logs:\n{}",
            process.logs()
        );
        process.ready = ready?;
        Some(process)
    }

    fn field(&self, name: &str) -> String {
        self.ready[name].as_str().unwrap_or_default().to_owned()
    }

    fn logs(&self) -> String {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain JSON call to a fixture's control API; asserts a 2xx answer.
fn control(method: &str, url: &str, body: Option<&Value>, logs: &str) -> Value {
    let agent = ureq::AgentBuilder::new()
        .timeout(HTTP_TIMEOUT)
        .redirects(0)
        .build();
    let req = agent.request(method, url);
    let result = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let (status, text) = match result {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => (0, format!("transport error: {e}")),
    };
    assert!(
        (200..300).contains(&status),
        "{method} {url} answered {status}: {text}\nfixture logs:\n{logs}"
    );
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

// ------------------------------------------------------------------------------------------
// OpenID Connect.

/// The OpenID Connect provider (`oidc.mjs`), issuer `http://127.0.0.1:PORT`.
#[derive(Debug)]
pub(crate) struct OidcIdp {
    process: NodeProcess,
    issuer: String,
}

impl OidcIdp {
    /// Starts the provider with `clients`: JSON objects `{client_id, client_secret,
    /// redirect_uris, token_endpoint_auth_method?, id_token_signed_response_alg?, ...}`
    /// (any client metadata oidc-provider accepts; `grant_types` defaults to
    /// authorization_code + refresh_token). `None` (after [`super::cannot_run`]) when
    /// node or the npm packages are missing.
    pub(crate) fn start(clients: &[Value]) -> Option<OidcIdp> {
        if let Err(why) = prerequisites("oidc-provider") {
            super::cannot_run(&why);
            return None;
        }
        let clients = Value::Array(clients.to_vec()).to_string();
        let process = NodeProcess::start("OIDC", "oidc.mjs", &[("CLIENTS", clients)])?;
        let issuer = process.field("issuer");
        assert!(
            issuer.starts_with("http://127.0.0.1:"),
            "unexpected ready line {}",
            process.ready
        );
        Some(OidcIdp { process, issuer })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `{issuer}/.well-known/openid-configuration`.
    pub(crate) fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// The provider's stderr so far (oidc-provider's notices, server errors).
    pub(crate) fn logs(&self) -> String {
        self.process.logs()
    }

    fn control(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        control(
            method,
            &format!("{}{path}", self.issuer),
            body,
            &self.logs(),
        )
    }

    /// Who the next login is: `{"sub", "email"?, "name"?, "groups"?}` (an absent field
    /// is an absent claim). The default is alice (`alice@example.com`, `Alice`,
    /// `["admins"]`). A browser whose session is another user's logs in again.
    pub(crate) fn next_user(&self, user: Value) {
        self.control("POST", "/__test/next-user", Some(&user));
    }

    /// How the `id_token` of the following token responses is rewritten: `normal`,
    /// `alg_none`, `hs256` (signed with the client secret), `wrong_nonce`, `wrong_aud`,
    /// `expired`, `wrong_iss`, `bad_signature`. Sticky until changed.
    pub(crate) fn mode(&self, id_token: &str) {
        self.control(
            "POST",
            "/__test/mode",
            Some(&json!({ "id_token": id_token })),
        );
    }

    /// New signing keys (RS256, ES256, EdDSA) with new kids; the JWKS serves only them.
    /// Sessions, codes and refresh tokens survive.
    pub(crate) fn rotate_keys(&self) {
        self.control("POST", "/__test/rotate-keys", None);
    }

    /// Every refresh-token grant fails with `invalid_grant` from now on.
    pub(crate) fn revoke_refresh(&self) {
        self.control("POST", "/__test/revoke-refresh", None);
    }

    /// `{"jwks_requests": n, "token_requests": n}` since the start.
    pub(crate) fn stats(&self) -> Value {
        self.control("GET", "/__test/stats", None)
    }
}

// ------------------------------------------------------------------------------------------
// SAML.

/// The SAML IdP (`saml.mjs`): entity id and metadata at `http://127.0.0.1:PORT/metadata`,
/// SSO (HTTP-Redirect and HTTP-POST) at `/sso`.
#[derive(Debug)]
pub(crate) struct SamlIdp {
    process: NodeProcess,
    base: String,
    metadata_url: String,
}

impl SamlIdp {
    /// Starts the IdP. `None` (after [`super::cannot_run`]) when node or the npm packages
    /// are missing.
    pub(crate) fn start() -> Option<SamlIdp> {
        if let Err(why) = prerequisites("samlify") {
            super::cannot_run(&why);
            return None;
        }
        let process = NodeProcess::start("SAML", "saml.mjs", &[])?;
        let base = process.field("base");
        let metadata_url = process.field("metadata_url");
        assert!(
            base.starts_with("http://127.0.0.1:") && !metadata_url.is_empty(),
            "unexpected ready line {}",
            process.ready
        );
        Some(SamlIdp {
            process,
            base,
            metadata_url,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// `http://127.0.0.1:PORT/metadata`, also the IdP's entity id.
    pub(crate) fn metadata_url(&self) -> &str {
        &self.metadata_url
    }

    /// The entity id (the metadata URL).
    pub(crate) fn entity_id(&self) -> &str {
        &self.metadata_url
    }

    /// `http://127.0.0.1:PORT/sso`.
    pub(crate) fn sso_url(&self) -> String {
        format!("{}/sso", self.base)
    }

    /// The IdP's stderr so far.
    pub(crate) fn logs(&self) -> String {
        self.process.logs()
    }

    fn control(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        control(method, &format!("{}{path}", self.base), body, &self.logs())
    }

    /// The metadata XML, fetched from [`SamlIdp::metadata_url`].
    pub(crate) fn metadata_xml(&self) -> String {
        let response = Browser::new().get(&self.metadata_url);
        assert_eq!(response.status, 200, "metadata: {}", response.body);
        response.body
    }

    /// Registers the SP by its metadata (entity id and HTTP-POST ACS). An SP that is not
    /// registered is learnt from its first AuthnRequest (Issuer + ACS URL).
    pub(crate) fn set_sp(&self, metadata_xml: &str) {
        self.control(
            "POST",
            "/__test/sp",
            Some(&json!({ "metadata_xml": metadata_xml })),
        );
    }

    /// Who the next login is: `{"name_id", "email"?, "name"?, "groups"?}`. The default is
    /// `alice@example.com`, `Alice`, `["admins"]`.
    pub(crate) fn next_user(&self, user: Value) {
        self.control("POST", "/__test/next-user", Some(&user));
    }

    /// The tampering of the following responses: `normal`, `unsigned_assertion`,
    /// `altered_name_id`, `wrapped_signature`, `wrapped_signature_extensions`, `expired`,
    /// `wrong_audience`, `wrong_in_response_to`, `not_yet_valid`. Sticky until changed.
    pub(crate) fn mode(&self, response: &str) {
        self.control(
            "POST",
            "/__test/mode",
            Some(&json!({ "response": response })),
        );
    }

    /// Whether the Response is signed too (besides the Assertion); off by default.
    pub(crate) fn sign_response(&self, on: bool) {
        self.control(
            "POST",
            "/__test/mode",
            Some(&json!({ "sign_response": on })),
        );
    }

    /// An unsolicited (IdP-initiated) base64 SAMLResponse for the next user to `acs`, in
    /// the current mode; the audience is the registered SP whose ACS this is.
    pub(crate) fn idp_initiated(&self, acs: &str) -> String {
        let v = self.control(
            "POST",
            "/__test/idp-initiated",
            Some(&json!({ "acs": acs })),
        );
        let response = v["SAMLResponse"].as_str().unwrap_or_default().to_owned();
        assert!(!response.is_empty(), "idp-initiated answered {v}");
        response
    }

    /// The last SAMLResponse issued (by `/sso` or IdP-initiated) and its RelayState.
    pub(crate) fn last_response(&self) -> (String, String) {
        let v = self.control("GET", "/__test/last-response", None);
        (
            v["SAMLResponse"].as_str().unwrap_or_default().to_owned(),
            v["RelayState"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

/// The HTTP-Redirect binding's encoding of a SAML message: raw DEFLATE, then base64 (the
/// caller URL-encodes it as a query value).
pub(crate) fn deflate_base64(xml: &str) -> String {
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    let compressed = encoder
        .write_all(xml.as_bytes())
        .and_then(|()| encoder.finish())
        .unwrap_or_default();
    STANDARD.encode(compressed)
}

/// The XML of a base64 SAMLResponse (HTTP-POST binding); `None` if it is not base64 UTF-8.
pub(crate) fn decode_saml(b64: &str) -> Option<String> {
    let bytes = STANDARD.decode(b64.trim()).ok()?;
    String::from_utf8(bytes).ok()
}

/// The IdP's auto-submitting form: `(action, SAMLResponse, RelayState)` (RelayState empty
/// when the form has none); `None` without a form or a SAMLResponse input.
pub(crate) fn saml_form(html: &str) -> Option<(String, String, String)> {
    let mut action = None;
    let mut fields: HashMap<String, String> = HashMap::new();
    for tag in html.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap_or_default();
        let lower = tag.to_ascii_lowercase();
        if lower.starts_with("form") && action.is_none() {
            action = attribute(tag, "action");
        } else if lower.starts_with("input") {
            if let (Some(name), Some(value)) = (attribute(tag, "name"), attribute(tag, "value")) {
                fields.insert(name, value);
            }
        }
    }
    let saml_response = fields.remove("SAMLResponse")?;
    let relay_state = fields.remove("RelayState").unwrap_or_default();
    Some((action?, saml_response, relay_state))
}

/// The value of attribute `name` in the inside of an HTML tag (quoted or not), unescaped.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let bytes = tag.as_bytes();
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find(name) {
        let start = from + found;
        from = start + name.len();
        // A whole attribute name: preceded by whitespace, followed by `=`.
        let before_ok = start > 0 && bytes[start - 1].is_ascii_whitespace();
        let rest = tag[from..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let value = rest[1..].trim_start();
        let raw = match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or_default(),
            _ => value
                .split(|c: char| c.is_ascii_whitespace() || c == '/')
                .next()
                .unwrap_or_default(),
        };
        return Some(unescape_html(raw));
    }
    None
}

fn unescape_html(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

// ------------------------------------------------------------------------------------------
// The browser.

/// An HTTP response as the browser saw it.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    /// The URL requested.
    pub(crate) url: String,
    pub(crate) status: u16,
    /// Every header line in order (several `Set-Cookie` stay apart).
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Response {
    /// The first header `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header `name`.
    pub(crate) fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `Location`, resolved against the URL requested.
    pub(crate) fn location(&self) -> Option<String> {
        let location = self.header("location")?;
        Url::parse(&self.url)
            .ok()?
            .join(location)
            .ok()
            .map(String::from)
    }

    /// Every `Set-Cookie` line.
    pub(crate) fn set_cookies(&self) -> Vec<&str> {
        self.headers_all("set-cookie")
    }

    /// The body as JSON (`Value::Null` if it is not JSON).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// Whether the status is a redirect that a browser follows with a GET.
    pub(crate) fn is_redirect(&self) -> bool {
        matches!(self.status, 301 | 302 | 303 | 307 | 308)
    }
}

/// The first value of query parameter `name` in `url`.
pub(crate) fn query_param(url: &str, name: &str) -> Option<String> {
    let url = Url::parse(url).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[derive(Debug, Clone)]
struct Cookie {
    name: String,
    value: String,
    path: String,
}

/// A blocking browser: a cookie jar per host:port, no automatic redirects.
#[derive(Debug)]
pub(crate) struct Browser {
    agent: ureq::Agent,
    /// host:port -> cookies.
    jar: HashMap<String, Vec<Cookie>>,
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

impl Browser {
    pub(crate) fn new() -> Browser {
        Browser {
            agent: ureq::AgentBuilder::new()
                .timeout(HTTP_TIMEOUT)
                .redirects(0)
                .build(),
            jar: HashMap::new(),
        }
    }

    /// A browser that sends `user_agent` as its `User-Agent`.
    pub(crate) fn with_user_agent(user_agent: &str) -> Browser {
        Browser {
            agent: ureq::AgentBuilder::new()
                .timeout(HTTP_TIMEOUT)
                .redirects(0)
                .user_agent(user_agent)
                .build(),
            jar: HashMap::new(),
        }
    }

    /// `GET url` with the jar's cookies; asserts that the server answered.
    pub(crate) fn get(&mut self, url: &str) -> Response {
        let r = self.try_get(url);
        assert!(r.is_ok(), "GET {url}: {r:?}");
        r.unwrap_or_else(|e| transport_error(url, e))
    }

    /// `GET url`; `Err` on a transport error (refused connection, timeout).
    pub(crate) fn try_get(&mut self, url: &str) -> Result<Response, String> {
        self.send("GET", url, None)
    }

    /// `POST url` of an `application/x-www-form-urlencoded` form; asserts an answer.
    pub(crate) fn post_form(&mut self, url: &str, fields: &[(&str, &str)]) -> Response {
        let r = self.try_post_form(url, fields);
        assert!(r.is_ok(), "POST {url}: {r:?}");
        r.unwrap_or_else(|e| transport_error(url, e))
    }

    /// `POST url` of a form; `Err` on a transport error.
    pub(crate) fn try_post_form(
        &mut self,
        url: &str,
        fields: &[(&str, &str)],
    ) -> Result<Response, String> {
        self.send("POST", url, Some(fields))
    }

    /// Follows redirects from `GET url` (each hop a GET, cookies kept) for at most
    /// `max_hops` redirects, and stops before fetching a URL that starts with one of
    /// `stop_at`. Returns the last response fetched (for a stop, the redirect pointing
    /// there) and every URL in order: the ones fetched, then the stop URL if any.
    pub(crate) fn follow(
        &mut self,
        url: &str,
        max_hops: usize,
        stop_at: &[&str],
    ) -> (Response, Vec<String>) {
        let mut visited = vec![url.to_owned()];
        let mut response = self.get(url);
        let mut hops = 0;
        while response.is_redirect() {
            let Some(next) = response.location() else {
                break;
            };
            visited.push(next.clone());
            if stop_at.iter().any(|p| next.starts_with(p)) {
                break;
            }
            hops += 1;
            assert!(
                hops <= max_hops,
                "more than {max_hops} redirects: {visited:?}"
            );
            response = self.get(&next);
        }
        (response, visited)
    }

    /// The cookies the jar would send to `url`, as `name=value` pairs.
    pub(crate) fn cookies_for(&self, url: &str) -> Vec<(String, String)> {
        let Ok(url) = Url::parse(url) else {
            return Vec::new();
        };
        let mut matching: Vec<&Cookie> = self
            .jar
            .get(&authority(&url))
            .map(|cookies| {
                cookies
                    .iter()
                    .filter(|c| path_matches(&c.path, url.path()))
                    .collect()
            })
            .unwrap_or_default();
        // Longer paths first, as browsers send them.
        matching.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        matching
            .into_iter()
            .map(|c| (c.name.clone(), c.value.clone()))
            .collect()
    }

    /// Forgets every cookie.
    pub(crate) fn clear_cookies(&mut self) {
        self.jar.clear();
    }

    fn send(
        &mut self,
        method: &str,
        url: &str,
        form: Option<&[(&str, &str)]>,
    ) -> Result<Response, String> {
        let parsed = Url::parse(url).map_err(|e| format!("bad URL {url}: {e}"))?;
        let mut req = self.agent.request_url(method, &parsed);
        let cookies = self.cookies_for(url);
        if !cookies.is_empty() {
            let header = cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            req = req.set("Cookie", &header);
        }
        let result = match form {
            Some(fields) => req.send_form(fields),
            None => req.call(),
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(format!("{method} {url}: {e}")),
        };
        let mut headers = Vec::new();
        for name in response.headers_names() {
            for value in response.all(&name) {
                headers.push((name.clone(), value.to_owned()));
            }
        }
        let status = response.status();
        let body = response
            .into_string()
            .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
        let response = Response {
            url: url.to_owned(),
            status,
            headers,
            body,
        };
        for line in response.set_cookies() {
            self.store_cookie(&parsed, line);
        }
        Ok(response)
    }

    /// Stores (or deletes) the cookie of one `Set-Cookie` line received from `url`.
    fn store_cookie(&mut self, url: &Url, line: &str) {
        let mut parts = line.split(';');
        let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else {
            return;
        };
        let name = name.trim().to_owned();
        let value = value.trim().trim_matches('"').to_owned();
        if name.is_empty() {
            return;
        }
        let mut path = None;
        let mut delete = false;
        let mut max_age_seen = false;
        for attr in parts {
            let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "path" if v.starts_with('/') => path = Some(v.to_owned()),
                "max-age" => {
                    max_age_seen = true;
                    delete = v.parse::<i64>().is_ok_and(|n| n <= 0);
                }
                "expires" if !max_age_seen => {
                    delete = http_date(v).is_some_and(|t| t <= now_unix());
                }
                _ => {}
            }
        }
        let path = path.unwrap_or_else(|| default_path(url.path()));
        let cookies = self.jar.entry(authority(url)).or_default();
        cookies.retain(|c| !(c.name == name && c.path == path));
        if !delete {
            cookies.push(Cookie { name, value, path });
        }
    }
}

/// Status 0 and the error as the body: a transport error (only after a failed assert).
fn transport_error(url: &str, e: String) -> Response {
    Response {
        url: url.to_owned(),
        status: 0,
        headers: Vec::new(),
        body: e,
    }
}

fn authority(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// RFC 6265 5.1.4: the cookie path `cookie` matches the request path `request`.
pub(crate) fn path_matches(cookie: &str, request: &str) -> bool {
    request == cookie
        || (request.starts_with(cookie)
            && (cookie.ends_with('/') || request[cookie.len()..].starts_with('/')))
}

/// RFC 6265 5.1.4: the default path of a cookie set by a response to `request`.
pub(crate) fn default_path(request: &str) -> String {
    match request.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => request[..i].to_owned(),
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Seconds since the epoch of an IMF-fixdate (`Thu, 01 Jan 1970 00:00:00 GMT`, the form
/// servers send in `Expires`; dashes as in `01-Jan-1970` accepted).
pub(crate) fn http_date(s: &str) -> Option<i64> {
    let s = s.replace('-', " ");
    let mut it = s.split_whitespace();
    let first = it.next()?;
    let day = if first.ends_with(',') {
        it.next()?
    } else {
        first
    };
    let day: i64 = day.parse().ok()?;
    let month = it.next()?.to_ascii_lowercase();
    let months = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month = i64::try_from(months.iter().position(|m| month.starts_with(m))? + 1).ok()?;
    let mut year: i64 = it.next()?.parse().ok()?;
    if year < 100 {
        year += if year < 70 { 2000 } else { 1900 };
    }
    let mut hms = it.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}
