//! The server's middleware, one small module per concern. [`edge::EdgeLayer`] sequences the
//! steps every request takes, outermost first: request id and log span, client address and
//! deny-list, body limit, timeout and panic catching, and on the
//! way out error bodies, security headers, metrics and the log line. Management routes add
//! the rate limit per client address, and `/v1` routes bearer authentication and, for
//! applications that require it, request signatures.
//!
//! With the `guard` feature alone, only [`request_id`], [`timeout`], [`auth`] and
//! [`client_addr`] are compiled: the pieces [`crate::guard`] shares with the server.

pub mod auth;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod body_limit;
pub mod client_addr;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod edge;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod error_body;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod rate_limit;
pub mod request_id;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod security_headers;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod signed_requests;
pub mod timeout;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod trace;

pub use auth::authenticate;
pub use request_id::RequestId;
