//! The `kms` command line: [`args`] defines the flags and subcommands (clap), [`commands`]
//! carries them out, [`exit`] names the exit statuses; `maintenance` holds backup, restore and
//! `kms db check`.

pub mod args;
pub mod commands;
pub mod exit;
mod maintenance;
pub mod people;

pub use args::Cli;
pub use commands::run;
