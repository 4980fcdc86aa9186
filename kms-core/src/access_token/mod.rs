//! Access tokens: short-lived EdDSA JWTs exchanged for an API key or a refresh token, the
//! OAuth 2.0 shapes of their endpoints, and the ring of signing keys they are signed with.

pub(crate) mod jwt;
pub(crate) mod keyring;

pub use jwt::{AccessClaims, Introspection, JwtError, JwtSettings, OAuthError, TokenResponse};
pub use keyring::KeyInfo;
