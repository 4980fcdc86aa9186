#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The rooms, by concern: `cli` (the `kms` command line), `config` (settings and their
// sources), `bootstrap` (opening the `Kms`, starting the server), `http` (the server, its
// routes and middleware), `ops` (maintenance, alerts, metrics, logs). `guard` and `client`
// are what embedders and HTTP clients use.
pub mod bootstrap;
pub mod cli;
pub mod client;
pub mod config;
pub mod guard;
pub mod http;
pub mod ops;

pub use http::error::ApiError;
pub use http::server::{
    router, serve, HttpOptions, ServeOptions, DEFAULT_BODY_LIMIT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT,
};
pub use http::{openapi, wire};
pub use ops::metrics::Metrics;
