//! The HTTP handlers, one module per resource. Handlers are thin: extract, call the
//! [`Kms`] facade off the async executor (see [`crate::http::blocking`]), answer with the right status.

pub mod apps;
pub mod audit;
pub mod docs;
pub mod health;
pub mod keys;
pub mod oauth;
pub mod people;
pub mod permissions;
pub mod privacy;
pub mod reports;
pub mod roles;
pub mod tokens;
pub mod ui;
pub mod usage;
pub mod verify;

use std::sync::Arc;

use axum::extract::FromRef;
use kms_core::Kms;

use crate::ops::metrics::Metrics;

/// What every handler may use.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The service.
    pub kms: Kms,
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
}

impl FromRef<AppState> for Kms {
    fn from_ref(state: &AppState) -> Kms {
        state.kms.clone()
    }
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Arc<Metrics> {
        state.metrics.clone()
    }
}
