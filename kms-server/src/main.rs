//! The `kms` binary: see `kms --help`.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc malloc: every cold verification allocates and frees argon2id's
/// working memory (19 MiB at OWASP cost); glibc's adaptive mmap threshold then serves it
/// from the heap and keeps the freed blocks resident, so RSS grew by a hash-sized block per
/// cached key (gigabytes in the load test). mimalloc returns such blocks to the system.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    kms_server::cli::run(kms_server::cli::Cli::parse())
}
