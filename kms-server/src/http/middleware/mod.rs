//! The server's middleware, one small module per concern. [`edge::EdgeLayer`] sequences the
//! steps every request takes, outermost first: request id and log span, client address and
//! deny-list, body limit, timeout and panic catching, and on the
//! way out error bodies, security headers, metrics and the log line. Management routes add
//! the rate limit per client address, and `/v1` routes bearer authentication and, for
//! applications that require it, request signatures.

pub mod auth;
pub mod body_limit;
pub mod client_addr;
pub mod edge;
pub mod error_body;
pub mod rate_limit;
pub mod request_id;
pub mod security_headers;
pub mod signed_requests;
pub mod timeout;
pub mod trace;

pub use auth::authenticate;
pub use request_id::RequestId;
