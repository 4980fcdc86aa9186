//! The `kms` binary: see `kms --help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    kms_server::commands::run(kms_server::cli::Cli::parse())
}
