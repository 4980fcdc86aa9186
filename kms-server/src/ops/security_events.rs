//! Security events from kms-core (lockouts, refresh-token reuse, a broken audit chain)
//! become warning log lines and a metric. Events carry ids and addresses, never secrets.

use std::sync::Arc;

use kms_core::{SecurityEvent, SecurityEventSink};

use crate::ops::metrics::Metrics;

/// Logs each security event at WARN and counts it, when given metrics.
#[derive(Debug, Default)]
pub struct LoggedSecurityEvents {
    metrics: Option<Arc<Metrics>>,
}

impl LoggedSecurityEvents {
    /// A sink counting into `metrics`, if any.
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        LoggedSecurityEvents { metrics }
    }
}

impl SecurityEventSink for LoggedSecurityEvents {
    fn on_security_event(&self, event: &SecurityEvent) {
        let kind = event.kind();
        let body = serde_json::to_value(event).unwrap_or_default();
        tracing::warn!(event = %kind, details = %body, "security event");
        if let Some(metrics) = &self.metrics {
            metrics.record_security_event(kind);
        }
    }
}
