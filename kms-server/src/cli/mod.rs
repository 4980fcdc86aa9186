//! The `kms` command line: [`args`] defines the flags and subcommands (clap), [`commands`]
//! carries them out, [`exit`] names the exit statuses.

pub mod args;
pub mod commands;
pub mod exit;

pub use args::Cli;
pub use commands::run;
