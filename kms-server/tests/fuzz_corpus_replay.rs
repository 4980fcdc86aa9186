//! Replays the committed corpus of kms-server's fuzz targets as ordinary tests: every file in
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` runs through the same code as the
//! cargo-fuzz target (`tests/fuzz_logic/`).

#![allow(clippy::panic, reason = "test harness: a failing input fails the test")]

mod fuzz_logic;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

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

#[test]
fn every_server_fuzz_target_replays_cleanly() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    for (target, run) in fuzz_logic::TARGETS {
        let seeds = files_in(&fuzz.join("corpus").join(target));
        assert!(!seeds.is_empty(), "fuzz/corpus/{target}/ has no seeds");
        let regressions = files_in(&fuzz.join("regressions").join(target));
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
    let names: Vec<String> = Sources::env_names()
        .filter(|n| *n != "KMS_MASTER_KEY")
        .map(|n| n.trim_start_matches("KMS_").to_ascii_lowercase())
        .collect();
    for name in &names {
        assert!(
            set.contains(&name.as_str()) || name == "tls_cert" || name == "tls_key",
            "the seed does not set {name}"
        );
    }
}
