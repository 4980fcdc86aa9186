//! Single sign-on: identity-provider connections per application, and logins through them
//! (OpenID Connect code flow with PKCE, SAML 2.0 with the HTTP-Redirect and HTTP-POST
//! bindings) that end in a session.
//!
//! A login is bound three ways: to its attempt (the `state` or `RelayState`, single use,
//! ten minutes), to the browser that started it (a cookie whose hash the attempt keeps),
//! and to the provider's statement (PKCE and the nonce for OIDC, `InResponseTo` for SAML).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::audit_log::Audit;
use super::sessions::{SessionInfo, StartedSession, UserInfo};
use super::{Caller, Kms};
use crate::clock::Timestamp;
use crate::error::{Error, FieldErrors, Result};
use crate::identity::{
    Identity, IdpKind, IdpProtocol, IdpRecord, IdpStatus, LoginAttempt, OidcSettings, SamlSettings,
    SessionSelector, UserRecord, UserStatus, IDP_ID_PREFIX, USER_ID_PREFIX,
};
use crate::policy::scope::{shown, RoleName};
use crate::sso::{oidc, saml, ExternalIdentity, HttpTransport, SsoError};
use crate::store::Mutation;

/// Longest a login attempt lives: 10 minutes.
pub const LOGIN_ATTEMPT_SECS: i64 = 600;
/// Clock skew tolerated on SAML time conditions.
const SAML_SKEW_SECS: i64 = 120;
/// Longest `return_to` accepted.
const MAX_RETURN_TO: usize = 2048;
/// How long a provider's key set is trusted before it is fetched again.
const KEY_SET_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
/// Least time between two fetches of a key set for an unknown `kid`.
const KEY_SET_COOLDOWN: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a provider's discovery document is used before it is fetched again (a day).
pub(crate) const DISCOVERY_TTL_SECS: i64 = 24 * 3600;
/// Random bytes of `state`, the browser binding, the nonce and the PKCE verifier.
const RANDOM_BYTES: usize = 32;

/// What single sign-on needs from the embedding server.
#[derive(Clone)]
pub struct SsoConfig {
    /// Sends every request to a provider (discovery, key sets, tokens, userinfo).
    pub transport: Arc<dyn HttpTransport>,
    /// The address browsers and providers reach kms at (`https://kms.example.com`); every
    /// SSO URL is built from it.
    pub public_url: String,
}

impl std::fmt::Debug for SsoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoConfig")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// Single sign-on as a running service keeps it.
pub(crate) struct SsoState {
    config: SsoConfig,
    keys: oidc::KeySetCache,
}

impl SsoState {
    pub(crate) fn new(mut config: SsoConfig) -> Self {
        while config.public_url.ends_with('/') {
            config.public_url.pop();
        }
        SsoState {
            config,
            keys: oidc::KeySetCache::new(KEY_SET_TTL, KEY_SET_COOLDOWN),
        }
    }
}

/// A new identity-provider connection (`POST /v1/apps/{app_id}/idps`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewIdp {
    /// 2–32 of `[a-z0-9-]`, unique across the server.
    pub slug: String,
    /// `oidc` or `saml`.
    pub kind: String,
    /// OIDC: the issuer.
    #[serde(default)]
    pub issuer: Option<String>,
    /// OIDC: the client id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// OIDC: the client secret (sealed at rest, never shown).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// OIDC: scopes asked for (default `openid email profile`).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// OIDC: the claim holding groups.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// OIDC: ID-token algorithms accepted (default RS256, ES256, EdDSA).
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// SAML: the identity provider's metadata.
    #[serde(default)]
    pub idp_metadata_xml: Option<String>,
    /// SAML: the attribute holding groups.
    #[serde(default)]
    pub groups_attribute: Option<String>,
    /// SAML: accept responses that answer no request (off by default).
    #[serde(default)]
    pub allow_idp_initiated: Option<bool>,
    /// Group → roles.
    #[serde(default)]
    pub role_map: Option<BTreeMap<String, Vec<String>>>,
    /// Roles every user of the provider gets.
    #[serde(default)]
    pub default_roles: Option<Vec<String>>,
    /// Email domains `GET /v1/sso/discover` sends here.
    #[serde(default)]
    pub email_domains: Option<Vec<String>>,
}

/// Changes to a connection (`PATCH /v1/idps/{id}`); absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdpUpdate {
    /// `active` or `disabled` (disabling ends the sessions started through it).
    #[serde(default)]
    pub status: Option<String>,
    /// OIDC: a new client secret.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// OIDC: scopes asked for.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// OIDC: the claim holding groups.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// OIDC: ID-token algorithms accepted.
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// SAML: new metadata (certificate rollover).
    #[serde(default)]
    pub idp_metadata_xml: Option<String>,
    /// SAML: the attribute holding groups.
    #[serde(default)]
    pub groups_attribute: Option<String>,
    /// SAML: accept IdP-initiated responses.
    #[serde(default)]
    pub allow_idp_initiated: Option<bool>,
    /// Group → roles.
    #[serde(default)]
    pub role_map: Option<BTreeMap<String, Vec<String>>>,
    /// Roles every user gets.
    #[serde(default)]
    pub default_roles: Option<Vec<String>>,
    /// Email domains for discovery.
    #[serde(default)]
    pub email_domains: Option<Vec<String>>,
}

/// A connection, as the API shows it: never its client secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdpInfo {
    /// `idp_...`.
    pub id: String,
    /// The application.
    pub app_id: String,
    /// The slug in its URLs.
    pub slug: String,
    /// `oidc` or `saml`.
    pub kind: IdpKind,
    /// `active` or `disabled`.
    pub status: IdpStatus,
    /// Creation time.
    pub created_at: Timestamp,
    /// Where a browser starts a login.
    pub login_url: String,
    /// OIDC: the redirect URI to register at the provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// SAML: the assertion consumer service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acs_url: Option<String>,
    /// SAML: the service provider's entity id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sp_entity_id: Option<String>,
    /// SAML: where the service provider's metadata is served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_url: Option<String>,
    /// OIDC: the issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// OIDC: the client id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// OIDC: whether a client secret is stored (it is never shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_client_secret: Option<bool>,
    /// OIDC: scopes asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// OIDC: the groups claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
    /// OIDC: accepted ID-token algorithms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
    /// SAML: the identity provider's metadata, as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idp_metadata_xml: Option<String>,
    /// SAML: the identity provider's entity id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idp_entity_id: Option<String>,
    /// SAML: the groups attribute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups_attribute: Option<String>,
    /// SAML: whether IdP-initiated logins are accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_idp_initiated: Option<bool>,
    /// Group → roles.
    pub role_map: BTreeMap<String, Vec<RoleName>>,
    /// Roles every user gets.
    pub default_roles: Vec<RoleName>,
    /// Email domains for discovery.
    pub email_domains: Vec<String>,
}

/// Where to send the browser to start a login, and the cookie that binds it.
#[derive(Debug, Clone)]
pub struct LoginRedirect {
    /// The provider's URL (authorization request, or SAML `AuthnRequest`).
    pub location: String,
    /// The value of the browser-binding cookie (a secret; sent only as the cookie).
    pub browser_binding: String,
}

/// What the browser sent back to `/callback` (OIDC).
#[derive(Debug, Clone, Default)]
pub struct OidcCallback {
    /// `code`.
    pub code: Option<String>,
    /// `state`.
    pub state: Option<String>,
    /// `iss` (RFC 9207).
    pub iss: Option<String>,
    /// `error`, when the provider refused.
    pub error: Option<String>,
}

/// The browser of a callback.
#[derive(Debug, Clone, Default)]
pub struct BrowserContext {
    /// The browser-binding cookie, if the browser sent it.
    pub binding: Option<String>,
    /// The client address.
    pub ip: Option<IpAddr>,
    /// The `User-Agent`.
    pub user_agent: Option<String>,
}

/// A finished login.
#[derive(Debug, Clone)]
pub struct LoginDone {
    /// The session (with its token, shown only here).
    pub session: StartedSession,
    /// Where the browser goes next, as given when the login started.
    pub return_to: Option<String>,
}

/// A validated role map, the default roles, and every role either names.
type CheckedRoles = (
    BTreeMap<String, Vec<RoleName>>,
    Vec<RoleName>,
    Vec<RoleName>,
);

/// Hex SHA-256 of a value bound to a login (its `state`, the browser cookie).
fn bound_hash(purpose: &str, value: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(purpose.as_bytes());
    h.update([0u8]);
    h.update(value.as_bytes());
    crate::hex::encode(&h.finalize())
}

/// The error of a failed login step, as the API answers it.
fn sso_error(e: SsoError) -> Error {
    match e {
        SsoError::Invalid(m) => Error::invalid("login", m),
        SsoError::Unauthenticated(m) => Error::Unauthenticated(m),
        SsoError::Unavailable(m) => Error::Unavailable {
            message: m,
            source: None,
        },
    }
}

/// A short reason code for the audit log, from a failed step.
fn failure_reason(e: &Error) -> String {
    match e {
        Error::InvalidRequest { fields } => fields
            .first()
            .map(|f| f.problem.clone())
            .unwrap_or_else(|| "invalid".to_owned()),
        other => other.to_string(),
    }
}

/// Checks a `return_to`: a relative path on this server (`/...`, never `//host` or
/// `/\host`), in visible ASCII (percent-encode anything else), as it goes into `Location`.
pub fn validate_return_to(return_to: &str) -> Result<()> {
    let bad = || {
        Err(Error::invalid(
            "return_to",
            "must be a relative path starting with a single /",
        ))
    };
    if return_to.len() > MAX_RETURN_TO
        || !return_to.starts_with('/')
        || return_to.starts_with("//")
        || return_to.starts_with("/\\")
        || !return_to
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'\\')
    {
        return bad();
    }
    Ok(())
}

fn validate_slug(errs: &mut FieldErrors, slug: &str) -> Option<String> {
    let ok = (2..=32).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Some(slug.to_owned())
    } else {
        errs.push("slug", "must be 2 to 32 characters of [a-z0-9-]");
        None
    }
}

fn validate_text(errs: &mut FieldErrors, field: &str, value: &str, max: usize) -> Option<String> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        errs.push(
            field,
            format!("must be 1 to {max} characters without control characters"),
        );
        None
    } else {
        Some(value.to_owned())
    }
}

fn validate_scopes_list(errs: &mut FieldErrors, scopes: &[String]) -> Vec<String> {
    let mut out: Vec<String> = vec!["openid".to_owned()];
    for (i, s) in scopes.iter().enumerate() {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if !ok {
            errs.push(
                format!("scopes[{i}]"),
                "must be 1 to 64 printable characters",
            );
        } else if !out.contains(s) {
            out.push(s.clone());
        }
    }
    if scopes.len() > 32 {
        errs.push("scopes", "must have at most 32 entries");
    }
    out
}

fn validate_domains(errs: &mut FieldErrors, domains: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, d) in domains.iter().enumerate() {
        let d = d.to_ascii_lowercase();
        let ok = !d.is_empty()
            && d.len() <= 253
            && d.contains('.')
            && !d.starts_with('.')
            && !d.ends_with('.')
            && d.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if ok {
            if !out.contains(&d) {
                out.push(d);
            }
        } else {
            errs.push(format!("email_domains[{i}]"), "is not a domain name");
        }
    }
    if domains.len() > 100 {
        errs.push("email_domains", "must have at most 100 entries");
    }
    out
}

impl Kms {
    fn sso_state(&self) -> Result<&SsoState> {
        self.inner.sso.as_ref().ok_or_else(|| Error::Unavailable {
            message: "single sign-on is not configured on this server".to_owned(),
            source: None,
        })
    }

    fn sso_url(&self, slug: &str, leaf: &str) -> Result<String> {
        Ok(format!(
            "{}/v1/sso/{slug}/{leaf}",
            self.sso_state()?.config.public_url
        ))
    }

    /// The view of a stored connection.
    fn idp_info(&self, idp: &IdpRecord) -> Result<IdpInfo> {
        let mut info = IdpInfo {
            id: idp.id.clone(),
            app_id: idp.app_id.clone(),
            slug: idp.slug.clone(),
            kind: idp.kind(),
            status: idp.status,
            created_at: idp.created_at,
            login_url: self.sso_url(&idp.slug, "login")?,
            redirect_uri: None,
            acs_url: None,
            sp_entity_id: None,
            metadata_url: None,
            issuer: None,
            client_id: None,
            has_client_secret: None,
            scopes: None,
            groups_claim: None,
            algorithms: None,
            idp_metadata_xml: None,
            idp_entity_id: None,
            groups_attribute: None,
            allow_idp_initiated: None,
            role_map: idp.role_map.clone(),
            default_roles: idp.default_roles.clone(),
            email_domains: idp.email_domains.clone(),
        };
        match &idp.protocol {
            IdpProtocol::Oidc(o) => {
                info.redirect_uri = Some(self.sso_url(&idp.slug, "callback")?);
                info.issuer = Some(o.issuer.clone());
                info.client_id = Some(o.client_id.clone());
                info.has_client_secret = Some(o.sealed_client_secret.is_some());
                info.scopes = Some(o.scopes.clone());
                info.groups_claim = o.groups_claim.clone();
                info.algorithms = Some(o.algorithms.clone());
            }
            IdpProtocol::Saml(s) => {
                info.acs_url = Some(self.sso_url(&idp.slug, "acs")?);
                info.sp_entity_id = Some(self.sso_url(&idp.slug, "metadata")?);
                info.metadata_url = info.sp_entity_id.clone();
                info.idp_entity_id = saml::parse_idp_metadata(&s.idp_metadata_xml)
                    .ok()
                    .map(|m| m.entity_id);
                info.idp_metadata_xml = Some(s.idp_metadata_xml.clone());
                info.groups_attribute = s.groups_attribute.clone();
                info.allow_idp_initiated = Some(s.allow_idp_initiated);
            }
        }
        Ok(info)
    }

    /// Validates a role map and default roles: every role exists (400) and the caller holds
    /// it (403), so no one maps people to more than they hold themselves.
    fn checked_role_map(
        &self,
        errs: &mut FieldErrors,
        role_map: &BTreeMap<String, Vec<String>>,
        default_roles: &[String],
    ) -> Result<CheckedRoles> {
        let snap = self.snapshot()?;
        let mut map = BTreeMap::new();
        let mut every: Vec<RoleName> = Vec::new();
        if role_map.len() > 256 {
            errs.push("role_map", "must have at most 256 groups");
        }
        for (group, roles) in role_map {
            if group.is_empty() || group.len() > 256 || group.chars().any(char::is_control) {
                errs.push("role_map", "group names must be 1 to 256 characters");
                continue;
            }
            let field = format!("role_map.{group}");
            if let Some(roles) = self.existing_roles(errs, &field, roles, &snap) {
                every.extend(roles.iter().cloned());
                map.insert(group.clone(), roles);
            }
        }
        let defaults = self
            .existing_roles(errs, "default_roles", default_roles, &snap)
            .unwrap_or_default();
        every.extend(defaults.iter().cloned());
        Ok((map, defaults, every))
    }

    fn require_roles_held(&self, caller: &Caller, roles: &[RoleName]) -> Result<()> {
        if roles.is_empty() {
            return Ok(());
        }
        let snap = self.snapshot()?;
        let wanted = snap.effective(std::iter::empty(), roles.iter());
        caller.require_superset(&snap, &wanted)
    }

    fn seal_text(&self, context: &str, plaintext: &str) -> Result<String> {
        use base64::Engine;
        let sealed =
            self.master_key()?
                .seal(context, plaintext.as_bytes(), self.inner.random.as_ref())?;
        Ok(base64::engine::general_purpose::STANDARD.encode(sealed))
    }

    fn open_text(&self, context: &str, sealed: &str) -> Result<String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| Error::internal("a sealed value is not base64"))?;
        let plain = self.master_key()?.open(context, &bytes)?;
        String::from_utf8(plain).map_err(|_| Error::internal("a sealed value is not text"))
    }

    fn random_text(&self) -> Result<String> {
        use base64::Engine;
        let mut bytes = [0u8; RANDOM_BYTES];
        self.inner.random.fill(&mut bytes)?;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Creates a connection for application `app_id` (`idp.write`). For OpenID Connect the
    /// provider's discovery document is fetched now: unreachable, or naming another issuer,
    /// is a 400.
    pub fn create_idp(&self, caller: &Caller, app_id: &str, req: NewIdp) -> Result<IdpInfo> {
        caller.require(&*self.snapshot()?, "idp.write")?;
        let app = self.visible_app(caller, app_id)?;
        let mut errs = FieldErrors::default();
        let slug = validate_slug(&mut errs, &req.slug);
        let kind = IdpKind::parse(&req.kind);
        if kind.is_none() {
            errs.push("kind", "must be \"oidc\" or \"saml\"");
        }
        let (role_map, default_roles, every) = self.checked_role_map(
            &mut errs,
            &req.role_map.clone().unwrap_or_default(),
            req.default_roles.as_deref().unwrap_or_default(),
        )?;
        let email_domains =
            validate_domains(&mut errs, req.email_domains.as_deref().unwrap_or_default());
        let id = self.new_id(IDP_ID_PREFIX, 16)?;
        let protocol = match kind {
            Some(IdpKind::Oidc) => self.oidc_protocol(&mut errs, &id, &req)?,
            Some(IdpKind::Saml) => {
                if req.issuer.is_some() || req.client_id.is_some() || req.client_secret.is_some() {
                    errs.push("kind", "issuer, client_id and client_secret are for oidc");
                }
                match req.idp_metadata_xml.as_deref() {
                    None => {
                        errs.push("idp_metadata_xml", "is required for saml");
                        None
                    }
                    Some(xml) => match saml::parse_idp_metadata(xml) {
                        Ok(_) => Some(IdpProtocol::Saml(SamlSettings {
                            idp_metadata_xml: xml.to_owned(),
                            groups_attribute: req
                                .groups_attribute
                                .as_deref()
                                .and_then(|g| validate_text(&mut errs, "groups_attribute", g, 256)),
                            allow_idp_initiated: req.allow_idp_initiated.unwrap_or(false),
                        })),
                        Err(e) => {
                            errs.push("idp_metadata_xml", e.to_string());
                            None
                        }
                    },
                }
            }
            None => None,
        };
        errs.finish()?;
        self.require_roles_held(caller, &every)?;
        let (Some(slug), Some(protocol)) = (slug, protocol) else {
            return Err(Error::internal("validation passed without values"));
        };
        let idp = IdpRecord {
            id,
            app_id: app.id.clone(),
            slug,
            status: IdpStatus::Active,
            created_at: self.inner.clock.now(),
            role_map,
            default_roles,
            email_domains,
            protocol,
        };
        let audit = Audit::success("idp.create", idp.id.clone())
            .app(app.id)
            .details(serde_json::json!({"slug": idp.slug, "kind": idp.kind().as_str()}));
        self.commit(Some(caller), audit, vec![Mutation::PutIdp(idp.clone())])?;
        self.idp_info(&idp)
    }

    /// The OIDC settings of a new connection, with its discovery document fetched.
    fn oidc_protocol(
        &self,
        errs: &mut FieldErrors,
        id: &str,
        req: &NewIdp,
    ) -> Result<Option<IdpProtocol>> {
        if req.idp_metadata_xml.is_some() {
            errs.push("kind", "idp_metadata_xml is for saml");
        }
        let issuer = match req.issuer.as_deref() {
            None => {
                errs.push("issuer", "is required for oidc");
                None
            }
            Some(i) => match oidc::validate_issuer_url(i) {
                Ok(()) => Some(i.to_owned()),
                Err(e) => {
                    errs.push("issuer", e.to_string());
                    None
                }
            },
        };
        let client_id = match req.client_id.as_deref() {
            None => {
                errs.push("client_id", "is required for oidc");
                None
            }
            Some(c) => validate_text(errs, "client_id", c, 256),
        };
        let secret = req
            .client_secret
            .as_deref()
            .and_then(|s| validate_text(errs, "client_secret", s, 1024));
        let scopes = validate_scopes_list(
            errs,
            req.scopes.as_deref().unwrap_or(&[
                "openid".to_owned(),
                "email".to_owned(),
                "profile".to_owned(),
            ]),
        );
        let algorithms = req.algorithms.clone().unwrap_or_else(|| {
            ["RS256", "ES256", "EdDSA"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        });
        if let Err(e) = oidc::check_algorithms(&algorithms) {
            errs.push("algorithms", e.to_string());
        }
        let groups_claim = req
            .groups_claim
            .as_deref()
            .and_then(|g| validate_text(errs, "groups_claim", g, 128));
        let (Some(issuer), Some(client_id)) = (issuer, client_id) else {
            return Ok(None);
        };
        if !errs.is_empty() {
            return Ok(None);
        }
        let transport = Arc::clone(&self.sso_state()?.config.transport);
        let discovery = match oidc::discover(transport.as_ref(), &issuer) {
            Ok(d) => d,
            Err(e) => {
                errs.push("issuer", e.to_string());
                return Ok(None);
            }
        };
        let sealed_client_secret = match secret {
            Some(s) => Some(self.seal_text(&format!("{id}:client_secret"), &s)?),
            None => None,
        };
        Ok(Some(IdpProtocol::Oidc(OidcSettings {
            issuer,
            client_id,
            sealed_client_secret,
            scopes,
            groups_claim,
            algorithms,
            discovery,
            discovered_at: self.inner.clock.now(),
        })))
    }

    /// The connection `id` if the caller may see it; `NotFound` otherwise.
    fn visible_idp(&self, caller: &Caller, id: &str) -> Result<IdpRecord> {
        let not_found =
            || Error::NotFound(format!("identity provider {} does not exist", shown(id)));
        let idp = self.inner.store.get_idp(id)?.ok_or_else(not_found)?;
        if caller.sees_app(&idp.app_id) {
            Ok(idp)
        } else {
            Err(not_found())
        }
    }

    /// The connections of an application (`idp.read`).
    pub fn list_idps(&self, caller: &Caller, app_id: &str) -> Result<Vec<IdpInfo>> {
        caller.require(&*self.snapshot()?, "idp.read")?;
        let app = self.visible_app(caller, app_id)?;
        self.inner
            .store
            .list_idps(Some(&app.id))?
            .iter()
            .map(|i| self.idp_info(i))
            .collect()
    }

    /// One connection (`idp.read`).
    pub fn get_idp(&self, caller: &Caller, id: &str) -> Result<IdpInfo> {
        caller.require(&*self.snapshot()?, "idp.read")?;
        self.idp_info(&self.visible_idp(caller, id)?)
    }

    /// Changes a connection (`idp.write`). Disabling it ends the sessions started through it.
    pub fn update_idp(&self, caller: &Caller, id: &str, req: IdpUpdate) -> Result<IdpInfo> {
        caller.require(&*self.snapshot()?, "idp.write")?;
        let stored = self.visible_idp(caller, id)?;
        let mut idp = stored.clone();
        let mut errs = FieldErrors::default();
        if let Some(s) = req.status.as_deref() {
            match s {
                "active" => idp.status = IdpStatus::Active,
                "disabled" => idp.status = IdpStatus::Disabled,
                _ => errs.push("status", "must be \"active\" or \"disabled\""),
            }
        }
        let mut every = Vec::new();
        if req.role_map.is_some() || req.default_roles.is_some() {
            let given_map: BTreeMap<String, Vec<String>> = match &req.role_map {
                Some(m) => m.clone(),
                None => stored
                    .role_map
                    .iter()
                    .map(|(g, r)| (g.clone(), r.iter().map(ToString::to_string).collect()))
                    .collect(),
            };
            let given_defaults: Vec<String> = match &req.default_roles {
                Some(d) => d.clone(),
                None => stored
                    .default_roles
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            };
            let (map, defaults, all) =
                self.checked_role_map(&mut errs, &given_map, &given_defaults)?;
            idp.role_map = map;
            idp.default_roles = defaults;
            every = all;
        }
        if let Some(d) = &req.email_domains {
            idp.email_domains = validate_domains(&mut errs, d);
        }
        match &mut idp.protocol {
            IdpProtocol::Oidc(o) => {
                if req.idp_metadata_xml.is_some()
                    || req.groups_attribute.is_some()
                    || req.allow_idp_initiated.is_some()
                {
                    errs.push(
                        "kind",
                        "idp_metadata_xml, groups_attribute and allow_idp_initiated are for saml",
                    );
                }
                if let Some(s) = &req.scopes {
                    o.scopes = validate_scopes_list(&mut errs, s);
                }
                if let Some(a) = &req.algorithms {
                    match oidc::check_algorithms(a) {
                        Ok(()) => o.algorithms = a.clone(),
                        Err(e) => errs.push("algorithms", e.to_string()),
                    }
                }
                if let Some(g) = req.groups_claim.as_deref() {
                    o.groups_claim = validate_text(&mut errs, "groups_claim", g, 128);
                }
                if let Some(s) = req.client_secret.as_deref() {
                    if let Some(s) = validate_text(&mut errs, "client_secret", s, 1024) {
                        o.sealed_client_secret =
                            Some(self.seal_text(&format!("{}:client_secret", stored.id), &s)?);
                    }
                }
            }
            IdpProtocol::Saml(s) => {
                if req.client_secret.is_some()
                    || req.scopes.is_some()
                    || req.algorithms.is_some()
                    || req.groups_claim.is_some()
                {
                    errs.push(
                        "kind",
                        "client_secret, scopes, algorithms and groups_claim are for oidc",
                    );
                }
                if let Some(xml) = req.idp_metadata_xml.as_deref() {
                    match saml::parse_idp_metadata(xml) {
                        Ok(_) => s.idp_metadata_xml = xml.to_owned(),
                        Err(e) => errs.push("idp_metadata_xml", e.to_string()),
                    }
                }
                if let Some(g) = req.groups_attribute.as_deref() {
                    s.groups_attribute = validate_text(&mut errs, "groups_attribute", g, 256);
                }
                if let Some(a) = req.allow_idp_initiated {
                    s.allow_idp_initiated = a;
                }
            }
        }
        errs.finish()?;
        self.require_roles_held(caller, &every)?;
        if idp == stored {
            return self.idp_info(&idp);
        }
        let mut batch = vec![Mutation::PutIdp(idp.clone())];
        let disabled = idp.status == IdpStatus::Disabled && stored.status == IdpStatus::Active;
        if disabled {
            batch.push(Mutation::RevokeSessions {
                selector: SessionSelector::Idp(idp.id.clone()),
                at: self.inner.clock.now(),
                reason: "idp_disabled".to_owned(),
            });
        }
        let audit = Audit::success("idp.update", idp.id.clone())
            .app(idp.app_id.clone())
            .details(serde_json::json!({
                "status": idp.status.as_str(),
                "sessions_ended": disabled,
                "client_secret_changed": req.client_secret.is_some(),
            }));
        self.commit(Some(caller), audit, batch)?;
        self.idp_info(&idp)
    }

    /// Deletes a connection (`idp.write`): the sessions started through it end, and the
    /// identities linked through it are removed (their users stay).
    pub fn delete_idp(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(&*self.snapshot()?, "idp.write")?;
        let idp = self.visible_idp(caller, id)?;
        let batch = vec![
            Mutation::RevokeSessions {
                selector: SessionSelector::Idp(idp.id.clone()),
                at: self.inner.clock.now(),
                reason: "idp_deleted".to_owned(),
            },
            Mutation::DeleteIdp(idp.id.clone()),
        ];
        let audit = Audit::success("idp.delete", idp.id.clone())
            .app(idp.app_id.clone())
            .details(serde_json::json!({"slug": idp.slug}));
        self.commit(Some(caller), audit, batch)?;
        if let (IdpProtocol::Oidc(o), Ok(state)) = (&idp.protocol, self.sso_state()) {
            state.keys.forget(&o.issuer);
        }
        Ok(())
    }

    /// The login URL of the active provider whose email domains hold `email`'s domain.
    pub fn sso_discover(&self, email: &str) -> Result<String> {
        let domain = email
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .filter(|d| !d.is_empty() && d.len() <= 253)
            .ok_or_else(|| Error::invalid("email", "must be an email address"))?;
        let found = self
            .inner
            .store
            .list_idps(None)?
            .into_iter()
            .find(|i| i.status == IdpStatus::Active && i.email_domains.contains(&domain));
        match found {
            Some(idp) => self.sso_url(&idp.slug, "login"),
            None => Err(Error::NotFound(format!(
                "no identity provider serves the domain {}",
                shown(&domain)
            ))),
        }
    }

    /// The active connection with `slug`, of the wanted kind.
    /// The connection with `slug` (of `kind`, when given); `NotFound` otherwise.
    fn idp_with_slug(&self, slug: &str, kind: Option<IdpKind>) -> Result<IdpRecord> {
        match self.inner.store.idp_by_slug(slug)? {
            Some(idp) if kind.is_none_or(|k| idp.kind() == k) => Ok(idp),
            _ => Err(Error::NotFound(format!(
                "identity provider {} does not exist",
                shown(slug)
            ))),
        }
    }

    /// The service provider's side of the SAML connection `slug`, for `with`.
    fn with_sp<T>(&self, slug: &str, with: impl FnOnce(&saml::SpSettings<'_>) -> T) -> Result<T> {
        let acs = self.sso_url(slug, "acs")?;
        let entity = self.sso_url(slug, "metadata")?;
        Ok(with(&saml::SpSettings {
            entity_id: &entity,
            acs_url: &acs,
        }))
    }

    fn oidc_client_secret(&self, idp: &IdpRecord, o: &OidcSettings) -> Result<Option<String>> {
        match &o.sealed_client_secret {
            Some(sealed) => Ok(Some(
                self.open_text(&format!("{}:client_secret", idp.id), sealed)?,
            )),
            None => Ok(None),
        }
    }

    /// Starts a login through the provider `slug`: records the attempt and gives the
    /// provider URL to redirect to, with the browser-binding cookie's value.
    pub fn sso_login(&self, slug: &str, return_to: Option<&str>) -> Result<LoginRedirect> {
        if let Some(r) = return_to {
            validate_return_to(r)?;
        }
        let idp = self.idp_with_slug(slug, None)?;
        require_active(&idp)?;
        let idp = self.fresh_discovery(idp)?;
        let now = self.inner.clock.now();
        let state = self.random_text()?;
        let browser_binding = self.random_text()?;
        let mut attempt = LoginAttempt {
            id: bound_hash("state", &state),
            idp_id: idp.id.clone(),
            browser_hash: bound_hash("browser", &browser_binding),
            nonce: None,
            sealed_pkce_verifier: None,
            saml_request_id: None,
            return_to: return_to.map(str::to_owned),
            created_at: now,
            expires_at: now.plus_secs(LOGIN_ATTEMPT_SECS),
        };
        let location = match &idp.protocol {
            IdpProtocol::Oidc(o) => {
                let nonce = self.random_text()?;
                let verifier = self.random_text()?;
                let secret = self.oidc_client_secret(&idp, o)?;
                let redirect_uri = self.sso_url(&idp.slug, "callback")?;
                let client = oidc_client(o, secret.as_deref(), &redirect_uri);
                let url = oidc::authorization_url(&client, &state, &nonce, &verifier)
                    .map_err(sso_error)?;
                attempt.sealed_pkce_verifier =
                    Some(self.seal_text(&format!("{}:pkce", attempt.id), &verifier)?);
                attempt.nonce = Some(nonce);
                url
            }
            IdpProtocol::Saml(s) => {
                let started = self
                    .with_sp(&idp.slug, |sp| {
                        saml::start_login(sp, &s.idp_metadata_xml, &state, now)
                    })?
                    .map_err(sso_error)?;
                attempt.saml_request_id = Some(started.correlation);
                started.url
            }
        };
        // Expired attempts are purged by the periodic sweep (`retire_due_keys`), never
        // here: this endpoint needs no credential.
        self.inner
            .store
            .apply(&[Mutation::InsertLoginAttempt(attempt)])?;
        Ok(LoginRedirect {
            location,
            browser_binding,
        })
    }

    /// The connection with its discovery document fetched again when it is older than
    /// [`DISCOVERY_TTL_SECS`] (endpoints and key-set locations move). A failed fetch, or a
    /// document that names another issuer, keeps the stored one: the provider's keys are
    /// still checked at every login.
    fn fresh_discovery(&self, mut idp: IdpRecord) -> Result<IdpRecord> {
        let now = self.inner.clock.now();
        let IdpProtocol::Oidc(o) = &mut idp.protocol else {
            return Ok(idp);
        };
        if now < o.discovered_at.plus_secs(DISCOVERY_TTL_SECS) {
            return Ok(idp);
        }
        let transport = Arc::clone(&self.sso_state()?.config.transport);
        match oidc::discover(transport.as_ref(), &o.issuer) {
            Ok(document) => {
                o.discovery = document;
                o.discovered_at = now;
                self.inner.store.apply(&[Mutation::PutIdp(idp.clone())])?;
            }
            Err(e) => {
                tracing::warn!(idp = %idp.id, error = %e, "the provider's discovery document could not be refreshed; the stored one is used");
            }
        }
        Ok(idp)
    }

    /// Consumes the attempt named by `state` after checking it belongs to `idp`, is not
    /// expired and was started by this browser. Used once, whatever follows.
    fn take_attempt(
        &self,
        idp: &IdpRecord,
        state: Option<&str>,
        browser: &BrowserContext,
    ) -> Result<LoginAttempt> {
        let invalid = |m: &str| Error::invalid("state", m.to_owned());
        let state = state
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| invalid("is missing"))?;
        let id = bound_hash("state", state);
        let attempt = self
            .inner
            .store
            .get_login_attempt(&id)?
            .filter(|a| a.idp_id == idp.id)
            .ok_or_else(|| invalid("names no login in progress (unknown, or already used)"))?;
        let binding = browser.binding.as_deref().ok_or_else(|| {
            invalid("arrived without the login cookie of the browser that started it")
        })?;
        let presented = bound_hash("browser", binding);
        if !bool::from(presented.as_bytes().ct_eq(attempt.browser_hash.as_bytes())) {
            return Err(invalid("belongs to a login started by another browser"));
        }
        match self.inner.store.apply(&[Mutation::ConsumeLoginAttempt(id)]) {
            Ok(()) => {}
            Err(crate::error::StoreError::Conflict(_)) => {
                return Err(invalid(
                    "names no login in progress (unknown, or already used)",
                ))
            }
            Err(e) => return Err(e.into()),
        }
        if self.inner.clock.now() >= attempt.expires_at {
            return Err(invalid("names a login that expired (over 10 minutes)"));
        }
        Ok(attempt)
    }

    /// Refuses a client address locked out by too many failed logins (the failure gate of
    /// bearer authentication, counted apart under `sso:<ip>`).
    fn login_gate(&self, browser: &BrowserContext) -> Result<()> {
        let Some(ip) = browser.ip else {
            return Ok(());
        };
        let now = self.inner.clock.now();
        match self.inner.counters.locked_for(&format!("sso:{ip}"), now) {
            Some(secs) => Err(Error::RateLimited {
                retry_after_secs: secs.max(1),
            }),
            None => Ok(()),
        }
    }

    /// Audits a failed login step, counts it against the client address, and passes its
    /// error on. A provider that cannot be reached is not the client's failure.
    fn login_failed(&self, idp: Option<&IdpRecord>, browser: &BrowserContext, e: Error) -> Error {
        if let (Some(ip), false) = (browser.ip, matches!(e, Error::Unavailable { .. })) {
            let now = self.inner.clock.now();
            let _ = self
                .inner
                .counters
                .record_failure(&format!("sso:{ip}"), now);
        }
        let mut audit = Audit::success("sso.login", idp.map_or("unknown", |i| i.id.as_str()))
            .failure()
            .actor("anonymous")
            .details(serde_json::json!({
                "reason": failure_reason(&e),
                "idp_kind": idp.map(|i| i.kind().as_str()),
            }));
        if let Some(i) = idp {
            audit = audit.app(i.app_id.clone());
        }
        if let Some(ip) = browser.ip {
            audit = audit.ip(ip);
        }
        let _ = self.commit(None, audit, Vec::new());
        e
    }

    /// Finishes an OpenID Connect login (`GET /v1/sso/{slug}/callback`).
    pub fn sso_oidc_callback(
        &self,
        slug: &str,
        callback: &OidcCallback,
        browser: &BrowserContext,
    ) -> Result<LoginDone> {
        let idp = self.idp_with_slug(slug, Some(IdpKind::Oidc))?;
        self.login_gate(browser)?;
        let result = self.oidc_callback_inner(&idp, callback, browser);
        result.map_err(|e| self.login_failed(Some(&idp), browser, e))
    }

    fn oidc_callback_inner(
        &self,
        idp: &IdpRecord,
        callback: &OidcCallback,
        browser: &BrowserContext,
    ) -> Result<LoginDone> {
        let attempt = self.take_attempt(idp, callback.state.as_deref(), browser)?;
        require_active(idp)?;
        if let Some(err) = callback.error.as_deref() {
            let code: String = err
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Err(Error::invalid(
                "error",
                format!("the identity provider refused the login ({code})"),
            ));
        }
        let code = callback
            .code
            .as_deref()
            .filter(|c| !c.is_empty() && c.len() <= 4096)
            .ok_or_else(|| Error::invalid("code", "is missing"))?;
        let IdpProtocol::Oidc(o) = &idp.protocol else {
            return Err(Error::internal("an oidc login without oidc settings"));
        };
        let (Some(nonce), Some(sealed)) = (&attempt.nonce, &attempt.sealed_pkce_verifier) else {
            return Err(Error::invalid("state", "names a login of another kind"));
        };
        let verifier = self.open_text(&format!("{}:pkce", attempt.id), sealed)?;
        let secret = self.oidc_client_secret(idp, o)?;
        let redirect_uri = self.sso_url(&idp.slug, "callback")?;
        let client = oidc_client(o, secret.as_deref(), &redirect_uri);
        let state = self.sso_state()?;
        let result = oidc::finish_login(
            state.config.transport.as_ref(),
            &state.keys,
            &client,
            &oidc::Callback {
                code,
                iss: callback.iss.as_deref(),
            },
            &oidc::Expected {
                nonce,
                pkce_verifier: &verifier,
            },
            self.inner.clock.now(),
        )
        .map_err(sso_error)?;
        self.complete_login(
            idp,
            result.identity,
            result.refresh_token,
            browser,
            attempt.return_to,
        )
    }

    /// Finishes a SAML login (`POST /v1/sso/{slug}/acs`).
    pub fn sso_saml_acs(
        &self,
        slug: &str,
        saml_response: &str,
        relay_state: Option<&str>,
        browser: &BrowserContext,
    ) -> Result<LoginDone> {
        let idp = self.idp_with_slug(slug, Some(IdpKind::Saml))?;
        self.login_gate(browser)?;
        let result = self.saml_acs_inner(&idp, saml_response, relay_state, browser);
        result.map_err(|e| self.login_failed(Some(&idp), browser, e))
    }

    fn saml_acs_inner(
        &self,
        idp: &IdpRecord,
        saml_response: &str,
        relay_state: Option<&str>,
        browser: &BrowserContext,
    ) -> Result<LoginDone> {
        let IdpProtocol::Saml(s) = &idp.protocol else {
            return Err(Error::internal("a saml login without saml settings"));
        };
        let solicited = relay_state.is_some_and(|r| {
            self.inner
                .store
                .get_login_attempt(&bound_hash("state", r))
                .ok()
                .flatten()
                .is_some()
        });
        let attempt = if solicited || !s.allow_idp_initiated {
            Some(self.take_attempt(idp, relay_state, browser)?)
        } else {
            None
        };
        require_active(idp)?;
        let correlation = attempt.as_ref().and_then(|a| a.saml_request_id.as_deref());
        if attempt.is_some() && correlation.is_none() {
            return Err(Error::invalid(
                "RelayState",
                "names a login of another kind",
            ));
        }
        let now = self.inner.clock.now();
        let expected = saml::Expected {
            correlation,
            allow_idp_initiated: s.allow_idp_initiated,
            groups_attribute: s.groups_attribute.as_deref(),
            max_skew_secs: SAML_SKEW_SECS,
        };
        let verified = self
            .with_sp(&idp.slug, |sp| {
                saml::finish_login(sp, &s.idp_metadata_xml, saml_response, &expected, now)
            })?
            .map_err(sso_error)?;
        // An assertion is accepted once: its id is remembered until it expires.
        let claim = Mutation::ClaimReplay {
            id: format!("saml:{}:{}", idp.id, verified.assertion_id),
            expires_at: verified.not_on_or_after.plus_secs(SAML_SKEW_SECS),
        };
        match self.inner.store.apply(&[claim]) {
            Ok(()) => {}
            Err(crate::error::StoreError::Conflict(_)) => {
                return Err(Error::invalid(
                    "SAMLResponse",
                    "was already used (a replayed assertion)",
                ))
            }
            Err(e) => return Err(e.into()),
        }
        self.complete_login(
            idp,
            verified.identity,
            None,
            browser,
            attempt.and_then(|a| a.return_to),
        )
    }

    /// The roles a login maps the user to: the defaults and those of each group, which
    /// still exist.
    fn mapped_roles(&self, idp: &IdpRecord, groups: &[String]) -> Result<Vec<RoleName>> {
        let snap = self.snapshot()?;
        let mut out: Vec<RoleName> = Vec::new();
        let mapped = groups
            .iter()
            .filter_map(|g| idp.role_map.get(g))
            .flatten()
            .chain(idp.default_roles.iter());
        for role in mapped {
            if snap.policy().roles.contains_key(role) && !out.contains(role) {
                out.push(role.clone());
            }
        }
        Ok(out)
    }

    /// Finds or creates the user of a verified identity, sets their mapped roles, and
    /// starts a session.
    fn complete_login(
        &self,
        idp: &IdpRecord,
        identity: ExternalIdentity,
        upstream_refresh: Option<String>,
        browser: &BrowserContext,
        return_to: Option<String>,
    ) -> Result<LoginDone> {
        let now = self.inner.clock.now();
        if identity.subject.is_empty() || identity.subject.len() > 1024 {
            return Err(Error::Unauthenticated(
                "the identity provider gave no usable subject".to_owned(),
            ));
        }
        let existing = self
            .inner
            .store
            .user_by_identity(&idp.id, &identity.subject)?;
        let new_user = existing.is_none();
        let mut user = match existing {
            Some(u) => u,
            None => UserRecord {
                id: self.new_id(USER_ID_PREFIX, 16)?,
                app_id: idp.app_id.clone(),
                email: None,
                name: None,
                status: UserStatus::Active,
                roles: Vec::new(),
                mapped_roles: self.mapped_roles(idp, &[])?,
                grants: Vec::new(),
                identities: vec![Identity {
                    idp_id: idp.id.clone(),
                    subject: identity.subject.clone(),
                }],
                created_at: now,
                last_login_at: None,
            },
        };
        if user.status == UserStatus::Disabled {
            return Err(Error::Forbidden {
                required: "an active user".to_owned(),
            });
        }
        let clip = |s: String| s.chars().filter(|c| !c.is_control()).take(256).collect();
        if let Some(email) = identity.email {
            user.email = Some(clip(email));
        }
        if let Some(name) = identity.name {
            user.name = Some(clip(name));
        }
        if let Some(groups) = &identity.groups {
            user.mapped_roles = self.mapped_roles(idp, groups)?;
        }
        user.last_login_at = Some(now);
        let (token, mut session) = self.new_session(
            &user,
            &idp.id,
            browser.ip,
            browser.user_agent.as_deref(),
            None,
        )?;
        if let Some(refresh) = upstream_refresh {
            session.sealed_upstream_refresh =
                Some(self.seal_text(&format!("{}:upstream", session.id), &refresh)?);
            session.revalidated_at = Some(now);
        }
        let mut audit = Audit::success("sso.login", user.id.clone())
            .app(user.app_id.clone())
            .actor("anonymous")
            .subject(user.id.clone())
            .personal("email", user.email.as_deref())
            .personal("user_agent", session.user_agent.as_deref())
            .details(serde_json::json!({
                "idp_id": idp.id,
                "idp_kind": idp.kind().as_str(),
                "session_id": session.id,
                "new_user": new_user,
                "mapped_roles": user.mapped_roles,
            }));
        if let Some(ip) = browser.ip {
            audit = audit.ip(ip);
        }
        self.commit(
            None,
            audit,
            vec![
                Mutation::PutUser(user.clone()),
                Mutation::InsertSession(session.clone()),
            ],
        )?;
        Ok(LoginDone {
            session: StartedSession {
                token,
                user: UserInfo::from_record(&user),
                session: SessionInfo::from_record(&session),
            },
            return_to,
        })
    }

    /// The service provider's metadata of the SAML connection `slug`.
    pub fn sso_saml_metadata(&self, slug: &str) -> Result<String> {
        let idp = self.idp_with_slug(slug, Some(IdpKind::Saml))?;
        self.with_sp(&idp.slug, saml::sp_metadata)?
            .map_err(sso_error)
    }

    /// Re-checks the user of session `id` at the provider with the upstream refresh token.
    /// `Ok(false)` when the provider refused (the session is then ended); an unreachable
    /// provider leaves the session as it is, to be re-checked at its next use.
    pub(crate) fn revalidate_session(&self, id: &str, now: Timestamp) -> Result<bool> {
        let store = &self.inner.store;
        let Some(session) = store.get_session(id)? else {
            return Ok(false);
        };
        if session.revoked_at.is_some() {
            return Ok(false);
        }
        let Some(sealed) = &session.sealed_upstream_refresh else {
            return Ok(true);
        };
        let Some(idp) = store.get_idp(&session.idp_id)? else {
            return Ok(false);
        };
        let IdpProtocol::Oidc(o) = &idp.protocol else {
            return Ok(true);
        };
        let Some(user) = store.get_user(&session.user_id)? else {
            return Ok(false);
        };
        let Some(subject) = user
            .identities
            .iter()
            .find(|i| i.idp_id == idp.id)
            .map(|i| i.subject.clone())
        else {
            return Ok(false);
        };
        let refresh = self.open_text(&format!("{}:upstream", session.id), sealed)?;
        let secret = self.oidc_client_secret(&idp, o)?;
        let redirect_uri = self.sso_url(&idp.slug, "callback")?;
        let client = oidc_client(o, secret.as_deref(), &redirect_uri);
        let state = self.sso_state()?;
        match oidc::revalidate(
            state.config.transport.as_ref(),
            &state.keys,
            &client,
            &refresh,
            &subject,
            now,
        ) {
            Ok(r) => {
                let mut updated = session.clone();
                updated.revalidated_at = Some(now);
                if let Some(rotated) = r.refresh_token {
                    updated.sealed_upstream_refresh =
                        Some(self.seal_text(&format!("{}:upstream", session.id), &rotated)?);
                }
                store.apply(&[Mutation::UpdateSession(updated)])?;
                Ok(true)
            }
            Err(SsoError::Unauthenticated(reason)) => {
                let audit = Audit::success("session.revoke", session.id.clone())
                    .app(session.app_id.clone())
                    .actor("system")
                    .subject(session.user_id.clone())
                    .details(serde_json::json!({
                        "user_id": session.user_id,
                        "reason": "upstream_refused",
                        "detail": reason,
                    }));
                self.commit(
                    None,
                    audit,
                    vec![Mutation::RevokeSessions {
                        selector: SessionSelector::Id(session.id.clone()),
                        at: now,
                        reason: "upstream_refused".to_owned(),
                    }],
                )?;
                Ok(false)
            }
            Err(SsoError::Invalid(_) | SsoError::Unavailable(_)) => Ok(true),
        }
    }
}

/// `Forbidden` unless the connection accepts logins.
fn require_active(idp: &IdpRecord) -> Result<()> {
    if idp.status == IdpStatus::Disabled {
        return Err(Error::Forbidden {
            required: "an active identity provider".to_owned(),
        });
    }
    Ok(())
}

/// The relying-party view of a connection.
fn oidc_client<'a>(
    o: &'a OidcSettings,
    secret: Option<&'a str>,
    redirect_uri: &'a str,
) -> oidc::OidcClient<'a> {
    oidc::OidcClient {
        issuer: &o.issuer,
        client_id: &o.client_id,
        client_secret: secret,
        redirect_uri,
        scopes: &o.scopes,
        algorithms: &o.algorithms,
        groups_claim: o.groups_claim.as_deref(),
        discovery: &o.discovery,
    }
}
