//! Single sign-on: the OpenID Connect relying party ([`oidc`]) and the SAML 2.0 service
//! provider ([`saml`]). Both are pure: every request to a provider (discovery, key sets,
//! the token endpoint, userinfo) goes through an [`HttpTransport`] the embedding server
//! supplies, so the core keeps no network code and tests can answer in memory.

pub mod oidc;
pub mod saml;

use std::collections::BTreeMap;

/// One HTTP request to an identity provider.
pub type HttpRequest = http::Request<Vec<u8>>;
/// Its response.
pub type HttpResponse = http::Response<Vec<u8>>;

/// Sends requests to identity providers. Implementations must not follow redirects and
/// must bound the time a call takes and the size of the body they read.
pub trait HttpTransport: Send + Sync {
    /// Sends `request` and returns the provider's response, whatever its status.
    fn call(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;
}

/// Why a request to a provider got no response (unreachable, timed out, too large).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// What a provider asserted about the person who signed in, after every check passed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExternalIdentity {
    /// The provider's stable id of the account (`sub`, or the SAML `NameID`).
    pub subject: String,
    /// The email, if the provider gave one.
    pub email: Option<String>,
    /// The display name, if the provider gave one.
    pub name: Option<String>,
    /// The groups, when the provider sent the groups claim or attribute at all (`None`
    /// means absent, which leaves mapped roles as they are; `Some(vec![])` clears them).
    pub groups: Option<Vec<String>>,
    /// Every other claim or attribute, for display (string values only).
    pub attributes: BTreeMap<String, Vec<String>>,
}

/// Why a login step failed. `Invalid` answers 400 (a bad or replayed callback, a missing
/// cookie), `Unauthenticated` 401 (a bad ID token or assertion), `Unavailable` 503 (the
/// provider could not be reached).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsoError {
    /// The request or callback is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The provider's statement (ID token, assertion) did not pass the checks.
    #[error("{0}")]
    Unauthenticated(String),
    /// The provider could not be reached or answered with an error.
    #[error("{0}")]
    Unavailable(String),
}
