//! The SAML service provider (`kms_core::sso::saml`) against real signed responses: each
//! response is written here, signed with a test IdP key by saml-rs's own XML-DSig signer,
//! then (for the refusals) tampered with or built to break one rule of the policy. One test
//! runs a whole login against saml-rs's identity provider.

#![cfg(feature = "sso")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::io::Read as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kms_core::sso::saml::{
    finish_login, parse_idp_metadata, sp_metadata, start_login, Expected, SpSettings,
    VerifiedAssertion, MAX_SAML_RESPONSE_BYTES,
};
use kms_core::sso::SsoError;
use kms_core::Timestamp;

const IDP_KEY: &str = include_str!("fixtures/saml/idp-key.pem");
const IDP_CERT: &str = include_str!("fixtures/saml/idp-cert.pem");
const ATTACKER_KEY: &str = include_str!("fixtures/saml/attacker-key.pem");
const ATTACKER_CERT: &str = include_str!("fixtures/saml/attacker-cert.pem");
const EC_CERT: &str = include_str!("fixtures/saml/ec-cert.pem");

const IDP_ENTITY: &str = "https://idp.example.com/metadata";
const IDP_SSO: &str = "https://idp.example.com/sso";
const SP_ENTITY: &str = "https://kms.example.com/v1/sso/acme/metadata";
const ACS: &str = "https://kms.example.com/v1/sso/acme/acs";
const REQUEST_ID: &str = "_4f1d2c3b4a5968778695a4b3c2d1e0f1a2b3c4d5";
const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const EMAIL_FORMAT: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
const PERSISTENT_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
const TRANSIENT_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";
const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
/// 2030-01-01T00:00:00Z: the responses below are written around this instant.
const NOW: i64 = 1_893_456_000;
const SKEW: i64 = 60;

fn sp() -> SpSettings<'static> {
    SpSettings {
        entity_id: SP_ENTITY,
        acs_url: ACS,
    }
}

fn expected() -> Expected<'static> {
    Expected {
        correlation: Some(REQUEST_ID),
        allow_idp_initiated: false,
        groups_attribute: None,
        max_skew_secs: SKEW,
    }
}

fn at(offset: i64) -> String {
    Timestamp::from_unix(NOW + offset).to_rfc3339()
}

/// The base64 body of a PEM certificate, as metadata carries it.
fn cert_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

fn key_descriptor(use_: Option<&str>, cert_pem: &str) -> String {
    let use_ = use_.map(|u| format!(" use=\"{u}\"")).unwrap_or_default();
    format!(
        "<md:KeyDescriptor{use_}><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}\
         </ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>",
        cert_body(cert_pem)
    )
}

/// IdP metadata with the given `KeyDescriptor`s and SSO endpoints (binding suffix, URL).
fn metadata_with(keys: &str, endpoints: &[(&str, &str)]) -> String {
    let mut endpoint_xml = String::new();
    for (binding, url) in endpoints {
        endpoint_xml.push_str(&format!(
            "<md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:{binding}\" \
             Location=\"{url}\"/>"
        ));
    }
    let endpoints = endpoint_xml;
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" \
         xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"{IDP_ENTITY}\">\
         <md:IDPSSODescriptor WantAuthnRequestsSigned=\"false\" \
         protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">{keys}\
         <md:NameIDFormat>{EMAIL_FORMAT}</md:NameIDFormat>{endpoints}\
         </md:IDPSSODescriptor></md:EntityDescriptor>"
    )
}

fn metadata() -> String {
    metadata_with(
        &key_descriptor(Some("signing"), IDP_CERT),
        &[("HTTP-Redirect", IDP_SSO), ("HTTP-POST", IDP_SSO)],
    )
}

/// One response, field by field; `Default` is a valid answer to [`REQUEST_ID`] at [`NOW`].
#[derive(Clone)]
struct Response {
    response_id: String,
    assertion_id: String,
    destination: Option<String>,
    in_response_to: Option<String>,
    bearer_in_response_to: Option<String>,
    response_issuer: Option<String>,
    issuer: String,
    status: String,
    name_id: String,
    name_id_format: String,
    recipient: String,
    bearer_not_on_or_after: String,
    not_before: String,
    not_on_or_after: String,
    audience: String,
    attributes: Vec<(String, Vec<String>)>,
}

impl Default for Response {
    fn default() -> Self {
        Response {
            response_id: "_response1".into(),
            assertion_id: "_assertion1".into(),
            destination: Some(ACS.into()),
            in_response_to: Some(REQUEST_ID.into()),
            bearer_in_response_to: Some(REQUEST_ID.into()),
            response_issuer: Some(IDP_ENTITY.into()),
            issuer: IDP_ENTITY.into(),
            status: SUCCESS.into(),
            name_id: "ada@example.com".into(),
            name_id_format: EMAIL_FORMAT.into(),
            recipient: ACS.into(),
            bearer_not_on_or_after: at(300),
            not_before: at(-60),
            not_on_or_after: at(300),
            audience: SP_ENTITY.into(),
            attributes: vec![
                ("displayName".into(), vec!["Ada Lovelace".into()]),
                ("department".into(), vec!["Analytical Engines".into()]),
            ],
        }
    }
}

fn attr(name: &str, value: Option<&str>) -> String {
    value
        .map(|v| format!(" {name}=\"{v}\""))
        .unwrap_or_default()
}

impl Response {
    fn assertion_xml(&self) -> String {
        let mut attributes = String::new();
        for (name, values) in &self.attributes {
            attributes.push_str(&format!("<saml:Attribute Name=\"{name}\">"));
            for value in values {
                attributes.push_str(&format!(
                    "<saml:AttributeValue>{value}</saml:AttributeValue>"
                ));
            }
            attributes.push_str("</saml:Attribute>");
        }
        format!(
            "<saml:Assertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" \
             Version=\"2.0\" IssueInstant=\"{issued}\"><saml:Issuer>{issuer}</saml:Issuer>\
             <saml:Subject><saml:NameID Format=\"{format}\">{name_id}</saml:NameID>\
             <saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\">\
             <saml:SubjectConfirmationData NotOnOrAfter=\"{bearer}\" Recipient=\"{recipient}\"\
             {bearer_irt}/></saml:SubjectConfirmation></saml:Subject>\
             <saml:Conditions NotBefore=\"{nb}\" NotOnOrAfter=\"{noa}\"><saml:AudienceRestriction>\
             <saml:Audience>{audience}</saml:Audience></saml:AudienceRestriction></saml:Conditions>\
             <saml:AuthnStatement AuthnInstant=\"{issued}\" SessionIndex=\"_session1\">\
             <saml:AuthnContext><saml:AuthnContextClassRef>\
             urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport\
             </saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>\
             <saml:AttributeStatement>{attributes}</saml:AttributeStatement></saml:Assertion>",
            id = self.assertion_id,
            issued = at(-10),
            issuer = self.issuer,
            format = self.name_id_format,
            name_id = self.name_id,
            bearer = self.bearer_not_on_or_after,
            recipient = self.recipient,
            bearer_irt = attr("InResponseTo", self.bearer_in_response_to.as_deref()),
            nb = self.not_before,
            noa = self.not_on_or_after,
            audience = self.audience,
        )
    }

    /// The response around `assertion` (the XML of one or more assertions).
    fn wrap(&self, assertion: &str) -> String {
        let issuer = self
            .response_issuer
            .as_deref()
            .map(|i| format!("<saml:Issuer>{i}</saml:Issuer>"))
            .unwrap_or_default();
        format!(
            "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
             xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" \
             IssueInstant=\"{issued}\"{destination}{irt}>{issuer}<samlp:Status>\
             <samlp:StatusCode Value=\"{status}\"/></samlp:Status>{assertion}</samlp:Response>",
            id = self.response_id,
            issued = at(-10),
            destination = attr("Destination", self.destination.as_deref()),
            irt = attr("InResponseTo", self.in_response_to.as_deref()),
            status = self.status,
        )
    }

    fn xml(&self) -> String {
        self.wrap(&self.assertion_xml())
    }

    /// The response with its assertion signed by the IdP.
    fn signed(&self) -> String {
        sign(&self.xml(), false, IDP_KEY, IDP_CERT)
    }
}

/// Signs the assertion (`whole_response` false) or the response with `key_pem`.
fn sign(xml: &str, whole_response: bool, key_pem: &str, cert_pem: &str) -> String {
    let key = saml_rs::crypto::keys::load_private_key(key_pem, None).expect("the test key loads");
    saml_rs::crypto::construct_saml_signature(
        xml,
        whole_response,
        &key,
        cert_pem,
        RSA_SHA256,
        &[],
        None,
    )
    .expect("saml-rs signs")
}

fn b64(xml: &str) -> String {
    STANDARD.encode(xml)
}

fn finish_at(xml: &str, expected: &Expected<'_>, now: i64) -> Result<VerifiedAssertion, SsoError> {
    finish_login(
        &sp(),
        &metadata(),
        &b64(xml),
        expected,
        Timestamp::from_unix(now),
    )
}

fn finish(xml: &str) -> Result<VerifiedAssertion, SsoError> {
    finish_at(xml, &expected(), NOW)
}

/// A refusal (401) whose message mentions `needle`.
#[track_caller]
fn assert_refused(result: Result<VerifiedAssertion, SsoError>, needle: &str) {
    match result {
        Err(SsoError::Unauthenticated(message)) => assert!(
            message.contains(needle),
            "refused, but for another reason than {needle:?}: {message}"
        ),
        other => panic!("expected a refusal mentioning {needle:?}, got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, SsoError>, needle: &str) {
    match result {
        Err(SsoError::Invalid(message)) => assert!(
            message.contains(needle),
            "invalid, but for another reason than {needle:?}: {message}"
        ),
        other => panic!("expected Invalid mentioning {needle:?}, got {other:?}"),
    }
}

// --- Accepted -----------------------------------------------------------------------------

#[test]
fn a_signed_assertion_gives_the_identity_without_groups() {
    let verified = finish(&Response::default().signed()).expect("accepted");
    assert_eq!(verified.assertion_id, "_assertion1");
    assert_eq!(verified.in_response_to.as_deref(), Some(REQUEST_ID));
    // The earlier of the bearer and the Conditions NotOnOrAfter, plus the skew.
    assert_eq!(
        verified.not_on_or_after,
        Timestamp::from_unix(NOW + 300 + SKEW)
    );
    let identity = verified.identity;
    assert_eq!(identity.subject, "ada@example.com");
    assert_eq!(identity.email.as_deref(), Some("ada@example.com"));
    assert_eq!(identity.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(identity.groups, None);
    assert_eq!(
        identity.attributes.get("department"),
        Some(&vec!["Analytical Engines".to_owned()])
    );
    assert!(!identity.attributes.contains_key("displayName"));
}

#[test]
fn groups_come_from_the_configured_attribute_and_email_from_mail() {
    let response = Response {
        name_id: "u-1815".into(),
        name_id_format: PERSISTENT_FORMAT.into(),
        attributes: vec![
            ("mail".into(), vec!["ada@example.com".into()]),
            ("cn".into(), vec!["Ada".into()]),
            ("memberOf".into(), vec!["admins".into(), "engineers".into()]),
        ],
        ..Response::default()
    };
    let with_groups = Expected {
        groups_attribute: Some("memberOf"),
        ..expected()
    };
    let identity = finish_at(&response.signed(), &with_groups, NOW)
        .expect("accepted")
        .identity;
    assert_eq!(identity.subject, "u-1815");
    assert_eq!(identity.email.as_deref(), Some("ada@example.com"));
    assert_eq!(identity.name.as_deref(), Some("Ada"));
    assert_eq!(
        identity.groups,
        Some(vec!["admins".to_owned(), "engineers".to_owned()])
    );
    assert!(identity.attributes.is_empty(), "{:?}", identity.attributes);

    // The attribute configured but not sent: groups absent, not empty.
    let absent = Expected {
        groups_attribute: Some("groups"),
        ..expected()
    };
    let identity = finish_at(&response.signed(), &absent, NOW)
        .expect("accepted")
        .identity;
    assert_eq!(identity.groups, None);
    assert!(identity.attributes.contains_key("memberOf"));
}

#[test]
fn a_response_signed_as_well_as_its_assertion_is_accepted() {
    let both = sign(&Response::default().signed(), true, IDP_KEY, IDP_CERT);
    finish(&both).expect("accepted");
}

#[test]
fn a_response_without_destination_is_accepted() {
    let response = Response {
        destination: None,
        ..Response::default()
    };
    finish(&response.signed()).expect("accepted");
}

#[test]
fn padding_and_line_breaks_in_the_base64_are_tolerated() {
    let encoded = b64(&Response::default().signed());
    let mut wrapped = String::new();
    for line in encoded.trim_end_matches('=').as_bytes().chunks(76) {
        wrapped.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        wrapped.push_str("\r\n");
    }
    finish_login(
        &sp(),
        &metadata(),
        &wrapped,
        &expected(),
        Timestamp::from_unix(NOW),
    )
    .expect("accepted");
}

// --- Signatures ---------------------------------------------------------------------------

#[test]
fn an_unsigned_assertion_is_refused() {
    assert_refused(finish(&Response::default().xml()), "not signed");
}

#[test]
fn a_name_id_altered_after_signing_is_refused() {
    let signed = Response::default().signed();
    let altered = signed.replace("ada@example.com", "eve@example.com");
    assert_ne!(signed, altered);
    assert_refused(finish(&altered), "signature does not verify");
}

#[test]
fn a_signed_response_around_an_unsigned_assertion_is_refused() {
    let response_only = sign(&Response::default().xml(), true, IDP_KEY, IDP_CERT);
    assert_refused(finish(&response_only), "assertion itself is not signed");
}

#[test]
fn an_assertion_signed_by_another_key_is_refused() {
    let forged = sign(
        &Response::default().xml(),
        false,
        ATTACKER_KEY,
        ATTACKER_CERT,
    );
    assert_refused(
        finish(&forged),
        "certificate that is not in the IdP's metadata",
    );
    // Without the attacker's certificate in KeyInfo: still no key from the metadata verifies.
    let start = forged.find("<ds:KeyInfo>").expect("KeyInfo");
    let end = forged.find("</ds:KeyInfo>").expect("KeyInfo") + "</ds:KeyInfo>".len();
    let bare = format!("{}{}", &forged[..start], &forged[end..]);
    assert_refused(finish(&bare), "signature does not verify");
}

#[test]
fn a_second_unsigned_assertion_is_refused() {
    let signed = Response::default().signed();
    let evil = Response {
        assertion_id: "_evil".into(),
        name_id: "eve@example.com".into(),
        ..Response::default()
    }
    .assertion_xml();
    // After the signed one, and before it.
    let after = signed.replace("</samlp:Response>", &format!("{evil}</samlp:Response>"));
    assert_refused(finish(&after), "more than one Assertion");
    let before = signed.replace("<saml:Assertion ", &format!("{evil}<saml:Assertion "));
    assert_refused(finish(&before), "more than one Assertion");
}

#[test]
fn a_signed_assertion_moved_aside_for_a_forged_one_is_refused() {
    let signed = Response::default().signed();
    let start = signed.find("<saml:Assertion ").expect("assertion");
    let end = signed.rfind("</saml:Assertion>").expect("assertion") + "</saml:Assertion>".len();
    let genuine = &signed[start..end];
    let forged = Response {
        name_id: "eve@example.com".into(),
        ..Response::default()
    }
    .assertion_xml();
    // The genuine assertion hidden in Extensions, the forged one (same ID) consumed.
    let wrapped = format!(
        "{}<samlp:Extensions>{genuine}</samlp:Extensions>{forged}{}",
        &signed[..start],
        &signed[end..]
    );
    assert_refused(finish(&wrapped), "not a direct child");
    // The genuine assertion inside the forged one's subject confirmation.
    let nested = forged.replace(
        "/></saml:SubjectConfirmation>",
        &format!(">{genuine}</saml:SubjectConfirmationData></saml:SubjectConfirmation>"),
    );
    let nested = format!("{}{nested}{}", &signed[..start], &signed[end..]);
    assert_refused(finish(&nested), "same ID");
    // The genuine assertion alone, moved into Extensions: no assertion where one belongs.
    let moved = format!(
        "{}<samlp:Extensions>{genuine}</samlp:Extensions>{}",
        &signed[..start],
        &signed[end..]
    );
    assert_refused(finish(&moved), "not a direct child");
}

#[test]
fn a_sha1_signature_is_refused() {
    let key = saml_rs::crypto::keys::load_private_key(IDP_KEY, None).expect("the test key loads");
    let signed = saml_rs::crypto::construct_saml_signature(
        &Response::default().xml(),
        false,
        &key,
        IDP_CERT,
        "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        &[],
        None,
    )
    .expect("saml-rs signs with RSA-SHA1");
    assert_refused(finish(&signed), "RSA-SHA256/384/512");
}

#[test]
fn a_comment_in_the_name_id_is_refused() {
    // The comment-truncation trick: canonicalization drops the comment, a naive reader stops at it.
    let response = Response {
        name_id: "ada@example.com<!---->.evil.example".into(),
        ..Response::default()
    };
    assert_refused(finish(&response.signed()), "comment");
}

#[test]
fn an_encrypted_assertion_is_refused() {
    let response = Response::default();
    let encrypted = response.wrap(
        "<saml:EncryptedAssertion><xenc:EncryptedData \
         xmlns:xenc=\"http://www.w3.org/2001/04/xmlenc#\"/></saml:EncryptedAssertion>",
    );
    assert_refused(finish(&encrypted), "encrypted");
}

// --- Correlation --------------------------------------------------------------------------

#[test]
fn a_response_to_another_request_is_refused() {
    let other = Response {
        in_response_to: Some("_another".into()),
        bearer_in_response_to: Some("_another".into()),
        ..Response::default()
    };
    assert_refused(finish(&other.signed()), "another request");
    // The unsigned Response@InResponseTo rewritten to ours: the signed bearer data still says
    // which request it answers.
    let rewritten = other.signed().replace(
        "InResponseTo=\"_another\" ",
        &format!("InResponseTo=\"{REQUEST_ID}\" "),
    );
    let rewritten = rewritten.replacen(
        "InResponseTo=\"_another\">",
        &format!("InResponseTo=\"{REQUEST_ID}\">"),
        1,
    );
    assert!(rewritten.contains(&format!("InResponseTo=\"{REQUEST_ID}\"")));
    assert_refused(finish(&rewritten), "InResponseTo");
}

#[test]
fn idp_initiated_login_is_refused_unless_allowed() {
    let unsolicited = Response {
        in_response_to: None,
        bearer_in_response_to: None,
        ..Response::default()
    }
    .signed();
    let no_request = Expected {
        correlation: None,
        ..expected()
    };
    assert_refused(
        finish_at(&unsolicited, &no_request, NOW),
        "IdP-initiated login is not allowed",
    );
    let allowed = Expected {
        allow_idp_initiated: true,
        ..no_request
    };
    let verified = finish_at(&unsolicited, &allowed, NOW).expect("accepted");
    assert_eq!(verified.in_response_to, None);
    // An IdP-initiated login must not carry a request id...
    assert_refused(
        finish_at(&Response::default().signed(), &allowed, NOW),
        "not this login's",
    );
    // ...and a login kms started must not be answered by an unsolicited response.
    assert_refused(finish(&unsolicited), "answers no request");
}

// --- Time ---------------------------------------------------------------------------------

#[test]
fn an_expired_assertion_is_refused_beyond_the_skew() {
    let response = Response::default().signed();
    finish_at(&response, &expected(), NOW + 300 + SKEW - 1).expect("within the skew");
    assert_refused(
        finish_at(&response, &expected(), NOW + 300 + SKEW),
        "expired",
    );
    // The Conditions expire first.
    let conditions = Response {
        not_on_or_after: at(100),
        ..Response::default()
    }
    .signed();
    let verified = finish_at(&conditions, &expected(), NOW).expect("accepted");
    assert_eq!(
        verified.not_on_or_after,
        Timestamp::from_unix(NOW + 100 + SKEW)
    );
    assert_refused(
        finish_at(&conditions, &expected(), NOW + 100 + SKEW),
        "expired",
    );
}

#[test]
fn an_assertion_not_valid_yet_is_refused_beyond_the_skew() {
    let early = Response {
        not_before: at(SKEW + 1),
        ..Response::default()
    }
    .signed();
    assert_refused(finish(&early), "not yet valid");
    let within = Response {
        not_before: at(SKEW),
        ..Response::default()
    }
    .signed();
    finish(&within).expect("within the skew");
}

// --- Audience, recipient, destination, issuer, status -------------------------------------

#[test]
fn another_audience_is_refused() {
    let response = Response {
        audience: "https://other-sp.example.com".into(),
        ..Response::default()
    };
    assert_refused(finish(&response.signed()), "audience");
}

#[test]
fn another_recipient_or_destination_is_refused() {
    let recipient = Response {
        recipient: "https://evil.example.com/acs".into(),
        ..Response::default()
    };
    assert_refused(finish(&recipient.signed()), "Recipient");
    let destination = Response {
        destination: Some("https://evil.example.com/acs".into()),
        ..Response::default()
    };
    assert_refused(finish(&destination.signed()), "Destination");
}

#[test]
fn another_issuer_is_refused() {
    let assertion_issuer = Response {
        issuer: "https://evil.example.com".into(),
        ..Response::default()
    };
    assert_refused(finish(&assertion_issuer.signed()), "issuer");
    let response_issuer = Response {
        response_issuer: Some("https://evil.example.com".into()),
        ..Response::default()
    };
    assert_refused(finish(&response_issuer.signed()), "issuer");
}

#[test]
fn a_failed_status_is_refused() {
    let response = Response {
        status: "urn:oasis:names:tc:SAML:2.0:status:Responder".into(),
        ..Response::default()
    };
    assert_refused(finish(&response.signed()), "did not authenticate");
}

#[test]
fn a_transient_name_id_is_refused() {
    let response = Response {
        name_id: "_8f6e".into(),
        name_id_format: TRANSIENT_FORMAT.into(),
        ..Response::default()
    };
    assert_refused(finish(&response.signed()), "transient");
}

// --- Malformed input ----------------------------------------------------------------------

#[test]
fn a_dtd_in_the_response_is_refused() {
    let signed = Response::default().signed();
    let with_dtd = format!("<!DOCTYPE samlp:Response [<!ENTITY e \"eve\">]>{signed}");
    assert_refused(finish(&with_dtd), "DTD");
}

#[test]
fn bad_base64_and_oversize_are_invalid() {
    let now = Timestamp::from_unix(NOW);
    assert_invalid(
        finish_login(&sp(), &metadata(), "not*base64!", &expected(), now),
        "base64",
    );
    assert_invalid(
        finish_login(&sp(), &metadata(), "", &expected(), now),
        "empty",
    );
    let huge = b64(&format!(
        "{}<!-- {} -->",
        Response::default().signed(),
        "x".repeat(MAX_SAML_RESPONSE_BYTES)
    ));
    assert_invalid(
        finish_login(&sp(), &metadata(), &huge, &expected(), now),
        "larger than 512 KiB",
    );
    let not_xml = b64("\u{0}\u{1}binary");
    assert_refused(
        finish_login(&sp(), &metadata(), &not_xml, &expected(), now),
        "text outside its root element",
    );
}

#[test]
fn unusable_arguments_are_invalid() {
    let response = b64(&Response::default().signed());
    let now = Timestamp::from_unix(NOW);
    let skew = Expected {
        max_skew_secs: -1,
        ..expected()
    };
    assert_invalid(
        finish_login(&sp(), &metadata(), &response, &skew, now),
        "skew",
    );
    let correlation = Expected {
        correlation: Some(""),
        ..expected()
    };
    assert_invalid(
        finish_login(&sp(), &metadata(), &response, &correlation, now),
        "correlation",
    );
    let bad_sp = SpSettings {
        entity_id: SP_ENTITY,
        acs_url: "/relative/acs",
    };
    assert_invalid(
        finish_login(&bad_sp, &metadata(), &response, &expected(), now),
        "ACS URL",
    );
}

// --- Metadata -----------------------------------------------------------------------------

#[test]
fn idp_metadata_gives_the_entity_and_the_redirect_endpoint() {
    let parsed = parse_idp_metadata(&metadata()).expect("valid metadata");
    assert_eq!(parsed.entity_id, IDP_ENTITY);
    assert_eq!(parsed.sso_redirect_url, IDP_SSO);
    // A KeyDescriptor without `use` signs too.
    let no_use = metadata_with(
        &key_descriptor(None, IDP_CERT),
        &[("HTTP-Redirect", IDP_SSO)],
    );
    parse_idp_metadata(&no_use).expect("valid metadata");
}

#[test]
fn idp_metadata_without_a_signing_certificate_is_invalid() {
    let none = metadata_with("", &[("HTTP-Redirect", IDP_SSO)]);
    assert_invalid(parse_idp_metadata(&none), "no signing certificate");
    let encryption_only = metadata_with(
        &key_descriptor(Some("encryption"), IDP_CERT),
        &[("HTTP-Redirect", IDP_SSO)],
    );
    assert_invalid(
        parse_idp_metadata(&encryption_only),
        "no signing certificate",
    );
    let ec_only = metadata_with(
        &key_descriptor(Some("signing"), EC_CERT),
        &[("HTTP-Redirect", IDP_SSO)],
    );
    assert_invalid(parse_idp_metadata(&ec_only), "no RSA signing certificate");
    let garbage = metadata().replace(&cert_body(IDP_CERT)[..40], "AAAA");
    assert_invalid(parse_idp_metadata(&garbage), "signing certificate 1");
}

#[test]
fn idp_metadata_without_a_redirect_endpoint_is_invalid() {
    let post_only = metadata_with(
        &key_descriptor(Some("signing"), IDP_CERT),
        &[("HTTP-POST", IDP_SSO)],
    );
    assert_invalid(parse_idp_metadata(&post_only), "HTTP-Redirect");
    let relative = metadata_with(
        &key_descriptor(Some("signing"), IDP_CERT),
        &[("HTTP-Redirect", "/sso")],
    );
    assert_invalid(parse_idp_metadata(&relative), "absolute http(s) URL");
}

#[test]
fn idp_metadata_with_a_dtd_or_several_entities_or_oversize_is_invalid() {
    let body = metadata().replacen("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "", 1);
    let with_dtd =
        format!("<!DOCTYPE md:EntityDescriptor [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{body}");
    assert_invalid(parse_idp_metadata(&with_dtd), "DTD");
    let two = format!(
        "<md:EntitiesDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\">{body}{}</md:EntitiesDescriptor>",
        body.replace(IDP_ENTITY, "https://other-idp.example.com")
    );
    assert_invalid(parse_idp_metadata(&two), "exactly one entity");
    let sp_only = body
        .replace("IDPSSODescriptor", "SPSSODescriptor")
        .replace("WantAuthnRequestsSigned", "AuthnRequestsSigned");
    assert_invalid(parse_idp_metadata(&sp_only), "identity provider");
    let huge = format!("{body}<!-- {} -->", "x".repeat(256 * 1024));
    assert_invalid(parse_idp_metadata(&huge), "larger than 256 KiB");
    assert_invalid(parse_idp_metadata("<md:EntityDescriptor"), "");
}

#[test]
fn sp_metadata_names_the_acs_and_wants_signed_assertions() {
    let xml = sp_metadata(&sp()).expect("SP metadata");
    for needle in [
        format!("entityID=\"{SP_ENTITY}\""),
        "AuthnRequestsSigned=\"false\"".to_owned(),
        "WantAssertionsSigned=\"true\"".to_owned(),
        "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST".to_owned(),
        format!("Location=\"{ACS}\""),
    ] {
        assert!(xml.contains(&needle), "{needle} missing from {xml}");
    }
    assert_invalid(
        sp_metadata(&SpSettings {
            entity_id: " ",
            acs_url: ACS,
        }),
        "entity id",
    );
}

// --- The request --------------------------------------------------------------------------

fn query_value(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8")
}

fn authn_request_xml(url: &str) -> String {
    let deflated = STANDARD
        .decode(query_value(url, "SAMLRequest").expect("SAMLRequest"))
        .expect("base64");
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&deflated[..])
        .read_to_string(&mut xml)
        .expect("raw DEFLATE");
    xml
}

#[test]
fn the_authn_request_goes_to_the_redirect_endpoint_with_the_relay_state() {
    let now = Timestamp::from_unix(NOW);
    let started = start_login(&sp(), &metadata(), "st8/+= x", now).expect("started");
    assert!(started.url.starts_with(&format!("{IDP_SSO}?SAMLRequest=")));
    assert_eq!(
        query_value(&started.url, "RelayState").as_deref(),
        Some("st8/+= x")
    );
    assert!(started.correlation.starts_with('_'));
    assert_eq!(started.correlation.len(), 41);
    let xml = authn_request_xml(&started.url);
    for needle in [
        format!("ID=\"{}\"", started.correlation),
        format!("IssueInstant=\"{}\"", now.to_rfc3339()),
        format!("Destination=\"{IDP_SSO}\""),
        format!("AssertionConsumerServiceURL=\"{ACS}\""),
        "ProtocolBinding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\"".to_owned(),
        format!("<saml:Issuer>{SP_ENTITY}</saml:Issuer>"),
    ] {
        assert!(xml.contains(&needle), "{needle} missing from {xml}");
    }
    let again = start_login(&sp(), &metadata(), "st8", now).expect("started");
    assert_ne!(again.correlation, started.correlation);
}

#[test]
fn an_sso_url_with_a_query_gets_the_request_appended() {
    let with_query = metadata_with(
        &key_descriptor(Some("signing"), IDP_CERT),
        &[(
            "HTTP-Redirect",
            "https://idp.example.com/sso?tenant=acme&amp;x=1",
        )],
    );
    let started =
        start_login(&sp(), &with_query, "state", Timestamp::from_unix(NOW)).expect("started");
    assert!(
        started
            .url
            .starts_with("https://idp.example.com/sso?tenant=acme&x=1&SAMLRequest="),
        "{}",
        started.url
    );
}

#[test]
fn an_unusable_relay_state_is_invalid() {
    let now = Timestamp::from_unix(NOW);
    assert_invalid(start_login(&sp(), &metadata(), "", now), "RelayState");
    assert_invalid(
        start_login(&sp(), &metadata(), &"x".repeat(81), now),
        "RelayState",
    );
    assert_invalid(start_login(&sp(), &metadata(), "a\nb", now), "RelayState");
    assert_invalid(start_login(&sp(), "<x/>", "state", now), "metadata");
}

// --- A whole login against saml-rs's identity provider ------------------------------------

#[test]
fn a_login_round_trip_with_saml_rs_as_the_identity_provider() {
    use saml_rs::{
        AuthnRequest, BrowserInput, CertificatePem, Credentials, EntityId, IdpConfig,
        IdpValidationPolicy, MetadataTrustPolicy, NameId, NameIdFormat, PrivateKeyPem,
        ReplayPolicy, RespondSso, Saml, SamlValidationContext, SpDescriptor, SsoEndpoint, Subject,
    };

    let idp = Saml::idp(
        IdpConfig::builder(EntityId::try_new(IDP_ENTITY).expect("entity id"))
            .sso_endpoint(SsoEndpoint::redirect(IDP_SSO).expect("endpoint"))
            .credentials(Credentials {
                signing_key: Some(PrivateKeyPem::new(IDP_KEY)),
                signing_certificate: Some(CertificatePem::new(IDP_CERT)),
                ..Credentials::default()
            })
            .validation(IdpValidationPolicy::recommended())
            .build()
            .expect("IdP config"),
    )
    .expect("IdP");
    let idp_metadata = idp.metadata_xml().to_owned();
    parse_idp_metadata(&idp_metadata).expect("saml-rs's IdP metadata passes our checks");
    let sp_descriptor = SpDescriptor::from_metadata_xml(
        &sp_metadata(&sp()).expect("SP metadata"),
        MetadataTrustPolicy::UnsignedForCompatibility,
    )
    .expect("the IdP reads our SP metadata");

    // saml-rs's IdP stamps responses with the system clock: the login runs now.
    let now = Timestamp::from_unix(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
            .try_into()
            .expect("a time before 2262"),
    );
    let started = start_login(&sp(), &idp_metadata, "relay-1", now).expect("started");
    let query = started.url.split_once('?').expect("query").1.to_owned();
    let validation = || {
        SamlValidationContext::new(
            std::time::SystemTime::now(),
            ReplayPolicy::DisabledForCompatibility,
        )
    };
    let received = idp
        .receive_sso(
            &sp_descriptor,
            BrowserInput::<AuthnRequest>::redirect(query),
            validation(),
        )
        .expect("the IdP accepts our AuthnRequest");
    assert_eq!(received.message().id().as_str(), started.correlation);
    let response = idp
        .respond_sso(
            &sp_descriptor,
            &received,
            Subject::new(
                NameId::new("grace@example.com", Some(NameIdFormat::EmailAddress)),
                Vec::new(),
            ),
            RespondSso::post(),
        )
        .expect("the IdP answers");
    let form = response.post_form().expect("a POST form");
    assert_eq!(form.value("RelayState"), Some("relay-1"));
    let saml_response = form.value("SAMLResponse").expect("SAMLResponse").to_owned();

    let expected = Expected {
        correlation: Some(&started.correlation),
        ..expected()
    };
    let verified =
        finish_login(&sp(), &idp_metadata, &saml_response, &expected, now).expect("logged in");
    assert_eq!(verified.identity.subject, "grace@example.com");
    assert_eq!(
        verified.identity.email.as_deref(),
        Some("grace@example.com")
    );
    assert_eq!(
        verified.in_response_to.as_deref(),
        Some(started.correlation.as_str())
    );
    // A replay verifies again: refusing it is the caller's replay cache, keyed by this id.
    let again = finish_login(&sp(), &idp_metadata, &saml_response, &expected, now).expect("again");
    assert_eq!(again.assertion_id, verified.assertion_id);
    // Another login attempt's correlation does not take it.
    let other = Expected {
        correlation: Some("_another"),
        ..expected
    };
    assert_refused(
        finish_login(&sp(), &idp_metadata, &saml_response, &other, now),
        "another request",
    );
}
