//! The `kms` command line: [`args`] defines the flags and subcommands (clap), [`commands`]
//! carries them out, [`exit`] names the exit statuses; `maintenance` holds backup, restore and
//! `kms db check`, `progress` the bulk commands' progress bar on a terminal.

pub mod args;
pub mod commands;
pub mod custody;
pub mod exit;
mod maintenance;
pub mod people;
mod progress;
mod reports;
pub mod usage;

pub use args::Cli;
pub use commands::run;
