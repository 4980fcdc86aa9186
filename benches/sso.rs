//! Criterion benchmarks of single sign-on (issue 15): the time kms itself spends on an
//! OpenID Connect login (and, for comparison, a SAML one), without network round trips.
//! Results and the command that produced them are in `docs/PERFORMANCE.md` ("Users and
//! sessions").
//!
//! ```text
//! cargo bench -p kms-benches --bench sso -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! The provider is [`FakeProvider`], an in-memory `kms_core::sso::HttpTransport` that
//! answers as one would: a discovery document, a JWKS with one Ed25519 key (an OKP JWK),
//! a token endpoint returning an EdDSA-signed ID token with the nonce of the login being
//! finished (and a refresh token), and for one of the two connections a userinfo endpoint.
//! The Kms runs over a `kms_store::MemoryStore` with a master key (client secret and PKCE
//! verifier are sealed) and cheap argon2id parameters (no login hashes a secret).
//!
//! **The ID tokens are signed in setup, never in a timed routine**: the setup of each
//! callback starts the login, reads `state` and `nonce` from the returned location, signs
//! the ID token for that nonce and files the token endpoint's whole answer under a fresh
//! authorization code. The token endpoint then only looks the answer up by the code it
//! is sent. What is left of the provider inside a timed callback (a lock, a map lookup, the
//! response's allocation and for userinfo a ready body) is measured alone as
//! `fake_provider_alone/…`; subtract it to get kms's own share. The key set is fetched
//! once and then cached by kms (an hour), as in production; discovery happens when the
//! connection is created.
//!
//! Group `sso_callback`:
//! - `login_start`: `Kms::sso_login` (state, browser binding, nonce and PKCE verifier from
//!   the OS CSPRNG, the sealed verifier, the authorization URL, the attempt stored). Timed
//!   per call; after each call, untimed, the attempt is consumed by a refused callback, so
//!   pending attempts do not pile up (a start once purged expired attempts, scanning every
//!   pending one in the memory store; now the maintenance sweep does).
//! - `login_start_10000_pending`: the same with 10,000 unfinished logins pending.
//! - `callback`: `Kms::sso_oidc_callback` of a returning user (the login started and the
//!   ID token signed in setup): the attempt checked and consumed, the code exchanged, the
//!   ID token verified (EdDSA), the user updated with mapped roles, a session started with
//!   the sealed upstream refresh token, the audit event chained.
//! - `callback_with_userinfo`: the same through a connection whose provider has a
//!   userinfo endpoint (one more request, its claims merged).
//! - `ed25519_verify_floor`: a bare Ed25519 verify of an ID token of the same provider,
//!   the least any ID-token verification can cost.
//! - `fake_provider_alone/token_endpoint` and `…/userinfo`: the fake's answers alone.
//!
//! Under `cargo bench` each group also prints its ratio to the floor from alternating
//! calls (`... (interleaved): ...`, as `benches/core.rs` does): one untimed setup, one
//! timed login step, one timed floor call, round after round, so that load from other
//! processes falls on both alike.
//!
//! Group `saml_acs`, the SAML counterpart (a connection over IdP metadata with the
//! RSA-2048 test certificate of `kms-core/tests/fixtures/saml`):
//! - `login_start`: `Kms::sso_login` of the SAML connection (the deflated `AuthnRequest`
//!   in the redirect URL), timed as the OIDC one (each attempt consumed after it, untimed).
//! - `acs`: `Kms::sso_saml_acs` of a returning user. The setup starts the login, reads
//!   `RelayState` and the request's `ID` from the location (inflating the request, as an
//!   IdP does) and signs a response to it (assertion signed, RSA-SHA256, saml-rs's
//!   signer), so no signing is timed: the response parsed and checked, the XML signature
//!   verified, the assertion's id claimed against replay, the user and a session stored.
//! - `rsa_sha256_verify_floor`: a bare RSA-2048 PKCS#1 v1.5 SHA-256 verify with the IdP's
//!   key, the least any check of the assertion's signature can cost.

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::hint::black_box;
use std::io::Read as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use criterion::{BatchSize, Criterion};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use kms_benches::{full_run, Interleaved, SetupResult};
use kms_core::sso::{HttpRequest, HttpResponse, HttpTransport, TransportError};
use kms_core::{
    BrowserContext, Kms, LockoutPolicy, MasterKey, NewApp, NewIdp, NewRole, OidcCallback, OsRandom,
    PermissionQuery, SsoConfig, VerifyCode,
};
use kms_store::MemoryStore;
use serde_json::json;

/// Where the fake provider lives; the connection without userinfo.
const ISSUER: &str = "https://idp.bench.example/realms/plain";
/// The connection whose provider also has a userinfo endpoint.
const ISSUER_USERINFO: &str = "https://idp.bench.example/realms/userinfo";
const CLIENT_ID: &str = "kms-bench";
const CLIENT_SECRET: &str = "bench-client-secret-0123456789";
const ACCESS_TOKEN: &str = "bench-access-token";
const SLUG: &str = "bench-oidc";
const SLUG_USERINFO: &str = "bench-oidc-userinfo";
const ROLE: &str = "bench-support";
const SLUG_SAML: &str = "bench-saml";
const SAML_IDP_ENTITY: &str = "https://idp.bench.example/saml/metadata";
const SAML_IDP_SSO: &str = "https://idp.bench.example/saml/sso";
const SAML_KEY: &str = include_str!("../kms-core/tests/fixtures/saml/idp-key.pem");
const SAML_CERT: &str = include_str!("../kms-core/tests/fixtures/saml/idp-cert.pem");
const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

fn main() -> Result<(), Box<dyn Error>> {
    let mut c = Criterion::default().configure_from_args();
    sso_callback(&mut c)?;
    saml_acs(&mut c)?;
    c.final_summary();
    Ok(())
}

/// Alternates `rounds` calls of `a`, each on a fresh `prepare()` made untimed, with calls
/// of `b`; per-call fastest and median times of both. Each `a` that `failed` is counted in
/// `failures`.
fn interleaved_with_setup<P, A, B>(
    rounds: usize,
    failures: &mut u64,
    mut prepare: impl FnMut() -> P,
    mut a: impl FnMut(P) -> A,
    failed: impl Fn(&A) -> bool,
    mut b: impl FnMut() -> B,
) -> Interleaved {
    let mut ta = Vec::with_capacity(rounds);
    let mut tb = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        let input = prepare();
        let start = Instant::now();
        let out = black_box(a(input));
        ta.push(start.elapsed());
        if failed(&out) {
            *failures += 1;
        }
        drop(out);
        let start = Instant::now();
        black_box(b());
        tb.push(start.elapsed());
    }
    ta.sort_unstable();
    tb.sort_unstable();
    Interleaved {
        a_min: ta[0],
        a_median: ta[ta.len() / 2],
        b_min: tb[0],
        b_median: tb[tb.len() / 2],
    }
}

/// Prints a ratio measured by alternating calls, under the criterion output.
fn report(what: &str, r: Interleaved) {
    let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
    println!(
        "{what} (interleaved): {} / {} = {:.3} (fastest samples), {} / {} = {:.3} (medians)",
        us(r.a_min),
        us(r.b_min),
        r.ratio_of_minimums(),
        us(r.a_median),
        us(r.b_median),
        r.ratio_of_medians(),
    );
}

// ------------------------------------------------------------------------------------
// The fake provider.

/// One issuer the fake answers for, with its answers serialized once.
#[derive(Debug)]
struct Realm {
    issuer: &'static str,
    discovery: Vec<u8>,
    jwks: Vec<u8>,
    /// The userinfo answer, when this realm has the endpoint.
    userinfo: Option<Vec<u8>>,
}

/// An in-memory OpenID Connect provider: answers discovery, JWKS, token and userinfo
/// requests for [`ISSUER`] and [`ISSUER_USERINFO`]; token-endpoint answers are prepared
/// (and their ID tokens signed) by [`FakeProvider::prepare`], outside the timed code.
#[derive(Debug)]
struct FakeProvider {
    realms: Vec<Realm>,
    signing: SigningKey,
    /// Token-endpoint answers by authorization code, each used once.
    answers: Mutex<HashMap<String, Vec<u8>>>,
    codes: AtomicU64,
    /// Requests the fake could not answer (unknown path, unknown code, bad bearer).
    refused: AtomicU64,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unix_now() -> SetupResult<i64> {
    Ok(i64::try_from(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
    )?)
}

impl FakeProvider {
    fn new() -> SetupResult<Self> {
        let signing = SigningKey::from_bytes(&[42u8; 32]);
        let jwks = json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "kid": "bench-1", "use": "sig", "alg": "EdDSA",
            "x": b64(signing.verifying_key().as_bytes()),
        }]});
        let realm = |issuer: &'static str, userinfo: bool| -> SetupResult<Realm> {
            let mut discovery = json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/protocol/openid-connect/auth"),
                "token_endpoint": format!("{issuer}/protocol/openid-connect/token"),
                "jwks_uri": format!("{issuer}/protocol/openid-connect/certs"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["EdDSA"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "code_challenge_methods_supported": ["S256"],
                "authorization_response_iss_parameter_supported": true,
            });
            let userinfo = if userinfo {
                discovery["userinfo_endpoint"] =
                    json!(format!("{issuer}/protocol/openid-connect/userinfo"));
                Some(serde_json::to_vec(&json!({
                    "sub": "user-ada", "email": "ada@bench.example",
                    "preferred_username": "ada", "locale": "en-GB",
                }))?)
            } else {
                None
            };
            Ok(Realm {
                issuer,
                discovery: serde_json::to_vec(&discovery)?,
                jwks: serde_json::to_vec(&jwks)?,
                userinfo,
            })
        };
        Ok(FakeProvider {
            realms: vec![realm(ISSUER, false)?, realm(ISSUER_USERINFO, true)?],
            signing,
            answers: Mutex::new(HashMap::new()),
            codes: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    fn answers(&self) -> MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An EdDSA-signed ID token from `issuer` carrying `nonce`.
    fn id_token(&self, issuer: &str, nonce: &str) -> SetupResult<String> {
        let now = unix_now()?;
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": "bench-1"});
        let claims = json!({
            "iss": issuer, "sub": "user-ada", "aud": CLIENT_ID, "azp": CLIENT_ID,
            "exp": now + 300, "iat": now, "auth_time": now, "nonce": nonce,
            "email": "ada@bench.example", "email_verified": true, "name": "Ada Lovelace",
            "groups": ["staff", "dev"],
        });
        let input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header)?),
            b64(&serde_json::to_vec(&claims)?)
        );
        let signature = self.signing.sign(input.as_bytes());
        Ok(format!("{input}.{}", b64(&signature.to_bytes())))
    }

    /// Signs an ID token for `nonce` and files the token endpoint's answer under a new
    /// authorization code, which it returns.
    fn prepare(&self, issuer: &str, nonce: &str) -> SetupResult<String> {
        let id_token = self.id_token(issuer, nonce)?;
        let answer = serde_json::to_vec(&json!({
            "access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 300,
            "refresh_token": "bench-upstream-refresh-token", "id_token": id_token,
        }))?;
        let code = format!("code-{}", self.codes.fetch_add(1, Ordering::Relaxed));
        self.answers().insert(code.clone(), answer);
        Ok(code)
    }

    fn refuse(&self, status: u16) -> Result<HttpResponse, TransportError> {
        self.refused.fetch_add(1, Ordering::Relaxed);
        respond(status, br#"{"error":"invalid_request"}"#.to_vec())
    }
}

fn respond(status: u16, body: Vec<u8>) -> Result<HttpResponse, TransportError> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body)
        .map_err(|e| TransportError(e.to_string()))
}

/// The value of `name` in a query or form string (`a=1&b=2`), undecoded: kms's states,
/// nonces and the fake's codes are URL-safe as they are.
fn form_value<'a>(form: &'a str, name: &str) -> Option<&'a str> {
    form.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl HttpTransport for FakeProvider {
    fn call(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let uri = request.uri().to_string();
        let Some((realm, path)) = self
            .realms
            .iter()
            .find_map(|r| uri.strip_prefix(r.issuer).map(|p| (r, p)))
        else {
            return self.refuse(404);
        };
        let path = path.split('?').next().unwrap_or_default();
        match (request.method().as_str(), path) {
            ("GET", "/.well-known/openid-configuration") => respond(200, realm.discovery.clone()),
            ("GET", "/protocol/openid-connect/certs") => respond(200, realm.jwks.clone()),
            ("POST", "/protocol/openid-connect/token") => {
                let form = std::str::from_utf8(request.body()).unwrap_or_default();
                let answer = form_value(form, "code").and_then(|code| self.answers().remove(code));
                match answer {
                    Some(body) => respond(200, body),
                    None => self.refuse(400),
                }
            }
            ("GET", "/protocol/openid-connect/userinfo") => {
                let bearer = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                match (&realm.userinfo, bearer) {
                    (Some(body), Some(ACCESS_TOKEN)) => respond(200, body.clone()),
                    _ => self.refuse(401),
                }
            }
            _ => self.refuse(404),
        }
    }
}

// ------------------------------------------------------------------------------------
// The service.

/// A Kms with single sign-on through [`FakeProvider`]: one application, a role, and two
/// OIDC connections (with and without userinfo) mapping the group `staff` to the role.
struct SsoKms {
    kms: Kms,
    provider: Arc<FakeProvider>,
    /// Numbers the SAML assertions (each id is accepted once).
    assertions: AtomicU64,
}

/// One callback ready to be sent: what the browser brings back to kms.
struct ReadyCallback {
    callback: OidcCallback,
    browser: BrowserContext,
}

impl SsoKms {
    fn new() -> SetupResult<SsoKms> {
        let provider = Arc::new(FakeProvider::new()?);
        let store = Arc::new(MemoryStore::new());
        let kms = Kms::builder(store)
            .hash_params(kms_core::dangerous::insecure_hash_params())
            .master_key(MasterKey::generate(&OsRandom)?)
            .lockout_policy(LockoutPolicy {
                threshold: 0,
                ..LockoutPolicy::default()
            })
            .sso(SsoConfig {
                transport: provider.clone(),
                public_url: "https://kms.bench.example".to_owned(),
            })
            .build()?;
        kms.initialize()?;
        let operator = kms.operator();
        let app_id = kms
            .create_app(
                &operator,
                NewApp {
                    name: "bench".to_owned(),
                    ..Default::default()
                },
            )?
            .id;
        kms.create_role(
            &operator,
            NewRole {
                name: ROLE.to_owned(),
                permissions: vec!["app.read".to_owned(), "token.read".to_owned()],
                ..Default::default()
            },
        )?;
        for (slug, issuer) in [(SLUG, ISSUER), (SLUG_USERINFO, ISSUER_USERINFO)] {
            kms.create_idp(
                &operator,
                &app_id,
                NewIdp {
                    slug: slug.to_owned(),
                    kind: "oidc".to_owned(),
                    issuer: Some(issuer.to_owned()),
                    client_id: Some(CLIENT_ID.to_owned()),
                    client_secret: Some(CLIENT_SECRET.to_owned()),
                    groups_claim: Some("groups".to_owned()),
                    role_map: Some(BTreeMap::from([(
                        "staff".to_owned(),
                        vec![ROLE.to_owned()],
                    )])),
                    ..Default::default()
                },
            )?;
        }
        kms.create_idp(
            &operator,
            &app_id,
            NewIdp {
                slug: SLUG_SAML.to_owned(),
                kind: "saml".to_owned(),
                idp_metadata_xml: Some(saml_idp_metadata()),
                groups_attribute: Some("groups".to_owned()),
                role_map: Some(BTreeMap::from([(
                    "staff".to_owned(),
                    vec![ROLE.to_owned()],
                )])),
                ..Default::default()
            },
        )?;
        Ok(SsoKms {
            kms,
            provider,
            assertions: AtomicU64::new(0),
        })
    }

    /// Starts a login through `slug` and prepares the provider's answer to it: the
    /// callback the browser would then bring back.
    fn start(&self, slug: &str, issuer: &str) -> SetupResult<ReadyCallback> {
        let login = self.kms.sso_login(slug, None)?;
        let query = login
            .location
            .split_once('?')
            .map(|(_, q)| q)
            .ok_or("the login location has no query")?;
        let state = form_value(query, "state").ok_or("the login location has no state")?;
        let nonce = form_value(query, "nonce").ok_or("the login location has no nonce")?;
        let code = self.provider.prepare(issuer, nonce)?;
        Ok(ReadyCallback {
            callback: OidcCallback {
                code: Some(code),
                state: Some(state.to_owned()),
                iss: Some(issuer.to_owned()),
                error: None,
            },
            browser: BrowserContext {
                binding: Some(login.browser_binding),
                ip: None,
                user_agent: Some("criterion".to_owned()),
            },
        })
    }

    /// Starts a SAML login and signs the IdP's response to it: the base64 `SAMLResponse`
    /// and the `RelayState` the browser then posts, and its binding cookie.
    fn start_saml(&self) -> SetupResult<(String, String, BrowserContext)> {
        let login = self.kms.sso_login(SLUG_SAML, None)?;
        let query = login
            .location
            .split_once('?')
            .map(|(_, q)| q)
            .ok_or("the SAML login location has no query")?;
        let relay = percent_decode(form_value(query, "RelayState").ok_or("no RelayState")?)?;
        let request = percent_decode(form_value(query, "SAMLRequest").ok_or("no SAMLRequest")?)?;
        let mut xml = String::new();
        flate2::read::DeflateDecoder::new(&STANDARD.decode(request)?[..])
            .read_to_string(&mut xml)?;
        let request_id = xml
            .split_once(" ID=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(id, _)| id)
            .ok_or("the AuthnRequest has no ID")?;
        let n = self.assertions.fetch_add(1, Ordering::Relaxed);
        let response = saml_response(request_id, &format!("_bench-assertion-{n}"))?;
        Ok((
            STANDARD.encode(response),
            relay,
            BrowserContext {
                binding: Some(login.browser_binding),
                ip: None,
                user_agent: Some("criterion".to_owned()),
            },
        ))
    }

    /// Ends the login of `location` (untimed) with the provider's refusal, which consumes
    /// its attempt; the refusal must be the answer.
    fn refuse(&self, slug: &str, location: &str, binding: &str) -> bool {
        let name = if slug == SLUG_SAML {
            "RelayState"
        } else {
            "state"
        };
        let state = location
            .split_once('?')
            .and_then(|(_, q)| form_value(q, name))
            .map(str::to_owned);
        let browser = BrowserContext {
            binding: Some(binding.to_owned()),
            ..BrowserContext::default()
        };
        if slug == SLUG_SAML {
            // Not a SAML response at all: refused after the attempt was consumed.
            let relay = state.as_deref().and_then(|s| percent_decode(s).ok());
            return self
                .kms
                .sso_saml_acs(slug, "bm90IGEgcmVzcG9uc2U=", relay.as_deref(), &browser)
                .is_err();
        }
        let refused = OidcCallback {
            state,
            error: Some("access_denied".to_owned()),
            ..OidcCallback::default()
        };
        self.kms
            .sso_oidc_callback(slug, &refused, &browser)
            .is_err()
    }

    /// Times `iters` login starts through `slug`, consuming each attempt after it (untimed);
    /// counts any failure in `failures`.
    fn time_login_starts(&self, slug: &str, iters: u64, failures: &mut u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let start = Instant::now();
            let login = self.kms.sso_login(black_box(slug), None);
            total += start.elapsed();
            match login {
                Ok(l) if self.refuse(slug, &l.location, &l.browser_binding) => {}
                _ => *failures += 1,
            }
        }
        total
    }
}

// ------------------------------------------------------------------------------------
// The group.

fn sso_callback(c: &mut Criterion) -> SetupResult<()> {
    let env = SsoKms::new()?;
    let kms = &env.kms;

    // One whole login per connection, checked: the session verifies with the mapped role.
    let query = PermissionQuery::parse("token.read AND app.read")?;
    for (slug, issuer) in [(SLUG, ISSUER), (SLUG_USERINFO, ISSUER_USERINFO)] {
        let ready = env.start(slug, issuer)?;
        let done = kms.sso_oidc_callback(slug, &ready.callback, &ready.browser)?;
        if kms
            .verify_token(&done.session.token, Some(&query), None)?
            .code()
            != VerifyCode::Valid
        {
            return Err(format!("the session of a login through {slug} does not verify").into());
        }
    }
    let mut failures = 0u64;
    env.time_login_starts(SLUG, 3, &mut failures);
    if failures != 0 {
        return Err("a login start or its refusal did not answer as expected".into());
    }

    // The floor: a bare Ed25519 verify of an ID token of this provider.
    let id_token = env.provider.id_token(ISSUER, "floor-nonce-0123456789")?;
    let (signed, sig) = id_token
        .rsplit_once('.')
        .ok_or("the ID token has no signature")?;
    let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig)?)?;
    let public = env.provider.signing.verifying_key();
    public.verify(signed.as_bytes(), &sig)?;

    // The fake's own answers, as a callback sends its requests.
    let token_url = format!("{ISSUER}/protocol/openid-connect/token");
    let userinfo_url = format!("{ISSUER_USERINFO}/protocol/openid-connect/userinfo");
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let token_request = |code: &str| {
        http::Request::builder()
            .method("POST")
            .uri(token_url.as_str())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", basic.as_str())
            .body(
                format!(
                    "grant_type=authorization_code&code={code}&code_verifier={}\
                     &redirect_uri=https%3A%2F%2Fkms.bench.example%2Fv1%2Fsso%2F{SLUG}%2Fcallback",
                    "v".repeat(43)
                )
                .into_bytes(),
            )
    };
    let userinfo_request = || {
        http::Request::builder()
            .method("GET")
            .uri(userinfo_url.as_str())
            .header("accept", "application/json")
            .header("authorization", format!("Bearer {ACCESS_TOKEN}"))
            .body(Vec::new())
    };
    if env
        .provider
        .call(token_request(&env.provider.prepare(ISSUER, "n")?)?)?
        .status()
        != 200
        || env.provider.call(userinfo_request()?)?.status() != 200
    {
        return Err("the fake provider does not answer its own requests".into());
    }
    let refused_before = env.provider.refused.load(Ordering::Relaxed);

    let mut group = c.benchmark_group("sso_callback");
    group.bench_function("login_start", |b| {
        b.iter_custom(|iters| env.time_login_starts(SLUG, iters, &mut failures))
    });
    for (name, slug, issuer) in [
        ("callback", SLUG, ISSUER),
        ("callback_with_userinfo", SLUG_USERINFO, ISSUER_USERINFO),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || env.start(slug, issuer).map_err(|e| e.to_string()),
                |ready| {
                    let done = ready
                        .ok()
                        .map(|r| kms.sso_oidc_callback(slug, &r.callback, &r.browser));
                    if !matches!(done, Some(Ok(_))) {
                        failures += 1;
                    }
                    done
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.bench_function("ed25519_verify_floor", |b| {
        b.iter(|| public.verify(black_box(signed.as_bytes()), black_box(&sig)))
    });
    group.bench_function("fake_provider_alone/token_endpoint", |b| {
        b.iter_batched(
            || {
                env.provider
                    .prepare(ISSUER, "n")
                    .map_err(|e| e.to_string())
                    .and_then(|code| token_request(&code).map_err(|e| e.to_string()))
            },
            |request| request.ok().map(|r| env.provider.call(r)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("fake_provider_alone/userinfo", |b| {
        b.iter_batched(
            userinfo_request,
            |request| request.ok().map(|r| env.provider.call(r)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
    if full_run() {
        report(
            "sso_callback: callback / ed25519_verify_floor",
            interleaved_with_setup(
                1_000,
                &mut failures,
                || env.start(SLUG, ISSUER).ok(),
                |ready| ready.map(|r| kms.sso_oidc_callback(SLUG, &r.callback, &r.browser)),
                |done| !matches!(done, Some(Ok(_))),
                || public.verify(signed.as_bytes(), &sig),
            ),
        );
    }

    // A criterion routine cannot return an error: failed calls are counted instead (a
    // failed callback answers early, so its time would not be a login's), and so are the
    // provider's refusals (a request no login should have sent).
    if failures != 0 || env.provider.refused.load(Ordering::Relaxed) != refused_before {
        return Err("a login start or a callback failed during the measurement".into());
    }
    login_start_pending(c)
}

/// Login starts while 10,000 logins are pending (started, never finished): each start
/// purges expired attempts, which the memory store does by scanning all of them.
fn login_start_pending(c: &mut Criterion) -> SetupResult<()> {
    let env = SsoKms::new()?;
    let pending = if full_run() { 10_000 } else { 100 };
    for _ in 0..pending {
        env.kms.sso_login(SLUG, None)?;
    }
    let mut failures = 0u64;
    let mut group = c.benchmark_group("sso_callback");
    group.bench_function(format!("login_start_{pending}_pending"), |b| {
        b.iter_custom(|iters| env.time_login_starts(SLUG, iters, &mut failures))
    });
    group.finish();
    if failures != 0 {
        return Err("a login start failed during the measurement".into());
    }
    Ok(())
}

// ------------------------------------------------------------------------------------
// SAML.

/// The test IdP's metadata: its entity id, signing certificate and redirect endpoint.
fn saml_idp_metadata() -> String {
    let cert: String = SAML_CERT
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" \
         xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"{SAML_IDP_ENTITY}\">\
         <md:IDPSSODescriptor WantAuthnRequestsSigned=\"false\" \
         protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">\
         <md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>\
         {cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>\
         <md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>\
         <md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" \
         Location=\"{SAML_IDP_SSO}\"/></md:IDPSSODescriptor></md:EntityDescriptor>"
    )
}

/// Percent-decoding of a query value (`%2B` and the like; `+` stays as it is).
fn percent_decode(text: &str) -> SetupResult<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or("a truncated percent escape")?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex)?, 16)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8(out)?)
}

/// A successful response to the request `request_id`, its assertion `assertion_id`
/// signed with the test IdP's key: the user `ada@bench.example` in the group `staff`.
fn saml_response(request_id: &str, assertion_id: &str) -> SetupResult<String> {
    let now = unix_now()?;
    let at = |offset: i64| kms_core::Timestamp::from_unix(now + offset).to_rfc3339();
    let acs = format!("https://kms.bench.example/v1/sso/{SLUG_SAML}/acs");
    let audience = format!("https://kms.bench.example/v1/sso/{SLUG_SAML}/metadata");
    let assertion = format!(
        "<saml:Assertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" \
         ID=\"{assertion_id}\" Version=\"2.0\" IssueInstant=\"{issued}\">\
         <saml:Issuer>{SAML_IDP_ENTITY}</saml:Issuer><saml:Subject><saml:NameID \
         Format=\"urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress\">ada@bench.example\
         </saml:NameID><saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\">\
         <saml:SubjectConfirmationData NotOnOrAfter=\"{until}\" Recipient=\"{acs}\" \
         InResponseTo=\"{request_id}\"/></saml:SubjectConfirmation></saml:Subject>\
         <saml:Conditions NotBefore=\"{from}\" NotOnOrAfter=\"{until}\">\
         <saml:AudienceRestriction><saml:Audience>{audience}</saml:Audience>\
         </saml:AudienceRestriction></saml:Conditions>\
         <saml:AuthnStatement AuthnInstant=\"{issued}\" SessionIndex=\"_session1\">\
         <saml:AuthnContext><saml:AuthnContextClassRef>\
         urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport\
         </saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>\
         <saml:AttributeStatement><saml:Attribute Name=\"displayName\"><saml:AttributeValue>\
         Ada Lovelace</saml:AttributeValue></saml:Attribute><saml:Attribute Name=\"groups\">\
         <saml:AttributeValue>staff</saml:AttributeValue><saml:AttributeValue>dev\
         </saml:AttributeValue></saml:Attribute></saml:AttributeStatement></saml:Assertion>",
        issued = at(-5),
        from = at(-60),
        until = at(300),
    );
    let response = format!(
        "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
         xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_r{assertion_id}\" \
         Version=\"2.0\" IssueInstant=\"{issued}\" Destination=\"{acs}\" \
         InResponseTo=\"{request_id}\"><saml:Issuer>{SAML_IDP_ENTITY}</saml:Issuer>\
         <samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/>\
         </samlp:Status>{assertion}</samlp:Response>",
        issued = at(-5),
    );
    let key = saml_rs::crypto::keys::load_private_key(SAML_KEY, None)?;
    Ok(saml_rs::crypto::construct_saml_signature(
        &response,
        false,
        &key,
        SAML_CERT,
        RSA_SHA256,
        &[],
        None,
    )?)
}

fn saml_acs(c: &mut Criterion) -> SetupResult<()> {
    let env = SsoKms::new()?;
    let kms = &env.kms;
    let query = PermissionQuery::parse("token.read AND app.read")?;
    let (response, relay, browser) = env.start_saml()?;
    let done = kms.sso_saml_acs(SLUG_SAML, &response, Some(&relay), &browser)?;
    if kms
        .verify_token(&done.session.token, Some(&query), None)?
        .code()
        != VerifyCode::Valid
    {
        return Err("the session of a SAML login does not verify".into());
    }
    let mut failures = 0u64;
    env.time_login_starts(SLUG_SAML, 3, &mut failures);
    if failures != 0 {
        return Err("a SAML login start or its refusal did not answer as expected".into());
    }

    // The floor: RSA-2048 PKCS#1 v1.5 over SHA-256 with the IdP's key, over bytes the
    // size of a response.
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::signature::{Keypair as _, Signer as _, Verifier as _};
    let private = rsa::RsaPrivateKey::from_pkcs8_pem(SAML_KEY)?;
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(private);
    let verifier = signer.verifying_key();
    let message = saml_response("_floor-request", "_floor-assertion")?;
    let signature = signer.try_sign(message.as_bytes())?;
    verifier.verify(message.as_bytes(), &signature)?;

    let mut group = c.benchmark_group("saml_acs");
    group.bench_function("login_start", |b| {
        b.iter_custom(|iters| env.time_login_starts(SLUG_SAML, iters, &mut failures))
    });
    group.bench_function("acs", |b| {
        b.iter_batched(
            || env.start_saml().map_err(|e| e.to_string()),
            |ready| {
                let done = ready.ok().map(|(response, relay, browser)| {
                    kms.sso_saml_acs(SLUG_SAML, &response, Some(&relay), &browser)
                });
                if !matches!(done, Some(Ok(_))) {
                    failures += 1;
                }
                done
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("rsa_sha256_verify_floor", |b| {
        b.iter(|| verifier.verify(black_box(message.as_bytes()), black_box(&signature)))
    });
    group.finish();
    if full_run() {
        report(
            "saml_acs: acs / rsa_sha256_verify_floor",
            interleaved_with_setup(
                200,
                &mut failures,
                || env.start_saml().ok(),
                |ready| {
                    ready.map(|(response, relay, browser)| {
                        kms.sso_saml_acs(SLUG_SAML, &response, Some(&relay), &browser)
                    })
                },
                |done| !matches!(done, Some(Ok(_))),
                || verifier.verify(message.as_bytes(), &signature),
            ),
        );
    }
    if failures != 0 {
        return Err("a SAML login start or response failed during the measurement".into());
    }
    Ok(())
}
