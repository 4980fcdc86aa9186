#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod columns;
mod listeners;
mod memory;
pub mod migrations;
pub mod postgres;
mod sqlite;
#[doc(hidden)]
pub mod testing;

pub use memory::MemoryStore;
pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::SqliteStore;
