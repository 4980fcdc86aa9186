//! The OpenID Connect relying party: discovery, the authorization request (code flow with
//! PKCE), the callback (code exchange, ID-token checks, userinfo) and revalidation with the
//! provider's refresh token.
//!
//! Protocol work is done by the `openidconnect` crate over the caller's [`HttpTransport`]
//! (adapted to the crate's `SyncHttpClient`); this module adds what the crate leaves to the
//! caller: the issuer check of discovery and of the callback (RFC 9207), the algorithm
//! allow-list (never `none`, never `HS*`), `azp`, clock leeway against an injected time, a
//! cached key set per issuer with a bounded refetch on an unknown `kid`, body limits, and
//! errors sorted into [`SsoError`]'s three kinds without secrets in them.
//!
//! Every check of an ID token maps to [`SsoError::Unauthenticated`]; a callback that is not
//! acceptable as such (a missing code, a wrong `iss`) to [`SsoError::Invalid`]; a provider
//! that cannot be reached (or answers 5xx) to [`SsoError::Unavailable`].

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreClientAuthMethod, CoreErrorResponseType, CoreGenderClaim,
    CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::http::{header, Method, StatusCode};
use openidconnect::url::{Host, Url};
use openidconnect::{
    AccessToken, AdditionalClaims, AuthType, AuthorizationCode, ClaimsVerificationError, Client,
    ClientId, ClientSecret, EmptyExtraTokenFields, EndpointNotSet, EndpointSet, IdToken,
    IdTokenClaims, IdTokenFields, IdTokenVerifier, IssuerUrl, JwsSigningAlgorithm, Nonce,
    OAuth2TokenResponse, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    SignatureVerificationError, StandardErrorResponse, StandardTokenResponse, SubjectIdentifier,
    SyncHttpClient, TokenResponse, TokenUrl, UserInfoError, UserInfoUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ExternalIdentity, HttpRequest, HttpResponse, HttpTransport, SsoError, TransportError};
use crate::clock::Timestamp;

/// The largest response body read from a provider (discovery, key set, token endpoint,
/// userinfo): 1 MiB. A larger one is refused.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Clock leeway for `exp` and `iat` of ID tokens, in seconds.
pub const CLOCK_LEEWAY_SECS: i64 = 60;

/// The ID-token signature algorithms this relying party implements, by their JOSE names.
pub const SUPPORTED_ALGORITHMS: [&str; 3] = ["RS256", "ES256", "EdDSA"];

/// The longest piece of provider- or caller-supplied text quoted in an error message.
const MAX_QUOTE: usize = 200;

/// The path of the discovery document under the issuer (OpenID Connect Discovery 1.0, 4).
const WELL_KNOWN: &str = "/.well-known/openid-configuration";

// ---------------------------------------------------------------------------------------
// The crate's types, instantiated for this relying party.

/// Every claim besides the standard ones, kept for the groups claim and the attributes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OtherClaims {
    #[serde(flatten)]
    claims: serde_json::Map<String, Value>,
}

impl AdditionalClaims for OtherClaims {}

type Claims = IdTokenClaims<OtherClaims, CoreGenderClaim>;
type RpIdToken = IdToken<
    OtherClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type RpTokenResponse = StandardTokenResponse<
    IdTokenFields<
        OtherClaims,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;
type TokenErrorResponse = StandardErrorResponse<CoreErrorResponseType>;
type RpClient<HasTokenUrl, HasUserInfoUrl> = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    TokenErrorResponse,
    RpTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    HasTokenUrl,
    HasUserInfoUrl,
>;
type TokenClient = RpClient<EndpointSet, EndpointNotSet>;
type UserInfoClient = RpClient<EndpointNotSet, EndpointSet>;
type TokenRequestError = RequestTokenError<TransportError, TokenErrorResponse>;

// ---------------------------------------------------------------------------------------
// Text in error messages.

/// `text` cut to [`MAX_QUOTE`] characters, control characters replaced, for quoting
/// provider- or caller-supplied values in an error message.
fn quote(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_QUOTE)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > MAX_QUOTE {
        out.push('…');
    }
    out
}

fn unauthenticated(message: impl Into<String>) -> SsoError {
    SsoError::Unauthenticated(message.into())
}

fn invalid(message: impl Into<String>) -> SsoError {
    SsoError::Invalid(message.into())
}

fn unavailable(message: impl Into<String>) -> SsoError {
    SsoError::Unavailable(message.into())
}

/// The JOSE name of an algorithm (`RS256`).
fn alg_name(alg: &CoreJwsSigningAlgorithm) -> String {
    match serde_json::to_value(alg) {
        Ok(Value::String(name)) => name,
        _ => format!("{alg:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// URLs.

/// Checks an issuer URL: https, or http only on a loopback host (127.0.0.0/8, ::1,
/// localhost); no query, no fragment, no user name or password.
pub fn validate_issuer_url(issuer: &str) -> Result<(), SsoError> {
    check_url("the issuer", issuer)?;
    let url = Url::parse(issuer).map_err(|e| invalid(format!("the issuer is not a URL: {e}")))?;
    if url.query().is_some() {
        return Err(invalid("the issuer must not have a query"));
    }
    if url.fragment().is_some() {
        return Err(invalid("the issuer must not have a fragment"));
    }
    Ok(())
}

/// Checks a provider URL (`what` names it in the error): an absolute https URL, or http on
/// a loopback host; no credentials in it.
fn check_url(what: &str, text: &str) -> Result<Url, SsoError> {
    let url = Url::parse(text)
        .map_err(|e| invalid(format!("{what} `{}` is not a URL: {e}", quote(text))))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(format!(
            "{what} must not contain a user name or password"
        )));
    }
    let Some(host) = url.host() else {
        return Err(invalid(format!("{what} `{}` has no host", quote(text))));
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&host) => Ok(url),
        "http" => Err(invalid(format!(
            "{what} `{}` uses http: only https is allowed, or http on a loopback host \
             (127.0.0.0/8, ::1, localhost)",
            quote(text)
        ))),
        other => Err(invalid(format!(
            "{what} `{}` uses the scheme `{}`: only https is allowed",
            quote(text),
            quote(other)
        ))),
    }
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
    }
}

/// The discovery URL of `issuer`: a terminating `/` removed, then the well-known path
/// appended (OpenID Connect Discovery 1.0, section 4).
fn discovery_url(issuer: &str) -> String {
    let base = issuer.strip_suffix('/').unwrap_or(issuer);
    format!("{base}{WELL_KNOWN}")
}

// ---------------------------------------------------------------------------------------
// The transport.

/// A GET of `url` expecting JSON; the body of a 200 answer, at most [`MAX_RESPONSE_BYTES`].
/// The error says why, without the body.
fn get(transport: &dyn HttpTransport, url: &str) -> Result<Vec<u8>, String> {
    let request = http::Request::builder()
        .method(Method::GET)
        .uri(url)
        .header(header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|e| format!("the request could not be built: {e}"))?;
    let response = transport.call(request).map_err(|e| e.to_string())?;
    if response.body().len() > MAX_RESPONSE_BYTES {
        return Err(format!(
            "the answer is larger than {MAX_RESPONSE_BYTES} bytes"
        ));
    }
    if response.status() != StatusCode::OK {
        return Err(format!("the answer was HTTP {}", response.status()));
    }
    Ok(response.into_body())
}

/// Our transport as the crate's HTTP client: bounds the body and remembers the status of
/// the last answer (the crate's errors drop it; 5xx and 4xx are told apart by it).
struct Adapter<'t> {
    transport: &'t dyn HttpTransport,
    status: Cell<Option<StatusCode>>,
}

impl<'t> Adapter<'t> {
    fn new(transport: &'t dyn HttpTransport) -> Self {
        Adapter {
            transport,
            status: Cell::new(None),
        }
    }

    /// Whether the last answer was a 5xx.
    fn server_failed(&self) -> bool {
        self.status.get().is_some_and(|s| s.is_server_error())
    }

    fn status_text(&self) -> String {
        self.status
            .get()
            .map_or_else(|| "no answer".to_owned(), |s| format!("HTTP {s}"))
    }
}

impl SyncHttpClient for Adapter<'_> {
    type Error = TransportError;

    fn call(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        self.status.set(None);
        let response = self.transport.call(request)?;
        self.status.set(Some(response.status()));
        if response.body().len() > MAX_RESPONSE_BYTES {
            return Err(TransportError(format!(
                "the answer is larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        Ok(response)
    }
}

// ---------------------------------------------------------------------------------------
// Discovery.

/// GETs `{issuer}/.well-known/openid-configuration` (a terminating `/` of the issuer
/// removed first), parses it as provider metadata, requires its `issuer` to equal `issuer`
/// exactly, requires the authorization, token and JWKS endpoints (https, or http on
/// loopback) and at least one supported ID-token algorithm, and returns the raw JSON to be
/// stored. Every failure is [`SsoError::Invalid`] (this runs when an admin creates a
/// connection).
pub fn discover(transport: &dyn HttpTransport, issuer: &str) -> Result<Value, SsoError> {
    validate_issuer_url(issuer)?;
    let url = discovery_url(issuer);
    let body = get(transport, &url).map_err(|e| {
        invalid(format!(
            "the discovery document `{}` could not be fetched: {e}",
            quote(&url)
        ))
    })?;
    let raw: Value = serde_json::from_slice(&body).map_err(|e| {
        invalid(format!(
            "the discovery document of `{}` is not JSON: {e}",
            quote(issuer)
        ))
    })?;
    let metadata = parse_metadata(&raw).map_err(|e| {
        invalid(format!(
            "the discovery document of `{}` is not valid provider metadata: {e}",
            quote(issuer)
        ))
    })?;
    if metadata.issuer().as_str() != issuer {
        return Err(invalid(format!(
            "the discovery document names the issuer `{}`, but the connection's issuer is `{}`; \
             they must be equal",
            quote(metadata.issuer().as_str()),
            quote(issuer)
        )));
    }
    check_url(
        "the authorization endpoint",
        metadata.authorization_endpoint().as_str(),
    )?;
    let Some(token) = metadata.token_endpoint() else {
        return Err(invalid(
            "the discovery document has no token_endpoint (the code flow needs one)",
        ));
    };
    check_url("the token endpoint", token.as_str())?;
    check_url("the jwks_uri", metadata.jwks_uri().as_str())?;
    if let Some(userinfo) = metadata.userinfo_endpoint() {
        check_url("the userinfo endpoint", userinfo.as_str())?;
    }
    let offered = metadata.id_token_signing_alg_values_supported();
    if !offered.is_empty() && !offered.iter().any(|a| supported_alg(a).is_some()) {
        return Err(invalid(format!(
            "the provider signs ID tokens with {} only; supported are {}",
            offered.iter().map(alg_name).collect::<Vec<_>>().join(", "),
            SUPPORTED_ALGORITHMS.join(", ")
        )));
    }
    Ok(raw)
}

fn parse_metadata(raw: &Value) -> Result<CoreProviderMetadata, String> {
    serde_path_to_error::deserialize::<_, CoreProviderMetadata>(raw)
        .map_err(|e| quote(&format!("at `{}`: {}", e.path(), e.inner())))
}

/// One connection's stored discovery document, parsed.
struct Provider {
    metadata: CoreProviderMetadata,
    /// `authorization_response_iss_parameter_supported` (RFC 9207).
    iss_parameter: bool,
}

impl Provider {
    /// Parses the stored document. A document that does not parse or names another issuer is
    /// the server's misconfiguration: [`SsoError::Unavailable`].
    fn load(client: &OidcClient<'_>) -> Result<Self, SsoError> {
        let metadata = parse_metadata(client.discovery).map_err(|e| {
            unavailable(format!(
                "the stored discovery document of `{}` is not valid provider metadata ({e}); \
                 discover the provider again",
                quote(client.issuer)
            ))
        })?;
        if metadata.issuer().as_str() != client.issuer {
            return Err(unavailable(format!(
                "the stored discovery document is for `{}`, not `{}`; discover the provider again",
                quote(metadata.issuer().as_str()),
                quote(client.issuer)
            )));
        }
        let iss_parameter = client
            .discovery
            .get("authorization_response_iss_parameter_supported")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Provider {
            metadata,
            iss_parameter,
        })
    }

    fn issuer(&self) -> IssuerUrl {
        self.metadata.issuer().clone()
    }

    fn jwks_uri(&self) -> &str {
        self.metadata.jwks_uri().as_str()
    }

    /// client_secret_basic, unless the provider lists client_secret_post and not
    /// client_secret_basic (a public client sends its id in the body either way).
    fn auth_type(&self) -> AuthType {
        match self.metadata.token_endpoint_auth_methods_supported() {
            Some(methods)
                if !methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
                    && methods.contains(&CoreClientAuthMethod::ClientSecretPost) =>
            {
                AuthType::RequestBody
            }
            _ => AuthType::BasicAuth,
        }
    }

    /// The crate's client for the token endpoint.
    fn token_client(&self, client: &OidcClient<'_>) -> Result<TokenClient, SsoError> {
        let token_url =
            self.metadata.token_endpoint().cloned().ok_or_else(|| {
                unavailable("the stored discovery document has no token endpoint")
            })?;
        let redirect = RedirectUrl::new(client.redirect_uri.to_owned()).map_err(|e| {
            invalid(format!(
                "the redirect URI `{}` is not a URL: {e}",
                quote(client.redirect_uri)
            ))
        })?;
        let rp = RpClient::<EndpointNotSet, EndpointNotSet>::new(
            ClientId::new(client.client_id.to_owned()),
            self.issuer(),
            CoreJsonWebKeySet::default(),
        )
        .set_token_uri(TokenUrl::from_url(token_url.url().clone()))
        .set_redirect_uri(redirect)
        .set_auth_type(self.auth_type());
        Ok(match client.client_secret {
            Some(secret) => rp.set_client_secret(ClientSecret::new(secret.to_owned())),
            None => rp,
        })
    }

    fn userinfo_client(
        &self,
        client: &OidcClient<'_>,
        keys: CoreJsonWebKeySet,
    ) -> Option<UserInfoClient> {
        let url = self.metadata.userinfo_endpoint()?;
        Some(
            RpClient::<EndpointNotSet, EndpointNotSet>::new(
                ClientId::new(client.client_id.to_owned()),
                self.issuer(),
                keys,
            )
            .set_user_info_url(UserInfoUrl::from_url(url.url().clone())),
        )
    }
}

// ---------------------------------------------------------------------------------------
// The connection.

/// One connection as the relying party sees it.
#[derive(Clone, Copy)]
pub struct OidcClient<'a> {
    /// The issuer identifier, exactly as the provider states it.
    pub issuer: &'a str,
    /// This relying party's client id at the provider.
    pub client_id: &'a str,
    /// The client secret; `None` for a public client (PKCE only).
    pub client_secret: Option<&'a str>,
    /// The redirect URI registered at the provider (the callback).
    pub redirect_uri: &'a str,
    /// The scopes to request (`openid` is added when missing).
    pub scopes: &'a [String],
    /// The accepted ID-token algorithms; empty means [`DEFAULT_ALGORITHMS`] (intersected
    /// with the provider's `id_token_signing_alg_values_supported`).
    pub algorithms: &'a [String],
    /// The claim that carries the groups (`groups`), if the connection maps groups.
    pub groups_claim: Option<&'a str>,
    /// The stored discovery document (what [`discover`] returned).
    pub discovery: &'a Value,
}

impl fmt::Debug for OidcClient<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcClient")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.map(|_| "<redacted>"))
            .field("redirect_uri", &self.redirect_uri)
            .field("scopes", &self.scopes)
            .field("algorithms", &self.algorithms)
            .field("groups_claim", &self.groups_claim)
            .finish_non_exhaustive()
    }
}

/// The algorithms accepted when a connection names none.
pub const DEFAULT_ALGORITHMS: [&str; 3] = SUPPORTED_ALGORITHMS;

fn supported_alg(alg: &CoreJwsSigningAlgorithm) -> Option<&'static str> {
    match alg {
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256 => Some("RS256"),
        CoreJwsSigningAlgorithm::EcdsaP256Sha256 => Some("ES256"),
        CoreJwsSigningAlgorithm::EdDsa => Some("EdDSA"),
        _ => None,
    }
}

fn alg_from_name(name: &str) -> Result<CoreJwsSigningAlgorithm, SsoError> {
    match name {
        "RS256" => Ok(CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256),
        "ES256" => Ok(CoreJwsSigningAlgorithm::EcdsaP256Sha256),
        "EdDSA" => Ok(CoreJwsSigningAlgorithm::EdDsa),
        "none" => Err(invalid(
            "the algorithm `none` (unsigned ID tokens) is never accepted",
        )),
        hs if hs.starts_with("HS") => Err(invalid(format!(
            "the algorithm `{}` (an ID token signed with the client secret) is never accepted",
            quote(hs)
        ))),
        other => Err(invalid(format!(
            "the algorithm `{}` is not supported for ID tokens; supported are {}",
            quote(other),
            SUPPORTED_ALGORITHMS.join(", ")
        ))),
    }
}

/// Validation helper for connection creation: every name must be one of RS256, ES256,
/// EdDSA (so never `none` and never `HS*`); an empty list means the defaults.
pub fn check_algorithms(algorithms: &[String]) -> Result<(), SsoError> {
    for name in algorithms {
        alg_from_name(name)?;
    }
    Ok(())
}

/// The algorithms accepted for this connection's ID tokens.
fn accepted_algorithms(
    client: &OidcClient<'_>,
    provider: &Provider,
) -> Result<Vec<CoreJwsSigningAlgorithm>, SsoError> {
    if !client.algorithms.is_empty() {
        return client
            .algorithms
            .iter()
            .map(|name| alg_from_name(name))
            .collect();
    }
    let offered = provider.metadata.id_token_signing_alg_values_supported();
    let accepted: Vec<CoreJwsSigningAlgorithm> = DEFAULT_ALGORITHMS
        .iter()
        .filter_map(|name| alg_from_name(name).ok())
        .filter(|alg| offered.is_empty() || offered.contains(alg))
        .collect();
    if accepted.is_empty() {
        return Err(unauthenticated(format!(
            "the provider signs ID tokens with none of {}",
            DEFAULT_ALGORITHMS.join(", ")
        )));
    }
    Ok(accepted)
}

// ---------------------------------------------------------------------------------------
// The authorization request.

/// The authorization request URL: the provider's authorization endpoint with
/// `response_type=code`, `client_id`, `redirect_uri`, `scope` (space-joined, `openid` added
/// first when missing), `state`, `nonce`, `code_challenge` = BASE64URL(SHA256(verifier)) and
/// `code_challenge_method=S256`. The verifier must be an RFC 7636 code verifier (43 to 128
/// characters of `A-Z a-z 0-9 - . _ ~`).
pub fn authorization_url(
    client: &OidcClient<'_>,
    state: &str,
    nonce: &str,
    pkce_verifier: &str,
) -> Result<String, SsoError> {
    let provider = Provider::load(client)?;
    if state.is_empty() {
        return Err(invalid("the state must not be empty"));
    }
    if nonce.is_empty() {
        return Err(invalid("the nonce must not be empty"));
    }
    check_pkce_verifier(pkce_verifier)?;
    check_url("the redirect URI", client.redirect_uri)?;
    let mut scopes: Vec<&str> = Vec::with_capacity(client.scopes.len() + 1);
    if !client.scopes.iter().any(|s| s == "openid") {
        scopes.push("openid");
    }
    for scope in client.scopes {
        let valid = !scope.is_empty()
            && scope
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !valid {
            return Err(invalid(format!(
                "the scope `{}` is not a valid scope token",
                quote(scope)
            )));
        }
        scopes.push(scope);
    }
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(pkce_verifier.as_bytes()));
    let mut url = provider.metadata.authorization_endpoint().url().clone();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client.client_id)
        .append_pair("redirect_uri", client.redirect_uri)
        .append_pair("scope", &scopes.join(" "))
        .append_pair("state", state)
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    // OIDC Core 11: a request for offline access must ask for consent.
    if scopes.contains(&"offline_access") {
        url.query_pairs_mut().append_pair("prompt", "consent");
    }
    Ok(url.into())
}

fn check_pkce_verifier(verifier: &str) -> Result<(), SsoError> {
    let length_ok = (43..=128).contains(&verifier.len());
    let chars_ok = verifier
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if length_ok && chars_ok {
        Ok(())
    } else {
        Err(invalid(
            "the PKCE verifier must be 43 to 128 characters of A-Z, a-z, 0-9, '-', '.', '_', '~' \
             (RFC 7636)",
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Key sets.

/// One issuer's cached key set.
struct CachedKeys {
    jwks_uri: String,
    keys: Arc<CoreJsonWebKeySet>,
    fetched_at: Timestamp,
    /// When an unknown `kid` last caused a refetch.
    refetched_at: Option<Timestamp>,
}

/// Key sets per issuer, cached in memory for `ttl`; an ID token whose `kid` is not in the
/// cached set (no key of the set matches it) triggers one refetch, at most once per
/// `cooldown` per issuer. Times are the `now` given to [`finish_login`] and [`revalidate`].
/// Thread-safe; no lock is held while a key set is fetched.
pub struct KeySetCache {
    ttl: Duration,
    cooldown: Duration,
    sets: Mutex<HashMap<String, CachedKeys>>,
}

impl fmt::Debug for KeySetCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySetCache")
            .field("ttl", &self.ttl)
            .field("cooldown", &self.cooldown)
            .field("issuers", &self.lock().len())
            .finish()
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl KeySetCache {
    /// An empty cache: key sets are kept for `ttl`, and an unknown `kid` refetches at most
    /// once per `cooldown` per issuer.
    pub fn new(ttl: Duration, cooldown: Duration) -> Self {
        KeySetCache {
            ttl,
            cooldown,
            sets: Mutex::new(HashMap::new()),
        }
    }

    /// Drops the cached key set of `issuer` (its connection was changed or deleted).
    pub fn forget(&self, issuer: &str) {
        self.lock().remove(issuer);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, CachedKeys>> {
        // A panic elsewhere while holding the lock leaves a map that is still consistent.
        self.sets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key set of `issuer`: the cached one while fresh (and from the same `jwks_uri`),
    /// else fetched.
    fn keys(
        &self,
        transport: &dyn HttpTransport,
        issuer: &str,
        jwks_uri: &str,
        now: Timestamp,
    ) -> Result<Arc<CoreJsonWebKeySet>, SsoError> {
        if let Some(cached) = self.lock().get(issuer) {
            let fresh = now < cached.fetched_at.plus_secs(secs(self.ttl));
            if fresh && cached.jwks_uri == jwks_uri {
                return Ok(Arc::clone(&cached.keys));
            }
        }
        self.fetch(transport, issuer, jwks_uri, now)
    }

    /// Refetches after an unknown `kid`, unless that happened within the cooldown: then
    /// `None`.
    fn refetch(
        &self,
        transport: &dyn HttpTransport,
        issuer: &str,
        jwks_uri: &str,
        now: Timestamp,
    ) -> Result<Option<Arc<CoreJsonWebKeySet>>, SsoError> {
        {
            let mut sets = self.lock();
            if let Some(cached) = sets.get_mut(issuer) {
                if let Some(at) = cached.refetched_at {
                    if now < at.plus_secs(secs(self.cooldown)) {
                        return Ok(None);
                    }
                }
                // Claimed before fetching, so concurrent logins refetch once.
                cached.refetched_at = Some(now);
            }
        }
        self.fetch_marked(transport, issuer, jwks_uri, now, true)
            .map(Some)
    }

    fn fetch(
        &self,
        transport: &dyn HttpTransport,
        issuer: &str,
        jwks_uri: &str,
        now: Timestamp,
    ) -> Result<Arc<CoreJsonWebKeySet>, SsoError> {
        self.fetch_marked(transport, issuer, jwks_uri, now, false)
    }

    /// Fetches and stores the key set; `refetch` records it as an unknown-`kid` refetch.
    fn fetch_marked(
        &self,
        transport: &dyn HttpTransport,
        issuer: &str,
        jwks_uri: &str,
        now: Timestamp,
        refetch: bool,
    ) -> Result<Arc<CoreJsonWebKeySet>, SsoError> {
        let body = get(transport, jwks_uri).map_err(|e| {
            unavailable(format!(
                "the key set of `{}` could not be fetched: {e}",
                quote(issuer)
            ))
        })?;
        let keys: CoreJsonWebKeySet =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body))
                .map_err(|e| {
                    unavailable(format!(
                        "the key set of `{}` is not a JSON Web Key Set: {}",
                        quote(issuer),
                        quote(&format!("at `{}`: {}", e.path(), e.inner()))
                    ))
                })?;
        let keys = Arc::new(keys);
        let mut sets = self.lock();
        let refetched_at = if refetch {
            Some(now)
        } else {
            sets.get(issuer).and_then(|c| c.refetched_at)
        };
        sets.insert(
            issuer.to_owned(),
            CachedKeys {
                jwks_uri: jwks_uri.to_owned(),
                keys: Arc::clone(&keys),
                fetched_at: now,
                refetched_at,
            },
        );
        Ok(keys)
    }
}

// ---------------------------------------------------------------------------------------
// The callback.

/// The parameters of the callback the provider redirected the browser to.
#[derive(Clone, Copy)]
pub struct Callback<'a> {
    /// The authorization code.
    pub code: &'a str,
    /// The `iss` parameter (RFC 9207), if the provider sent one.
    pub iss: Option<&'a str>,
}

impl fmt::Debug for Callback<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callback")
            .field("code", &"<redacted>")
            .field("iss", &self.iss)
            .finish()
    }
}

/// What the login's state (kept by the caller since the authorization request) expects.
#[derive(Clone, Copy)]
pub struct Expected<'a> {
    /// The nonce sent in the authorization request.
    pub nonce: &'a str,
    /// The PKCE code verifier whose challenge was sent.
    pub pkce_verifier: &'a str,
}

impl fmt::Debug for Expected<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expected")
            .field("nonce", &"<redacted>")
            .field("pkce_verifier", &"<redacted>")
            .finish()
    }
}

/// A finished login.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginResult {
    /// Who signed in, after every check.
    pub identity: ExternalIdentity,
    /// The provider's refresh token, if it issued one (for [`revalidate`]; the caller seals
    /// it).
    pub refresh_token: Option<String>,
    /// The ID token's `exp`.
    pub id_token_expires_at: Timestamp,
}

impl fmt::Debug for LoginResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginResult")
            .field("identity", &self.identity)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("id_token_expires_at", &self.id_token_expires_at)
            .finish()
    }
}

/// Finishes a login after the caller has already matched `state` and the browser cookie:
/// checks the callback's `iss` (RFC 9207), exchanges the code (with the PKCE verifier) at
/// the token endpoint, verifies the ID token (algorithm allow-list, signature against the
/// provider's key set, `iss`, `aud`, `azp`, `exp` and `iat` with [`CLOCK_LEEWAY_SECS`] of
/// leeway against `now`, `nonce`), fetches userinfo when the provider has the endpoint
/// (its `sub` must be the ID token's) and merges the claims.
pub fn finish_login(
    transport: &dyn HttpTransport,
    keys: &KeySetCache,
    client: &OidcClient<'_>,
    callback: &Callback<'_>,
    expected: &Expected<'_>,
    now: Timestamp,
) -> Result<LoginResult, SsoError> {
    let provider = Provider::load(client)?;
    match callback.iss {
        Some(iss) if iss != client.issuer => {
            return Err(invalid(format!(
                "the callback's iss `{}` is not this connection's issuer `{}` (a mix-up)",
                quote(iss),
                quote(client.issuer)
            )));
        }
        None if provider.iss_parameter => {
            return Err(invalid(
                "the callback has no iss parameter, but the provider always sends one (RFC 9207)",
            ));
        }
        _ => {}
    }
    if callback.code.is_empty() {
        return Err(invalid("the callback has no code"));
    }
    if expected.nonce.is_empty() {
        return Err(invalid("the expected nonce is empty"));
    }
    let rp = provider.token_client(client)?;
    let adapter = Adapter::new(transport);
    let response = rp
        .exchange_code(AuthorizationCode::new(callback.code.to_owned()))
        .set_pkce_verifier(PkceCodeVerifier::new(expected.pkce_verifier.to_owned()))
        .request(&adapter)
        .map_err(|e| token_error(e, &adapter, "code exchange"))?;
    let id_token = response
        .id_token()
        .ok_or_else(|| unauthenticated("the token endpoint returned no ID token"))?;
    let claims = verify_id_token(
        transport,
        keys,
        client,
        &provider,
        id_token,
        Some(expected.nonce),
        now,
    )?;
    let id_claims = claims_object(&claims)?;
    let userinfo = userinfo(
        transport,
        keys,
        client,
        &provider,
        response.access_token(),
        claims.subject().as_str(),
        now,
    )?;
    Ok(LoginResult {
        identity: merge(
            claims.subject().as_str(),
            Some(&id_claims),
            userinfo.as_ref(),
            client.groups_claim,
        ),
        refresh_token: response.refresh_token().map(|t| t.secret().clone()),
        id_token_expires_at: Timestamp::from_unix(claims.expiration().timestamp()),
    })
}

/// A successful revalidation.
#[derive(Clone, PartialEq, Eq)]
pub struct Revalidated {
    /// The user as the provider describes them now (from a new ID token and userinfo; only
    /// the subject when the provider returned neither).
    pub identity: ExternalIdentity,
    /// A new refresh token, when the provider rotated it (replace the stored one); `None`
    /// keeps the old one.
    pub refresh_token: Option<String>,
}

impl fmt::Debug for Revalidated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revalidated")
            .field("identity", &self.identity)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Re-checks a user with the provider's refresh token (the refresh_token grant). A refusal
/// by the provider (4xx, `invalid_grant`) is [`SsoError::Unauthenticated`]; unreachable or
/// 5xx is [`SsoError::Unavailable`]. A new ID token, if returned, must pass the same checks
/// as at login (the nonce aside) and have `sub` == `expected_subject`; the userinfo `sub`
/// must equal `expected_subject`.
pub fn revalidate(
    transport: &dyn HttpTransport,
    keys: &KeySetCache,
    client: &OidcClient<'_>,
    refresh_token: &str,
    expected_subject: &str,
    now: Timestamp,
) -> Result<Revalidated, SsoError> {
    let provider = Provider::load(client)?;
    if refresh_token.is_empty() {
        return Err(invalid("the refresh token is empty"));
    }
    if expected_subject.is_empty() {
        return Err(invalid("the expected subject is empty"));
    }
    let rp = provider.token_client(client)?;
    let adapter = Adapter::new(transport);
    let token = RefreshToken::new(refresh_token.to_owned());
    let response = rp
        .exchange_refresh_token(&token)
        .request(&adapter)
        .map_err(|e| token_error(e, &adapter, "refresh"))?;
    let id_claims = match response.id_token() {
        Some(id_token) => {
            let claims = verify_id_token(transport, keys, client, &provider, id_token, None, now)?;
            if claims.subject().as_str() != expected_subject {
                return Err(unauthenticated(format!(
                    "the refreshed ID token is for the subject `{}`, not `{}`",
                    quote(claims.subject().as_str()),
                    quote(expected_subject)
                )));
            }
            Some(claims_object(&claims)?)
        }
        None => None,
    };
    let userinfo = userinfo(
        transport,
        keys,
        client,
        &provider,
        response.access_token(),
        expected_subject,
        now,
    )?;
    Ok(Revalidated {
        identity: merge(
            expected_subject,
            id_claims.as_ref(),
            userinfo.as_ref(),
            client.groups_claim,
        ),
        refresh_token: response.refresh_token().map(|t| t.secret().clone()),
    })
}

/// A token-endpoint failure as an [`SsoError`]: unreachable or 5xx is `Unavailable`, any
/// other refusal or unusable answer `Unauthenticated`. Never quotes the body (it may hold
/// tokens) except the provider's `error` code and, for a malformed ID token, the parser's
/// reason.
fn token_error(error: TokenRequestError, adapter: &Adapter<'_>, step: &str) -> SsoError {
    let status = adapter.status_text();
    match error {
        RequestTokenError::Request(e) => unavailable(format!(
            "the token endpoint could not be reached ({step}): {e}"
        )),
        RequestTokenError::ServerResponse(response) => {
            let code = match serde_json::to_value(response.error()) {
                Ok(Value::String(code)) => quote(&code),
                _ => "unknown".to_owned(),
            };
            if adapter.server_failed() {
                unavailable(format!(
                    "the token endpoint failed ({status}, error `{code}`) during the {step}"
                ))
            } else {
                unauthenticated(format!("the provider refused the {step} (error `{code}`)"))
            }
        }
        RequestTokenError::Parse(e, _) if adapter.server_failed() => {
            let _ = e;
            unavailable(format!(
                "the token endpoint failed ({status}) during the {step}"
            ))
        }
        RequestTokenError::Parse(e, body) => {
            if adapter.status.get() != Some(StatusCode::OK) {
                return unauthenticated(format!(
                    "the provider refused the {step} ({status}, with an unreadable error)"
                ));
            }
            // The crate parses the ID token with the answer; say what is wrong with it.
            let id_token_error = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|answer| answer.get("id_token")?.as_str().map(str::to_owned))
                .and_then(|token| token.parse::<RpIdToken>().err());
            match id_token_error {
                Some(reason) => unauthenticated(format!(
                    "the ID token is malformed: {}",
                    quote(&reason.to_string())
                )),
                None => unauthenticated(format!(
                    "the token endpoint's answer is not a valid token response (at `{}`)",
                    quote(&e.path().to_string())
                )),
            }
        }
        RequestTokenError::Other(message) if adapter.server_failed() => {
            let _ = message;
            unavailable(format!(
                "the token endpoint failed ({status}) during the {step}"
            ))
        }
        RequestTokenError::Other(message) => unauthenticated(format!(
            "the token endpoint's answer to the {step} is not usable ({status}): {}",
            quote(&message)
        )),
    }
}

// ---------------------------------------------------------------------------------------
// The ID token.

fn chrono_time(t: Timestamp) -> Result<DateTime<Utc>, SsoError> {
    DateTime::<Utc>::from_timestamp(t.unix(), 0)
        .ok_or_else(|| invalid("the current time is out of range"))
}

/// Verifies `id_token` for this connection; `nonce` is required when given.
fn verify_id_token(
    transport: &dyn HttpTransport,
    keys: &KeySetCache,
    client: &OidcClient<'_>,
    provider: &Provider,
    id_token: &RpIdToken,
    nonce: Option<&str>,
    now: Timestamp,
) -> Result<Claims, SsoError> {
    let accepted = accepted_algorithms(client, provider)?;
    // The algorithm first, before any key is looked up or fetched.
    let alg = match id_token.signing_alg() {
        Ok(alg) => alg.clone(),
        Err(SignatureVerificationError::NoSignature) => {
            return Err(unauthenticated(
                "the ID token is unsigned (alg `none`), which is never accepted",
            ));
        }
        Err(e) => {
            return Err(unauthenticated(format!(
                "the ID token is not signed: {}",
                quote(&e.to_string())
            )));
        }
    };
    if alg.uses_shared_secret() {
        return Err(unauthenticated(format!(
            "the ID token is signed with `{}` (a shared secret), which is never accepted",
            alg_name(&alg)
        )));
    }
    if !accepted.contains(&alg) {
        return Err(unauthenticated(format!(
            "the ID token is signed with `{}`, which this connection does not accept ({})",
            alg_name(&alg),
            accepted.iter().map(alg_name).collect::<Vec<_>>().join(", ")
        )));
    }
    let issuer = provider.issuer();
    let exp_now = chrono_time(now.plus_secs(-CLOCK_LEEWAY_SECS))?;
    let iat_latest = chrono_time(now.plus_secs(CLOCK_LEEWAY_SECS))?;
    let verify = |set: &CoreJsonWebKeySet| -> Result<Claims, ClaimsVerificationError> {
        let verifier: IdTokenVerifier<'_, CoreJsonWebKey> = IdTokenVerifier::new_public_client(
            ClientId::new(client.client_id.to_owned()),
            issuer.clone(),
            set.clone(),
        )
        .set_allowed_algs(accepted.iter().cloned())
        // Several audiences are checked below (azp), as the crate does not.
        .set_other_audience_verifier_fn(|_| true)
        .set_time_fn(move || exp_now)
        .set_issue_time_verifier_fn(move |iat| {
            if iat > iat_latest {
                Err(format!("issued in the future ({iat})"))
            } else {
                Ok(())
            }
        });
        id_token
            .claims(&verifier, |found: Option<&Nonce>| check_nonce(nonce, found))
            .cloned()
    };
    let jwks_uri = provider.jwks_uri();
    let set = keys.keys(transport, client.issuer, jwks_uri, now)?;
    let claims = match verify(&set) {
        Err(ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        )) => match keys.refetch(transport, client.issuer, jwks_uri, now)? {
            Some(set) => verify(&set),
            None => Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )),
        },
        other => other,
    }
    .map_err(claims_error)?;
    let audiences = claims.audiences();
    match claims.authorized_party() {
        Some(azp) if azp.as_str() != client.client_id => {
            return Err(unauthenticated(format!(
                "the ID token's azp `{}` is not this client",
                quote(azp.as_str())
            )));
        }
        None if audiences.len() > 1 => {
            return Err(unauthenticated(
                "the ID token has several audiences and no azp",
            ));
        }
        _ => {}
    }
    if claims.subject().as_str().is_empty() {
        return Err(unauthenticated("the ID token's sub is empty"));
    }
    Ok(claims)
}

fn check_nonce(expected: Option<&str>, found: Option<&Nonce>) -> Result<(), String> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let Some(found) = found else {
        return Err("the ID token has no nonce".to_owned());
    };
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(found.secret().as_bytes());
    if bool::from(a.ct_eq(&b)) {
        Ok(())
    } else {
        Err("it is not this login's".to_owned())
    }
}

fn claims_error(error: ClaimsVerificationError) -> SsoError {
    let message = match error {
        ClaimsVerificationError::Expired(m) => {
            format!("the ID token has expired or is not yet valid: {m}")
        }
        ClaimsVerificationError::InvalidAudience(m) => {
            format!("the ID token is not for this client: {m}")
        }
        ClaimsVerificationError::InvalidIssuer(m) => {
            format!("the ID token's issuer is wrong: {m}")
        }
        ClaimsVerificationError::InvalidNonce(m) => format!("the ID token's nonce is wrong: {m}"),
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        ) => "no key of the provider's key set matches the ID token (unknown kid)".to_owned(),
        ClaimsVerificationError::SignatureVerification(e) => {
            format!("the ID token's signature is not valid: {e}")
        }
        other => format!("the ID token is not acceptable: {other}"),
    };
    unauthenticated(quote(&message))
}

/// The claims as one JSON object (standard and other claims together).
fn claims_object<T: Serialize>(claims: &T) -> Result<serde_json::Map<String, Value>, SsoError> {
    match serde_json::to_value(claims) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(unauthenticated("the claims are not a JSON object")),
        Err(e) => Err(unauthenticated(format!(
            "the claims could not be read: {}",
            quote(&e.to_string())
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Userinfo.

/// The userinfo claims, when the provider has the endpoint; their `sub` must be `subject`.
fn userinfo(
    transport: &dyn HttpTransport,
    keys: &KeySetCache,
    client: &OidcClient<'_>,
    provider: &Provider,
    access_token: &AccessToken,
    subject: &str,
    now: Timestamp,
) -> Result<Option<serde_json::Map<String, Value>>, SsoError> {
    if provider.metadata.userinfo_endpoint().is_none() {
        return Ok(None);
    }
    // The key set verifies a signed (application/jwt) answer.
    let set = keys.keys(transport, client.issuer, provider.jwks_uri(), now)?;
    let Some(rp) = provider.userinfo_client(client, (*set).clone()) else {
        return Ok(None);
    };
    let adapter = Adapter::new(transport);
    let claims = rp
        .user_info(
            access_token.clone(),
            Some(SubjectIdentifier::new(subject.to_owned())),
        )
        .request::<OtherClaims, CoreGenderClaim, _>(&adapter)
        .map_err(|e| userinfo_error(e, &adapter))?;
    claims_object(&claims).map(Some)
}

fn userinfo_error(error: UserInfoError<TransportError>, adapter: &Adapter<'_>) -> SsoError {
    match error {
        UserInfoError::Request(e) => {
            unavailable(format!("the userinfo endpoint could not be reached: {e}"))
        }
        UserInfoError::Response(status, _, _) if status.is_server_error() => {
            unavailable(format!("the userinfo endpoint failed (HTTP {status})"))
        }
        UserInfoError::Response(status, _, reason) => unauthenticated(format!(
            "the userinfo endpoint refused (HTTP {status}): {}",
            quote(&reason)
        )),
        UserInfoError::ClaimsVerification(ClaimsVerificationError::InvalidSubject(m)) => {
            unauthenticated(format!(
                "the userinfo sub is not the signed-in subject: {}",
                quote(&m)
            ))
        }
        UserInfoError::ClaimsVerification(e) => unauthenticated(format!(
            "the userinfo answer did not pass the checks: {}",
            quote(&e.to_string())
        )),
        UserInfoError::Parse(e) => unauthenticated(format!(
            "the userinfo answer is not valid ({}): {}",
            adapter.status_text(),
            quote(&format!("at `{}`: {}", e.path(), e.inner()))
        )),
        other => unauthenticated(format!(
            "the userinfo answer is not usable: {}",
            quote(&other.to_string())
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Merging the claims.

/// Protocol claims, never shown as attributes.
const PROTOCOL_CLAIMS: [&str; 15] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "azp",
    "at_hash",
    "c_hash",
    "auth_time",
    "jti",
    "sid",
    "acr",
    "amr",
];

fn string_claim(claims: Option<&serde_json::Map<String, Value>>, name: &str) -> Option<String> {
    claims?
        .get(name)?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A claim's value as a list of strings: a string is one, an array its strings; anything
/// else (or null) is absent.
fn string_list(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

/// The identity from the ID token's claims and userinfo (the ID token first).
fn merge(
    subject: &str,
    id: Option<&serde_json::Map<String, Value>>,
    userinfo: Option<&serde_json::Map<String, Value>>,
    groups_claim: Option<&str>,
) -> ExternalIdentity {
    let email = string_claim(id, "email").or_else(|| string_claim(userinfo, "email"));
    let name = string_claim(id, "name")
        .or_else(|| string_claim(userinfo, "name"))
        .or_else(|| string_claim(id, "preferred_username"))
        .or_else(|| string_claim(userinfo, "preferred_username"));
    let groups = groups_claim.and_then(|claim| {
        [id, userinfo]
            .into_iter()
            .flatten()
            .find_map(|claims| claims.get(claim).and_then(string_list))
    });
    let mut attributes = BTreeMap::new();
    for claims in [id, userinfo].into_iter().flatten() {
        for (key, value) in claims {
            let skip = PROTOCOL_CLAIMS.contains(&key.as_str())
                || key == "email"
                || key == "name"
                || Some(key.as_str()) == groups_claim
                || attributes.contains_key(key);
            if skip {
                continue;
            }
            if let Some(values) = string_list(value).filter(|v| !v.is_empty()) {
                attributes.insert(key.clone(), values);
            }
        }
    }
    ExternalIdentity {
        subject: subject.to_owned(),
        email,
        name,
        groups,
        attributes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_urls() {
        for ok in [
            "https://idp.example",
            "https://idp.example/realms/x",
            "https://idp.example/",
            "http://127.0.0.1:8080",
            "http://127.5.6.7/x",
            "http://[::1]:9000",
            "http://localhost:3000/issuer",
            "http://LOCALHOST",
        ] {
            assert_eq!(validate_issuer_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://idp.example",
            "http://10.0.0.1",
            "http://localhost.example",
            "https://idp.example/?x=1",
            "https://idp.example/?",
            "https://idp.example/#f",
            "https://user:pw@idp.example",
            "ftp://idp.example",
            "idp.example",
            "",
        ] {
            assert!(
                matches!(validate_issuer_url(bad), Err(SsoError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn discovery_url_drops_one_trailing_slash() {
        assert_eq!(
            discovery_url("https://a.example/realms/x/"),
            "https://a.example/realms/x/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://a.example"),
            "https://a.example/.well-known/openid-configuration"
        );
    }

    #[test]
    fn algorithms() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            check_algorithms(&names(&["RS256", "ES256", "EdDSA"])),
            Ok(())
        );
        assert_eq!(check_algorithms(&[]), Ok(()));
        for bad in ["none", "HS256", "HS512", "PS256", "rs256", ""] {
            assert!(
                matches!(check_algorithms(&names(&[bad])), Err(SsoError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn quote_bounds_and_cleans() {
        assert_eq!(quote("a\nb"), "a?b");
        assert_eq!(quote(&"x".repeat(500)).chars().count(), MAX_QUOTE + 1);
    }

    #[test]
    fn groups_values() {
        let obj = |v: Value| match v {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        let id = obj(serde_json::json!({"groups": "admins", "dept": "ops", "n": 3}));
        let ui = obj(serde_json::json!({"groups": ["x"], "email": "u@x", "team": ["a", "b"]}));
        let merged = merge("s", Some(&id), Some(&ui), Some("groups"));
        assert_eq!(merged.groups, Some(vec!["admins".to_owned()]));
        assert_eq!(merged.email.as_deref(), Some("u@x"));
        assert_eq!(merged.attributes.get("dept"), Some(&vec!["ops".to_owned()]));
        assert_eq!(
            merged.attributes.get("team"),
            Some(&vec!["a".to_owned(), "b".to_owned()])
        );
        assert!(!merged.attributes.contains_key("n"));
        assert!(!merged.attributes.contains_key("groups"));
        let none = merge("s", Some(&id), None, Some("roles"));
        assert_eq!(none.groups, None);
        assert_eq!(merge("s", Some(&id), None, None).groups, None);
    }
}
