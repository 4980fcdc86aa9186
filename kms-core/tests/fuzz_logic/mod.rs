//! The body of every fuzz target, shared by the cargo-fuzz binaries in `fuzz/` (which
//! include this module by path) and by `tests/fuzz_corpus_replay.rs` (which replays the
//! committed corpus through it on every `cargo test`).
//!
//! Each function takes raw fuzzer bytes, must never panic on any input, and asserts the
//! target's invariants; an assertion failure is a finding.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "harness code: a broken fixture must stop the fuzzer loudly"
)]

pub(crate) mod condition_parse;
pub(crate) mod jwt_validate;
#[cfg(feature = "sso")]
pub(crate) mod oidc_callback;
pub(crate) mod permission_check;
pub(crate) mod query_parse;
pub(crate) mod request_bodies;
pub(crate) mod request_signature;
#[cfg(feature = "sso")]
pub(crate) mod saml_response;
pub(crate) mod scope_parse;
pub(crate) mod token_parse;

/// A target's name (also its corpus directory under `fuzz/corpus/`) and its body.
pub(crate) type Target = (&'static str, fn(&[u8]));

/// Every target.
pub(crate) const TARGETS: &[Target] = &[
    ("token_parse", token_parse::run),
    ("scope_parse", scope_parse::run),
    ("query_parse", query_parse::run),
    ("condition_parse", condition_parse::run),
    ("permission_check", permission_check::run),
    ("jwt_validate", jwt_validate::run),
    ("request_bodies", request_bodies::run),
    ("request_signature", request_signature::run),
    #[cfg(feature = "sso")]
    ("oidc_callback", oidc_callback::run),
    #[cfg(feature = "sso")]
    ("saml_response", saml_response::run),
];
