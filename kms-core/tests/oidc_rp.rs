//! The OpenID Connect relying party (`kms_core::sso::oidc`) against an in-memory provider
//! that signs ID tokens with real keys (RS256, ES256, EdDSA) and counts every request.

#![cfg(feature = "sso")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a broken fixture or a failed expectation fails the test"
)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use kms_core::sso::oidc::{
    authorization_url, check_algorithms, discover, finish_login, revalidate, validate_issuer_url,
    Callback, Expected, KeySetCache, LoginResult, OidcClient,
};
use kms_core::sso::{HttpRequest, HttpResponse, HttpTransport, SsoError, TransportError};
use kms_core::Timestamp;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const ISSUER: &str = "https://idp.example/realms/kms";
const CLIENT_ID: &str = "kms-app";
const SECRET: &str = "client-secret-value-42";
const REDIRECT: &str = "https://kms.example/sso/oidc/callback";
const CODE: &str = "authorization-code-0123456789";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const NONCE: &str = "nonce-of-this-login";
const ACCESS: &str = "access-token-abc";
const REFRESH: &str = "refresh-token-xyz";
const NOW: i64 = 1_800_000_000;
const RSA_PEM: &str = include_str!("support/oidc_rs256_test_key.pem");

fn now() -> Timestamp {
    Timestamp::from_unix(NOW)
}

// ------------------------------------------------------------------------------------
// Keys and tokens.

enum Signer {
    Rs(
        Box<rsa::pkcs1v15::SigningKey<Sha256>>,
        Box<rsa::RsaPublicKey>,
    ),
    Es(p256::ecdsa::SigningKey),
    Ed(ed25519_dalek::SigningKey),
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Signer {
    fn rs256() -> Self {
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_PEM).unwrap();
        let public = key.to_public_key();
        Signer::Rs(
            Box::new(rsa::pkcs1v15::SigningKey::new(key)),
            Box::new(public),
        )
    }

    fn es256(seed: u8) -> Self {
        Signer::Es(p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap())
    }

    fn eddsa(seed: u8) -> Self {
        Signer::Ed(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }

    fn alg(&self) -> &'static str {
        match self {
            Signer::Rs(..) => "RS256",
            Signer::Es(_) => "ES256",
            Signer::Ed(_) => "EdDSA",
        }
    }

    fn jwk(&self, kid: &str) -> Value {
        match self {
            Signer::Rs(_, public) => json!({
                "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be()),
            }),
            Signer::Es(key) => {
                let point = key.verifying_key().to_encoded_point(false);
                json!({
                    "kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                    "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
                })
            }
            Signer::Ed(key) => json!({
                "kty": "OKP", "kid": kid, "use": "sig", "alg": "EdDSA", "crv": "Ed25519",
                "x": b64(key.verifying_key().as_bytes()),
            }),
        }
    }

    fn sign(&self, input: &[u8]) -> Vec<u8> {
        match self {
            Signer::Rs(key, _) => {
                use rsa::signature::{SignatureEncoding, Signer as _};
                key.sign(input).to_vec()
            }
            Signer::Es(key) => {
                use p256::ecdsa::signature::Signer as _;
                let signature: p256::ecdsa::Signature = key.sign(input);
                signature.to_bytes().to_vec()
            }
            Signer::Ed(key) => {
                use ed25519_dalek::Signer as _;
                key.sign(input).to_bytes().to_vec()
            }
        }
    }

    /// A JWT with this key's algorithm and `kid`.
    fn mint(&self, kid: &str, claims: &Value) -> String {
        let header = json!({"alg": self.alg(), "typ": "JWT", "kid": kid});
        let input = signing_input(&header, claims);
        let signature = self.sign(input.as_bytes());
        format!("{input}.{}", b64(&signature))
    }
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// The claims of a good ID token for this login.
fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "sub": "user-1",
        "aud": CLIENT_ID,
        "exp": NOW + 300,
        "iat": NOW - 5,
        "nonce": NONCE,
        "email": "ada@example.com",
        "name": "Ada Lovelace",
        "groups": ["admins", "dev"],
        "department": "R&D",
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    if let Some(map) = claims.as_object_mut() {
        map.remove(key);
    }
    claims
}

// ------------------------------------------------------------------------------------
// The fake provider.

struct Answer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

fn json_answer(status: u16, body: &Value) -> Answer {
    Answer {
        status,
        content_type: "application/json",
        body: body.to_string().into_bytes(),
    }
}

struct State {
    issuer: String,
    discovery: Value,
    jwks: Value,
    /// The ID token the token endpoint returns for the code exchange.
    id_token: Option<String>,
    /// The ID token returned with a refresh (none by default).
    refresh_id_token: Option<String>,
    /// A rotated refresh token returned with a refresh.
    rotated_refresh: Option<String>,
    /// Replaces every token-endpoint answer.
    token_answer: Option<Answer>,
    userinfo: Value,
    userinfo_answer: Option<Answer>,
    /// The transport fails (provider unreachable).
    unreachable: bool,
    /// Every request, as `METHOD path`.
    calls: Vec<String>,
    /// How the client authenticated at the token endpoint: basic, post or none.
    client_auth: Vec<&'static str>,
}

struct Fake {
    state: Mutex<State>,
}

impl Fake {
    fn new(issuer: &str, signer: &Signer) -> Self {
        Fake {
            state: Mutex::new(State {
                issuer: issuer.to_owned(),
                discovery: discovery_doc(issuer),
                jwks: json!({"keys": [signer.jwk("k1")]}),
                id_token: None,
                refresh_id_token: None,
                rotated_refresh: None,
                token_answer: None,
                userinfo: json!({"sub": "user-1", "email": "ada@userinfo.example",
                                 "locale": "en-GB", "teams": ["core"]}),
                userinfo_answer: None,
                unreachable: false,
                calls: Vec::new(),
                client_auth: Vec::new(),
            }),
        }
    }

    fn set(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap());
    }

    fn calls(&self, what: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.as_str() == what)
            .count()
    }

    fn token_endpoint(&self, state: &mut State, request: &HttpRequest) -> Answer {
        if let Some(answer) = state.token_answer.take() {
            return answer;
        }
        let form: HashMap<String, String> =
            openidconnect::url::form_urlencoded::parse(request.body())
                .into_owned()
                .collect();
        let basic = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .map(|v| String::from_utf8(STANDARD.decode(v).unwrap()).unwrap());
        let authenticated = match (&basic, form.get("client_secret")) {
            (Some(basic), None) => {
                state.client_auth.push("basic");
                basic == &format!("{CLIENT_ID}:{SECRET}")
            }
            (None, Some(secret)) => {
                state.client_auth.push("post");
                form.get("client_id").map(String::as_str) == Some(CLIENT_ID) && secret == SECRET
            }
            (None, None) => {
                state.client_auth.push("none");
                form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
            }
            (Some(_), Some(_)) => false,
        };
        if !authenticated {
            return json_answer(401, &json!({"error": "invalid_client"}));
        }
        let field = |name: &str| form.get(name).map(String::as_str);
        let (id_token, refresh) = match field("grant_type") {
            Some("authorization_code") => {
                if field("code") != Some(CODE)
                    || field("code_verifier") != Some(VERIFIER)
                    || field("redirect_uri") != Some(REDIRECT)
                {
                    return json_answer(
                        400,
                        &json!({"error": "invalid_grant", "error_description": "code expired"}),
                    );
                }
                (state.id_token.clone(), Some(REFRESH.to_owned()))
            }
            Some("refresh_token") => {
                if field("refresh_token") != Some(REFRESH) {
                    return json_answer(400, &json!({"error": "invalid_grant"}));
                }
                (
                    state.refresh_id_token.clone(),
                    state.rotated_refresh.clone(),
                )
            }
            _ => return json_answer(400, &json!({"error": "unsupported_grant_type"})),
        };
        let mut body = json!({"access_token": ACCESS, "token_type": "Bearer", "expires_in": 300});
        if let Some(id_token) = id_token {
            body["id_token"] = json!(id_token);
        }
        if let Some(refresh) = refresh {
            body["refresh_token"] = json!(refresh);
        }
        json_answer(200, &body)
    }
}

fn discovery_doc(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth?kc=1"),
        "token_endpoint": format!("{issuer}/token"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA", "HS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    })
}

impl HttpTransport for Fake {
    fn call(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let mut state = self.state.lock().unwrap();
        let uri = request.uri().to_string();
        let path = uri
            .strip_prefix(state.issuer.as_str())
            .unwrap_or(&uri)
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned();
        state.calls.push(format!("{} {path}", request.method()));
        if state.unreachable {
            return Err(TransportError("connection refused".to_owned()));
        }
        let answer = match (request.method().as_str(), path.as_str()) {
            ("GET", "/.well-known/openid-configuration") => json_answer(200, &state.discovery),
            ("GET", "/jwks") => json_answer(200, &state.jwks),
            ("POST", "/token") => self.token_endpoint(&mut state, &request),
            ("GET", "/userinfo") => {
                let bearer = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok());
                if bearer != Some(&format!("Bearer {ACCESS}")) {
                    json_answer(401, &json!({"error": "invalid_token"}))
                } else if let Some(answer) = state.userinfo_answer.take() {
                    answer
                } else {
                    json_answer(200, &state.userinfo)
                }
            }
            _ => json_answer(404, &json!({"error": "not found"})),
        };
        Ok(http::Response::builder()
            .status(answer.status)
            .header("content-type", answer.content_type)
            .body(answer.body)
            .unwrap())
    }
}

// ------------------------------------------------------------------------------------
// The connection.

struct Connection {
    discovery: Value,
    scopes: Vec<String>,
    algorithms: Vec<String>,
    groups_claim: Option<String>,
    secret: Option<String>,
    issuer: String,
}

impl Connection {
    fn discovered(fake: &Fake) -> Self {
        let issuer = fake.state.lock().unwrap().issuer.clone();
        let discovery = discover(fake, &issuer).unwrap();
        Connection {
            discovery,
            scopes: vec!["email".to_owned(), "profile".to_owned()],
            algorithms: Vec::new(),
            groups_claim: Some("groups".to_owned()),
            secret: Some(SECRET.to_owned()),
            issuer,
        }
    }

    fn client(&self) -> OidcClient<'_> {
        OidcClient {
            issuer: &self.issuer,
            client_id: CLIENT_ID,
            client_secret: self.secret.as_deref(),
            redirect_uri: REDIRECT,
            scopes: &self.scopes,
            algorithms: &self.algorithms,
            groups_claim: self.groups_claim.as_deref(),
            discovery: &self.discovery,
        }
    }
}

fn keys() -> KeySetCache {
    KeySetCache::new(Duration::from_secs(3600), Duration::from_secs(60))
}

fn login_at(
    fake: &Fake,
    keys: &KeySetCache,
    connection: &Connection,
    iss: Option<&str>,
    at: Timestamp,
) -> Result<LoginResult, SsoError> {
    let result = finish_login(
        fake,
        keys,
        &connection.client(),
        &Callback { code: CODE, iss },
        &Expected {
            nonce: NONCE,
            pkce_verifier: VERIFIER,
        },
        at,
    );
    if let Err(e) = &result {
        assert_no_secret(e);
    }
    result
}

fn login(fake: &Fake, connection: &Connection) -> Result<LoginResult, SsoError> {
    login_at(fake, &keys(), connection, Some(ISSUER), now())
}

fn assert_no_secret(e: &SsoError) {
    let text = e.to_string();
    for secret in [CODE, SECRET, VERIFIER, ACCESS, REFRESH] {
        assert!(!text.contains(secret), "{text:?} contains a secret");
    }
    assert!(text.len() < 1024, "error too long: {text}");
}

#[track_caller]
fn unauthenticated(result: Result<LoginResult, SsoError>, needle: &str) {
    match result {
        Err(SsoError::Unauthenticated(m)) => {
            assert!(m.contains(needle), "{m:?} does not mention {needle:?}")
        }
        other => panic!("expected Unauthenticated({needle}), got {other:?}"),
    }
}

#[track_caller]
fn invalid<T: std::fmt::Debug>(result: Result<T, SsoError>, needle: &str) {
    match result {
        Err(SsoError::Invalid(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        other => panic!("expected Invalid({needle}), got {other:?}"),
    }
}

/// A provider with `signer` (kid `k1`) whose token endpoint returns a token for `claims`.
fn provider_with(signer: &Signer, claims: &Value) -> Fake {
    let fake = Fake::new(ISSUER, signer);
    let token = signer.mint("k1", claims);
    fake.set(|s| s.id_token = Some(token));
    fake
}

// ------------------------------------------------------------------------------------
// Happy paths.

fn happy_path(signer: Signer) {
    let fake = provider_with(&signer, &claims());
    let connection = Connection::discovered(&fake);
    let result = login(&fake, &connection).unwrap();
    let identity = &result.identity;
    assert_eq!(identity.subject, "user-1");
    // The ID token's email wins over userinfo's.
    assert_eq!(identity.email.as_deref(), Some("ada@example.com"));
    assert_eq!(identity.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(
        identity.groups,
        Some(vec!["admins".to_owned(), "dev".to_owned()])
    );
    assert_eq!(identity.attributes["department"], vec!["R&D".to_owned()]);
    assert_eq!(identity.attributes["locale"], vec!["en-GB".to_owned()]);
    assert_eq!(identity.attributes["teams"], vec!["core".to_owned()]);
    assert!(!identity.attributes.contains_key("nonce"));
    assert!(!identity.attributes.contains_key("iss"));
    assert_eq!(result.refresh_token.as_deref(), Some(REFRESH));
    assert_eq!(result.id_token_expires_at, Timestamp::from_unix(NOW + 300));
    assert_eq!(fake.calls("GET /jwks"), 1);
    assert_eq!(fake.calls("GET /userinfo"), 1);
    assert_eq!(fake.state.lock().unwrap().client_auth, vec!["basic"]);
    // Secrets never show in Debug.
    let debug = format!("{result:?} {:?}", connection.client());
    assert!(
        !debug.contains(REFRESH) && !debug.contains(SECRET),
        "{debug}"
    );
}

#[test]
fn happy_path_rs256() {
    happy_path(Signer::rs256());
}

#[test]
fn happy_path_es256() {
    happy_path(Signer::es256(7));
}

#[test]
fn happy_path_eddsa() {
    happy_path(Signer::eddsa(9));
}

#[test]
fn the_key_set_is_cached_between_logins() {
    let fake = provider_with(&Signer::eddsa(9), &with(claims(), "exp", json!(NOW + 7200)));
    let connection = Connection::discovered(&fake);
    let keys = keys();
    login_at(&fake, &keys, &connection, None, now()).unwrap();
    login_at(&fake, &keys, &connection, None, now().plus_secs(100)).unwrap();
    assert_eq!(fake.calls("GET /jwks"), 1);
    // Past the TTL it is fetched again; forget drops it at once.
    login_at(&fake, &keys, &connection, None, now().plus_secs(3700)).unwrap();
    assert_eq!(fake.calls("GET /jwks"), 2);
    keys.forget(ISSUER);
    login_at(&fake, &keys, &connection, None, now().plus_secs(3701)).unwrap();
    assert_eq!(fake.calls("GET /jwks"), 3);
}

#[test]
fn authorization_url_carries_pkce_and_openid() {
    let fake = Fake::new(ISSUER, &Signer::eddsa(9));
    let connection = Connection::discovered(&fake);
    let url = authorization_url(&connection.client(), "state-1", NONCE, VERIFIER).unwrap();
    let parsed = openidconnect::url::Url::parse(&url).unwrap();
    assert_eq!(parsed.path(), "/realms/kms/auth");
    let pairs: HashMap<String, String> = parsed.query_pairs().into_owned().collect();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()));
    assert_eq!(pairs["kc"], "1", "the endpoint's own query is kept");
    assert_eq!(pairs["response_type"], "code");
    assert_eq!(pairs["client_id"], CLIENT_ID);
    assert_eq!(pairs["redirect_uri"], REDIRECT);
    assert_eq!(pairs["scope"], "openid email profile");
    assert_eq!(pairs["state"], "state-1");
    assert_eq!(pairs["nonce"], NONCE);
    assert_eq!(pairs["code_challenge"], challenge);
    assert_eq!(pairs["code_challenge_method"], "S256");
    // RFC 7636's example pair.
    assert_eq!(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    // openid is not repeated; bad scopes and verifiers are refused.
    let mut with_openid = Connection::discovered(&fake);
    with_openid.scopes = vec!["openid".to_owned(), "groups".to_owned()];
    let url = authorization_url(&with_openid.client(), "s", NONCE, VERIFIER).unwrap();
    assert!(url.contains("scope=openid+groups&"), "{url}");
    with_openid.scopes = vec!["two words".to_owned()];
    invalid(
        authorization_url(&with_openid.client(), "s", NONCE, VERIFIER),
        "scope",
    );
    invalid(
        authorization_url(&connection.client(), "s", NONCE, "short"),
        "PKCE",
    );
}

// ------------------------------------------------------------------------------------
// Discovery and issuer URLs.

#[test]
fn discovery_issuer_mismatch_is_refused() {
    let fake = Fake::new(ISSUER, &Signer::eddsa(9));
    fake.set(|s| s.discovery["issuer"] = json!("https://evil.example"));
    let err = discover(&fake, ISSUER).unwrap_err();
    let SsoError::Invalid(m) = err else {
        panic!("{err:?}")
    };
    assert!(
        m.contains("https://evil.example") && m.contains(ISSUER),
        "{m}"
    );
    // A trailing slash is a different issuer.
    let fake = Fake::new(ISSUER, &Signer::eddsa(9));
    invalid(discover(&fake, &format!("{ISSUER}/")), "issuer");
}

#[test]
fn discovery_requires_the_endpoints() {
    for missing in ["token_endpoint", "jwks_uri", "authorization_endpoint"] {
        let fake = Fake::new(ISSUER, &Signer::eddsa(9));
        fake.set(|s| {
            s.discovery.as_object_mut().unwrap().remove(missing);
        });
        invalid(discover(&fake, ISSUER), "discovery document");
    }
    let fake = Fake::new(ISSUER, &Signer::eddsa(9));
    fake.set(|s| s.discovery["token_endpoint"] = json!("http://idp.example/token"));
    invalid(discover(&fake, ISSUER), "token endpoint");
    let fake = Fake::new(ISSUER, &Signer::eddsa(9));
    fake.set(|s| s.discovery["id_token_signing_alg_values_supported"] = json!(["HS256"]));
    invalid(discover(&fake, ISSUER), "HS256");
}

#[test]
fn discovery_unreachable_or_failing_is_invalid() {
    let fake = Fake::new(ISSUER, &Signer::eddsa(9));
    fake.set(|s| s.unreachable = true);
    invalid(discover(&fake, ISSUER), "could not be fetched");
    // A 404 (another issuer path).
    let fake = Fake::new(ISSUER, &Signer::eddsa(9));
    invalid(
        discover(&fake, "https://idp.example/realms/other"),
        "could not be fetched",
    );
    // Not JSON, and too large.
    let fake = Fake::new(ISSUER, &Signer::eddsa(9));
    fake.set(|s| s.discovery = json!("x".repeat(2 * 1024 * 1024)));
    invalid(discover(&fake, ISSUER), "could not be fetched");
}

#[test]
fn issuer_urls_need_https_except_on_loopback() {
    invalid(validate_issuer_url("http://idp.example"), "http");
    let fake = Fake::new("http://idp.example", &Signer::eddsa(9));
    invalid(discover(&fake, "http://idp.example"), "http");
    assert_eq!(fake.calls("GET /.well-known/openid-configuration"), 0);
    invalid(validate_issuer_url("https://idp.example/?a=b"), "query");
    invalid(validate_issuer_url("https://idp.example/#x"), "fragment");
    // Loopback over http works end to end.
    for issuer in [
        "http://127.0.0.1:8080",
        "http://localhost:9000/x",
        "http://[::1]:7000",
    ] {
        let signer = Signer::eddsa(9);
        let fake = Fake::new(issuer, &signer);
        let token = signer.mint("k1", &with(claims(), "iss", json!(issuer)));
        fake.set(|s| s.id_token = Some(token));
        let connection = Connection::discovered(&fake);
        login_at(&fake, &keys(), &connection, Some(issuer), now()).unwrap();
    }
}

#[test]
fn algorithm_names_are_checked() {
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(check_algorithms(&names(&["RS256", "EdDSA"])), Ok(()));
    invalid(check_algorithms(&names(&["none"])), "none");
    invalid(check_algorithms(&names(&["RS256", "HS256"])), "HS256");
    invalid(check_algorithms(&names(&["PS256"])), "PS256");
}

// ------------------------------------------------------------------------------------
// The callback's iss (RFC 9207).

#[test]
fn iss_parameter_when_advertised() {
    let fake = provider_with(&Signer::eddsa(9), &claims());
    fake.set(|s| s.discovery["authorization_response_iss_parameter_supported"] = json!(true));
    let connection = Connection::discovered(&fake);
    invalid(login_at(&fake, &keys(), &connection, None, now()), "no iss");
    invalid(
        login_at(
            &fake,
            &keys(),
            &connection,
            Some("https://evil.example"),
            now(),
        ),
        "mix-up",
    );
    // Neither reached the token endpoint.
    assert_eq!(fake.calls("POST /token"), 0);
    login_at(&fake, &keys(), &connection, Some(ISSUER), now()).unwrap();
}

#[test]
fn iss_parameter_when_not_advertised() {
    let fake = provider_with(&Signer::eddsa(9), &claims());
    let connection = Connection::discovered(&fake);
    login_at(&fake, &keys(), &connection, None, now()).unwrap();
    invalid(
        login_at(
            &fake,
            &keys(),
            &connection,
            Some(&format!("{ISSUER}/")),
            now(),
        ),
        "mix-up",
    );
}

// ------------------------------------------------------------------------------------
// Algorithms and signatures.

#[test]
fn alg_none_is_refused_before_any_key_lookup() {
    let fake = Fake::new(ISSUER, &Signer::eddsa(9));
    let header = json!({"alg": "none", "typ": "JWT"});
    fake.set(|s| s.id_token = Some(format!("{}.", signing_input(&header, &claims()))));
    let connection = Connection::discovered(&fake);
    unauthenticated(login(&fake, &connection), "none");
    assert_eq!(fake.calls("GET /jwks"), 0);
}

#[test]
fn hs256_signed_with_the_client_secret_is_refused() {
    let fake = Fake::new(ISSUER, &Signer::eddsa(9));
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let input = signing_input(&header, &claims());
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    let token = format!("{input}.{}", b64(&mac.finalize().into_bytes()));
    fake.set(|s| s.id_token = Some(token));
    let connection = Connection::discovered(&fake);
    unauthenticated(login(&fake, &connection), "HS256");
    assert_eq!(fake.calls("GET /jwks"), 0);
}

#[test]
fn alg_outside_the_allow_list_is_refused() {
    let fake = provider_with(&Signer::rs256(), &claims());
    let mut connection = Connection::discovered(&fake);
    connection.algorithms = vec!["ES256".to_owned(), "EdDSA".to_owned()];
    unauthenticated(login(&fake, &connection), "RS256");
    assert_eq!(fake.calls("GET /jwks"), 0);
    // The default set follows the provider's list.
    let fake = provider_with(&Signer::rs256(), &claims());
    fake.set(|s| s.discovery["id_token_signing_alg_values_supported"] = json!(["ES256"]));
    let connection = Connection::discovered(&fake);
    unauthenticated(login(&fake, &connection), "does not accept");
}

#[test]
fn a_bad_signature_is_refused() {
    let signer = Signer::es256(7);
    let fake = Fake::new(ISSUER, &signer);
    let good = signer.mint("k1", &claims());
    // The signature of other claims over these claims.
    let other = signer.mint("k1", &with(claims(), "sub", json!("user-2")));
    let (input, _) = good.rsplit_once('.').unwrap();
    let (_, signature) = other.rsplit_once('.').unwrap();
    fake.set(|s| s.id_token = Some(format!("{input}.{signature}")));
    let connection = Connection::discovered(&fake);
    unauthenticated(login(&fake, &connection), "signature");
    // Signed by another key under the provider's kid.
    let fake = Fake::new(ISSUER, &signer);
    let token = Signer::es256(8).mint("k1", &claims());
    fake.set(|s| s.id_token = Some(token));
    let connection = Connection::discovered(&fake);
    unauthenticated(login(&fake, &connection), "signature");
}

// ------------------------------------------------------------------------------------
// Claims.

#[test]
fn wrong_audience_is_refused() {
    let fake = provider_with(
        &Signer::eddsa(9),
        &with(claims(), "aud", json!("other-app")),
    );
    let connection = Connection::discovered(&fake);
    unauthenticated(login(&fake, &connection), "not for this client");
}

#[test]
fn wrong_issuer_in_the_token_is_refused() {
    let fake = provider_with(
        &Signer::eddsa(9),
        &with(claims(), "iss", json!("https://evil.example")),
    );
    let connection = Connection::discovered(&fake);
    unauthenticated(login(&fake, &connection), "issuer");
}

#[test]
fn azp_must_be_this_client() {
    let fake = provider_with(
        &Signer::eddsa(9),
        &with(claims(), "azp", json!("other-app")),
    );
    let connection = Connection::discovered(&fake);
    unauthenticated(login(&fake, &connection), "azp");
    let fake = provider_with(&Signer::eddsa(9), &with(claims(), "azp", json!(CLIENT_ID)));
    let connection = Connection::discovered(&fake);
    login(&fake, &connection).unwrap();
}

#[test]
fn several_audiences_need_azp() {
    let several = with(claims(), "aud", json!([CLIENT_ID, "other-app"]));
    let fake = provider_with(&Signer::eddsa(9), &several);
    let connection = Connection::discovered(&fake);
    unauthenticated(login(&fake, &connection), "several audiences");
    let fake = provider_with(&Signer::eddsa(9), &with(several, "azp", json!(CLIENT_ID)));
    let connection = Connection::discovered(&fake);
    login(&fake, &connection).unwrap();
}

#[test]
fn expiry_and_issue_time_with_leeway() {
    for (exp, ok) in [(NOW - 61, false), (NOW - 60, false), (NOW - 30, true)] {
        let fake = provider_with(&Signer::eddsa(9), &with(claims(), "exp", json!(exp)));
        let connection = Connection::discovered(&fake);
        let result = login(&fake, &connection);
        if ok {
            assert!(result.is_ok(), "exp {exp}: {result:?}");
        } else {
            unauthenticated(result, "expired");
        }
    }
    for (iat, ok) in [(NOW + 61, false), (NOW + 59, true)] {
        let fake = provider_with(&Signer::eddsa(9), &with(claims(), "iat", json!(iat)));
        let connection = Connection::discovered(&fake);
        let result = login(&fake, &connection);
        if ok {
            assert!(result.is_ok(), "iat {iat}: {result:?}");
        } else {
            unauthenticated(result, "future");
        }
    }
}

#[test]
fn wrong_or_missing_nonce_is_refused() {
    let fake = provider_with(&Signer::eddsa(9), &with(claims(), "nonce", json!("other")));
    let connection = Connection::discovered(&fake);
    unauthenticated(login(&fake, &connection), "nonce");
    let fake = provider_with(&Signer::eddsa(9), &without(claims(), "nonce"));
    let connection = Connection::discovered(&fake);
    unauthenticated(login(&fake, &connection), "nonce");
}

#[test]
fn a_malformed_id_token_is_refused() {
    for token in ["", "a.b", "a.b.c", "eyJhbGciOiJYWVoifQ.e30.c2ln"] {
        let fake = Fake::new(ISSUER, &Signer::eddsa(9));
        fake.set(|s| s.id_token = Some(token.to_owned()));
        let connection = Connection::discovered(&fake);
        unauthenticated(login(&fake, &connection), "malformed");
    }
    // No ID token at all.
    let fake = Fake::new(ISSUER, &Signer::eddsa(9));
    let connection = Connection::discovered(&fake);
    unauthenticated(login(&fake, &connection), "no ID token");
    // Missing iat.
    let fake = provider_with(&Signer::eddsa(9), &without(claims(), "iat"));
    let connection = Connection::discovered(&fake);
    unauthenticated(login(&fake, &connection), "iat");
}

// ------------------------------------------------------------------------------------
// Key rotation.

#[test]
fn an_unknown_kid_refetches_once_per_cooldown() {
    let old = Signer::es256(7);
    let new = Signer::eddsa(9);
    let fake = Fake::new(ISSUER, &old);
    fake.set(|s| s.id_token = Some(old.mint("k1", &claims())));
    let connection = Connection::discovered(&fake);
    let keys = keys();
    login_at(&fake, &keys, &connection, None, now()).unwrap();
    assert_eq!(fake.calls("GET /jwks"), 1);

    // The provider rotates to k2; a token with k2 refetches once and passes.
    fake.set(|s| {
        s.jwks = json!({"keys": [old.jwk("k1"), new.jwk("k2")]});
        s.id_token = Some(new.mint("k2", &claims()));
    });
    login_at(&fake, &keys, &connection, None, now().plus_secs(10)).unwrap();
    assert_eq!(fake.calls("GET /jwks"), 2);
    // Then it is cached.
    login_at(&fake, &keys, &connection, None, now().plus_secs(11)).unwrap();
    assert_eq!(fake.calls("GET /jwks"), 2);

    // An unknown kid again within the cooldown: no fetch.
    fake.set(|s| s.id_token = Some(new.mint("k3", &claims())));
    unauthenticated(
        login_at(&fake, &keys, &connection, None, now().plus_secs(20)),
        "unknown kid",
    );
    unauthenticated(
        login_at(&fake, &keys, &connection, None, now().plus_secs(69)),
        "unknown kid",
    );
    assert_eq!(fake.calls("GET /jwks"), 2);
    // After the cooldown: one more fetch.
    unauthenticated(
        login_at(&fake, &keys, &connection, None, now().plus_secs(71)),
        "unknown kid",
    );
    assert_eq!(fake.calls("GET /jwks"), 3);
}

#[test]
fn an_unreachable_key_set_is_unavailable() {
    let fake = provider_with(&Signer::eddsa(9), &claims());
    fake.set(|s| s.jwks = json!("x".repeat(2 * 1024 * 1024)));
    let connection = Connection::discovered(&fake);
    assert!(
        matches!(login(&fake, &connection), Err(SsoError::Unavailable(m)) if m.contains("key set")),
    );
}

// ------------------------------------------------------------------------------------
// The token endpoint.

#[test]
fn token_endpoint_refusals_and_failures() {
    let fake = provider_with(&Signer::eddsa(9), &claims());
    let connection = Connection::discovered(&fake);
    // A replayed or expired code: the provider's invalid_grant.
    let result = finish_login(
        &fake,
        &keys(),
        &connection.client(),
        &Callback {
            code: "replayed-code",
            iss: None,
        },
        &Expected {
            nonce: NONCE,
            pkce_verifier: VERIFIER,
        },
        now(),
    );
    unauthenticated(result, "invalid_grant");
    // A wrong PKCE verifier is refused by the provider the same way.
    let result = finish_login(
        &fake,
        &keys(),
        &connection.client(),
        &Callback {
            code: CODE,
            iss: None,
        },
        &Expected {
            nonce: NONCE,
            pkce_verifier: "another-verifier-another-verifier-0123456789",
        },
        now(),
    );
    unauthenticated(result, "invalid_grant");
    // 5xx and an unreachable provider are Unavailable.
    fake.set(|s| {
        s.token_answer = Some(json_answer(
            503,
            &json!({"error": "temporarily_unavailable"}),
        ))
    });
    assert!(matches!(
        login(&fake, &connection),
        Err(SsoError::Unavailable(_))
    ));
    fake.set(|s| {
        s.token_answer = Some(Answer {
            status: 502,
            content_type: "text/html",
            body: b"<html>bad gateway</html>".to_vec(),
        })
    });
    assert!(matches!(
        login(&fake, &connection),
        Err(SsoError::Unavailable(_))
    ));
    fake.set(|s| s.unreachable = true);
    assert!(matches!(
        login(&fake, &connection),
        Err(SsoError::Unavailable(_))
    ));
    fake.set(|s| s.unreachable = false);
    // Not a token response, a huge one.
    fake.set(|s| s.token_answer = Some(json_answer(200, &json!({"token_type": "Bearer"}))));
    unauthenticated(login(&fake, &connection), "not a valid token response");
    fake.set(|s| s.token_answer = Some(json_answer(200, &json!("x".repeat(2 << 20)))));
    assert!(
        matches!(login(&fake, &connection), Err(SsoError::Unavailable(m)) if m.contains("larger"))
    );
    // A refusal that is not JSON.
    fake.set(|s| {
        s.token_answer = Some(Answer {
            status: 400,
            content_type: "text/plain",
            body: format!("bad code {CODE}").into_bytes(),
        })
    });
    unauthenticated(login(&fake, &connection), "refused");
}

#[test]
fn client_authentication_methods() {
    // Only client_secret_post listed: the secret goes in the body.
    let fake = provider_with(&Signer::eddsa(9), &claims());
    fake.set(|s| {
        s.discovery["token_endpoint_auth_methods_supported"] = json!(["client_secret_post"])
    });
    let connection = Connection::discovered(&fake);
    login(&fake, &connection).unwrap();
    // A public client sends its id only.
    let mut public = Connection::discovered(&fake);
    public.secret = None;
    login(&fake, &public).unwrap();
    // Methods omitted: client_secret_basic.
    fake.set(|s| {
        s.discovery
            .as_object_mut()
            .unwrap()
            .remove("token_endpoint_auth_methods_supported");
    });
    let basic = Connection::discovered(&fake);
    login(&fake, &basic).unwrap();
    assert_eq!(
        fake.state.lock().unwrap().client_auth,
        vec!["post", "none", "basic"]
    );
    // A wrong secret: invalid_client, without the secret in the message.
    let mut wrong = Connection::discovered(&fake);
    wrong.secret = Some("wrong-secret".to_owned());
    unauthenticated(login(&fake, &wrong), "invalid_client");
}

// ------------------------------------------------------------------------------------
// Userinfo and claims.

#[test]
fn userinfo_sub_must_match() {
    let fake = provider_with(&Signer::eddsa(9), &claims());
    fake.set(|s| s.userinfo["sub"] = json!("user-2"));
    let connection = Connection::discovered(&fake);
    unauthenticated(login(&fake, &connection), "userinfo sub");
}

#[test]
fn userinfo_failures() {
    let fake = provider_with(&Signer::eddsa(9), &claims());
    let connection = Connection::discovered(&fake);
    fake.set(|s| s.userinfo_answer = Some(json_answer(500, &json!({}))));
    assert!(matches!(
        login(&fake, &connection),
        Err(SsoError::Unavailable(_))
    ));
    fake.set(|s| {
        s.userinfo_answer = Some(json_answer(403, &json!({"error": "insufficient_scope"})))
    });
    unauthenticated(login(&fake, &connection), "userinfo");
    fake.set(|s| s.userinfo_answer = Some(json_answer(200, &json!(["not", "an", "object"]))));
    unauthenticated(login(&fake, &connection), "userinfo");
    // Without a userinfo endpoint only the ID token counts.
    fake.set(|s| {
        s.discovery
            .as_object_mut()
            .unwrap()
            .remove("userinfo_endpoint");
    });
    let connection = Connection::discovered(&fake);
    let identity = login(&fake, &connection).unwrap().identity;
    assert!(!identity.attributes.contains_key("locale"));
    assert_eq!(fake.calls("GET /userinfo"), 3);
}

#[test]
fn groups_absent_empty_string_or_from_userinfo() {
    let groups = |id_groups: Option<Value>, userinfo_groups: Option<Value>| {
        let claims = match id_groups {
            Some(g) => with(claims(), "groups", g),
            None => without(claims(), "groups"),
        };
        let fake = provider_with(&Signer::eddsa(9), &claims);
        if let Some(g) = userinfo_groups {
            fake.set(|s| s.userinfo["groups"] = g);
        }
        let connection = Connection::discovered(&fake);
        login(&fake, &connection).unwrap().identity.groups
    };
    assert_eq!(groups(None, None), None);
    assert_eq!(groups(Some(json!([])), None), Some(vec![]));
    assert_eq!(
        groups(Some(json!("admins")), None),
        Some(vec!["admins".to_owned()])
    );
    assert_eq!(
        groups(Some(json!(["a", "b"])), Some(json!(["c"]))),
        Some(vec!["a".to_owned(), "b".to_owned()])
    );
    assert_eq!(groups(None, Some(json!(["c"]))), Some(vec!["c".to_owned()]));
    // A connection without a groups claim never reports groups.
    let fake = provider_with(&Signer::eddsa(9), &claims());
    let mut connection = Connection::discovered(&fake);
    connection.groups_claim = None;
    assert_eq!(login(&fake, &connection).unwrap().identity.groups, None);
}

#[test]
fn name_falls_back_to_preferred_username() {
    let claims = with(
        without(claims(), "name"),
        "preferred_username",
        json!("ada"),
    );
    let fake = provider_with(&Signer::eddsa(9), &claims);
    let connection = Connection::discovered(&fake);
    assert_eq!(
        login(&fake, &connection).unwrap().identity.name.as_deref(),
        Some("ada")
    );
}

// ------------------------------------------------------------------------------------
// Revalidation.

fn revalidate_now(
    fake: &Fake,
    connection: &Connection,
    token: &str,
) -> Result<kms_core::sso::oidc::Revalidated, SsoError> {
    let result = revalidate(fake, &keys(), &connection.client(), token, "user-1", now());
    if let Err(e) = &result {
        assert_no_secret(e);
    }
    result
}

#[test]
fn revalidate_ok() {
    let signer = Signer::eddsa(9);
    let fake = Fake::new(ISSUER, &signer);
    let connection = Connection::discovered(&fake);
    // Without a new ID token: userinfo alone.
    let result = revalidate_now(&fake, &connection, REFRESH).unwrap();
    assert_eq!(result.identity.subject, "user-1");
    assert_eq!(
        result.identity.email.as_deref(),
        Some("ada@userinfo.example")
    );
    assert_eq!(result.refresh_token, None);
    assert_eq!(fake.calls("GET /jwks"), 1);
    // With a new ID token (no nonce) and a rotated refresh token.
    fake.set(|s| {
        s.refresh_id_token = Some(signer.mint("k1", &without(claims(), "nonce")));
        s.rotated_refresh = Some("refresh-token-2".to_owned());
    });
    let result = revalidate_now(&fake, &connection, REFRESH).unwrap();
    assert_eq!(result.identity.email.as_deref(), Some("ada@example.com"));
    assert_eq!(
        result.identity.groups,
        Some(vec!["admins".to_owned(), "dev".to_owned()])
    );
    assert_eq!(result.refresh_token.as_deref(), Some("refresh-token-2"));
}

#[test]
fn revalidate_refused() {
    let signer = Signer::eddsa(9);
    let fake = Fake::new(ISSUER, &signer);
    let connection = Connection::discovered(&fake);
    // The provider refuses the refresh token.
    let result = revalidate_now(&fake, &connection, "revoked-refresh-token");
    assert!(
        matches!(&result, Err(SsoError::Unauthenticated(m)) if m.contains("invalid_grant")),
        "{result:?}"
    );
    // 5xx and unreachable: Unavailable.
    fake.set(|s| s.token_answer = Some(json_answer(500, &json!({"error": "server_error"}))));
    assert!(matches!(
        revalidate_now(&fake, &connection, REFRESH),
        Err(SsoError::Unavailable(_))
    ));
    fake.set(|s| s.unreachable = true);
    assert!(matches!(
        revalidate_now(&fake, &connection, REFRESH),
        Err(SsoError::Unavailable(_))
    ));
    fake.set(|s| s.unreachable = false);
    // A new ID token for another subject, or a bad one.
    fake.set(|s| {
        s.refresh_id_token = Some(signer.mint("k1", &with(claims(), "sub", json!("user-2"))))
    });
    let result = revalidate_now(&fake, &connection, REFRESH);
    assert!(
        matches!(&result, Err(SsoError::Unauthenticated(m)) if m.contains("user-2")),
        "{result:?}"
    );
    fake.set(|s| {
        s.refresh_id_token = Some(signer.mint("k1", &with(claims(), "exp", json!(NOW - 100))))
    });
    assert!(matches!(
        revalidate_now(&fake, &connection, REFRESH),
        Err(SsoError::Unauthenticated(_))
    ));
    // Userinfo for another subject.
    fake.set(|s| {
        s.refresh_id_token = None;
        s.userinfo["sub"] = json!("user-2");
    });
    assert!(matches!(
        revalidate_now(&fake, &connection, REFRESH),
        Err(SsoError::Unauthenticated(m)) if m.contains("userinfo sub")
    ));
}

#[test]
fn the_key_set_cache_is_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<KeySetCache>();
    let fake = provider_with(&Signer::eddsa(9), &claims());
    let connection = Connection::discovered(&fake);
    let keys = keys();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| login_at(&fake, &keys, &connection, None, now()).unwrap());
        }
    });
    // Racing first logins may each fetch; later ones use the cache.
    let fetched = fake.calls("GET /jwks");
    assert!((1..=4).contains(&fetched), "{fetched}");
    login_at(&fake, &keys, &connection, None, now().plus_secs(1)).unwrap();
    assert_eq!(fake.calls("GET /jwks"), fetched);
}
