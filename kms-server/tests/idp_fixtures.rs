//! The identity-provider fixtures of the single sign-on tests work, without kms: the
//! OpenID Connect provider runs the code flow with PKCE to a redirect URI nobody listens
//! on (the browser stops before it), issues ID tokens with the user's claims, and obeys
//! its control API; the SAML IdP answers an HTTP-Redirect AuthnRequest with a signed
//! assertion in an auto-submitting form, and obeys its control API.
//!
//! Needs Node.js and `npm ci` in `kms-server/tests/idp` (`.ci/run` does it).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::idp::{self, Browser, OidcIdp, SamlIdp};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use url::Url;

/// Nothing listens there: `Browser::follow` stops before it.
const REDIRECT_URI: &str = "http://127.0.0.1:9/oidc/callback";
const CLIENT_ID: &str = "kms-fixture-test";
const CLIENT_SECRET: &str = "fixture-secret-0123456789abcdef0123456789abcdef";

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).unwrap();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Header (0) or payload (1) of a compact JWS.
fn jwt_part(jwt: &str, i: usize) -> Value {
    let part = jwt.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn jwks_kids(browser: &mut Browser, jwks_uri: &str) -> Vec<String> {
    let jwks = browser.get(jwks_uri);
    assert_eq!(jwks.status, 200, "{}", jwks.body);
    jwks.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Authorize (PKCE S256, offline_access) through the non-interactive login; returns the
/// code after checking `state` and the RFC 9207 `iss` of the authorization response.
fn authorize(
    browser: &mut Browser,
    discovery: &Value,
    issuer: &str,
    nonce: &str,
    verifier: &str,
) -> String {
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = random_token();
    let url = Url::parse_with_params(
        discovery["authorization_endpoint"].as_str().unwrap(),
        &[
            ("client_id", CLIENT_ID),
            ("response_type", "code"),
            ("scope", "openid email profile groups offline_access"),
            ("prompt", "consent"),
            ("redirect_uri", REDIRECT_URI),
            ("state", &state),
            ("nonce", nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap();
    let (last, visited) = browser.follow(url.as_str(), 10, &[REDIRECT_URI]);
    let callback = visited.last().unwrap();
    assert!(
        callback.starts_with(REDIRECT_URI),
        "did not reach the redirect URI: {visited:?}, last answer {} {}",
        last.status,
        last.body
    );
    assert!(
        visited.iter().any(|u| u.contains("/interaction/")),
        "{visited:?}"
    );
    assert_eq!(
        idp::query_param(callback, "state").as_deref(),
        Some(&*state)
    );
    assert_eq!(idp::query_param(callback, "iss").as_deref(), Some(issuer));
    idp::query_param(callback, "code").expect("a code")
}

fn token(browser: &mut Browser, discovery: &Value, fields: &[(&str, &str)]) -> idp::Response {
    let mut form = vec![("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)];
    form.extend_from_slice(fields);
    browser.post_form(discovery["token_endpoint"].as_str().unwrap(), &form)
}

#[test]
fn oidc_provider_runs_the_code_flow_and_obeys_its_controls() {
    let client = json!({
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [REDIRECT_URI],
        "token_endpoint_auth_method": "client_secret_post",
    });
    let Some(provider) = OidcIdp::start(&[client]) else {
        return;
    };
    let issuer = provider.issuer().to_owned();
    let mut browser = Browser::new();

    let discovery = browser.get(&provider.discovery_url()).json();
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert_eq!(
        discovery["authorization_response_iss_parameter_supported"],
        true
    );
    assert!(discovery["code_challenge_methods_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("S256")));
    let jwks_uri = discovery["jwks_uri"].as_str().unwrap().to_owned();
    let kids = jwks_kids(&mut browser, &jwks_uri);

    // The default user, alice, through authorize -> interaction -> callback.
    let (nonce, verifier) = (random_token(), random_token());
    let code = authorize(&mut browser, &discovery, &issuer, &nonce, &verifier);
    let answer = token(
        &mut browser,
        &discovery,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", &verifier),
        ],
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let tokens = answer.json();
    let id_token = tokens["id_token"].as_str().unwrap();
    let header = jwt_part(id_token, 0);
    assert_eq!(header["alg"], "RS256");
    assert!(kids.contains(&header["kid"].as_str().unwrap().to_owned()));
    let claims = jwt_part(id_token, 1);
    assert_eq!(claims["iss"], issuer.as_str());
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["nonce"], nonce.as_str());
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["name"], "Alice");
    assert_eq!(claims["groups"], json!(["admins"]));
    let mut refresh = tokens["refresh_token"]
        .as_str()
        .expect("offline_access yields a refresh token")
        .to_owned();

    // Another user: the same browser logs in again (its session is alice's); no groups.
    provider.next_user(json!({"sub": "bob", "email": "bob@example.com", "name": "Bob"}));
    let (nonce, verifier) = (random_token(), random_token());
    let code = authorize(&mut browser, &discovery, &issuer, &nonce, &verifier);
    let answer = token(
        &mut browser,
        &discovery,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", &verifier),
        ],
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let claims = jwt_part(answer.json()["id_token"].as_str().unwrap(), 1);
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["email"], "bob@example.com");
    assert!(claims.get("groups").is_none(), "{claims}");

    // alg_none rewrites the ID token of the next token responses (a refresh here).
    provider.mode("alg_none");
    let answer = token(
        &mut browser,
        &discovery,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let tokens = answer.json();
    let id_token = tokens["id_token"].as_str().unwrap();
    assert_eq!(jwt_part(id_token, 0), json!({"alg": "none"}));
    assert!(id_token.ends_with('.'), "{id_token}");
    assert_eq!(jwt_part(id_token, 1)["sub"], "alice");
    // oidc-provider rotates refresh tokens only past 70% of their life: keep the newest.
    if let Some(r) = tokens["refresh_token"].as_str() {
        refresh = r.to_owned();
    }
    provider.mode("normal");

    // Key rotation: only new kids in the JWKS, and the next ID token is signed with one.
    provider.rotate_keys();
    let rotated = jwks_kids(&mut browser, &jwks_uri);
    assert!(!rotated.is_empty());
    assert!(
        rotated.iter().all(|k| !kids.contains(k)),
        "{kids:?} {rotated:?}"
    );
    let answer = token(
        &mut browser,
        &discovery,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let tokens = answer.json();
    let kid = jwt_part(tokens["id_token"].as_str().unwrap(), 0)["kid"].clone();
    assert!(rotated.contains(&kid.as_str().unwrap().to_owned()), "{kid}");
    if let Some(r) = tokens["refresh_token"].as_str() {
        refresh = r.to_owned();
    }

    // Revoked refresh: invalid_grant.
    provider.revoke_refresh();
    let answer = token(
        &mut browser,
        &discovery,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    );
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.json()["error"], "invalid_grant");

    let stats = provider.stats();
    assert_eq!(stats["jwks_requests"], 2, "{stats}");
    assert_eq!(stats["token_requests"], 5, "{stats}");
}

const SP_ENTITY_ID: &str = "http://127.0.0.1:9/saml/metadata";
const SP_ACS: &str = "http://127.0.0.1:9/saml/acs";

fn sp_metadata() -> String {
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{SP_ENTITY_ID}"><md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" AuthnRequestsSigned="false" WantAssertionsSigned="true"><md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{SP_ACS}" index="0" isDefault="true"/></md:SPSSODescriptor></md:EntityDescriptor>"#
    )
}

/// GETs the SSO URL with a fresh AuthnRequest; returns (request id, form fields).
fn sso(browser: &mut Browser, saml: &SamlIdp, relay: &str) -> (String, (String, String, String)) {
    let id = format!("_req-{}", random_token());
    let request = format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" IssueInstant="2026-01-01T00:00:00Z" Destination="{}" AssertionConsumerServiceURL="{SP_ACS}" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"><saml:Issuer>{SP_ENTITY_ID}</saml:Issuer></samlp:AuthnRequest>"#,
        saml.sso_url()
    );
    let url = Url::parse_with_params(
        &saml.sso_url(),
        &[
            ("SAMLRequest", idp::deflate_base64(&request).as_str()),
            ("RelayState", relay),
        ],
    )
    .unwrap();
    let page = browser.get(url.as_str());
    assert_eq!(page.status, 200, "{}\n{}", page.body, saml.logs());
    let form = idp::saml_form(&page.body).expect("a form with a SAMLResponse");
    (id, form)
}

#[test]
fn saml_idp_answers_authn_requests_and_obeys_its_controls() {
    let Some(saml) = SamlIdp::start() else {
        return;
    };
    let metadata = saml.metadata_xml();
    assert!(metadata.contains("X509Certificate>MII"), "{metadata}");
    assert!(
        metadata.contains(&format!(
            r#"Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{}""#,
            saml.sso_url()
        )),
        "{metadata}"
    );
    assert!(metadata.contains(&format!(r#"entityID="{}""#, saml.entity_id())));
    saml.set_sp(&sp_metadata());
    let mut browser = Browser::new();

    // Normal: a signed assertion for alice, in response to the request, for the SP.
    let (id, (action, response, relay)) = sso(&mut browser, &saml, "relay-1&x");
    assert_eq!(action, SP_ACS);
    assert_eq!(relay, "relay-1&x");
    let xml = idp::decode_saml(&response).unwrap();
    assert!(xml.contains("<ds:Signature"), "{xml}");
    assert!(xml.contains(">alice@example.com</saml:NameID>"), "{xml}");
    assert!(xml.contains(&format!(r#"InResponseTo="{id}""#)), "{xml}");
    assert!(
        xml.contains(&format!("<saml:Audience>{SP_ENTITY_ID}</saml:Audience>")),
        "{xml}"
    );
    assert!(xml.contains(&format!(r#"Recipient="{SP_ACS}""#)), "{xml}");
    assert!(xml.contains(&format!(r#"Destination="{SP_ACS}""#)), "{xml}");
    assert!(
        xml.contains(r#"Name="groups" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic"><saml:AttributeValue xsi:type="xs:string">admins<"#),
        "{xml}"
    );
    assert_eq!(saml.last_response(), (response, relay));

    // unsigned_assertion: no signature at all.
    saml.mode("unsigned_assertion");
    let (_, (_, response, _)) = sso(&mut browser, &saml, "relay-2");
    let xml = idp::decode_saml(&response).unwrap();
    assert!(!xml.contains("Signature"), "{xml}");
    assert!(xml.contains(">alice@example.com</saml:NameID>"), "{xml}");

    // wrapped_signature: an evil unsigned assertion before the signed one.
    saml.mode("wrapped_signature");
    let (_, (_, response, _)) = sso(&mut browser, &saml, "relay-3");
    let xml = idp::decode_saml(&response).unwrap();
    assert_eq!(xml.matches("<saml:Assertion ").count(), 2, "{xml}");
    assert_eq!(xml.matches("<ds:Signature ").count(), 1, "{xml}");

    // IdP-initiated, for another user: no InResponseTo, still signed.
    saml.mode("normal");
    saml.next_user(
        json!({"name_id": "bob@example.com", "email": "bob@example.com", "name": "Bob"}),
    );
    let response = saml.idp_initiated(SP_ACS);
    let xml = idp::decode_saml(&response).unwrap();
    assert!(!xml.contains("InResponseTo"), "{xml}");
    assert!(xml.contains("<ds:Signature"), "{xml}");
    assert!(xml.contains(">bob@example.com</saml:NameID>"), "{xml}");
    assert!(!xml.contains(r#"Name="groups""#), "{xml}");
    assert_eq!(saml.last_response().0, response);
}

#[test]
fn browser_helpers() {
    assert_eq!(idp::http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
    assert_eq!(
        idp::http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(784_111_777)
    );
    assert_eq!(
        idp::http_date("Sun, 06-Nov-1994 08:49:37 GMT"),
        Some(784_111_777)
    );
    assert!(idp::path_matches("/", "/auth/x"));
    assert!(idp::path_matches("/auth", "/auth/x"));
    assert!(!idp::path_matches("/auth", "/authx"));
    assert_eq!(idp::default_path("/a/b"), "/a");
    assert_eq!(idp::default_path("/a"), "/");
    let html = r#"<form method="post" action="http://x/acs?a=1&amp;b=2"><input type="hidden" name="SAMLResponse" value="PHg+"/><input type='hidden' name='RelayState' value='r&quot;1'/></form>"#;
    assert_eq!(
        idp::saml_form(html),
        Some(("http://x/acs?a=1&b=2".into(), "PHg+".into(), "r\"1".into()))
    );
    assert_eq!(idp::saml_form("<p>no form</p>"), None);
}
