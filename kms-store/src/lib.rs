#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod listeners;
mod memory;
pub mod migrations;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;
