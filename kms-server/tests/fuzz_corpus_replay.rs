//! Replays the committed corpus of kms-server's fuzz targets as ordinary tests: every file in
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` runs through the same code as the
//! cargo-fuzz target (`tests/fuzz_logic/`).

#![allow(clippy::panic, reason = "test harness: a failing input fails the test")]

mod fuzz_logic;

use std::path::Path;

#[path = "../../kms-core/tests/fuzz_logic/replay.rs"]
mod corpus;

#[test]
fn every_server_fuzz_target_replays_cleanly() {
    for (target, run) in fuzz_logic::TARGETS {
        corpus::replay(target, *run);
    }
}

/// The full seed sets every file setting to a valid value, so the fuzzer starts from inputs
/// that pass validation (and the file/environment comparison runs on them).
#[test]
fn the_full_config_seed_is_valid_from_the_file_and_from_the_environment() {
    use kms_server::config::{Config, ServeConfig, Sources};
    use std::collections::BTreeMap;

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/config_parse/full_valid");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let sources = Sources::parse(BTreeMap::new(), |_| None, Some((&path, &text)))
        .unwrap_or_else(|e| panic!("{e}"));
    Config::resolve(&sources).unwrap_or_else(|e| panic!("{e}"));
    let serve = ServeConfig::resolve(&sources).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(serve.listen.port(), 8443);
    let set: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, _)| k)
        .collect();
    // The master key's other sources exclude the key file the seed sets (and are not
    // file settings).
    let names: Vec<String> = Sources::env_names()
        .filter(|n| *n != "KMS_MASTER_KEY" && *n != "KMS_MASTER_KEY_COMMAND")
        .map(|n| n.trim_start_matches("KMS_").to_ascii_lowercase())
        .collect();
    for name in &names {
        assert!(
            set.contains(&name.as_str()) || name == "tls_cert" || name == "tls_key",
            "the seed does not set {name}"
        );
    }
}
