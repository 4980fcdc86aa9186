//! Examples of embedding kms in an application.
//!
//! The examples live next to this crate and are run with cargo:
//!
//! - `quickstart` — open (or create) a SQLite database, define a permission hierarchy and
//!   a role, issue an API key, verify it and check permissions in-process:
//!   `cargo run -p kms-examples --example quickstart -- ./quickstart.db`
//!
//! This library itself is empty; it exists so the examples have a package to belong to.
