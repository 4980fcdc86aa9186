//! SAML 2.0 service provider (being written).
