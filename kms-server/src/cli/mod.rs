//! The `kms` command line: [`args`] defines the flags and subcommands (clap), [`commands`]
//! carries them out.

pub mod args;
pub mod commands;

pub use args::Cli;
pub use commands::run;
