//! The HTTP server: the router and how it is served ([`server`], [`tls`],
//! [`connections`]), the handlers ([`routes`]) and the layers around them
//! ([`middleware`]), how requests are read ([`extract`]) and answered ([`error`],
//! [`crate::wire`]), and the OpenAPI document ([`openapi`]).
//!
//! With the `guard` feature alone only what [`crate::guard`] shares with the server is
//! compiled: the error body ([`error`]), where kms calls run ([`blocking`]), and from
//! [`middleware`] the request id, the request timeout's store-work marker, bearer
//! authentication and the client address.

pub mod blocking;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod connections;
pub mod error;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod extract;
pub mod middleware;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod openapi;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod routes;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod tls;
