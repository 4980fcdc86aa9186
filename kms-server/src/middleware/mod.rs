//! The server's middleware, one small layer per concern. [`crate::router`] composes them,
//! outermost first: request id, security headers, tracing, metrics, error bodies, client
//! address and deny-list, panic catching, timeout, body limit; management routes add the
//! rate limit per client address, and `/v1` routes bearer authentication and, for
//! applications that require it, request signatures.

pub mod auth;
pub mod body_limit;
pub mod client_addr;
pub mod error_body;
pub mod metrics;
pub mod rate_limit;
pub mod request_id;
pub mod security_headers;
pub mod signed_requests;
pub mod timeout;
pub mod trace;

pub use auth::authenticate;
pub use request_id::RequestId;
