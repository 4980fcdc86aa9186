//! The bodies of kms-server's fuzz targets, shared by the cargo-fuzz binaries in
//! `fuzz/fuzz_targets/` and by `tests/fuzz_corpus_replay.rs`.

pub(crate) mod config_parse;

/// Every target: its name and the function one input runs through.
pub(crate) const TARGETS: &[(&str, fn(&[u8]))] = &[("config_parse", config_parse::run)];
