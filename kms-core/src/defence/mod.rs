//! Defences around verification and management calls: lockout after repeated failures,
//! per-key rate limits (both shared by several nodes when configured), and signed management requests.

pub mod counters;
pub(crate) mod failure_gate;
pub(crate) mod rate_limit;
pub mod request_signing;

pub use failure_gate::LockoutPolicy;
