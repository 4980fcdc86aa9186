//! Running the service: the shared counters watched ([`counters`]), scheduled upkeep ([`maintenance`]), security events told to the
//! log ([`security_events`]) and to a webhook ([`alerts`]), Prometheus [`metrics`] and the
//! log output ([`logging`]) and distributed tracing ([`telemetry`]), and the flush of usage counts ([`usage`]).

pub mod alerts;
pub mod capacity;
pub mod checkpoints;
pub mod counters;
pub mod decision_log;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod reports;
pub mod security_events;
pub mod sso_transport;
pub mod telemetry;
pub mod usage;
