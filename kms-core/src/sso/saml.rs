//! The SAML 2.0 service provider: kms's side of SP-initiated (and, when a connection allows
//! it, IdP-initiated) Web Browser SSO with the HTTP-Redirect binding for the request and the
//! HTTP-POST binding for the response (ADR 0013).
//!
//! The XML signature, canonicalization and the library's own checks are `saml-rs` (pinned
//! exactly). Around it this module applies a strict policy of its own, checked on its own
//! parse of the response as well as on what `saml-rs` extracted from the signed bytes:
//!
//! - the response is at most [`MAX_SAML_RESPONSE_BYTES`], has no DTD, entity declaration,
//!   comment or processing instruction, and is one `samlp:Response` holding exactly one
//!   `saml:Assertion` (as its direct child) and no `EncryptedAssertion` (not supported);
//! - the Assertion itself is signed — a signature over the Response alone is refused — with
//!   RSA-SHA256/384/512 by a key from the IdP's metadata (never a certificate the response
//!   brings), and the assertion consumed is the one the signature covers (against signature
//!   wrapping: its `ID` must be that of the single assertion in the document);
//! - the status is `Success`; the issuer (of the assertion, and of the response when it
//!   names one) is the IdP's entity id; the audience includes the SP's entity id; the
//!   `Destination` (when present) and the bearer confirmation's `Recipient` are the ACS URL;
//!   the bearer confirmation's `NotOnOrAfter` and the `Conditions` window hold at `now`
//!   within `max_skew_secs`;
//! - `InResponseTo` (on the response and on the bearer confirmation) is the request this
//!   login started; a response to no request is accepted only when the connection allows
//!   IdP-initiated login, and then must name no request;
//! - the `NameID` is not empty and not `transient` (a new identifier at every login would
//!   make every login a new account).
//!
//! Replays are the caller's to refuse: [`finish_login`] returns the assertion's id and the
//! instant until which it must stay in the replay cache. `saml-rs`'s own replay cache is not
//! used (each call gives it [`ReplayPolicy::DisabledForCompatibility`]).
//!
//! Everything here is pure: no I/O, no clock (times come in as [`Timestamp`]); the only
//! outside input is the operating system's random source for the AuthnRequest's id.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::XmlVersion;
use saml_rs::constants::{Binding, CertUse};
use saml_rs::error::{SubjectConfirmationReason, TimeWindowField};
use saml_rs::{
    AcsEndpoint, AssertionSignaturePolicy, AudienceValidationPolicy, AuthnRequestSigningPolicy,
    BrowserInput, ClockSkew, EndpointUrl, EntityId, FormField, IdpDescriptor, LogoutPolicy,
    MessageId, MetadataTrustPolicy, NameIdCreationPolicy, NameIdFormat, PendingAuthnRequest,
    RelayStateParam, ReplayPolicy, ResponseSignaturePolicy, Saml, SamlError, SamlValidationContext,
    SpConfig, SpValidationPolicy, SsoResponse, SsoResponseBinding, SsoSession,
    VerifiedXmlSignatureCoverage, XmlSignatureProfile,
};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use x509_cert::der::Decode as _;

use super::{ExternalIdentity, SsoError};
use crate::clock::Timestamp;
use crate::random::{OsRandom, SecureRandom};

/// The largest IdP metadata document accepted, in bytes.
pub const MAX_IDP_METADATA_BYTES: usize = 256 * 1024;
/// The largest SAML response accepted, in bytes of XML (after base64 decoding).
pub const MAX_SAML_RESPONSE_BYTES: usize = 512 * 1024;
/// The longest `RelayState` the HTTP bindings allow, in bytes (SAML Bindings 3.4.3).
pub const MAX_RELAY_STATE_BYTES: usize = 80;
/// The largest clock skew [`Expected::max_skew_secs`] may allow.
pub const MAX_SKEW_SECS: i64 = 600;

/// The SAML protocol namespace.
const NS_PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
/// The SAML assertion namespace.
const NS_ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
/// The HTTP-POST binding, the one the ACS accepts responses on.
const BINDING_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
/// The top-level status of a response that authenticated the user.
const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
/// The bearer subject confirmation method of Web Browser SSO.
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
/// Signature algorithms accepted on the assertion (also enforced by saml-rs's strict profile).
const ALLOWED_SIGNATURE_ALGORITHMS: &[&str] = &[
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
];
/// The object identifier of an RSA public key in a certificate.
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
/// Attributes read for the email, in order, when the NameID is not an email address.
const EMAIL_ATTRIBUTES: &[&str] = &["email", "mail", "urn:oid:0.9.2342.19200300.100.1.3"];
/// Attributes read for the display name, in order.
const NAME_ATTRIBUTES: &[&str] = &["name", "displayName", "cn"];
/// The deepest element nesting our own scans accept.
const MAX_DEPTH: usize = 128;
/// The longest correlation accepted back from the caller.
const MAX_CORRELATION_BYTES: usize = 256;
/// The longest excerpt of provider-supplied text quoted in an error message.
const MAX_QUOTED_CHARS: usize = 120;

/// Base64 as IdPs post it: the standard alphabet, padding optional.
const BASE64_LENIENT_PADDING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// This service provider, as one SSO connection presents it to its IdP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpSettings<'a> {
    /// The SP's entity id (the audience the IdP must name), e.g. the metadata URL.
    pub entity_id: &'a str,
    /// The assertion consumer service URL the IdP posts responses to.
    pub acs_url: &'a str,
}

/// What kms needs from IdP metadata; validated when an admin creates a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpMetadata {
    /// The IdP's entity id: the issuer its assertions must name.
    pub entity_id: String,
    /// The IdP's single sign-on URL for the HTTP-Redirect binding.
    pub sso_redirect_url: String,
}

/// A login started by [`start_login`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedRequest {
    /// Where to redirect the browser: the IdP's SSO URL with `SAMLRequest` and `RelayState`.
    pub url: String,
    /// What [`finish_login`] needs to bind the response to this request (the AuthnRequest's
    /// id, opaque to the caller); keep it with the login attempt and pass it back.
    pub correlation: String,
}

/// What [`finish_login`] expects of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected<'a> {
    /// The [`StartedRequest::correlation`] of the login attempt the response belongs to, or
    /// `None` for a response that arrived without one (IdP-initiated).
    pub correlation: Option<&'a str>,
    /// Whether this connection accepts IdP-initiated responses (only when `correlation` is
    /// `None`, and only responses that name no request).
    pub allow_idp_initiated: bool,
    /// The attribute whose values are the user's groups, if the connection maps groups.
    pub groups_attribute: Option<&'a str>,
    /// The clock skew tolerated on every time bound, in seconds (0 to [`MAX_SKEW_SECS`]).
    pub max_skew_secs: i64,
}

/// An assertion that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// The assertion's `ID`: the caller's replay cache refuses it a second time.
    pub assertion_id: String,
    /// Until when `assertion_id` must stay in the replay cache: the earlier of the bearer
    /// confirmation's and the `Conditions`' `NotOnOrAfter`, plus the skew (after it,
    /// [`finish_login`] refuses the assertion as expired anyway).
    pub not_on_or_after: Timestamp,
    /// The request the response answers (`None` for an IdP-initiated login).
    pub in_response_to: Option<String>,
    /// Who signed in.
    pub identity: ExternalIdentity,
}

/// Parses and checks IdP metadata XML: size ≤ 256 KiB, no DTD/entities, exactly one IdP
/// entity, at least one signing certificate, an SSO endpoint with the HTTP-Redirect binding.
/// Any problem → [`SsoError::Invalid`] with a clear message.
///
/// Signing certificates are the `KeyDescriptor`s of the `IDPSSODescriptor` with
/// `use="signing"` or no `use`; each must be an X.509 certificate, and one at least must
/// have an RSA key (kms accepts RSA-SHA256/384/512 signatures only). The metadata itself
/// need not be signed: the admin who enters it is the trust anchor.
pub fn parse_idp_metadata(xml: &str) -> Result<IdpMetadata, SsoError> {
    load_idp(xml).map(|idp| idp.metadata)
}

/// The SP metadata XML served at `GET /v1/sso/{slug}/metadata` (entityID, ACS with HTTP-POST
/// binding, `AuthnRequestsSigned="false"`, `WantAssertionsSigned="true"`).
pub fn sp_metadata(sp: &SpSettings<'_>) -> Result<String, SsoError> {
    let sp = saml_sp(sp)?;
    Ok(sp.metadata_xml().to_owned())
}

/// An AuthnRequest over the HTTP-Redirect binding to the IdP's SSO URL with `RelayState` =
/// `relay_state` (1 to [`MAX_RELAY_STATE_BYTES`] bytes, no control characters).
///
/// The request is unsigned (the SP metadata says `AuthnRequestsSigned="false"`), asks for the
/// response over HTTP-POST at `sp.acs_url`, and is issued at `now`. The
/// [`StartedRequest::correlation`] is the request's id.
pub fn start_login(
    sp: &SpSettings<'_>,
    idp_metadata_xml: &str,
    relay_state: &str,
    now: Timestamp,
) -> Result<StartedRequest, SsoError> {
    check_sp(sp)?;
    let idp = load_idp(idp_metadata_xml)?.metadata;
    check_relay_state(relay_state)?;
    let issue_instant = offset_date_time(now)?
        .format(&Rfc3339)
        .map_err(|_| invalid("the login's start time cannot be written as a date-time"))?;
    let id = new_request_id()?;
    let xml = format!(
        "<samlp:AuthnRequest xmlns:samlp=\"{NS_PROTOCOL}\" xmlns:saml=\"{NS_ASSERTION}\" \
         ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{issue_instant}\" Destination=\"{}\" \
         ProtocolBinding=\"{BINDING_POST}\" AssertionConsumerServiceURL=\"{}\">\
         <saml:Issuer>{}</saml:Issuer>\
         <samlp:NameIDPolicy AllowCreate=\"true\"/>\
         </samlp:AuthnRequest>",
        xml_escape(&idp.sso_redirect_url),
        xml_escape(sp.acs_url),
        xml_escape(sp.entity_id),
    );
    let mut deflater = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let deflated = deflater
        .write_all(xml.as_bytes())
        .and_then(|()| deflater.finish())
        .map_err(|_| invalid("the AuthnRequest could not be compressed"))?;
    let separator = if idp.sso_redirect_url.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!(
        "{}{separator}SAMLRequest={}&RelayState={}",
        idp.sso_redirect_url,
        percent_encode(&STANDARD.encode(deflated)),
        percent_encode(relay_state),
    );
    Ok(StartedRequest {
        url,
        correlation: id,
    })
}

/// Verifies a posted `SAMLResponse` (base64 of the XML) under the strict policy of this
/// module (see the module documentation).
///
/// Malformed base64, a response over [`MAX_SAML_RESPONSE_BYTES`] and unusable arguments
/// (an invalid `sp`, a `correlation` that is no request id, a skew out of range, metadata
/// that no longer parses) are [`SsoError::Invalid`]; a response that fails any check is
/// [`SsoError::Unauthenticated`], with a message that says which.
///
/// The `RelayState` posted beside the response is not this function's: the caller finds the
/// login attempt with it and passes that attempt's correlation.
pub fn finish_login(
    sp: &SpSettings<'_>,
    idp_metadata_xml: &str,
    saml_response_b64: &str,
    expected: &Expected<'_>,
    now: Timestamp,
) -> Result<VerifiedAssertion, SsoError> {
    check_sp(sp)?;
    if !(0..=MAX_SKEW_SECS).contains(&expected.max_skew_secs) {
        return Err(invalid(format!(
            "the clock skew must be between 0 and {MAX_SKEW_SECS} seconds, not {}",
            expected.max_skew_secs
        )));
    }
    if let Some(correlation) = expected.correlation {
        check_correlation(correlation)?;
    }
    let window = Window::new(now, expected.max_skew_secs)?;
    let idp = load_idp(idp_metadata_xml)?;
    let bytes = decode_response(saml_response_b64)?;
    let xml =
        std::str::from_utf8(&bytes).map_err(|_| refused("the SAML response is not UTF-8 XML"))?;
    reject_dtd(xml).map_err(|()| {
        refused("the SAML response contains a DTD or an entity declaration, which kms refuses")
    })?;
    let scan = scan_response(xml).map_err(refused)?;
    check_scan(&scan, sp, &idp.metadata, expected)?;

    // saml-rs: the signature against the metadata's keys, and its own checks.
    let saml_sp = saml_sp(sp)?;
    let context = SamlValidationContext::new(
        window.system_time()?,
        ReplayPolicy::DisabledForCompatibility,
    )
    .with_clock_skew(ClockSkew::from_millis(
        -expected.max_skew_secs * 1000,
        expected.max_skew_secs * 1000,
    ));
    // Re-encoded from the bytes checked above, so saml-rs reads exactly those.
    let input = BrowserInput::<SsoResponse>::post(vec![FormField::new(
        "SAMLResponse",
        STANDARD.encode(&bytes),
    )]);
    let session = match expected.correlation {
        Some(request_id) => {
            let pending = PendingAuthnRequest::try_new(
                MessageId::try_new(request_id).map_err(|_| bad_correlation())?,
                RelayStateParam::absent(),
                AcsEndpoint::post(sp.acs_url).map_err(|_| bad_acs_url())?,
                SsoResponseBinding::Post,
                idp.descriptor.entity_id().clone(),
            )
            .map_err(|e| invalid(format!("the login attempt cannot be resumed: {e}")))?;
            saml_sp.finish_sso(&idp.descriptor, &pending, input, context)
        }
        None => saml_sp.accept_unsolicited_sso(&idp.descriptor, input, context),
    }
    .map_err(|e| refused(describe(&e)))?;

    // Our own checks again, on what saml-rs took from the signed assertion.
    check_session(&session, &scan, sp, &idp.metadata, expected)?;
    let bearer_not_on_or_after = check_bearer(&session, sp, expected, &window)?;
    let conditions_not_on_or_after = check_conditions(&session, &window)?;
    let deadline = match conditions_not_on_or_after {
        Some(conditions) if conditions < bearer_not_on_or_after => conditions,
        _ => bearer_not_on_or_after,
    };
    let identity = identity(&session, expected)?;
    Ok(VerifiedAssertion {
        assertion_id: session.assertion_id().as_str().to_owned(),
        not_on_or_after: window.replay_deadline(deadline),
        in_response_to: session.in_response_to().map(|id| id.as_str().to_owned()),
        identity,
    })
}

// ---------------------------------------------------------------------------------------
// Errors.

/// A 400: the caller's arguments or the connection's configuration.
fn invalid(message: impl Into<String>) -> SsoError {
    SsoError::Invalid(message.into())
}

/// A 401: the response did not pass.
fn refused(message: impl Into<String>) -> SsoError {
    SsoError::Unauthenticated(message.into())
}

fn bad_correlation() -> SsoError {
    invalid("the login attempt's correlation is not a SAML request id")
}

fn bad_acs_url() -> SsoError {
    invalid("the ACS URL must be an absolute http(s) URL")
}

/// Provider-supplied text for an error message: at most [`MAX_QUOTED_CHARS`] characters,
/// quoted and escaped.
fn quote(text: &str) -> String {
    let mut clipped: String = text.chars().take(MAX_QUOTED_CHARS).collect();
    if clipped.len() < text.len() {
        clipped.push('…');
    }
    format!("{clipped:?}")
}

fn quote_opt(text: Option<&str>) -> String {
    text.map_or_else(|| "none".to_owned(), quote)
}

/// A saml-rs refusal, said plainly.
fn describe(error: &SamlError) -> String {
    match error {
        SamlError::SignatureMissing => "the response is not signed".to_owned(),
        SamlError::AssertionSignatureRequired => {
            "the assertion itself is not signed by the IdP (a signature on the Response alone \
             is not accepted)"
                .to_owned()
        }
        SamlError::SignatureVerification { .. } | SamlError::FailedToVerifySignature => {
            "the signature does not verify against the IdP's certificates in its metadata"
                .to_owned()
        }
        SamlError::CertificateMismatch | SamlError::UnmatchCertificate => {
            "the signature names a certificate that is not in the IdP's metadata".to_owned()
        }
        SamlError::NoTrustedCertificate => {
            "none of the IdP's certificates in its metadata could be loaded".to_owned()
        }
        SamlError::AlgorithmUnsupported => {
            "the signature is not RSA-SHA256/384/512 over one same-document reference with \
             exclusive canonicalization"
                .to_owned()
        }
        SamlError::SignedReferenceMismatch
        | SamlError::PotentialWrappingAttack
        | SamlError::ReferenceResolution { .. } => {
            "the signed content is not the content consumed (signature wrapping)".to_owned()
        }
        SamlError::IssuerMismatch { expected, actual } => format!(
            "the issuer {} is not the IdP {}",
            quote_opt(actual.as_deref()),
            quote(expected)
        ),
        SamlError::AudienceMismatch { expected } => format!(
            "the assertion's audience does not include this service provider {}",
            quote(expected)
        ),
        SamlError::DestinationMismatch { expected, actual } => format!(
            "the response's Destination {} is not this ACS URL {}",
            quote_opt(actual.as_deref()),
            quote(expected)
        ),
        SamlError::InResponseToMismatch { expected, actual } => format!(
            "the response answers request {} instead of {}",
            quote_opt(actual.as_deref()),
            quote_opt(expected.as_deref())
        ),
        SamlError::StatusNotSuccess { top, second } => format!(
            "the IdP did not authenticate the user (status {}{})",
            quote(top),
            second
                .as_deref()
                .map(|s| format!(", {}", quote(s)))
                .unwrap_or_default()
        ),
        SamlError::TimeWindowInvalid {
            field: TimeWindowField::Conditions,
        } => "the assertion is expired or not yet valid (Conditions NotBefore/NotOnOrAfter)"
            .to_owned(),
        SamlError::TimeWindowInvalid { field } => {
            format!("the assertion is expired or not yet valid ({field})")
        }
        SamlError::SubjectConfirmationInvalid {
            reason: SubjectConfirmationReason::TimeWindowInvalid,
        } => "the assertion has expired (bearer confirmation NotOnOrAfter)".to_owned(),
        SamlError::SubjectConfirmationInvalid {
            reason: SubjectConfirmationReason::RecipientMismatch,
        } => "the bearer confirmation's Recipient is not this ACS URL".to_owned(),
        SamlError::SubjectConfirmationInvalid {
            reason: SubjectConfirmationReason::InResponseToMismatch,
        } => "the bearer confirmation answers another request (InResponseTo)".to_owned(),
        SamlError::SubjectConfirmationInvalid { reason } => {
            format!("the assertion's bearer subject confirmation fails ({reason})")
        }
        SamlError::UnrecognizedCondition { element } => format!(
            "the assertion has a condition kms does not understand: {}",
            quote(element)
        ),
        SamlError::Xml(detail) | SamlError::ProtocolProfile(detail) => format!(
            "the response is not a well-formed SAML response: {}",
            quote(detail)
        ),
        other => format!(
            "the SAML response was refused: {}",
            quote(&other.to_string())
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Settings and arguments.

/// The SP's entity id is a non-empty identifier and its ACS URL an absolute http(s) URL.
fn check_sp(sp: &SpSettings<'_>) -> Result<(), SsoError> {
    if sp.entity_id.trim().is_empty()
        || sp.entity_id.trim() != sp.entity_id
        || sp.entity_id.chars().any(char::is_control)
    {
        return Err(invalid(
            "the SP entity id must be non-empty, without surrounding spaces or control characters",
        ));
    }
    check_url(sp.acs_url).map_err(|()| bad_acs_url())
}

/// An absolute http(s) URL without a fragment, spaces or control characters, written out
/// (`https://host/…`: it is used as written, so no form a URL parser would first normalize).
fn check_url(url: &str) -> Result<(), ()> {
    if !(url.starts_with("https://") || url.starts_with("http://"))
        || url.contains('#')
        || url.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(());
    }
    EndpointUrl::try_new(url).map(|_| ()).map_err(|_| ())
}

fn check_relay_state(relay_state: &str) -> Result<(), SsoError> {
    if relay_state.is_empty()
        || relay_state.len() > MAX_RELAY_STATE_BYTES
        || relay_state.chars().any(char::is_control)
    {
        return Err(invalid(format!(
            "the RelayState must be 1 to {MAX_RELAY_STATE_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

fn check_correlation(correlation: &str) -> Result<(), SsoError> {
    if correlation.is_empty()
        || correlation.len() > MAX_CORRELATION_BYTES
        || correlation
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(bad_correlation());
    }
    Ok(())
}

/// A fresh AuthnRequest id: `_` and 40 hex digits (160 random bits; an xs:ID starts with a
/// letter or `_`).
fn new_request_id() -> Result<String, SsoError> {
    let mut bytes = [0u8; 20];
    OsRandom
        .fill(&mut bytes)
        .map_err(|_| SsoError::Unavailable("the operating system's random source failed".into()))?;
    Ok(format!("_{}", crate::hex::encode(&bytes)))
}

/// saml-rs's SP, under our policy: the assertion signed, the strict RSA-SHA2 profile, the
/// audience required, unsigned AuthnRequests.
fn saml_sp(sp: &SpSettings<'_>) -> Result<Saml<saml_rs::Sp>, SsoError> {
    check_sp(sp)?;
    let entity_id = EntityId::try_new(sp.entity_id)
        .map_err(|e| invalid(format!("the SP entity id is not usable: {e}")))?;
    let acs = AcsEndpoint::post(sp.acs_url).map_err(|_| bad_acs_url())?;
    let config = SpConfig::builder(entity_id)
        .acs_endpoint(acs)
        .validation(SpValidationPolicy {
            assertions: AssertionSignaturePolicy::RequireSigned,
            responses: ResponseSignaturePolicy::RequireForEncryptedCbc,
            xml_signatures: XmlSignatureProfile::StrictRsaSha2,
            authn_requests: AuthnRequestSigningPolicy::DoNotSignForCompatibility,
            audience: AudienceValidationPolicy::Validate,
            name_id_creation: NameIdCreationPolicy::AllowCreate,
            logout: LogoutPolicy::recommended(),
        })
        .build()
        .map_err(|e| invalid(format!("the SP settings are not usable: {e}")))?;
    Saml::sp(config).map_err(|e| invalid(format!("the SP settings are not usable: {e}")))
}

// ---------------------------------------------------------------------------------------
// IdP metadata.

/// Checked IdP metadata and saml-rs's descriptor of it.
struct LoadedIdp {
    metadata: IdpMetadata,
    descriptor: IdpDescriptor,
}

fn load_idp(xml: &str) -> Result<LoadedIdp, SsoError> {
    if xml.len() > MAX_IDP_METADATA_BYTES {
        return Err(invalid(format!(
            "the IdP metadata is larger than {} KiB",
            MAX_IDP_METADATA_BYTES / 1024
        )));
    }
    reject_dtd(xml).map_err(|()| {
        invalid("the IdP metadata contains a DTD or an entity declaration, which kms refuses")
    })?;
    let scan = scan_metadata(xml).map_err(|e| invalid(format!("the IdP metadata {e}")))?;
    let descriptor =
        IdpDescriptor::from_metadata_xml(xml, MetadataTrustPolicy::UnsignedForCompatibility)
            .map_err(|e| invalid(format!("the IdP metadata cannot be read: {e}")))?;
    let entity_id = descriptor.entity_id().as_str().to_owned();
    if entity_id.trim() != entity_id || entity_id.chars().any(char::is_control) {
        return Err(invalid(
            "the IdP metadata's entityID has surrounding spaces or control characters",
        ));
    }

    if scan.signing_certificates.is_empty()
        || descriptor
            .metadata()
            .x509_certificates(CertUse::Signing)
            .is_empty()
    {
        return Err(invalid(
            "the IdP metadata has no signing certificate (an IDPSSODescriptor KeyDescriptor \
             with use=\"signing\" or no use, holding an X509Certificate)",
        ));
    }
    let mut rsa = false;
    for (n, certificate) in scan.signing_certificates.iter().enumerate() {
        rsa |= certificate_is_rsa(certificate).map_err(|e| {
            invalid(format!(
                "the IdP metadata's signing certificate {} {e}",
                n + 1
            ))
        })?;
    }
    if !rsa {
        return Err(invalid(
            "the IdP metadata has no RSA signing certificate; kms accepts RSA-SHA256/384/512 \
             signatures only",
        ));
    }

    let sso_redirect_url = descriptor
        .metadata()
        .get_single_sign_on_service(Binding::Redirect)
        .ok_or_else(|| {
            invalid(
                "the IdP metadata has no SingleSignOnService with the HTTP-Redirect binding \
                 (urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect)",
            )
        })?;
    check_url(&sso_redirect_url).map_err(|()| {
        invalid(format!(
            "the IdP's HTTP-Redirect SingleSignOnService {} is not an absolute http(s) URL \
             without a fragment",
            quote(&sso_redirect_url)
        ))
    })?;
    Ok(LoadedIdp {
        metadata: IdpMetadata {
            entity_id,
            sso_redirect_url,
        },
        descriptor,
    })
}

/// What our own pass over the metadata found.
#[derive(Debug, Default)]
struct MetadataScan {
    /// The base64 text of the IDPSSODescriptor's signing certificates.
    signing_certificates: Vec<String>,
}

/// Our own pass over the metadata: well-formed, one EntityDescriptor with one
/// IDPSSODescriptor that supports SAML 2.0, and its signing certificates. Errors complete the
/// sentence "the IdP metadata …".
fn scan_metadata(xml: &str) -> Result<MetadataScan, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0usize;
    let mut entities = 0usize;
    let mut idp_descriptors = 0usize;
    let mut scan = MetadataScan::default();
    // Inside an IDPSSODescriptor's KeyDescriptor used for signing: the certificate text.
    let mut key_use_signing: Option<bool> = None;
    let mut certificate: Option<String> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("is not well-formed XML: {}", quote(&e.to_string())))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let name = local_name(e);
                if stack.is_empty() {
                    roots += 1;
                    if roots > 1 {
                        return Err("has more than one root element".into());
                    }
                }
                match name.as_str() {
                    "EntityDescriptor" => entities += 1,
                    "IDPSSODescriptor" => {
                        idp_descriptors += 1;
                        let protocols =
                            attribute(e, "protocolSupportEnumeration")?.unwrap_or_default();
                        if !protocols.split_whitespace().any(|p| p == NS_PROTOCOL) {
                            return Err(
                                "has an IDPSSODescriptor whose protocolSupportEnumeration does \
                                 not include SAML 2.0"
                                    .into(),
                            );
                        }
                    }
                    "KeyDescriptor" if stack.iter().any(|s| s == "IDPSSODescriptor") => {
                        let key_use = attribute(e, "use")?;
                        key_use_signing =
                            Some(key_use.as_deref().is_none_or(|u| u.trim() == "signing"));
                    }
                    "X509Certificate" if key_use_signing == Some(true) && !empty => {
                        certificate = Some(String::new());
                    }
                    _ => {}
                }
                if !empty {
                    stack.push(name);
                    if stack.len() > MAX_DEPTH {
                        return Err("nests elements too deeply".into());
                    }
                } else if name == "KeyDescriptor" {
                    key_use_signing = None;
                }
            }
            Event::End(_) => {
                if let Some(name) = stack.pop() {
                    match name.as_str() {
                        "X509Certificate" => {
                            if let Some(text) = certificate.take() {
                                scan.signing_certificates.push(text);
                            }
                        }
                        "KeyDescriptor" => key_use_signing = None,
                        _ => {}
                    }
                }
            }
            Event::Text(ref t) => {
                if let Some(text) = certificate.as_mut() {
                    text.push_str(&t.xml_content(XmlVersion::Implicit1_0));
                } else if stack.is_empty()
                    && !t.xml_content(XmlVersion::Implicit1_0).trim().is_empty()
                {
                    return Err("has text outside its root element".into());
                }
            }
            Event::GeneralRef(ref r) => {
                // Only character references (`&#13;` in pasted certificates) matter here.
                if let Some(text) = certificate.as_mut() {
                    if let Ok(Some(c)) = r.resolve_char_ref() {
                        text.push(c);
                    }
                }
            }
            Event::DocType(_) => return Err("contains a DTD, which kms refuses".into()),
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::CData(_) => {}
        }
    }
    if !stack.is_empty() || roots == 0 {
        return Err("is not a complete XML document".into());
    }
    if entities != 1 {
        return Err(format!(
            "must describe exactly one entity (EntityDescriptor), not {entities}"
        ));
    }
    if idp_descriptors != 1 {
        return Err(format!(
            "must describe exactly one identity provider (IDPSSODescriptor), not {idp_descriptors}"
        ));
    }
    Ok(scan)
}

/// Whether base64 `text` is an X.509 certificate with an RSA key (`Err` when it is no
/// certificate). Errors complete the sentence "the … certificate N …".
fn certificate_is_rsa(text: &str) -> Result<bool, String> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| "is not base64".to_owned())?;
    let certificate = x509_cert::Certificate::from_der(&der)
        .map_err(|_| "is not an X.509 certificate".to_owned())?;
    Ok(certificate
        .tbs_certificate
        .subject_public_key_info
        .algorithm
        .oid
        .to_string()
        == OID_RSA_ENCRYPTION)
}

// ---------------------------------------------------------------------------------------
// The response: our own structural pass.

/// Decodes the posted base64 (ASCII whitespace ignored, padding optional), bounded.
fn decode_response(b64: &str) -> Result<Vec<u8>, SsoError> {
    let too_large = || {
        invalid(format!(
            "the SAML response is larger than {} KiB",
            MAX_SAML_RESPONSE_BYTES / 1024
        ))
    };
    let max_encoded = MAX_SAML_RESPONSE_BYTES.div_ceil(3) * 4;
    // Line breaks every 64 or 76 characters are usual; anything far beyond is refused unread.
    if b64.len() > max_encoded.saturating_mul(2) {
        return Err(too_large());
    }
    let compact: Vec<u8> = b64
        .bytes()
        .filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .collect();
    if compact.len() > max_encoded {
        return Err(too_large());
    }
    if compact.is_empty() {
        return Err(invalid("the SAMLResponse is empty"));
    }
    let bytes = BASE64_LENIENT_PADDING
        .decode(&compact)
        .map_err(|_| invalid("the SAMLResponse is not valid base64"))?;
    if bytes.len() > MAX_SAML_RESPONSE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Whether `xml` has `<!DOCTYPE` or `<!ENTITY` anywhere (ASCII case ignored): refused before
/// any parser sees it.
fn reject_dtd(xml: &str) -> Result<(), ()> {
    let bytes = xml.as_bytes();
    for (i, window) in bytes.windows(2).enumerate() {
        if window == b"<!" {
            let rest = &bytes[i + 2..];
            for keyword in [&b"DOCTYPE"[..], &b"ENTITY"[..]] {
                if rest.len() >= keyword.len()
                    && rest[..keyword.len()].eq_ignore_ascii_case(keyword)
                {
                    return Err(());
                }
            }
        }
    }
    Ok(())
}

/// What our own pass over the response found.
#[derive(Debug, Default)]
struct ResponseScan {
    destination: Option<String>,
    in_response_to: Option<String>,
    /// The Response's own `Issuer`, when it has one.
    issuer: Option<String>,
    status: Option<String>,
    sub_status: Option<String>,
    assertion_id: Option<String>,
}

/// Where in the response an element is, for the few places that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Element {
    local: String,
    namespace: Namespace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Namespace {
    Protocol,
    Assertion,
    Other,
}

/// Our own pass over the response: well-formed, no comments or processing instructions, one
/// `samlp:Response` root, exactly one `saml:Assertion` anywhere (a direct child of the root),
/// no encrypted assertion, unique `ID`s; and the response's destination, InResponseTo,
/// issuer and status. Errors are whole sentences.
fn scan_response(xml: &str) -> Result<ResponseScan, String> {
    let mut reader = quick_xml::NsReader::from_str(xml);
    let mut stack: Vec<Element> = Vec::new();
    let mut roots = 0usize;
    let mut assertions = 0usize;
    let mut ids: HashSet<String> = HashSet::new();
    let mut scan = ResponseScan::default();
    let mut issuer_text: Option<String> = None;
    loop {
        let (resolved, event) = reader.read_resolved_event().map_err(|e| {
            format!(
                "the SAML response is not well-formed XML: {}",
                quote(&e.to_string())
            )
        })?;
        let namespace = match resolved {
            ResolveResult::Bound(ns) if ns.as_ref() == NS_PROTOCOL => Namespace::Protocol,
            ResolveResult::Bound(ns) if ns.as_ref() == NS_ASSERTION => Namespace::Assertion,
            _ => Namespace::Other,
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let element = Element {
                    local: local_name(e),
                    namespace,
                };
                let depth = stack.len();
                check_instants(e)?;
                for id in [attribute(e, "ID")?, attribute(e, "AssertionID")?]
                    .into_iter()
                    .flatten()
                {
                    if !ids.insert(id) {
                        return Err(
                            "the SAML response has two elements with the same ID (signature \
                             wrapping)"
                                .into(),
                        );
                    }
                }
                if depth == 0 {
                    roots += 1;
                    if roots > 1 {
                        return Err("the SAML response has more than one root element".into());
                    }
                    if element.local != "Response" || element.namespace != Namespace::Protocol {
                        return Err("the document is not a SAML 2.0 protocol Response".into());
                    }
                    scan.destination = attribute(e, "Destination")?;
                    scan.in_response_to = attribute(e, "InResponseTo")?;
                } else {
                    match element.local.as_str() {
                        "Response" => {
                            return Err("the SAML response has a Response inside it".into());
                        }
                        "EncryptedAssertion" | "EncryptedID" | "EncryptedAttribute" => {
                            return Err(
                                "the SAML response is encrypted (EncryptedAssertion), which kms \
                                 does not support; configure the IdP to sign, not encrypt"
                                    .into(),
                            );
                        }
                        "Assertion" => {
                            assertions += 1;
                            if assertions > 1 {
                                return Err("the SAML response has more than one Assertion \
                                            (kms accepts exactly one)"
                                    .into());
                            }
                            if depth != 1 || element.namespace != Namespace::Assertion {
                                return Err("the SAML response's Assertion is not a direct child \
                                            of the Response (signature wrapping)"
                                    .into());
                            }
                            scan.assertion_id = attribute(e, "ID")?;
                        }
                        "Issuer" if depth == 1 && element.namespace == Namespace::Assertion => {
                            if empty {
                                scan.issuer = Some(String::new());
                            } else {
                                issuer_text = Some(String::new());
                            }
                        }
                        "StatusCode"
                            if element.namespace == Namespace::Protocol
                                && depth >= 2
                                && stack.get(1).is_some_and(|s| s.local == "Status") =>
                        {
                            let value = attribute(e, "Value")?;
                            if depth == 2 && scan.status.is_none() {
                                scan.status = value;
                            } else if depth == 3 && scan.sub_status.is_none() {
                                scan.sub_status = value;
                            }
                        }
                        _ => {}
                    }
                }
                if !empty {
                    stack.push(element);
                    if stack.len() > MAX_DEPTH {
                        return Err("the SAML response nests elements too deeply".into());
                    }
                }
            }
            Event::End(_) => {
                if stack.len() == 2 {
                    if let Some(text) = issuer_text.take() {
                        scan.issuer = Some(text);
                    }
                }
                stack.pop();
            }
            Event::Text(ref t) => {
                let text = t.xml_content(XmlVersion::Implicit1_0);
                if let Some(issuer) = issuer_text.as_mut() {
                    issuer.push_str(&text);
                } else if stack.is_empty() && !text.trim().is_empty() {
                    return Err("the SAML response has text outside its root element".into());
                }
            }
            Event::CData(ref t) => {
                if let Some(issuer) = issuer_text.as_mut() {
                    issuer.push_str(&t.xml_content(XmlVersion::Implicit1_0));
                }
            }
            Event::GeneralRef(ref r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => quick_xml::escape::resolve_predefined_entity(
                        &r.xml_content(XmlVersion::Implicit1_0),
                    )
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        "the SAML response refers to an entity that is not predefined".to_owned()
                    })?,
                };
                if let Some(issuer) = issuer_text.as_mut() {
                    issuer.push_str(&resolved);
                }
            }
            Event::Comment(_) | Event::PI(_) => {
                return Err(
                    "the SAML response contains a comment or processing instruction, which kms \
                     refuses"
                        .into(),
                );
            }
            Event::DocType(_) => {
                return Err("the SAML response contains a DTD, which kms refuses".into());
            }
            Event::Decl(_) => {
                if roots > 0 {
                    return Err("the SAML response has an XML declaration inside it".into());
                }
            }
            Event::Eof => break,
        }
    }
    if !stack.is_empty() || roots == 0 {
        return Err("the SAML response is not a complete XML document".into());
    }
    if assertions == 0 {
        return Err("the SAML response has no Assertion".into());
    }
    Ok(scan)
}

/// The attributes of the response that hold instants.
const INSTANT_ATTRIBUTES: &[&str] = &[
    "IssueInstant",
    "NotBefore",
    "NotOnOrAfter",
    "AuthnInstant",
    "SessionNotOnOrAfter",
];

/// Every instant attribute of `e` (whatever its prefix) is a SAML UTC date-time written
/// `YYYY-MM-DDThh:mm:ss[.s+]Z`, ASCII digits where digits belong. Checked before saml-rs
/// reads them: its date-time lexer overflows (a panic in builds with overflow checks) on a
/// letter where a digit belongs.
fn check_instants(e: &BytesStart<'_>) -> Result<(), String> {
    for attribute in e.attributes() {
        let attribute = attribute.map_err(|e| {
            format!(
                "the XML has a malformed attribute: {}",
                quote(&e.to_string())
            )
        })?;
        let key = attribute.key.local_name();
        let Some(name) = INSTANT_ATTRIBUTES.iter().find(|n| **n == key.as_ref()) else {
            continue;
        };
        let value = attribute
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|_| format!("the SAML response's {name} is malformed"))?;
        if !is_saml_utc_instant(value.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))) {
            return Err(format!(
                "the SAML response's {name} {} is not a UTC date-time (YYYY-MM-DDThh:mm:ssZ)",
                quote(&value)
            ));
        }
    }
    Ok(())
}

/// `YYYY-MM-DDThh:mm:ss`, an optional fraction of at least one digit, then `Z`.
fn is_saml_utc_instant(text: &str) -> bool {
    let bytes = text.as_bytes();
    let Some(rest) = bytes.strip_suffix(b"Z") else {
        return false;
    };
    if rest.len() < 19 {
        return false;
    }
    let (main, fraction) = rest.split_at(19);
    let shape_holds = main.iter().enumerate().all(|(i, b)| match i {
        4 | 7 => *b == b'-',
        10 => *b == b'T',
        13 | 16 => *b == b':',
        _ => b.is_ascii_digit(),
    });
    let fraction_holds = match fraction.split_first() {
        None => true,
        Some((b'.', digits)) => !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    shape_holds && fraction_holds
}

/// The policy on our own pass, before saml-rs runs: status, issuer, destination and the
/// response's InResponseTo against the login attempt.
fn check_scan(
    scan: &ResponseScan,
    sp: &SpSettings<'_>,
    idp: &IdpMetadata,
    expected: &Expected<'_>,
) -> Result<(), SsoError> {
    match scan.status.as_deref() {
        Some(STATUS_SUCCESS) => {}
        status => {
            return Err(refused(format!(
                "the IdP did not authenticate the user (status {}{})",
                quote_opt(status),
                scan.sub_status
                    .as_deref()
                    .map(|s| format!(", {}", quote(s)))
                    .unwrap_or_default()
            )));
        }
    }
    if let Some(issuer) = scan.issuer.as_deref() {
        if issuer.trim() != idp.entity_id {
            return Err(refused(format!(
                "the response's issuer {} is not the IdP {}",
                quote(issuer),
                quote(&idp.entity_id)
            )));
        }
    }
    if let Some(destination) = scan.destination.as_deref() {
        if destination != sp.acs_url {
            return Err(refused(format!(
                "the response's Destination {} is not this ACS URL {}",
                quote(destination),
                quote(sp.acs_url)
            )));
        }
    }
    let in_response_to = scan.in_response_to.as_deref().filter(|s| !s.is_empty());
    match (expected.correlation, in_response_to) {
        (Some(request), Some(answered)) if request == answered => Ok(()),
        (Some(_), Some(answered)) => Err(refused(format!(
            "the response answers another request ({})",
            quote(answered)
        ))),
        (Some(_), None) => Err(refused(
            "the response answers no request (no InResponseTo), but this login started one",
        )),
        (None, _) if !expected.allow_idp_initiated => Err(refused(
            "IdP-initiated login is not allowed for this connection (the response answers no \
             request kms started)",
        )),
        (None, Some(answered)) => Err(refused(format!(
            "the response names a request ({}) that is not this login's",
            quote(answered)
        ))),
        (None, None) => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// The response: our checks on what saml-rs verified.

/// The signature covers the consumed assertion, which is the one assertion of the document,
/// with an allowed algorithm; issuer, audience and InResponseTo as expected.
fn check_session(
    session: &SsoSession,
    scan: &ResponseScan,
    sp: &SpSettings<'_>,
    idp: &IdpMetadata,
    expected: &Expected<'_>,
) -> Result<(), SsoError> {
    let assertion_signed = session.verified_xml_signatures().iter().any(|signature| {
        matches!(
            signature.coverage(),
            VerifiedXmlSignatureCoverage::ConsumedAssertion
                | VerifiedXmlSignatureCoverage::ResponseRootAndConsumedAssertion
        ) && ALLOWED_SIGNATURE_ALGORITHMS.contains(&signature.algorithm_uri())
    });
    if !assertion_signed {
        return Err(refused(
            "the assertion itself is not signed by the IdP with RSA-SHA256/384/512",
        ));
    }
    if scan.assertion_id.as_deref() != Some(session.assertion_id().as_str()) {
        return Err(refused(
            "the assertion consumed is not the one assertion of the response (signature wrapping)",
        ));
    }
    if session.issuer().as_str() != idp.entity_id {
        return Err(refused(format!(
            "the assertion's issuer {} is not the IdP {}",
            quote(session.issuer().as_str()),
            quote(&idp.entity_id)
        )));
    }
    if !session
        .audience()
        .iter()
        .any(|audience| audience.as_str() == sp.entity_id)
    {
        return Err(refused(format!(
            "the assertion's audience does not include this service provider {}",
            quote(sp.entity_id)
        )));
    }
    let answered = session.in_response_to().map(MessageId::as_str);
    if answered != expected.correlation {
        return Err(refused(format!(
            "the response answers request {} instead of {}",
            quote_opt(answered),
            quote_opt(expected.correlation)
        )));
    }
    Ok(())
}

/// `now` and the skew around it.
#[derive(Debug, Clone, Copy)]
struct Window {
    now: OffsetDateTime,
    skew: time::Duration,
    skew_secs: i64,
}

impl Window {
    fn new(now: Timestamp, skew_secs: i64) -> Result<Self, SsoError> {
        Ok(Window {
            now: offset_date_time(now)?,
            skew: time::Duration::seconds(skew_secs),
            skew_secs,
        })
    }

    /// Whether an assertion bounded by `not_on_or_after` has expired.
    fn expired(&self, not_on_or_after: OffsetDateTime) -> bool {
        match self.now.checked_sub(self.skew) {
            Some(earliest) => not_on_or_after <= earliest,
            None => true,
        }
    }

    /// Whether an assertion starting at `not_before` is not yet valid.
    fn too_early(&self, not_before: OffsetDateTime) -> bool {
        match self.now.checked_add(self.skew) {
            Some(latest) => not_before > latest,
            None => false,
        }
    }

    /// `not_on_or_after` plus the skew, in whole seconds rounded up.
    fn replay_deadline(&self, not_on_or_after: OffsetDateTime) -> Timestamp {
        let round_up = i64::from(not_on_or_after.nanosecond() > 0);
        Timestamp::from_unix(not_on_or_after.unix_timestamp())
            .plus_secs(round_up)
            .plus_secs(self.skew_secs)
    }

    fn system_time(&self) -> Result<SystemTime, SsoError> {
        let secs = self.now.unix_timestamp();
        let at = match u64::try_from(secs) {
            Ok(secs) => SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)),
            Err(_) => SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs())),
        };
        at.ok_or_else(|| invalid("the login's time is out of range"))
    }
}

fn offset_date_time(now: Timestamp) -> Result<OffsetDateTime, SsoError> {
    OffsetDateTime::from_unix_timestamp(now.unix())
        .map_err(|_| invalid("the login's time is out of range"))
}

/// A SAML `xs:dateTime` (UTC) of the assertion.
fn instant(text: &str, what: &str) -> Result<OffsetDateTime, SsoError> {
    OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|_| {
        refused(format!(
            "the assertion's {what} {} is not a date-time",
            quote(text)
        ))
    })
}

/// One bearer confirmation holds: `Recipient` is the ACS URL, `NotOnOrAfter` present and not
/// passed, `NotBefore` (if any) reached, `InResponseTo` as expected. Returns its
/// `NotOnOrAfter`.
fn check_bearer(
    session: &SsoSession,
    sp: &SpSettings<'_>,
    expected: &Expected<'_>,
    window: &Window,
) -> Result<OffsetDateTime, SsoError> {
    let mut failure = None;
    for confirmation in session.subject().confirmations() {
        let data = match confirmation_data(confirmation.raw_xml()) {
            Ok(Some(data)) => data,
            Ok(None) => continue,
            Err(e) => {
                failure.get_or_insert(e);
                continue;
            }
        };
        match data.check(sp, expected, window) {
            Ok(not_on_or_after) => return Ok(not_on_or_after),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    Err(failure.unwrap_or_else(|| {
        refused("the assertion has no bearer subject confirmation (SubjectConfirmationData)")
    }))
}

/// A bearer `SubjectConfirmation`'s data.
#[derive(Debug, Default)]
struct BearerData {
    not_before: Option<String>,
    not_on_or_after: Option<String>,
    recipient: Option<String>,
    in_response_to: Option<String>,
}

impl BearerData {
    fn check(
        &self,
        sp: &SpSettings<'_>,
        expected: &Expected<'_>,
        window: &Window,
    ) -> Result<OffsetDateTime, SsoError> {
        if self.recipient.as_deref() != Some(sp.acs_url) {
            return Err(refused(format!(
                "the bearer confirmation's Recipient {} is not this ACS URL {}",
                quote_opt(self.recipient.as_deref()),
                quote(sp.acs_url)
            )));
        }
        let answered = self.in_response_to.as_deref().filter(|s| !s.is_empty());
        if answered != expected.correlation {
            return Err(refused(format!(
                "the bearer confirmation answers request {} instead of {}",
                quote_opt(answered),
                quote_opt(expected.correlation)
            )));
        }
        let not_on_or_after = self
            .not_on_or_after
            .as_deref()
            .ok_or_else(|| refused("the bearer confirmation has no NotOnOrAfter"))
            .and_then(|t| instant(t, "bearer NotOnOrAfter"))?;
        if window.expired(not_on_or_after) {
            return Err(refused(
                "the assertion has expired (bearer confirmation NotOnOrAfter)",
            ));
        }
        if let Some(not_before) = self.not_before.as_deref() {
            if window.too_early(instant(not_before, "bearer NotBefore")?) {
                return Err(refused(
                    "the assertion is not valid yet (bearer confirmation NotBefore)",
                ));
            }
        }
        Ok(not_on_or_after)
    }
}

/// The data of a `SubjectConfirmation` (raw XML, as saml-rs took it from the signed
/// assertion) when its method is bearer.
fn confirmation_data(xml: &str) -> Result<Option<BearerData>, SsoError> {
    let malformed = || refused("the assertion's SubjectConfirmation is not well-formed");
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut depth = 0usize;
    let mut bearer = false;
    let mut data: Option<BearerData> = None;
    loop {
        let event = reader.read_event().map_err(|_| malformed())?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name = local_name(e);
                if depth == 0 {
                    if name != "SubjectConfirmation" {
                        return Err(malformed());
                    }
                    bearer =
                        attribute(e, "Method").map_err(|_| malformed())?.as_deref() == Some(BEARER);
                } else if depth == 1 && name == "SubjectConfirmationData" {
                    if data.is_some() {
                        return Err(refused(
                            "the assertion's SubjectConfirmation has two SubjectConfirmationData",
                        ));
                    }
                    let read = |key| attribute(e, key).map_err(|_| malformed());
                    data = Some(BearerData {
                        not_before: read("NotBefore")?,
                        not_on_or_after: read("NotOnOrAfter")?,
                        recipient: read("Recipient")?,
                        in_response_to: read("InResponseTo")?,
                    });
                }
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(malformed());
                    }
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Eof => break,
            _ => {}
        }
    }
    if !bearer {
        return Ok(None);
    }
    Ok(Some(data.unwrap_or_default()))
}

/// The `Conditions` window holds at `now`; returns its `NotOnOrAfter`, if it has one.
fn check_conditions(
    session: &SsoSession,
    window: &Window,
) -> Result<Option<OffsetDateTime>, SsoError> {
    if let Some(not_before) = session.not_before() {
        if window.too_early(instant(not_before.as_str(), "Conditions NotBefore")?) {
            return Err(refused(
                "the assertion is not valid yet (Conditions NotBefore)",
            ));
        }
    }
    match session.not_on_or_after() {
        Some(not_on_or_after) => {
            let not_on_or_after = instant(not_on_or_after.as_str(), "Conditions NotOnOrAfter")?;
            if window.expired(not_on_or_after) {
                return Err(refused(
                    "the assertion has expired (Conditions NotOnOrAfter)",
                ));
            }
            Ok(Some(not_on_or_after))
        }
        None => Ok(None),
    }
}

// ---------------------------------------------------------------------------------------
// Identity.

/// The identity the signed assertion states.
fn identity(session: &SsoSession, expected: &Expected<'_>) -> Result<ExternalIdentity, SsoError> {
    let name_id = session.name_id();
    let subject = name_id.value();
    if subject.trim().is_empty() {
        return Err(refused("the assertion's NameID is empty"));
    }
    if matches!(name_id.format(), Some(NameIdFormat::Transient)) {
        return Err(refused(
            "the assertion's NameID is transient (a new one at every login); configure the IdP \
             to send a persistent or emailAddress NameID",
        ));
    }
    let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for attribute in session.attributes().as_slice() {
        attributes
            .entry(attribute.name().to_owned())
            .or_default()
            .extend(attribute.values().iter().map(|v| v.as_str().to_owned()));
    }
    let mut first_of = |names: &[&str]| -> Option<String> {
        let name = names.iter().find(|name| {
            attributes
                .get(**name)
                .is_some_and(|values| values.iter().any(|v| !v.trim().is_empty()))
        })?;
        let values = attributes.remove(*name)?;
        values.into_iter().find(|v| !v.trim().is_empty())
    };
    let email_format = match name_id.format() {
        Some(NameIdFormat::EmailAddress) => true,
        // The SAML 2.0 spelling some IdPs send (the standard one is SAML 1.1's).
        Some(NameIdFormat::Custom(uri)) => {
            uri == "urn:oasis:names:tc:SAML:2.0:nameid-format:emailAddress"
        }
        _ => false,
    };
    let email = if email_format {
        Some(subject.to_owned())
    } else {
        first_of(EMAIL_ATTRIBUTES)
    };
    let name = first_of(NAME_ATTRIBUTES);
    let groups = expected.groups_attribute.and_then(|attribute| {
        attributes.remove(attribute).map(|values| {
            values
                .into_iter()
                .filter(|v| !v.trim().is_empty())
                .collect()
        })
    });
    Ok(ExternalIdentity {
        subject: subject.to_owned(),
        email,
        name,
        groups,
        attributes,
    })
}

// ---------------------------------------------------------------------------------------
// XML helpers.

/// An element's local name.
fn local_name(e: &BytesStart<'_>) -> String {
    e.local_name().as_ref().to_owned()
}

/// The value of the unprefixed attribute `key` of `e`, unescaped (an error for a malformed
/// attribute).
fn attribute(e: &BytesStart<'_>, key: &str) -> Result<Option<String>, String> {
    for attribute in e.attributes() {
        let attribute = attribute.map_err(|e| {
            format!(
                "the XML has a malformed attribute: {}",
                quote(&e.to_string())
            )
        })?;
        if attribute.key.as_ref() == key {
            let value = attribute
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|e| {
                    format!(
                        "the XML has a malformed attribute value: {}",
                        quote(&e.to_string())
                    )
                })?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

/// `text` escaped for an XML attribute or element.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` percent-encoded for a query value (everything but RFC 3986's unreserved set).
fn percent_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACS: &str = "https://sp.example.com/acs";

    fn sp() -> SpSettings<'static> {
        SpSettings {
            entity_id: "https://sp.example.com",
            acs_url: ACS,
        }
    }

    fn expected(correlation: Option<&str>) -> Expected<'_> {
        Expected {
            correlation,
            allow_idp_initiated: true,
            groups_attribute: None,
            max_skew_secs: 10,
        }
    }

    fn response(inner: &str) -> String {
        format!(
            "<samlp:Response xmlns:samlp=\"{NS_PROTOCOL}\" xmlns:saml=\"{NS_ASSERTION}\" \
             ID=\"_r\" Destination=\"{ACS}\" InResponseTo=\"_q\">\
             <saml:Issuer>https://idp.example.com</saml:Issuer><samlp:Status>\
             <samlp:StatusCode Value=\"{STATUS_SUCCESS}\"><samlp:StatusCode Value=\"sub\"/>\
             </samlp:StatusCode></samlp:Status>{inner}</samlp:Response>"
        )
    }

    const ASSERTION: &str =
        "<saml:Assertion ID=\"_a\"><saml:Issuer>x</saml:Issuer></saml:Assertion>";

    #[test]
    fn the_scan_reads_the_envelope() {
        let scan = scan_response(&response(ASSERTION)).unwrap();
        assert_eq!(scan.destination.as_deref(), Some(ACS));
        assert_eq!(scan.in_response_to.as_deref(), Some("_q"));
        assert_eq!(scan.issuer.as_deref(), Some("https://idp.example.com"));
        assert_eq!(scan.status.as_deref(), Some(STATUS_SUCCESS));
        assert_eq!(scan.sub_status.as_deref(), Some("sub"));
        assert_eq!(scan.assertion_id.as_deref(), Some("_a"));
    }

    #[test]
    fn the_scan_refuses_what_the_policy_forbids() {
        let cases = [
            (response(""), "no Assertion"),
            (response(&ASSERTION.repeat(2)), "same ID"),
            (
                response(&format!("{ASSERTION}{}", ASSERTION.replace("_a", "_b"))),
                "more than one Assertion",
            ),
            (
                response("<x:Assertion xmlns:x=\"urn:other\" ID=\"_o\"/>"),
                "not a direct child",
            ),
            (
                response(&format!("<samlp:Response/>{ASSERTION}")),
                "Response inside",
            ),
            (
                response(&format!("<?pi x?>{ASSERTION}")),
                "processing instruction",
            ),
            (response(&format!("{ASSERTION}&custom;")), "not predefined"),
            (format!("{}<x/>", response(ASSERTION)), "more than one root"),
            (
                response(ASSERTION).replace("samlp:Response", "samlp:Other"),
                "not a SAML 2.0",
            ),
            (
                response(ASSERTION).replace("</samlp:Response>", ""),
                "not a complete",
            ),
            (response("<b></c>"), "well-formed"),
        ];
        for (xml, needle) in cases {
            let error = scan_response(&xml).unwrap_err();
            assert!(
                error.contains(needle),
                "{needle:?} not in {error:?} for {xml}"
            );
        }
    }

    #[test]
    fn the_envelope_must_match_the_login() {
        let idp = IdpMetadata {
            entity_id: "https://idp.example.com".into(),
            sso_redirect_url: "https://idp.example.com/sso".into(),
        };
        let scan = scan_response(&response(ASSERTION)).unwrap();
        assert!(check_scan(&scan, &sp(), &idp, &expected(Some("_q"))).is_ok());
        for (expected, needle) in [
            (expected(Some("_other")), "another request"),
            (expected(None), "not this login's"),
        ] {
            match check_scan(&scan, &sp(), &idp, &expected) {
                Err(SsoError::Unauthenticated(m)) => assert!(m.contains(needle), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        let failed = ResponseScan {
            status: Some("urn:oasis:names:tc:SAML:2.0:status:Requester".into()),
            ..ResponseScan::default()
        };
        assert!(check_scan(&failed, &sp(), &idp, &expected(None)).is_err());
    }

    fn bearer(data: &str) -> String {
        format!(
            "<saml:SubjectConfirmation Method=\"{BEARER}\">\
             <saml:SubjectConfirmationData {data}/></saml:SubjectConfirmation>"
        )
    }

    #[test]
    fn the_bearer_confirmation_is_checked_on_its_own() {
        let window = Window::new(Timestamp::from_unix(1_000), 10).unwrap();
        let noa = Timestamp::from_unix(1_100).to_rfc3339();
        let ok = format!("Recipient=\"{ACS}\" NotOnOrAfter=\"{noa}\" InResponseTo=\"_q\"");
        let data = confirmation_data(&bearer(&ok)).unwrap().unwrap();
        let at = data.check(&sp(), &expected(Some("_q")), &window).unwrap();
        assert_eq!(at.unix_timestamp(), 1_100);

        let cases = [
            (
                ok.replace(ACS, "https://evil.example.com"),
                Some("_q"),
                "Recipient",
            ),
            (ok.clone(), Some("_other"), "answers request"),
            (ok.clone(), None, "answers request"),
            (
                format!("Recipient=\"{ACS}\" InResponseTo=\"_q\""),
                Some("_q"),
                "no NotOnOrAfter",
            ),
            (ok.replace(&noa, "yesterday"), Some("_q"), "not a date-time"),
            (
                ok.replace(&noa, &Timestamp::from_unix(990).to_rfc3339()),
                Some("_q"),
                "expired",
            ),
            (
                format!(
                    "{ok} NotBefore=\"{}\"",
                    Timestamp::from_unix(1_011).to_rfc3339()
                ),
                Some("_q"),
                "not valid yet",
            ),
        ];
        for (attributes, correlation, needle) in cases {
            let data = confirmation_data(&bearer(&attributes)).unwrap().unwrap();
            match data.check(&sp(), &expected(correlation), &window) {
                Err(SsoError::Unauthenticated(m)) => assert!(m.contains(needle), "{m}"),
                other => panic!("{needle}: {other:?}"),
            }
        }
        let holder = bearer(&ok).replace(BEARER, "urn:oasis:names:tc:SAML:2.0:cm:holder-of-key");
        assert!(confirmation_data(&holder).unwrap().is_none());
        assert!(confirmation_data("<saml:Other/>").is_err());
    }

    #[test]
    fn the_metadata_scan_finds_signing_certificates_only() {
        let md = |inner: &str, protocols: &str| {
            format!(
                "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" entityID=\"e\">\
                 <md:IDPSSODescriptor protocolSupportEnumeration=\"{protocols}\">{inner}\
                 </md:IDPSSODescriptor></md:EntityDescriptor>"
            )
        };
        let keys = "<md:KeyDescriptor use=\"encryption\"><X509Certificate>ENC</X509Certificate>\
                    </md:KeyDescriptor><md:KeyDescriptor><X509Certificate>AB&#13;\nCD\
                    </X509Certificate></md:KeyDescriptor>";
        let scan = scan_metadata(&md(keys, NS_PROTOCOL)).unwrap();
        assert_eq!(scan.signing_certificates, vec!["AB\r\nCD".to_owned()]);
        let error = scan_metadata(&md(keys, "urn:oasis:names:tc:SAML:1.1:protocol")).unwrap_err();
        assert!(error.contains("SAML 2.0"), "{error}");
        assert!(scan_metadata(&format!("x{}", md("", NS_PROTOCOL))).is_err());
        assert!(certificate_is_rsa("AB CD").is_err());
        assert!(certificate_is_rsa("%%%").is_err());
    }

    #[test]
    fn the_response_decoding_is_bounded() {
        assert!(matches!(
            decode_response("  \r\n"),
            Err(SsoError::Invalid(_))
        ));
        assert_eq!(decode_response("PHg+\r\nPC94Pg").unwrap(), b"<x></x>");
        let limit = MAX_SAML_RESPONSE_BYTES.div_ceil(3) * 4;
        assert!(
            matches!(decode_response(&"A".repeat(limit + 4)), Err(SsoError::Invalid(m)) if m.contains("larger"))
        );
        assert!(
            matches!(decode_response(&" ".repeat(limit * 2 + 1)), Err(SsoError::Invalid(m)) if m.contains("larger"))
        );
    }

    #[test]
    fn instants_are_checked_before_saml_rs_reads_them() {
        assert!(is_saml_utc_instant("2030-01-01T00:00:00Z"));
        assert!(is_saml_utc_instant("2030-01-01T00:00:00.123Z"));
        for bad in [
            "2030-01-01T00:00:00",
            "2030-01-01T00:00:00.Z",
            "2030-0z-01T00:00:00Z",
            "2030-01-01T00:00:00+00:00",
            "-2030-01-01T00:00:00Z",
            "12030-01-01T00:00:00Z",
            "",
        ] {
            assert!(!is_saml_utc_instant(bad), "{bad}");
        }
        let error = scan_response(&response(ASSERTION).replace(
            "ID=\"_a\"",
            "ID=\"_a\" IssueInstant=\"2030-0z-01T00:00:00Z\"",
        ))
        .unwrap_err();
        assert!(error.contains("IssueInstant"), "{error}");
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("a+b/c=d e~"), "a%2Bb%2Fc%3Dd%20e~");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn dtd_detection_ignores_case_and_cdata() {
        assert!(reject_dtd("<!doctype x><x/>").is_err());
        assert!(reject_dtd("<x><!ENTITY a \"b\"></x>").is_err());
        assert!(reject_dtd("<x><![CDATA[y]]></x>").is_ok());
        assert!(reject_dtd("<!").is_ok());
    }

    #[test]
    fn quoted_provider_text_is_clipped_and_escaped() {
        let long = "x".repeat(500);
        assert!(quote(&long).chars().count() < MAX_QUOTED_CHARS + 4);
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
    }

    #[test]
    fn window_bounds_include_the_skew() {
        let window = Window::new(Timestamp::from_unix(1_000), 10).unwrap();
        let at = |secs| OffsetDateTime::from_unix_timestamp(secs).unwrap();
        assert!(window.expired(at(990)));
        assert!(!window.expired(at(991)));
        assert!(window.too_early(at(1_011)));
        assert!(!window.too_early(at(1_010)));
        assert_eq!(
            window.replay_deadline(at(1_100)),
            Timestamp::from_unix(1_110)
        );
        let fraction = at(1_100) + time::Duration::milliseconds(1);
        assert_eq!(
            window.replay_deadline(fraction),
            Timestamp::from_unix(1_111)
        );
    }
}
