//! Replays the committed fuzz corpus as ordinary tests: every file in
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` runs through the same code as
//! the cargo-fuzz target (`tests/fuzz_logic/`), so seeds and past crashes are checked on
//! every `cargo test`.

#![allow(clippy::panic, reason = "test harness: a failing input fails the test")]

mod fuzz_logic;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every seed and regression of `target`, then fails naming each input that panicked.
fn replay(target: &str) {
    let (_, run) = fuzz_logic::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target named {target}"));
    let seeds = files_in(&fuzz_dir().join("corpus").join(target));
    assert!(!seeds.is_empty(), "fuzz/corpus/{target}/ has no seeds");
    let regressions = files_in(&fuzz_dir().join("regressions").join(target));
    let mut failed = Vec::new();
    for file in seeds.iter().chain(&regressions) {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: these inputs fail: {failed:#?}"
    );
}

#[test]
fn every_target_has_a_replay_test() {
    let tested = [
        "token_parse",
        "scope_parse",
        "query_parse",
        "permission_check",
        "jwt_validate",
        "request_bodies",
        "request_signature",
    ];
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
