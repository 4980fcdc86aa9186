//! What a store holds, for capacity planning: how many objects of each kind, how many of
//! them are recent, and how large the database is.

use serde::Serialize;

use crate::clock::Timestamp;
use crate::error::StoreError;

/// How many objects of each kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ObjectCounts {
    /// Applications, the system application included.
    pub applications: u64,
    /// API keys, whatever their status (revoked and expired ones are stored until
    /// retention deletes them).
    pub tokens: u64,
    /// Users, whatever their status.
    pub users: u64,
    /// Sessions, ended ones included until they are deleted.
    pub sessions: u64,
    /// Audit events (those pruned by retention are gone).
    pub audit_events: u64,
}

/// A store's size, as [`CapacityStore::capacity`] reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Capacity {
    /// Every object stored now.
    pub stored: ObjectCounts,
    /// The stored objects created (audit events: recorded) at or after the time asked
    /// about.
    pub created_since: ObjectCounts,
    /// The database's size on disk in bytes: SQLite's pages plus its write-ahead log,
    /// PostgreSQL's `pg_database_size`; 0 for a store that keeps no database (memory).
    pub database_bytes: u64,
}

/// Counting for capacity planning. One call, a handful of `count(*)`s: cheap enough for
/// a periodic refresh, not meant for every request.
pub trait CapacityStore {
    /// What the store holds now, and how much of it was created at or after `since`.
    fn capacity(&self, since: Timestamp) -> Result<Capacity, StoreError>;
}
