#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The rooms, by concern: `cli` (the `kms` command line), `config` (settings and their
// sources), `bootstrap` (opening the `Kms`, starting the server), `http` (the server, its
// routes and middleware), `ops` (maintenance, alerts, metrics, logs). `guard` and `client`
// are what embedders and HTTP clients use, each behind its own feature, so that an
// application using one compiles neither the server nor the other (see the README).
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod bootstrap;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod cli;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod config;
#[cfg(feature = "guard")]
#[cfg_attr(docsrs, doc(cfg(feature = "guard")))]
pub mod guard;
#[cfg(feature = "guard")]
#[cfg_attr(docsrs, doc(cfg(feature = "guard")))]
pub mod http;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod ops;
#[cfg(any(feature = "client", feature = "server"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "client", feature = "server"))))]
pub mod wire;

#[cfg(feature = "guard")]
pub use http::error::ApiError;
#[cfg(feature = "server")]
pub use http::openapi;
#[cfg(feature = "server")]
pub use http::server::{
    router, serve, HttpOptions, ServeOptions, DEFAULT_BODY_LIMIT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT,
};
#[cfg(feature = "server")]
pub use ops::metrics::Metrics;
