//! Conditional grants against a naive reference: random policies (flat scopes, roles that
//! inherit roles and carry conditional scopes of their own), random tokens with unconditional and conditional grants, random
//! conditions over the context (`==`, `!=`, `in`, `AND`, `OR`, `NOT`) and random request
//! contexts. The compiled path (`Kms::verify` through the cache and the snapshot) must
//! answer exactly what the reference computes: a scope is held when an unconditional grant
//! reaches it, or a conditional one whose condition holds — and a condition that reads a
//! missing context value is false as a whole.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

#[path = "support/conditions.rs"]
mod conditions;

use conditions::{case, kms_decisions};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("KMS_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    #[test]
    fn compiled_conditional_grants_match_the_reference(case in case()) {
        kms_decisions(&case)?;
    }
}
