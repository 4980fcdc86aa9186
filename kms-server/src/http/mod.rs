//! The HTTP server: the router and how it is served ([`server`], [`tls`],
//! [`connections`]), the handlers ([`routes`]) and the layers around them
//! ([`middleware`]), how requests are read ([`extract`]) and answered ([`error`],
//! [`wire`]), and the OpenAPI document ([`openapi`]).

pub mod blocking;
pub mod connections;
pub mod error;
pub mod extract;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod tls;
pub mod wire;
