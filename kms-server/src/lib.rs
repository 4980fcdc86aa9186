#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod alerts;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod connections;
pub mod error;
pub mod extract;
pub mod guard;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod security_events;
pub mod server;
pub mod tls;
pub mod wire;

pub use error::ApiError;
pub use metrics::Metrics;
pub use server::{router, serve, HttpOptions, ServeOptions};
