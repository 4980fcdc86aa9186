//! `sso::oidc::finish_login` over an in-memory provider (one Ed25519 key, a fixed time).
//! The first byte picks what the input replaces, the rest is that text:
//!
//! - `'0'` the ID token the token endpoint returns (`$TOKEN` stands for a real one);
//! - `'1'` the token endpoint's whole JSON answer (`$TOKEN` likewise);
//! - `'2'` / `'3'` the callback: the code, then after a NUL the `iss` parameter (no NUL:
//!   no `iss`), with the provider advertising RFC 9207 for `'3'`;
//! - `'4'` the ID token's claims (JSON), signed with the provider's real key;
//! - `'5'` the userinfo answer.
//!
//! Nothing may panic; an error names no secret (client secret, code, PKCE verifier,
//! tokens) and is short; a login that succeeds is the real user's, and only when the rules
//! hold: the real code, a matching `iss`, the real signature, and for claims `'4'` the
//! issuer, audience, `azp`, `exp` and `iat` (60 s leeway) and the nonce.

use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::Signer;
use kms_core::sso::oidc::{finish_login, Callback, Expected, KeySetCache, OidcClient};
use kms_core::sso::{HttpRequest, HttpResponse, HttpTransport, SsoError, TransportError};
use kms_core::Timestamp;
use serde_json::{json, Value};

const ISSUER: &str = "https://idp.example";
const CLIENT_ID: &str = "kms-app";
const SECRET: &str = "fuzz-client-secret-value";
const REDIRECT: &str = "https://kms.example/callback";
const CODE: &str = "fuzz-authorization-code";
const VERIFIER: &str = "fuzz-pkce-verifier-0123456789-0123456789-abcdef";
const NONCE: &str = "fuzz-nonce";
const ACCESS: &str = "fuzz-access-token";
const REFRESH: &str = "fuzz-refresh-token";
const NOW: i64 = 1_800_000_000;
const LEEWAY: i64 = 60;

fn key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[42; 32])
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn mint(claims: &str) -> String {
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": "k1"}).to_string();
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let signature = key().sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_bytes()))
}

fn real_claims() -> Value {
    json!({
        "iss": ISSUER, "sub": "user-1", "aud": CLIENT_ID, "exp": NOW + 300, "iat": NOW,
        "nonce": NONCE, "email": "ada@example.com", "groups": ["admins"],
    })
}

fn discovery(iss_parameter: bool) -> Value {
    json!({
        "issuer": ISSUER,
        "authorization_endpoint": format!("{ISSUER}/auth"),
        "token_endpoint": format!("{ISSUER}/token"),
        "userinfo_endpoint": format!("{ISSUER}/userinfo"),
        "jwks_uri": format!("{ISSUER}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "authorization_response_iss_parameter_supported": iss_parameter,
    })
}

/// The provider: fixed answers, except the parts the input replaces.
struct Provider {
    token_body: String,
    userinfo_body: Vec<u8>,
    calls: Mutex<usize>,
}

fn answer(status: u16, body: Vec<u8>) -> Result<HttpResponse, TransportError> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body)
        .map_err(|e| TransportError(e.to_string()))
}

impl HttpTransport for Provider {
    fn call(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        *self.calls.lock().expect("calls") += 1;
        let uri = request.uri().to_string();
        match uri.strip_prefix(ISSUER) {
            Some("/jwks") => {
                let x = b64(key().verifying_key().as_bytes());
                let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1",
                                            "use": "sig", "alg": "EdDSA", "x": x}]});
                answer(200, jwks.to_string().into_bytes())
            }
            Some("/token") => {
                let body = String::from_utf8_lossy(request.body());
                let code_ok = body.split('&').any(|p| p == format!("code={CODE}"));
                if code_ok {
                    answer(200, self.token_body.clone().into_bytes())
                } else {
                    answer(400, br#"{"error":"invalid_grant"}"#.to_vec())
                }
            }
            Some("/userinfo") => answer(200, self.userinfo_body.clone()),
            _ => answer(404, b"{}".to_vec()),
        }
    }
}

fn token_body(id_token: &str) -> String {
    json!({"access_token": ACCESS, "token_type": "Bearer", "refresh_token": REFRESH,
           "id_token": id_token})
    .to_string()
}

/// Whether `claims` (what mode `'4'` signed) obey every rule the relying party enforces.
fn claims_acceptable(claims: &Value) -> bool {
    let Some(map) = claims.as_object() else {
        return false;
    };
    // The crate takes fractional seconds too.
    let seconds = |name: &str| map.get(name).and_then(Value::as_f64);
    let audiences: Vec<&str> = match map.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let azp_ok = match map.get("azp") {
        Some(azp) => azp.as_str() == Some(CLIENT_ID),
        None => audiences.len() <= 1,
    };
    map.get("iss").and_then(Value::as_str) == Some(ISSUER)
        && audiences.contains(&CLIENT_ID)
        && azp_ok
        && seconds("exp").is_some_and(|exp| exp > (NOW - LEEWAY) as f64)
        && seconds("iat").is_some_and(|iat| iat <= (NOW + LEEWAY) as f64)
        && map.get("nonce").and_then(Value::as_str) == Some(NONCE)
        && map
            .get("sub")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
}

pub(crate) fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest).into_owned();
    let real = mint(&real_claims().to_string());
    let real_userinfo = json!({"sub": "user-1", "name": "Ada"})
        .to_string()
        .into_bytes();
    let mut provider = Provider {
        token_body: token_body(&real),
        userinfo_body: real_userinfo,
        calls: Mutex::new(0),
    };
    let mut code = CODE.to_owned();
    let mut iss: Option<String> = Some(ISSUER.to_owned());
    let mut iss_parameter = false;
    match mode {
        b'0' => provider.token_body = token_body(&text.replace("$TOKEN", &real)),
        b'1' => provider.token_body = text.replace("$TOKEN", &real),
        b'2' | b'3' => {
            iss_parameter = mode == b'3';
            match text.split_once('\0') {
                Some((c, i)) => {
                    code = c.to_owned();
                    iss = Some(i.to_owned());
                }
                None => {
                    code = text.clone();
                    iss = None;
                }
            }
        }
        b'4' => provider.token_body = token_body(&mint(&text)),
        b'5' => provider.userinfo_body = rest.to_vec(),
        _ => return,
    }
    let discovery = discovery(iss_parameter);
    let scopes = vec!["email".to_owned()];
    let client = OidcClient {
        issuer: ISSUER,
        client_id: CLIENT_ID,
        client_secret: Some(SECRET),
        redirect_uri: REDIRECT,
        scopes: &scopes,
        algorithms: &[],
        groups_claim: Some("groups"),
        discovery: &discovery,
    };
    let keys = KeySetCache::new(Duration::from_secs(600), Duration::from_secs(60));
    let result = finish_login(
        &provider,
        &keys,
        &client,
        &Callback {
            code: &code,
            iss: iss.as_deref(),
        },
        &Expected {
            nonce: NONCE,
            pkce_verifier: VERIFIER,
        },
        Timestamp::from_unix(NOW),
    );
    let calls = *provider.calls.lock().expect("calls");
    assert!(calls <= 4, "{calls} requests for one login");
    let login = match result {
        Err(e) => {
            let message = match &e {
                SsoError::Invalid(m) | SsoError::Unauthenticated(m) | SsoError::Unavailable(m) => m,
            };
            // (Unless the input itself put it where a message may quote the provider.)
            for secret in [SECRET, VERIFIER, ACCESS, REFRESH, CODE] {
                let injected = text.contains(secret);
                assert!(injected || !message.contains(secret), "a secret in {e:?}");
            }
            assert!(message.len() < 1024, "error too long: {e:?}");
            return;
        }
        Ok(login) => login,
    };
    assert_eq!(code, CODE, "a login with another code");
    match iss.as_deref() {
        Some(iss) => assert_eq!(iss, ISSUER, "a login with a foreign iss"),
        None => assert!(!iss_parameter, "a login without the advertised iss"),
    }
    match mode {
        b'0' | b'1' | b'2' | b'3' | b'5' => {
            // Only the real ID token verifies, so it is the real user.
            assert_eq!(login.identity.subject, "user-1");
            assert_eq!(login.id_token_expires_at, Timestamp::from_unix(NOW + 300));
        }
        _ => {
            let claims: Value = serde_json::from_str(&text).expect("accepted claims are JSON");
            assert!(
                claims_acceptable(&claims),
                "accepted claims break a rule: {text}"
            );
            assert_eq!(
                claims.get("sub").and_then(Value::as_str),
                Some(login.identity.subject.as_str())
            );
        }
    }
    if mode == b'5' {
        let userinfo: Value = serde_json::from_slice(rest).expect("accepted userinfo is JSON");
        assert_eq!(userinfo.get("sub").and_then(Value::as_str), Some("user-1"));
    }
}
