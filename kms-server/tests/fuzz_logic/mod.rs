//! The bodies of kms-server's fuzz targets, shared by the cargo-fuzz binaries in
//! `fuzz/fuzz_targets/` and by `tests/fuzz_corpus_replay.rs`.

pub(crate) mod config_parse;

/// The body of a fuzz target: runs one input, panicking on a broken invariant.
pub(crate) type Target = fn(&[u8]);

/// Every target: its name and the function one input runs through.
pub(crate) const TARGETS: &[(&str, Target)] = &[("config_parse", config_parse::run)];
