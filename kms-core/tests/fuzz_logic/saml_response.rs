//! `sso::saml`: arbitrary bytes as a posted `SAMLResponse` (base64-encoded here, so they reach
//! the XML checks, and as the posted text itself), and as IdP metadata. Never panics; a
//! non-empty response within the size limit is never `Invalid` (only base64 and size are), every error
//! message is short; metadata is either accepted with a non-empty entity id and an http(s)
//! SSO URL, or `Invalid`; an accepted response names the expected request and a subject, and
//! its assertion id is in the document. Input with a NUL byte is `metadata NUL response`
//! (both fuzzed); otherwise the whole input is tried as metadata and as a response to the
//! test IdP's metadata.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kms_core::sso::saml::{
    finish_login, parse_idp_metadata, start_login, Expected, SpSettings, MAX_SAML_RESPONSE_BYTES,
};
use kms_core::sso::SsoError;
use kms_core::Timestamp;

const IDP_CERT: &str = include_str!("../fixtures/saml/idp-cert.pem");
/// The request the seed responses answer, and the instant they were written for
/// (2030-01-01T00:00:00Z), as in tests/saml_sp.rs.
const REQUEST_ID: &str = "_4f1d2c3b4a5968778695a4b3c2d1e0f1a2b3c4d5";
const NOW: i64 = 1_893_456_000;

const SP: SpSettings<'static> = SpSettings {
    entity_id: "https://kms.example.com/v1/sso/acme/metadata",
    acs_url: "https://kms.example.com/v1/sso/acme/acs",
};

fn test_metadata() -> String {
    let cert: String = IDP_CERT
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    format!(
        "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" \
         xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"https://idp.example.com/metadata\">\
         <md:IDPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">\
         <md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}\
         </ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>\
         <md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" \
         Location=\"https://idp.example.com/sso\"/></md:IDPSSODescriptor></md:EntityDescriptor>"
    )
}

fn message(error: &SsoError) -> &str {
    match error {
        SsoError::Invalid(m) | SsoError::Unauthenticated(m) | SsoError::Unavailable(m) => m,
    }
}

/// Metadata is accepted whole or refused as `Invalid`.
fn check_metadata(metadata: &str) -> bool {
    match parse_idp_metadata(metadata) {
        Ok(parsed) => {
            assert!(
                !parsed.entity_id.trim().is_empty(),
                "empty entity id accepted"
            );
            assert!(
                parsed.sso_redirect_url.starts_with("https://")
                    || parsed.sso_redirect_url.starts_with("http://"),
                "SSO URL {:?} accepted",
                parsed.sso_redirect_url
            );
            let started = start_login(&SP, metadata, "relay", Timestamp::from_unix(NOW))
                .expect("accepted metadata starts a login");
            assert!(started.url.starts_with(&parsed.sso_redirect_url));
            true
        }
        Err(SsoError::Invalid(m)) => {
            assert!(m.len() < 1024, "metadata error too long: {m}");
            false
        }
        Err(other) => panic!("metadata refused with {other:?}"),
    }
}

/// One response through `finish_login`; `xml` is the document when the posted text is its
/// base64.
fn check_response(metadata: &str, metadata_ok: bool, posted: &str, xml: Option<&[u8]>) {
    let expected = Expected {
        correlation: Some(REQUEST_ID),
        allow_idp_initiated: false,
        groups_attribute: Some("groups"),
        max_skew_secs: 60,
    };
    match finish_login(&SP, metadata, posted, &expected, Timestamp::from_unix(NOW)) {
        Ok(verified) => {
            assert!(metadata_ok, "a response accepted against refused metadata");
            assert!(!verified.identity.subject.trim().is_empty());
            assert_eq!(verified.in_response_to.as_deref(), Some(REQUEST_ID));
            assert!(verified.not_on_or_after > Timestamp::from_unix(NOW));
            if let Some(xml) = xml {
                let text = String::from_utf8_lossy(xml);
                assert!(
                    text.contains(&verified.assertion_id),
                    "assertion id not in the input"
                );
                assert!(text.contains("Signature"), "accepted without a signature");
            }
        }
        Err(error) => {
            assert!(message(&error).len() < 1024, "error too long: {error}");
            if let (Some(xml), true) = (xml, metadata_ok) {
                if !xml.is_empty() && xml.len() <= MAX_SAML_RESPONSE_BYTES {
                    assert!(
                        !matches!(error, SsoError::Invalid(_)),
                        "a well-encoded response within the limit refused as Invalid: {error}"
                    );
                }
            }
        }
    }
}

pub(crate) fn run(data: &[u8]) {
    let (metadata, response) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (
            String::from_utf8_lossy(&data[..nul]).into_owned(),
            &data[nul + 1..],
        ),
        None => {
            check_metadata(&String::from_utf8_lossy(data));
            (test_metadata(), data)
        }
    };
    let metadata_ok = check_metadata(&metadata);
    check_response(
        &metadata,
        metadata_ok,
        &STANDARD.encode(response),
        Some(response),
    );
    check_response(
        &metadata,
        metadata_ok,
        &String::from_utf8_lossy(response),
        None,
    );
}
