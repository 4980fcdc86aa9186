//! The audit log: what happened ([`AuditEvent`]), the hash chain that makes editing or
//! deleting events detectable, and the anchor verification resumes from after retention.

mod anchor;
mod chain;
mod event;

pub(crate) use anchor::AuditAnchor;
pub use anchor::AUDIT_ANCHOR_KEY;
pub(crate) use chain::ChainChecker;
pub use chain::{verify_chain, AuditVerification, GENESIS_HASH};
pub use event::{AuditEvent, AuditQuery};
