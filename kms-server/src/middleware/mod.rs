//! The server's middleware, one small layer per concern. [`crate::router`] composes them,
//! outermost first: request id, tracing, metrics, error bodies, panic catching, timeout,
//! security headers, body limit; `/v1` routes add bearer authentication.

pub mod auth;
pub mod body_limit;
pub mod error_body;
pub mod metrics;
pub mod request_id;
pub mod security_headers;
pub mod timeout;
pub mod trace;

pub use auth::authenticate;
pub use request_id::RequestId;
