//! Security events worth alerting on (a lockout, a refresh token presented twice, a broken
//! audit chain) and the sink that receives them.

/// A security event worth alerting on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SecurityEvent {
    /// A source (`ip:<address>`, `ip:<application>:<address>` for an address a tenant
    /// reported, or `caller:<token id>` for a verifying service) was locked out after
    /// repeated failures.
    Lockout {
        /// The locked source.
        source: String,
    },
    /// A spent refresh token was presented again; its family was revoked.
    RefreshReuse {
        /// The revoked family.
        family_id: String,
    },
    /// The audit chain failed verification.
    AuditChainBroken {
        /// The first event that does not check out.
        first_bad_seq: u64,
    },
}

impl SecurityEvent {
    /// The event's name, as in its serialized `event` field: `lockout`, `refresh_reuse`,
    /// `audit_chain_broken`.
    pub fn kind(&self) -> &'static str {
        match self {
            SecurityEvent::Lockout { .. } => "lockout",
            SecurityEvent::RefreshReuse { .. } => "refresh_reuse",
            SecurityEvent::AuditChainBroken { .. } => "audit_chain_broken",
        }
    }
}

/// Receives security events. Called on the request path: implementations must not block
/// (queue the event and deliver it elsewhere).
pub trait SecurityEventSink: Send + Sync {
    /// Called once per event.
    fn on_security_event(&self, event: &SecurityEvent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_is_the_serialized_event_name() {
        for event in [
            SecurityEvent::Lockout {
                source: "ip:203.0.113.9".into(),
            },
            SecurityEvent::RefreshReuse {
                family_id: "fam_1".into(),
            },
            SecurityEvent::AuditChainBroken { first_bad_seq: 3 },
        ] {
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["event"], event.kind());
        }
    }
}
