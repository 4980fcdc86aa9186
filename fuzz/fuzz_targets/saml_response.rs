//! Fuzz target `saml_response`. Its logic is shared with the corpus replay test:
//! kms-core/tests/fuzz_logic/saml_response.rs.
#![no_main]

#[allow(
    dead_code,
    reason = "only this target's function of the shared module is used"
)]
#[path = "../../kms-core/tests/fuzz_logic/mod.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::saml_response::run(data));
