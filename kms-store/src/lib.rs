#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backup;
mod columns;
mod listeners;
mod memory;
pub mod migrations;
pub mod postgres;
mod redis_counters;
mod sqlite;
#[doc(hidden)]
pub mod testing;

pub use memory::MemoryStore;
pub use postgres::{PostgresCounters, PostgresOptions, PostgresStore};
pub use redis_counters::{RedisCounters, RedisOptions};
pub use sqlite::SqliteStore;
