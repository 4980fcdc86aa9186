//! Replays the committed fuzz corpus as ordinary tests: every file in
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` runs through the same code as
//! the cargo-fuzz target (`tests/fuzz_logic/`), so seeds and past crashes are checked on
//! every `cargo test`.

#![allow(clippy::panic, reason = "test harness: a failing input fails the test")]

mod fuzz_logic;

#[path = "fuzz_logic/replay.rs"]
mod corpus;

/// Replays the target named `target`.
fn replay(target: &str) {
    let (_, run) = fuzz_logic::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target named {target}"));
    corpus::replay(target, *run);
}

#[test]
fn every_target_has_a_replay_test() {
    #[allow(
        unused_mut,
        reason = "the sso targets are added only with the sso feature"
    )]
    let mut tested = vec![
        "token_parse",
        "scope_parse",
        "query_parse",
        "condition_parse",
        "permission_check",
        "jwt_validate",
        "request_bodies",
        "request_signature",
        #[cfg(feature = "sso")]
        "oidc_callback",
    ];
    #[cfg(feature = "sso")]
    tested.push("saml_response");
    let names: Vec<&str> = fuzz_logic::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, tested);
}

#[test]
fn token_parse_corpus_replays_cleanly() {
    replay("token_parse");
}

#[test]
fn scope_parse_corpus_replays_cleanly() {
    replay("scope_parse");
}

#[test]
fn query_parse_corpus_replays_cleanly() {
    replay("query_parse");
}

#[test]
fn condition_parse_corpus_replays_cleanly() {
    replay("condition_parse");
}

#[test]
fn permission_check_corpus_replays_cleanly() {
    replay("permission_check");
}

#[test]
fn jwt_validate_corpus_replays_cleanly() {
    replay("jwt_validate");
}

#[test]
fn request_bodies_corpus_replays_cleanly() {
    replay("request_bodies");
}

#[test]
fn request_signature_corpus_replays_cleanly() {
    replay("request_signature");
}

#[cfg(feature = "sso")]
#[test]
fn oidc_callback_corpus_replays_cleanly() {
    replay("oidc_callback");
}

#[cfg(feature = "sso")]
#[test]
fn saml_response_corpus_replays_cleanly() {
    replay("saml_response");
}
