//! The audit anchor: after retention prunes the oldest events, the newest pruned one is
//! where verification of the rest starts. It is kept as store metadata
//! ([`AUDIT_ANCHOR_KEY`]); its text form is written and read here only.

/// The metadata key holding the audit anchor.
pub const AUDIT_ANCHOR_KEY: &str = "audit_anchor";

/// The newest pruned audit event: its sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuditAnchor {
    /// The pruned event's sequence number.
    pub(crate) seq: u64,
    /// Its hash, which the next event's `prev_hash` must equal.
    pub(crate) hash: String,
}

impl AuditAnchor {
    /// The metadata value (`<seq>:<hash>`).
    pub(crate) fn to_meta_value(&self) -> String {
        format!("{}:{}", self.seq, self.hash)
    }

    /// The anchor a metadata value holds; `None` when it is not one.
    pub(crate) fn from_meta_value(value: &str) -> Option<Self> {
        let (seq, hash) = value.split_once(':')?;
        Some(AuditAnchor {
            seq: seq.parse().ok()?,
            hash: hash.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anchor_round_trips_through_its_metadata_value() {
        let anchor = AuditAnchor {
            seq: 42,
            hash: "ab12".to_owned(),
        };
        assert_eq!(
            AuditAnchor::from_meta_value(&anchor.to_meta_value()),
            Some(anchor)
        );
        assert_eq!(AuditAnchor::from_meta_value("42"), None);
        assert_eq!(AuditAnchor::from_meta_value("x:ab"), None);
    }
}
